//! Observe: probe every member at once (each probe bounded by the engine's timeout), read the journal and the routes.

use futures::future::join_all;
use jiff::Timestamp;

use super::{Deps, Memory, ReconcileError};
use crate::{
    desired::Desired,
    engine::{EngineError, Lease, Probe},
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
    let primary = journal.current_primary.as_deref();
    let probes = join_all(desired.spec.members.iter().map(|m| {
        let lease = (primary == Some(m.name.as_str()) && !desired.spec.suspend).then_some(lease);
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
            Err(error) => unreachable(remembered, &error, now),
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
        refused: false,
        host: HostAccess::Engine,
        error: None,
    }
}

fn same_address(a: &str, b: &str) -> bool {
    a.replace(['[', ']'], "") == b.replace(['[', ']'], "")
}

/// An unreachable member keeps its last known data; it has been unreachable since it last answered.
fn unreachable(
    remembered: &mut super::Remembered,
    error: &EngineError,
    now: Timestamp,
) -> MemberObservation {
    let first_failure = *remembered.first_failure.get_or_insert(now);
    let last = &remembered.last;
    MemberObservation {
        reachable: false,
        unreachable_since: Some(remembered.last_success.unwrap_or(first_failure)),
        link_up: None,
        refused: matches!(error, EngineError::Refused { .. }),
        error: Some(error.to_string()),
        ..last.clone()
    }
}
