//! `replicant demo`: three local database servers (redis-servers, or postgres servers under
//! node agents), the standalone controller, a writer through the read-write virtual name, the
//! loss of the primary's node, and the measured outcome. Starts and stops only its own
//! processes.

mod servers;

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use self::servers::Servers;
use crate::runtime::{
    files::{self, state},
    report::ClusterReport,
};
use replicant_testkit::{LocalError, free_port, writer::Writer};

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error(transparent)]
    Local(#[from] LocalError),
    #[error("{0}")]
    Setup(String),
    #[error("the cluster did not become ready within {0}s; see the controller log above")]
    NotReady(u64),
}

/// Which servers the demo runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DemoEngine {
    Redis,
    Postgres,
}

/// What the demo runs, and how often.
#[derive(Clone, Debug)]
pub struct DemoOptions {
    pub engine: DemoEngine,
    /// Sync replication: a write is acknowledged once a replica holds it.
    pub sync: bool,
    pub trials: usize,
    /// The replicant executable each PostgreSQL host runs as its node agent.
    pub agent: PathBuf,
    /// Where the servers keep their data (a temporary directory when not given).
    pub work: Option<PathBuf>,
}

/// What one failover trial measured.
#[derive(Clone, Debug, PartialEq)]
pub struct Trial {
    /// From the kill to the first write acknowledged after it.
    pub write_gap: Duration,
    pub acknowledged: usize,
    /// Acknowledged writes missing from the new primary.
    pub lost: usize,
    pub new_primary: String,
}

fn read_report(state: &Path, name: &str) -> Option<ClusterReport> {
    state::read_reports(state)
        .ok()?
        .into_iter()
        .find(|r| r.name == name)
}

fn condition(report: &ClusterReport, type_: &str) -> Option<(String, String, String)> {
    report
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

/// Runs the whole demo, printing as it goes; returns the trials measured.
pub async fn run(options: DemoOptions) -> Result<Vec<Trial>, DemoError> {
    let temp = tempfile::Builder::new()
        .prefix("replicant-demo")
        .tempdir()
        .map_err(|e| DemoError::Setup(e.to_string()))?;
    let root = options
        .work
        .clone()
        .unwrap_or_else(|| temp.path().to_path_buf());
    let trials = options.trials.max(1);
    let mut results = Vec::new();
    for trial in 1..=trials {
        let dir = root.join(format!("trial-{trial}"));
        results.push(one_trial(&options, &dir, trial, trials).await?);
    }
    Ok(results)
}

async fn one_trial(
    options: &DemoOptions,
    dir: &Path,
    trial: usize,
    of: usize,
) -> Result<Trial, DemoError> {
    let setup = |e: std::io::Error| DemoError::Setup(e.to_string());
    let specs = dir.join("specs");
    let state_dir = dir.join("state");
    std::fs::create_dir_all(&specs).map_err(setup)?;
    let mut servers = Servers::start(options.engine, dir, &options.agent)?;
    let (rw, ro) = (free_port()?, free_port()?);
    let rw_address = format!("127.0.0.1:{rw}");
    std::fs::write(
        specs.join("demo.yaml"),
        servers.cluster_yaml(rw, ro, options.sync),
    )
    .map_err(setup)?;
    println!(
        "\n== trial {trial}/{of}: {}; demo-rw on {rw_address}{}",
        servers.describe(),
        if options.sync {
            "; sync replication"
        } else {
            ""
        }
    );
    // Copies of empty hosts take a while; a cache of three redis-servers does not.
    let ready_within = match options.engine {
        DemoEngine::Redis => 30,
        DemoEngine::Postgres => 120,
    };

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let controller_options = files::Options {
        specs: specs.clone(),
        state: state_dir.clone(),
        admin: None,
        rescan: Duration::from_secs(2),
        zone: None,
        // The demo's servers stop with it: nothing to hand over or drain.
        handover_wait: Duration::ZERO,
        drain_grace: Duration::ZERO,
    };
    let controller = tokio::spawn(files::run(controller_options, move || {
        let mut stop = stop_rx.clone();
        async move {
            let _ = stop.wait_for(|stop| *stop).await;
        }
    }));

    let started = Instant::now();
    loop {
        if let Some(report) = read_report(&state_dir, "demo")
            && condition(&report, "Ready").is_some_and(|(s, _, _)| s == "True")
        {
            println!(
                "[setup +{:.2}s] cluster ready: {}",
                started.elapsed().as_secs_f64(),
                condition(&report, "Ready").map(|c| c.2).unwrap_or_default()
            );
            break;
        }
        if started.elapsed() > Duration::from_secs(ready_within) {
            let _ = stop_tx.send(true);
            return Err(DemoError::NotReady(ready_within));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let prefix = format!("demo:{trial}:");
    let writer = Writer::start(servers.writer(&rw_address, &prefix, options.sync));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before = writer.count().await;
    let killed_at = Instant::now();
    let killed = servers.kill_first();
    println!("[   0.000s] {before} writes acknowledged through demo-rw; {killed}");
    // Only a write sent once the process is gone proves the cluster accepts writes again.
    let dead_at = Instant::now();

    let mut last_seen = String::new();
    let mut first_after: Option<Instant> = None;
    while killed_at.elapsed() < Duration::from_secs(15) {
        if let Some(report) = read_report(&state_dir, "demo") {
            let line = match condition(&report, "Reconciling") {
                Some((s, reason, message)) if s == "True" => format!("{reason}: {message}"),
                _ => format!(
                    "primary {} (epoch {}), {}",
                    report.status.current_primary.clone().unwrap_or_default(),
                    report.status.epoch,
                    condition(&report, "Ready").map(|c| c.2).unwrap_or_default()
                ),
            };
            if line != last_seen {
                println!("[{:>8.3}s] {line}", killed_at.elapsed().as_secs_f64());
                last_seen = line;
            }
        }
        if first_after.is_none() {
            let first = writer.first_sent_after(dead_at).await.map(|a| a.acked);
            if let Some(first) = first {
                println!(
                    "[{:>8.3}s] first write acknowledged after the kill",
                    first.duration_since(killed_at).as_secs_f64()
                );
                first_after = Some(first);
            }
        }
        let converged = read_report(&state_dir, "demo").is_some_and(|r| {
            r.status.epoch >= 1 && condition(&r, "Reconciling").is_some_and(|c| c.0 == "False")
        });
        if first_after.is_some() && converged && killed_at.elapsed() > Duration::from_secs(2) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let acked = writer.finish().await;
    let report = read_report(&state_dir, "demo");
    let new_primary = report
        .as_ref()
        .and_then(|r| r.status.current_primary.clone())
        .unwrap_or_default();
    let lost = match servers.count_missing(&rw_address, &prefix, &acked).await {
        Ok(lost) => lost,
        Err(e) => {
            if let Some(report) = read_report(&state_dir, "demo") {
                println!(
                    "status when the count failed: {}",
                    serde_json::to_string_pretty(&report.status).unwrap_or_default()
                );
            }
            let _ = stop_tx.send(true);
            return Err(e);
        }
    };
    let _ = stop_tx.send(true);
    let _ = controller.await;
    drop(servers);
    let gap = first_after
        .map(|f| f.duration_since(killed_at))
        .ok_or_else(|| DemoError::Setup("no write succeeded after the kill within 15s".into()))?;
    println!(
        "result: new primary {new_primary}; write gap {:.3}s; {} writes acknowledged; {lost} lost",
        gap.as_secs_f64(),
        acked.len()
    );
    Ok(Trial {
        write_gap: gap,
        acknowledged: acked.len(),
        lost,
        new_primary,
    })
}
