//! `replicant plan`: the dry run a person reads before trusting the controller.

use std::{
    fs,
    path::Path,
    process::{Command, Output},
};

fn replicant(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_replicant"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(args)
        .output()
        .expect("the replicant binary runs")
}

const SPEC: &str = "examples/orders.yaml";
const MASTER_DOWN: &str = "examples/observed/master-down.yaml";

#[test]
fn table_shows_the_failover_in_order_with_reasons() {
    let output = replicant(&[
        "plan",
        "--spec",
        SPEC,
        "--observed",
        MASTER_DOWN,
        "--now",
        "2026-01-01T00:00:05Z",
    ]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // The old master is unreachable: fencing it is tried last, so it never delays the promotion.
    let order: Vec<usize> = ["Promote", "Replicate", "RetargetVirtualName", "Fence"]
        .iter()
        .map(|k| {
            stdout
                .find(k)
                .unwrap_or_else(|| panic!("{k} missing:\n{stdout}"))
        })
        .collect();
    assert!(
        order.windows(2).all(|w| w[0] < w[1]),
        "actions out of order:\n{stdout}"
    );
    assert!(
        stdout.contains("orders-a unreachable for 5s (detectAfter 1s)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("orders-b is the designated standby"),
        "{stdout}"
    );
    assert!(
        stdout.contains("Journal: Failover orders-a -> orders-b at epoch 4"),
        "{stdout}"
    );
}

#[test]
fn json_output_is_machine_readable() {
    let output = replicant(&[
        "plan",
        "--spec",
        SPEC,
        "--observed",
        MASTER_DOWN,
        "-o",
        "json",
    ]);
    assert!(output.status.success());
    let plan: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let promote = plan["actions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["type"] == "promote")
        .unwrap();
    assert_eq!(promote["member"], "orders-b");
    assert_eq!(promote["epoch"], 4);
    assert_eq!(plan["journal"]["operation"]["kind"], "failover");
    assert_eq!(plan["requeueAfter"], "50ms");
}

#[test]
fn invalid_input_plans_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let bad_spec = dir.path().join("bad.yaml");
    fs::write(
        &bad_spec,
        fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(SPEC))
            .unwrap()
            .replace("primary: orders-a", "primary: orders-x"),
    )
    .unwrap();
    let output = replicant(&[
        "plan",
        "--spec",
        bad_spec.to_str().unwrap(),
        "--observed",
        MASTER_DOWN,
    ]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("nothing planned"), "{stderr}");
    assert!(
        stderr.contains("spec.primary: unknown member \"orders-x\""),
        "{stderr}"
    );
    assert!(output.stdout.is_empty());

    let bad_observed = dir.path().join("observed.yaml");
    fs::write(
        &bad_observed,
        "members:\n  orders-a:\n    reachable: maybe\n",
    )
    .unwrap();
    let output = replicant(&[
        "plan",
        "--spec",
        SPEC,
        "--observed",
        bad_observed.to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("members.orders-a.reachable"), "{stderr}");
}

#[test]
fn the_plan_says_when_a_zone_decided_the_failover_and_whom_each_member_follows() {
    let output = replicant(&[
        "plan",
        "--spec",
        "examples/zones.yaml",
        "--observed",
        "examples/observed/zones-master-down.yaml",
        "--now",
        "2026-01-01T00:00:05Z",
    ]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    for expected in [
        "orders-c is the most up-to-date eligible replica in zone eu-west-1b, the first of failover.preferredZones with one",
        "the zone decided it: orders-e is at position 50000 in zone eu-west-1c",
        "Replication (zoneAware):",
        "orders-b  eu-west-1a  follows orders-c: gateway of zone eu-west-1a (orders-a does not answer)",
        "orders-f  eu-west-1c  follows orders-e: gateway of zone eu-west-1c",
    ] {
        assert!(stdout.contains(expected), "{expected:?} missing:\n{stdout}");
    }
    // Two streams cross zones once the plan is carried out: b and e, each from c.
    let replicate: Vec<&str> = stdout
        .lines()
        .filter(|l| l.contains(" Replicate "))
        .collect();
    assert_eq!(replicate.len(), 2, "{stdout}");
}
