//! Who replicates from whom: explicit upstreams, then each zone's gateway under `zoneAware`, then the primary; with the reason for each. Pure.
//!
//! Under `zoneAware`, each zone other than the primary's has one gateway, the only member that
//! streams across zones; the zone's other members stream from it. The gateway is chosen by
//! the seed rule: among its zone's reachable, fully synced replicas with no explicit upstream,
//! the highest priority, then the lowest name. A zone with no such replica yet (a new
//! cluster, a zone coming back) takes the first by the same order among the members that
//! answer, then those whose host answers, so that its others wait for one copy across zones
//! instead of each pulling their own.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::candidate::{cluster_identity, observation, same_data_set};
use crate::{
    api::{Member, Role},
    core::{
        desired::Desired,
        observed::{MemberObservation, Observed},
    },
};

/// Whom one member should replicate from, and why.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Placement {
    pub member: String,
    /// None for the primary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    /// "gateway of zone eu-west-1b"
    pub why: String,
}

impl Placement {
    /// "orders-d follows orders-c: gateway of zone eu-west-1b"
    pub fn sentence(&self) -> String {
        match &self.upstream {
            Some(from) => format!("{} follows {from}: {}", self.member, self.why),
            None => format!("{} {}", self.member, self.why),
        }
    }
}

/// The zone's gateway and how it was chosen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gateway {
    pub member: String,
    /// "gateway of zone eu-west-1b", as its followers see it.
    pub role: String,
    /// The role plus why members before it in the seed order were passed over, if any.
    pub why: String,
}

/// How fit a member is to carry its zone's stream, best first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Fitness {
    /// Reachable, a replica, fully synced.
    Synced,
    /// Its server answers, but it is not yet a synced replica.
    Answers,
    /// Its server is down, but its host answers and can restore it.
    HostAnswers,
    /// Nothing of it answers.
    Silent,
}

fn fitness(o: &MemberObservation) -> Fitness {
    if o.reachable && o.role == Some(Role::Replica) && !o.syncing {
        Fitness::Synced
    } else if o.reachable {
        Fitness::Answers
    } else if o.host.agent().is_some_and(|h| h.reachable) {
        Fitness::HostAnswers
    } else {
        Fitness::Silent
    }
}

/// Why a member did not qualify as a synced replica.
fn shortfall(o: &MemberObservation) -> &'static str {
    if !o.reachable {
        "does not answer"
    } else if o.syncing {
        "is loading a full copy"
    } else {
        "is not yet a replica"
    }
}

/// The gateway of every zone except the primary's, by zone. Empty unless the spec is
/// `zoneAware`. A zone whose members all hold another data set has none.
pub fn gateways(
    desired: &Desired,
    observed: &Observed,
    primary: &str,
) -> BTreeMap<String, Gateway> {
    let mut out = BTreeMap::new();
    if !desired.spec.zone_aware() {
        return out;
    }
    let primary_zone = desired.member(primary).and_then(|m| m.zone.as_deref());
    let identity = cluster_identity(observed, primary);
    let mut by_zone: BTreeMap<&str, Vec<&Member>> = BTreeMap::new();
    for m in &desired.spec.members {
        if let Some(zone) = m.zone.as_deref()
            && Some(zone) != primary_zone
            && m.name != primary
            && m.upstream.is_none()
            && same_data_set(observation(observed, &m.name), identity)
        {
            by_zone.entry(zone).or_default().push(m);
        }
    }
    for (zone, mut members) in by_zone {
        let rank = |m: &Member| {
            (
                fitness(observation(observed, &m.name)),
                std::cmp::Reverse(m.priority),
                m.name.clone(),
            )
        };
        members.sort_by_key(|m| rank(m));
        let chosen = members[0];
        let best = fitness(observation(observed, &chosen.name));
        // Members the seed order puts first, passed over because they are less fit.
        let seed = |m: &Member| (std::cmp::Reverse(m.priority), m.name.clone());
        let passed_over: Vec<String> = members
            .iter()
            .filter(|m| seed(m) < seed(chosen))
            .map(|m| format!("{} {}", m.name, shortfall(observation(observed, &m.name))))
            .collect();
        let role = match best {
            Fitness::Synced => format!("gateway of zone {zone}"),
            Fitness::Answers => {
                format!("gateway of zone {zone}, until one of its replicas is fully synced")
            }
            Fitness::HostAnswers | Fitness::Silent => {
                format!("gateway of zone {zone}, none of whose members answers yet")
            }
        };
        let why = if passed_over.is_empty() || best != Fitness::Synced {
            role.clone()
        } else {
            format!("{role} ({})", passed_over.join(", "))
        };
        out.insert(
            zone.to_string(),
            Gateway {
                member: chosen.name.clone(),
                role,
                why,
            },
        );
    }
    out
}

/// Whom every member replicates from (the primary included, with no upstream), in spec order.
pub fn layout(desired: &Desired, observed: &Observed, primary: &str) -> Vec<Placement> {
    let gateways = gateways(desired, observed, primary);
    desired
        .spec
        .members
        .iter()
        .map(|m| placement(desired, observed, primary, &gateways, m))
        .collect()
}

fn placement(
    desired: &Desired,
    observed: &Observed,
    primary: &str,
    gateways: &BTreeMap<String, Gateway>,
    member: &Member,
) -> Placement {
    let place = |upstream: &str, why: String| Placement {
        member: member.name.clone(),
        upstream: Some(upstream.to_string()),
        why,
    };
    if member.name == primary {
        let why = match &member.zone {
            Some(zone) => format!("is the primary, in zone {zone}"),
            None => "is the primary".to_string(),
        };
        return Placement {
            member: member.name.clone(),
            upstream: None,
            why,
        };
    }
    // An explicit upstream wins while it can serve; otherwise the policy applies, saying so.
    let mut detour = String::new();
    if let Some(up) = member.upstream.as_deref().filter(|up| *up != member.name) {
        if up == primary {
            return place(primary, "its upstream in the spec".into());
        }
        let o = observation(observed, up);
        if o.reachable && !o.syncing {
            return place(up, "its upstream in the spec".into());
        }
        detour = format!("its upstream in the spec, {up}, {}; ", shortfall(o));
    }
    let primary_zone = desired.member(primary).and_then(|m| m.zone.as_deref());
    match member.zone.as_deref() {
        Some(zone) if desired.spec.zone_aware() && Some(zone) != primary_zone => {
            match gateways.get(zone) {
                Some(g) if g.member == member.name => place(primary, format!("{detour}{}", g.why)),
                Some(g) => place(&g.member, format!("{detour}{}", g.role)),
                None => place(
                    primary,
                    format!("{detour}the primary, as zone {zone} has no gateway"),
                ),
            }
        }
        Some(zone) if desired.spec.zone_aware() => {
            place(primary, format!("{detour}the primary, in its zone {zone}"))
        }
        _ => place(primary, format!("{detour}the primary")),
    }
}
