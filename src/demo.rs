//! `replicant demo`: three local redis-servers, the standalone controller, a writer through the read-write
//! virtual name, a kill -9 of the master, and the measured outcome. Starts and stops only its own processes.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use crate::{
    local::{
        LocalError, RedisProcess, free_port, redis_available,
        writer::{Route, Writer, WriterOptions, count_missing},
    },
    standalone::{self, state},
};

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error(transparent)]
    Local(#[from] LocalError),
    #[error("{0}")]
    Setup(String),
    #[error("the cluster did not become ready within {0}s; see the controller log above")]
    NotReady(u64),
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

fn cluster_yaml(name: &str, servers: &[&RedisProcess], rw_port: u16, ro_port: u16) -> String {
    let members: String = servers
        .iter()
        .enumerate()
        .map(|(i, s)| {
            format!(
                "    - name: {name}-{}\n      address: {}\n      priority: {}\n",
                (b'a' + i as u8) as char,
                s.address(),
                if i == 2 { 1 } else { 2 }
            )
        })
        .collect();
    format!(
        "apiVersion: replicant.dev/v1alpha1\nkind: ReplicationCluster\nmetadata:\n  name: {name}\nspec:\n  engine: redis\n  primary: {name}-a\n  members:\n{members}  failover:\n    standby: {name}-b\n    detectAfter: 1s\n    maxLag: 1Mi\n    cooldown: 1m\n---\napiVersion: replicant.dev/v1alpha1\nkind: VirtualName\nmetadata:\n  name: {name}-rw\nspec:\n  cluster: {name}\n  target: primary\n  listen: 127.0.0.1:{rw_port}\n---\napiVersion: replicant.dev/v1alpha1\nkind: VirtualName\nmetadata:\n  name: {name}-ro\nspec:\n  cluster: {name}\n  target: replicas\n  listen: 127.0.0.1:{ro_port}\n"
    )
}

fn read_report(state: &Path, name: &str) -> Option<state::ClusterReport> {
    state::read_reports(state)
        .ok()?
        .into_iter()
        .find(|r| r.name == name)
}

fn condition(report: &state::ClusterReport, type_: &str) -> Option<(String, String, String)> {
    report
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

/// Runs the whole demo, printing as it goes; returns the trials measured.
pub async fn run(trials: usize, work: Option<PathBuf>) -> Result<Vec<Trial>, DemoError> {
    if !redis_available() {
        return Err(LocalError::RedisMissing.into());
    }
    let temp = tempfile::Builder::new()
        .prefix("replicant-demo")
        .tempdir()
        .map_err(|e| DemoError::Setup(e.to_string()))?;
    let root = work.unwrap_or_else(|| temp.path().to_path_buf());
    let mut results = Vec::new();
    for trial in 1..=trials.max(1) {
        let dir = root.join(format!("trial-{trial}"));
        results.push(one_trial(&dir, trial, trials.max(1)).await?);
    }
    Ok(results)
}

async fn one_trial(dir: &Path, trial: usize, of: usize) -> Result<Trial, DemoError> {
    let setup = |e: std::io::Error| DemoError::Setup(e.to_string());
    let specs = dir.join("specs");
    let state_dir = dir.join("state");
    std::fs::create_dir_all(&specs).map_err(setup)?;
    let mut servers = vec![
        RedisProcess::start(dir, &[])?,
        RedisProcess::start(dir, &[])?,
        RedisProcess::start(dir, &[])?,
    ];
    let (rw, ro) = (free_port()?, free_port()?);
    let refs: Vec<&RedisProcess> = servers.iter().collect();
    std::fs::write(specs.join("demo.yaml"), cluster_yaml("demo", &refs, rw, ro)).map_err(setup)?;
    println!(
        "\n== trial {trial}/{of}: redis-servers demo-a {} (pid {}), demo-b {} (pid {}), demo-c {} (pid {}); demo-rw on 127.0.0.1:{rw}",
        servers[0].address(),
        servers[0].pid(),
        servers[1].address(),
        servers[1].pid(),
        servers[2].address(),
        servers[2].pid()
    );

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let options = standalone::Options {
        specs: specs.clone(),
        state: state_dir.clone(),
        admin: None,
        rescan: Duration::from_secs(2),
    };
    let controller = tokio::spawn(standalone::run(options, async {
        let _ = stop_rx.await;
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
        if started.elapsed() > Duration::from_secs(30) {
            let _ = stop_tx.send(());
            return Err(DemoError::NotReady(30));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let prefix = format!("demo:{trial}:");
    let writer = Writer::start(WriterOptions {
        route: Route::Direct(format!("127.0.0.1:{rw}")),
        prefix: prefix.clone(),
        wait_replicas: None,
        timeout: Duration::from_millis(500),
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before = writer.count().await;
    println!(
        "[   0.000s] {before} writes acknowledged through demo-rw; kill -9 demo-a (pid {})",
        servers[0].pid()
    );
    let killed_at = Instant::now();
    servers[0].kill();
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
    let lost = count_missing(&format!("127.0.0.1:{rw}"), &prefix, &acked)
        .await
        .map_err(DemoError::Setup)?;
    let _ = stop_tx.send(());
    let _ = controller.await;
    for s in &mut servers {
        s.kill();
    }
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
