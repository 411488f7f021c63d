//! The Helm chart lints, renders, and `manifests/` is exactly what it renders (drift check).
//!
//! Needs a real `helm` (`scripts/install-helm`; `HELM` or PATH). Without one the tests say so
//! and pass, except under CI (`CI` set), where a missing helm is a failure.

mod support;

use std::path::Path;

use support::k8s::{helm, run_helm};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

const TEMPLATE: &[&str] = &[
    "template",
    "replicant",
    "charts/replicant",
    "--namespace",
    "replicant-system",
    "--include-crds",
];

#[test]
fn chart_lints_strictly() {
    let Some(helm) = helm() else { return };
    let out = run_helm(&helm, &["lint", "--strict", "charts/replicant"]);
    assert!(out.contains("0 chart(s) failed"), "{out}");
}

#[test]
fn manifests_are_the_rendered_chart() {
    let Some(helm) = helm() else { return };
    let mut args = TEMPLATE.to_vec();
    args.extend(["--set", "namespace.create=true"]);
    let rendered = run_helm(&helm, &args);
    let committed = std::fs::read_to_string(root().join("manifests/replicant.yaml"))
        .expect("manifests/replicant.yaml exists");
    assert!(
        committed == rendered,
        "manifests/replicant.yaml differs from the chart; run scripts/generate-manifests and commit"
    );
}

#[test]
fn default_render_is_locked_down_and_highly_available() {
    let Some(helm) = helm() else { return };
    let out = run_helm(&helm, TEMPLATE);
    for needle in [
        "kind: CustomResourceDefinition",
        "kind: ServiceAccount",
        "kind: ClusterRole",
        "kind: Deployment",
        "replicas: 2",
        "runAsNonRoot: true",
        "readOnlyRootFilesystem: true",
        "allowPrivilegeEscalation: false",
        "path: /healthz",
        "--lease-duration=15s",
        "resources: [\"leases\"]",
        "value: \"json\"",
    ] {
        assert!(out.contains(needle), "default render lacks {needle:?}");
    }
    // No wildcard grants anywhere.
    assert!(!out.contains("\"*\""), "RBAC must not use wildcards");
    assert!(
        !out.contains("kind: Namespace"),
        "namespace only when asked for"
    );
}

#[test]
fn values_switch_leader_election_and_scope() {
    let Some(helm) = helm() else { return };
    let mut args = TEMPLATE.to_vec();
    args.extend([
        "--set",
        "leaderElection.enabled=false",
        "--set",
        "replicas=1",
        "--set",
        "watchNamespace=shop",
        "--set",
        "logging.level=debug",
    ]);
    let out = run_helm(&helm, &args);
    assert!(out.contains("--no-leader-election"));
    assert!(out.contains("name: WATCH_NAMESPACE\n              value: \"shop\""));
    assert!(out.contains("value: \"debug\""));
    assert!(
        !out.contains("kind: Role\n"),
        "no Lease Role without election"
    );
}
