//! The PostgreSQL engine behind [`Engine`]: SQL for what a running server can do (probe,
//! re-point, detach, promote, fence, guard, slots) and each member's node agent for the rest
//! (lease, stop, start, copy, rewind). Touches the members of one cluster and their agents.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use async_trait::async_trait;

use super::{
    actions::{self, Target, Upstream, UpstreamAuth},
    agent::{self, AgentApi, AgentClient, AgentStatus, Peer, Source},
    archiving::ArchiveKeeper,
    backups::BackupKeeper,
    history::{self, branches},
    lease::{self, Leases},
    probe::{PgProbe, Session, slot_name},
};
use crate::{
    api::{Member, ReplicationClusterSpec, ReplicationMode, Role},
    core::{
        desired::Desired,
        engine::{Backups, Engine, EngineError, HostOperations, Lease, Observation, Probe},
        history::History,
        observed::{HostAccess, HostObservation},
        plan::Action,
    },
    engine::{AgentAccess, Credentials, EngineSetupError},
};

/// How long a promotion may take to be seen done.
const PROMOTE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a new probe session may take to connect, across probes.
const CONNECT_LIMIT: Duration = Duration::from_secs(5);

/// How often replication slots are checked on a member that answers.
const SLOT_CARE: Duration = Duration::from_secs(10);

/// What the engine needs to know of a cluster.
#[derive(Clone, Debug)]
pub struct PostgresSettings {
    /// How the controller logs in to every member, and how standbys log in to their upstream.
    pub credentials: Credentials,
    /// Every SQL call and quick agent call.
    pub timeout: Duration,
    /// How long a primary's host keeps it writable after a renewal.
    pub lease_ttl: Duration,
    /// In sync mode, how many standbys must confirm a commit.
    pub sync_replicas: Option<u32>,
    /// Every member's name: standbys report it as their `application_name`, and each has a
    /// replication slot on the others.
    pub members: Vec<String>,
    /// New standbys are copied from the newest base backup (`spec.replication.copyFrom`).
    pub copy_from_backup: bool,
    /// What the controller lets go after backups (`spec.backup.retention`).
    pub retention: Option<crate::repository::retention::Retention>,
}

impl PostgresSettings {
    pub fn for_cluster(spec: &ReplicationClusterSpec, credentials: Credentials) -> Self {
        let detect: Duration = spec.failover.detect_after.into();
        Self {
            credentials,
            timeout: crate::core::plan::probe_timeout(detect),
            lease_ttl: crate::core::plan::lease_ttl(detect),
            sync_replicas: (spec.replication.mode == ReplicationMode::Sync)
                .then_some(spec.replication.min_sync_replicas),
            members: spec.members.iter().map(|m| m.name.clone()).collect(),
            copy_from_backup: spec.replication.copy_from == crate::api::CopySource::Backup,
            retention: spec
                .backup
                .as_ref()
                .and_then(|b| b.retention.as_ref())
                .map(Into::into),
        }
    }

    /// `synchronous_standby_names` for `primary`: a quorum of the others in sync mode,
    /// nothing in async mode.
    fn guard(&self, primary: &str) -> String {
        let Some(k) = self.sync_replicas else {
            return String::new();
        };
        let others: Vec<&str> = self
            .members
            .iter()
            .map(String::as_str)
            .filter(|m| *m != primary)
            .collect();
        actions::quorum(k as usize, &others)
    }
}

pub struct PostgresEngine {
    settings: PostgresSettings,
    /// Agents by member name; a member without one is adopt-only.
    agents: HashMap<String, AgentClient>,
    /// When each member's replication slots were last seen to.
    slots_checked: Mutex<HashMap<String, Instant>>,
    /// The primary's lease, renewed in the background while it is alive.
    leases: Leases,
    /// Every host's WAL archive settings, kept as the spec says.
    archive: ArchiveKeeper,
    /// The base backups' catalog, when the cluster has a repository.
    backups: Option<BackupKeeper>,
    /// What a first primary is recovered from, when the spec asks for a recovery.
    recovery: Option<super::archive::RecoveryRequest>,
    /// Where new standbys are copied from instead of their upstream, when the spec asks.
    copy_seed: Option<super::archive::ArchiveSettings>,
    /// Each member's probe session, kept open between rounds: a new one every round would
    /// cost the server a backend and both sides a password exchange.
    probe_sessions: Mutex<HashMap<String, Session>>,
    /// New probe sessions still connecting, by member.
    connecting: Mutex<HashMap<String, tokio::task::JoinHandle<Result<Session, EngineError>>>>,
}

impl PostgresEngine {
    /// `access.token` is required when any member names an agent.
    pub fn new(
        settings: PostgresSettings,
        members: &[Member],
        access: AgentAccess,
    ) -> Result<Self, EngineSetupError> {
        let tls = access
            .ca_pem
            .as_deref()
            .map(agent::trusting)
            .transpose()
            .map_err(|e| EngineSetupError::AgentCa(e.to_string()))?;
        let mut agents = HashMap::new();
        let mut peers = Vec::new();
        let addresses = members
            .iter()
            .map(|member| (member.name.clone(), member.address.clone()))
            .collect();
        for member in members {
            let Some(address) = &member.agent else {
                continue;
            };
            let token = access
                .token
                .clone()
                .ok_or_else(|| EngineSetupError::NoAgentToken {
                    member: member.name.clone(),
                })?;
            agents.insert(
                member.name.clone(),
                AgentClient::new(address.clone(), token, tls.clone(), settings.timeout),
            );
            peers.push(Peer {
                name: member.name.clone(),
                agent: address.clone(),
            });
        }
        let (copy_from_backup, retention) = (settings.copy_from_backup, settings.retention);
        Ok(Self {
            settings,
            agents,
            slots_checked: Mutex::new(HashMap::new()),
            archive: ArchiveKeeper::new(access.archive.clone()),
            backups: access
                .backup
                .clone()
                .map(|b| BackupKeeper::new(b, retention)),
            recovery: access.recovery.clone(),
            copy_seed: access.backup.clone().filter(|_| copy_from_backup),
            leases: Leases::new(peers, addresses, access.ca_pem.clone()),
            probe_sessions: Mutex::new(HashMap::new()),
            connecting: Mutex::new(HashMap::new()),
        })
    }

    /// The lease the controller grants at `epoch`.
    fn lease_at(&self, epoch: u64) -> Lease {
        Lease {
            epoch,
            ttl: self.settings.lease_ttl,
        }
    }

    fn target<'a>(&'a self, member: &'a Member) -> Target<'a> {
        Target {
            address: &member.address,
            credentials: &self.settings.credentials,
            timeout: self.settings.timeout,
        }
    }

    fn agent(&self, member: &Member, during: &'static str) -> Result<&AgentClient, EngineError> {
        self.agents
            .get(&member.name)
            .ok_or_else(|| EngineError::Command {
                address: member.address.clone(),
                during,
                message: "the member has no node agent (spec.members[].agent)".into(),
            })
    }

    /// What `member`'s host follows or copies when it replicates from `from`.
    fn source(member: &Member, from: &Member) -> Source {
        Source {
            address: from.address.clone(),
            application_name: member.name.clone(),
            slot: Some(slot_name(&member.name)),
        }
    }

    /// Every other member's slot on `member`.
    fn slots_for(&self, member: &str) -> Vec<&str> {
        self.settings
            .members
            .iter()
            .map(String::as_str)
            .filter(|m| *m != member)
            .collect()
    }

    /// Every member's slot on `from`, which a standby is about to stream or copy from: the
    /// slot must exist before the standby asks for it.
    async fn slots_upstream(&self, from: &Member) -> Result<(), EngineError> {
        actions::keep_slots(self.target(from), &self.slots_for(&from.name)).await
    }

    /// Probe `member` over its kept session, or over a new one (kept for next time) when that
    /// one is gone or silent: the new session tells refused, starting up and the rest apart.
    /// Both within one probe timeout. A new session still connecting when the probe's time is
    /// up goes on connecting in the background, for the next probe to use: on a loaded host a
    /// connection and its authentication may take longer than one probe, and starting over each
    /// time would never finish one, leaving a healthy server unreachable for good.
    async fn probe(&self, member: &Member) -> Result<PgProbe, EngineError> {
        let (address, timeout) = (&member.address, self.settings.timeout);
        let started = Instant::now();
        let kept = self
            .probe_sessions
            .lock()
            .expect("lock")
            .remove(&member.name);
        if let Some(session) = kept {
            if let Ok(Ok(probe)) = tokio::time::timeout(timeout, session.probe(address)).await {
                self.keep_session(member, session);
                return Ok(probe);
            }
            session.discard();
        }
        let timed_out = || EngineError::Timeout {
            address: address.clone(),
            millis: timeout.as_millis(),
            during: "probe",
        };
        let mut connecting = self
            .connecting
            .lock()
            .expect("lock")
            .remove(&member.name)
            .unwrap_or_else(|| {
                let (address, credentials) = (address.clone(), self.settings.credentials.clone());
                tokio::spawn(async move {
                    tokio::time::timeout(CONNECT_LIMIT, Session::connect(&address, &credentials))
                        .await
                        .unwrap_or_else(|_| {
                            Err(EngineError::Timeout {
                                address: address.clone(),
                                millis: CONNECT_LIMIT.as_millis(),
                                during: "connect",
                            })
                        })
                })
            });
        let remaining = timeout.saturating_sub(started.elapsed());
        let session = match tokio::time::timeout(remaining, &mut connecting).await {
            Err(_) => {
                self.connecting
                    .lock()
                    .expect("lock")
                    .insert(member.name.clone(), connecting);
                return Err(timed_out());
            }
            Ok(Err(join)) => {
                return Err(EngineError::Protocol {
                    address: address.clone(),
                    during: "connect",
                    detail: join.to_string(),
                });
            }
            Ok(Ok(connected)) => connected?,
        };
        let remaining = timeout.saturating_sub(started.elapsed());
        match tokio::time::timeout(remaining, session.probe(address)).await {
            Ok(Ok(probe)) => {
                self.keep_session(member, session);
                Ok(probe)
            }
            Ok(Err(error)) => {
                session.discard();
                Err(error)
            }
            // Connected, but out of time: the session is good, and the next probe tries it.
            Err(_) => {
                self.keep_session(member, session);
                Err(timed_out())
            }
        }
    }

    fn keep_session(&self, member: &Member, session: Session) {
        self.probe_sessions
            .lock()
            .expect("lock")
            .insert(member.name.clone(), session);
    }

    /// Create or advance `member`'s slots now and then: a standby keeps the others' slots
    /// moving, so they exist with the right position the moment it is promoted. Best effort.
    async fn care_for_slots(&self, member: &Member, probe: &PgProbe) {
        let wanted = self.slots_for(&member.name);
        let complete = wanted
            .iter()
            .all(|w| probe.slots.iter().any(|s| s.name == slot_name(w)));
        let due = self
            .slots_checked
            .lock()
            .expect("lock")
            .get(&member.name)
            .is_none_or(|at| at.elapsed() >= SLOT_CARE);
        if complete && !due {
            return;
        }
        match actions::keep_slots(self.target(member), &wanted).await {
            Ok(()) => {
                self.slots_checked
                    .lock()
                    .expect("lock")
                    .insert(member.name.clone(), Instant::now());
            }
            Err(error) => {
                tracing::info!(member = %member.name, %error, "replication slots not kept")
            }
        }
    }

    fn to_probe(&self, member: &Member, pg: &PgProbe) -> Probe {
        let history = (pg.timeline <= 1 || !pg.history.is_empty())
            .then(|| branches(pg.timeline.max(1), &pg.history));
        let copy_needed_by = self
            .slots_for(&member.name)
            .into_iter()
            .filter(|m| {
                pg.slots
                    .iter()
                    .any(|s| s.name == slot_name(m) && s.lost == Some(true))
            })
            .map(str::to_string)
            .collect();
        let applied = pg.applied.map(|l| l.0).unwrap_or(0);
        if pg.in_recovery {
            Probe {
                role: Role::Replica,
                upstream_address: pg
                    .configured_upstream
                    .clone()
                    .or_else(|| pg.receiver.as_ref().map(|r| r.sender.clone())),
                durable: pg.durable.map(|l| l.0).unwrap_or(applied).max(applied),
                applied,
                history,
                identity: Some(pg.system_identifier.to_string()),
                link_up: Some(
                    pg.receiver
                        .as_ref()
                        .is_some_and(|r| r.status == "streaming"),
                ),
                read_only: true,
                syncing: false,
                guarded: false,
                copy_needed_by,
                replay_age_ms: pg.replay_age_ms,
            }
        } else {
            let fenced = pg.synchronous_standby_names == actions::FENCED_STANDBY_NAME
                || pg.default_transaction_read_only;
            let guard = self.settings.guard(&member.name);
            let guarded = pg.synchronous_standby_names == guard
                && (guard.is_empty() || pg.synchronous_commit == "on");
            Probe {
                role: Role::Master,
                upstream_address: None,
                durable: pg.durable.map(|l| l.0).unwrap_or(applied),
                applied,
                history,
                identity: Some(pg.system_identifier.to_string()),
                link_up: None,
                read_only: fenced,
                syncing: false,
                guarded,
                copy_needed_by,
                replay_age_ms: None,
            }
        }
    }

    /// Set the guard the new primary runs with before it is promoted (a standby ignores it),
    /// so that no commit is acknowledged unguarded.
    async fn prepare_guard(&self, member: &Member) -> Result<(), EngineError> {
        actions::unfence(self.target(member), &self.settings.guard(&member.name)).await
    }

    /// The new primary must have checkpointed on its timeline before anyone rewinds onto it
    /// (patroni#2073): a rewind reads its control file.
    async fn checkpointed(&self, from: &Member) -> Result<(), EngineError> {
        actions::checkpoint(self.target(from)).await
    }
}

/// What the agent said, for the planner.
fn host_observation(status: Result<AgentStatus, EngineError>) -> HostObservation {
    match status {
        Err(error) => HostObservation {
            reachable: false,
            error: Some(error.to_string()),
            ..Default::default()
        },
        Ok(status) => {
            let control = status.control_data.as_ref();
            let switches = status
                .history
                .as_deref()
                .and_then(|text| history::parse(text).ok())
                .unwrap_or_default();
            HostObservation {
                reachable: true,
                running: status.running,
                busy: status.busy.clone(),
                empty: status.empty,
                replica: status.standby,
                // A primary's clean shutdown ends its WAL with the shutdown checkpoint; a
                // standby's restartpoint says nothing of what it received after.
                stopped_cleanly: control.is_some_and(|c| c.state == "shut down"),
                position: control.map(|c| c.checkpoint.0),
                branch: control.map(|c| branches(c.checkpoint_timeline, &switches).branch),
                identity: control.map(|c| c.system_identifier.to_string()),
                fenced: status.fenced,
                rewindable: control.map(|c| c.rewindable()),
                error: status
                    .last_error
                    .map(|e| {
                        let kind = status
                            .last_failure
                            .map(|k| format!(" ({})", k.as_str()))
                            .unwrap_or_default();
                        format!(
                            "the last {} failed{kind}: {e}",
                            status.last_operation.unwrap_or_default()
                        )
                    })
                    // An empty host has no control file to read: not an error.
                    .or(status.control_data_error.filter(|_| !status.empty)),
            }
        }
    }
}

#[async_trait]
impl Engine for PostgresEngine {
    fn hosts(&self) -> Option<&dyn HostOperations> {
        Some(self)
    }

    fn backups(&self) -> Option<&dyn Backups> {
        self.backups.as_ref().map(|_| self as &dyn Backups)
    }

    async fn observe(&self, member: &Member, lease: Option<Lease>) -> Observation {
        let agent = self.agents.get(&member.name);
        match (agent, lease) {
            (Some(agent), Some(lease)) if self.leases.renewable(&member.name) => {
                self.leases.keep(&member.name, agent, lease)
            }
            _ => self.leases.stop(&member.name),
        }
        // A server that was silent last time is likely silent again: its host is asked at
        // once rather than after the probe's timeout, so that a round does not wait out both.
        let (server, asked) = match agent {
            Some(agent) if self.leases.was_silent(&member.name) => {
                let (server, status) = tokio::join!(self.probe(member), agent.status());
                (server, Some(status))
            }
            _ => (self.probe(member).await, None),
        };
        if let Ok(pg) = &server {
            self.care_for_slots(member, pg).await;
        }
        let host = match (agent, &server) {
            (None, _) => HostAccess::Person,
            // Only a server that does not answer needs its host's word.
            (Some(agent), Err(_)) => HostAccess::Agent(host_observation(match asked {
                Some(status) => status,
                None => agent.status().await,
            })),
            // Not asked: the server answers, so it runs.
            (Some(_), Ok(_)) => HostAccess::Agent(HostObservation {
                reachable: true,
                running: true,
                ..Default::default()
            }),
        };
        // Alive: it answers, or it is coming up (its host starting it, or postgres itself).
        let alive = match &server {
            Ok(_) | Err(EngineError::NotAccepting { .. }) => true,
            Err(_) => host.agent().is_some_and(|h| h.busy.is_some()),
        };
        let lease_sent = self.leases.observed(&member.name, alive);
        Observation {
            server: server.map(|pg| self.to_probe(member, &pg)),
            host,
            lease_sent,
            archive: agent.and_then(|agent| self.archive.care(&member.name, agent)),
        }
    }

    async fn reached_by(&self, member: &Member, others: &[&Member]) -> Vec<String> {
        let ping = self.settings.timeout;
        let asked = others.iter().filter_map(|other| {
            let agent = self.agents.get(&other.name)?;
            // The agent answers once its ping has; half as long again for the call itself.
            let agent = agent.with_timeout(ping / 2);
            Some(async move {
                match agent.reach(&member.address, ping).await {
                    Ok(answer) if answer.reached => Some(other.name.clone()),
                    Ok(answer) => {
                        tracing::debug!(member = %member.name, by = %other.name, error = ?answer.error, "not reached by a peer");
                        None
                    }
                    Err(error) => {
                        tracing::debug!(member = %member.name, by = %other.name, %error, "a peer's agent did not say whether it reaches the member");
                        None
                    }
                }
            })
        });
        futures::future::join_all(asked)
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    async fn replicate(&self, member: &Member, from: &Member) -> Result<(), EngineError> {
        // The slot must exist upstream before the standby asks for it.
        self.slots_upstream(from).await?;
        let slot = slot_name(&member.name);
        // A host that keeps the replication password in a file is followed through it, so
        // the re-point writes no password into the member's settings.
        let passfile = match self.agents.get(&member.name) {
            Some(agent) => agent.status().await.ok().and_then(|s| s.upstream_auth),
            None => None,
        };
        let auth = match &passfile {
            Some(file) => UpstreamAuth::Passfile {
                user: &file.user,
                passfile: &file.passfile,
            },
            None => UpstreamAuth::Credentials(&self.settings.credentials),
        };
        actions::repoint(
            self.target(member),
            Upstream {
                address: &from.address,
                slot: Some(&slot),
                application_name: &member.name,
                auth,
            },
        )
        .await
    }

    async fn detach(&self, member: &Member) -> Result<(), EngineError> {
        actions::detach(self.target(member)).await
    }

    /// The soft fence over SQL; then, with an agent, the hard one: postgres stopped at once,
    /// since a session at `synchronous_commit = local` still commits under the soft fence.
    async fn fence(&self, member: &Member, epoch: u64) -> Result<(), EngineError> {
        let soft = actions::fence(self.target(member)).await;
        match self.agents.get(&member.name) {
            Some(agent) => agent.stop(epoch, true).await.map(drop),
            None => soft,
        }
    }

    async fn promote(&self, member: &Member, epoch: u64) -> Result<Option<History>, EngineError> {
        // The old primary may be renewing its lease through its peers: no longer, once a
        // quorum of them holds the new epoch and what they confirmed before has run out.
        let mut agents: Vec<(&str, &AgentClient)> = self
            .agents
            .iter()
            .map(|(name, agent)| (name.as_str(), agent))
            .collect();
        agents.sort_by_key(|(name, _)| *name);
        let ttl = self.settings.lease_ttl;
        let waited = lease::raise(&agents, epoch, ttl / 10, ttl * 2).await?;
        if !waited.is_zero() {
            tracing::info!(member = %member.name, epoch, waited_ms = waited.as_millis() as u64, "waited out the confirmations of the old primary's lease");
        }
        if let Some(agent) = self.agents.get(&member.name) {
            // Under a lease from its first commit on.
            self.leases
                .grant(&member.name, agent, self.lease_at(epoch))
                .await?;
        }
        self.prepare_guard(member).await?;
        let mut target = self.target(member);
        // Promotion writes its end-of-recovery record and a new timeline's history file: more
        // than a probe's worth of time on a loaded host, and on the failover's critical path.
        target.timeout = target.timeout.max(PROMOTE_TIMEOUT);
        actions::promote(target).await?;
        let pg = self.probe(member).await?;
        if pg.in_recovery {
            return Err(EngineError::NotApplied {
                address: member.address.clone(),
                during: "promote",
                detail: "still in recovery".into(),
            });
        }
        if let Err(error) =
            actions::keep_slots(self.target(member), &self.slots_for(&member.name)).await
        {
            tracing::warn!(member = %member.name, %error, "replication slots not kept after promotion");
        }
        Ok(self.to_probe(member, &pg).history)
    }

    async fn unfence(&self, member: &Member, _epoch: u64) -> Result<(), EngineError> {
        self.prepare_guard(member).await
    }
}

#[async_trait]
impl HostOperations for PostgresEngine {
    async fn restart(&self, member: &Member, from: &Member, epoch: u64) -> Result<(), EngineError> {
        self.slots_upstream(from).await?;
        self.agent(member, "restart as a standby")?
            .follow(epoch, &Self::source(member, from))
            .await
            .map(drop)
    }

    async fn rejoin(&self, member: &Member, from: &Member, epoch: u64) -> Result<(), EngineError> {
        let agent = self.agent(member, "rewind")?;
        self.checkpointed(from).await?;
        self.slots_upstream(from).await?;
        agent
            .rewind(epoch, &Self::source(member, from))
            .await
            .map(drop)
    }

    async fn clone_from(
        &self,
        member: &Member,
        from: &Member,
        epoch: u64,
    ) -> Result<(), EngineError> {
        let agent = self.agent(member, "clone")?;
        // A slot that lost its WAL would fail the copy: the copy starts a new one.
        actions::renew_lost_slot(self.target(from), &member.name).await?;
        self.slots_upstream(from).await?;
        agent
            .clone_from(epoch, &Self::source(member, from), self.copy_seed.as_ref())
            .await
            .map(drop)
    }

    async fn stop(&self, member: &Member, epoch: u64) -> Result<(), EngineError> {
        let status = self.agent(member, "stop")?.stop(epoch, false).await?;
        if status.running {
            return Err(EngineError::NotApplied {
                address: member.address.clone(),
                during: "stop",
                detail: "postgres still runs".into(),
            });
        }
        Ok(())
    }

    async fn start(&self, member: &Member, epoch: u64) -> Result<(), EngineError> {
        let agent = self.agent(member, "start")?;
        // A primary starts only under a lease: the host would keep it down otherwise.
        self.leases
            .grant(&member.name, agent, self.lease_at(epoch))
            .await?;
        agent.start(epoch).await.map(drop)
    }

    async fn initialize(&self, member: &Member, epoch: u64) -> Result<(), EngineError> {
        // No lease yet: the member becomes primary in the controller's eyes only once it
        // answers, and from then on its lease is renewed.
        let agent = self.agent(member, "initialize")?;
        agent
            .initialize(epoch, self.recovery.as_ref())
            .await
            .map(drop)
    }

    fn manual_command(&self, action: &Action, desired: &Desired) -> String {
        let address = |name: &str| {
            desired
                .member(name)
                .map(|m| m.address.clone())
                .unwrap_or_else(|| name.to_string())
        };
        let host_port = |name: &str| {
            let address = address(name);
            match address.rsplit_once(':') {
                Some((host, port)) => (host.to_string(), port.to_string()),
                None => (address.clone(), "5432".to_string()),
            }
        };
        let conninfo = |member: &str, from: &str| {
            let (host, port) = host_port(from);
            format!("host={host} port={port} application_name={member}")
        };
        let as_standby = |member: &str, from: &str| {
            format!(
                "touch \"$PGDATA/standby.signal\"; set primary_conninfo = '{}' and primary_slot_name = '{}' in postgresql.auto.conf; pg_ctl start -D \"$PGDATA\"",
                conninfo(member, from),
                slot_name(member)
            )
        };
        match action {
            Action::Restart { member, from } => format!(
                "pg_ctl stop -m fast -D \"$PGDATA\"; {}",
                as_standby(member, from)
            ),
            Action::Rejoin { member, from } => format!(
                "pg_ctl stop -m fast -D \"$PGDATA\"; pg_rewind -D \"$PGDATA\" --source-server='{} dbname=postgres'; {}",
                conninfo(member, from),
                as_standby(member, from)
            ),
            Action::Clone { member, from } => {
                let (host, port) = host_port(from);
                format!(
                    "pg_basebackup -h {host} -p {port} -X stream -S {} -D \"$PGDATA\"; {}",
                    slot_name(member),
                    as_standby(member, from)
                )
            }
            Action::Stop { .. } => "pg_ctl stop -m fast -D \"$PGDATA\"".into(),
            Action::Start { .. } => "pg_ctl start -D \"$PGDATA\"".into(),
            Action::Initialize { .. } => {
                "initdb -D \"$PGDATA\" --data-checksums --auth-host=scram-sha-256 -U postgres --pwprompt; pg_ctl start -D \"$PGDATA\"".into()
            }
            other => crate::core::status::describe(other),
        }
    }
}

#[async_trait]
impl Backups for PostgresEngine {
    fn observed(&self) -> Option<crate::core::observed::BackupsObserved> {
        Some(self.backups.as_ref()?.observed(self.archive.host_reports()))
    }

    async fn take(&self, member: &Member, request: Option<&str>) -> Result<(), EngineError> {
        let keeper = self.backups.as_ref().ok_or_else(|| EngineError::Command {
            address: member.address.clone(),
            during: "begin a base backup",
            message: "the cluster has no repository (spec.backup.repositories)".into(),
        })?;
        keeper
            .take(
                &member.name,
                request,
                self.agent(member, "begin a base backup")?,
            )
            .await
    }

    async fn drill(&self, member: &Member) -> Result<(), EngineError> {
        let keeper = self.backups.as_ref().ok_or_else(|| EngineError::Command {
            address: member.address.clone(),
            during: "begin a restore drill",
            message: "the cluster has no repository (spec.backup.repositories)".into(),
        })?;
        keeper
            .drill(&member.name, self.agent(member, "begin a restore drill")?)
            .await
    }

    fn prune(&self, backups: &[String]) {
        if let Some(keeper) = &self.backups {
            keeper.prune(backups);
        }
    }
}
