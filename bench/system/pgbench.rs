//! pgbench against one PostgreSQL primary, directly, through replicant's passthrough virtual
//! name and through HAProxy (TCP mode) at the same client count, in alternating rounds.

use std::{fmt::Write as _, fs, path::Path, process::Command};

use replicant_testkit::{free_port, postgres::PASSWORD};

use crate::{
    postgres::replicant,
    support::{self, Proc, median},
};

const CLIENTS: &str = "8";
const SECONDS: &str = "10";

/// What one pgbench run reported.
#[derive(Clone, Copy, Debug)]
struct Run {
    tps: f64,
    latency_ms: f64,
}

fn pgbench(address: &str, args: &[&str]) -> Run {
    let (host, port) = address.rsplit_once(':').expect("host:port");
    let output = Command::new("pgbench")
        .args(["-h", host, "-p", port, "-U", "postgres", "-n"])
        .args(args)
        .arg("postgres")
        .env("PGPASSWORD", PASSWORD)
        .output()
        .expect("pgbench runs");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "pgbench {args:?} on {address}: {}{}",
        text,
        String::from_utf8_lossy(&output.stderr)
    );
    let field = |prefix: &str| -> f64 {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(prefix))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {prefix:?} in pgbench's output: {text}"))
    };
    Run {
        tps: field("tps = "),
        latency_ms: field("latency average = "),
    }
}

/// HAProxy relaying to `target`, as a TCP load balancer with one server, with as many threads
/// as replicant's proxy runs.
async fn haproxy(dir: &Path, target: &str) -> (Proc, String) {
    let threads = replicant::proxy::proxy_threads();
    let port = free_port().unwrap();
    let config = format!(
        "global\n  maxconn 2000\n  nbthread {threads}\ndefaults\n  mode tcp\n  timeout connect 1s\n  timeout client 30m\n  timeout server 30m\nlisten pg\n  bind 127.0.0.1:{port}\n  server a {target}\n"
    );
    let proc = support::haproxy(dir, "haproxy-pgbench", &config, port).await;
    (proc, format!("127.0.0.1:{port}"))
}

pub async fn run(rounds: usize, root: &Path) -> String {
    fs::create_dir_all(root).unwrap();
    let bed = replicant(root, 1000, false, false).await;
    let primary = bed.primary();
    let init = Command::new("pgbench")
        .args(["-h", "127.0.0.1", "-p", primary.rsplit_once(':').unwrap().1])
        .args(["-U", "postgres", "-i", "-q", "-s", "10", "postgres"])
        .env("PGPASSWORD", PASSWORD)
        .output()
        .expect("pgbench -i");
    assert!(init.status.success(), "{init:?}");
    let (_haproxy, through_haproxy) = haproxy(root, &primary).await;
    let paths = [
        ("direct", primary.clone()),
        ("replicant virtual name (passthrough)", bed.rw.clone()),
        ("HAProxy (tcp)", through_haproxy),
    ];
    let mut out = format!(
        "### pgbench through the read-write endpoint\n\n{CLIENTS} clients, 2 threads, {SECONDS}s per run, scale 10, {rounds} alternating rounds (median). Both proxies run {} thread(s). Ratio: against HAProxy.\n\n| workload | path | tps | latency | ratio |\n|---|---|---|---|---|\n",
        replicant::proxy::proxy_threads()
    );
    for (workload, args) in [
        ("select-only (-S)", vec!["-S"]),
        ("simple update (-N)", vec!["-N"]),
        (
            "select-only, a connection per transaction (-S -C)",
            vec!["-S", "-C"],
        ),
    ] {
        let mut runs = vec![Vec::new(); paths.len()];
        for _ in 0..rounds {
            for (i, (_, address)) in paths.iter().enumerate() {
                let mut all = vec!["-c", CLIENTS, "-j", "2", "-T", SECONDS];
                all.extend(&args);
                runs[i].push(pgbench(address, &all));
            }
        }
        let tps: Vec<f64> = runs
            .iter()
            .map(|r| median(&r.iter().map(|x| x.tps).collect::<Vec<_>>()))
            .collect();
        for (i, (name, _)) in paths.iter().enumerate() {
            let latency = median(&runs[i].iter().map(|x| x.latency_ms).collect::<Vec<_>>());
            let _ = writeln!(
                out,
                "| {workload} | {name} | {:.0} | {latency:.3} ms | {:.2} |",
                tps[i],
                tps[i] / tps[2]
            );
        }
    }
    out
}
