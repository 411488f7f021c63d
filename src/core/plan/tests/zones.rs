//! Zone tables: gateways chosen, re-formed after a gateway or the primary fails, explicit upstreams kept; failover and reads by zone; proptest invariants of the layout.

use std::collections::BTreeMap;

use pretty_assertions::assert_eq;

use super::*;
use crate::core::{
    plan::zones::{Placement, layout},
    routes::{Endpoint, for_zone, zone_hints},
};

/// Six members in three zones, primary a: a, b in zone-a; c, d in zone-b; e, f in zone-c.
/// Priority 1 everywhere but a (2); detectAfter 1s, maxLag 1Mi; a read-only name.
fn zoned() -> Desired {
    let yaml = r#"
name: orders
spec:
  engine: redis
  primary: a
  members:
    - { name: a, address: "10.0.0.1:6379", priority: 2, zone: zone-a }
    - { name: b, address: "10.0.0.2:6379", zone: zone-a }
    - { name: c, address: "10.0.1.3:6379", zone: zone-b }
    - { name: d, address: "10.0.1.4:6379", zone: zone-b }
    - { name: e, address: "10.0.2.5:6379", zone: zone-c }
    - { name: f, address: "10.0.2.6:6379", zone: zone-c }
  failover: { detectAfter: 1s, maxLag: 1Mi, cooldown: 1m }
virtualNames:
  - name: ro
    spec: { cluster: orders, target: replicas, fallback: none }
"#;
    serde_yaml::from_str(yaml).unwrap()
}

/// `primary` master, every other member a replica of the upstream given for it.
fn world(primary: &str, upstreams: &[(&str, &str)]) -> Observed {
    let mut observed = Observed::default();
    observed.members.insert(primary.into(), master(1000));
    for (member, from) in upstreams {
        observed
            .members
            .insert(member.to_string(), replica(from, 1000));
    }
    let replicas: Vec<String> = upstreams.iter().map(|(m, _)| m.to_string()).collect();
    observed.virtual_names.insert("ro".into(), replicas);
    observed.journal = adopted(primary);
    observed
}

/// The cascade as it should be around a: c and e carry their zones' streams.
fn cascaded() -> Observed {
    world(
        "a",
        &[("b", "a"), ("c", "a"), ("d", "c"), ("e", "a"), ("f", "e")],
    )
}

/// The plan's actions on members, leaving out virtual names.
fn member_actions(p: &Plan) -> Vec<Action> {
    actions(p)
        .into_iter()
        .filter(|a| !matches!(a, Action::RetargetVirtualName { .. }))
        .collect()
}

fn upstreams(p: &Plan) -> BTreeMap<String, Option<String>> {
    p.placements
        .iter()
        .map(|pl| (pl.member.clone(), pl.upstream.clone()))
        .collect()
}

fn placement<'a>(p: &'a Plan, member: &str) -> &'a Placement {
    p.placements.iter().find(|pl| pl.member == member).unwrap()
}

/// Streams whose two ends are in different zones, once `placements` are in effect.
fn cross_zone(desired: &Desired, placements: &[Placement]) -> Vec<(String, String)> {
    let zone = |m: &str| desired.member(m).and_then(|m| m.zone.clone());
    placements
        .iter()
        .filter_map(|p| Some((p.member.clone(), p.upstream.clone()?)))
        .filter(|(m, up)| zone(m) != zone(up))
        .collect()
}

#[test]
fn the_gateway_of_each_zone_is_its_first_synced_replica_by_priority_then_name() {
    // Everyone streams from a, as after adoption: each remote zone keeps one stream.
    let observed = world(
        "a",
        &[("b", "a"), ("c", "a"), ("d", "a"), ("e", "a"), ("f", "a")],
    );
    let p = plan(&zoned(), &observed, at(0.0));
    assert_eq!(actions(&p), vec![replicate("d", "c"), replicate("f", "e")]);
    assert!(
        p.actions[0]
            .why
            .contains("it should follow c: gateway of zone zone-b"),
        "{}",
        p.actions[0].why
    );
    assert_eq!(
        placement(&p, "d").sentence(),
        "d follows c: gateway of zone zone-b"
    );
    assert_eq!(
        placement(&p, "c").sentence(),
        "c follows a: gateway of zone zone-b"
    );
    assert_eq!(
        placement(&p, "b").sentence(),
        "b follows a: the primary, in its zone zone-a"
    );
    assert_eq!(
        placement(&p, "a").sentence(),
        "a is the primary, in zone zone-a"
    );
    assert_eq!(
        cross_zone(&zoned(), &p.placements),
        vec![("c".into(), "a".into()), ("e".into(), "a".into())]
    );

    // A higher priority wins before the name.
    let mut desired = zoned();
    desired.spec.members[3].priority = 3;
    let p = plan(&desired, &observed, at(0.0));
    assert_eq!(actions(&p), vec![replicate("c", "d"), replicate("f", "e")]);
}

#[test]
fn the_steady_cascade_needs_nothing_and_is_ready() {
    let p = plan(&zoned(), &cascaded(), at(0.0));
    assert_eq!(actions(&p), vec![]);
    assert!(finding(&p, findings::READY).status);
    assert_eq!(
        upstreams(&p),
        BTreeMap::from([
            ("a".into(), None),
            ("b".into(), Some("a".into())),
            ("c".into(), Some("a".into())),
            ("d".into(), Some("c".into())),
            ("e".into(), Some("a".into())),
            ("f".into(), Some("e".into())),
        ])
    );
}

#[test]
fn a_failed_gateway_is_replaced_in_the_round_that_notices() {
    let mut observed = cascaded();
    down(&mut observed, "c", -0.1);
    let p = plan(&zoned(), &observed, at(0.0));
    assert_eq!(member_actions(&p), vec![replicate("d", "a")]);
    assert_eq!(
        placement(&p, "d").sentence(),
        "d follows a: gateway of zone zone-b (c does not answer)"
    );
    // c, when it answers again, follows its zone's gateway until it is a synced replica.
    assert_eq!(placement(&p, "c").upstream.as_deref(), Some("d"));
    assert_eq!(cross_zone(&zoned(), &p.placements).len(), 2);

    // c comes back as a stale master (a restarted Redis): d stays gateway, c follows it.
    let mut observed = world("a", &[("b", "a"), ("d", "a"), ("e", "a"), ("f", "e")]);
    observed.members.insert(
        "c".into(),
        MemberObservation {
            read_only: Some(true),
            ..master(900)
        },
    );
    let p = plan(&zoned(), &observed, at(0.0));
    assert_eq!(actions(&p), vec![restart("c", "d")]);

    // Once c is a synced replica again, the seed rule gives it the zone back.
    let observed = world(
        "a",
        &[("b", "a"), ("c", "d"), ("d", "a"), ("e", "a"), ("f", "e")],
    );
    let p = plan(&zoned(), &observed, at(0.0));
    assert_eq!(actions(&p), vec![replicate("c", "a"), replicate("d", "c")]);
}

#[test]
fn a_zone_with_no_synced_replica_waits_for_one_copy_across_zones() {
    // A new cluster: c and d hold nothing yet and are masters.
    let mut observed = world("a", &[("b", "a"), ("e", "a"), ("f", "e")]);
    for m in ["c", "d"] {
        observed.members.insert(
            m.into(),
            MemberObservation {
                read_only: Some(true),
                durable: Some(0),
                ..master(0)
            },
        );
    }
    let p = plan(&zoned(), &observed, at(0.0));
    assert_eq!(actions(&p), vec![restart("c", "a"), restart("d", "c")]);
    assert_eq!(
        placement(&p, "c").why,
        "gateway of zone zone-b, until one of its replicas is fully synced"
    );
}

#[test]
fn after_a_failover_the_cascade_re_forms_around_the_new_primary_zone() {
    // c was promoted (epoch 2); a is gone; b and e lost their link to a.
    let mut observed = cascaded();
    down(&mut observed, "a", -5.0);
    observed.members.insert("c".into(), master(1000));
    observed.journal.current_primary = Some("c".into());
    observed.journal.epoch = 2;
    let p = plan(&zoned(), &observed, at(0.0));
    assert_eq!(
        member_actions(&p),
        vec![replicate("b", "c"), replicate("e", "c")]
    );
    assert_eq!(
        placement(&p, "d").sentence(),
        "d follows c: the primary, in its zone zone-b"
    );
    assert_eq!(
        placement(&p, "b").sentence(),
        "b follows c: gateway of zone zone-a (a does not answer)"
    );
    assert_eq!(placement(&p, "f").upstream.as_deref(), Some("e"));
    assert_eq!(
        cross_zone(&zoned(), &p.placements),
        vec![("b".into(), "c".into()), ("e".into(), "c".into())]
    );
    // a, when it comes back, follows its zone's new gateway.
    assert_eq!(placement(&p, "a").upstream.as_deref(), Some("b"));
}

#[test]
fn an_explicit_upstream_wins_over_the_zones_and_falls_back_to_them() {
    let mut desired = zoned();
    desired.spec.members[5].upstream = Some("c".into()); // f, in zone-c, from c in zone-b
    let observed = world(
        "a",
        &[("b", "a"), ("c", "a"), ("d", "c"), ("e", "a"), ("f", "c")],
    );
    let p = plan(&desired, &observed, at(0.0));
    assert_eq!(actions(&p), vec![]);
    assert_eq!(
        placement(&p, "f").sentence(),
        "f follows c: its upstream in the spec"
    );
    assert_eq!(placement(&p, "e").upstream.as_deref(), Some("a"));

    // Its upstream gone, f follows its own zone's gateway.
    let mut observed = observed;
    down(&mut observed, "c", -0.1);
    let p = plan(&desired, &observed, at(0.0));
    assert!(
        actions(&p).contains(&replicate("f", "e")),
        "{:?}",
        actions(&p)
    );
    assert_eq!(
        placement(&p, "f").sentence(),
        "f follows e: its upstream in the spec, c, does not answer; gateway of zone zone-c"
    );

    // A member with an explicit upstream is never a gateway, whatever its name.
    let mut desired = zoned();
    desired.spec.members[2].upstream = Some("a".into()); // c
    let p = plan(&desired, &cascaded(), at(0.0));
    assert_eq!(
        placement(&p, "d").sentence(),
        "d follows a: gateway of zone zone-b"
    );
    assert_eq!(
        placement(&p, "c").sentence(),
        "c follows a: its upstream in the spec"
    );
}

#[test]
fn direct_topology_ignores_zones_for_replication() {
    let mut desired = zoned();
    desired.spec.replication.topology = Some(crate::api::Topology::Direct);
    let p = plan(&desired, &cascaded(), at(0.0));
    assert_eq!(actions(&p), vec![replicate("d", "a"), replicate("f", "a")]);
    assert_eq!(placement(&p, "d").sentence(), "d follows a: the primary");
}

// ---------------------------------------------------------------- failover by zone

/// a died 2s ago; every replica streams from a directly, at the given positions.
fn primary_lost(offsets: [u64; 5]) -> Observed {
    let mut observed = world(
        "a",
        &[("b", "a"), ("c", "a"), ("d", "a"), ("e", "a"), ("f", "a")],
    );
    for (m, offset) in ["b", "c", "d", "e", "f"].iter().zip(offsets) {
        let o = observed.members.get_mut(*m).unwrap();
        o.durable = Some(offset);
        o.link_up = Some(false);
    }
    down(&mut observed, "a", -2.0);
    observed
}

#[test]
fn failover_prefers_the_earliest_preferred_zone_within_the_gates() {
    let mut desired = zoned();
    desired.spec.replication.topology = Some(crate::api::Topology::Direct);
    let observed = primary_lost([1000, 900, 950, 1000, 800]);

    // Without a preference: the furthest position, then the name.
    assert_eq!(
        promotions(&plan(&desired, &observed, at(0.0))),
        vec![("b".into(), 2)]
    );

    // zone-b first: d is the most up-to-date there, although b and e are further.
    desired.spec.failover.preferred_zones = vec!["zone-b".into(), "zone-c".into()];
    let p = plan(&desired, &observed, at(0.0));
    assert_eq!(promotions(&p), vec![("d".into(), 2)]);
    let why = &p.journal.operation.as_ref().unwrap().reason;
    assert!(
        why.contains("d is the most up-to-date eligible replica in zone zone-b, the first of failover.preferredZones with one")
            && why.contains("the zone decided it: b is at position 1000 in zone zone-a"),
        "{why}"
    );

    // The RPO gate comes first: d beyond maxLag is refused, and zone-c is next.
    let observed = primary_lost([3_000_000, 0, 1_000_000, 3_000_000, 0]);
    let p = plan(&desired, &observed, at(0.0));
    assert_eq!(promotions(&p), vec![("e".into(), 2)]);

    // The standby is still tried first.
    desired.spec.failover.standby = Some("f".into());
    let observed = primary_lost([1000, 900, 950, 1000, 990]);
    assert_eq!(
        promotions(&plan(&desired, &observed, at(0.0))),
        vec![("f".into(), 2)]
    );
}

#[test]
fn in_sync_mode_only_replicas_holding_every_acknowledged_write_are_ranked_by_zone() {
    let mut desired = zoned();
    desired.spec.replication.topology = Some(crate::api::Topology::Direct);
    desired.spec.replication.mode = ReplicationMode::Sync;
    desired.spec.failover.preferred_zones = vec!["zone-b".into()];
    // d in zone-b is behind: an acknowledged write may exist only on b and e.
    let observed = primary_lost([1000, 900, 950, 1000, 800]);
    let p = plan(&desired, &observed, at(0.0));
    assert_eq!(promotions(&p), vec![("b".into(), 2)]);
    // Equally up to date, the zone decides.
    let observed = primary_lost([1000, 900, 1000, 1000, 800]);
    assert_eq!(
        promotions(&plan(&desired, &observed, at(0.0))),
        vec![("d".into(), 2)]
    );
}

// ---------------------------------------------------------------- reads by zone

fn endpoint(member: &str, zone: &str) -> Endpoint {
    Endpoint {
        member: member.into(),
        address: format!("{member}:6379"),
        zone: Some(zone.into()),
    }
}

#[test]
fn readers_stay_in_their_zone_then_follow_the_preferred_zones_then_take_any() {
    let endpoints = vec![
        endpoint("b", "zone-a"),
        endpoint("d", "zone-b"),
        endpoint("f", "zone-c"),
        endpoint("e", "zone-c"),
    ];
    let members =
        |list: Vec<&Endpoint>| -> Vec<String> { list.iter().map(|e| e.member.clone()).collect() };
    let preferred = vec!["zone-b".to_string()];
    assert_eq!(
        members(for_zone(&endpoints, Some("zone-c"), &preferred)),
        vec!["f", "e"]
    );
    assert_eq!(
        members(for_zone(&endpoints, Some("zone-x"), &preferred)),
        vec!["d"]
    );
    assert_eq!(members(for_zone(&endpoints, None, &[])).len(), 4);

    // Hints for Kubernetes: each endpoint serves its own zone, and zone-d (which has no
    // endpoint) is sent to zone-b.
    let zones: Vec<String> = ["zone-a", "zone-b", "zone-c", "zone-d"]
        .iter()
        .map(|z| z.to_string())
        .collect();
    assert_eq!(
        zone_hints(&endpoints, &zones, &preferred),
        vec![
            vec!["zone-a".to_string()],
            vec!["zone-b".to_string(), "zone-d".to_string()],
            vec!["zone-c".to_string()],
            vec!["zone-c".to_string()],
        ]
    );
}

#[test]
fn read_endpoints_carry_their_members_zones() {
    let mut observed = cascaded();
    observed.virtual_names.insert("ro".into(), vec![]);
    let p = plan(&zoned(), &observed, at(0.0));
    let zones: Vec<Option<String>> = p
        .actions
        .iter()
        .find_map(|a| match &a.action {
            Action::RetargetVirtualName { endpoints, .. } => {
                Some(endpoints.iter().map(|e| e.zone.clone()).collect())
            }
            _ => None,
        })
        .unwrap();
    assert_eq!(
        zones,
        ["zone-a", "zone-b", "zone-b", "zone-c", "zone-c"]
            .map(|z| Some(z.to_string()))
            .to_vec()
    );
}

// ---------------------------------------------------------------- invariants

mod invariants {
    use proptest::prelude::*;

    use super::*;

    const NAMES: [&str; 8] = ["a", "b", "c", "d", "e", "f", "g", "h"];

    /// Two to eight members spread over up to three zones, random priorities, any primary.
    fn zoned_world() -> impl Strategy<Value = (Desired, Observed, String)> {
        (
            2usize..=8,
            prop::collection::vec((0usize..3, 0u32..3), 8),
            prop::collection::vec(
                (
                    any::<bool>(),
                    prop::option::of(prop_oneof![Just(Role::Master), Just(Role::Replica)]),
                    any::<bool>(),
                    0usize..8,
                ),
                8,
            ),
            0usize..8,
        )
            .prop_map(|(n, shape, seen, primary)| {
                let mut desired = zoned();
                desired.spec.members = (0..n)
                    .map(|i| crate::api::Member {
                        name: NAMES[i].into(),
                        address: format!("10.0.0.{}:6379", i + 1),
                        priority: shape[i].1,
                        upstream: None,
                        zone: Some(format!("zone-{}", shape[i].0)),
                        agent: None,
                    })
                    .collect();
                let primary = NAMES[primary % n].to_string();
                let mut observed = Observed::default();
                for (i, (reachable, role, syncing, up)) in seen.into_iter().take(n).enumerate() {
                    observed.members.insert(
                        NAMES[i].into(),
                        MemberObservation {
                            reachable,
                            role,
                            syncing,
                            upstream: Some(NAMES[up % n].into()),
                            ..replica("a", 1000)
                        },
                    );
                }
                (desired, observed, primary)
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn the_layout_is_acyclic_crosses_each_zone_once_and_is_deterministic(
            (desired, observed, primary) in zoned_world()
        ) {
            let placements = layout(&desired, &observed, &primary);
            let upstream: BTreeMap<&str, &str> = placements
                .iter()
                .filter_map(|p| Some((p.member.as_str(), p.upstream.as_deref()?)))
                .collect();

            // Every chain ends at the primary within as many steps as there are members.
            for p in &placements {
                let mut at = p.member.as_str();
                let mut steps = 0;
                while let Some(next) = upstream.get(at) {
                    at = next;
                    steps += 1;
                    prop_assert!(steps <= placements.len(), "cycle through {}", p.member);
                }
                prop_assert_eq!(at, primary.as_str());
            }

            // One stream into each zone but the primary's, none into the primary's.
            let zone = |m: &str| desired.member(m).and_then(|m| m.zone.clone()).unwrap();
            let mut into: BTreeMap<String, usize> = BTreeMap::new();
            for (m, up) in &upstream {
                if zone(m) != zone(up) {
                    *into.entry(zone(m)).or_default() += 1;
                }
            }
            let remote: std::collections::BTreeSet<String> = desired
                .spec
                .members
                .iter()
                .filter_map(|m| m.zone.clone())
                .filter(|z| *z != zone(&primary))
                .collect();
            prop_assert_eq!(into.keys().cloned().collect::<std::collections::BTreeSet<_>>(), remote);
            prop_assert!(into.values().all(|n| *n == 1), "{:?}", into);

            // The same whatever the order members are listed in, and on every call.
            let mut reordered = desired.clone();
            reordered.spec.members.reverse();
            let mut again = layout(&reordered, &observed, &primary);
            again.sort_by(|a, b| a.member.cmp(&b.member));
            let mut sorted = placements.clone();
            sorted.sort_by(|a, b| a.member.cmp(&b.member));
            prop_assert_eq!(sorted, again);
            prop_assert_eq!(&placements, &layout(&desired, &observed, &primary));
        }
    }
}
