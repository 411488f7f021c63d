//! Planning stages that change who is master: adoption, failover, switchover, and resuming them from the journal. Pure.

use std::time::Duration;

use super::{
    Action, CATCH_UP_TIMEOUT, FAST_REQUEUE, PlannedAction, Planner,
    candidate::{self, observation},
    findings::{human_duration, reason},
};
use crate::{
    api::{FailoverMode, OperationKind, Outcome, Role, human_bytes},
    core::{
        journal::{Operation, Step},
        observed::HostAccess,
    },
};

impl Planner<'_> {
    /// First sight of a cluster: record the member that is master as the current primary.
    ///
    /// The desired primary is adopted when it is a master and no other master holds data it
    /// lacks. When it is a replica, the master it replicates from is adopted, and the spec then
    /// reads as a switchover request.
    pub(super) fn adopt_cluster(&mut self) {
        if self.journal.current_primary.is_some() {
            return;
        }
        let wanted = self.desired.spec.primary.clone();
        let o = observation(self.observed, &wanted);
        if !o.reachable || o.role.is_none() {
            self.hold = true;
            self.bring_up_first_primary(&wanted);
            self.note_progress(
                reason::WAITING,
                format!("waiting for {wanted} (spec.primary) to answer before taking charge of the cluster"),
            );
            return;
        }
        if o.role == Some(Role::Master) {
            let own = o.durable.unwrap_or(0);
            let richer: Vec<String> = self
                .desired
                .spec
                .members
                .iter()
                .filter(|m| m.name != wanted)
                .filter_map(|m| {
                    let other = observation(self.observed, &m.name);
                    let offset = other.durable.unwrap_or(0);
                    (other.is_master() && offset > own)
                        .then(|| format!("{} (offset {offset})", m.name))
                })
                .collect();
            if !richer.is_empty() {
                self.hold = true;
                self.block(
                    reason::ADOPTION_REFUSED,
                    format!(
                        "{} already master with data that {wanted} (offset {own}) lacks; making {wanted} primary would discard it. \
                         Set spec.primary to the member whose data you want to keep, or empty the others",
                        richer.join(", ") + if richer.len() == 1 { " is" } else { " are" },
                    ),
                );
                return;
            }
            self.journal.current_primary = Some(wanted.clone());
            self.journal.acknowledged_primary = Some(wanted.clone());
            self.journal.identity = o.identity.clone();
            self.primary = Some(wanted);
            return;
        }
        // A replica: follow its upstreams to the master that is really in charge.
        let mut seen = vec![wanted.clone()];
        let mut cursor = wanted.clone();
        while let Some(up) = observation(self.observed, &cursor).upstream.clone() {
            if seen.contains(&up) || self.desired.member(&up).is_none() {
                break;
            }
            seen.push(up.clone());
            if observation(self.observed, &up).is_master() {
                self.journal.identity = observation(self.observed, &up).identity.clone();
                self.journal.current_primary = Some(up.clone());
                self.primary = Some(up);
                return;
            }
            cursor = up;
        }
        // Its master is gone or not a member: the spec's word decides.
        let epoch = self.journal.epoch + 1;
        self.push(
            Action::Promote {
                member: wanted.clone(),
                epoch,
            },
            true,
            format!("{wanted} (spec.primary) is a replica of no reachable member; promoted to take charge"),
        );
        self.journal.acknowledged_primary = Some(wanted.clone());
        self.primary = Some(wanted);
    }

    /// Before the controller has ever taken charge: start `wanted` (spec.primary) when its host
    /// holds data and its server is stopped, or create the cluster's data set on it when no
    /// member holds any. A data set is created only when every member's agent has reported
    /// an empty host: a member nobody can see into may hold the data that matters.
    fn bring_up_first_primary(&mut self, wanted: &str) {
        let Some(host) = observation(self.observed, wanted).host.agent() else {
            return;
        };
        let recovery = self
            .desired
            .spec
            .bootstrap
            .as_ref()
            .and_then(|b| b.recovery.as_ref());
        if let Some(busy) = &host.busy {
            return match recovery {
                Some(recovery) if busy == "recover" => self.note_progress(
                    reason::WAITING,
                    format!(
                        "{wanted} (spec.primary) recovers the data set {}; the other members are copied from it once it has promoted",
                        recovery_source(recovery)
                    ),
                ),
                _ => self.note_progress(
                    reason::WAITING,
                    format!("{wanted}'s host is busy: {busy} under way"),
                ),
            };
        }
        if host.running || self.journal.identity.is_some() {
            return;
        }
        if self.another_master_than(wanted) {
            return;
        }
        if !host.empty {
            return self.push(
                Action::Start {
                    member: wanted.to_string(),
                },
                true,
                format!("{wanted} (spec.primary) holds data and its server is stopped; it is started as it is"),
            );
        }
        let unknown: Vec<&str> = self
            .desired
            .spec
            .members
            .iter()
            .map(|m| m.name.as_str())
            .filter(|name| {
                let o = observation(self.observed, name);
                o.reachable || o.host.agent().is_none_or(|h| !h.empty)
            })
            .collect();
        if !unknown.is_empty() {
            return self.note_progress(
                reason::WAITING,
                format!(
                    "{wanted} (spec.primary) holds no data; a new data set is created only once every member's agent reports an empty host, and {} has not",
                    unknown.join(", ")
                ),
            );
        }
        let mut why = match recovery {
            Some(recovery) => format!(
                "no member holds data: {wanted} (spec.primary) recovers the data set {} and starts as primary",
                recovery_source(recovery)
            ),
            None => format!(
                "no member holds data: a new data set is created on {wanted} (spec.primary), which starts as primary"
            ),
        };
        if let Some(error) = &host.error {
            why.push_str(&format!("; {error}"));
        }
        self.push(
            Action::Initialize {
                member: wanted.to_string(),
            },
            true,
            why,
        );
    }

    /// Carry an in-flight operation forward. Its target is fixed: a resumed operation never
    /// re-chooses, so it can never revert a promotion that may already have happened.
    pub(super) fn drive_operation(&mut self) {
        let Some(op) = self.journal.operation.clone() else {
            return;
        };
        if op.promoted(&self.journal) {
            self.primary = Some(op.to.clone());
            return;
        }
        match op.kind {
            OperationKind::Failover => self.resume_failover(op),
            OperationKind::Switchover => self.continue_switchover(op),
        }
    }

    fn resume_failover(&mut self, mut op: Operation) {
        if op.step == Step::Detach {
            // The replicas stopped replicating last round; their positions are final now.
            // No promotion has been attempted at this epoch, so choosing again is safe.
            let failed = op.from.clone().unwrap_or_default();
            let selection = candidate::select(self.desired, self.observed, &failed);
            let Some(chosen) = selection.chosen.clone() else {
                return self.abandon_failover(format!(
                    "after the replicas stopped replicating, no member can be promoted: {}",
                    selection.refusals()
                ));
            };
            if chosen != op.to {
                op.reason = format!("{}; after detaching: {}", op.reason, selection.why);
                op.to = chosen;
            }
            op.step = Step::Promote;
            self.journal.operation = Some(op.clone());
            return self.take_over(&op);
        }
        if !observation(self.observed, &op.to).reachable {
            self.journal.finish_operation(
                Outcome::Aborted,
                self.now,
                &format!(
                    "{} became unreachable before its promotion was confirmed",
                    op.to
                ),
            );
            return;
        }
        self.take_over(&op);
    }

    fn abandon_failover(&mut self, why: String) {
        self.journal
            .finish_operation(Outcome::Aborted, self.now, &why);
        self.decided = true;
        self.block(reason::NO_CANDIDATE, why);
    }

    /// Fence the old master, then promote. An unreachable old master cannot be fenced before:
    /// the attempt comes last, best effort, so its timeout never delays the new primary. One
    /// its host stopped cleanly, or reports not running, needs no fence.
    fn take_over(&mut self, op: &Operation) {
        if let Some(from) = &op.from
            && !self.stopped_by_host(from)
            && !self.down_on_its_host(from)
        {
            let fence = Action::Fence {
                member: from.clone(),
            };
            if observation(self.observed, from).reachable {
                self.push(
                    fence,
                    true,
                    format!(
                        "{from} must stop accepting writes before {} is promoted",
                        op.to
                    ),
                );
            } else {
                self.last_resort = Some(PlannedAction {
                    by_person: false,
                    action: fence,
                    why: format!(
                        "{from} is unreachable; tried once the new primary serves, and it is demoted as soon as it answers again"
                    ),
                    required: false,
                });
            }
        }
        self.push(
            Action::Promote {
                member: op.to.clone(),
                epoch: op.epoch,
            },
            true,
            op.reason.clone(),
        );
        self.primary = Some(op.to.clone());
    }

    /// Whether `member`'s host says, with nothing under way there, that its server does not
    /// run: there is nothing to fence, and hosts start nothing on their own. A fence sent
    /// anyway would reach the host after the same round asked it to rejoin, and stop the
    /// standby that came of it.
    fn down_on_its_host(&self, member: &str) -> bool {
        let o = observation(self.observed, member);
        !o.reachable
            && o.host
                .agent()
                .is_some_and(|h| !h.running && h.busy.is_none() && h.identity.is_some())
    }

    /// Whether `member`'s host reports its server stopped cleanly: it accepts nothing, and its
    /// data ends at a known position.
    fn stopped_by_host(&self, member: &str) -> bool {
        let o = observation(self.observed, member);
        !o.reachable
            && o.host
                .agent()
                .is_some_and(|h| !h.running && h.stopped_cleanly && h.position.is_some())
    }

    fn continue_switchover(&mut self, op: Operation) {
        let from = op.from.clone().unwrap_or_default();
        if op.step == Step::Promote && self.resume_switchover_promotion(&op) {
            return;
        }
        if let Some(refusal) = candidate::switchover_refusal(self.observed, &op.to, &from) {
            return self.abort_switchover(&from, format!("{refusal}; {from} stays primary"));
        }
        let old = observation(self.observed, &from);
        let target = observation(self.observed, &op.to);
        if matches!(old.host, HostAccess::Agent(_)) {
            return self.switch_through_host(op);
        }
        let lag = old
            .durable
            .unwrap_or(0)
            .saturating_sub(target.durable.unwrap_or(0));
        if !old.reachable {
            // The old master died mid-switchover. Its last known offset is the bar.
            let down = self.down_for(&from).unwrap_or_default();
            let (detect, _) = self.detection(&from);
            if down < detect {
                self.hold = true;
                self.requeue_within(detect - down);
                self.note_progress(
                    reason::SWITCHOVER,
                    format!("{from} stopped answering during the switchover"),
                );
                return;
            }
            let max_lag = self.desired.spec.failover.max_lag.bytes();
            if lag > max_lag {
                return self.abort_switchover(
                    &from,
                    format!(
                        "{from} failed during the switchover and {} is {} behind its last known offset (maxLag {})",
                        op.to,
                        human_bytes(lag),
                        human_bytes(max_lag)
                    ),
                );
            }
            return self.take_over(&op);
        }
        if old.read_only != Some(true) {
            self.push(
                Action::Fence {
                    member: from.clone(),
                },
                true,
                format!(
                    "{from} must stop accepting writes so {} can catch up exactly",
                    op.to
                ),
            );
            self.hold = true;
            self.requeue_within(FAST_REQUEUE);
            return;
        }
        if lag == 0 && target.durable.is_some() {
            return self.take_over(&op);
        }
        self.await_catch_up(
            &op,
            &from,
            format!("catch up with fenced {from} ({} behind)", human_bytes(lag)),
        );
    }

    /// A switchover whose promotion was attempted and not seen done (it timed out on a loaded
    /// host, or the controller stopped): the target may be primary already, so it is neither
    /// refused for no longer being a replica nor timed out for catching up. The promotion is
    /// asked again (it is idempotent) while the target answers, and awaited while it is
    /// silent for less than it takes to count as failed. Only then is the switchover
    /// abandoned, as before. Returns whether it decided the round.
    fn resume_switchover_promotion(&mut self, op: &Operation) -> bool {
        if observation(self.observed, &op.to).reachable {
            self.take_over(op);
            return true;
        }
        let down = self.down_for(&op.to).unwrap_or_default();
        let (detect, _) = self.detection(&op.to);
        if down >= detect {
            return false;
        }
        self.hold = true;
        self.requeue_within(detect - down);
        self.note_progress(
            reason::SWITCHOVER,
            format!("{} stopped answering while it was being promoted", op.to),
        );
        true
    }

    /// Wait, briefly, for a switchover's target to `what`; give the switchover up after
    /// [`CATCH_UP_TIMEOUT`].
    fn await_catch_up(&mut self, op: &Operation, from: &str, what: String) {
        let waited = self.now.duration_since(op.started_at).unsigned_abs();
        if waited > CATCH_UP_TIMEOUT {
            return self.abort_switchover(
                from,
                format!(
                    "{} did not {what} within {}",
                    op.to,
                    human_duration(CATCH_UP_TIMEOUT)
                ),
            );
        }
        self.hold = true;
        self.requeue_within(Duration::from_millis(20));
        self.note_progress(
            reason::SWITCHOVER,
            format!("waiting for {} to {what}", op.to),
        );
    }

    /// A switchover through the old primary's host: stop it cleanly (its replicas receive
    /// everything it wrote, down to the shutdown record), then promote the target once it
    /// holds all of it. Nothing acknowledged can be lost, and the old primary rejoins as it
    /// is, with no rewind.
    fn switch_through_host(&mut self, op: Operation) {
        let from = op.from.clone().unwrap_or_default();
        let old = observation(self.observed, &from);
        let target = observation(self.observed, &op.to);
        if old.reachable {
            self.push(
                Action::Stop {
                    member: from.clone(),
                },
                true,
                format!(
                    "{from} stops cleanly, after sending {} everything it wrote",
                    op.to
                ),
            );
            self.hold = true;
            self.requeue_within(FAST_REQUEUE);
            return;
        }
        let host = old.host.agent();
        let stopped_at = host
            .filter(|h| !h.running && h.stopped_cleanly)
            .and_then(|h| h.position);
        let Some(stopped_at) = stopped_at else {
            if host.is_some_and(|h| h.running) {
                // Still shutting down, or starting: look again shortly.
                self.hold = true;
                self.requeue_within(FAST_REQUEUE);
                return self
                    .note_progress(reason::SWITCHOVER, format!("waiting for {from} to stop"));
            }
            // Neither the server nor a clean stop: it failed during the switchover.
            let down = self.down_for(&from).unwrap_or_default();
            let (detect, _) = self.detection(&from);
            if down < detect {
                self.hold = true;
                self.requeue_within(detect - down);
                return self.note_progress(
                    reason::SWITCHOVER,
                    format!("{from} stopped answering during the switchover"),
                );
            }
            return self.abort_switchover(
                &from,
                format!("{from} failed during the switchover without stopping cleanly; a failover decides what happens next"),
            );
        };
        // Its last record begins at `stopped_at`: a replica past that point holds it whole.
        if target.durable.is_some_and(|d| d > stopped_at) {
            return self.take_over(&op);
        }
        self.await_catch_up(
            &op,
            &from,
            format!("receive everything {from} wrote before it stopped"),
        );
    }

    fn abort_switchover(&mut self, from: &str, why: String) {
        if observation(self.observed, from).is_master() {
            self.push(
                Action::Unfence {
                    member: from.to_string(),
                },
                true,
                format!("switchover abandoned: {from} accepts writes again"),
            );
        } else if self.stopped_by_host(from) {
            self.push(
                Action::Start {
                    member: from.to_string(),
                },
                true,
                format!("switchover abandoned: {from} starts again as primary"),
            );
        }
        let to = self
            .journal
            .operation
            .as_ref()
            .map(|op| op.to.clone())
            .unwrap_or_default();
        self.journal
            .finish_operation(Outcome::Aborted, self.now, &why);
        // The spec still asks for `to`: leaving the old value acknowledged makes it a request
        // again once the cooldown has passed.
        self.journal.acknowledged_primary = Some(from.to_string());
        self.primary = Some(from.to_string());
        self.decided = true;
        self.block(
            reason::SWITCHOVER_ABORTED,
            format!(
                "switchover to {to} abandoned: {why}. Retried after failover.cooldown ({}); fix the cause or set spec.primary back to {from}",
                human_duration(self.desired.spec.failover.cooldown.into())
            ),
        );
    }

    /// Start a failover when the current primary has been unreachable for `detectAfter`.
    pub(super) fn detect_failure(&mut self) {
        if self.hold || self.decided || self.journal.operation.is_some() {
            return;
        }
        let Some(current) = self.primary.clone() else {
            return;
        };
        if self.start_lapsed_primary(&current) {
            return;
        }
        let Some(headline) = self.primary_failure(&current) else {
            return;
        };
        let spec = &self.desired.spec;
        let selection = candidate::select(self.desired, self.observed, &current);

        if self.spec_requests_new_primary(&current) {
            let wanted = spec.primary.clone();
            let verdict = selection
                .assessments
                .iter()
                .find(|a| a.member == wanted)
                .map(|a| &a.verdict);
            return match verdict {
                Some(candidate::Verdict::Eligible { .. }) => {
                    self.journal.acknowledged_primary = Some(wanted.clone());
                    self.start(
                        OperationKind::Failover,
                        &current,
                        &wanted,
                        format!("{headline}; spec.primary requests {wanted}"),
                    );
                }
                Some(candidate::Verdict::Refused(why)) => self.block(
                    reason::NO_CANDIDATE,
                    format!(
                        "{headline}; spec.primary names {wanted}, which cannot be promoted: {why}"
                    ),
                ),
                None => self.block(
                    reason::NO_CANDIDATE,
                    format!("{headline}; spec.primary names {wanted}, which is not a member"),
                ),
            };
        }
        // Orchestrator's rule: a primary that the other members still reach is alive, and
        // only the controller's way to it is broken. Replacing it would turn that into an
        // outage; it keeps its lease through those peers meanwhile.
        let reached_by = &observation(self.observed, &current).reached_by;
        if !reached_by.is_empty() {
            self.requeue_within(super::probe_interval(self.desired));
            return self.block(
                reason::REACHED_BY_PEERS,
                format!(
                    "{headline}, but {} still reach{} it from their own hosts: it is not failed over. \
                     Check the controller's way to {current} (network, credentials, its agent); \
                     to fail over anyway, set spec.primary to another member",
                    reached_by.join(", "),
                    if reached_by.len() == 1 { "es" } else { "" }
                ),
            );
        }
        let suggestion = match &selection.chosen {
            Some(c) => format!(
                "set spec.primary to {c} to fail over now ({})",
                selection.why
            ),
            None => format!("no member can be promoted: {}", selection.refusals()),
        };
        if spec.failover.mode == FailoverMode::Manual {
            self.start_stopped_primary(&current, "failover.mode is manual");
            return self.block(
                reason::MANUAL_MODE,
                format!("{headline}; failover.mode is manual: {suggestion}"),
            );
        }
        // Cooldown guards against flapping reachability; a primary that lost its data is not
        // flapping, and waiting would let its replicas resync from it.
        let lost_data = self.down_for(&current).is_none();
        if let Some(last) = self.journal.last_promotion_at
            && !lost_data
            && let Some((since, cooldown)) = self.cooling_down_since(last)
        {
            self.start_stopped_primary(&current, "failover.cooldown holds");
            return self.block(
                reason::COOLDOWN,
                format!(
                    "{headline}; the last promotion was {} ago and failover.cooldown {} allows the next automatic failover in {}; {suggestion}",
                    human_duration(since),
                    human_duration(cooldown),
                    human_duration(cooldown - since)
                ),
            );
        }
        match selection.chosen.clone() {
            Some(chosen) => self.start(
                OperationKind::Failover,
                &current,
                &chosen,
                format!("{headline}; {}", selection.why),
            ),
            None => {
                self.start_stopped_primary(&current, "no other member can be promoted");
                self.block(
                    reason::NO_CANDIDATE,
                    format!(
                        "{headline}; no member can be promoted: {}",
                        selection.refusals()
                    ),
                )
            }
        }
    }

    /// The primary's host stopped it only because its lease lapsed (neither a controller nor a
    /// quorum of its peers renewed it), and keeps it down. Nobody has been promoted since: no
    /// other member is a master and the epoch is the one it was leased at, so every other
    /// member received from it alone and none can hold a commit it lacks. It is started where
    /// it is, at once: a failover would lose what it committed last (async) and cost a rewind.
    /// Whether it was.
    fn start_lapsed_primary(&mut self, current: &str) -> bool {
        let o = observation(self.observed, current);
        let Some(host) = o.host.agent() else {
            return false;
        };
        let ours = host.identity.is_none()
            || self.journal.identity.is_none()
            || host.identity == self.journal.identity;
        if o.reachable || !host.fenced || host.running || host.busy.is_some() || host.empty || !ours
        {
            return false;
        }
        if self.another_master_than(current) {
            return false;
        }
        self.push(
            Action::Start {
                member: current.to_string(),
            },
            true,
            format!(
                "{current} was stopped by its host only because its lease lapsed, and no member has been promoted since: \
                 it still holds every commit, so it is started again where it is instead of failed over"
            ),
        );
        self.hold = true;
        self.requeue_within(FAST_REQUEUE);
        true
    }

    /// Whether a member other than `member` answers as a master.
    fn another_master_than(&self, member: &str) -> bool {
        self.desired
            .spec
            .members
            .iter()
            .any(|m| m.name != member && observation(self.observed, &m.name).is_master())
    }

    /// The primary failed, and `why` no other member takes over: when its host reports its
    /// server stopped with its data in place (its lease lapsed, or it crashed), start it again
    /// rather than leave the cluster with no primary.
    fn start_stopped_primary(&mut self, current: &str, why: &str) {
        let Some(host) = observation(self.observed, current).host.agent() else {
            return;
        };
        if host.running || host.busy.is_some() || host.empty {
            return;
        }
        self.push(
            Action::Start {
                member: current.to_string(),
            },
            false,
            format!("{current} is stopped on its host and {why}: it is started again, as primary"),
        );
    }

    /// After a failover, a `spec.primary` still naming the old master: what to tell the user.
    pub(super) fn spec_mismatch(&self) -> Option<String> {
        let current = self.primary.as_deref()?;
        let wanted = self.desired.spec.primary.as_str();
        if self.journal.operation.is_some()
            || wanted == current
            || self.spec_requests_new_primary(current)
        {
            return None;
        }
        let how = match self.journal.history.last() {
            Some(last) if last.to == current => {
                format!("{:?} at epoch {} ({})", last.kind, last.epoch, last.reason)
            }
            _ => "a change of master".to_string(),
        };
        Some(format!(
            "{current} is primary after {how}, but spec.primary still names {wanted}. \
             Set spec.primary to {current} to acknowledge; replicant never fails back on its own"
        ))
    }

    /// Why the current primary counts as failed, if it does: unreachable for `detectAfter`, or
    /// answering with less data than its replicas hold (it restarted empty or from an old copy,
    /// and replicas resyncing from it would throw acknowledged writes away).
    fn primary_failure(&mut self, current: &str) -> Option<String> {
        let (detect, setting) = self.detection(current);
        let how = if observation(self.observed, current).refused {
            "refusing connections"
        } else {
            "unreachable"
        };
        match self.down_for(current) {
            Some(down) if down < detect => {
                self.requeue_within(detect - down);
                self.note_progress(
                    reason::MASTER_UNREACHABLE,
                    format!(
                        "{current} {how} for {}; failover starts after {}",
                        human_duration(down),
                        human_duration(detect)
                    ),
                );
                None
            }
            Some(down) => Some(format!(
                "{current} {how} for {} ({setting} {})",
                human_duration(down),
                human_duration(detect)
            )),
            None => {
                let o = observation(self.observed, current);
                let own = o.durable.filter(|_| o.is_master())?;
                let (ahead, offset) = self
                    .desired
                    .spec
                    .members
                    .iter()
                    .filter(|m| m.name != current)
                    .filter_map(|m| {
                        let r = observation(self.observed, &m.name);
                        // A streaming replica is never ahead; only a cut-off one can be.
                        (r.is_replica()
                            && r.upstream.as_deref() == Some(current)
                            && r.link_up != Some(true))
                        .then_some((m.name.as_str(), r.durable?))
                    })
                    .max_by_key(|(_, offset)| *offset)?;
                // Beyond maxLag, so probe skew and a fresh promotion never look like data loss.
                (offset > own.saturating_add(self.desired.spec.failover.max_lag.bytes())).then(|| {
                    format!(
                        "{current} answers with position {own} while its replica {ahead} holds {offset}: \
                         it lost data (restarted empty?) and must not be copied over its replicas"
                    )
                })
            }
        }
    }

    /// Within `failover.cooldown` of `event`: how long ago it was and the cooldown, and look
    /// again when it ends.
    fn cooling_down_since(&mut self, event: jiff::Timestamp) -> Option<(Duration, Duration)> {
        let since = self.now.duration_since(event).unsigned_abs();
        let cooldown: Duration = self.desired.spec.failover.cooldown.into();
        (since < cooldown).then(|| {
            self.requeue_within(cooldown - since);
            (since, cooldown)
        })
    }

    /// Has the user changed `spec.primary` since the controller last acted on it?
    fn spec_requests_new_primary(&self, current: &str) -> bool {
        let wanted = &self.desired.spec.primary;
        wanted != current && self.journal.acknowledged_primary.as_deref() != Some(wanted.as_str())
    }

    /// Journal a new operation and plan its first steps.
    fn start(&mut self, kind: OperationKind, from: &str, to: &str, reason: String) {
        let mut op = Operation {
            kind,
            from: Some(from.to_string()),
            to: to.to_string(),
            epoch: self.journal.epoch + 1,
            started_at: self.now,
            step: Step::Fence,
            reason,
        };
        if kind == OperationKind::Failover && self.detach_replicas(from) {
            op.step = Step::Detach;
            self.journal.operation = Some(op);
            return;
        }
        self.journal.operation = Some(op.clone());
        match kind {
            OperationKind::Failover => self.take_over(&op),
            OperationKind::Switchover => self.continue_switchover(op),
        }
    }

    /// Replicas still streaming from the failed primary may still be receiving: stop them, so
    /// the candidate is chosen from positions that no longer move. Whether any had to be.
    fn detach_replicas(&mut self, failed: &str) -> bool {
        let streaming: Vec<String> = self
            .desired
            .spec
            .members
            .iter()
            .filter(|m| m.name != failed)
            .filter(|m| {
                let o = observation(self.observed, &m.name);
                o.is_replica() && o.upstream.as_deref() == Some(failed) && o.link_up == Some(true)
            })
            .map(|m| m.name.clone())
            .collect();
        for member in &streaming {
            self.push(
                Action::Detach {
                    member: member.clone(),
                },
                false,
                format!("{member} still streams from {failed}: it stops, so that its position is final before a candidate is chosen"),
            );
        }
        if !streaming.is_empty() {
            self.hold = true;
            self.requeue_within(FAST_REQUEUE);
        }
        !streaming.is_empty()
    }

    /// `spec.primary` differs from the current primary: a planned switchover if the user changed
    /// it, otherwise a spec left behind by an automatic failover, which is reported and never
    /// "fixed" by failing back.
    pub(super) fn follow_spec_primary(&mut self) {
        if self.hold || self.decided || self.journal.operation.is_some() {
            return;
        }
        let Some(current) = self.primary.clone() else {
            return;
        };
        if !observation(self.observed, &current).reachable {
            return;
        }
        let wanted = self.desired.spec.primary.clone();
        if wanted == current {
            self.journal.acknowledged_primary = Some(wanted);
            return;
        }
        if !self.spec_requests_new_primary(&current) {
            return; // a spec left behind by a failover: reported by `spec_mismatch`, never acted on
        }
        if let Some(refusal) = candidate::switchover_refusal(self.observed, &wanted, &current) {
            return self.block(
                reason::SWITCHOVER_BLOCKED,
                format!("cannot switch over to {wanted}: {refusal}; {current} stays primary"),
            );
        }
        if let Some(last) = self.journal.history.last().cloned()
            && last.outcome == Outcome::Aborted
            && last.to == wanted
            && let Ok(ended) = last.finished_at.parse::<jiff::Timestamp>()
            && let Some((since, cooldown)) = self.cooling_down_since(ended)
        {
            return self.block(
                reason::SWITCHOVER_BLOCKED,
                format!(
                    "the last switchover to {wanted} was abandoned {} ago ({}); retrying in {}",
                    human_duration(since),
                    last.reason,
                    human_duration(cooldown - since)
                ),
            );
        }
        self.journal.acknowledged_primary = Some(wanted.clone());
        self.start(
            OperationKind::Switchover,
            &current,
            &wanted,
            format!("spec.primary changed from {current} to {wanted}"),
        );
    }
}

/// Where `spec.bootstrap.recovery` reads from and to what point, in words.
fn recovery_source(recovery: &crate::api::Recovery) -> String {
    let source = match &recovery.source.namespace {
        Some(namespace) => format!("{namespace}/{}", recovery.source.cluster),
        None => recovery.source.cluster.clone(),
    };
    let target = recovery.target.as_ref();
    let to = match (
        target.and_then(|t| t.time.as_ref()),
        target.and_then(|t| t.lsn.as_ref()),
        target.and_then(|t| t.xid),
        target.and_then(|t| t.name.as_ref()),
    ) {
        (Some(time), ..) => format!("time {time}"),
        (_, Some(lsn), ..) => format!("position {lsn}"),
        (_, _, Some(xid), _) => format!("transaction {xid}"),
        (.., Some(name)) => format!("restore point {name:?}"),
        _ => "the end of its archived WAL".into(),
    };
    format!(
        "from cluster {source}'s backups in repository {}, to {to}",
        recovery.repository
    )
}
