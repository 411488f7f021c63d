//! Fuzzing on the stable toolchain: generated and mutated input into every parser of untrusted
//! bytes (the spec loader and validator, the observed-state loader, the RESP request and reply
//! scanners), each for a fixed time budget.
//!
//! `REPLICANT_FUZZ_SECS` sets the budget per target (default 6 s, what CI runs); set it to 600
//! for a long run. A failure prints the shrunk input; inputs that once failed live in
//! `tests/fixtures/hostile/` and are replayed first, every run.

use std::{
    fs,
    path::Path,
    time::{Duration, Instant},
};

use proptest::{
    prelude::*,
    test_runner::{Config, TestCaseError, TestError, TestRunner},
};
use replicant::{
    bounded,
    cli::observed_from_str,
    proxy::redis::resp::{Request, RequestScanner, Scanner},
    validate::{self, Limits, Report, check_bounds},
};
use serde::Deserialize;
use serde_yaml::Value;

fn budget() -> Duration {
    let secs = std::env::var("REPLICANT_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or(6.0);
    Duration::from_secs_f64(secs)
}

/// Run `target` on values of `strategy` until the budget is spent; on failure, panic with the
/// shrunk input. A case taking more than 2 s (a hang, or cost far above linear) fails too.
fn fuzz<S: Strategy>(
    name: &str,
    strategy: S,
    target: impl Fn(S::Value) -> Result<(), TestCaseError>,
) where
    S::Value: std::fmt::Debug,
{
    let mut runner = TestRunner::new(Config {
        timeout: 2000,
        failure_persistence: None,
        ..Config::default()
    });
    let deadline = Instant::now() + budget();
    let mut cases = 0u64;
    while Instant::now() < deadline {
        let tree = strategy
            .new_tree(&mut runner)
            .expect("strategies here never reject");
        match runner.run_one(tree, &target) {
            Ok(_) => cases += 1,
            Err(TestError::Fail(reason, input)) => {
                panic!("{name}: {reason}\nshrunk input: {input:?}")
            }
            Err(TestError::Abort(reason)) => panic!("{name}: aborted: {reason}"),
        }
    }
    eprintln!("{name}: {cases} cases in {:?}", budget());
    assert!(cases > 0, "{name}: no case ran");
}

/// Load and check a text as `replicant validate` does; every problem must be short and name
/// the file.
fn validate_text(text: &str) -> Result<Report, TestCaseError> {
    let mut loaded = Report::default();
    validate::load_str("fuzz.yaml", text, &mut loaded);
    let report = validate::check_together([loaded]);
    for problem in &report.problems {
        let line = problem.to_string();
        prop_assert!(
            line.len() <= 3 * bounded::MESSAGE_BYTES,
            "a problem of {} bytes: {}",
            line.len(),
            bounded::clip(&line, 300)
        );
        prop_assert!(line.starts_with("fuzz.yaml: "), "{line}");
    }
    Ok(report)
}

/// Pieces that YAML and spec files are made of, so generated text reaches deep into the
/// parser and the validator rather than failing at the first byte.
const TOKENS: &[&str] = &[
    "[",
    "]",
    "{",
    "}",
    ", ",
    ",",
    ": ",
    ":",
    "- ",
    "-",
    "? ",
    "\n",
    "\n",
    "\n",
    "\n  ",
    "\n    ",
    "\n      ",
    "  ",
    " ",
    "&a ",
    "&b ",
    "&a",
    "*a",
    "*b",
    " *a",
    "!!str ",
    "!t ",
    "!",
    "|\n",
    ">-\n",
    "|2\n",
    "|+\n",
    "\"",
    "'",
    "''",
    "\\",
    "\\\"",
    "#",
    " # c\n",
    "---\n",
    "--- ",
    "...\n",
    "%YAML 1.2\n",
    "\r\n",
    "\r",
    "\u{85}",
    "\u{2028}",
    "\u{feff}",
    "\t",
    "\0",
    "apiVersion: replicant.dev/v1alpha1\n",
    "apiVersion: v1\n",
    "kind: ReplicationCluster\n",
    "kind: VirtualName\n",
    "metadata:",
    "name:",
    " name: orders",
    "namespace:",
    "spec:",
    "engine: redis",
    "engine: postgres",
    "members:",
    "primary:",
    "address:",
    "upstream:",
    "priority:",
    "failover:",
    "detectAfter: 1s",
    "refusedAfter:",
    "cooldown: -1s",
    "maxLag:",
    "standby:",
    "replication:",
    "mode: sync",
    "minSyncReplicas:",
    "credentials:",
    "passwordEnv:",
    "secretRef:",
    "cluster:",
    "target:",
    "listen:",
    "proxyMode: multiplex",
    "balancing:",
    "fallback:",
    "suspend: true",
    "orders",
    "orders-a",
    "127.0.0.1:6379",
    "[::1]:1",
    "a",
    "b",
    "0",
    "-1",
    "65536",
    "1e999",
    "0x1F",
    "null",
    "~",
    "true",
    "é",
    "ü",
    "9223372036854775808",
    "1Mi",
    "5s",
    "1h1h1h1h1h",
];

fn yaml_shaped() -> impl Strategy<Value = String> {
    proptest::collection::vec(proptest::sample::select(TOKENS), 0..300)
        .prop_map(|tokens| tokens.concat())
}

/// A valid example with random edits: pieces inserted, bytes removed or replaced.
fn mutated_spec() -> impl Strategy<Value = String> {
    let examples = [
        include_str!("../examples/orders.yaml"),
        include_str!("../examples/kubernetes/orders.yaml"),
    ];
    let edit = (
        any::<proptest::sample::Index>(),
        0..3u8,
        proptest::sample::select(TOKENS),
    );
    (
        proptest::sample::select(examples.to_vec()),
        proptest::collection::vec(edit, 1..12),
    )
        .prop_map(|(example, edits)| {
            let mut text = example.as_bytes().to_vec();
            for (at, kind, token) in edits {
                let at = at.index(text.len() + 1);
                match kind {
                    0 => {
                        text.splice(at..at, token.bytes());
                    }
                    1 if at < text.len() => {
                        text.remove(at);
                    }
                    _ if at < text.len() => text[at] = token.as_bytes()[0],
                    _ => {}
                }
            }
            String::from_utf8_lossy(&text).into_owned()
        })
}

#[test]
fn regression_fixtures_are_refused_cleanly() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hostile");
    let mut seen = 0;
    for entry in fs::read_dir(&dir).expect("tests/fixtures/hostile") {
        let path = entry.unwrap().path();
        let bytes = fs::read(&path).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        let expected: Vec<&str> = text
            .lines()
            .take_while(|l| l.starts_with('#'))
            .filter_map(|l| l.strip_prefix("# expect: "))
            .collect();
        let report = validate_text(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let printed: Vec<String> = report.problems.iter().map(|p| p.to_string()).collect();
        for e in &expected {
            assert!(
                printed.iter().any(|p| p.contains(e)),
                "{}: expected {e:?} in {printed:#?}",
                path.display()
            );
        }
        assert!(
            !expected.is_empty(),
            "{}: no # expect: line",
            path.display()
        );
        seen += 1;
    }
    assert!(seen >= 5, "only {seen} fixtures");
}

#[test]
fn spec_loader_takes_arbitrary_bytes() {
    fuzz(
        "spec loader, arbitrary bytes",
        proptest::collection::vec(any::<u8>(), 0..2048),
        |bytes| {
            validate_text(&String::from_utf8_lossy(&bytes))?;
            Ok(())
        },
    );
}

#[test]
fn spec_loader_takes_yaml_shaped_text() {
    fuzz("spec loader, YAML-shaped", yaml_shaped(), |text| {
        validate_text(&text)?;
        Ok(())
    });
}

#[test]
fn spec_loader_takes_mutated_specs() {
    fuzz("spec loader, mutated specs", mutated_spec(), |text| {
        validate_text(&text)?;
        Ok(())
    });
}

/// Depth and node count of what the parser built, aliases expanded.
fn measure(value: &Value, depth: usize, out: &mut (usize, u64)) {
    out.0 = out.0.max(depth);
    out.1 += 1;
    match value {
        Value::Sequence(items) => items.iter().for_each(|v| measure(v, depth + 1, out)),
        Value::Mapping(map) => map.iter().for_each(|(k, v)| {
            measure(k, depth + 1, out);
            measure(v, depth + 1, out);
        }),
        Value::Tagged(tagged) => measure(&tagged.value, depth, out),
        _ => {}
    }
}

/// The pre-scan's promise, checked against the parser itself with small limits the generator
/// can reach: whatever it lets through parses into no more nodes than it counted, and no more
/// than twice as deep (a key's list at the key's own column is one level it does not see).
#[test]
fn the_pre_scan_never_counts_less_than_the_parser_builds() {
    let limits = Limits {
        max_depth: 6,
        max_documents: 4,
        max_anchors: 4,
        max_aliases: 12,
        max_nodes: 300,
        max_scalar_bytes: 64,
    };
    fuzz("pre-scan against the parser", yaml_shaped(), |text| {
        if check_bounds(&text, &limits).is_err() {
            return Ok(());
        }
        let mut documents = 0;
        let mut seen = (0usize, 0u64);
        for de in serde_yaml::Deserializer::from_str(&text) {
            let Ok(value) = Value::deserialize(de) else {
                break;
            };
            documents += 1;
            measure(&value, 1, &mut seen);
        }
        prop_assert!(documents <= limits.max_documents, "{documents} documents");
        prop_assert!(
            seen.0 <= 2 * limits.max_depth + 1,
            "depth {} passed a limit of {}",
            seen.0,
            limits.max_depth
        );
        prop_assert!(
            seen.1 <= limits.max_nodes,
            "{} nodes passed a limit of {}",
            seen.1,
            limits.max_nodes
        );
        Ok(())
    });
}

#[test]
fn observed_state_loader_takes_any_text() {
    let observed = [
        "members:\n  orders-a: {reachable: false, unreachableSince: \"2026-01-01T00:00:00Z\", role: master, offset: 1}\n",
        "virtualNames: {rw: [orders-a]}\njournal: {epoch: 3, currentPrimary: orders-b}\n",
    ];
    let strategy = prop_oneof![
        yaml_shaped(),
        (proptest::sample::select(observed.to_vec()), yaml_shaped())
            .prop_map(|(a, b)| format!("{a}{b}")),
        proptest::collection::vec(any::<u8>(), 0..1024)
            .prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
    ];
    fuzz("observed-state loader", strategy, |text| {
        if let Err(e) = observed_from_str("observed.yaml", &text) {
            let message = e.to_string();
            prop_assert!(message.len() <= 2 * bounded::MESSAGE_BYTES, "{message}");
        }
        Ok(())
    });
}

/// Where the pieces of `bytes` cut at `cuts` end, in order.
fn ends(bytes: &[u8], cuts: &[proptest::sample::Index]) -> Vec<usize> {
    let mut ends: Vec<usize> = cuts.iter().map(|c| c.index(bytes.len() + 1)).collect();
    ends.push(bytes.len());
    ends.sort();
    ends
}

/// Cut `bytes` at `cuts` and feed the scanner a growing buffer, as the proxy does with reads
/// as they arrive; returns the lengths found and how the stream ended.
fn scan_requests(bytes: &[u8], cuts: &[proptest::sample::Index]) -> (Vec<(usize, String)>, String) {
    let mut scanner = RequestScanner::default();
    let mut found = Vec::new();
    let mut start = 0;
    for end in ends(bytes, cuts) {
        loop {
            match scanner.next(&bytes[start..end]) {
                Request::Complete { len, routing } => {
                    assert!(
                        len > 0 && start + len <= end,
                        "length {len} beyond the buffer"
                    );
                    found.push((len, format!("{routing:?}")));
                    start += len;
                }
                Request::Incomplete => break,
                Request::NotUnderstood => return (found, "not understood".into()),
            }
        }
    }
    (found, "incomplete".into())
}

fn resp_shaped() -> impl Strategy<Value = Vec<u8>> {
    const PIECES: &[&str] = &[
        "*1\r\n",
        "*2\r\n",
        "*3\r\n",
        "*-1\r\n",
        "*0\r\n",
        "*99999999999\r\n",
        "$3\r\nGET\r\n",
        "$3\r\nSET\r\n",
        "$4\r\nAUTH\r\n",
        "$5\r\nHELLO\r\n",
        "$1\r\n3\r\n",
        "$4\r\nWAIT\r\n",
        "$6\r\nSELECT\r\n",
        "$1\r\n0\r\n",
        "$-1\r\n",
        "$0\r\n\r\n",
        "$2\r\nab\r\n",
        "$9\r\n",
        "+OK\r\n",
        "-ERR x\r\n",
        ":12\r\n",
        "_\r\n",
        ",1.5\r\n",
        "#t\r\n",
        "(123\r\n",
        "%1\r\n",
        "~2\r\n",
        ">2\r\n",
        "|1\r\n",
        "=5\r\ntxt:a\r\n",
        "!3\r\nerr\r\n",
        "\r\n",
        "\r",
        "\n",
        "PING\r\n",
        "x",
        "$",
        "*",
        "-",
        "9",
        "\0",
    ];
    proptest::collection::vec(
        prop_oneof![
            proptest::sample::select(PIECES).prop_map(|p| p.as_bytes().to_vec()),
            proptest::collection::vec(any::<u8>(), 0..8),
        ],
        0..60,
    )
    .prop_map(|parts| parts.concat())
}

fn scan_replies(bytes: &[u8], cuts: &[proptest::sample::Index]) -> (Vec<usize>, String) {
    let mut scanner = Scanner::default();
    let mut found = Vec::new();
    let mut start = 0;
    for end in ends(bytes, cuts) {
        loop {
            match scanner.value(&bytes[start..end]) {
                Ok(Some(len)) => {
                    assert!(
                        len > 0 && start + len <= end,
                        "length {len} beyond the buffer"
                    );
                    found.push(len);
                    start += len;
                }
                Ok(None) => break,
                Err(e) => return (found, e.reason.to_string()),
            }
        }
    }
    (found, "incomplete".into())
}

/// Bytes (RESP-shaped or not) and where to cut them: `scan` must find the same whether the
/// stream arrives whole or in those pieces.
fn fuzz_splits<T: PartialEq + std::fmt::Debug>(
    name: &str,
    scan: impl Fn(&[u8], &[proptest::sample::Index]) -> T,
) {
    let strategy = (
        prop_oneof![
            resp_shaped(),
            proptest::collection::vec(any::<u8>(), 0..512)
        ],
        proptest::collection::vec(any::<proptest::sample::Index>(), 0..8),
    );
    fuzz(name, strategy, |(bytes, cuts)| {
        let whole = scan(&bytes, &[]);
        let split = scan(&bytes, &cuts);
        prop_assert_eq!(whole, split, "the split changed what was found");
        Ok(())
    });
}

#[test]
fn request_scanner_takes_any_bytes_in_any_split() {
    fuzz_splits("RESP request scanner", scan_requests);
}

#[test]
fn reply_scanner_takes_any_bytes_in_any_split() {
    fuzz_splits("RESP reply scanner", scan_replies);
}
