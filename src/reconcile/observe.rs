//! Observe: probe every member at once (each probe bounded by the engine's timeout), read the journal and the routes.

use futures::future::join_all;
use jiff::Timestamp;

use super::{Deps, Memory, ReconcileError};
use crate::{
    desired::Desired,
    engine::{EngineError, Lease, Probe},
    journal::{Journal, Step},
    observed::{HostAccess, MemberObservation, Observed},
    plan,
};

pub async fn observe(
    desired: &Desired,
    memory: &mut Memory,
    deps: &Deps<'_>,
    now: Timestamp,
) -> Result<Observed, ReconcileError> {
    let journal = deps.store.load().await.map_err(ReconcileError::Observe)?;
    // The primary's host keeps it writable only while the controller renews this lease.
    let lease = Lease {
        epoch: journal.epoch,
        ttl: plan::lease_ttl(desired.spec.failover.detect_after.into()),
    };
    // Renewed while suspended too: suspending the controller must not stop the primary.
    let leaseholder = leaseholder(&journal);
    let probes = join_all(desired.spec.members.iter().map(|m| {
        let lease = (leaseholder == Some(m.name.as_str())).then_some(lease);
        deps.engine.observe(m, lease)
    }))
    .await;
    let mut observed = Observed {
        journal,
        ..Default::default()
    };
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
        remembered.last = observation.clone();
        observed.members.insert(member.name.clone(), observation);
    }
    for vn in &desired.virtual_names {
        if let Some(endpoints) = deps.router.current(&vn.name).await {
            observed.virtual_names.insert(vn.name.clone(), endpoints);
        }
    }
    Ok(observed)
}

/// Who holds the primary's lease: the primary; while an operation replaces it, nobody (the old
/// primary's lease must run out), then its target once its promotion has been attempted, and
/// for good once it is done (a last-resort fence of the old primary afterwards changes nothing).
fn leaseholder(journal: &Journal) -> Option<&str> {
    match &journal.operation {
        None => journal.current_primary.as_deref(),
        Some(op) => (op.promoted(journal)
            || matches!(op.step, Step::Promote | Step::Repoint | Step::MoveNames))
        .then_some(op.to.as_str()),
    }
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
        guarded: (probe.role == crate::observed::Role::Master).then_some(probe.guarded),
        copy_needed_by: probe.copy_needed_by,
        refused: false,
        host: HostAccess::Engine,
        error: None,
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
        ..last.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::leaseholder;
    use crate::journal::{Journal, Operation, OperationKind, Step};

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
        assert_eq!(leaseholder(&Journal::default()), None);
        assert_eq!(leaseholder(&during(Step::Detach, false)), None);
        assert_eq!(leaseholder(&during(Step::Fence, false)), None);
        // Promotion attempted, maybe done: the target may accept writes.
        assert_eq!(leaseholder(&during(Step::Promote, false)), Some("b"));
        // Promoted, then the old primary fenced as a last resort: still the target's.
        assert_eq!(leaseholder(&during(Step::Fence, true)), Some("b"));
        let mut done = during(Step::MoveNames, true);
        done.operation = None;
        assert_eq!(leaseholder(&done), Some("b"));
    }
}
