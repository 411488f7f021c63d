//! The rules for zones: label values, members the topology needs a zone on, preferred zones that exist and can serve, and sync mode under cascading. Pure.

use std::collections::BTreeSet;

use super::Out;
use crate::{
    api::{ReplicationClusterSpec, ReplicationMode, Target, Topology, VirtualNameSpec},
    bounded::{self, quoted},
};

/// Most entries in a `preferredZones` list (the CRD's `maxItems`).
pub const MAX_PREFERRED_ZONES: usize = 16;

/// Why `zone` is not a usable zone name (a Kubernetes label value), if it is not.
pub fn zone_problem(zone: &str) -> Option<String> {
    let fits = !zone.is_empty()
        && zone.len() <= 63
        && zone
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && zone.starts_with(|c: char| c.is_ascii_alphanumeric())
        && zone.ends_with(|c: char| c.is_ascii_alphanumeric());
    (!fits).then(|| {
        format!(
            "{} is not a label value: letters, digits, '-', '_' and '.', starting and ending with a letter or digit, at most 63 characters",
            quoted(zone)
        )
    })
}

/// The zones members are in, sorted.
fn member_zones(spec: &ReplicationClusterSpec) -> BTreeSet<&str> {
    spec.members
        .iter()
        .filter_map(|m| m.zone.as_deref())
        .collect()
}

/// Check a `preferredZones` list at `path` against the zones members are in.
fn check_preferred(path: &str, preferred: &[String], zones: &BTreeSet<&str>, out: &mut Out<'_>) {
    if preferred.len() > MAX_PREFERRED_ZONES {
        out.fail(
            path,
            format!("{} zones; at most {MAX_PREFERRED_ZONES}", preferred.len()),
        );
        return;
    }
    let known: Vec<&str> = zones.iter().copied().collect();
    for (i, zone) in preferred.iter().enumerate() {
        let at = format!("{path}[{i}]");
        if let Some(problem) = zone_problem(zone) {
            out.fail(at, problem);
        } else if let Some(first) = preferred[..i].iter().position(|z| z == zone) {
            out.fail(
                at,
                format!("{} is listed twice (also [{first}])", quoted(zone)),
            );
        } else if !zones.contains(zone.as_str()) {
            let known = if known.is_empty() {
                "no member has a zone (spec.members[].zone)".to_string()
            } else {
                format!("members are in {}", bounded::list(&known, 16, ", "))
            };
            out.fail(
                at,
                format!("no member is in zone {}: {known}", quoted(zone)),
            );
        }
    }
}

/// Zones on members, `replication.topology`, `failover.preferredZones`, and sync mode under
/// cascading.
pub fn check_cluster(spec: &ReplicationClusterSpec, out: &mut Out<'_>) {
    for (i, m) in spec.members.iter().enumerate() {
        if let Some(problem) = m.zone.as_deref().and_then(zone_problem) {
            out.fail(format!("spec.members[{i}].zone"), problem);
        }
    }
    let zones = member_zones(spec);
    if spec.zone_aware() {
        if zones.is_empty() {
            out.fail(
                "spec.replication.topology",
                "zoneAware needs members with zones (spec.members[].zone), and none has one",
            );
        } else {
            let explicit = spec.replication.topology == Some(Topology::ZoneAware);
            for (i, m) in spec.members.iter().enumerate() {
                if m.zone.is_none() {
                    out.fail(
                        format!("spec.members[{i}].zone"),
                        format!(
                            "missing: replication.topology is zoneAware ({}), so every member needs a zone; set one, or set spec.replication.topology: direct",
                            if explicit { "as set" } else { "the default once any member has a zone" }
                        ),
                    );
                }
            }
        }
    }

    let preferred = &spec.failover.preferred_zones;
    check_preferred("spec.failover.preferredZones", preferred, &zones, out);
    for (i, zone) in preferred.iter().enumerate() {
        let in_zone: Vec<_> = spec
            .members
            .iter()
            .filter(|m| m.zone.as_deref() == Some(zone.as_str()))
            .collect();
        if !in_zone.is_empty() && in_zone.iter().all(|m| m.priority == 0) {
            out.fail(
                format!("spec.failover.preferredZones[{i}]"),
                format!(
                    "every member of zone {} has priority 0 and is never promoted, so preferring it does nothing; raise a priority there or remove the zone",
                    quoted(zone)
                ),
            );
        }
    }

    check_sync_under_cascade(spec, out);
}

/// In sync mode, only replicas streaming straight from the primary acknowledge writes; under
/// `zoneAware` the others stream from their zone's gateway. Writes would block if fewer of
/// them than `minSyncReplicas` remained with any promotable member as primary.
fn check_sync_under_cascade(spec: &ReplicationClusterSpec, out: &mut Out<'_>) {
    if spec.replication.mode != ReplicationMode::Sync || !spec.zone_aware() {
        return;
    }
    let needed = spec.replication.min_sync_replicas as usize;
    let worst = spec
        .members
        .iter()
        .filter(|p| p.priority > 0)
        .map(|p| (direct_replicas(spec, &p.name), p))
        .min_by_key(|(count, p)| (*count, p.name.clone()));
    if let Some((count, p)) = worst
        && count < needed
    {
        out.fail(
            "spec.replication.minSyncReplicas",
            format!(
                "sync mode needs {needed} replica(s) to acknowledge each write, but with {} as primary only {count} stream straight from it under zoneAware topology (its zone's other members and one gateway per other zone); the rest stream from a gateway and cannot acknowledge. Lower minSyncReplicas, or set spec.replication.topology: direct",
                p.name
            ),
        );
    }
}

/// How many members stream straight from `primary` under `zoneAware`: its zone's others, one
/// gateway per other zone, and those whose explicit upstream it is.
fn direct_replicas(spec: &ReplicationClusterSpec, primary: &str) -> usize {
    let primary_zone = spec
        .members
        .iter()
        .find(|m| m.name == primary)
        .and_then(|m| m.zone.as_deref());
    let mut gateway_zones = BTreeSet::new();
    let mut count = 0;
    for m in spec.members.iter().filter(|m| m.name != primary) {
        match (m.upstream.as_deref(), m.zone.as_deref()) {
            (Some(up), _) => count += usize::from(up == primary),
            (None, Some(zone)) if Some(zone) != primary_zone => {
                gateway_zones.insert(zone);
            }
            (None, _) => count += 1,
        }
    }
    count + gateway_zones.len()
}

/// A VirtualName's `preferredZones`: read targets only, zones its cluster's members are in.
pub fn check_virtual_name(
    spec: &VirtualNameSpec,
    cluster: Option<&ReplicationClusterSpec>,
    out: &mut Out<'_>,
) {
    if spec.preferred_zones.is_empty() {
        return;
    }
    if !matches!(spec.target, Target::Replicas | Target::Any) {
        out.fail(
            "spec.preferredZones",
            format!(
                "applies only to targets replicas and any, which can have members in several zones; target {} has one member",
                spec.target
            ),
        );
    }
    match cluster {
        Some(cluster) => check_preferred(
            "spec.preferredZones",
            &spec.preferred_zones,
            &member_zones(cluster),
            out,
        ),
        None => {
            for (i, zone) in spec.preferred_zones.iter().enumerate() {
                if let Some(problem) = zone_problem(zone) {
                    out.fail(format!("spec.preferredZones[{i}]"), problem);
                }
            }
        }
    }
}
