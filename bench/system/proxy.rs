//! The virtual-name proxy: redis-benchmark directly, through replicant's proxy, and through HAProxy (TCP mode).

use std::{
    collections::BTreeMap, fmt::Write as _, fs, path::Path, process::Command, time::Duration,
};

use replicant::local::{RedisProcess, free_port};

use crate::support::{Proc, controller, is_ready, median, reports, wait_until};

/// One redis-benchmark result line.
#[derive(Clone, Debug, Default)]
struct Sample {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
}

/// Run redis-benchmark and parse its CSV: test name -> sample.
fn benchmark(port: u16, pipeline: usize, requests: usize) -> BTreeMap<String, Sample> {
    // coreutils timeout: redis-benchmark spins forever on a dead port.
    let output = Command::new("timeout")
        .args([
            "300",
            "redis-benchmark",
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-c",
            "50",
            "-t",
            "set,get",
            "--csv",
        ])
        .args(["-n", &requests.to_string(), "-P", &pipeline.to_string()])
        .output()
        .expect("redis-benchmark runs");
    let text = String::from_utf8_lossy(&output.stdout);
    let mut lines = text.lines();
    let header: Vec<String> = lines
        .next()
        .unwrap_or_default()
        .split(',')
        .map(|h| h.trim_matches('"').to_string())
        .collect();
    let col = |name: &str| header.iter().position(|h| h == name);
    let (rps, p50, p99) = (col("rps"), col("p50_latency_ms"), col("p99_latency_ms"));
    lines
        .filter_map(|line| {
            let cells: Vec<&str> = line.split(',').map(|c| c.trim_matches('"')).collect();
            let number = |i: Option<usize>| {
                i.and_then(|i| cells.get(i))
                    .and_then(|c| c.parse::<f64>().ok())
            };
            Some((
                cells.first()?.to_string(),
                Sample {
                    rps: number(rps)?,
                    p50_ms: number(p50)?,
                    p99_ms: number(p99)?,
                },
            ))
        })
        .collect()
}

pub async fn run(dir: &Path) -> String {
    fs::create_dir_all(dir).unwrap();
    let server = RedisProcess::start(dir, &[]).unwrap();

    // replicant: a one-member cluster whose read-write name is served by the built-in proxy.
    let specs = dir.join("specs");
    fs::create_dir_all(&specs).unwrap();
    let replicant_port = free_port().unwrap();
    fs::write(
        specs.join("proxy.yaml"),
        format!(
            "apiVersion: replicant.dev/v1alpha1\nkind: ReplicationCluster\nmetadata: {{name: proxy}}\nspec:\n  engine: redis\n  primary: a\n  members:\n    - {{name: a, address: \"{}\"}}\n---\napiVersion: replicant.dev/v1alpha1\nkind: VirtualName\nmetadata: {{name: proxy-rw}}\nspec: {{cluster: proxy, target: primary, listen: \"127.0.0.1:{replicant_port}\"}}\n",
            server.address()
        ),
    )
    .unwrap();
    let state = dir.join("state");
    let _controller = controller(&specs, &state, free_port().unwrap());
    assert!(
        wait_until(Duration::from_secs(30), || reports(&state)
            .first()
            .is_some_and(
                |r| is_ready(r) && r.virtual_names.iter().any(|v| !v.endpoints.is_empty())
            ))
        .await,
        "replicant did not set up the proxy"
    );

    // HAProxy in TCP mode in front of the same server.
    let haproxy_port = free_port().unwrap();
    let cfg = dir.join("haproxy.cfg");
    fs::write(
        &cfg,
        format!(
            "global\n  maxconn 4000\ndefaults\n  mode tcp\n  timeout connect 1s\n  timeout client 60s\n  timeout server 60s\nlisten redis\n  bind 127.0.0.1:{haproxy_port}\n  server r1 {}\n",
            server.address()
        ),
    )
    .unwrap();
    let _haproxy = Proc::spawn(
        "haproxy",
        &["-f", cfg.to_str().unwrap(), "-db"],
        &dir.join("haproxy.log"),
    );
    let listening = wait_until(Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", haproxy_port)).is_ok()
    })
    .await;
    assert!(
        listening,
        "haproxy did not start: {}",
        fs::read_to_string(dir.join("haproxy.log")).unwrap_or_default()
    );

    let targets = [
        ("direct", server.port),
        ("replicant proxy", replicant_port),
        ("HAProxy", haproxy_port),
    ];
    let rounds = 3;
    let mut samples: BTreeMap<(usize, String, &str), Vec<Sample>> = BTreeMap::new();
    for round in 0..rounds {
        for pipeline in [1usize, 16] {
            let requests = if pipeline == 1 { 100_000 } else { 500_000 };
            // Interleaved, so a noisy moment hurts every target alike.
            for (name, port) in targets {
                for (test, sample) in benchmark(port, pipeline, requests) {
                    samples
                        .entry((pipeline, test, name))
                        .or_default()
                        .push(sample);
                }
            }
        }
        eprintln!("proxy round {} of {rounds} done", round + 1);
    }

    let mut out = String::new();
    let _ = writeln!(
        out,
        "### Virtual-name proxy: redis-benchmark, 50 clients, median of {rounds} interleaved rounds\n"
    );
    let _ = writeln!(
        out,
        "| pipeline | test | target | requests/s | p50 (ms) | p99 (ms) | vs direct | vs HAProxy |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|");
    let summary = |pipeline: usize, test: &str, name: &str| -> Option<(f64, f64, f64)> {
        let list = samples.get(&(pipeline, test.to_string(), name))?;
        let pick = |f: fn(&Sample) -> f64| median(&list.iter().map(f).collect::<Vec<_>>());
        Some((pick(|s| s.rps), pick(|s| s.p50_ms), pick(|s| s.p99_ms)))
    };
    for pipeline in [1usize, 16] {
        for test in ["SET", "GET"] {
            let direct = summary(pipeline, test, "direct")
                .map(|s| s.0)
                .unwrap_or(f64::NAN);
            let haproxy = summary(pipeline, test, "HAProxy")
                .map(|s| s.0)
                .unwrap_or(f64::NAN);
            for (name, _) in targets {
                let Some((rps, p50, p99)) = summary(pipeline, test, name) else {
                    continue;
                };
                let _ = writeln!(
                    out,
                    "| {pipeline} | {test} | {name} | {rps:.0} | {p50:.3} | {p99:.3} | {:.2} | {:.2} |",
                    rps / direct,
                    rps / haproxy
                );
            }
        }
    }
    out
}
