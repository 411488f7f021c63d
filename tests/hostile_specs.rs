//! Hostile spec files against the real binaries: `replicant validate` answers every shape up to
//! the file limit with the limit it broke, and `replicant run` reports such files once, stays
//! idle beside them and keeps failing over the good cluster.

#[path = "support/hostile.rs"]
mod hostile;
mod support;

use std::{
    fs,
    process::Command,
    time::{Duration, Instant},
};

use support::*;

/// `replicant validate FILE` as a child; its output and the CPU time it used.
fn validate(file: &std::path::Path) -> (std::process::Output, Duration) {
    let before = children_cpu();
    let output = Command::new(env!("CARGO_BIN_EXE_replicant"))
        .args(["validate", file.to_str().unwrap()])
        .output()
        .unwrap();
    (output, children_cpu() - before)
}

/// CPU time of this process's waited-for children, from getrusage(RUSAGE_CHILDREN).
fn children_cpu() -> Duration {
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN)
        .expect("getrusage");
    let us = |t: nix::sys::time::TimeVal| t.tv_sec() as u64 * 1_000_000 + t.tv_usec() as u64;
    Duration::from_micros(us(usage.user_time()) + us(usage.system_time()))
}

/// Every shape at sizes up to the 4 MiB limit: exit 1, one clear line naming the file, no panic.
/// The CPU bound is a guard against a return of super-linear cost (which took minutes), far
/// above the milliseconds these take; the figures themselves are measured by the bench.
#[test]
fn validate_answers_every_hostile_shape_at_every_size_with_the_limit_it_broke() {
    let dir = tempfile::tempdir().unwrap();
    for shape in hostile::SHAPES {
        for bytes in [1 << 10, 64 << 10, 1 << 20, (4 << 20) - 4096] {
            let path = dir.path().join(format!("{shape}-{bytes}.yaml"));
            let text = hostile::text(shape, bytes);
            assert!(text.len() <= 4 << 20, "{shape}: {} bytes", text.len());
            fs::write(&path, &text).unwrap();
            let (output, cpu) = validate(&path);
            let stdout = String::from_utf8_lossy(&output.stdout);
            let stderr = String::from_utf8_lossy(&output.stderr);
            let file = path.to_str().unwrap();
            assert_eq!(
                output.status.code(),
                Some(1),
                "{shape} {bytes}: {stdout}{stderr}"
            );
            assert!(!stderr.contains("panicked"), "{shape} {bytes}: {stderr}");
            assert!(!stdout.is_empty(), "{shape} {bytes}: nothing printed");
            for line in stdout.lines() {
                assert!(line.starts_with(&format!("{file}: ")), "{shape}: {line}");
                assert!(
                    line.len() < 2048,
                    "{shape} {bytes}: a line of {} bytes",
                    line.len()
                );
            }
            assert!(
                stdout.lines().count() <= 101,
                "{shape} {bytes}: {} lines",
                stdout.lines().count()
            );
            assert!(
                cpu < Duration::from_secs(2),
                "{shape} at {bytes} bytes took {cpu:?} of CPU"
            );
            eprintln!(
                "{shape:>16} {bytes:>8} B: {cpu:?} CPU: {}",
                stdout.lines().next().unwrap_or("")
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn run_reports_a_hostile_file_once_stays_idle_and_keeps_failing_over() {
    let mut bed = Bed::new(3);
    bed.write_spec(
        "orders.yaml",
        &bed.spec(
            "a",
            &[],
            "    standby: b\n    detectAfter: 1s\n    cooldown: 1m",
        ),
    );
    let full = (4 << 20) - 4096;
    for shape in [
        "flow-nesting",
        "alias-expansion",
        "long-scalar",
        "many-members",
    ] {
        bed.write_spec(&format!("{shape}.yaml"), &hostile::text(shape, full));
    }
    // Rescan often, so that re-parsing unchanged files would show in the CPU used.
    let ctl = Controller::start_with(&bed.specs(), &bed.state(), &[], &["--rescan", "200ms"]);
    bed.wait_for("ready", &ctl, 30, ready).await;

    eventually("every hostile file to be reported", 10, async || {
        let log = ctl.log_text();
        [
            "flow-nesting",
            "alias-expansion",
            "long-scalar",
            "many-members",
        ]
        .iter()
        .all(|shape| log.contains(&format!("{shape}.yaml: ")))
    })
    .await;
    // Past the 2 s in which a fresh file is read again, what it costs is the probing alone.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let cpu_before = ctl.cpu_time();
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let share = (ctl.cpu_time() - cpu_before).as_secs_f64() / started.elapsed().as_secs_f64();
    eprintln!(
        "controller CPU beside four hostile files: {:.1}% of a core",
        share * 100.0
    );
    assert!(
        share < 0.3,
        "the controller used {:.0}% of a core",
        share * 100.0
    );

    let log = ctl.log_text();
    for shape in [
        "flow-nesting",
        "alias-expansion",
        "long-scalar",
        "many-members",
    ] {
        let reports = log
            .lines()
            .filter(|l| l.contains(&format!("{shape}.yaml: ")))
            .count();
        assert_eq!(reports, 1, "{shape} reported {reports} times:\n{log}");
    }
    assert!(
        log.lines().all(|l| l.len() < 4096),
        "a log line of {} bytes",
        log.lines().map(str::len).max().unwrap_or(0)
    );
    assert!(
        log.contains("nesting deeper than 64 levels at line 4"),
        "{log}"
    );

    let status = Command::new(env!("CARGO_BIN_EXE_replicant"))
        .args(["status", "--state", bed.state().to_str().unwrap()])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&status.stdout);
    assert!(table.starts_with("Spec problems"), "{table}");
    assert!(
        table.contains("alias-expansion.yaml: more than 100000 nodes"),
        "{table}"
    );
    assert!(
        table.contains("many-members.yaml: more than 100000 nodes"),
        "{table}"
    );
    assert!(table.len() < 16 << 10, "status of {} bytes", table.len());

    // The good cluster still fails over.
    bed.server("a").kill();
    let report = bed
        .wait_for("failover to b", &ctl, 20, |r| {
            r.status.current_primary.as_deref() == Some("b") && r.status.epoch == 1
        })
        .await;
    assert_eq!(report.status.epoch, 1);
    assert_eq!(role(&bed.address("b")).await, "master");
}
