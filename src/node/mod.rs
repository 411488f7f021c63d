//! `replicant node`: the PostgreSQL agent on a database host. It is the parent of one
//! postmaster and serves the controller a small HTTP API (bearer token) for what SQL cannot
//! do: start, stop, status while postgres is down, and the self-fencing lease. It refuses a
//! command of an epoch older than the highest it has seen, and stops its postgres when its
//! lease lapses. A primary's agent also renews its lease through a quorum of its peers' agents,
//! which confirm it (see `engine::postgres::quorum`), so it outlasts the controller. It
//! executes; the controller decides.
//!
//! Touches its data directory (read through `pg_controldata`), its own state file, the
//! postmaster it starts, the address it listens on, and its peers' agents.

mod api;
pub mod archive;
mod backup;
mod drill;
mod host;
mod peers;
mod postmaster;
mod reach;
mod recover;
mod replay;
pub mod restore;
mod seed;
mod tls;

pub use backup::{VerifyError, verify_backup};
pub use host::{Replication, Superuser};

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use self::postmaster::{Postmaster, StopMode};
use crate::{
    durable::{Durability, write_atomically},
    engine::{
        Secret,
        postgres::{agent::LeaseNonce, quorum::Promises},
    },
};

/// The directory of `postgres`, `pg_ctl`, `pg_controldata`...: `REPLICANT_PG_BIN`, else the
/// newest `/usr/lib/postgresql/*/bin` (Debian keeps them off the PATH), else the PATH.
pub fn default_bin_dir() -> Option<PathBuf> {
    if let Ok(dir) = std::env::var("REPLICANT_PG_BIN") {
        return Some(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_string_lossy().parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Some(bin);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .find(|p| p.join("postgres").exists() && p.join("pg_controldata").exists())
    })
}

/// How `replicant node` was asked to work.
#[derive(Clone, Debug)]
pub struct Options {
    /// The data directory of the postgres it runs.
    pub data: PathBuf,
    /// Where `postgres`, `pg_ctl`, `pg_controldata`... are.
    pub bin: PathBuf,
    /// The port postgres listens on.
    pub port: u16,
    /// Settings given to postgres as `-c name=value` (`listen_addresses`, say).
    pub settings: Vec<(String, String)>,
    /// The address of the agent's API.
    pub listen: SocketAddr,
    /// The bearer token the controller presents.
    pub token: Secret,
    /// The agent's durable memory: the highest epoch seen, and whether it is fenced.
    pub state: PathBuf,
    /// How this host authenticates to other members for replication and copies.
    pub replication: Replication,
    /// Who owns a data set this host creates.
    pub superuser: Superuser,
    /// PEM certificate chain and private key: the API is served over TLS when given.
    pub tls: Option<(PathBuf, PathBuf)>,
}

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("state file {0}: {1}")]
    State(String, String),
    #[error("listen on {0}: {1}")]
    Listen(SocketAddr, std::io::Error),
    #[error("TLS: {0}")]
    Tls(#[from] tls::TlsSetupError),
    #[error("replication password file: {0}")]
    Passfile(#[source] host::HostError),
}

/// The agent's state file could not be written: nothing it was to record is taken.
#[derive(Debug, thiserror::Error)]
#[error("cannot write {path}: {source}")]
pub struct StateWriteError {
    path: String,
    source: std::io::Error,
}

/// A lease nonce this agent cannot vouch for.
#[derive(Debug, thiserror::Error)]
enum NonceError {
    #[error("the lease nonce is from another run of this agent: fetch a new one (GET /v1/lease)")]
    OtherRun,
    #[error("the lease nonce was never issued here: it lies in the future")]
    Future,
}

/// What the agent keeps across restarts, written (and fsynced) before it acts on a new epoch.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Durable {
    epoch: u64,
    /// The lease lapsed while postgres ran: it stays down until the controller renews it,
    /// across restarts of the agent and of the host.
    fenced: bool,
    /// The longest confirmation this agent has given a peer's lease: after a restart it owes
    /// that long to the next promotion, having forgotten which it gave.
    #[serde(default)]
    promise_ttl_ms: u64,
}

/// The lease this host's postgres runs under, on this process's monotonic clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct HeldLease {
    /// The epoch it was granted at.
    epoch: u64,
    until: Instant,
    /// Its length: a renewal through peers extends it by as much.
    ttl: Duration,
}

/// The postmaster, held by whatever operation is under way on the data directory.
struct Inner {
    postmaster: Option<Postmaster>,
}

impl Inner {
    /// Stop postgres, if it runs, and reap it.
    async fn stop_postgres(&mut self, mode: StopMode) {
        if let Some(postmaster) = self.postmaster.as_mut() {
            postmaster.stop(mode).await;
        }
        self.postmaster = None;
    }
}

/// What the agent is doing in the background, and how its last such operation ended.
#[derive(Default)]
struct Activity {
    current: Option<&'static str>,
    last: Option<Finished>,
}

struct Finished {
    operation: &'static str,
    at: Instant,
    outcome: Result<Option<crate::engine::postgres::agent::Rejoined>, Failure>,
}

/// How a host operation failed, kept to report: the message and its kind.
#[derive(Clone, Debug)]
struct Failure {
    message: String,
    kind: crate::engine::postgres::agent::HostFailure,
}

impl From<host::HostError> for Failure {
    fn from(error: host::HostError) -> Self {
        Self {
            kind: error.kind(),
            message: error.to_string(),
        }
    }
}

/// The agent: its options, its durable state, the lease, and its one postmaster. The lease
/// and the durable state have their own locks, so a long copy never delays a renewal.
pub struct Agent {
    options: Options,
    /// How a standby here authenticates upstream, reported so that re-points keep to it.
    upstream_auth: Option<crate::engine::postgres::agent::PassfileAuth>,
    durable: std::sync::Mutex<Durable>,
    /// The lease postgres runs under, if any.
    lease: std::sync::Mutex<Option<HeldLease>>,
    /// What the controller last told of this host's peers, with a client for each.
    peers: std::sync::Mutex<Option<peers::Peers>>,
    /// The confirmations this agent gave peers' leases. Locked while the epoch is raised, so a
    /// confirmation is either refused by the raise or reported to it.
    promises: std::sync::Mutex<Promises<Instant>>,
    /// When the local postgres last proved alive (see `peers`), and why the last ping failed.
    postgres_answered: std::sync::Mutex<Option<Instant>>,
    last_ping_error: std::sync::Mutex<Option<String>>,
    /// The peers' postgres this host pings while it confirms their leases (see `reach`).
    leaseholders: std::sync::Mutex<reach::Leaseholders>,
    /// This run of the agent, and when it began: the origin of its lease nonces.
    run: u64,
    began: Instant,
    inner: Arc<Mutex<Inner>>,
    activity: std::sync::Mutex<Activity>,
    /// The base backup under way, and how the last one ended.
    backups: std::sync::Mutex<crate::engine::postgres::archive::BackupReport>,
    /// The restore drill under way, and how the last one ended.
    drills: std::sync::Mutex<crate::engine::postgres::archive::DrillReport>,
}

/// How often the lease is checked.
const LEASE_CHECK: Duration = Duration::from_millis(20);

impl Agent {
    fn load(options: Options) -> Result<Self, NodeError> {
        // A fresh volume: the state's directory is made here (the password file goes there too).
        if let Some(dir) = options.state.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                NodeError::State(options.state.display().to_string(), e.to_string())
            })?;
        }
        let durable = match std::fs::read(&options.state) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                // A damaged state file must stop the agent, never be silently reset: the epoch
                // it held is what keeps an old controller from acting.
                NodeError::State(options.state.display().to_string(), e.to_string())
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Durable::default(),
            Err(e) => {
                return Err(NodeError::State(
                    options.state.display().to_string(),
                    e.to_string(),
                ));
            }
        };
        let upstream_auth = host::write_passfile(&options).map_err(NodeError::Passfile)?;
        let began = Instant::now();
        let promises = match durable.promise_ttl_ms {
            0 => Promises::default(),
            ms => Promises::restarted(durable.epoch, began + Duration::from_millis(ms)),
        };
        Ok(Self {
            options,
            upstream_auth,
            durable: std::sync::Mutex::new(durable),
            lease: std::sync::Mutex::new(None),
            peers: std::sync::Mutex::new(None),
            promises: std::sync::Mutex::new(promises),
            postgres_answered: std::sync::Mutex::default(),
            last_ping_error: std::sync::Mutex::default(),
            leaseholders: std::sync::Mutex::default(),
            run: std::hash::BuildHasher::hash_one(
                &std::collections::hash_map::RandomState::new(),
                std::process::id(),
            ),
            began,
            inner: Arc::new(Mutex::new(Inner { postmaster: None })),
            activity: std::sync::Mutex::new(Activity::default()),
            backups: std::sync::Mutex::default(),
            drills: std::sync::Mutex::default(),
        })
    }

    fn durable(&self) -> Durable {
        self.durable.lock().expect("lock").clone()
    }

    /// The lease postgres runs under now, if it has not lapsed.
    fn held_lease(&self) -> Option<HeldLease> {
        let held = *self.lease.lock().expect("lock");
        held.filter(|lease| lease.until > Instant::now())
    }

    /// Change the durable state: written (and fsynced) first, then taken in memory.
    fn record(&self, change: impl FnOnce(&mut Durable)) -> Result<(), StateWriteError> {
        let mut held = self.durable.lock().expect("lock");
        let mut durable = held.clone();
        change(&mut durable);
        if durable == *held {
            return Ok(());
        }
        let failed = |source| StateWriteError {
            path: self.options.state.display().to_string(),
            source,
        };
        let bytes = serde_json::to_vec_pretty(&durable).map_err(|e| failed(e.into()))?;
        write_atomically(&self.options.state, &bytes, Durability::Synced).map_err(failed)?;
        *held = durable;
        Ok(())
    }

    /// Now, as a nonce for the controller's next lease renewal.
    fn lease_nonce(&self) -> LeaseNonce {
        LeaseNonce {
            run: self.run,
            issued_ms: self.began.elapsed().as_millis() as u64,
        }
    }

    /// When `nonce` was issued here, if it was.
    fn nonce_issued_at(&self, nonce: LeaseNonce) -> Result<Instant, NonceError> {
        if nonce.run != self.run {
            return Err(NonceError::OtherRun);
        }
        self.began
            .checked_add(Duration::from_millis(nonce.issued_ms))
            .filter(|issued| *issued <= Instant::now())
            .ok_or(NonceError::Future)
    }

    /// A standby commits nothing, so a lease means nothing to it.
    fn is_standby(&self) -> bool {
        self.options.data.join("standby.signal").exists()
    }

    /// Stop postgres once the lease has lapsed, and stay fenced.
    async fn watch_lease(self: Arc<Self>) {
        loop {
            tokio::time::sleep(LEASE_CHECK).await;
            let lapsed = {
                let mut lease = self.lease.lock().expect("lock");
                let lapsed = lease.is_some_and(|held| Instant::now() >= held.until);
                if lapsed {
                    *lease = None;
                }
                lapsed
            };
            if !lapsed || self.is_standby() {
                continue;
            }
            if let Err(e) = self.record(|durable| durable.fenced = true) {
                tracing::error!(error = %e, "cannot record the fence; stopping postgres anyway");
                self.durable.lock().expect("lock").fenced = true;
            }
            let mut inner = self.inner.lock().await;
            if inner.postmaster.is_some() {
                tracing::warn!(
                    "the lease lapsed (neither the controller nor a quorum of peers renewed it): postgres is stopped (immediate) and stays down until the controller renews it"
                );
            }
            inner.stop_postgres(StopMode::Immediate).await;
        }
    }
}

/// Run the agent until `shutdown` completes; postgres is then stopped (fast).
pub async fn run(
    options: Options,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), NodeError> {
    let listen = options.listen;
    let agent = Arc::new(Agent::load(options)?);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| NodeError::Listen(listen, e))?;
    tracing::info!(%listen, epoch = agent.durable().epoch, "node agent listening");
    let watcher = tokio::spawn(agent.clone().watch_lease());
    let renewer = tokio::spawn(peers::renew_through_peers(agent.clone()));
    let pinger = tokio::spawn(peers::watch_own_postgres(agent.clone()));
    let vouching = tokio::spawn(reach::watch_leaseholders(agent.clone()));
    let app = api::router(agent.clone());
    let serve = async {
        let result = match &agent.options.tls {
            Some((cert, key)) => {
                let acceptor = tls::acceptor(cert, key)?;
                let listener = tls::TlsListener::new(listener, acceptor)
                    .map_err(|e| NodeError::Listen(listen, e))?;
                axum::serve(listener, app).await
            }
            None => axum::serve(listener, app).await,
        };
        if let Err(e) = result {
            tracing::error!(error = %e, "the agent's API stopped");
        }
        Ok(())
    };
    let served: Result<(), NodeError> = tokio::select! {
        result = serve => result,
        _ = shutdown => Ok(()),
    };
    watcher.abort();
    renewer.abort();
    pinger.abort();
    vouching.abort();
    agent.inner.lock().await.stop_postgres(StopMode::Fast).await;
    served
}
