//! The files runtime (`replicant run` alone): a directory of specs in, live servers reconciled
//! out, virtual names served by built-in proxies.
//!
//! A thin adapter over the shared [`ClusterReconciler`] and the spec loop: a file journal and
//! status files in the state directory, the proxies as the router, and the hand-over of the
//! proxies' sockets to a successor process.

pub mod handover;
pub mod state;

use std::{
    collections::HashMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;

use self::state::FileJournalStore;
use crate::{
    api::{ReplicationClusterSpec, ReplicationClusterStatus},
    core::{reconcile::JournalStore, routes::Router},
    metrics::{AdminEndpoint, Metrics},
    proxy::{Proxies, ProxyRouter, ProxyShape},
    runtime::{
        reconciler::{
            ClusterReconciler, ClusterSecrets, Notice, RuntimeAdapter, SecretsError,
            StatusStoreError,
        },
        report::{SpecsReport, report},
        spec_loop::{
            ClusterRunner, Coordination, Input, SpecDirError, round_input, secrets::local_secrets,
            serve_specs,
        },
    },
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
    /// This host's zone: proxies prefer members there.
    pub zone: Option<String>,
    /// Once stopped by a signal, how long the proxies go on serving for a successor to take
    /// their sockets over (not when systemd holds the sockets).
    pub handover_wait: Duration,
    /// Once no longer accepting, how long open proxy connections have to finish before they
    /// are closed.
    pub drain_grace: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Specs(#[from] SpecDirError),
    #[error("state directory {0}: {1}")]
    State(String, std::io::Error),
    #[error("admin address {0}: {1}")]
    Admin(SocketAddr, std::io::Error),
    #[error(transparent)]
    Handover(#[from] handover::HandoverError),
}

/// How long a successor waits for its predecessor to let go of the state directory.
const LOCK_WAIT: Duration = Duration::from_secs(10);

/// Why a process stopped reconciling.
enum Stop {
    Signal,
    Successor(handover::Successor),
}

/// Run alone until a signal (`signal()` resolves at each) or a successor stops it, taking over
/// from the process serving the state directory before, if any. Proxies refuse no client
/// across the change: see [`handover`].
pub async fn run<F>(options: Options, mut signal: impl FnMut() -> F) -> Result<(), RunError>
where
    F: std::future::Future<Output = ()>,
{
    std::fs::create_dir_all(&options.state)
        .map_err(|e| RunError::State(options.state.display().to_string(), e))?;
    crate::accept::raise_descriptor_limit();
    let metrics = Arc::new(Metrics::default());
    // One process runs the clusters of its directory: it always acts.
    metrics.lead_when(|| true);
    let proxies = Arc::new(Proxies::new(Some(metrics.clone())).in_zone(options.zone.clone()));
    let systemd = handover::systemd_listeners();
    // systemd keeps these sockets across a restart: nobody needs to wait for a successor.
    let socket_activated = !systemd.is_empty();
    proxies.inherit(systemd);
    let mut predecessor = handover::Predecessor::take_over(&options.state).await?;
    let mut lock = Some(handover::StateLock::acquire(&options.state, LOCK_WAIT).await?);
    let mut passed_admin = None;
    if let Some(predecessor) = &mut predecessor {
        tracing::info!(
            names = predecessor.names.len(),
            "took over the listening sockets of the process this one replaces"
        );
        for (passed, listener) in std::mem::take(&mut predecessor.names) {
            if let Err(error) = proxies.adopt(passed, listener) {
                tracing::warn!(%error, "cannot serve a name passed over");
            }
        }
        passed_admin = predecessor.admin.take();
    }
    let admin = match options.admin {
        Some(addr) => {
            let inherited = passed_admin.or_else(|| proxies.take_inherited(&addr.to_string()));
            Some(start_admin(addr, inherited, &metrics)?)
        }
        None => None,
    };
    if let Some(predecessor) = predecessor
        && let Err(error) = predecessor.serving().await
    {
        tracing::warn!(%error, "the process this one replaces did not hear that this one serves");
    }
    let point = handover::HandoverPoint::bind(&options.state)?;
    let alone = Arc::new(Alone {
        state: options.state.clone(),
        proxies: proxies.clone(),
        metrics,
    });
    loop {
        let (stopped, stop) = tokio::sync::oneshot::channel();
        let until = async {
            let stop = tokio::select! {
                _ = signal() => Stop::Signal,
                successor = point.successor() => Stop::Successor(successor),
            };
            let _ = stopped.send(stop);
        };
        serve_specs(&options.specs, options.rescan, alone.clone(), until).await?;
        let stop = stop.await.expect("serve_specs returns once stopped");
        // Reconciling has stopped: the successor may start.
        lock.take();
        let (successor, resume_if_refused) = match stop {
            Stop::Successor(successor) => (Some(successor), true),
            Stop::Signal if socket_activated => (None, false),
            Stop::Signal => {
                tracing::info!(
                    wait = ?options.handover_wait,
                    "stopped reconciling; the proxies serve on until a successor takes them over"
                );
                let successor = tokio::select! {
                    successor = point.successor() => Some(successor),
                    _ = tokio::time::sleep(options.handover_wait) => None,
                    _ = signal() => None,
                };
                (successor, false)
            }
        };
        let Some(successor) = successor else { break };
        let pid = successor.pid;
        tracing::info!(pid, "handing the listening sockets over to a successor");
        let handed = async {
            let passed = proxies
                .pass()
                .map_err(|source| handover::HandoverError::Io {
                    path: "the proxies' listening sockets".into(),
                    source,
                })?;
            let admin_passed = admin
                .as_ref()
                .map(|admin: &AdminEndpoint| admin.listener.try_clone())
                .transpose()
                .map_err(|source| handover::HandoverError::Io {
                    path: "the admin endpoint's listening socket".into(),
                    source,
                })?;
            successor.pass(passed, admin_passed).await
        }
        .await;
        match handed {
            Ok(()) => {
                tracing::info!(pid, "the successor serves every name");
                break;
            }
            Err(error) => {
                tracing::warn!(%error, pid, "the hand-over failed");
                if resume_if_refused
                    && let Some(taken) = handover::StateLock::try_acquire(&options.state)?
                {
                    tracing::info!("reconciling again");
                    lock = Some(taken);
                    continue;
                }
                break;
            }
        }
    }
    // A process started from now on finds nobody to take over from, and starts afresh.
    drop(point);
    proxies.stop_accepting();
    if let Some(admin) = &admin {
        admin.stop_accepting();
    }
    tracing::info!(grace = ?options.drain_grace, "no longer accepting; open proxy connections have this long to finish");
    let admin_drained = async {
        if let Some(admin) = admin {
            admin.drain(options.drain_grace).await;
        }
    };
    let (left, ()) = tokio::join!(proxies.drain(options.drain_grace), admin_drained);
    if left > 0 {
        tracing::info!(left, "closing the proxy connections still open");
    }
    Ok(())
}

/// Serve the admin endpoint at `addr`, on `inherited` if that is where it listens.
fn start_admin(
    addr: SocketAddr,
    inherited: Option<std::net::TcpListener>,
    metrics: &Arc<Metrics>,
) -> Result<AdminEndpoint, RunError> {
    let error = |e| RunError::Admin(addr, e);
    let listener = match inherited {
        Some(listener) if listener.local_addr().is_ok_and(|a| a == addr) => listener,
        _ => std::net::TcpListener::bind(addr).map_err(error)?,
    };
    AdminEndpoint::serve(listener, metrics.clone()).map_err(error)
}

/// A process on its own: journals and status in the state directory, names served by its
/// proxies.
struct Alone {
    state: PathBuf,
    proxies: Arc<Proxies>,
    metrics: Arc<Metrics>,
}

#[async_trait]
impl Coordination for Alone {
    async fn report_problems(&self, problems: &[String]) {
        let report = SpecsReport {
            problems: problems.to_vec(),
        };
        if let Err(e) = state::write_specs_report(&self.state, &report) {
            tracing::warn!(error = %e, "cannot write the spec report");
        }
    }

    async fn keep_names(&self, keep: &[String]) {
        self.proxies.retain(keep);
    }

    fn runner(&self, namespace: &str, name: &str) -> Box<dyn ClusterRunner> {
        let dir = state::cluster_dir(&self.state, namespace, name);
        Box::new(FilesRunner {
            store: FileJournalStore::new(&dir),
            dir,
            proxies: self.proxies.clone(),
            unproxied: Arc::new(Mutex::new(HashMap::new())),
            reconciler: ClusterReconciler::new(namespace, name, Some(self.metrics.clone())),
        })
    }
}

struct FilesRunner {
    dir: PathBuf,
    store: FileJournalStore,
    proxies: Arc<Proxies>,
    unproxied: Arc<Mutex<HashMap<String, Vec<String>>>>,
    reconciler: ClusterReconciler,
}

#[async_trait]
impl ClusterRunner for FilesRunner {
    async fn round(&mut self, current: &Input) -> Option<Duration> {
        let (router, listen_errors) = router_for(current, &self.proxies, &self.unproxied).await;
        let adapter = FilesAdapter {
            input: current,
            dir: &self.dir,
            store: &self.store,
            router: &router,
            listen_errors,
        };
        self.reconciler.round(round_input(current), &adapter).await
    }
}

/// The files side of one round: secrets from the environment and files, the journal and
/// status in the state directory, and the built-in proxies.
struct FilesAdapter<'a> {
    input: &'a Input,
    dir: &'a Path,
    store: &'a FileJournalStore,
    router: &'a ProxyRouter,
    listen_errors: Vec<String>,
}

#[async_trait]
impl RuntimeAdapter for FilesAdapter<'_> {
    fn may_act(&self) -> bool {
        true
    }

    async fn secrets(&self, spec: &ReplicationClusterSpec) -> Result<ClusterSecrets, SecretsError> {
        local_secrets(spec)
    }

    fn journal(&self) -> &dyn JournalStore {
        self.store
    }

    fn router(&self) -> &dyn Router {
        self.router
    }

    fn problem(&self) -> Option<String> {
        (!self.listen_errors.is_empty()).then(|| self.listen_errors.join("; "))
    }

    fn volatile_refresh(&self) -> Duration {
        // A file is cheap to write, and `replicant status` shows positions as they are.
        Duration::ZERO
    }

    async fn store_status(
        &self,
        status: &ReplicationClusterStatus,
        error: Option<&str>,
    ) -> Result<(), StatusStoreError> {
        let report = report(
            self.input,
            status.clone(),
            self.router,
            error.map(str::to_string),
        )
        .await;
        state::write_report(self.dir, &report).map_err(|e| {
            let at = format!("{}: {e}", self.dir.display());
            StatusStoreError::new(std::io::Error::new(e.kind(), at))
        })
    }

    async fn notify(&self, _notice: Notice<'_>) {
        // The reconciler's log lines are all there is to tell here.
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
                .ensure(&key, listen, &ProxyShape::of(&vn.spec))
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
