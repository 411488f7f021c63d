//! The reconcile driver: `observe -> plan -> act -> status`, one line each; shared by every runtime.
//!
//! Runtimes supply the I/O as traits: an [`Engine`] for the database servers, a [`JournalStore`]
//! for durable memory, and a [`Router`] for virtual names. Status is computed from what `act`
//! actually did.

mod act;
#[cfg(test)]
mod fake;
mod observe;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use async_trait::async_trait;
use jiff::Timestamp;

pub use self::{
    act::act,
    observe::{observe, watch_members},
};
use crate::{
    api::ReplicationClusterStatus,
    core::{
        desired::Desired,
        engine::Engine,
        journal::Journal,
        observed::{MemberObservation, Observed},
        plan::{self, Plan},
        routes::Router,
        status::{self, Applied},
    },
};

/// Durable memory of a cluster: written before each step of an operation is taken.
///
/// Saves are compare-and-swap: a save names the revision the journal was read at and fails
/// with [`StoreError::Conflict`] if anyone wrote it since (a deposed leader, a second
/// controller), so no step is taken on a stale journal; the next round reads it afresh.
#[async_trait]
pub trait JournalStore: Send + Sync {
    /// The journal and the revision it is at (an empty journal at [`Revision::NONE`] when
    /// none is stored yet).
    async fn load(&self) -> Result<(Journal, Revision), StoreError>;
    /// Store `journal` if the stored one is still at `expected`; the new revision.
    async fn save(&self, journal: &Journal, expected: &Revision) -> Result<Revision, StoreError>;
    /// Whether the writer may still take a step, judged locally just before each one: several
    /// steps can follow one save, and a process resumed after a freeze must not take them.
    fn confirm(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// Where a stored journal stands, in the store's own terms (a resourceVersion, an etcd
/// revision, a digest of a file).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Revision(pub Option<String>);

impl Revision {
    /// Nothing stored yet.
    pub const NONE: Revision = Revision(None);
}

impl std::fmt::Display for Revision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0.as_deref().unwrap_or("none"))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "the journal was written by someone else since it was read at revision {expected}; it is read afresh next round"
    )]
    Conflict { expected: Revision },
    #[error(
        "this process no longer leads (its fencing token {token} is not the leader key's): it takes no step"
    )]
    Deposed { token: i64 },
    #[error(
        "this process cannot confirm it still leads (its lease may have run out): it takes no step"
    )]
    Lapsed,
    #[error("journal {what}: {message}")]
    Failed { what: &'static str, message: String },
}

impl StoreError {
    pub fn failed(what: &'static str, message: impl ToString) -> Self {
        Self::Failed {
            what,
            message: message.to_string(),
        }
    }
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
    pub faults: &'a dyn FaultPoints,
}

/// Named points of a failover or switchover (`before-promote`, `after-fence`, ...) that crash
/// tests stop or kill the process at. Reached just before a step is taken (its start already
/// journaled) and just after its outcome is journaled.
pub trait FaultPoints: Send + Sync {
    fn reached(&self, point: &str);
}

/// No fault is injected: what every process runs with unless told otherwise.
pub struct NoFaults;

impl FaultPoints for NoFaults {
    fn reached(&self, _point: &str) {}
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

    /// For tests of what is computed from a round (metrics, Events): nothing observed or
    /// planned, `results` applied over `journal`, and `status` published.
    #[cfg(test)]
    pub(crate) fn applied(
        results: Vec<(
            crate::core::plan::PlannedAction,
            crate::core::status::ActionResult,
        )>,
        journal: crate::core::journal::Journal,
        status: ReplicationClusterStatus,
    ) -> Self {
        Round {
            observed: Observed::default(),
            plan: Plan {
                journal: journal.clone(),
                actions: Vec::new(),
                findings: Vec::new(),
                placements: Vec::new(),
                requeue_after: std::time::Duration::from_secs(1),
                backup: None,
                drill: None,
                prune: None,
            },
            applied: Applied {
                journal,
                results,
                backup_refused: None,
                drill_refused: None,
            },
            status,
        }
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
    let (observed, revision) = observe(desired, memory, deps, Timestamp::now()).await?; // engines, journal, router
    let plan = plan::plan(desired, &observed, Timestamp::now()); //                         pure
    let applied = act(desired, &observed, revision, &plan, deps).await?; //                 engines, journal, router
    let status = status::cluster_status(
        desired,
        &observed,
        &plan,
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
