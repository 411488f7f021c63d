//! The pure planner: from what is desired, what was observed and the time, decide what to do and why.
//!
//! `plan` takes no client and no clock. It is where every decision lives: adoption, failure
//! detection, candidate choice, fencing order, cooldown, the RPO gate and epochs. Its output is
//! an ordered list of actions, the journal to persist before acting, findings for status, and
//! when to look again.

mod backup;
mod candidate;
mod endpoints;
pub mod findings;
mod operation;
mod topology;
pub mod zones;

#[cfg(test)]
mod tests;

use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

pub use self::{
    backup::{BackupDue, DrillDue, PruneDue, RETRY_AFTER, drill_due, due, prune_due},
    candidate::{Assessment, Selection, Verdict, observation, select},
    findings::{Blocker, Finding, human_duration},
    zones::Placement,
};
use crate::core::{
    desired::Desired,
    journal::{Journal, Step},
    observed::{HostAccess, Observed},
    routes::Endpoint,
};

/// How soon to look again while an operation is moving.
pub const FAST_REQUEUE: Duration = Duration::from_millis(50);
/// How long a switchover waits for its target to catch up before giving up.
pub const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(10);

/// One thing to do to the world.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum Action {
    /// Make a running `member` replicate from `from`, keeping its data.
    Replicate { member: String, from: String },
    /// Restart `member`, which holds data on the primary's history, as a replica of `from`.
    /// A host operation.
    Restart { member: String, from: String },
    /// `member` holds data off the primary's history: discard what diverged and replicate
    /// from `from`. A host operation.
    Rejoin { member: String, from: String },
    /// `member` holds no data: copy `from` in full and replicate from it. A host operation.
    Clone { member: String, from: String },
    /// Stop `member` replicating, so that its position stops moving.
    Detach { member: String },
    /// Stop `member` accepting writes.
    Fence { member: String },
    /// Stop `member`'s server cleanly, after it has sent its replicas everything. A host
    /// operation.
    Stop { member: String },
    /// Start `member`'s stopped server as it is: a primary comes back as primary. A host
    /// operation.
    Start { member: String },
    /// Create a new, empty data set on `member`'s empty host and start it as the primary of a
    /// cluster that never held data. A host operation.
    Initialize { member: String },
    /// Make `member` master at `epoch`; the engine verifies it took.
    Promote { member: String, epoch: u64 },
    /// Let master `member` accept writes again, with the guard the engine runs a primary with.
    Unfence { member: String },
    /// Point a virtual name at `endpoints`.
    RetargetVirtualName {
        name: String,
        endpoints: Vec<Endpoint>,
    },
}

impl Action {
    /// The journal step this action belongs to.
    pub fn step(&self) -> Step {
        match self {
            Action::Detach { .. } => Step::Detach,
            Action::Fence { .. } => Step::Fence,
            Action::Stop { .. } => Step::Stop,
            Action::Promote { .. } => Step::Promote,
            Action::Replicate { .. }
            | Action::Restart { .. }
            | Action::Rejoin { .. }
            | Action::Clone { .. }
            | Action::Start { .. }
            | Action::Initialize { .. }
            | Action::Unfence { .. } => Step::Repoint,
            Action::RetargetVirtualName { .. } => Step::MoveNames,
        }
    }

    /// Its name, as plans, status and Events show it.
    pub fn verb(&self) -> &'static str {
        match self {
            Action::Replicate { .. } => "Replicate",
            Action::Restart { .. } => "Restart",
            Action::Rejoin { .. } => "Rejoin",
            Action::Clone { .. } => "Clone",
            Action::Detach { .. } => "Detach",
            Action::Fence { .. } => "Fence",
            Action::Stop { .. } => "Stop",
            Action::Start { .. } => "Start",
            Action::Initialize { .. } => "Initialize",
            Action::Promote { .. } => "Promote",
            Action::Unfence { .. } => "Unfence",
            Action::RetargetVirtualName { .. } => "RetargetVirtualName",
        }
    }

    /// The member or virtual name acted on.
    pub fn subject(&self) -> &str {
        match self {
            Action::Replicate { member, .. }
            | Action::Restart { member, .. }
            | Action::Rejoin { member, .. }
            | Action::Clone { member, .. }
            | Action::Detach { member }
            | Action::Fence { member }
            | Action::Stop { member }
            | Action::Start { member }
            | Action::Initialize { member }
            | Action::Promote { member, .. }
            | Action::Unfence { member } => member,
            Action::RetargetVirtualName { name, .. } => name,
        }
    }

    /// Whether it is done on the member's host (by the engine, its agent, or a person)
    /// rather than through the database server alone.
    pub fn on_host(&self) -> bool {
        matches!(
            self,
            Action::Restart { .. }
                | Action::Rejoin { .. }
                | Action::Clone { .. }
                | Action::Stop { .. }
                | Action::Start { .. }
                | Action::Initialize { .. }
        )
    }
}

/// An action with its reason, and whether the rest of the plan depends on it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PlannedAction {
    #[serde(flatten)]
    pub action: Action,
    pub why: String,
    /// If a required action fails, the actions after it are not taken this round.
    pub required: bool,
    /// The member has no agent: a person must carry out this host operation. It is shown,
    /// never attempted.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub by_person: bool,
}

/// What the controller should do now.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    /// The durable state to write before any action is taken.
    pub journal: Journal,
    pub actions: Vec<PlannedAction>,
    /// Conditions to publish (before timestamps).
    pub findings: Vec<Finding>,
    /// Whom each member should replicate from, and why, around the primary this plan leaves.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub placements: Vec<Placement>,
    /// When to observe and plan again.
    #[serde(with = "duration_text")]
    pub requeue_after: Duration,
    /// A base backup to begin (it runs on the member's host; the round does not wait).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupDue>,
    /// Expired backups to let go (in the background; the round does not wait).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prune: Option<PruneDue>,
    /// A restore drill to begin (on the member's host, likewise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drill: Option<DrillDue>,
}

/// Decide what to do. Pure: same inputs, same plan.
pub fn plan(desired: &Desired, observed: &Observed, now: Timestamp) -> Plan {
    let mut planner = Planner::new(desired, observed, now);
    if desired.spec.suspend {
        return planner.suspended();
    }
    planner.adopt_cluster(); //          first sight: record who is master
    planner.drive_operation(); //        resume, finish or abandon a failover/switchover in flight
    planner.detect_failure(); //         start a failover when the master has been gone too long
    planner.follow_spec_primary(); //    start a planned switchover, or report an out-of-date spec
    planner.converge_members(); //       fence stray masters, re-point replicas, fix read-only flags
    planner.retarget_virtual_names(); // endpoints follow the primary and healthy replicas
    planner.schedule_backup(); //        a base backup when the schedule or a WAL gap asks
    planner.finish()
}

/// Working state of one planning pass.
struct Planner<'a> {
    desired: &'a Desired,
    observed: &'a Observed,
    now: Timestamp,
    journal: Journal,
    /// The member that is, or is being made, master in this plan.
    primary: Option<String>,
    actions: Vec<PlannedAction>,
    requeue: Duration,
    /// Stop changing replication this round (e.g. waiting for a switchover target to catch up).
    hold: bool,
    /// Who is master has been decided this round: start no new operation.
    decided: bool,
    blocker: Option<Blocker>,
    /// Why the cluster is not yet as desired although nothing is blocked.
    progress: Option<(&'static str, String)>,
    /// A best-effort action that must not delay the others: planned last.
    last_resort: Option<PlannedAction>,
    /// Whom each member follows around the primary named, once computed this pass.
    layout: Option<(String, Vec<Placement>)>,
    /// A base backup and a restore drill to begin this round.
    backup: Option<BackupDue>,
    drill: Option<DrillDue>,
    prune: Option<PruneDue>,
}

impl<'a> Planner<'a> {
    fn new(desired: &'a Desired, observed: &'a Observed, now: Timestamp) -> Self {
        let journal = observed.journal.clone();
        let primary = journal.current_primary.clone();
        Self {
            desired,
            observed,
            now,
            journal,
            primary,
            actions: Vec::new(),
            requeue: probe_interval(desired),
            hold: false,
            decided: false,
            blocker: None,
            progress: None,
            last_resort: None,
            layout: None,
            backup: None,
            drill: None,
            prune: None,
        }
    }

    /// Whom each member follows around `primary`: computed once per pass.
    fn layout(&mut self, primary: &str) -> Vec<Placement> {
        match &self.layout {
            Some((around, layout)) if around == primary => layout.clone(),
            _ => {
                let layout = zones::layout(self.desired, self.observed, primary);
                self.layout = Some((primary.to_string(), layout.clone()));
                layout
            }
        }
    }

    /// Plan `action`, unless an earlier stage already planned exactly that.
    fn push(&mut self, action: Action, required: bool, why: impl Into<String>) {
        if self.actions.iter().any(|a| a.action == action) {
            return;
        }
        let by_person = action.on_host()
            && observation(self.observed, action.subject()).host == HostAccess::Person;
        self.actions.push(PlannedAction {
            action,
            why: why.into(),
            required,
            by_person,
        });
    }

    fn requeue_within(&mut self, after: Duration) {
        self.requeue = self.requeue.min(after.max(Duration::from_millis(10)));
    }

    fn block(&mut self, reason: &'static str, message: impl Into<String>) {
        self.blocker.get_or_insert(Blocker {
            reason,
            message: message.into(),
        });
    }

    fn note_progress(&mut self, reason: &'static str, message: impl Into<String>) {
        self.progress.get_or_insert((reason, message.into()));
    }

    /// How long `member` has been unreachable, if it is.
    fn down_for(&self, member: &str) -> Option<Duration> {
        let o = observation(self.observed, member);
        if o.reachable {
            return None;
        }
        let since = o.unreachable_since.unwrap_or(self.now);
        Some(self.now.duration_since(since).unsigned_abs())
    }

    /// How long `member` must stay unreachable to count as failed, and the setting that says so:
    /// `refusedAfter` while its port refuses connections (no process), else `detectAfter`.
    /// Where a host agent holds a lease over the server, a refusal counts only when the agent
    /// confirms the server is stopped: a refusal can come from the network while clients still
    /// reach the server, and only `detectAfter` is sure to outlast its lease.
    fn detection(&self, member: &str) -> (Duration, &'static str) {
        let failover = &self.desired.spec.failover;
        let detect: Duration = failover.detect_after.into();
        let o = observation(self.observed, member);
        let stopped = match &o.host {
            HostAccess::Agent(host) => host.reachable && !host.running,
            HostAccess::Engine | HostAccess::Person => true,
        };
        if o.refused && stopped {
            (failover.refused_after(), "refusedAfter")
        } else {
            (detect, "detectAfter")
        }
    }

    fn retarget_virtual_names(&mut self) {
        if self.primary.is_none() {
            return; // not adopted yet: nothing known to point at
        }
        for vn in &self.desired.virtual_names {
            let wanted = endpoints::compute(
                self.desired,
                self.observed,
                &vn.spec,
                self.primary.as_deref(),
            );
            let wanted_members: Vec<&str> = wanted.iter().map(|e| e.member.as_str()).collect();
            let current = self.observed.virtual_names.get(&vn.name);
            let unchanged = current.is_some_and(|c| {
                c.iter()
                    .map(String::as_str)
                    .eq(wanted_members.iter().copied())
            });
            if !unchanged {
                let why = if wanted.is_empty() {
                    format!(
                        "no member qualifies for target {} (fallback {:?})",
                        vn.spec.target, vn.spec.fallback
                    )
                } else {
                    format!(
                        "target {} is now {}",
                        vn.spec.target,
                        wanted_members.join(", ")
                    )
                };
                self.push(
                    Action::RetargetVirtualName {
                        name: vn.name.clone(),
                        endpoints: wanted,
                    },
                    false,
                    why,
                );
            }
        }
    }

    fn suspended(self) -> Plan {
        let findings = vec![
            Finding::new(
                findings::SUSPENDED,
                true,
                findings::reason::SUSPENDED,
                "spec.suspend is true: observing only, taking no action",
            ),
            Finding::new(
                findings::READY,
                false,
                findings::reason::SUSPENDED,
                "reconciliation is suspended",
            ),
            Finding::new(
                findings::RECONCILING,
                false,
                findings::reason::SUSPENDED,
                "",
            ),
            Finding::new(findings::STALLED, false, findings::reason::SUSPENDED, ""),
        ];
        Plan {
            journal: self.journal,
            actions: Vec::new(),
            findings,
            placements: Vec::new(),
            requeue_after: self.requeue,
            backup: None,
            drill: None,
            prune: None,
        }
    }

    /// A base backup, when one is due and no failover or switchover is in flight (a backup
    /// read from a member being fenced or promoted would only fail).
    fn schedule_backup(&mut self) {
        if self.journal.operation.is_none() {
            self.backup = due(self.desired, self.observed, self.now);
            self.drill = drill_due(self.desired, self.observed, self.now);
            self.prune = prune_due(self.desired, self.observed, self.now);
        }
    }

    fn finish(mut self) -> Plan {
        use findings::reason;

        if let Some(planned) = self.last_resort.take() {
            self.push(planned.action, planned.required, planned.why);
        }
        if let Some(manual) = self.actions.iter().find(|a| a.by_person) {
            let member = manual.action.subject().to_string();
            let message = format!(
                "{}. {member} has no node agent (spec.members[].agent), so replicant does not do this itself: a person must",
                manual.why
            );
            self.block(reason::HOST_OPERATION_NEEDED, message);
        }
        let operation = self.journal.operation.clone();
        if let Some(op) = &operation
            && op.promoted(&self.journal)
            && self.actions.is_empty()
            && !self.hold
        {
            self.journal
                .finish_operation(crate::api::Outcome::Succeeded, self.now, "");
        }
        let in_flight = self.journal.operation.clone();
        if in_flight.is_some() || !self.actions.is_empty() {
            self.requeue_within(FAST_REQUEUE);
        }

        let stalled = self.blocker.clone();
        let reconciling: Option<(&str, String)> = match &in_flight {
            Some(op) => Some((
                match op.kind {
                    crate::api::OperationKind::Failover => reason::FAILOVER,
                    crate::api::OperationKind::Switchover => reason::SWITCHOVER,
                },
                format!(
                    "{:?} to {} at epoch {}: {}",
                    op.kind, op.to, op.epoch, op.reason
                ),
            )),
            None if !self.actions.is_empty() => {
                Some((reason::CONVERGING, self.actions[0].why.clone()))
            }
            None => self.progress.clone(),
        };
        let unavailable: Vec<&str> = self
            .desired
            .spec
            .members
            .iter()
            .filter(|m| !observation(self.observed, &m.name).reachable)
            .map(|m| m.name.as_str())
            .collect();

        let ready = match (&stalled, &reconciling) {
            (Some(b), _) => Finding::new(findings::READY, false, b.reason, b.message.clone()),
            (None, Some((r, m))) => Finding::new(findings::READY, false, r, m.clone()),
            (None, None) if !unavailable.is_empty() => Finding::new(
                findings::READY,
                false,
                reason::MEMBERS_UNAVAILABLE,
                format!("unreachable: {}", unavailable.join(", ")),
            ),
            (None, None) => Finding::new(
                findings::READY,
                true,
                reason::READY,
                format!(
                    "{} is primary; every member replicates as desired",
                    self.primary.as_deref().unwrap_or("?")
                ),
            ),
        };
        let findings = vec![
            ready,
            match &reconciling {
                Some((r, m)) => Finding::new(findings::RECONCILING, true, r, m.clone()),
                None => Finding::new(findings::RECONCILING, false, reason::IDLE, ""),
            },
            match &stalled {
                Some(b) => Finding::new(findings::STALLED, true, b.reason, b.message.clone()),
                None => Finding::new(findings::STALLED, false, reason::NOT_BLOCKED, ""),
            },
            match stalled.as_ref().filter(|b| {
                // Stalled for reasons that block no promotion.
                ![
                    reason::ADOPTION_REFUSED,
                    reason::FOREIGN_DATA,
                    reason::HOST_OPERATION_NEEDED,
                ]
                .contains(&b.reason)
            }) {
                Some(b) => Finding::new(
                    findings::PROMOTION_BLOCKED,
                    true,
                    b.reason,
                    b.message.clone(),
                ),
                None => Finding::new(findings::PROMOTION_BLOCKED, false, reason::NOT_BLOCKED, ""),
            },
            match &self.spec_mismatch() {
                Some(m) => Finding::new(
                    findings::PRIMARY_MISMATCH,
                    true,
                    reason::SPEC_OUT_OF_DATE,
                    m.clone(),
                ),
                None => Finding::new(findings::PRIMARY_MISMATCH, false, reason::SPEC_MATCHES, ""),
            },
        ];
        let placements = match self.primary.clone() {
            Some(primary) => self.layout(&primary),
            None => Vec::new(),
        };
        Plan {
            journal: self.journal,
            actions: self.actions,
            findings,
            placements,
            requeue_after: self.requeue,
            backup: self.backup,
            drill: self.drill,
            prune: self.prune,
        }
    }
}

/// Probe often enough to notice a failure well within `detectAfter`: a quarter of it, 100ms to 500ms.
pub fn probe_interval(desired: &Desired) -> Duration {
    let detect: Duration = desired.spec.failover.detect_after.into();
    (detect / 4).clamp(Duration::from_millis(100), Duration::from_millis(500))
}

/// How long one probe may take: as long as the probe interval, so a frozen server delays a
/// round (and the failover it may need) by at most that much.
pub fn probe_timeout(detect: Duration) -> Duration {
    (detect / 4).clamp(Duration::from_millis(100), Duration::from_millis(500))
}

/// How long the primary's host keeps it writable after each renewal of the controller's
/// lease, counted from the renewal's nonce (see the engine's lease). The controller declares
/// the primary failed only `detectAfter` after its last answer or the receipt of the last
/// nonce a renewal used, whichever is later, and the host's lease runs from that nonce's issue,
/// which is earlier. So a primary cut off from the controller has stopped before anyone is
/// promoted as long as `lease + margin <= detectAfter`, where a tenth of `detectAfter` (at
/// least 50ms) covers the host stopping its server and clock rates. The lease is shorter still,
/// by a probe timeout: a cut-off primary that clients still reach stops sooner, and in async
/// mode fewer of its commits are lost with it.
pub fn lease_ttl(detect: Duration) -> Duration {
    let margin = (detect / 10).max(Duration::from_millis(50));
    detect
        .saturating_sub(probe_timeout(detect))
        .saturating_sub(margin)
        .max(Duration::from_millis(50))
}

/// Serialises a std duration the Kubernetes way ("250ms").
mod duration_text {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &std::time::Duration, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&kube::core::Duration::from(*d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<std::time::Duration, D::Error> {
        Ok(kube::core::Duration::deserialize(d)?.into())
    }
}
