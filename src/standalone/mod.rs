//! The standalone runtime: a directory of specs in, live servers reconciled out, virtual names served by built-in proxies.
//!
//! A thin adapter over [`crate::reconcile`]: it supplies a file journal, proxies as the router,
//! and a task per cluster that runs rounds back to back at the pace the plan asks for.

pub mod proxy;
pub mod specs;
pub mod state;

use std::{
    collections::HashMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use notify::Watcher;
use tokio::{sync::watch, task::JoinHandle};

use self::{
    proxy::{Proxies, ProxyRouter},
    specs::{ClusterKey, SpecSet},
    state::{ClusterReport, FileJournalStore, NameReport},
};
use crate::{
    api::{ReplicationClusterSpec, ReplicationClusterStatus},
    desired::Desired,
    engine::{AgentAccess, Credentials, Engine, Secret},
    metrics::{self, Metrics},
    reconcile::{self, Deps, Memory},
    status,
};

/// How `replicant run` was asked to work.
#[derive(Clone, Debug)]
pub struct Options {
    pub specs: PathBuf,
    pub state: PathBuf,
    /// `/metrics` and `/healthz`; none when unset.
    pub admin: Option<SocketAddr>,
    /// Look at the spec directory at least this often, whatever the file watcher says.
    pub rescan: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("spec directory {0}: {1}")]
    Specs(String, std::io::Error),
    #[error("state directory {0}: {1}")]
    State(String, std::io::Error),
    #[error("admin address {0}: {1}")]
    Admin(SocketAddr, std::io::Error),
}

/// What a cluster task works from; replaced whenever the specs change.
#[derive(Clone, Debug, PartialEq)]
struct Input {
    namespace: String,
    desired: Desired,
    spec_problems: Vec<String>,
}

struct ClusterTask {
    input: watch::Sender<Input>,
    task: JoinHandle<()>,
}

/// Run until `shutdown` completes.
pub async fn run(
    options: Options,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), RunError> {
    let specs_dir = options.specs.clone();
    std::fs::read_dir(&specs_dir)
        .map_err(|e| RunError::Specs(specs_dir.display().to_string(), e))?;
    std::fs::create_dir_all(&options.state)
        .map_err(|e| RunError::State(options.state.display().to_string(), e))?;
    crate::accept::raise_descriptor_limit();
    let metrics = Arc::new(Metrics::default());
    if let Some(addr) = options.admin {
        metrics::start_admin(addr, metrics.clone())
            .await
            .map_err(|e| RunError::Admin(addr, e))?;
    }
    let proxies = Arc::new(Proxies::new(Some(metrics.clone())));

    let (changed_tx, mut changed_rx) = tokio::sync::mpsc::channel::<()>(1);
    // Without a watcher the periodic rescan still picks changes up.
    let _watcher = notify::recommended_watcher(move |_event| {
        let _ = changed_tx.try_send(());
    })
    .and_then(|mut w| {
        w.watch(&specs_dir, notify::RecursiveMode::Recursive)
            .map(|_| w)
    })
    .map_err(|e| tracing::warn!(error = %e, "file watcher unavailable; rescanning periodically"))
    .ok();

    let mut specs = SpecSet::default();
    let mut tasks: HashMap<ClusterKey, ClusterTask> = HashMap::new();
    // None until the first load, so that a clean start clears what an earlier run reported.
    let mut reported: Option<Vec<String>> = None;
    tokio::pin!(shutdown);
    loop {
        specs = specs.reload(&specs_dir);
        let problems: Vec<String> = specs.problems.iter().map(|p| p.to_string()).collect();
        if reported.as_ref() != Some(&problems) {
            // Once per change, however often the unchanged files are rescanned.
            for problem in &problems {
                tracing::warn!(reason = "InvalidSpec", problem = %problem, "spec rejected; the last good version keeps running");
            }
            let report = state::SpecsReport {
                problems: problems.clone(),
            };
            if let Err(e) = state::write_specs_report(&options.state, &report) {
                tracing::warn!(error = %e, "cannot write the spec report");
            }
            reported = Some(problems);
        }
        apply_specs(&specs, &mut tasks, &options.state, &proxies, &metrics);
        tokio::select! {
            _ = changed_rx.recv() => {
                // Let a burst of writes (a git pull) settle before reading.
                tokio::time::sleep(Duration::from_millis(100)).await;
                while changed_rx.try_recv().is_ok() {}
            }
            _ = tokio::time::sleep(options.rescan) => {}
            _ = &mut shutdown => break,
        }
    }
    for (_, task) in tasks.drain() {
        task.task.abort();
    }
    Ok(())
}

fn apply_specs(
    specs: &SpecSet,
    tasks: &mut HashMap<ClusterKey, ClusterTask>,
    state: &Path,
    proxies: &Arc<Proxies>,
    metrics: &Arc<Metrics>,
) {
    let desired = specs.desired();
    tasks.retain(|key, task| {
        let keep = desired.contains_key(key);
        if !keep {
            tracing::info!(cluster = %key.1, namespace = %key.0, "no longer in the specs; no longer managed");
            task.task.abort();
        }
        keep
    });
    let keep: Vec<String> = desired
        .iter()
        .flat_map(|((ns, _), d)| {
            d.virtual_names
                .iter()
                .map(move |vn| format!("{ns}/{}", vn.name))
        })
        .collect();
    proxies.retain(&keep);
    for (key, d) in desired {
        let input = Input {
            namespace: key.0.clone(),
            desired: d,
            spec_problems: specs.problems_for(&key),
        };
        match tasks.get(&key) {
            Some(task) => {
                task.input.send_if_modified(|current| {
                    let changed = *current != input;
                    if changed {
                        *current = input.clone();
                    }
                    changed
                });
            }
            None => {
                let (tx, rx) = watch::channel(input);
                let dir = state::cluster_dir(state, &key.0, &key.1);
                let task = tokio::spawn(cluster_loop(rx, dir, proxies.clone(), metrics.clone()));
                tasks.insert(key, ClusterTask { input: tx, task });
            }
        }
    }
}

/// Resolve a standalone credentials reference (file or environment variable).
pub fn credentials(spec: &ReplicationClusterSpec) -> Result<Credentials, String> {
    let Some(reference) = &spec.credentials else {
        return Ok(Credentials::default());
    };
    let password = if let Some(var) = &reference.password_env {
        Some(std::env::var(var).map_err(|_| {
            format!("spec.credentials.passwordEnv: environment variable {var} is not set")
        })?)
    } else if let Some(file) = &reference.password_file {
        let text = std::fs::read_to_string(file)
            .map_err(|e| format!("spec.credentials.passwordFile: {file}: {e}"))?;
        Some(text.trim_end_matches(['\n', '\r']).to_string())
    } else {
        return Err("spec.credentials.secretRef needs the Kubernetes operator; use passwordFile or passwordEnv here".into());
    };
    Ok(Credentials {
        username: reference.username.clone(),
        password: password.map(Secret::new),
    })
}

/// A cluster's engine, or why it cannot have one (shown in status).
type EngineOrError = Result<Arc<dyn Engine>, String>;

fn engine_for(spec: &ReplicationClusterSpec) -> EngineOrError {
    let agents = AgentAccess {
        token: agent_token(spec)?,
        ca_pem: agent_ca(spec)?,
    };
    crate::engine::for_cluster(spec, credentials(spec)?, agents)
}

/// The largest CA bundle read: a few hundred certificates.
const MAX_CA_BUNDLE: u64 = 1 << 20;

/// Read a standalone `agentTls` reference: the CA bundle in `caFile`.
pub fn agent_ca(spec: &ReplicationClusterSpec) -> Result<Option<String>, String> {
    let Some(tls) = &spec.agent_tls else {
        return Ok(None);
    };
    let Some(file) = &tls.ca_file else {
        return Err(
            "spec.agentTls.caSecretRef needs the Kubernetes operator; use caFile here".into(),
        );
    };
    let read = || -> std::io::Result<String> {
        use std::io::Read;
        let mut text = String::new();
        std::fs::File::open(file)?
            .take(MAX_CA_BUNDLE + 1)
            .read_to_string(&mut text)?;
        Ok(text)
    };
    let text = read().map_err(|e| format!("spec.agentTls.caFile: {file}: {e}"))?;
    if text.len() as u64 > MAX_CA_BUNDLE {
        return Err(format!(
            "spec.agentTls.caFile: {file}: larger than {MAX_CA_BUNDLE} bytes"
        ));
    }
    Ok(Some(text))
}

/// Resolve a standalone agent token reference (file or environment variable).
pub fn agent_token(spec: &ReplicationClusterSpec) -> Result<Option<Secret>, String> {
    let Some(reference) = &spec.agent_token else {
        return Ok(None);
    };
    let token = if let Some(var) = &reference.token_env {
        std::env::var(var).map_err(|_| {
            format!("spec.agentToken.tokenEnv: environment variable {var} is not set")
        })?
    } else if let Some(file) = &reference.token_file {
        let text = std::fs::read_to_string(file)
            .map_err(|e| format!("spec.agentToken.tokenFile: {file}: {e}"))?;
        text.trim_end_matches(['\n', '\r']).to_string()
    } else {
        return Err("spec.agentToken.secretRef needs the Kubernetes operator; use tokenFile or tokenEnv here".into());
    };
    Ok(Some(Secret::new(token)))
}

/// One cluster, forever: observe -> plan -> act -> status, at the pace the plan asks for.
async fn cluster_loop(
    mut input: watch::Receiver<Input>,
    dir: PathBuf,
    proxies: Arc<Proxies>,
    metrics: Arc<Metrics>,
) {
    let store = FileJournalStore::new(&dir);
    let mut memory = Memory::default();
    let mut previous: Option<ReplicationClusterStatus> = None;
    let mut last_report: Option<ClusterReport> = None;
    let mut engine: Option<(ReplicationClusterSpec, EngineOrError)> = None;
    let unproxied = Arc::new(Mutex::new(HashMap::new()));
    loop {
        let current = input.borrow_and_update().clone();
        let name = current.desired.name.clone();
        if engine
            .as_ref()
            .is_none_or(|(spec, _)| spec != &current.desired.spec)
        {
            engine = Some((
                current.desired.spec.clone(),
                engine_for(&current.desired.spec),
            ));
        }
        let (router, listen_errors) = router_for(&current, &proxies, &unproxied).await;
        let wait = match &engine.as_ref().expect("set above").1 {
            Err(error) => {
                tracing::error!(cluster = %name, %error, "cannot manage cluster");
                let stale = previous.clone().unwrap_or_default();
                publish(
                    &dir,
                    &mut last_report,
                    report(&current, stale, &router, Some(error.clone())).await,
                );
                Duration::from_secs(5)
            }
            Ok(engine) => {
                let deps = Deps {
                    engine: engine.as_ref(),
                    store: &store,
                    router: &router,
                };
                match reconcile::reconcile(
                    &current.desired,
                    &mut memory,
                    previous.as_ref(),
                    None,
                    &deps,
                )
                .await
                {
                    Ok(round) => {
                        metrics.record_round(&name, &round);
                        let error = (!listen_errors.is_empty()).then(|| listen_errors.join("; "));
                        let changed_conditions = previous.as_ref().is_none_or(|p| {
                            !status::same_conditions(&p.conditions, &round.status.conditions)
                        });
                        if changed_conditions {
                            for c in &round.status.conditions {
                                if c.status == "True" && !c.message.is_empty() {
                                    tracing::info!(cluster = %name, condition = %c.type_, reason = %c.reason, message = %c.message, "condition");
                                }
                            }
                        }
                        publish(
                            &dir,
                            &mut last_report,
                            report(&current, round.status.clone(), &router, error).await,
                        );
                        previous = Some(round.status);
                        round.plan.requeue_after
                    }
                    Err(error) => {
                        tracing::error!(cluster = %name, %error, "reconcile failed");
                        let stale = previous.clone().unwrap_or_default();
                        publish(
                            &dir,
                            &mut last_report,
                            report(&current, stale, &router, Some(error.to_string())).await,
                        );
                        Duration::from_secs(1)
                    }
                }
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            changed = input.changed() => if changed.is_err() { return },
        }
    }
}

/// The cluster's router, starting or moving proxies for names with a `listen` address.
async fn router_for(
    input: &Input,
    proxies: &Arc<Proxies>,
    unproxied: &Arc<Mutex<HashMap<String, Vec<String>>>>,
) -> (ProxyRouter, Vec<String>) {
    let mut keys = HashMap::new();
    let mut errors = Vec::new();
    for vn in &input.desired.virtual_names {
        if let Some(listen) = &vn.spec.listen {
            let key = format!("{}/{}", input.namespace, vn.name);
            match proxies
                .ensure(&key, listen, vn.spec.balancing, vn.spec.proxy_mode)
                .await
            {
                Ok(()) => {
                    keys.insert(vn.name.clone(), key);
                }
                Err(e) => errors.push(e.to_string()),
            }
        }
    }
    let router = ProxyRouter {
        proxies: proxies.clone(),
        keys,
        unproxied: unproxied.clone(),
    };
    (router, errors)
}

async fn report(
    input: &Input,
    status: ReplicationClusterStatus,
    router: &ProxyRouter,
    error: Option<String>,
) -> ClusterReport {
    let mut names = Vec::new();
    for vn in &input.desired.virtual_names {
        names.push(NameReport {
            name: vn.name.clone(),
            target: vn.spec.target.to_string(),
            listen: vn.spec.listen.clone(),
            endpoints: reconcile::Router::current(router, &vn.name)
                .await
                .unwrap_or_default(),
        });
    }
    ClusterReport {
        namespace: input.namespace.clone(),
        name: input.desired.name.clone(),
        engine: format!("{:?}", input.desired.spec.engine).to_lowercase(),
        spec_primary: input.desired.spec.primary.clone(),
        status,
        virtual_names: names,
        spec_problems: input.spec_problems.clone(),
        error,
    }
}

/// Write the report when it says something new (conditions compared without timestamps).
fn publish(dir: &Path, last: &mut Option<ClusterReport>, report: ClusterReport) {
    let unchanged = last.as_ref().is_some_and(|l| {
        let mut a = l.clone();
        let mut b = report.clone();
        let same = status::same_conditions(&a.status.conditions, &b.status.conditions);
        a.status.conditions.clear();
        b.status.conditions.clear();
        same && a == b
    });
    if unchanged {
        return;
    }
    if let Err(e) = state::write_report(dir, &report) {
        tracing::warn!(error = %e, dir = %dir.display(), "cannot write status");
    }
    *last = Some(report);
}
