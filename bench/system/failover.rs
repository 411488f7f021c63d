//! Failover: replicant versus three Redis Sentinels on the same three redis-servers, at equal detection settings.

use std::{
    fmt::Write as _,
    fs,
    path::Path,
    time::{Duration, Instant},
};

use replicant_testkit::{
    RedisProcess, free_port,
    writer::{Route, Writer, WriterOptions, count_missing, sentinel_master},
};

use crate::support::{
    Outcome, Proc, Totals, accepts_write, info_field, median, percentile, ready_controller,
    write_gap,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum System {
    Replicant,
    Sentinel,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// kill -9 of the master.
    Kill,
    /// SIGSTOP of the master for longer than the detection window, then SIGCONT.
    Freeze,
}

const WRITER_TIMEOUT: Duration = Duration::from_millis(500);

/// The system under test, set up around three running servers.
enum Setup {
    Replicant {
        _controller: Proc,
        rw: u16,
    },
    Sentinel {
        _sentinels: Vec<Proc>,
        ports: Vec<u16>,
    },
}

/// Write the spec of cluster `bench` over `servers` (a primary) into `specs`, with its
/// read-write name listening on a free port; returns the port.
pub fn write_spec(specs: &Path, servers: &[RedisProcess], detect_ms: u64) -> u16 {
    fs::create_dir_all(specs).unwrap();
    let rw = free_port().unwrap();
    let members: String = servers
        .iter()
        .zip(["a", "b", "c"])
        .map(|(s, n)| format!("    - {{name: {n}, address: \"{}\"}}\n", s.address()))
        .collect();
    fs::write(
        specs.join("bench.yaml"),
        format!(
            "apiVersion: replicant.dev/v1alpha1\nkind: ReplicationCluster\nmetadata: {{name: bench}}\nspec:\n  engine: redis\n  primary: a\n  members:\n{members}  failover: {{standby: b, detectAfter: {detect_ms}ms, cooldown: 1m}}\n---\napiVersion: replicant.dev/v1alpha1\nkind: VirtualName\nmetadata: {{name: bench-rw}}\nspec: {{cluster: bench, target: primary, listen: \"127.0.0.1:{rw}\"}}\n"
        ),
    )
    .unwrap();
    rw
}

async fn replicant(dir: &Path, servers: &[RedisProcess], detect_ms: u64) -> Setup {
    let specs = dir.join("specs");
    let state = dir.join("state");
    let rw = write_spec(&specs, servers, detect_ms);
    let proc = ready_controller(&specs, &state, Duration::from_secs(30)).await;
    Setup::Replicant {
        _controller: proc,
        rw,
    }
}

async fn sentinel(dir: &Path, servers: &[RedisProcess], detect_ms: u64) -> Setup {
    let master = &servers[0];
    for replica in &servers[1..] {
        let client = redis::Client::open(format!("redis://{}", replica.address())).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let _: () = redis::cmd("REPLICAOF")
            .arg("127.0.0.1")
            .arg(master.port)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    for replica in &servers[1..] {
        let address = replica.address();
        let mut linked = false;
        for _ in 0..500 {
            if info_field(&address, "master_link_status").await.as_deref() == Some("up") {
                linked = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(linked, "replica {address} never linked");
    }
    let mut procs = Vec::new();
    let mut ports = Vec::new();
    for i in 0..3 {
        let port = free_port().unwrap();
        let conf = dir.join(format!("sentinel-{i}.conf"));
        fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\ndaemonize no\ndir \"{}\"\nsentinel monitor bench 127.0.0.1 {} 2\nsentinel down-after-milliseconds bench {detect_ms}\nsentinel failover-timeout bench 60000\nsentinel parallel-syncs bench 2\n",
                dir.display(),
                master.port
            ),
        )
        .unwrap();
        procs.push(Proc::spawn(
            "redis-sentinel",
            &[conf.to_str().unwrap()],
            &dir.join(format!("sentinel-{i}.log")),
        ));
        ports.push(port);
    }
    // Ready when every Sentinel knows both replicas and the two other Sentinels.
    for port in &ports {
        let mut ready = false;
        for _ in 0..1000 {
            if let Ok(client) = redis::Client::open(format!("redis://127.0.0.1:{port}"))
                && let Ok(mut conn) = client.get_multiplexed_async_connection().await
                && let Ok(fields) = redis::cmd("SENTINEL")
                    .arg("MASTER")
                    .arg("bench")
                    .query_async::<Vec<String>>(&mut conn)
                    .await
            {
                let get = |k: &str| {
                    fields
                        .iter()
                        .position(|f| f == k)
                        .and_then(|i| fields.get(i + 1))
                        .cloned()
                };
                if get("num-slaves").as_deref() == Some("2")
                    && get("num-other-sentinels").as_deref() == Some("2")
                {
                    ready = true;
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(ready, "sentinel {port} never saw the whole setup");
    }
    Setup::Sentinel {
        _sentinels: procs,
        ports,
    }
}

impl Setup {
    fn route(&self) -> Route {
        match self {
            Setup::Replicant { rw, .. } => Route::Direct(format!("127.0.0.1:{rw}")),
            Setup::Sentinel { ports, .. } => Route::Sentinel {
                sentinels: ports.iter().map(|p| format!("127.0.0.1:{p}")).collect(),
                master: "bench".into(),
            },
        }
    }

    /// Where writes go now.
    async fn master(&self) -> Option<String> {
        match self {
            Setup::Replicant { rw, .. } => Some(format!("127.0.0.1:{rw}")),
            Setup::Sentinel { ports, .. } => {
                let sentinels: Vec<String> =
                    ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
                sentinel_master(&sentinels, "bench", Duration::from_millis(500)).await
            }
        }
    }
}

pub async fn trial(system: System, fault: Fault, detect_ms: u64, dir: &Path) -> Outcome {
    fs::create_dir_all(dir).unwrap();
    let mut servers: Vec<RedisProcess> = (0..3)
        .map(|_| RedisProcess::start(dir, &[]).unwrap())
        .collect();
    let setup = match system {
        System::Replicant => replicant(dir, &servers, detect_ms).await,
        System::Sentinel => sentinel(dir, &servers, detect_ms).await,
    };
    let prefix = "bench:";
    let writer = Writer::start(WriterOptions {
        route: setup.route(),
        prefix: prefix.into(),
        wait_replicas: None,
        timeout: WRITER_TIMEOUT,
        postgres_password: None,
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    let old_master = servers[0].address();
    let fault_at = Instant::now();
    match fault {
        Fault::Kill => servers[0].kill(),
        Fault::Freeze => servers[0].freeze(),
    }
    let gap = write_gap(&writer, fault_at, Instant::now()).await;
    let mut split_brain = 0;
    if fault == Fault::Freeze {
        // Stay frozen well past the detection window, then resume and try the old master directly.
        let frozen_for = Duration::from_millis(detect_ms) + Duration::from_secs(3);
        tokio::time::sleep(frozen_for.saturating_sub(fault_at.elapsed())).await;
        servers[0].thaw();
        let resumed = Instant::now();
        let mut n = 0;
        while resumed.elapsed() < Duration::from_secs(3) {
            n += 1;
            if accepts_write(&old_master, &format!("split:{n}")).await {
                split_brain += 1;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let acks = writer.finish().await;
    let lost = match setup.master().await {
        Some(master) => count_missing(&master, prefix, &acks)
            .await
            .unwrap_or(acks.len()),
        None => acks.len(),
    };
    Outcome {
        gap,
        acknowledged: acks.len(),
        lost,
        split_brain,
    }
}

pub async fn run(trials: usize, detections: &[u64], root: &Path) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "### Failover: replicant vs Redis Sentinel ({trials} trials each)\n"
    );
    let _ = writeln!(
        out,
        "| detection | fault | system | median gap (s) | p95 gap (s) | no write within 60s | acknowledged | lost | split-brain writes |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|");
    let mut ratios = Vec::new();
    for &detect in detections {
        for fault in [Fault::Kill, Fault::Freeze] {
            let mut medians = Vec::new();
            for system in [System::Replicant, System::Sentinel] {
                let mut outcomes = Vec::new();
                for t in 0..trials {
                    let dir = root.join(format!("{detect}-{fault:?}-{system:?}-{t}"));
                    let outcome = trial(system, fault, detect, &dir).await;
                    eprintln!("failover {detect}ms {fault:?} {system:?} trial {t}: {outcome:?}");
                    outcomes.push(outcome);
                    let _ = fs::remove_dir_all(&dir);
                }
                let Totals {
                    gaps,
                    stuck,
                    acknowledged: acked,
                    lost,
                    split_brain,
                } = Totals::of(&outcomes);
                let split_text = if fault == Fault::Freeze {
                    split_brain.to_string()
                } else {
                    "n/a".into()
                };
                let _ = writeln!(
                    out,
                    "| {detect} ms | {} | {system:?} | {:.3} | {:.3} | {stuck} | {acked} | {lost} | {split_text} |",
                    match fault {
                        Fault::Kill => "kill -9",
                        Fault::Freeze => "SIGSTOP/SIGCONT",
                    },
                    median(&gaps),
                    percentile(&gaps, 95.0)
                );
                medians.push(median(&gaps));
            }
            ratios.push(format!(
                "- {detect} ms, {}: replicant/Sentinel median write gap = {:.2}",
                match fault {
                    Fault::Kill => "kill -9",
                    Fault::Freeze => "freeze",
                },
                medians[0] / medians[1]
            ));
        }
    }
    let _ = writeln!(out, "\nRatios (lower is better for replicant):\n");
    for r in ratios {
        let _ = writeln!(out, "{r}");
    }
    out
}
