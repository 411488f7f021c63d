//! `replicant validate` against the example specs, a corpus of invalid specs and hostile input.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Output},
};

fn replicant(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_replicant"))
        .args(args)
        .output()
        .expect("the replicant binary runs")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn fixtures(dir: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

/// Output of a rejected file: exit 1, every line a `FILE: ...` problem, nothing a program printed by accident.
fn assert_rejected_cleanly(file: &str, output: &Output) {
    let all = text(output);
    assert_eq!(
        output.status.code(),
        Some(1),
        "{file} should be rejected:\n{all}"
    );
    for forbidden in ["panicked", "RUST_BACKTRACE", "stack backtrace"] {
        assert!(
            !all.contains(forbidden),
            "{file}: {forbidden} in output:\n{all}"
        );
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!stdout.trim().is_empty(), "{file}: no problem printed");
    for line in stdout.lines() {
        assert!(
            line.starts_with(&format!("{file}: ")),
            "{file}: line does not name the file: {line}"
        );
    }
}

#[test]
fn examples_are_valid() {
    for file in fixtures("examples") {
        let output = replicant(&["validate", file.to_str().unwrap()]);
        assert!(
            output.status.success(),
            "{}:\n{}",
            file.display(),
            text(&output)
        );
        assert!(text(&output).contains("valid"), "{}", text(&output));
    }
}

/// Each file in tests/fixtures/invalid starts with `# expect: ...` lines: every one must be printed.
#[test]
fn invalid_corpus_is_rejected_with_field_paths() {
    let files = fixtures("tests/fixtures/invalid");
    assert!(files.len() >= 40, "corpus shrank to {}", files.len());
    for file in files {
        let name = file.to_str().unwrap();
        let content = fs::read_to_string(&file).unwrap();
        let expected: Vec<&str> = content
            .lines()
            .filter_map(|l| l.strip_prefix("# expect: "))
            .collect();
        assert!(!expected.is_empty(), "{name} has no # expect: line");
        let output = replicant(&["validate", name]);
        assert_rejected_cleanly(name, &output);
        let stdout = String::from_utf8_lossy(&output.stdout);
        for e in expected {
            assert!(stdout.contains(e), "{name}: expected {e:?} in:\n{stdout}");
        }
    }
}

#[test]
fn all_files_are_checked_together_and_every_problem_is_listed() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = dir.path().join("cluster.yaml");
    let names = dir.path().join("names.yaml");
    fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/orders.yaml"),
        &cluster,
    )
    .unwrap();
    fs::write(
        &names,
        "apiVersion: replicant.dev/v1alpha1\nkind: VirtualName\nmetadata: {name: pinned}\nspec: {cluster: orders, target: orders-c}\n",
    )
    .unwrap();
    let output = replicant(&[
        "validate",
        cluster.to_str().unwrap(),
        names.to_str().unwrap(),
    ]);
    assert!(
        output.status.success(),
        "a name may refer to a cluster in another file:\n{}",
        text(&output)
    );

    let bad = dir.path().join("bad.yaml");
    fs::write(
        &bad,
        "apiVersion: replicant.dev/v1alpha1\nkind: VirtualName\nmetadata: {name: x}\nspec: {cluster: nope, target: primary}\n---\nkind: Foo\n",
    )
    .unwrap();
    let output = replicant(&["validate", cluster.to_str().unwrap(), bad.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stdout.contains("VirtualName/x: spec.cluster: no ReplicationCluster named \"nope\""),
        "{stdout}"
    );
    assert!(
        stdout.contains("document 2: apiVersion: required"),
        "{stdout}"
    );
}

#[test]
fn other_apis_are_skipped_not_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mixed.yaml");
    let mut content =
        fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/orders.yaml"))
            .unwrap();
    content.push_str("---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: unrelated}\n");
    fs::write(&file, content).unwrap();
    let output = replicant(&["validate", file.to_str().unwrap()]);
    assert!(output.status.success(), "{}", text(&output));
    assert!(
        text(&output).contains("skipped v1/ConfigMap unrelated"),
        "{}",
        text(&output)
    );
}

#[test]
fn hostile_input_gets_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut garbage: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    garbage[0] = 0xff;
    let nested = format!("{}1{}", "[".repeat(10_000), "]".repeat(10_000));
    let bomb = {
        let mut s = String::from(
            "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
        );
        for i in 0..8 {
            let prev = if i == 0 {
                "a".to_string()
            } else {
                format!("l{}", i - 1)
            };
            s.push_str(&format!("l{i}: &l{i} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n"));
        }
        s
    };
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty.yaml", Vec::new(), "contains no documents"),
        (
            "blank.yaml",
            b"\n   \n---\n".to_vec(),
            "contains no documents",
        ),
        ("binary.bin", garbage, "not UTF-8 text"),
        (
            "nul.yaml",
            b"apiVersion: replicant.dev/v1alpha1\0\0\0kind: x\n".to_vec(),
            "document 1",
        ),
        (
            "nested.yaml",
            nested.into_bytes(),
            "nesting deeper than 64 levels at line 1",
        ),
        (
            "bomb.yaml",
            bomb.into_bytes(),
            "more than 100000 nodes (an alias counts as every node it stands for) at line 6",
        ),
        (
            "tabs.yaml",
            b"apiVersion: replicant.dev/v1alpha1\n\tkind: ReplicationCluster\n".to_vec(),
            "not valid YAML",
        ),
    ];
    for (name, bytes, expected) in cases {
        let path = dir.path().join(name);
        fs::write(&path, &bytes).unwrap();
        let file = path.to_str().unwrap();
        let output = replicant(&["validate", file]);
        assert_rejected_cleanly(file, &output);
        assert!(
            text(&output).contains(expected),
            "{name}: expected {expected:?} in:\n{}",
            text(&output)
        );
    }
}

#[test]
fn a_fifty_megabyte_document_is_refused_unread() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("huge.yaml");
    let mut content = String::from(
        "apiVersion: replicant.dev/v1alpha1\nkind: ReplicationCluster\nmetadata:\n  name: huge\n  annotations:\n    filler: \"",
    );
    content.push_str(&"x".repeat(50 * 1024 * 1024));
    content.push_str("\"\n");
    fs::write(&path, content).unwrap();
    let file = path.to_str().unwrap();
    let output = replicant(&["validate", file]);
    assert_rejected_cleanly(file, &output);
    assert!(
        text(&output).contains("file is 50 MiB"),
        "{}",
        text(&output)
    );
}

#[test]
fn missing_files_and_directories_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("absent.yaml");
    let output = replicant(&[
        "validate",
        missing.to_str().unwrap(),
        dir.path().to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("absent.yaml: cannot read"), "{stdout}");
    assert!(stdout.contains("is a directory"), "{stdout}");
}

#[test]
fn no_arguments_is_a_usage_error() {
    let output = replicant(&["validate"]);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
}
