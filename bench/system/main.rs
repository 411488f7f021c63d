//! System benchmarks, one command: failover against Redis Sentinel, the virtual-name proxy against
//! HAProxy, one controller managing many clusters, the controller's host lost with the master
//! (hosts coordinated through etcd), and PostgreSQL failover against Patroni with pgbench through
//! the virtual name, PostgreSQL with the control plane away (replicant's controller, Patroni's
//! etcd), and base backups and restores against pgBackRest. Prints Markdown tables with ratios.
//!
//! Environment: `BENCH_TRIALS` (default 5), `BENCH_PROXY_ROUNDS` (default 5), `BENCH_SCALE`
//! (default `10,50,100`), `BENCH_SECTIONS` (default `failover,proxy,scale,hosts,postgres,pgbench,away,backup`),
//! `BENCH_PG_TRIALS` (default 3), `BENCH_PG_FAULTS` (default `kill,freeze,partition`),
//! `BENCH_PG_SYSTEMS` (default `replicant-1s,replicant-5s,patroni-minimum,patroni-defaults`),
//! `BENCH_AWAY_SECS` (default 30) and `BENCH_AWAY_TRIALS` (default 1) for the `away` section,
//! `BENCH_BACKUP_SCALE` (default 100) and `BENCH_BACKUP_TRIALS` (default 2) for the `backup`
//! section, `BENCH_KEEP` (set: the work directory, with every process's log, is kept).

mod away;
mod backup;
#[path = "../../tests/support/etcd.rs"]
mod etcd;
mod failover;
mod hosts;
mod pgbench;
mod postgres;
mod proxy;
mod scale;
mod support;

fn main() {
    let trials = support::env_number("BENCH_TRIALS", 5);
    let sections = std::env::var("BENCH_SECTIONS")
        .unwrap_or_else(|_| "failover,proxy,scale,hosts,postgres,pgbench,away,backup".into());
    let scale: Vec<usize> = std::env::var("BENCH_SCALE")
        .unwrap_or_else(|_| "10,50,100".into())
        .split(',')
        .filter_map(|n| n.trim().parse().ok())
        .collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let root = support::workdir("system");
    let mut report = String::new();
    report.push_str(&format!(
        "## replicant system benchmarks\n\nMachine: {} CPUs, {}; redis-server {}; {}; {}; {}; {}\n\n",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        std::env::consts::ARCH,
        version("redis-server", &["--version"]),
        version("haproxy", &["-v"]),
        version("patroni", &["--version"]),
        version("etcd", &["--version"]),
        replicant_testkit::postgres::bin_dir()
            .map(|bin| version(&bin.join("postgres").to_string_lossy(), &["--version"]))
            .unwrap_or_else(|| "postgres not found".into()),
    ));
    runtime.block_on(async {
        if sections.contains("failover") {
            let out = failover::run(trials, &[1000, 5000], &root.join("failover")).await;
            println!("{out}");
            report.push_str(&out);
            report.push('\n');
        }
        if sections.contains("proxy") {
            let out = proxy::run(&root.join("proxy")).await;
            println!("{out}");
            report.push_str(&out);
            report.push('\n');
        }
        if sections.contains("scale") {
            let out = scale::run(&scale, &root.join("scale")).await;
            println!("{out}");
            report.push_str(&out);
            report.push('\n');
        }
        if sections.contains("hosts") {
            let out = hosts::run(trials, &root.join("hosts")).await;
            println!("{out}");
            report.push_str(&out);
            report.push('\n');
        }
        if sections.contains("postgres") {
            let faults: Vec<postgres::Fault> = std::env::var("BENCH_PG_FAULTS")
                .unwrap_or_else(|_| "kill,freeze,partition".into())
                .split(',')
                .filter_map(postgres::Fault::parse)
                .collect();
            let trials = support::env_number("BENCH_PG_TRIALS", 3);
            let systems =
                postgres::systems(&std::env::var("BENCH_PG_SYSTEMS").unwrap_or_else(|_| {
                    "replicant-1s,replicant-5s,patroni-minimum,patroni-defaults".into()
                }));
            let out = postgres::run(trials, &systems, &faults, &root.join("postgres")).await;
            println!("{out}");
            report.push_str(&out);
            report.push('\n');
        }
        if sections.contains("pgbench") {
            let out = pgbench::run(
                support::env_number("BENCH_PROXY_ROUNDS", 5),
                &root.join("pgbench"),
            )
            .await;
            println!("{out}");
            report.push_str(&out);
            report.push('\n');
        }
        if sections.contains("away") {
            let away =
                std::time::Duration::from_secs(support::env_number("BENCH_AWAY_SECS", 30) as u64);
            let trials = support::env_number("BENCH_AWAY_TRIALS", 1);
            let out = away::run(trials, away, &root.join("away")).await;
            println!("{out}");
            report.push_str(&out);
            report.push('\n');
        }
        if sections.contains("backup") {
            let out = backup::run(
                support::env_number("BENCH_BACKUP_TRIALS", 2),
                support::env_number("BENCH_BACKUP_SCALE", 100),
                &root.join("backup"),
            )
            .await;
            println!("{out}");
            report.push_str(&out);
        }
    });
    if std::env::var_os("BENCH_KEEP").is_none() {
        let _ = std::fs::remove_dir_all(&root);
    }
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-system.md");
    if std::fs::write(&out, &report).is_ok() {
        eprintln!("report written to {}", out.display());
    }
}

fn version(program: &str, args: &[&str]) -> String {
    std::process::Command::new(program)
        .args(args)
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.lines().next().map(|l| l.trim().to_string()))
        .unwrap_or_else(|| format!("{program} not found"))
}
