//! Scale: one controller managing N clusters of three real redis-servers each.

use std::{
    fmt::Write as _,
    fs,
    io::{Read, Write},
    path::Path,
    time::{Duration, Instant},
};

use replicant_testkit::{RedisProcess, free_port};

use crate::support::{controller, is_ready, reports, usage, wait_until};

/// Sum of `replicant_reconcile_rounds_total` over all clusters.
fn rounds(admin: u16) -> f64 {
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", admin)) else {
        return 0.0;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = write!(stream, "GET /metrics HTTP/1.0\r\n\r\n");
    let mut text = String::new();
    let _ = stream.read_to_string(&mut text);
    text.lines()
        .filter(|l| l.starts_with("replicant_reconcile_rounds_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

pub async fn run(sizes: &[usize], root: &Path) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "### Scale: one controller, N clusters of 3 redis-servers (detectAfter 1s, probes wanted every 250 ms)\n"
    );
    let _ = writeln!(
        out,
        "| clusters | redis-servers | controller CPU (% of a core) | per cluster | RSS (MiB) | RSS per cluster (KiB) | round interval achieved (ms) | one failover among them (s) |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|");
    for &n in sizes {
        let dir = root.join(format!("n{n}"));
        let specs = dir.join("specs");
        let state = dir.join("state");
        fs::create_dir_all(&specs).unwrap();
        let mut servers: Vec<RedisProcess> = Vec::with_capacity(3 * n);
        for i in 0..n {
            let trio: Vec<RedisProcess> = (0..3)
                .map(|_| RedisProcess::start(&dir, &[]).unwrap())
                .collect();
            let members: String = trio
                .iter()
                .zip(["a", "b", "c"])
                .map(|(s, m)| format!("    - {{name: {m}, address: \"{}\"}}\n", s.address()))
                .collect();
            fs::write(
                specs.join(format!("c{i}.yaml")),
                format!(
                    "apiVersion: replicant.dev/v1alpha1\nkind: ReplicationCluster\nmetadata: {{name: c{i}}}\nspec:\n  engine: redis\n  primary: a\n  members:\n{members}  failover: {{detectAfter: 1s}}\n"
                ),
            )
            .unwrap();
            servers.extend(trio);
        }
        let admin = free_port().unwrap();
        let proc = controller(&specs, &state, admin);
        let all_ready = wait_until(Duration::from_secs(180), || {
            let r = reports(&state);
            r.len() == n && r.iter().all(is_ready)
        })
        .await;
        if !all_ready {
            let _ = writeln!(
                out,
                "| {n} | {} | not all clusters became ready within 180 s | | | | | |",
                3 * n
            );
            continue;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let window = Duration::from_secs(10);
        let (cpu0, _) = usage(proc.pid());
        let rounds0 = rounds(admin);
        let t0 = Instant::now();
        tokio::time::sleep(window).await;
        let elapsed = t0.elapsed().as_secs_f64();
        let (cpu1, rss) = usage(proc.pid());
        let rounds1 = rounds(admin);
        let cpu_pct = (cpu1 - cpu0) / elapsed * 100.0;
        let per_cluster_rounds = (rounds1 - rounds0) / n as f64;
        let interval_ms = if per_cluster_rounds > 0.0 {
            elapsed * 1000.0 / per_cluster_rounds
        } else {
            f64::NAN
        };

        // Fail one master among all the others.
        servers[0].kill();
        let killed = Instant::now();
        let failed_over = wait_until(Duration::from_secs(30), || {
            reports(&state).iter().any(|r| {
                r.name == "c0"
                    && r.status.current_primary.as_deref() != Some("a")
                    && !r.status.history.is_empty()
            })
        })
        .await;
        let failover = if failed_over {
            format!("{:.3}", killed.elapsed().as_secs_f64())
        } else {
            "none in 30 s".into()
        };
        let _ = writeln!(
            out,
            "| {n} | {} | {cpu_pct:.1} | {:.2} | {:.1} | {:.0} | {interval_ms:.0} | {failover} |",
            3 * n,
            cpu_pct / n as f64,
            rss as f64 / (1 << 20) as f64,
            rss as f64 / 1024.0 / n as f64
        );
        eprintln!("scale {n} done");
        drop(proc);
        drop(servers);
        let _ = fs::remove_dir_all(&dir);
    }
    out
}
