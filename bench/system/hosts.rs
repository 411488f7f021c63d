//! The controller's host lost together with the master: three `replicant run --coordinator`
//! hosts over a three-member etcd (lease 5s), the leader's process and the master killed -9 at
//! once, against one `replicant run` whose master alone is killed, in the same run. Both at
//! `detectAfter: 1s`; the writer goes through a surviving host's read-write proxy.

use std::{
    fmt::Write as _,
    fs,
    path::Path,
    time::{Duration, Instant},
};

use replicant_testkit::{
    RedisProcess,
    writer::{Route, Writer, WriterOptions, count_missing},
};

use crate::{
    etcd::Etcd,
    failover::{self, Fault, System},
    support::{Outcome, Proc, Totals, median, percentile, write_gap},
};

const LEASE_SECS: u64 = 5;
const DETECT_MS: u64 = 1000;

fn host_ip(i: usize) -> String {
    format!("127.0.0.{}", i + 2)
}

fn start_host(i: usize, dir: &Path, specs: &Path, coordinator: &str) -> Proc {
    Proc::spawn(
        env!("CARGO_BIN_EXE_replicant"),
        &[
            "run",
            "--specs",
            specs.to_str().unwrap(),
            "--coordinator",
            coordinator,
            "--identity",
            &format!("h{i}"),
            "--proxy-host",
            &host_ip(i),
            "--lease",
            &format!("{LEASE_SECS}s"),
        ],
        &dir.join(format!("host-{i}.log")),
    )
}

/// Wait until the proxy at `address` sends new connections to a master.
async fn wait_for_master(address: &str, what: &str) {
    for _ in 0..600 {
        if proxy_reaches_master(address).await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what}");
}

/// Whether the proxy at `address` sends a new connection to a master.
async fn proxy_reaches_master(address: &str) -> bool {
    let Ok(client) = redis::Client::open(format!("redis://{address}")) else {
        return false;
    };
    let Ok(Ok(mut conn)) = tokio::time::timeout(
        Duration::from_millis(500),
        client.get_multiplexed_async_connection(),
    )
    .await
    else {
        return false;
    };
    let role: Result<redis::Value, _> = redis::cmd("ROLE").query_async(&mut conn).await;
    matches!(role, Ok(redis::Value::Array(items)) if matches!(items.first(), Some(redis::Value::BulkString(r)) if r == b"master"))
}

async fn hosts_trial(dir: &Path) -> Outcome {
    fs::create_dir_all(dir).unwrap();
    let etcd = Etcd::start(dir, 3);
    let mut servers: Vec<RedisProcess> = (0..3)
        .map(|_| RedisProcess::start(dir, &[]).unwrap())
        .collect();
    let specs = dir.join("specs");
    let rw = failover::write_spec(&specs, &servers, DETECT_MS);
    let endpoints: Vec<String> = etcd
        .members
        .iter()
        .map(|m| format!("127.0.0.1:{}", m.client_port))
        .collect();
    let coordinator = format!("etcd://{}", endpoints.join(","));
    // Host 0 starts first and leads; the others follow once its proxy serves the master.
    let mut leader = start_host(0, dir, &specs, &coordinator);
    let first = format!("{}:{rw}", host_ip(0));
    wait_for_master(&first, "the leading host did not bring the cluster up").await;
    let _followers: Vec<Proc> = (1..3)
        .map(|i| start_host(i, dir, &specs, &coordinator))
        .collect();
    let through = format!("{}:{rw}", host_ip(1));
    wait_for_master(
        &through,
        "a following host's proxy did not serve the master",
    )
    .await;
    let prefix = "bench:";
    let writer = Writer::start(WriterOptions {
        route: Route::Direct(through.clone()),
        prefix: prefix.into(),
        wait_replicas: None,
        timeout: Duration::from_millis(500),
        postgres_password: None,
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    let fault_at = Instant::now();
    let _ = leader.0.kill();
    servers[0].kill();
    let gap = write_gap(&writer, fault_at, Instant::now()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let acks = writer.finish().await;
    let lost = count_missing(&through, prefix, &acks)
        .await
        .unwrap_or(acks.len());
    Outcome {
        gap,
        acknowledged: acks.len(),
        lost,
        split_brain: 0,
    }
}

pub async fn run(trials: usize, root: &Path) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "### The controller's host lost with the master ({trials} trials each, detectAfter 1s)\n"
    );
    let _ = writeln!(
        out,
        "| setup | fault | median gap (s) | p95 gap (s) | no write within 60s | acknowledged | lost (async) |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|");
    let mut medians = Vec::new();
    for setup in ["one process", "three hosts, etcd lease 5s"] {
        let mut outcomes = Vec::new();
        for t in 0..trials {
            let dir = root.join(format!("{}-{t}", medians.len()));
            let outcome = if medians.is_empty() {
                failover::trial(System::Replicant, Fault::Kill, DETECT_MS, &dir).await
            } else {
                hosts_trial(&dir).await
            };
            eprintln!("hosts {setup} trial {t}: {outcome:?}");
            outcomes.push(outcome);
            if std::env::var_os("BENCH_KEEP").is_none() {
                let _ = fs::remove_dir_all(&dir);
            }
        }
        let Totals {
            gaps,
            stuck,
            acknowledged: acked,
            lost,
            ..
        } = Totals::of(&outcomes);
        let fault = if medians.is_empty() {
            "kill -9 of the master"
        } else {
            "kill -9 of the leader's process and the master"
        };
        let _ = writeln!(
            out,
            "| {setup} | {fault} | {:.3} | {:.3} | {stuck} | {acked} | {lost} |",
            median(&gaps),
            percentile(&gaps, 95.0)
        );
        medians.push(median(&gaps));
    }
    let _ = writeln!(
        out,
        "\nLosing the leader's host as well costs {:.2}s more at the median, against a lease of {LEASE_SECS}s.",
        medians[1] - medians[0]
    );
    out
}
