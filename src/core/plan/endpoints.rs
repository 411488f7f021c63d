//! Where each virtual name should point, from the primary and the health and lag of replicas. Pure.

use super::candidate::observation;
use crate::{
    api::{Fallback, Target, VirtualNameSpec},
    core::{desired::Desired, observed::Observed, routes::Endpoint},
};

/// A replica fit to serve reads: reachable, fully synced, streaming from its upstream (or the
/// primary is gone, so nothing newer exists anywhere), and within `max_lag` of the primary.
fn serves_reads(
    observed: &Observed,
    primary: Option<&str>,
    member: &str,
    max_lag: Option<u64>,
) -> bool {
    let o = observation(observed, member);
    let primary_gone = primary.is_none_or(|p| !observation(observed, p).reachable);
    if !o.is_replica() || o.syncing || (o.link_up != Some(true) && !primary_gone) {
        return false;
    }
    let Some(max_lag) = max_lag else {
        return true;
    };
    // Readers see what a member has applied, so that is what read lag is judged by.
    let primary_offset = primary.and_then(|p| observation(observed, p).applied_position());
    match (primary_offset, o.applied_position()) {
        (Some(p), Some(r)) => p.saturating_sub(r) <= max_lag,
        // Lag cannot be judged without both offsets: leave the replica out rather than guess.
        _ => false,
    }
}

/// The endpoints `vn` should have, given the member that is (or is being made) primary.
pub fn compute(
    desired: &Desired,
    observed: &Observed,
    vn: &VirtualNameSpec,
    primary: Option<&str>,
) -> Vec<Endpoint> {
    let max_lag = vn.max_lag.as_ref().map(|l| l.bytes());
    let endpoint = |name: &str| {
        desired.member(name).map(|m| Endpoint {
            member: m.name.clone(),
            address: m.address.clone(),
            zone: m.zone.clone(),
        })
    };
    let replicas = || -> Vec<Endpoint> {
        desired
            .spec
            .members
            .iter()
            .filter(|m| Some(m.name.as_str()) != primary)
            .filter(|m| serves_reads(observed, primary, &m.name, max_lag))
            .filter_map(|m| endpoint(&m.name))
            .collect()
    };
    let primary_reachable = primary.is_some_and(|p| observation(observed, p).reachable);
    let fallback = || match vn.fallback {
        Fallback::Primary if primary_reachable => primary.and_then(endpoint).into_iter().collect(),
        Fallback::Primary | Fallback::None => Vec::new(),
    };
    let chosen: Vec<Endpoint> = match &vn.target {
        Target::Primary => primary.and_then(endpoint).into_iter().collect(),
        Target::Replicas => replicas(),
        Target::Any => primary
            .and_then(endpoint)
            .into_iter()
            .chain(replicas())
            .collect(),
        Target::Member(name) if Some(name.as_str()) == primary => {
            if observation(observed, name).reachable {
                endpoint(name).into_iter().collect()
            } else {
                Vec::new()
            }
        }
        Target::Member(name) => {
            if serves_reads(observed, primary, name, max_lag) {
                endpoint(name).into_iter().collect()
            } else {
                Vec::new()
            }
        }
    };
    if chosen.is_empty() && vn.target != Target::Primary {
        fallback()
    } else {
        chosen
    }
}
