//! The Redis engine: ROLE/INFO probes, REPLICAOF, and fencing through `min-replicas-to-write`. Talks only to Redis servers.
//!
//! Fencing sets `min-replicas-to-write` to a value no cluster can meet, so the master answers
//! writes with `NOREPLICAS` while it keeps its role and data; the setting survives client
//! reconnects and is visible to the next probe. A primary otherwise runs with a small
//! `min-replicas-to-write` guard (when it has replicas to meet it), so a master that was cut
//! off or frozen stops accepting writes on its own once its replicas have moved on.

use std::{collections::HashMap, sync::Mutex, time::Duration};

use async_trait::async_trait;
use redis::{
    AsyncConnectionConfig, Client, ConnectionAddr, IntoConnectionInfo, RedisConnectionInfo,
    aio::MultiplexedConnection,
};

use super::Credentials;
use crate::{
    api::{Fork, Member, Role},
    core::{
        engine::{Engine, EngineError, Lease, Observation, Probe},
        history::History,
        observed::HostAccess,
    },
};

/// `min-replicas-to-write` of a fenced master: more replicas than any cluster has.
pub const FENCE_MARK: u32 = 1_000_000;

/// Timeouts and the write guard of a cluster's primary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedisSettings {
    pub credentials: Credentials,
    /// Probe and command timeout.
    pub timeout: Duration,
    /// `min-replicas-to-write` on the primary (0 disables the guard).
    pub guard_replicas: u32,
    /// `min-replicas-max-lag` on the primary, in seconds.
    pub guard_max_lag_secs: u32,
}

impl Default for RedisSettings {
    fn default() -> Self {
        Self {
            credentials: Credentials::default(),
            timeout: Duration::from_millis(500),
            guard_replicas: 0,
            guard_max_lag_secs: 1,
        }
    }
}

impl RedisSettings {
    /// Settings a cluster's spec implies. The guard needs as many replicas as sync mode
    /// requires, or one when the cluster has at least two replicas (so losing one keeps the
    /// primary writable); a cluster of one or two members runs unguarded.
    pub fn for_cluster(
        spec: &crate::api::ReplicationClusterSpec,
        credentials: Credentials,
    ) -> Self {
        let detect: Duration = spec.failover.detect_after.into();
        let replicas = spec.members.len().saturating_sub(1) as u32;
        let guard_replicas = match spec.replication.mode {
            crate::api::ReplicationMode::Sync => spec.replication.min_sync_replicas,
            crate::api::ReplicationMode::Async if replicas >= 2 => 1,
            crate::api::ReplicationMode::Async => 0,
        };
        Self {
            credentials,
            timeout: crate::core::plan::probe_timeout(detect),
            guard_replicas,
            guard_max_lag_secs: detect.as_secs_f64().ceil().max(1.0) as u32,
        }
    }
}

pub struct RedisEngine {
    settings: RedisSettings,
    connections: Mutex<HashMap<String, MultiplexedConnection>>,
    /// Snapshots into the cluster's repository, when it has one.
    snapshots: Option<super::redis_snapshots::SnapshotKeeper>,
}

impl RedisEngine {
    pub fn new(settings: RedisSettings) -> Self {
        Self {
            settings,
            connections: Mutex::new(HashMap::new()),
            snapshots: None,
        }
    }

    /// The engine, taking snapshots with `snapshots` when given.
    pub fn with_snapshots(
        mut self,
        snapshots: Option<super::redis_snapshots::SnapshotKeeper>,
    ) -> Self {
        self.snapshots = snapshots;
        self
    }

    fn connection_info(&self, address: &str) -> Result<redis::ConnectionInfo, EngineError> {
        let (host, port) = address
            .rsplit_once(':')
            .and_then(|(h, p)| {
                Some((
                    h.trim_start_matches('[').trim_end_matches(']'),
                    p.parse::<u16>().ok()?,
                ))
            })
            .ok_or_else(|| EngineError::Connect {
                address: address.to_string(),
                message: "address is not host:port".into(),
            })?;
        let mut redis_info = RedisConnectionInfo::default();
        if let Some(user) = &self.settings.credentials.username {
            redis_info = redis_info.set_username(user);
        }
        if let Some(password) = &self.settings.credentials.password {
            redis_info = redis_info.set_password(password.expose());
        }
        let info = ConnectionAddr::Tcp(host.to_string(), port)
            .into_connection_info()
            .map_err(|e| EngineError::Connect {
                address: address.to_string(),
                message: e.to_string(),
            })?;
        Ok(info.set_redis_settings(redis_info))
    }

    async fn connection(&self, address: &str) -> Result<MultiplexedConnection, EngineError> {
        if let Some(conn) = self.connections.lock().expect("lock").get(address) {
            return Ok(conn.clone());
        }
        let client =
            Client::open(self.connection_info(address)?).map_err(|e| EngineError::Connect {
                address: address.to_string(),
                message: e.to_string(),
            })?;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.settings.timeout))
            .set_response_timeout(Some(self.settings.timeout));
        let conn = tokio::time::timeout(
            self.settings.timeout,
            client.get_multiplexed_async_connection_with_config(&config),
        )
        .await
        .map_err(|_| self.timeout_error(address, "connect"))?
        .map_err(|e| {
            if e.is_connection_refusal() {
                EngineError::Refused {
                    address: address.to_string(),
                }
            } else if e.is_timeout() {
                self.timeout_error(address, "connect")
            } else {
                EngineError::Connect {
                    address: address.to_string(),
                    message: e.to_string(),
                }
            }
        })?;
        self.connections
            .lock()
            .expect("lock")
            .insert(address.to_string(), conn.clone());
        Ok(conn)
    }

    fn forget(&self, address: &str) {
        self.connections.lock().expect("lock").remove(address);
    }

    /// Run one command or pipeline with the timeout; a failed connection is dropped so the next
    /// call reconnects instead of waiting on a dead socket.
    async fn run<T: redis::FromRedisValue>(
        &self,
        address: &str,
        during: &'static str,
        pipe: &redis::Pipeline,
    ) -> Result<T, EngineError> {
        match self.run_once(address, during, pipe).await {
            // A kept connection that broke says nothing yet about the server (it may have
            // restarted): every command here is idempotent, so ask once more on a fresh one.
            Err((_, true)) => self
                .run_once(address, during, pipe)
                .await
                .map_err(|(e, _)| e),
            other => other.map_err(|(e, _)| e),
        }
    }

    /// One attempt; the flag tells whether the connection broke (and was dropped).
    async fn run_once<T: redis::FromRedisValue>(
        &self,
        address: &str,
        during: &'static str,
        pipe: &redis::Pipeline,
    ) -> Result<T, (EngineError, bool)> {
        let mut conn = self.connection(address).await.map_err(|e| (e, false))?;
        let result =
            tokio::time::timeout(self.settings.timeout, pipe.query_async::<T>(&mut conn)).await;
        let timed_out = || {
            self.forget(address);
            (self.timeout_error(address, during), false)
        };
        match result {
            Ok(Ok(value)) => Ok(value),
            Err(_) => Err(timed_out()),
            Ok(Err(e)) if e.is_timeout() => Err(timed_out()),
            Ok(Err(e)) => {
                let broken = e.is_io_error() || e.is_connection_dropped();
                if broken {
                    self.forget(address);
                }
                Err((
                    EngineError::Command {
                        address: address.to_string(),
                        during,
                        message: e.to_string(),
                    },
                    broken,
                ))
            }
        }
    }

    fn timeout_error(&self, address: &str, during: &'static str) -> EngineError {
        EngineError::Timeout {
            address: address.to_string(),
            millis: self.settings.timeout.as_millis(),
            during,
        }
    }

    async fn config_set(
        &self,
        address: &str,
        during: &'static str,
        pairs: &[(&str, String)],
    ) -> Result<(), EngineError> {
        let mut pipe = redis::pipe();
        for (key, value) in pairs {
            pipe.cmd("CONFIG").arg("SET").arg(*key).arg(value).ignore();
        }
        self.run::<()>(address, during, &pipe).await
    }

    async fn replicaof(&self, member: &Member, from: &Member) -> Result<(), EngineError> {
        let address = member.address.as_str();
        let (host, port) = from
            .address
            .rsplit_once(':')
            .unwrap_or((&from.address, "0"));
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let mut auth = Vec::new();
        if let Some(password) = &self.settings.credentials.password {
            auth.push(("masterauth", password.expose().to_string()));
        }
        if let Some(user) = &self.settings.credentials.username {
            auth.push(("masteruser", user.clone()));
        }
        if !auth.is_empty() {
            self.config_set(address, "set replication credentials", &auth)
                .await?;
        }
        // Demote first, then lift any fence: the other order would leave a writable master.
        let mut pipe = redis::pipe();
        pipe.cmd("REPLICAOF").arg(host).arg(port).ignore();
        pipe.cmd("CONFIG")
            .arg("SET")
            .arg("replica-read-only")
            .arg("yes")
            .ignore();
        pipe.cmd("CONFIG")
            .arg("SET")
            .arg("min-replicas-to-write")
            .arg(0)
            .ignore();
        self.run::<()>(address, "REPLICAOF", &pipe).await?;
        let probe = self.probe(member).await?;
        let wanted = format!("{host}:{port}");
        if probe.role != Role::Replica
            || probe.upstream_address.as_deref().map(strip_brackets) != Some(wanted.clone())
        {
            return Err(EngineError::NotApplied {
                address: address.to_string(),
                during: "REPLICAOF",
                detail: format!(
                    "reports role {:?} following {:?}, wanted a replica of {wanted}",
                    probe.role, probe.upstream_address
                ),
            });
        }
        Ok(())
    }
}

fn strip_brackets(address: &str) -> String {
    address.replace(['[', ']'], "")
}

/// The fields of `INFO replication` replicant reads.
fn parse_info(
    address: &str,
    info: &str,
    min_replicas: u32,
    replica_read_only: bool,
    guard: u32,
) -> Result<Probe, EngineError> {
    let field = |key: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(key).and_then(|rest| rest.strip_prefix(':')))
            .map(str::trim)
    };
    let protocol = |detail: String| EngineError::Protocol {
        address: address.to_string(),
        during: "INFO replication",
        detail,
    };
    let offset = field("master_repl_offset")
        .and_then(|v| v.parse::<u64>().ok())
        .ok_or_else(|| protocol("no master_repl_offset".into()))?;
    let history = history(&field);
    match field("role") {
        Some("master") => Ok(Probe {
            role: Role::Master,
            upstream_address: None,
            durable: offset,
            applied: offset,
            history,
            identity: None,
            link_up: None,
            read_only: min_replicas >= FENCE_MARK,
            syncing: false,
            guarded: min_replicas == guard,
            // A replica whose position fell out of the backlog resyncs by itself.
            copy_needed_by: Vec::new(),
            replay_age_ms: None,
        }),
        Some("slave") => {
            let host = field("master_host").unwrap_or_default();
            let port = field("master_port").unwrap_or_default();
            Ok(Probe {
                role: Role::Replica,
                upstream_address: Some(format!("{host}:{port}")),
                durable: offset,
                applied: offset,
                history,
                identity: None,
                link_up: Some(field("master_link_status") == Some("up")),
                read_only: replica_read_only,
                syncing: field("master_sync_in_progress") == Some("1"),
                guarded: false,
                copy_needed_by: Vec::new(),
                replay_age_ms: None,
            })
        }
        other => Err(protocol(format!("role {other:?}"))),
    }
}

/// A replication ID names the branch of history a Redis data set is on; `master_replid2`
/// with `second_repl_offset` is where it left the one before (PSYNC from that ID is accepted
/// up to that offset, so data on it beyond `second_repl_offset - 1` is not in this history).
fn history<'a>(field: &impl Fn(&str) -> Option<&'a str>) -> Option<History> {
    const NONE: &str = "0000000000000000000000000000000000000000";
    let branch = field("master_replid").filter(|id| !id.is_empty())?;
    let forks = match (
        field("master_replid2"),
        field("second_repl_offset").and_then(|v| v.parse::<i64>().ok()),
    ) {
        (Some(old), Some(second)) if old != NONE && second > 0 => vec![Fork {
            branch: old.to_string(),
            at: (second - 1) as u64,
        }],
        _ => Vec::new(),
    };
    Some(History {
        branch: branch.to_string(),
        forks,
    })
}

/// `CONFIG GET key` answers `[key, value]`.
fn config_value(reply: &[String]) -> Option<&str> {
    reply.get(1).map(String::as_str)
}

impl RedisEngine {
    /// Ask the member for its role, offsets, replication IDs and guard.
    async fn probe(&self, member: &Member) -> Result<Probe, EngineError> {
        let address = member.address.as_str();
        let mut pipe = redis::pipe();
        pipe.cmd("INFO").arg("replication");
        pipe.cmd("CONFIG").arg("GET").arg("min-replicas-to-write");
        pipe.cmd("CONFIG").arg("GET").arg("replica-read-only");
        let (info, min_replicas, read_only): (String, Vec<String>, Vec<String>) =
            self.run(address, "probe", &pipe).await?;
        let min_replicas = config_value(&min_replicas)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let replica_read_only = config_value(&read_only) != Some("no");
        parse_info(
            address,
            &info,
            min_replicas,
            replica_read_only,
            self.settings.guard_replicas,
        )
    }
}

#[async_trait]
impl Engine for RedisEngine {
    fn backups(&self) -> Option<&dyn crate::core::engine::Backups> {
        self.snapshots
            .as_ref()
            .map(|s| s as &dyn crate::core::engine::Backups)
    }

    async fn observe(&self, member: &Member, _lease: Option<Lease>) -> Observation {
        Observation {
            lease_sent: None,
            server: self.probe(member).await,
            host: HostAccess::Engine,
            archive: None,
        }
    }

    async fn replicate(&self, member: &Member, from: &Member) -> Result<(), EngineError> {
        self.replicaof(member, from).await
    }

    /// A Redis replica's offset moves only while its master serves it, and the master it
    /// follows has failed: there is nothing to stop.
    async fn detach(&self, _member: &Member) -> Result<(), EngineError> {
        Ok(())
    }

    async fn fence(&self, member: &Member, _epoch: u64) -> Result<(), EngineError> {
        let address = member.address.as_str();
        self.config_set(
            address,
            "fence",
            &[("min-replicas-to-write", FENCE_MARK.to_string())],
        )
        .await?;
        let probe = self.probe(member).await?;
        if probe.role == Role::Master && !probe.read_only {
            return Err(EngineError::NotApplied {
                address: address.to_string(),
                during: "fence",
                detail: "min-replicas-to-write did not change".into(),
            });
        }
        Ok(())
    }

    async fn promote(&self, member: &Member, _epoch: u64) -> Result<Option<History>, EngineError> {
        let address = member.address.as_str();
        let mut pipe = redis::pipe();
        pipe.cmd("REPLICAOF").arg("NO").arg("ONE").ignore();
        pipe.cmd("CONFIG")
            .arg("SET")
            .arg("min-replicas-max-lag")
            .arg(self.settings.guard_max_lag_secs)
            .ignore();
        pipe.cmd("CONFIG")
            .arg("SET")
            .arg("min-replicas-to-write")
            .arg(self.settings.guard_replicas)
            .ignore();
        self.run::<()>(address, "REPLICAOF NO ONE", &pipe).await?;
        let probe = self.probe(member).await?;
        if probe.role != Role::Master || probe.read_only {
            return Err(EngineError::NotApplied {
                address: address.to_string(),
                during: "promote",
                detail: format!(
                    "reports role {:?}, read-only {}",
                    probe.role, probe.read_only
                ),
            });
        }
        Ok(probe.history)
    }

    async fn unfence(&self, member: &Member, _epoch: u64) -> Result<(), EngineError> {
        self.config_set(
            &member.address,
            "unfence",
            &[
                (
                    "min-replicas-max-lag",
                    self.settings.guard_max_lag_secs.to_string(),
                ),
                (
                    "min-replicas-to-write",
                    self.settings.guard_replicas.to_string(),
                ),
            ],
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_master() {
        let info = "# Replication\r\nrole:master\r\nconnected_slaves:1\r\nslave0:ip=127.0.0.1,port=6381,state=online,offset=42,lag=0\r\nmaster_repl_offset:42\r\n";
        let probe = parse_info("x", info, 0, true, 0).unwrap();
        assert_eq!(
            (probe.role, probe.durable, probe.read_only),
            (Role::Master, 42, false)
        );
        assert!(
            parse_info("x", info, FENCE_MARK, true, 0)
                .unwrap()
                .read_only,
            "fenced"
        );
    }

    #[test]
    fn parses_a_replica() {
        let info = "role:slave\r\nmaster_host:127.0.0.1\r\nmaster_port:6380\r\nmaster_link_status:down\r\nmaster_sync_in_progress:1\r\nslave_repl_offset:7\r\nmaster_repl_offset:7\r\n";
        let probe = parse_info("x", info, 0, true, 0).unwrap();
        assert_eq!(probe.role, Role::Replica);
        assert_eq!(probe.upstream_address.as_deref(), Some("127.0.0.1:6380"));
        assert_eq!(
            (probe.durable, probe.link_up, probe.syncing, probe.read_only),
            (7, Some(false), true, true)
        );
    }

    #[test]
    fn garbage_is_a_protocol_error_not_a_panic() {
        assert!(matches!(
            parse_info("x", "hello", 0, true, 0),
            Err(EngineError::Protocol { .. })
        ));
        assert!(matches!(
            parse_info("x", "role:sentinel\nmaster_repl_offset:1", 0, true, 0),
            Err(EngineError::Protocol { .. })
        ));
    }

    #[test]
    fn secrets_do_not_print() {
        let creds = Credentials {
            username: Some("app".into()),
            password: Some(super::super::Secret::new("hunter2")),
        };
        assert!(!format!("{creds:?}").contains("hunter2"));
    }
}
