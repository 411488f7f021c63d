//! What the core needs from a database server: the [`Engine`] trait the driver calls, what a
//! probe reports, and how an engine's calls fail. Implemented in `crate::engine`, never here.

use async_trait::async_trait;

use crate::{
    api::{Member, Role},
    core::{
        desired::Desired,
        history::History,
        observed::{HostAccess, ProbeErrorKind},
        plan::Action,
    },
};

/// One member as its server describes itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Probe {
    pub role: Role,
    /// `host:port` of the server it replicates from (replicas only).
    pub upstream_address: Option<String>,
    /// What it holds durably (received and flushed), as a position in the replication stream.
    pub durable: u64,
    /// What it has applied: what readers see.
    pub applied: u64,
    /// The branch of history its data is on; `None` when it cannot be told.
    pub history: Option<History>,
    /// Which data set it holds, for engines that name them.
    pub identity: Option<String>,
    /// Replicas only: whether the link to the upstream is up.
    pub link_up: Option<bool>,
    /// Rejects writes: a read-only replica, or a fenced master.
    pub read_only: bool,
    /// A full copy is loading; the data is partial.
    pub syncing: bool,
    /// Masters only: the guard a primary runs with (so that it stops acknowledging writes
    /// once cut off) is in place as the cluster's policy wants.
    pub guarded: bool,
    /// Members that can no longer catch up from this one: what they still need is gone from
    /// what it keeps for them. Only a full copy brings them back.
    pub copy_needed_by: Vec<String>,
    /// Replicas only, where the engine can tell: milliseconds since the last transaction it
    /// applied was committed on the primary.
    pub replay_age_ms: Option<u64>,
}

/// One member as observed: its server's answer, and who can carry out host operations on it
/// (with the agent's report, when it has one).
#[derive(Clone, Debug)]
pub struct Observation {
    pub server: Result<Probe, EngineError>,
    pub host: HostAccess,
    /// When the engine last asked the member's host to extend its lease (a renewal that may
    /// have arrived), if it ever did: the member may accept writes until a lease's length
    /// after that, so its failure is counted from then at the earliest.
    pub lease_sent: Option<std::time::Instant>,
    /// The member's WAL archiver, as its host last reported it, when the cluster archives.
    pub archive: Option<crate::api::MemberArchive>,
}

impl Observation {
    /// A member whose observation was given up after `waited`; its host as last known.
    pub fn silent(address: &str, waited: std::time::Duration, host: HostAccess) -> Self {
        Self {
            server: Err(EngineError::Timeout {
                address: address.to_string(),
                millis: waited.as_millis(),
                during: "probe",
            }),
            host,
            lease_sent: None,
            archive: None,
        }
    }
}

/// The controller's lease on the primary: its host keeps the server accepting writes only
/// while the lease holds, renewed in the background while the server answers its probes (or
/// its host is starting it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lease {
    pub epoch: u64,
    pub ttl: std::time::Duration,
}

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum EngineError {
    #[error("{address}: no answer within {millis}ms ({during})")]
    Timeout {
        address: String,
        millis: u128,
        during: &'static str,
    },
    #[error("{address}: cannot connect: {message}")]
    Connect { address: String, message: String },
    /// Nothing listens on the address: the server process is not running.
    #[error("{address}: connection refused (no process listening)")]
    Refused { address: String },
    #[error("{address}: {during} failed: {message}")]
    Command {
        address: String,
        during: &'static str,
        message: String,
    },
    /// The server refused the credentials: retrying will not help until they change.
    #[error("{address}: authentication failed: {message}")]
    Auth { address: String, message: String },
    /// The server process runs but does not accept connections yet (starting up, shutting
    /// down, or in recovery without read access).
    #[error("{address}: up but not accepting connections: {message}")]
    NotAccepting { address: String, message: String },
    #[error("{address}: {during} did not take effect: {detail}")]
    NotApplied {
        address: String,
        during: &'static str,
        detail: String,
    },
    #[error("{address}: unexpected reply to {during}: {detail}")]
    Protocol {
        address: String,
        during: &'static str,
        detail: String,
    },
}

impl EngineError {
    /// The class of failure, for metrics and for people.
    pub fn kind(&self) -> crate::core::observed::ProbeErrorKind {
        use ProbeErrorKind as Kind;
        match self {
            Self::Timeout { .. } => Kind::Timeout,
            Self::Refused { .. } => Kind::Refused,
            Self::Auth { .. } => Kind::Auth,
            Self::NotAccepting { .. } => Kind::Starting,
            Self::Connect { .. } => Kind::Unreachable,
            Self::Command { .. } | Self::NotApplied { .. } | Self::Protocol { .. } => {
                Kind::Protocol
            }
        }
    }
}

/// What replicant needs from a database server. Every method is idempotent: calling it again
/// after a crash, or when the server is already in the wanted state, is safe. Methods that
/// reach a member's host carry the epoch of the decision they serve.
#[async_trait]
pub trait Engine: Send + Sync {
    /// Probe one member: role, positions, history, identity, link, fence and guard. `lease`
    /// is renewed on the way when the member is the primary.
    async fn observe(&self, member: &Member, lease: Option<Lease>) -> Observation;
    /// Which of `others` reach `member`'s server now, by their own hosts: asked while the
    /// controller does not, so that a primary the controller alone has lost is not replaced.
    /// An engine that cannot ask names nobody, and such a primary is failed over.
    async fn reached_by(&self, member: &Member, others: &[&Member]) -> Vec<String> {
        let _ = (member, others);
        Vec::new()
    }
    /// Make running `member` a replica of `from`, keeping its data.
    async fn replicate(&self, member: &Member, from: &Member) -> Result<(), EngineError>;
    /// Stop `member` replicating, so that its position stops moving.
    async fn detach(&self, member: &Member) -> Result<(), EngineError>;
    /// Stop `member` accepting writes, durably, without changing its role.
    async fn fence(&self, member: &Member, epoch: u64) -> Result<(), EngineError>;
    /// Make `member` a writable master at `epoch`, verify it, and return its history: the
    /// branch it began and where it left the old one.
    async fn promote(&self, member: &Member, epoch: u64) -> Result<Option<History>, EngineError>;
    /// Let master `member` accept writes, with the guard a primary runs with.
    async fn unfence(&self, member: &Member, epoch: u64) -> Result<(), EngineError>;
    /// The operations on its members' hosts, for an engine that has them. Without them, a
    /// member re-pointed with [`Engine::replicate`] resyncs as it must by itself (Redis decides
    /// between a partial and a full copy), and nothing starts or stops its server.
    fn hosts(&self) -> Option<&dyn HostOperations> {
        None
    }
    /// Base backups into the cluster's repository, for an engine that takes them.
    fn backups(&self) -> Option<&dyn Backups> {
        None
    }
}

/// Base backups: read the repository's catalog, and begin a backup on a member's host.
#[async_trait]
pub trait Backups: Send + Sync {
    /// The catalog as last read and what the hosts last said; a fresh read begins in the
    /// background when the last is old. Never waits on the repository.
    fn observed(&self) -> Option<crate::core::observed::BackupsObserved>;
    /// Begin a base backup read from `member`, answering on-demand `request` if one: it runs
    /// on its host, and the next reads report it. Idempotent: a host already running one goes
    /// on with it.
    async fn take(&self, member: &Member, request: Option<&str>) -> Result<(), EngineError>;
    /// Begin a restore drill on `member`'s host: the latest backup restored, replayed and
    /// checked there; the next reads report it. Idempotent likewise.
    async fn drill(&self, member: &Member) -> Result<(), EngineError>;
    /// Let go `backups` (by id, as the last reading listed them as expired) and the WAL only
    /// they need, in the background; the next reads report how it went. Nothing goes when the
    /// repository's catalog no longer lists exactly these as expired.
    fn prune(&self, backups: &[String]);
}

/// Operations on a member's host rather than through its server: copy it from nothing,
/// rewind it, restart it as a replica, stop, start and create it. Carried out by the member's
/// node agent, or by a person when it has none.
#[async_trait]
pub trait HostOperations: Send + Sync {
    /// Restart `member` as a replica of `from` with the data it has.
    async fn restart(&self, member: &Member, from: &Member, epoch: u64) -> Result<(), EngineError>;
    /// Discard what `member` holds off `from`'s history, and replicate from `from`.
    async fn rejoin(&self, member: &Member, from: &Member, epoch: u64) -> Result<(), EngineError>;
    /// Copy `from` onto `member`, which holds no data, and replicate from it.
    async fn clone_from(
        &self,
        member: &Member,
        from: &Member,
        epoch: u64,
    ) -> Result<(), EngineError>;
    /// Stop `member`'s server cleanly, once its replicas have everything it wrote.
    async fn stop(&self, member: &Member, epoch: u64) -> Result<(), EngineError>;
    /// Start `member`'s stopped server as it is.
    async fn start(&self, member: &Member, epoch: u64) -> Result<(), EngineError>;
    /// Create a new data set on `member`'s empty host and start it as a primary.
    async fn initialize(&self, member: &Member, epoch: u64) -> Result<(), EngineError>;
    /// The command a person runs to carry out host operation `action` on a member that has
    /// no agent.
    fn manual_command(&self, action: &Action, desired: &Desired) -> String;
}
