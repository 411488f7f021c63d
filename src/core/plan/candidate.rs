//! Choosing whom to promote when the master is gone: eligibility, the RPO gate and a deterministic order. Pure.

use crate::{
    api::{ReplicationMode, Role, human_bytes},
    core::{
        desired::Desired,
        observed::{MemberObservation, Observed},
    },
};

/// Why one member can or cannot be promoted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assessment {
    pub member: String,
    pub verdict: Verdict,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Eligible {
        offset: u64,
        lag: u64,
        priority: u32,
    },
    Refused(String),
}

/// The outcome of candidate selection: who, why, and why not the others.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selection {
    pub chosen: Option<String>,
    /// Why `chosen` won, for the plan's explanation.
    pub why: String,
    pub assessments: Vec<Assessment>,
}

impl Selection {
    /// "orders-b: lag 784 MiB exceeds maxLag 1 MiB; orders-c: unreachable"
    pub fn refusals(&self) -> String {
        let parts: Vec<String> = self
            .assessments
            .iter()
            .filter_map(|a| match &a.verdict {
                Verdict::Refused(why) => Some(format!("{}: {why}", a.member)),
                Verdict::Eligible { .. } => None,
            })
            .collect();
        if parts.is_empty() {
            "the cluster has no other member".to_string()
        } else {
            parts.join("; ")
        }
    }
}

static UNKNOWN: MemberObservation = MemberObservation {
    reachable: false,
    unreachable_since: None,
    role: None,
    upstream: None,
    durable: None,
    applied: None,
    history: None,
    identity: None,
    link_up: None,
    read_only: None,
    syncing: false,
    guarded: None,
    copy_needed_by: Vec::new(),
    refused: false,
    reached_by: Vec::new(),
    host: crate::core::observed::HostAccess::Engine,
    error: None,
    error_kind: None,
    replay_age_ms: None,
    archive: None,
};

/// An observation, or "never seen" for a member that has not been probed.
pub fn observation<'a>(observed: &'a Observed, member: &str) -> &'a MemberObservation {
    observed.members.get(member).unwrap_or(&UNKNOWN)
}

/// Rank every member except `failed` as a replacement for it, by durable position: what a
/// member holds even if it crashed too.
///
/// Only reachable, fully synced replicas of the cluster's data set with priority > 0 and lag
/// within `maxLag` qualify. The standby wins if it qualifies; otherwise a replica in the
/// earliest of `failover.preferredZones`, then the furthest durable position, then highest
/// priority, then lowest name. In sync mode only the most up-to-date
/// replicas qualify, and nobody does while so many replicas are unreachable that an
/// acknowledged write may exist only on them.
pub fn select(desired: &Desired, observed: &Observed, failed: &str) -> Selection {
    let identity = cluster_identity(observed, failed);
    let spec = &desired.spec;
    let others: Vec<_> = spec.members.iter().filter(|m| m.name != failed).collect();
    let reference = others
        .iter()
        .map(|m| observation(observed, &m.name))
        .filter(|o| o.is_replica())
        .filter_map(|o| o.durable)
        .chain(observation(observed, failed).durable)
        .max()
        .unwrap_or(0);
    let max_lag = spec.failover.max_lag.bytes();
    let sync = spec.replication.mode == ReplicationMode::Sync;
    let best_replica_offset = others
        .iter()
        .map(|m| observation(observed, &m.name))
        .filter(|o| o.is_replica() && !o.syncing && same_data_set(o, identity))
        .filter_map(|o| o.durable)
        .max();
    let unreachable: Vec<&str> = others
        .iter()
        .filter(|m| !observation(observed, &m.name).reachable)
        .map(|m| m.name.as_str())
        .collect();
    let sync_gate = (sync && unreachable.len() >= spec.replication.min_sync_replicas as usize)
        .then(|| {
            format!(
                "sync replication: {} unreachable and may hold acknowledged writes the others lack",
                unreachable.join(", ")
            )
        });

    let assessments: Vec<Assessment> = others
        .iter()
        .map(|m| {
            let o = observation(observed, &m.name);
            let verdict = if m.priority == 0 {
                Verdict::Refused("priority 0 (never promoted)".into())
            } else if !o.reachable {
                Verdict::Refused("unreachable".into())
            } else if o.role != Some(Role::Replica) {
                Verdict::Refused(match o.role {
                    Some(Role::Master) => "not a replica of the failed master (it is a master itself)".into(),
                    _ => "role unknown".into(),
                })
            } else if o.syncing {
                Verdict::Refused("still loading a full sync (its data is partial)".into())
            } else if !same_data_set(o, identity) {
                Verdict::Refused(foreign(o, identity))
            } else if let Some(gate) = &sync_gate {
                Verdict::Refused(gate.clone())
            } else {
                match o.durable {
                    None => Verdict::Refused("durable position unknown".into()),
                    Some(offset) => {
                        let lag = reference.saturating_sub(offset);
                        if lag > max_lag {
                            Verdict::Refused(format!(
                                "lag {} exceeds maxLag {}",
                                human_bytes(lag),
                                human_bytes(max_lag)
                            ))
                        } else if sync && Some(offset) < best_replica_offset {
                            Verdict::Refused(format!(
                                "{} behind the most up-to-date replica (sync mode promotes only a replica holding every acknowledged write)",
                                human_bytes(best_replica_offset.unwrap_or(0) - offset)
                            ))
                        } else {
                            Verdict::Eligible {
                                offset,
                                lag,
                                priority: m.priority,
                            }
                        }
                    }
                }
            };
            Assessment {
                member: m.name.clone(),
                verdict,
            }
        })
        .collect();

    let standby = spec.failover.standby.as_deref();
    let preferred = &spec.failover.preferred_zones;
    let zone_of = |member: &str| desired.member(member).and_then(|m| m.zone.as_deref());
    // Where a member's zone stands in `failover.preferredZones`; unlisted zones come last.
    let zone_rank = |member: &str| {
        zone_of(member)
            .and_then(|z| preferred.iter().position(|p| p == z))
            .unwrap_or(preferred.len())
    };
    let eligible: Vec<(&Assessment, u64, u64, u32)> = assessments
        .iter()
        .filter_map(|a| match a.verdict {
            Verdict::Eligible {
                offset,
                lag,
                priority,
            } => Some((a, offset, lag, priority)),
            Verdict::Refused(_) => None,
        })
        .collect();
    let is_standby = |a: &Assessment| Some(a.member.as_str()) == standby;
    // Standby first, then (when `zones`) the preferred zone, then furthest position, highest
    // priority, lowest name.
    let rank = |zones: bool| {
        move |(a, offset, _, priority): &&(&Assessment, u64, u64, u32)| {
            (
                !is_standby(a),
                if zones { zone_rank(&a.member) } else { 0 },
                std::cmp::Reverse(*offset),
                std::cmp::Reverse(*priority),
                a.member.clone(),
            )
        }
    };
    let chosen = eligible.iter().min_by_key(rank(true));
    // Who would have won without the zone preference, to say when a zone decided it.
    let unzoned = eligible.iter().min_by_key(rank(false));
    let (chosen, why) = match chosen {
        Some((a, offset, lag, priority)) => {
            let role = if is_standby(a) {
                "the designated standby".to_string()
            } else if zone_rank(&a.member) < preferred.len() {
                format!(
                    "the most up-to-date eligible replica in zone {}, the first of failover.preferredZones with one",
                    zone_of(&a.member).unwrap_or_default()
                )
            } else {
                "the most up-to-date eligible replica".to_string()
            };
            let mut why = format!(
                "{} is {role} (position {offset}, lag {}, priority {priority})",
                a.member,
                human_bytes(*lag)
            );
            if let Some((other, other_offset, _, _)) = unzoned
                && other.member != a.member
            {
                why.push_str(&format!(
                    "; the zone decided it: {} is at position {other_offset} in zone {}, which failover.preferredZones ranks after",
                    other.member,
                    zone_of(&other.member).unwrap_or("(none)")
                ));
            }
            (Some(a.member.clone()), why)
        }
        None => (None, String::new()),
    };
    Selection {
        chosen,
        why,
        assessments,
    }
}

/// The data set the cluster holds: the journal's record, else what `reference` (the primary)
/// reports. `None` when the engine has no such notion.
pub fn cluster_identity<'a>(observed: &'a Observed, reference: &str) -> Option<&'a str> {
    observed
        .journal
        .identity
        .as_deref()
        .or(observation(observed, reference).identity.as_deref())
}

/// The data set `o` holds: what its server says, else what its host reads while it is down.
fn member_identity(o: &MemberObservation) -> Option<&str> {
    o.identity
        .as_deref()
        .or_else(|| o.host.agent().and_then(|h| h.identity.as_deref()))
}

/// Whether `o` holds the cluster's data set, as far as anyone can tell.
pub fn same_data_set(o: &MemberObservation, identity: Option<&str>) -> bool {
    match (member_identity(o), identity) {
        (Some(own), Some(cluster)) => own == cluster,
        _ => true,
    }
}

/// "holds another data set (identity X; the cluster's is Y)"
pub fn foreign(o: &MemberObservation, identity: Option<&str>) -> String {
    let own = member_identity(o).unwrap_or("?");
    format!(
        "holds another data set (identity {own}; the cluster's is {})",
        identity.unwrap_or("?")
    )
}

/// Can `member` be switched to while the master is healthy? Catch-up is awaited later, so lag
/// does not matter here; reachability, role, data set and completeness do.
pub fn switchover_refusal(observed: &Observed, member: &str, primary: &str) -> Option<String> {
    let o = observation(observed, member);
    let identity = cluster_identity(observed, primary);
    if !same_data_set(o, identity) {
        Some(format!("{member} {}", foreign(o, identity)))
    } else if !o.reachable {
        Some(format!("{member} is unreachable"))
    } else if o.role != Some(Role::Replica) {
        Some(format!("{member} is not a replica of the current primary"))
    } else if o.syncing {
        Some(format!("{member} is still loading a full sync"))
    } else {
        None
    }
}
