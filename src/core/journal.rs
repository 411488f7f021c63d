//! The controller's durable memory of one cluster (epoch, current primary, in-flight operation, history) and its pure transitions.
//!
//! The runtime writes the journal before each step of an operation is taken, and records the
//! step's outcome after; a controller that restarts reads it back and resumes. Nothing here does I/O.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::{
    api::{OperationKind, Outcome, PromotionRecord},
    core::history::History,
};

/// How many promotions the history keeps.
pub const HISTORY_LIMIT: usize = 10;

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Journal {
    /// Bumped on every promotion; 0 until the cluster is first adopted.
    #[serde(default)]
    pub epoch: u64,
    /// The member the controller made (or found) master.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_primary: Option<String>,
    /// `spec.primary` as last acted on. A spec naming another member is a switchover request;
    /// a spec still naming this one after a failover is merely out of date.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acknowledged_primary: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_promotion_at: Option<Timestamp>,
    /// The data set the cluster holds, as its primary reported when it was adopted (for
    /// engines that name data sets). A member holding another is never copied over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// The current primary's history as it was promoted: its new branch and where it left
    /// the old one. A member holding data past that fork has diverged, even when the primary
    /// cannot say so itself (it is unreachable, or its engine keeps no history).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_history: Option<History>,
    /// Written by versions that judged divergence by offset alone; read and ignored.
    #[serde(default, skip_serializing)]
    pub promoted_at_offset: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<Operation>,
    /// Finished operations, oldest first, at most [`HISTORY_LIMIT`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<PromotionRecord>,
}

/// The step of an operation last started; written before the step is taken.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum Step {
    /// Replicas stop replicating from the failed primary, so their positions stop moving.
    Detach,
    /// The old primary stops accepting writes.
    Fence,
    /// The old primary's server is stopped cleanly (a switchover through its host).
    Stop,
    /// The chosen member becomes primary at the operation's epoch.
    Promote,
    /// The other members replicate from the new primary.
    Repoint,
    /// Virtual names move to the new primary.
    MoveNames,
}

/// A failover or switchover in flight.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Operation {
    pub kind: OperationKind,
    /// The master being replaced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// The member being promoted. Fixed once chosen: a resumed operation never re-chooses.
    pub to: String,
    /// The epoch `to` is promoted at.
    pub epoch: u64,
    pub started_at: Timestamp,
    pub step: Step,
    /// Why the operation started, for people.
    pub reason: String,
}

impl Operation {
    pub fn promoted(&self, journal: &Journal) -> bool {
        journal.epoch >= self.epoch && journal.current_primary.as_deref() == Some(self.to.as_str())
    }
}

impl Journal {
    /// Record that `step` of the operation in flight is about to be taken. Called, and
    /// persisted, before the step is taken.
    pub fn step_started(&mut self, step: Step) {
        if let Some(op) = self.operation.as_mut() {
            op.step = step;
        }
    }

    /// Record that `member` became primary at `epoch`. `history` is what the engine reported
    /// of it: the branch it started and where it left the old one.
    pub fn promoted(&mut self, member: &str, epoch: u64, now: Timestamp, history: Option<History>) {
        self.epoch = self.epoch.max(epoch);
        self.current_primary = Some(member.to_string());
        self.last_promotion_at = Some(now);
        self.primary_history = history;
        self.promoted_at_offset = None;
    }

    /// End the in-flight operation and remember it in the history.
    pub fn finish_operation(&mut self, outcome: Outcome, now: Timestamp, note: &str) {
        let Some(op) = self.operation.take() else {
            return;
        };
        let promoted = op.promoted(self);
        // An abandoned promotion may still have happened on the server: never reuse its epoch.
        self.epoch = self.epoch.max(op.epoch);
        let reason = if note.is_empty() {
            op.reason
        } else {
            format!("{}; {note}", op.reason)
        };
        let history = self.primary_history.as_ref().filter(|_| promoted);
        self.history.push(PromotionRecord {
            branch: history.map(|h| h.branch.clone()),
            fork: history.and_then(|h| h.forks.last().cloned()),
            kind: op.kind,
            from: op.from,
            to: op.to,
            epoch: op.epoch,
            started_at: op.started_at.to_string(),
            finished_at: now.to_string(),
            outcome,
            reason,
        });
        if self.history.len() > HISTORY_LIMIT {
            let excess = self.history.len() - HISTORY_LIMIT;
            self.history.drain(..excess);
        }
    }
}
