//! Observe: probe every member at once (each probe bounded by the engine's timeout), read the journal and the routes.

use futures::future::join_all;
use jiff::Timestamp;

use super::{Deps, Memory, ReconcileError};
use crate::{
    desired::Desired,
    engine::{EngineError, Probe},
    observed::{MemberObservation, Observed},
};

pub async fn observe(
    desired: &Desired,
    memory: &mut Memory,
    deps: &Deps<'_>,
    now: Timestamp,
) -> Result<Observed, ReconcileError> {
    let journal = deps.store.load().await.map_err(ReconcileError::Observe)?;
    let probes = join_all(desired.spec.members.iter().map(|m| deps.engine.observe(m))).await;
    let mut observed = Observed {
        journal,
        ..Default::default()
    };
    for (member, probe) in desired.spec.members.iter().zip(probes) {
        let remembered = memory.members.entry(member.name.clone()).or_default();
        let observation = match probe {
            Ok(probe) => {
                remembered.last_success = Some(now);
                remembered.first_failure = None;
                from_probe(desired, probe)
            }
            Err(error) => unreachable(remembered, &error, now),
        };
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
        offset: Some(probe.offset),
        link_up: probe.link_up,
        read_only: Some(probe.read_only),
        syncing: probe.syncing,
        guarded: (probe.role == crate::observed::Role::Master).then_some(probe.guarded),
        refused: false,
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
