//! The engines: the Redis and PostgreSQL implementations of the core's
//! [`Engine`](crate::core::engine::Engine) trait, the credentials they log in with, and the
//! choice of engine for a cluster.
//!
//! Implementations do the network I/O, with a timeout on every call. Nothing above the trait
//! knows which database it is talking to.

pub mod postgres;
pub mod rdb;
pub mod readings;
pub mod redis;
pub mod redis_snapshots;

use std::fmt;

use crate::core::engine::Engine;

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

/// How the controller reaches the members' node agents, as the spec says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AgentAccess {
    /// The bearer token they accept.
    pub token: Option<Secret>,
    /// The CA bundle (PEM) their certificates chain to, when they serve TLS.
    pub ca_pem: Option<String>,
    /// Where and how they archive WAL, when the spec asks for it.
    pub archive: Option<postgres::archive::ArchiveSettings>,
    /// Where base backups go, when the cluster has a repository.
    pub backup: Option<postgres::archive::ArchiveSettings>,
    /// What the desired primary's agent recovers from when no member holds data, when the
    /// spec asks for a recovery (`spec.bootstrap.recovery`).
    pub recovery: Option<postgres::archive::RecoveryRequest>,
}

/// Why a cluster cannot have an engine (shown in status).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineSetupError {
    /// The CA bundle the agents' certificates should chain to is not one.
    #[error("spec.agentTls: the CA bundle: {0}")]
    AgentCa(String),
    #[error("spec.agentToken: member {member} names an agent, and agents accept only a token")]
    NoAgentToken { member: String },
    /// A recovery the spec asks for that cannot be asked of an agent: never a new, empty
    /// data set in its place.
    #[error("{field}: {reason}")]
    Recovery { field: String, reason: String },
}

/// The engine for a cluster, or why it cannot have one (shown in status).
pub fn for_cluster(
    spec: &crate::api::ReplicationClusterSpec,
    credentials: Credentials,
    agents: AgentAccess,
) -> Result<std::sync::Arc<dyn Engine>, EngineSetupError> {
    match spec.engine {
        crate::api::EngineKind::Redis => {
            let retention = spec
                .backup
                .as_ref()
                .and_then(|b| b.retention.as_ref())
                .map(Into::into);
            let snapshots = agents.backup.map(|settings| {
                redis_snapshots::SnapshotKeeper::new(settings, credentials.clone(), retention)
            });
            Ok(std::sync::Arc::new(
                redis::RedisEngine::new(redis::RedisSettings::for_cluster(spec, credentials))
                    .with_snapshots(snapshots),
            ))
        }
        crate::api::EngineKind::Postgres => Ok(std::sync::Arc::new(postgres::PostgresEngine::new(
            postgres::PostgresSettings::for_cluster(spec, credentials),
            &spec.members,
            agents,
        )?)),
    }
}
