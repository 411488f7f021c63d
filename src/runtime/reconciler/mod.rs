//! One cluster's reconciler, shared by every runtime (Kubernetes, files, etcd).
//!
//! It keeps what lives between rounds: probe memory, the last good spec, the engine and the
//! secrets it was built with, and the status last stored. It decides what a round does when
//! the spec is invalid, when the cluster cannot be managed, or when this process may not act;
//! when status is worth storing; and how long to wait after a failure. A runtime supplies the
//! I/O through [`RuntimeAdapter`] and keeps none of this itself.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use async_trait::async_trait;

use crate::{
    api::{ReplicationClusterSpec, ReplicationClusterStatus},
    core::{
        desired::Desired,
        engine::Engine,
        plan::{Finding, findings},
        reconcile::{
            self, Deps, FaultPoints, JournalStore, Memory, NoFaults, ReconcileError, Round,
            StoreError,
        },
        routes::Router,
        status,
    },
    engine::{AgentAccess, Credentials, EngineSetupError, Secret},
    metrics::Metrics,
};

/// Condition: whether the spec as stored passes every rule.
pub const SPEC_VALID: &str = "SpecValid";
/// Secrets are read again this often, so that a rotated password is picked up.
const SECRET_REFRESH: Duration = Duration::from_secs(30);
/// After a round that found the cluster cannot be managed, look again this soon.
const CANNOT_MANAGE_RETRY: Duration = Duration::from_secs(5);
/// While this process may not act, look again this soon.
const NOT_ACTING_RETRY: Duration = Duration::from_secs(1);

/// The secrets a cluster's spec refers to, as the runtime reads them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterSecrets {
    pub password: Option<Secret>,
    pub agent_token: Option<Secret>,
    /// The CA bundle (PEM) the agents' certificates chain to.
    pub agent_ca: Option<String>,
    /// The access keys of the S3 repositories whose credentials the spec names, by
    /// repository name.
    pub repository_keys: std::collections::BTreeMap<String, crate::repository::StoreKey>,
}

/// What a runtime tells people besides status (Events, log lines).
pub enum Notice<'a> {
    /// The spec breaks these rules and the last good version keeps running. Sent when the
    /// list changes.
    InvalidSpec(&'a [String]),
    /// Why the cluster has no engine. Sent once per new reason.
    CannotManage(&'a str),
    /// A round ran, from status `before`.
    Round {
        round: &'a Round,
        before: Option<&'a ReplicationClusterStatus>,
    },
}

/// Status could not be stored where the runtime keeps it; the runtime's own error says why.
#[derive(Debug, thiserror::Error)]
#[error("cannot store status: {0}")]
pub struct StatusStoreError(#[source] pub Box<dyn std::error::Error + Send + Sync>);

impl StatusStoreError {
    pub fn new(error: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self(Box::new(error))
    }
}

/// Why the secrets a spec refers to cannot be read. Names the field, never a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretsError {
    /// The reference is of a kind this runtime reads, but what it names is not there (an
    /// environment variable unset, a file unreadable or too large, a Secret or key missing).
    #[error("{field}: {reason}")]
    Unresolved { field: String, reason: String },
    /// The reference is of a kind only the Kubernetes operator reads.
    #[error("{field} needs the Kubernetes operator; use {instead} here")]
    NeedsKubernetes {
        field: &'static str,
        instead: &'static str,
    },
}

impl SecretsError {
    pub fn unresolved(field: impl Into<String>, reason: impl ToString) -> Self {
        Self::Unresolved {
            field: field.into(),
            reason: reason.to_string(),
        }
    }
}

/// Why a cluster cannot be managed at all: shown in status as `CannotManage`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CannotManage {
    #[error(transparent)]
    Secrets(#[from] SecretsError),
    #[error(transparent)]
    Engine(#[from] EngineSetupError),
}

/// A runtime adapter: the I/O a runtime (Kubernetes, files, etcd) supplies for one cluster's
/// round.
#[async_trait]
pub trait RuntimeAdapter: Send + Sync {
    /// Whether this process may act now: it leads, or runs alone.
    fn may_act(&self) -> bool;
    /// The secrets `spec` refers to, or why they cannot be read (naming the field).
    async fn secrets(&self, spec: &ReplicationClusterSpec) -> Result<ClusterSecrets, SecretsError>;
    fn journal(&self) -> &dyn JournalStore;
    fn router(&self) -> &dyn Router;
    /// A problem of the runtime's own to show beside status (a proxy that cannot listen).
    fn problem(&self) -> Option<String> {
        None
    }
    /// Positions and lag alone are stored at most this often.
    fn volatile_refresh(&self) -> Duration;
    /// Store `status`, with the error that stopped the round if one did.
    async fn store_status(
        &self,
        status: &ReplicationClusterStatus,
        error: Option<&str>,
    ) -> Result<(), StatusStoreError>;
    async fn notify(&self, notice: Notice<'_>);
}

/// What a round works from.
pub struct RoundInput {
    /// The cluster's spec with its names as they stand now.
    pub desired: Desired,
    /// What is wrong with it, as `field: reason`; a spec with problems is not taken.
    pub problems: Vec<String>,
    /// `metadata.generation`, where the runtime has one.
    pub generation: Option<i64>,
    /// Status as stored before this process began, where the runtime can read it back.
    pub stored: Option<ReplicationClusterStatus>,
}

struct EngineSlot {
    spec: ReplicationClusterSpec,
    secrets: ClusterSecrets,
    read_at: Instant,
    engine: Arc<dyn Engine>,
}

struct Stored {
    status: ReplicationClusterStatus,
    error: Option<String>,
    at: Instant,
}

/// The process's fault points: none, unless the binary installed some at start-up.
static FAULT_POINTS: std::sync::OnceLock<Box<dyn FaultPoints>> = std::sync::OnceLock::new();

/// Install the fault points every reconciler of this process reaches, once, before any round
/// (the binary does, from its environment, for crash tests). A second call changes nothing.
pub fn install_fault_points(points: Box<dyn FaultPoints>) {
    let _ = FAULT_POINTS.set(points);
}

fn fault_points() -> &'static dyn FaultPoints {
    FAULT_POINTS
        .get()
        .map_or(&NoFaults, |points| points.as_ref())
}

/// One cluster's reconciler: call [`round`](Self::round) again after the wait it returns, or
/// sooner when the spec changes.
pub struct ClusterReconciler {
    /// Names the cluster in metrics and logs: `namespace/name`, since names repeat across
    /// namespaces.
    label: String,
    namespace: String,
    name: String,
    metrics: Option<Arc<Metrics>>,
    memory: Memory,
    last_good: Option<Desired>,
    reported_problems: Vec<String>,
    engine: Option<EngineSlot>,
    cannot_manage: Option<String>,
    /// The status the last round computed.
    computed: Option<ReplicationClusterStatus>,
    stored: Option<Stored>,
    /// Rounds in a row that failed, for backoff.
    failures: u32,
}

impl ClusterReconciler {
    pub fn new(namespace: &str, name: &str, metrics: Option<Arc<Metrics>>) -> Self {
        Self {
            label: format!("{namespace}/{name}"),
            namespace: namespace.to_string(),
            name: name.to_string(),
            metrics,
            memory: Memory::default(),
            last_good: None,
            reported_problems: Vec::new(),
            engine: None,
            cannot_manage: None,
            computed: None,
            stored: None,
            failures: 0,
        }
    }

    /// What the probes remembered.
    pub fn memory(&self) -> &Memory {
        &self.memory
    }

    /// The spec last taken: the one rounds act on.
    pub fn last_good(&self) -> Option<&Desired> {
        self.last_good.as_ref()
    }

    /// One round: `observe -> plan -> act -> status` when the spec and the engine allow it.
    /// Returns how long to wait before the next, or `None` to wait for a change of spec.
    pub async fn round(
        &mut self,
        input: RoundInput,
        adapter: &dyn RuntimeAdapter,
    ) -> Option<Duration> {
        if !adapter.may_act() {
            // Someone else may lead (this process follows, was frozen, or is cut off from
            // where leadership is kept): act on nothing, but keep probing.
            return Some(self.watch(input, adapter).await);
        }
        let RoundInput {
            desired,
            problems,
            generation,
            stored,
        } = input;
        if problems != self.reported_problems {
            if !problems.is_empty() {
                tracing::warn!(cluster = %self.label, problems = ?problems, "spec rejected; the last good version keeps running");
                adapter.notify(Notice::InvalidSpec(&problems)).await;
            }
            self.reported_problems = problems.clone();
        }
        if problems.is_empty() {
            self.last_good = Some(desired);
        }
        if let Some(metrics) = &self.metrics {
            metrics.spec_valid(&self.label, problems.is_empty());
        }
        let before = self.computed.clone().or(stored.clone());
        let Some(desired) = self.last_good.clone() else {
            let status = with_spec_problems(before.unwrap_or_default(), &problems);
            self.store(adapter, status, None, generation, stored.as_ref())
                .await;
            return None;
        };
        let engine = match self.engine(&desired.spec, adapter).await {
            Ok(engine) => engine,
            Err(error) => {
                let message = error.to_string();
                tracing::error!(cluster = %self.label, %message, "cannot manage cluster");
                if self.cannot_manage.as_ref() != Some(&message) {
                    adapter.notify(Notice::CannotManage(&message)).await;
                    self.cannot_manage = Some(message.clone());
                }
                let status = with_spec_problems(
                    with_stall(before.unwrap_or_default(), "CannotManage", &message),
                    &problems,
                );
                self.computed = Some(status.clone());
                self.store(adapter, status, Some(message), generation, stored.as_ref())
                    .await;
                return Some(CANNOT_MANAGE_RETRY);
            }
        };
        self.cannot_manage = None;
        let deps = Deps {
            engine: engine.as_ref(),
            store: adapter.journal(),
            router: adapter.router(),
            faults: fault_points(),
        };
        let started = Instant::now();
        let result = reconcile::reconcile(
            &desired,
            &mut self.memory,
            before.as_ref(),
            generation,
            &deps,
        )
        .await;
        match result {
            Ok(round) => {
                self.failures = 0;
                if let Some(metrics) = &self.metrics {
                    let names: Vec<String> = (desired.virtual_names.iter())
                        .map(|vn| format!("{}/{}", self.namespace, vn.name))
                        .collect();
                    let max_lag = desired.spec.failover.max_lag.bytes();
                    metrics.record_round(&self.label, &round, max_lag, &names, started.elapsed());
                }
                adapter
                    .notify(Notice::Round {
                        round: &round,
                        before: before.as_ref(),
                    })
                    .await;
                let status = with_spec_problems(round.status, &problems);
                // Compared as stored, SpecValid included, so that unchanged conditions stay quiet.
                log_changed_conditions(&self.label, before.as_ref(), &status);
                self.computed = Some(status.clone());
                self.store(adapter, status, None, generation, stored.as_ref())
                    .await;
                Some(round.plan.requeue_after)
            }
            Err(error) => {
                self.failures += 1;
                if let Some(metrics) = &self.metrics {
                    metrics.round_failed(&self.label);
                }
                let wait = retry_wait(&error, self.failures);
                tracing::warn!(cluster = %self.label, %error, retry_in = ?wait, "reconcile failed");
                let status = with_spec_problems(before.unwrap_or_default(), &problems);
                self.store(
                    adapter,
                    status,
                    Some(error.to_string()),
                    generation,
                    stored.as_ref(),
                )
                .await;
                Some(wait)
            }
        }
    }

    /// A round of a process that may not act: probe the members to keep memory current, so
    /// that one that comes to lead knows how long each has been silent. Renews no lease,
    /// reads no journal, stores nothing.
    async fn watch(&mut self, input: RoundInput, adapter: &dyn RuntimeAdapter) -> Duration {
        if input.problems.is_empty() {
            self.last_good = Some(input.desired);
        }
        // What it computed while it led is stale by the time it leads again; whoever acts
        // exports the cluster's state now.
        self.computed = None;
        self.stored = None;
        if let Some(metrics) = &self.metrics {
            metrics.forget(&self.label);
        }
        let Some(desired) = self.last_good.clone() else {
            return NOT_ACTING_RETRY;
        };
        match self.engine(&desired.spec, adapter).await {
            Ok(engine) => {
                reconcile::watch_members(
                    &desired,
                    &mut self.memory,
                    engine.as_ref(),
                    jiff::Timestamp::now(),
                )
                .await;
                crate::core::plan::probe_interval(&desired)
            }
            Err(_) => NOT_ACTING_RETRY,
        }
    }

    /// The cluster's engine, rebuilt when the spec or its secrets change; secrets are read
    /// again every [`SECRET_REFRESH`].
    async fn engine(
        &mut self,
        spec: &ReplicationClusterSpec,
        adapter: &dyn RuntimeAdapter,
    ) -> Result<Arc<dyn Engine>, CannotManage> {
        if let Some(slot) = &self.engine
            && slot.spec == *spec
            && slot.read_at.elapsed() < SECRET_REFRESH
        {
            return Ok(slot.engine.clone());
        }
        let secrets = adapter.secrets(spec).await?;
        if let Some(slot) = &mut self.engine
            && slot.spec == *spec
            && slot.secrets == secrets
        {
            slot.read_at = Instant::now();
            return Ok(slot.engine.clone());
        }
        let credentials = Credentials {
            username: spec.credentials.as_ref().and_then(|c| c.username.clone()),
            password: secrets.password.clone(),
        };
        let agents = AgentAccess {
            token: secrets.agent_token.clone(),
            ca_pem: secrets.agent_ca.clone(),
            archive: self.repository_settings(spec, &secrets, |b| b.archive_repository()),
            backup: self.repository_settings(spec, &secrets, |b| b.base_repository()),
            recovery: self.recovery_request(spec, &secrets)?,
        };
        let engine = crate::engine::for_cluster(spec, credentials, agents)?;
        self.engine = Some(EngineSlot {
            spec: spec.clone(),
            secrets,
            read_at: Instant::now(),
            engine: engine.clone(),
        });
        Ok(engine)
    }

    /// The settings for the repository `which` picks (WAL's, base backups'), when there is one.
    fn repository_settings(
        &self,
        spec: &ReplicationClusterSpec,
        secrets: &ClusterSecrets,
        which: impl Fn(&crate::api::BackupPolicy) -> Option<&crate::api::Repository>,
    ) -> Option<crate::engine::postgres::archive::ArchiveSettings> {
        let repository = which(spec.backup.as_ref()?)?;
        Some(
            crate::engine::postgres::archive::ArchiveSettings::for_repository(
                &self.namespace,
                &self.name,
                spec,
                repository,
                &secrets.repository_keys,
            ),
        )
    }

    /// What the desired primary's agent recovers from, when `spec.bootstrap.recovery` asks:
    /// the source's repository with its key, under the source cluster's names.
    fn recovery_request(
        &self,
        spec: &ReplicationClusterSpec,
        secrets: &ClusterSecrets,
    ) -> Result<Option<crate::engine::postgres::archive::RecoveryRequest>, EngineSetupError> {
        use crate::engine::postgres::archive::{ArchiveSettings, RecoveryRequest, RecoveryTarget};
        let Some(recovery) = spec.bootstrap.as_ref().and_then(|b| b.recovery.as_ref()) else {
            return Ok(None);
        };
        let field = "spec.bootstrap.recovery";
        let repository = spec
            .backup
            .as_ref()
            .and_then(|b| {
                b.repositories
                    .iter()
                    .find(|r| r.name == recovery.repository)
            })
            .ok_or_else(|| EngineSetupError::Recovery {
                field: format!("{field}.repository"),
                reason: format!(
                    "{:?} names no repository in spec.backup.repositories",
                    recovery.repository
                ),
            })?;
        let target =
            RecoveryTarget::from_spec(recovery.target.as_ref()).map_err(|(sub, reason)| {
                EngineSetupError::Recovery {
                    field: format!("{field}.target{sub}"),
                    reason,
                }
            })?;
        let namespace = recovery
            .source
            .namespace
            .as_deref()
            .unwrap_or(&self.namespace);
        Ok(Some(RecoveryRequest {
            settings: ArchiveSettings::for_repository(
                namespace,
                &recovery.source.cluster,
                spec,
                repository,
                &secrets.repository_keys,
            ),
            target,
        }))
    }

    /// Store `status` when it says something the last stored one did not.
    async fn store(
        &mut self,
        adapter: &dyn RuntimeAdapter,
        mut status: ReplicationClusterStatus,
        error: Option<String>,
        generation: Option<i64>,
        stored_before: Option<&ReplicationClusterStatus>,
    ) {
        status.observed_generation = generation;
        let error = match (error, adapter.problem()) {
            (Some(a), Some(b)) => Some(format!("{a}; {b}")),
            (a, b) => a.or(b),
        };
        let (previous, previous_error, fresh) = match &self.stored {
            Some(s) => (
                Some(&s.status),
                s.error.as_ref(),
                s.at.elapsed() < adapter.volatile_refresh(),
            ),
            None => (stored_before, None, false),
        };
        if previous_error == error.as_ref() && !worth_writing(previous, &status, fresh) {
            return;
        }
        // Leadership is checked again here, not only when the round began: a process frozen
        // mid-round wakes with a stale picture, and its status would overwrite the new
        // leader's.
        if !adapter.may_act() {
            tracing::info!(cluster = %self.label, "no longer leading: this round's status is not stored");
            return;
        }
        match adapter.store_status(&status, error.as_deref()).await {
            Ok(()) => {
                self.stored = Some(Stored {
                    status,
                    error,
                    at: Instant::now(),
                })
            }
            Err(e) => tracing::warn!(cluster = %self.label, error = %e, "status not stored"),
        }
    }
}

impl Drop for ClusterReconciler {
    /// A cluster no longer reconciled here exports nothing more.
    fn drop(&mut self) {
        if let Some(metrics) = &self.metrics {
            metrics.forget(&self.label);
        }
    }
}

/// Wait before retrying after failure number `failures` (1-based), by error class: doubling
/// from 500ms to 10s, so a flapping store is not hammered yet a recovered one is used again
/// soon. A journal written by someone else starts at the longer end: another controller may be
/// acting.
pub fn retry_wait(error: &ReconcileError, failures: u32) -> Duration {
    match error {
        ReconcileError::Act(
            StoreError::Conflict { .. } | StoreError::Deposed { .. } | StoreError::Lapsed,
        )
        | ReconcileError::Observe(
            StoreError::Conflict { .. } | StoreError::Deposed { .. } | StoreError::Lapsed,
        ) => backoff(failures + 2),
        ReconcileError::Act(_) | ReconcileError::Observe(_) => backoff(failures),
    }
}

/// Wait before retry number `failures` (1-based) of a transient error: doubling from 500ms up
/// to 10s.
pub fn backoff(failures: u32) -> Duration {
    let doubled = 500u64.saturating_mul(1u64 << failures.saturating_sub(1).min(10));
    Duration::from_millis(doubled.min(10_000))
}

/// Log the conditions that hold, when they changed (compared without timestamps).
fn log_changed_conditions(
    label: &str,
    before: Option<&ReplicationClusterStatus>,
    now: &ReplicationClusterStatus,
) {
    if before.is_some_and(|b| status::same_conditions(&b.conditions, &now.conditions)) {
        return;
    }
    for c in &now.conditions {
        if c.status == "True" && !c.message.is_empty() {
            tracing::info!(cluster = %label, condition = %c.type_, reason = %c.reason, message = %c.message, "condition");
        }
    }
}

fn set_condition(
    status: &mut ReplicationClusterStatus,
    type_: &str,
    value: bool,
    reason: &str,
    message: &str,
) {
    let finding = Finding::new(type_, value, reason, message.to_string());
    let generation = status.observed_generation;
    status::set_condition(
        &mut status.conditions,
        &finding,
        generation,
        jiff::Timestamp::now(),
    );
}

/// Mark the status as stuck on something only a person can fix.
pub fn with_stall(
    mut status: ReplicationClusterStatus,
    reason: &str,
    message: &str,
) -> ReplicationClusterStatus {
    set_condition(&mut status, findings::READY, false, reason, message);
    set_condition(&mut status, findings::RECONCILING, false, reason, "");
    set_condition(&mut status, findings::STALLED, true, reason, message);
    status
}

/// Add the `SpecValid` condition; an invalid spec also stalls the cluster.
pub fn with_spec_problems(
    mut status: ReplicationClusterStatus,
    problems: &[String],
) -> ReplicationClusterStatus {
    if problems.is_empty() {
        set_condition(&mut status, SPEC_VALID, true, "Valid", "");
        return status;
    }
    // Each problem is short already; a spec breaking many rules lists the first few.
    let message = crate::bounded::message(format!(
        "the last valid spec keeps running; fix: {}",
        crate::bounded::list(problems, 8, "; ")
    ));
    set_condition(&mut status, SPEC_VALID, false, "InvalidSpec", &message);
    with_stall(status, "InvalidSpec", &message)
}

/// The status without what changes every round, for deciding whether to store it.
fn settled(status: &ReplicationClusterStatus) -> ReplicationClusterStatus {
    let mut s = status.clone();
    s.conditions.clear();
    s.position = None;
    for m in &mut s.members {
        m.offset = None;
        m.applied = None;
        m.lag_bytes = None;
    }
    s
}

/// Whether `status` says something `previous` did not: anything but positions and lag at once,
/// those only once the last write is no longer `fresh`. Conditions compare without timestamps.
pub fn worth_writing(
    previous: Option<&ReplicationClusterStatus>,
    status: &ReplicationClusterStatus,
    fresh: bool,
) -> bool {
    let Some(previous) = previous else {
        return true;
    };
    let same = status::same_conditions(&previous.conditions, &status.conditions)
        && settled(previous) == settled(status);
    !(same && (fresh || previous == status))
}

#[cfg(test)]
mod tests;
