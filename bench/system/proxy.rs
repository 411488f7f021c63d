//! The virtual-name proxy: redis-benchmark directly, through replicant's proxy, and through HAProxy (TCP mode).

use std::{
    collections::BTreeMap, fmt::Write as _, fs, path::Path, process::Command, time::Duration,
};

use replicant_testkit::{RedisProcess, free_port};

use crate::support::{controller, haproxy, is_ready, median, reports, usage, wait_until};

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

/// A proxy process, or none for the direct target.
#[derive(Clone, Copy)]
struct Target {
    name: &'static str,
    port: u16,
    pid: Option<u32>,
}

pub async fn run(dir: &Path) -> String {
    fs::create_dir_all(dir).unwrap();
    let server = RedisProcess::start(dir, &[]).unwrap();
    // Both proxies get the same number of threads: replicant's default here.
    let threads = replicant::proxy::proxy_threads();

    // replicant: a one-member cluster with two names on the built-in proxy, one per mode.
    let specs = dir.join("specs");
    fs::create_dir_all(&specs).unwrap();
    let (passthrough_port, multiplex_port) = (free_port().unwrap(), free_port().unwrap());
    fs::write(
        specs.join("proxy.yaml"),
        format!(
            "apiVersion: replicant.dev/v1alpha1\nkind: ReplicationCluster\nmetadata: {{name: proxy}}\nspec:\n  engine: redis\n  primary: a\n  members:\n    - {{name: a, address: \"{}\"}}\n---\napiVersion: replicant.dev/v1alpha1\nkind: VirtualName\nmetadata: {{name: proxy-rw}}\nspec: {{cluster: proxy, target: primary, listen: \"127.0.0.1:{passthrough_port}\"}}\n---\napiVersion: replicant.dev/v1alpha1\nkind: VirtualName\nmetadata: {{name: proxy-mux}}\nspec: {{cluster: proxy, target: primary, listen: \"127.0.0.1:{multiplex_port}\", proxyMode: multiplex}}\n",
            server.address()
        ),
    )
    .unwrap();
    let state = dir.join("state");
    let controller = controller(&specs, &state, free_port().unwrap());
    assert!(
        wait_until(Duration::from_secs(30), || reports(&state)
            .first()
            .is_some_and(|r| is_ready(r)
                && r.virtual_names.len() == 2
                && r.virtual_names.iter().all(|v| !v.endpoints.is_empty())))
        .await,
        "replicant did not set up the proxies"
    );

    // HAProxy in TCP mode in front of the same server, with as many threads.
    let haproxy_port = free_port().unwrap();
    let haproxy = haproxy(
        dir,
        "haproxy",
        &format!(
            "global\n  maxconn 4000\n  nbthread {threads}\ndefaults\n  mode tcp\n  timeout connect 1s\n  timeout client 60s\n  timeout server 60s\nlisten redis\n  bind 127.0.0.1:{haproxy_port}\n  server r1 {}\n",
            server.address()
        ),
        haproxy_port,
    )
    .await;

    let targets = [
        Target {
            name: "direct",
            port: server.port,
            pid: None,
        },
        Target {
            name: "replicant passthrough",
            port: passthrough_port,
            pid: Some(controller.pid()),
        },
        Target {
            name: "replicant multiplex",
            port: multiplex_port,
            pid: Some(controller.pid()),
        },
        Target {
            name: "HAProxy",
            port: haproxy_port,
            pid: Some(haproxy.pid()),
        },
    ];
    let rounds: usize = std::env::var("BENCH_PROXY_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let mut samples: BTreeMap<(usize, String, &str), Vec<Sample>> = BTreeMap::new();
    // Proxy CPU per request, per pipeline depth and target (both tests of a run together).
    let mut cpu: BTreeMap<(usize, &str), Vec<f64>> = BTreeMap::new();
    for round in 0..rounds {
        for pipeline in [1usize, 16] {
            let requests = if pipeline == 1 { 100_000 } else { 500_000 };
            // Interleaved, so a noisy moment hurts every target alike.
            for target in targets {
                let before = target.pid.map(|pid| usage(pid).0);
                let results = benchmark(target.port, pipeline, requests);
                if let (Some(pid), Some(before)) = (target.pid, before) {
                    let spent = usage(pid).0 - before;
                    let served = (requests * results.len().max(1)) as f64;
                    cpu.entry((pipeline, target.name))
                        .or_default()
                        .push(spent / served * 1e6);
                }
                for (test, sample) in results {
                    samples
                        .entry((pipeline, test, target.name))
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
        "Both proxies run {threads} thread(s). *passthrough* copies bytes like HAProxy; *multiplex* pipelines all clients' stateless commands over one server connection per proxy thread.\n"
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
            for target in targets {
                let Some((rps, p50, p99)) = summary(pipeline, test, target.name) else {
                    continue;
                };
                let _ = writeln!(
                    out,
                    "| {pipeline} | {test} | {} | {rps:.0} | {p50:.3} | {p99:.3} | {:.2} | {:.2} |",
                    target.name,
                    rps / direct,
                    rps / haproxy
                );
            }
        }
    }
    let _ = writeln!(
        out,
        "\nProxy CPU (user + system) per request, median over rounds:\n\n| pipeline | target | CPU µs/request | vs HAProxy |\n|---|---|---|---|"
    );
    for pipeline in [1usize, 16] {
        let haproxy = cpu
            .get(&(pipeline, "HAProxy"))
            .map(|v| median(v))
            .unwrap_or(f64::NAN);
        for target in targets.iter().filter(|t| t.pid.is_some()) {
            if let Some(values) = cpu.get(&(pipeline, target.name)) {
                let used = median(values);
                let _ = writeln!(
                    out,
                    "| {pipeline} | {} | {used:.2} | {:.2} |",
                    target.name,
                    used / haproxy
                );
            }
        }
    }
    out
}
