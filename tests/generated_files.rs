//! Generated files are committed: fail when they drift from the Rust types that produce them.

use std::{fs, path::Path};

fn assert_same(path: &str, generated: &str, regenerate: &str) {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    let committed =
        fs::read_to_string(&full).unwrap_or_else(|e| panic!("{path}: {e}; run `{regenerate}`"));
    assert!(
        committed == generated,
        "{path} differs from the Rust types; run `{regenerate}` and commit the result"
    );
}

#[test]
fn crds_match_the_types() {
    for (file, crd) in replicant::crd::all() {
        let yaml = replicant::crd::to_yaml(&crd);
        assert_same(
            &format!("crds/{file}"),
            &yaml,
            "cargo run -- crd --dir crds",
        );
        assert_same(
            &format!("charts/replicant/crds/{file}"),
            &yaml,
            "cargo run -- crd --dir charts/replicant/crds",
        );
    }
}

#[test]
fn crds_carry_printer_columns_short_names_and_rules() {
    let yaml = replicant::crd::all_yaml();
    for needle in [
        "name: Engine",
        "name: Primary",
        "name: Ready",
        "name: Age",
        "- rcluster",
        "- vn",
        "x-kubernetes-validations",
        "x-kubernetes-list-type: map",
        "self.members.exists(m, m.name == self.primary)",
    ] {
        assert!(yaml.contains(needle), "CRDs lack {needle:?}");
    }
}
