//! The reconcile driver: `observe -> plan -> act -> status`, one line each; shared by every runtime.
//!
//! Runtimes supply the I/O as traits: an [`Engine`] for the database servers, a [`JournalStore`]
//! for durable memory, and a [`Router`] for virtual names. Status is computed from what `act`
//! actually did.

mod act;
mod observe;

use std::collections::BTreeMap;

use async_trait::async_trait;
use jiff::Timestamp;

pub use self::{act::act, observe::observe};
use crate::{
    api::ReplicationClusterStatus,
    desired::Desired,
    engine::Engine,
    journal::Journal,
    observed::{MemberObservation, Observed},
    plan::{self, Endpoint, Plan},
    status::{self, Applied},
};

/// Durable memory of a cluster: written before each step of an operation is taken.
#[async_trait]
pub trait JournalStore: Send + Sync {
    async fn load(&self) -> Result<Journal, StoreError>;
    async fn save(&self, journal: &Journal) -> Result<(), StoreError>;
}

/// Where virtual names point (a built-in proxy, or a Service's endpoints).
#[async_trait]
pub trait Router: Send + Sync {
    /// Member names `name` points at now; `None` when it has never been set.
    async fn current(&self, name: &str) -> Option<Vec<String>>;
    async fn retarget(&self, name: &str, endpoints: &[Endpoint]) -> Result<(), String>;
}

#[derive(Debug, thiserror::Error)]
#[error("journal {what}: {message}")]
pub struct StoreError {
    pub what: &'static str,
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("cannot read the journal: {0}")]
    Observe(StoreError),
    #[error("cannot write the journal, so no step was taken: {0}")]
    Act(StoreError),
}

/// What the controller remembers between probes, in memory only: the last answer of each
/// member and when it last answered.
#[derive(Clone, Debug, Default)]
pub struct Memory {
    pub members: BTreeMap<String, Remembered>,
}

#[derive(Clone, Debug, Default)]
pub struct Remembered {
    pub last: MemberObservation,
    pub last_success: Option<Timestamp>,
    pub first_failure: Option<Timestamp>,
}

/// The I/O one reconcile needs.
pub struct Deps<'a> {
    pub engine: &'a dyn Engine,
    pub store: &'a dyn JournalStore,
    pub router: &'a dyn Router,
}

/// One round and everything it saw and did.
#[derive(Debug)]
pub struct Round {
    pub observed: Observed,
    pub plan: Plan,
    pub applied: Applied,
    pub status: ReplicationClusterStatus,
}

impl Round {
    /// Failovers and switchovers this round finished: records in the journal as written that
    /// were not in it as read. Compared by content, not by count, because the history is capped
    /// and drops its oldest record when a new one arrives.
    pub fn finished_operations(&self) -> impl Iterator<Item = &crate::api::PromotionRecord> {
        let before = &self.observed.journal.history;
        self.applied
            .journal
            .history
            .iter()
            .filter(move |record| !before.contains(record))
    }
}

/// One reconcile round.
pub async fn reconcile(
    desired: &Desired,
    memory: &mut Memory,
    previous: Option<&ReplicationClusterStatus>,
    generation: Option<i64>,
    deps: &Deps<'_>,
) -> Result<Round, ReconcileError> {
    let observed = observe(desired, memory, deps, Timestamp::now()).await?; //  engines, journal, router
    let plan = plan::plan(desired, &observed, Timestamp::now()); //              pure
    let applied = act(desired, &observed, &plan, deps).await?; //                engines, journal, router
    let status = status::cluster_status(
        desired,
        &observed,
        &plan.findings,
        &applied,
        previous,
        generation,
        Timestamp::now(),
    ); // pure
    Ok(Round {
        observed,
        plan,
        applied,
        status,
    })
}
