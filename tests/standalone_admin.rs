//! What a person sees of `replicant run`: `/metrics`, `/healthz`, `replicant status`, and the demo.

mod support;

use std::process::Command;

use support::*;

fn http_get(port: u16, path: &str) -> String {
    try_http_get(port, path).unwrap()
}

/// The value of the series `series` (name and labels as exposed), if it is there.
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.split(' ').next()?.parse().ok())
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_health_and_status_report_the_cluster() {
    let mut bed = Bed::new(3);
    bed.write_spec("orders.yaml", &bed.spec("a", &[], "    detectAfter: 1s"));
    let admin = replicant_testkit::free_port().unwrap();
    let ctl = Controller::start_with(
        &bed.specs(),
        &bed.state(),
        &[],
        &["--admin", &format!("127.0.0.1:{admin}")],
    );
    bed.wait_for("ready", &ctl, 30, ready).await;
    set(&format!("127.0.0.1:{}", bed.rw_port), "m", "1")
        .await
        .unwrap();

    let health = http_get(admin, "/healthz");
    assert!(
        health.starts_with("HTTP/1.0 200") && health.ends_with("ok\n"),
        "{health}"
    );
    // Relayed bytes are counted when the client's connection closes.
    eventually("the proxied connection to be counted", 10, async || {
        http_get(admin, "/metrics").contains(
            "replicant_proxy_bytes_total{name=\"default/orders-rw\",direction=\"toClient\"}",
        )
    })
    .await;
    let metrics = http_get(admin, "/metrics");
    for (series, value) in [
        ("replicant_cluster_ready{cluster=\"default/orders\"}", 1.0),
        (
            "replicant_cluster_spec_valid{cluster=\"default/orders\"}",
            1.0,
        ),
        ("replicant_cluster_epoch{cluster=\"default/orders\"}", 0.0),
        (
            "replicant_cluster_primary{cluster=\"default/orders\",member=\"a\"}",
            1.0,
        ),
        ("replicant_leader", 1.0),
        (
            "replicant_virtual_name_info{cluster=\"default/orders\",name=\"default/orders-rw\"}",
            1.0,
        ),
        (
            "replicant_member_up{cluster=\"default/orders\",member=\"b\"}",
            1.0,
        ),
        (
            "replicant_promotions_total{cluster=\"default/orders\",kind=\"failover\"}",
            0.0,
        ),
        (
            "replicant_probe_errors_total{cluster=\"default/orders\",member=\"a\",kind=\"refused\"}",
            0.0,
        ),
    ] {
        assert_eq!(sample(&metrics, series), Some(value), "{series}\n{metrics}");
    }
    assert!(
        sample(
            &metrics,
            "replicant_reconcile_round_duration_seconds_count{cluster=\"default/orders\"}"
        )
        .is_some_and(|n| n >= 1.0),
        "{metrics}"
    );
    // Redis cannot say how old a replica's data is; no series pretends it can.
    assert!(
        !metrics.contains("replicant_member_lag_seconds{"),
        "{metrics}"
    );
    for needle in [
        "replicant_member_lag_bytes{cluster=\"default/orders\",member=\"b\"}",
        "replicant_proxy_connections_total{name=\"default/orders-rw\"}",
        "replicant_proxy_bytes_total{name=\"default/orders-rw\",direction=\"toClient\"}",
    ] {
        assert!(
            metrics.contains(needle),
            "{needle} missing from:\n{metrics}"
        );
    }

    let output = Command::new(env!("CARGO_BIN_EXE_replicant"))
        .args(["status", "--state", bed.state().to_str().unwrap()])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success());
    assert!(
        table.contains(
            "Cluster default/orders (redis): primary a (spec.primary a), epoch 0, ready 3/3"
        ),
        "{table}"
    );
    assert!(table.contains("name orders-rw"), "{table}");
    assert!(
        table.contains(&format!("listen 127.0.0.1:{}", bed.rw_port)),
        "{table}"
    );

    let output = Command::new(env!("CARGO_BIN_EXE_replicant"))
        .args([
            "status",
            "--state",
            bed.state().to_str().unwrap(),
            "-o",
            "json",
        ])
        .output()
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json[0]["status"]["currentPrimary"], "a");
    let rw = json[0]["virtualNames"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "orders-rw")
        .unwrap();
    assert_eq!(rw["endpoints"][0], "a");

    // A failover is counted and timed.
    bed.server("a").kill();
    bed.wait_for("the failover to finish", &ctl, 20, |r| {
        !r.status.history.is_empty()
    })
    .await;
    let metrics = http_get(admin, "/metrics");
    assert!(
        metrics
            .contains("replicant_promotions_total{cluster=\"default/orders\",kind=\"failover\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "replicant_promotion_duration_seconds_count{cluster=\"default/orders\",kind=\"failover\"} 1"
        ),
        "{metrics}"
    );
    // A killed server refuses connections: counted as such, not as "unreachable".
    assert!(
        sample(
            &metrics,
            "replicant_probe_errors_total{cluster=\"default/orders\",member=\"a\",kind=\"refused\"}"
        )
        .is_some_and(|n| n >= 1.0),
        "{metrics}"
    );
    assert_eq!(
        sample(
            &metrics,
            "replicant_cluster_epoch{cluster=\"default/orders\"}"
        ),
        Some(1.0)
    );
    assert!(
        !metrics.contains("replicant_cluster_primary{cluster=\"default/orders\",member=\"a\"}"),
        "{metrics}"
    );
    let promoted = ["b", "c"].into_iter().filter(|m| {
        sample(
            &metrics,
            &format!("replicant_cluster_primary{{cluster=\"default/orders\",member=\"{m}\"}}"),
        ) == Some(1.0)
    });
    assert_eq!(promoted.count(), 1, "{metrics}");
    let finished = sample(
        &metrics,
        "replicant_last_promotion_timestamp_seconds{cluster=\"default/orders\",kind=\"failover\"}",
    )
    .expect("the last failover's time");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!((now - 60.0..=now + 1.0).contains(&finished), "{finished}");
    // detectAfter is 1s: the gap spans at least that, and far less than the test's wait.
    let gap = sample(
        &metrics,
        "replicant_last_promotion_write_gap_seconds{cluster=\"default/orders\",kind=\"failover\"}",
    )
    .expect("the last failover's write gap");
    assert!((1.0..20.0).contains(&gap), "{gap}");
}

#[tokio::test(flavor = "multi_thread")]
async fn credentials_come_from_the_environment_and_never_reach_logs_or_status() {
    let dir = tempfile::tempdir().unwrap();
    let servers: Vec<_> = (0..2)
        .map(|_| {
            replicant_testkit::RedisProcess::start(dir.path(), &["--requirepass", "pw-9f3a"])
                .unwrap()
        })
        .collect();
    let specs = dir.path().join("specs");
    std::fs::create_dir_all(&specs).unwrap();
    std::fs::write(
        specs.join("c.yaml"),
        format!(
            "apiVersion: replicant.dev/v1alpha1\nkind: ReplicationCluster\nmetadata: {{name: orders}}\nspec:\n  engine: redis\n  primary: a\n  members:\n    - {{name: a, address: \"{}\"}}\n    - {{name: b, address: \"{}\"}}\n  credentials: {{passwordEnv: ORDERS_PW}}\n",
            servers[0].address(),
            servers[1].address()
        ),
    )
    .unwrap();
    let state = dir.path().join("state");
    let ctl = Controller::start(&specs, &state, &[("ORDERS_PW", "pw-9f3a")]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let reports = replicant::runtime::files::state::read_reports(&state).unwrap_or_default();
        if reports.first().is_some_and(|r| {
            r.status
                .conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        }) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not ready:\n{}",
            ctl.log_text()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let status =
        std::fs::read_to_string(state.join("clusters/default.orders/status.json")).unwrap();
    let journal =
        std::fs::read_to_string(state.join("clusters/default.orders/journal.json")).unwrap();
    for text in [&status, &journal, &ctl.log_text()] {
        assert!(!text.contains("pw-9f3a"), "the password leaked:\n{text}");
    }
}

#[test]
fn the_demo_fails_over_with_no_lost_write() {
    let stdout = support::demo(&[]);
    assert!(stdout.contains("kill -9 demo-a"), "{stdout}");
    assert!(
        stdout.contains("first write acknowledged after the kill"),
        "{stdout}"
    );
    assert!(stdout.contains("; lost: 0"), "{stdout}");

    // In sync mode a write counts once WAIT reports a replica holding it: none is lost either.
    let stdout = support::demo(&["--mode", "sync"]);
    assert!(stdout.contains("; sync replication"), "{stdout}");
    assert!(
        stdout.contains("first write acknowledged after the kill"),
        "{stdout}"
    );
    assert!(stdout.contains("; lost: 0"), "{stdout}");
}
