//! The standalone runtime: a directory of specs in, live servers reconciled out, virtual names served by built-in proxies.
//!
//! The spec loop here is shared with the etcd runtime through [`Coordination`]: it watches the
//! spec directory and keeps a task per cluster that runs rounds at the pace they ask for. Run
//! alone, it is a thin adapter over the shared [`ClusterReconciler`]: a file journal, proxies as
//! the router, and status files.

pub mod handover;
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

use async_trait::async_trait;
use notify::Watcher;
use tokio::{sync::watch, task::JoinHandle};

use self::{
    proxy::{Proxies, ProxyRouter, ProxyShape},
    specs::{ClusterKey, SpecSet},
    state::{ClusterReport, FileJournalStore, NameReport},
};
use crate::{
    api::{ReplicationClusterSpec, ReplicationClusterStatus},
    core::{
        desired::Desired,
        reconcile::{JournalStore, Router},
    },
    engine::{Credentials, Secret},
    metrics::{AdminEndpoint, Metrics},
    runtime::{
        ClusterHost, ClusterReconciler, ClusterSecrets, Notice, RoundInput, StatusStoreError,
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
    #[error("spec directory {0}: {1}")]
    Specs(String, std::io::Error),
    #[error("state directory {0}: {1}")]
    State(String, std::io::Error),
    #[error("admin address {0}: {1}")]
    Admin(SocketAddr, std::io::Error),
    #[error(transparent)]
    Handover(#[from] handover::HandoverError),
}

/// What a cluster task works from; replaced whenever the specs change.
#[derive(Clone, Debug, PartialEq)]
pub struct Input {
    pub namespace: String,
    pub desired: Desired,
    pub spec_problems: Vec<String>,
}

/// What differs between a process that runs alone and one of several coordinated through etcd.
#[async_trait]
pub trait Coordination: Send + Sync + 'static {
    /// The spec directory's problems, whenever they change.
    async fn report_problems(&self, problems: &[String]);
    /// The virtual names (`NAMESPACE/NAME`) the specs hold now; the others are retired.
    async fn keep_names(&self, keep: &[String]);
    /// The runner of a cluster that has just appeared in the specs.
    fn runner(&self, namespace: &str, name: &str) -> Box<dyn ClusterRunner>;
}

/// Runs one cluster's rounds.
#[async_trait]
pub trait ClusterRunner: Send {
    /// One round; how long to wait before the next, or `None` to wait for a change of spec.
    async fn round(&mut self, input: &Input) -> Option<Duration>;
    /// Resolves when a round is due at once for a reason of the runner's own (this process
    /// came to lead, say).
    async fn woken(&mut self) {
        std::future::pending().await
    }
}

struct ClusterTask {
    input: watch::Sender<Input>,
    task: JoinHandle<()>,
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

/// Watch the spec directory until `shutdown` completes, keeping a task per cluster in it.
pub async fn serve_specs(
    specs_dir: &Path,
    rescan: Duration,
    coordination: Arc<dyn Coordination>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), RunError> {
    std::fs::read_dir(specs_dir)
        .map_err(|e| RunError::Specs(specs_dir.display().to_string(), e))?;
    let (changed_tx, mut changed_rx) = tokio::sync::mpsc::channel::<()>(1);
    // Without a watcher the periodic rescan still picks changes up.
    let _watcher = notify::recommended_watcher(move |_event| {
        let _ = changed_tx.try_send(());
    })
    .and_then(|mut w| {
        w.watch(specs_dir, notify::RecursiveMode::Recursive)
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
        specs = specs.reload(specs_dir);
        let problems: Vec<String> = specs.problems.iter().map(|p| p.to_string()).collect();
        if reported.as_ref() != Some(&problems) {
            // Once per change, however often the unchanged files are rescanned.
            for problem in &problems {
                tracing::warn!(reason = "InvalidSpec", problem = %problem, "spec rejected; the last good version keeps running");
            }
            coordination.report_problems(&problems).await;
            reported = Some(problems);
        }
        apply_specs(&specs, &mut tasks, coordination.as_ref()).await;
        tokio::select! {
            _ = changed_rx.recv() => {
                // Let a burst of writes (a git pull) settle before reading.
                tokio::time::sleep(Duration::from_millis(100)).await;
                while changed_rx.try_recv().is_ok() {}
            }
            _ = tokio::time::sleep(rescan) => {}
            _ = &mut shutdown => break,
        }
    }
    for (_, task) in tasks.drain() {
        task.task.abort();
        // Gone for sure before the caller lets another process reconcile.
        let _ = task.task.await;
    }
    Ok(())
}

async fn apply_specs(
    specs: &SpecSet,
    tasks: &mut HashMap<ClusterKey, ClusterTask>,
    coordination: &dyn Coordination,
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
    coordination.keep_names(&keep).await;
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
                let runner = coordination.runner(&key.0, &key.1);
                let task = tokio::spawn(drive(rx, runner));
                tasks.insert(key, ClusterTask { input: tx, task });
            }
        }
    }
}

/// One cluster, forever: rounds at the pace they ask for, and at once when the spec changes
/// or the runner wakes.
async fn drive(mut input: watch::Receiver<Input>, mut runner: Box<dyn ClusterRunner>) {
    loop {
        let current = input.borrow_and_update().clone();
        let wait = runner.round(&current).await;
        let next = async {
            match wait {
                Some(wait) => tokio::time::sleep(wait).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = next => {}
            _ = runner.woken() => {}
            changed = input.changed() => if changed.is_err() { return },
        }
    }
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
        let report = state::SpecsReport {
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
        let host = FilesHost {
            input: current,
            dir: &self.dir,
            store: &self.store,
            router: &router,
            listen_errors,
        };
        self.reconciler.round(round_input(current), &host).await
    }
}

/// What a round of a spec-directory runtime works from.
pub fn round_input(current: &Input) -> RoundInput {
    RoundInput {
        desired: current.desired.clone(),
        problems: current.spec_problems.clone(),
        generation: None,
        stored: None,
    }
}

/// The secrets a spec refers to, from files and the environment of this host.
pub fn local_secrets(spec: &ReplicationClusterSpec) -> Result<ClusterSecrets, String> {
    Ok(ClusterSecrets {
        password: credentials(spec)?.password,
        agent_token: agent_token(spec)?,
        agent_ca: agent_ca(spec)?,
    })
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

/// The files side of one round: secrets from the environment and files, the journal and
/// status in the state directory, and the built-in proxies.
struct FilesHost<'a> {
    input: &'a Input,
    dir: &'a Path,
    store: &'a FileJournalStore,
    router: &'a ProxyRouter,
    listen_errors: Vec<String>,
}

#[async_trait]
impl ClusterHost for FilesHost<'_> {
    fn may_act(&self) -> bool {
        true
    }

    async fn secrets(&self, spec: &ReplicationClusterSpec) -> Result<ClusterSecrets, String> {
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
        state::write_report(self.dir, &report)
            .map_err(|e| StatusStoreError(format!("{}: {e}", self.dir.display())))
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

/// What `replicant status` shows for a cluster, its names as `router` has them.
pub async fn report(
    input: &Input,
    status: ReplicationClusterStatus,
    router: &dyn Router,
    error: Option<String>,
) -> ClusterReport {
    let mut names = Vec::new();
    for vn in &input.desired.virtual_names {
        names.push(NameReport {
            name: vn.name.clone(),
            target: vn.spec.target.to_string(),
            listen: vn.spec.listen.clone(),
            endpoints: router.current(&vn.name).await.unwrap_or_default(),
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
        events: Vec::new(),
    }
}
