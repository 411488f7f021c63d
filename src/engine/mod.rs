//! The engine trait: what replicant needs from a database server (observe, replicate, promote, fence, resync).
//!
//! Implementations do the network I/O, with a timeout on every call. Nothing above this trait
//! knows which database it is talking to.

pub mod postgres;
pub mod redis;

use std::fmt;

use async_trait::async_trait;

use crate::{api::Member, observed::Role};

/// A secret that never shows up in logs, `Debug` output or status.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value, for handing to a client library. Never format it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// How to authenticate to every member of a cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Credentials {
    pub username: Option<String>,
    pub password: Option<Secret>,
}

/// One member as its server describes itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Probe {
    pub role: Role,
    /// `host:port` of the server it replicates from (replicas only).
    pub upstream_address: Option<String>,
    /// Replication offset: bytes of the replication stream it holds.
    pub offset: u64,
    /// Replicas only: whether the link to the upstream is up.
    pub link_up: Option<bool>,
    /// Rejects writes: a read-only replica, or a fenced master.
    pub read_only: bool,
    /// A full sync is loading; the data is partial.
    pub syncing: bool,
    /// Masters only: its self-fencing guard (writes refused once cut off from its replicas)
    /// is configured as the cluster's policy wants.
    pub guarded: bool,
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

/// What replicant needs from a database. Every method is idempotent: calling it again after a
/// crash, or when the server is already in the wanted state, is safe.
#[async_trait]
pub trait Engine: Send + Sync {
    /// Probe one member: role, upstream, offset, link, read-only, sync progress.
    async fn observe(&self, member: &Member) -> Result<Probe, EngineError>;
    /// Make `member` a read-only replica of `from`; a partial resync where the engine can.
    async fn replicate(&self, member: &Member, from: &Member) -> Result<(), EngineError>;
    /// Discard `member`'s data and copy `from` in full.
    async fn full_resync(&self, member: &Member, from: &Member) -> Result<(), EngineError>;
    /// Stop `member` accepting writes, durably, without changing its role.
    async fn fence(&self, member: &Member) -> Result<(), EngineError>;
    /// Make `member` a writable master at `epoch`, verify it, and return its replication offset.
    async fn promote(&self, member: &Member, epoch: u64) -> Result<u64, EngineError>;
    /// Set whether `member` rejects writes. On a master, `false` lifts any fence and configures
    /// the self-fencing guard a primary runs with.
    async fn set_read_only(&self, member: &Member, read_only: bool) -> Result<(), EngineError>;
}

/// The engine for a cluster, or why it cannot have one (shown in status).
pub fn for_cluster(
    spec: &crate::api::ReplicationClusterSpec,
    credentials: Credentials,
) -> Result<std::sync::Arc<dyn Engine>, String> {
    match spec.engine {
        crate::api::Engine::Redis => Ok(std::sync::Arc::new(redis::RedisEngine::new(
            redis::RedisSettings::for_cluster(spec, credentials),
        ))),
        crate::api::Engine::Postgres => Err(
            "spec.engine: postgres is not supported yet; nothing is done to this cluster".into(),
        ),
    }
}
