//! Observe: probe every member at once (each probe bounded by the engine's timeout), ask the
//! others whether they reach a primary the controller does not, read the journal (and its
//! revision) and the routes.

use futures::future::join_all;
use jiff::Timestamp;

use super::{Deps, Memory, ReconcileError, Revision};
use crate::{
    api::OperationKind,
    core::{
        desired::Desired,
        engine::{EngineError, Lease, Observation, Probe},
        journal::{Journal, Step},
        observed::{HostAccess, MemberObservation, Observed},
        plan,
    },
};

pub async fn observe(
    desired: &Desired,
    memory: &mut Memory,
    deps: &Deps<'_>,
    now: Timestamp,
) -> Result<(Observed, Revision), ReconcileError> {
    let (journal, revision) = deps.store.load().await.map_err(ReconcileError::Observe)?;
    // The primary's host keeps it writable only while the controller renews this lease.
    let lease = Lease {
        epoch: journal.epoch,
        ttl: plan::lease_ttl(desired.spec.failover.detect_after.into()),
    };
    // Renewed while suspended too: suspending the controller must not stop the primary.
    let leaseholder = leaseholder(&journal, &desired.spec.primary);
    let departing = departing(&journal, memory);
    let members = probe(
        desired,
        memory,
        deps.engine,
        Roles {
            leaseholder,
            departing,
        },
        lease,
        now,
    )
    .await;
    let mut observed = Observed {
        journal,
        members,
        backups: deps.engine.backups().and_then(|b| b.observed()),
        ..Default::default()
    };
    for vn in &desired.virtual_names {
        if let Some(endpoints) = deps.router.current(&vn.name).await {
            observed.virtual_names.insert(vn.name.clone(), endpoints);
        }
    }
    Ok((observed, revision))
}

/// The members a round treats apart.
#[derive(Clone, Copy, Default)]
struct Roles<'a> {
    /// Its probe renews the lease.
    leaseholder: Option<&'a str>,
    /// A failed primary being replaced, silent last round: the round does not wait for it.
    departing: Option<&'a str>,
}

/// The primary a failover is replacing, when it was silent last round: it is most likely
/// silent again, and waiting out its probe's timeout in every round of the failover would add
/// that much to the clients' outage each time. A prompt answer is still heard.
fn departing<'a>(journal: &'a Journal, memory: &Memory) -> Option<&'a str> {
    let op = journal.operation.as_ref()?;
    let from = op.from.as_deref()?;
    (op.kind == OperationKind::Failover && silent_last_round(memory, from)).then_some(from)
}

/// Whether `member` did not answer its last probe.
fn silent_last_round(memory: &Memory, member: &str) -> bool {
    memory
        .members
        .get(member)
        .is_some_and(|r| r.first_failure.is_some())
}

/// How long a round waits for the departing primary: a server that answers at all answers a
/// probe within this on a healthy host.
fn departing_grace(probe_timeout: std::time::Duration) -> std::time::Duration {
    (probe_timeout / 10).max(std::time::Duration::from_millis(20))
}

/// Probe every member, remembering what each said; the leaseholder's probe renews `lease`.
async fn probe(
    desired: &Desired,
    memory: &mut Memory,
    engine: &dyn crate::core::engine::Engine,
    roles: Roles<'_>,
    lease: Lease,
    now: Timestamp,
) -> std::collections::BTreeMap<String, MemberObservation> {
    let Roles {
        leaseholder,
        departing,
    } = roles;
    let probe_timeout = plan::probe_timeout(desired.spec.failover.detect_after.into());
    // The leaseholder, when the controller did not reach it last time: the other members are
    // asked at once whether they do.
    let suspect = leaseholder
        .filter(|name| silent_last_round(memory, name))
        .and_then(|name| desired.spec.members.iter().find(|m| m.name == name));
    let departing_host = departing
        .and_then(|name| memory.members.get(name))
        .map(|r| r.last.host.clone())
        .unwrap_or_default();
    let departing_host = &departing_host;
    let round = || async {
        let probes = join_all(desired.spec.members.iter().map(|m| async move {
            let lease = (leaseholder == Some(m.name.as_str())).then_some(lease);
            if departing != Some(m.name.as_str()) {
                return engine.observe(m, lease).await;
            }
            let grace = departing_grace(probe_timeout);
            tokio::time::timeout(grace, engine.observe(m, lease))
                .await
                .unwrap_or_else(|_| Observation::silent(&m.address, grace, departing_host.clone()))
        }));
        let reached = async {
            match suspect {
                Some(member) => {
                    let others: Vec<_> = desired
                        .spec
                        .members
                        .iter()
                        .filter(|m| m.name != member.name)
                        .collect();
                    engine.reached_by(member, &others).await
                }
                None => Vec::new(),
            }
        };
        tokio::join!(probes, reached)
    };
    let began = std::time::Instant::now();
    let (mut probes, mut reached_by) = round().await;
    // Every probe is bounded by a probe timeout, so a round that took far longer means this
    // process stalled (frozen, starved): what timed out meanwhile says nothing of the members,
    // and counting it would fail over a healthy primary. Probe again.
    let bound = probe_timeout * 4;
    if began.elapsed() > bound && probes.iter().any(|p| p.server.is_err()) {
        tracing::info!(
            took_ms = began.elapsed().as_millis() as u64,
            "the probes took far longer than their timeout: this process stalled; probing again"
        );
        (probes, reached_by) = round().await;
    }
    let mut members = std::collections::BTreeMap::new();
    for (member, probe) in desired.spec.members.iter().zip(probes) {
        let remembered = memory.members.entry(member.name.clone()).or_default();
        let mut observation = match probe.server {
            Ok(server) => {
                remembered.last_success = Some(now);
                remembered.first_failure = None;
                from_probe(desired, server)
            }
            Err(error) => {
                let leased_at = probe.lease_sent.and_then(wall_time_of);
                unreachable(remembered, &error, now, leased_at)
            }
        };
        observation.host = probe.host;
        observation.archive = probe.archive;
        if !observation.reachable && suspect.is_some_and(|s| s.name == member.name) {
            observation.reached_by = std::mem::take(&mut reached_by);
        }
        remembered.last = observation.clone();
        members.insert(member.name.clone(), observation);
    }
    members
}

/// Probe every member to keep `memory` current, renewing no lease and reading no journal: what
/// a process that may not act does, so that if it comes to lead it knows how long each member
/// has been silent instead of starting to count.
pub async fn watch_members(
    desired: &Desired,
    memory: &mut Memory,
    engine: &dyn crate::core::engine::Engine,
    now: Timestamp,
) {
    let unleased = Lease {
        epoch: 0,
        ttl: std::time::Duration::ZERO,
    };
    probe(desired, memory, engine, Roles::default(), unleased, now).await;
}

/// Who holds the primary's lease: the primary, or before the controller has seen one, the
/// member it brings up as primary (`spec_primary`). While a failover replaces the primary,
/// nobody: the old primary's lease must run out. A switchover's old primary keeps it until it
/// is stopped cleanly: its target is promoted only after that, and a lapse on the way would
/// stop it abruptly, turning a switchover that loses nothing into a failover and a rewind.
/// The target holds it once its promotion has been attempted, and for good once it is done (a
/// last-resort fence of the old primary afterwards changes nothing).
fn leaseholder<'a>(journal: &'a Journal, spec_primary: &'a str) -> Option<&'a str> {
    let Some(op) = &journal.operation else {
        return Some(journal.current_primary.as_deref().unwrap_or(spec_primary));
    };
    if op.promoted(journal) || matches!(op.step, Step::Promote | Step::Repoint | Step::MoveNames) {
        return Some(op.to.as_str());
    }
    let stopping_cleanly =
        op.kind == OperationKind::Switchover && matches!(op.step, Step::Fence | Step::Stop);
    stopping_cleanly.then_some(op.from.as_deref()).flatten()
}

fn from_probe(desired: &Desired, probe: Probe) -> MemberObservation {
    // Report the upstream by member name when it is one; an outside address stays as is.
    let upstream = probe.upstream_address.map(|address| {
        desired
            .spec
            .members
            .iter()
            .find(|m| same_address(&m.address, &address))
            .map(|m| m.name.clone())
            .unwrap_or(address)
    });
    MemberObservation {
        reachable: true,
        unreachable_since: None,
        role: Some(probe.role),
        upstream,
        durable: Some(probe.durable),
        applied: Some(probe.applied),
        history: probe.history,
        identity: probe.identity,
        link_up: probe.link_up,
        read_only: Some(probe.read_only),
        syncing: probe.syncing,
        guarded: (probe.role == crate::api::Role::Master).then_some(probe.guarded),
        copy_needed_by: probe.copy_needed_by,
        refused: false,
        reached_by: Vec::new(),
        host: HostAccess::Engine,
        error: None,
        error_kind: None,
        replay_age_ms: probe.replay_age_ms,
        archive: None,
    }
}

fn same_address(a: &str, b: &str) -> bool {
    a.replace(['[', ']'], "") == b.replace(['[', ']'], "")
}

/// The wall-clock time of monotonic instant `sent`.
fn wall_time_of(sent: std::time::Instant) -> Option<Timestamp> {
    let ago = jiff::SignedDuration::try_from(sent.elapsed()).ok()?;
    Timestamp::now().checked_sub(ago).ok()
}

/// An unreachable member keeps its last known data. It has been unreachable since it last
/// answered, or since its lease was last renewed when that is later: until a lease's length
/// after a renewal it may still accept writes, so its failure is counted from then.
fn unreachable(
    remembered: &mut super::Remembered,
    error: &EngineError,
    now: Timestamp,
    leased_at: Option<Timestamp>,
) -> MemberObservation {
    let first_failure = *remembered.first_failure.get_or_insert(now);
    let last = &remembered.last;
    let answered = remembered.last_success.unwrap_or(first_failure);
    MemberObservation {
        reachable: false,
        unreachable_since: Some(leased_at.map_or(answered, |leased| answered.max(leased))),
        link_up: None,
        refused: matches!(error, EngineError::Refused { .. }),
        error: Some(error.to_string()),
        error_kind: Some(error.kind()),
        replay_age_ms: None,
        reached_by: Vec::new(),
        ..last.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::leaseholder;
    use crate::{
        api::OperationKind,
        core::journal::{Journal, Operation, Step},
    };

    fn during(step: Step, promoted: bool) -> Journal {
        Journal {
            epoch: if promoted { 2 } else { 1 },
            current_primary: Some(if promoted { "b" } else { "a" }.into()),
            operation: Some(Operation {
                kind: OperationKind::Failover,
                from: Some("a".into()),
                to: "b".into(),
                epoch: 2,
                started_at: "2026-01-01T00:00:00Z".parse().unwrap(),
                step,
                reason: String::new(),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn the_lease_passes_to_the_target_with_its_promotion_and_stays_there() {
        assert_eq!(leaseholder(&during(Step::Detach, false), "a"), None);
        assert_eq!(leaseholder(&during(Step::Fence, false), "a"), None);
        // Promotion attempted, maybe done: the target may accept writes.
        assert_eq!(leaseholder(&during(Step::Promote, false), "a"), Some("b"));
        // Promoted, then the old primary fenced as a last resort: still the target's.
        assert_eq!(leaseholder(&during(Step::Fence, true), "a"), Some("b"));
        let mut done = during(Step::MoveNames, true);
        done.operation = None;
        assert_eq!(leaseholder(&done, "a"), Some("b"));
    }

    #[test]
    fn the_member_being_brought_up_as_the_first_primary_holds_the_lease() {
        // Started under a lease before it answers as primary: it must not lapse meanwhile.
        assert_eq!(leaseholder(&Journal::default(), "a"), Some("a"));
    }

    #[test]
    fn a_switchovers_old_primary_keeps_the_lease_until_it_has_stopped_cleanly() {
        let switchover = |step| {
            let mut journal = during(step, false);
            journal.operation.as_mut().unwrap().kind = OperationKind::Switchover;
            journal
        };
        assert_eq!(leaseholder(&switchover(Step::Fence), "b"), Some("a"));
        assert_eq!(leaseholder(&switchover(Step::Stop), "b"), Some("a"));
        assert_eq!(leaseholder(&switchover(Step::Promote), "b"), Some("b"));
    }
}
