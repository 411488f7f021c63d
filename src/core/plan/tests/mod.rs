//! Table tests for every planner decision, built from small fixtures, plus proptest invariants.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use pretty_assertions::assert_eq;

use super::{Action, Plan, findings, plan};
use crate::{
    api::{Fork, OperationKind, Outcome, ReplicationMode, Role, Target, VirtualNameSpec},
    core::{
        desired::{Desired, NamedVirtualName},
        history::History,
        journal::{Journal, Operation, Step},
        observed::{HostAccess, HostObservation, MemberObservation, Observed},
    },
};

mod zones;

const T0: &str = "2026-01-01T00:00:00Z";

fn t0() -> Timestamp {
    T0.parse().unwrap()
}

fn at(secs: f64) -> Timestamp {
    t0() + SignedDuration::from_secs_f64(secs)
}

/// Three members a (priority 2), b (priority 2, standby) and c (priority 1); primary a;
/// detectAfter 1s, maxLag 1Mi, cooldown 1m; a read-write and a read-only virtual name.
fn cluster() -> Desired {
    let yaml = r#"
name: orders
spec:
  engine: redis
  primary: a
  members:
    - { name: a, address: "10.0.0.1:6379", priority: 2 }
    - { name: b, address: "10.0.0.2:6379", priority: 2 }
    - { name: c, address: "10.0.0.3:6379", priority: 1 }
  failover: { standby: b, detectAfter: 1s, maxLag: 1Mi, cooldown: 1m }
virtualNames:
  - name: rw
    spec: { cluster: orders, target: primary }
  - name: ro
    spec: { cluster: orders, target: replicas, fallback: none }
"#;
    serde_yaml::from_str(yaml).unwrap()
}

/// Every member starts on branch "r1" of the data set's history.
fn on_branch(branch: &str) -> Option<History> {
    Some(History {
        branch: branch.into(),
        forks: Vec::new(),
    })
}

fn master(offset: u64) -> MemberObservation {
    MemberObservation {
        reachable: true,
        role: Some(Role::Master),
        history: on_branch("r1"),
        durable: Some(offset),
        read_only: Some(false),
        ..Default::default()
    }
}

fn replica(of: &str, offset: u64) -> MemberObservation {
    MemberObservation {
        reachable: true,
        role: Some(Role::Replica),
        upstream: Some(of.into()),
        history: on_branch("r1"),
        durable: Some(offset),
        link_up: Some(true),
        read_only: Some(true),
        ..Default::default()
    }
}

/// The cluster as it should be: `primary` master at epoch 1, the others replicating from it,
/// virtual names in place, everything at offset 1000.
fn healthy(primary: &str) -> Observed {
    let mut observed = Observed::default();
    for m in ["a", "b", "c"] {
        let o = if m == primary {
            master(1000)
        } else {
            replica(primary, 1000)
        };
        observed.members.insert(m.into(), o);
    }
    let replicas: Vec<String> = ["a", "b", "c"]
        .iter()
        .filter(|m| **m != primary)
        .map(|m| m.to_string())
        .collect();
    observed
        .virtual_names
        .insert("rw".into(), vec![primary.into()]);
    observed.virtual_names.insert("ro".into(), replicas);
    observed.journal = adopted(primary);
    observed
}

/// The journal of a cluster whose `primary` was promoted at epoch 1, an hour ago.
fn adopted(primary: &str) -> Journal {
    Journal {
        epoch: 1,
        current_primary: Some(primary.into()),
        acknowledged_primary: Some(primary.into()),
        last_promotion_at: Some(at(-3600.0)),
        ..Default::default()
    }
}

/// `member` died: it stopped answering at `since`, and its replicas lost their link to it.
fn down(observed: &mut Observed, member: &str, since: f64) {
    let o = observed.members.get_mut(member).unwrap();
    o.reachable = false;
    o.unreachable_since = Some(at(since));
    o.link_up = None;
    for o in observed.members.values_mut() {
        if o.upstream.as_deref() == Some(member) {
            o.link_up = Some(false);
        }
    }
}

fn actions(plan: &Plan) -> Vec<Action> {
    plan.actions.iter().map(|a| a.action.clone()).collect()
}

fn finding<'a>(plan: &'a Plan, type_: &str) -> &'a findings::Finding {
    plan.findings.iter().find(|f| f.type_ == type_).unwrap()
}

fn promote(member: &str, epoch: u64) -> Action {
    Action::Promote {
        member: member.into(),
        epoch,
    }
}

fn fence(member: &str) -> Action {
    Action::Fence {
        member: member.into(),
    }
}

fn replicate(member: &str, from: &str) -> Action {
    Action::Replicate {
        member: member.into(),
        from: from.into(),
    }
}

/// A master demoted to a replica of `from`, keeping its data.
fn restart(member: &str, from: &str) -> Action {
    Action::Restart {
        member: member.into(),
        from: from.into(),
    }
}

fn retarget(plan: &Plan, name: &str) -> Option<Vec<String>> {
    plan.actions.iter().find_map(|a| match &a.action {
        Action::RetargetVirtualName { name: n, endpoints } if n == name => {
            Some(endpoints.iter().map(|e| e.member.clone()).collect())
        }
        _ => None,
    })
}

fn promotions(plan: &Plan) -> Vec<(String, u64)> {
    plan.actions
        .iter()
        .filter_map(|a| match &a.action {
            Action::Promote { member, epoch } => Some((member.clone(), *epoch)),
            _ => None,
        })
        .collect()
}

// ---------------------------------------------------------------- steady state and topology

#[test]
fn steady_state_needs_nothing() {
    let p = plan(&cluster(), &healthy("a"), at(0.0));
    assert_eq!(actions(&p), vec![]);
    let ready = finding(&p, findings::READY);
    assert!(ready.status, "{ready:?}");
    assert!(!finding(&p, findings::RECONCILING).status);
    assert!(!finding(&p, findings::STALLED).status);
    assert_eq!(p.journal, healthy("a").journal, "nothing to remember");
    assert_eq!(
        p.requeue_after,
        Duration::from_millis(250),
        "probe at a quarter of detectAfter"
    );
}

#[test]
fn replica_with_the_wrong_upstream_is_repointed() {
    let mut observed = healthy("a");
    observed.members.insert("c".into(), replica("b", 1000));
    let p = plan(&cluster(), &observed, at(0.0));
    assert_eq!(actions(&p), vec![replicate("c", "a")]);
    assert!(
        p.actions[0]
            .why
            .contains("replicates from b; it should follow a: the primary"),
        "{}",
        p.actions[0].why
    );
    assert!(!finding(&p, findings::READY).status);
}

#[test]
fn stray_master_is_fenced_then_demoted() {
    let mut observed = healthy("a");
    observed.members.insert("c".into(), master(1000));
    let p = plan(&cluster(), &observed, at(0.0));
    assert_eq!(actions(&p)[..2], [fence("c"), restart("c", "a")]);
    assert_eq!(
        retarget(&p, "ro"),
        Some(vec!["b".to_string()]),
        "a master serves no reads as a replica"
    );
}

#[test]
fn writable_replica_is_made_read_only() {
    let mut observed = healthy("a");
    observed.members.get_mut("b").unwrap().read_only = Some(false);
    let p = plan(&cluster(), &observed, at(0.0));
    assert_eq!(actions(&p), vec![replicate("b", "a")]);
    assert!(p.actions[0].why.contains("accepts writes"));
}

#[test]
fn primary_left_fenced_is_unfenced() {
    let mut observed = healthy("a");
    observed.members.get_mut("a").unwrap().read_only = Some(true);
    let p = plan(&cluster(), &observed, at(0.0));
    assert_eq!(actions(&p), vec![Action::Unfence { member: "a".into() }]);
}

#[test]
fn cascading_replica_follows_its_upstream_and_falls_back_to_the_primary() {
    let mut desired = cluster();
    desired.spec.members[2].upstream = Some("b".into());
    let observed = healthy("a");
    let p = plan(&desired, &observed, at(0.0));
    assert_eq!(
        actions(&p),
        vec![replicate("c", "b")],
        "c cascades from b, a repli-master"
    );

    let mut observed = healthy("a");
    observed.members.insert("c".into(), replica("b", 1000));
    down(&mut observed, "b", -5.0);
    let p = plan(&desired, &observed, at(0.0));
    assert_eq!(
        actions(&p)[0],
        replicate("c", "a"),
        "b is down: c replicates from the primary meanwhile"
    );
}

#[test]
fn unreachable_replica_is_reported_not_acted_on() {
    let mut observed = healthy("a");
    down(&mut observed, "c", -30.0);
    observed.virtual_names.insert("ro".into(), vec!["b".into()]);
    let p = plan(&cluster(), &observed, at(0.0));
    assert_eq!(actions(&p), vec![]);
    let ready = finding(&p, findings::READY);
    assert!(!ready.status);
    assert_eq!(ready.reason, findings::reason::MEMBERS_UNAVAILABLE);
    assert!(ready.message.contains('c'));
}

// ---------------------------------------------------------------- adoption

#[test]
fn fresh_servers_are_adopted_around_the_desired_primary() {
    let mut observed = Observed::default();
    for m in ["a", "b", "c"] {
        observed.members.insert(m.into(), master(0));
    }
    let p = plan(&cluster(), &observed, at(0.0));
    assert_eq!(
        actions(&p)[..4],
        [fence("b"), fence("c"), restart("b", "a"), restart("c", "a")],
        "every other master is fenced before any is demoted"
    );
    assert_eq!(p.journal.current_primary.as_deref(), Some("a"));
    assert_eq!(p.journal.acknowledged_primary.as_deref(), Some("a"));
    assert_eq!(retarget(&p, "rw"), Some(vec!["a".to_string()]));
    assert!(promotions(&p).is_empty(), "a is already master");
}

#[test]
fn adoption_refuses_to_discard_data_held_by_another_master() {
    let mut observed = Observed::default();
    observed.members.insert("a".into(), master(0));
    observed.members.insert("b".into(), master(5000));
    observed.members.insert("c".into(), master(0));
    let p = plan(&cluster(), &observed, at(0.0));
    assert_eq!(actions(&p), vec![]);
    let stalled = finding(&p, findings::STALLED);
    assert!(stalled.status);
    assert_eq!(stalled.reason, findings::reason::ADOPTION_REFUSED);
    assert!(
        stalled
            .message
            .contains("b (offset 5000) is already master"),
        "{}",
        stalled.message
    );
    assert_eq!(p.journal.current_primary, None, "nothing adopted");
}

#[test]
fn adoption_waits_for_the_desired_primary() {
    let mut observed = Observed::default();
    observed.members.insert("b".into(), master(0));
    let p = plan(&cluster(), &observed, at(0.0));
    assert_eq!(actions(&p), vec![]);
    assert_eq!(
        finding(&p, findings::RECONCILING).reason,
        findings::reason::WAITING
    );
}

#[test]
fn a_new_cluster_gets_its_data_set_only_when_every_host_is_known_empty() {
    let empty = || {
        HostAccess::Agent(HostObservation {
            reachable: true,
            empty: true,
            ..Default::default()
        })
    };
    let silent = |host: HostAccess| MemberObservation {
        reachable: false,
        host,
        ..Default::default()
    };
    let initialize = Action::Initialize { member: "a".into() };

    // Every host empty: a (spec.primary) gets a new data set, and nothing else happens yet.
    let mut observed = Observed::default();
    for m in ["a", "b", "c"] {
        observed.members.insert(m.into(), silent(empty()));
    }
    let p = plan(&cluster(), &observed, at(0.0));
    assert_eq!(actions(&p), vec![initialize.clone()]);
    assert!(p.actions[0].required);
    assert_eq!(p.journal.current_primary, None, "adopted once it answers");

    // c's agent has not answered: c may hold the data that matters, so nothing is created.
    observed
        .members
        .insert("c".into(), silent(HostAccess::Engine));
    let p = plan(&cluster(), &observed, at(0.0));
    assert_eq!(actions(&p), vec![]);
    let reconciling = finding(&p, findings::RECONCILING);
    assert_eq!(reconciling.reason, findings::reason::WAITING);
    assert!(
        reconciling.message.contains("has not") && reconciling.message.contains('c'),
        "{}",
        reconciling.message
    );

    // c holds data (stopped): still nothing created over the cluster's data.
    observed
        .members
        .insert("c".into(), silent(agent_stopped(true, "r1", 100)));
    assert_eq!(actions(&plan(&cluster(), &observed, at(0.0))), vec![]);

    // Once a data set has been journaled, an empty primary host is never initialized again.
    observed.members.insert("c".into(), silent(empty()));
    observed.journal.identity = Some("7000".into());
    assert_eq!(actions(&plan(&cluster(), &observed, at(0.0))), vec![]);

    // While the host creates it, the plan waits and says so.
    observed.journal.identity = None;
    observed.members.insert(
        "a".into(),
        silent(HostAccess::Agent(HostObservation {
            reachable: true,
            busy: Some("initialize".into()),
            ..Default::default()
        })),
    );
    let p = plan(&cluster(), &observed, at(0.0));
    assert_eq!(actions(&p), vec![]);
    assert!(
        finding(&p, findings::RECONCILING)
            .message
            .contains("initialize under way")
    );
}

#[test]
fn a_stopped_desired_primary_holding_data_is_started_before_adoption() {
    let mut observed = Observed::default();
    observed.members.insert(
        "a".into(),
        MemberObservation {
            reachable: false,
            host: agent_stopped(true, "r1", 100),
            ..Default::default()
        },
    );
    let p = plan(&cluster(), &observed, at(0.0));
    assert_eq!(actions(&p), vec![Action::Start { member: "a".into() }]);

    // Another member already serves as master: a is not started beside it.
    observed.members.insert("b".into(), master(100));
    assert_eq!(actions(&plan(&cluster(), &observed, at(0.0))), vec![]);
}

#[test]
fn a_refusal_is_fast_evidence_only_where_no_lease_can_keep_the_server_writable() {
    let mut desired = cluster();
    desired.spec.failover.detect_after = Duration::from_secs(5).into();
    desired.spec.failover.refused_after = Some(Duration::from_secs(1).into());
    let refused_for_two_seconds = |host: HostAccess| {
        let mut observed = healthy("a");
        down(&mut observed, "a", -2.0);
        let a = observed.members.get_mut("a").unwrap();
        a.refused = true;
        a.host = host;
        observed
    };
    // No agent, no lease: a refused port means no server, and refusedAfter applies.
    let p = plan(
        &desired,
        &refused_for_two_seconds(HostAccess::Engine),
        at(0.0),
    );
    assert_eq!(promotions(&p), vec![("b".to_string(), 2)]);
    // The agent says postgres is stopped: the same.
    let p = plan(
        &desired,
        &refused_for_two_seconds(agent_stopped(false, "r1", 900)),
        at(0.0),
    );
    assert_eq!(promotions(&p), vec![("b".to_string(), 2)]);
    // The agent is unreachable too: the refusal may come from the network while clients still
    // reach a server under lease, so only detectAfter (which outlasts the lease) counts.
    let cut_off = HostAccess::Agent(HostObservation::default());
    let p = plan(&desired, &refused_for_two_seconds(cut_off), at(0.0));
    assert!(promotions(&p).is_empty());
    assert!(
        finding(&p, findings::RECONCILING)
            .message
            .contains("failover starts after 5s"),
        "{}",
        finding(&p, findings::RECONCILING).message
    );
}

#[test]
fn a_failed_primary_is_fenced_last_unless_its_host_says_it_does_not_run() {
    let with_a = |host: HostAccess| {
        let mut observed = healthy("a");
        down(&mut observed, "a", -2.0);
        observed.members.get_mut("a").unwrap().host = host;
        observed
    };
    let fenced_last = |p: &Plan| {
        p.actions
            .last()
            .is_some_and(|a| a.action == fence("a") && !a.required)
    };
    // Nothing known of a's server (its host is silent too, or says it runs): after the
    // promotion, a best-effort fence.
    for host in [
        HostAccess::Agent(HostObservation::default()),
        agent_running(),
        HostAccess::Engine,
    ] {
        let p = plan(&cluster(), &with_a(host.clone()), at(0.0));
        assert_eq!(promotions(&p), vec![("b".to_string(), 2)], "{host:?}");
        assert!(fenced_last(&p), "{host:?}: {:?}", actions(&p));
    }
    // Its host reports postgres down, nothing under way: there is nothing to stop, and a stop
    // arriving after this round's rejoin would stop the standby that came of it.
    let HostAccess::Agent(mut crashed) = agent_stopped(false, "r1", 900) else {
        unreachable!()
    };
    crashed.identity = Some("7000".into());
    let p = plan(
        &cluster(),
        &with_a(HostAccess::Agent(crashed.clone())),
        at(0.0),
    );
    assert_eq!(promotions(&p), vec![("b".to_string(), 2)]);
    assert!(!actions(&p).contains(&fence("a")), "{:?}", actions(&p));
    // The same report while an operation runs there says nothing of what comes after it.
    crashed.busy = Some("start".into());
    let p = plan(&cluster(), &with_a(HostAccess::Agent(crashed)), at(0.0));
    assert!(fenced_last(&p), "{:?}", actions(&p));
}

#[test]
fn a_primary_stopped_only_by_its_lapsed_lease_is_started_in_place_not_failed_over() {
    let lapsed = |fenced: bool| {
        let HostAccess::Agent(mut host) = agent_stopped(false, "r1", 900) else {
            unreachable!()
        };
        host.fenced = fenced;
        host
    };
    let with_a = |host: HostObservation, down_for: f64| {
        let mut observed = healthy("a");
        down(&mut observed, "a", -down_for);
        observed.members.get_mut("a").unwrap().host = HostAccess::Agent(host);
        observed
    };
    let start_a = Action::Start { member: "a".into() };
    // At once, and also past detectAfter: no promotion, the epoch unchanged, status says why.
    for down_for in [0.2, 5.0] {
        let p = plan(&cluster(), &with_a(lapsed(true), down_for), at(0.0));
        assert_eq!(actions(&p), vec![start_a.clone()], "down {down_for}s");
        assert!(p.actions[0].required);
        assert_eq!(p.journal.epoch, 1, "nobody promoted");
        assert!(p.journal.operation.is_none());
        let reconciling = finding(&p, findings::RECONCILING);
        assert_eq!(reconciling.reason, findings::reason::CONVERGING);
        assert!(
            reconciling
                .message
                .contains("only because its lease lapsed"),
            "{}",
            reconciling.message
        );
    }
    // Stopped without a lapse (it crashed): the failover it always had.
    let p = plan(&cluster(), &with_a(lapsed(false), 5.0), at(0.0));
    assert_eq!(promotions(&p), vec![("b".to_string(), 2)]);
    // Another member is a master: something was promoted after all; not started.
    let mut observed = with_a(lapsed(true), 5.0);
    observed.members.insert("c".into(), master(2000));
    assert!(!actions(&plan(&cluster(), &observed, at(0.0))).contains(&start_a));
    // Another data set on its host: never started as the cluster's primary.
    let mut foreign = lapsed(true);
    foreign.identity = Some("9999".into());
    let mut observed = with_a(foreign, 5.0);
    observed.journal.identity = Some("7000".into());
    assert!(!actions(&plan(&cluster(), &observed, at(0.0))).contains(&start_a));
}

#[test]
fn a_stopped_primary_is_started_again_when_no_other_member_can_take_over() {
    let mut observed = healthy("a");
    down(&mut observed, "a", -2.0);
    observed.members.get_mut("a").unwrap().host = agent_stopped(false, "r1", 1000);
    for m in ["b", "c"] {
        observed.members.get_mut(m).unwrap().reachable = false;
    }
    let p = plan(&cluster(), &observed, at(0.0));
    assert_eq!(actions(&p)[0], Action::Start { member: "a".into() });
    assert_eq!(
        finding(&p, findings::STALLED).reason,
        findings::reason::NO_CANDIDATE
    );

    // With a replica able to take over, the failover goes ahead instead.
    observed.members.get_mut("b").unwrap().reachable = true;
    let p = plan(&cluster(), &observed, at(0.0));
    assert!(!actions(&p).contains(&Action::Start { member: "a".into() }));
    assert_eq!(promotions(&p), vec![("b".to_string(), 2)]);
}

#[test]
fn existing_cluster_is_adopted_as_is_then_switched_over() {
    // b is master today; the spec wants a. Adopt b, then a planned switchover begins.
    let mut observed = healthy("b");
    observed.journal = Journal::default();
    let p = plan(&cluster(), &observed, at(0.0));
    assert_eq!(p.journal.current_primary.as_deref(), Some("b"));
    assert_eq!(actions(&p), vec![fence("b")]);
    let op = p.journal.operation.as_ref().unwrap();
    assert_eq!(
        (op.kind, op.to.as_str(), op.epoch),
        (OperationKind::Switchover, "a", 1)
    );
}

// ---------------------------------------------------------------- planned switchover

fn switchover_started(to: &str) -> (Desired, Observed) {
    let mut desired = cluster();
    desired.spec.primary = to.into();
    let mut observed = healthy("a");
    observed.journal.operation = Some(Operation {
        kind: OperationKind::Switchover,
        from: Some("a".into()),
        to: to.into(),
        epoch: 2,
        started_at: at(0.0),
        step: Step::Fence,
        reason: format!("spec.primary changed from a to {to}"),
    });
    observed.journal.acknowledged_primary = Some(to.into());
    (desired, observed)
}

#[test]
fn switchover_starts_by_fencing_the_old_master_only() {
    let mut desired = cluster();
    desired.spec.primary = "c".into();
    let p = plan(&desired, &healthy("a"), at(0.0));
    assert_eq!(
        actions(&p),
        vec![fence("a")],
        "nothing else until c has caught up"
    );
    assert!(p.actions[0].required);
    let op = p.journal.operation.as_ref().unwrap();
    assert_eq!(
        (op.kind, op.from.as_deref(), op.to.as_str(), op.epoch),
        (OperationKind::Switchover, Some("a"), "c", 2)
    );
    assert!(p.requeue_after <= Duration::from_millis(50));
}

#[test]
fn switchover_promotes_once_the_target_caught_up_with_the_fenced_master() {
    let (desired, mut observed) = switchover_started("c");
    observed.members.get_mut("a").unwrap().read_only = Some(true);
    let p = plan(&desired, &observed, at(0.3));
    assert_eq!(
        actions(&p)[..5],
        [
            fence("a"),
            promote("c", 2),
            restart("a", "c"),
            replicate("b", "c"),
            Action::RetargetVirtualName {
                name: "rw".into(),
                endpoints: vec![crate::core::routes::Endpoint {
                    member: "c".into(),
                    address: "10.0.0.3:6379".into(),
                    zone: None,
                }]
            }
        ]
    );
}

#[test]
fn switchover_waits_for_catch_up() {
    let (desired, mut observed) = switchover_started("c");
    observed.members.get_mut("a").unwrap().read_only = Some(true);
    observed.members.get_mut("c").unwrap().durable = Some(900);
    let p = plan(&desired, &observed, at(0.3));
    assert_eq!(actions(&p), vec![], "no promotion while c lacks 100 bytes");
    let reconciling = finding(&p, findings::RECONCILING);
    assert!(reconciling.status);
    assert!(p.journal.operation.is_some());
    assert!(p.requeue_after <= Duration::from_millis(50));
}

#[test]
fn switchover_refences_a_master_whose_fence_lapsed() {
    let (desired, observed) = switchover_started("c");
    let p = plan(&desired, &observed, at(0.3));
    assert_eq!(actions(&p), vec![fence("a")]);
}

#[test]
fn switchover_gives_up_after_the_catch_up_timeout_and_unfences() {
    let (desired, mut observed) = switchover_started("c");
    observed.members.get_mut("a").unwrap().read_only = Some(true);
    observed.members.get_mut("c").unwrap().durable = Some(900);
    let p = plan(&desired, &observed, at(11.0));
    assert_eq!(actions(&p), vec![Action::Unfence { member: "a".into() }]);
    assert_eq!(p.journal.operation, None);
    assert_eq!(p.journal.history.last().unwrap().outcome, Outcome::Aborted);
    let blocked = finding(&p, findings::PROMOTION_BLOCKED);
    assert_eq!(blocked.reason, findings::reason::SWITCHOVER_ABORTED);
    assert!(
        blocked
            .message
            .contains("did not catch up with fenced a (100 B behind) within 10s"),
        "{}",
        blocked.message
    );
    assert_eq!(p.journal.epoch, 2, "the abandoned epoch is never reused");

    // Within the cooldown the same switchover is not retried...
    let mut later = observed.clone();
    later.journal = p.journal.clone();
    later.members.get_mut("a").unwrap().read_only = Some(false);
    let retry = plan(&desired, &later, at(20.0));
    assert_eq!(actions(&retry), vec![]);
    assert_eq!(
        finding(&retry, findings::PROMOTION_BLOCKED).reason,
        findings::reason::SWITCHOVER_BLOCKED
    );
    // ...and after it, it is.
    let retry = plan(&desired, &later, at(80.0));
    assert_eq!(actions(&retry), vec![fence("a")]);
    assert_eq!(retry.journal.operation.as_ref().unwrap().epoch, 3);
}

#[test]
fn a_switchover_whose_promotion_was_attempted_is_never_given_back_to_the_old_primary() {
    let (desired, mut observed) = switchover_started("c");
    observed.journal.operation.as_mut().unwrap().step = Step::Promote;
    observed.members.get_mut("a").unwrap().read_only = Some(true);
    // The promotion timed out, but took effect: c is a master now, long past the catch-up
    // timeout. Before, the switchover was abandoned here and a given its writes back.
    observed.members.insert("c".into(), master(1000));
    let p = plan(&desired, &observed, at(30.0));
    assert!(
        actions(&p).contains(&promote("c", 2)),
        "the promotion is asked again: {:?}",
        actions(&p)
    );
    assert!(
        !actions(&p).contains(&Action::Unfence { member: "a".into() }),
        "{:?}",
        actions(&p)
    );
    assert!(p.journal.operation.is_some());

    // c stops answering while it is promoted (a loaded host): awaited, not abandoned...
    let c = observed.members.get_mut("c").unwrap();
    c.reachable = false;
    c.unreachable_since = Some(at(29.5));
    let p = plan(&desired, &observed, at(30.0));
    assert!(
        !actions(&p).iter().any(|a| matches!(
            a,
            Action::Unfence { .. } | Action::Start { .. } | Action::Promote { .. }
        )),
        "nothing is given back to a meanwhile: {:?}",
        actions(&p)
    );
    assert!(p.journal.operation.is_some());
    assert!(
        p.requeue_after <= Duration::from_millis(500),
        "looked at again once c would count as failed: {:?}",
        p.requeue_after
    );

    // ...until it counts as failed: then the switchover is abandoned, as before.
    let p = plan(&desired, &observed, at(31.0));
    assert_eq!(actions(&p)[0], Action::Unfence { member: "a".into() });
    assert_eq!(p.journal.operation, None);
    assert_eq!(p.journal.history.last().unwrap().outcome, Outcome::Aborted);
}

#[test]
fn switchover_to_an_unreachable_member_is_refused() {
    let mut desired = cluster();
    desired.spec.primary = "c".into();
    let mut observed = healthy("a");
    down(&mut observed, "c", -10.0);
    observed.virtual_names.insert("ro".into(), vec!["b".into()]);
    let p = plan(&desired, &observed, at(0.0));
    assert_eq!(actions(&p), vec![]);
    let blocked = finding(&p, findings::PROMOTION_BLOCKED);
    assert!(blocked.status);
    assert_eq!(blocked.reason, findings::reason::SWITCHOVER_BLOCKED);
    assert!(
        blocked
            .message
            .contains("c is unreachable; a stays primary"),
        "{}",
        blocked.message
    );
}

// ---------------------------------------------------------------- automatic failover

#[test]
fn master_unreachable_shorter_than_detect_after_is_only_watched() {
    let mut observed = healthy("a");
    down(&mut observed, "a", -0.4);
    let p = plan(&cluster(), &observed, at(0.0));
    assert_eq!(actions(&p), vec![]);
    assert_eq!(
        finding(&p, findings::RECONCILING).reason,
        findings::reason::MASTER_UNREACHABLE
    );
    assert!(
        p.requeue_after <= Duration::from_millis(600),
        "look again when detectAfter expires"
    );
}

#[test]
fn failover_fences_promotes_the_standby_repoints_and_moves_names() {
    let mut observed = healthy("a");
    down(&mut observed, "a", -1.5);
    let p = plan(&cluster(), &observed, at(0.0));
    assert_eq!(
        actions(&p),
        [
            promote("b", 2),
            replicate("c", "b"),
            Action::RetargetVirtualName {
                name: "rw".into(),
                endpoints: vec![crate::core::routes::Endpoint {
                    member: "b".into(),
                    address: "10.0.0.2:6379".into(),
                    zone: None,
                }]
            },
            // c lost its link with a: it serves reads again once it streams from b.
            Action::RetargetVirtualName {
                name: "ro".into(),
                endpoints: vec![]
            },
            fence("a"),
        ]
    );
    assert!(p.actions[0].required);
    let last = p.actions.last().unwrap();
    assert!(
        !last.required,
        "fencing an unreachable master is best effort, and never delays the promotion"
    );
    let op = p.journal.operation.as_ref().unwrap();
    assert_eq!(
        (op.kind, op.to.as_str(), op.epoch),
        (OperationKind::Failover, "b", 2)
    );
    assert!(
        op.reason
            .contains("a unreachable for 1.5s (detectAfter 1s)"),
        "{}",
        op.reason
    );
    assert!(op.reason.contains("designated standby"), "{}", op.reason);
}

#[test]
fn standby_over_max_lag_gives_way_to_the_most_up_to_date_replica() {
    let mut observed = healthy("a");
    observed.members.get_mut("a").unwrap().durable = Some(3_000_000);
    observed.members.get_mut("b").unwrap().durable = Some(100);
    observed.members.get_mut("c").unwrap().durable = Some(2_900_000);
    down(&mut observed, "a", -2.0);
    let p = plan(&cluster(), &observed, at(0.0));
    assert_eq!(promotions(&p), vec![("c".to_string(), 2)]);
}

#[test]
fn ties_break_on_offset_then_priority_then_name() {
    let mut desired = cluster();
    desired.spec.failover.standby = None;
    desired.spec.members.push(
        serde_yaml::from_str(r#"{ name: d, address: "10.0.0.4:6379", priority: 2 }"#).unwrap(),
    );
    let cases = [
        // (offsets b, c, d; priorities b, c, d) -> winner
        ((900, 1000, 950), (2, 1, 2), "c"), // highest offset wins over priority
        ((1000, 1000, 1000), (1, 3, 2), "c"), // equal offsets: highest priority
        ((1000, 1000, 1000), (2, 1, 2), "b"), // equal offset and priority: lowest name
    ];
    for ((ob, oc, od), (pb, pc, pd), winner) in cases {
        desired.spec.members[1].priority = pb;
        desired.spec.members[2].priority = pc;
        desired.spec.members[3].priority = pd;
        let mut observed = healthy("a");
        observed.members.insert("d".into(), replica("a", od));
        observed.members.get_mut("b").unwrap().durable = Some(ob);
        observed.members.get_mut("c").unwrap().durable = Some(oc);
        down(&mut observed, "a", -2.0);
        let p = plan(&desired, &observed, at(0.0));
        assert_eq!(
            promotions(&p),
            vec![(winner.to_string(), 2)],
            "offsets {ob},{oc},{od} priorities {pb},{pc},{pd}"
        );
    }
}

#[test]
fn no_candidate_blocks_promotion_with_every_reason() {
    let mut desired = cluster();
    desired.spec.members[2].priority = 0;
    let mut observed = healthy("a");
    observed.members.get_mut("a").unwrap().durable = Some(784 * 1024 * 1024 + 1000);
    down(&mut observed, "a", -3.0);
    let p = plan(&desired, &observed, at(0.0));
    assert_eq!(promotions(&p), vec![]);
    let blocked = finding(&p, findings::PROMOTION_BLOCKED);
    assert!(blocked.status);
    assert_eq!(blocked.reason, findings::reason::NO_CANDIDATE);
    assert!(
        blocked
            .message
            .contains("b: lag 784 MiB exceeds maxLag 1 MiB"),
        "{}",
        blocked.message
    );
    assert!(
        blocked.message.contains("c: priority 0 (never promoted)"),
        "{}",
        blocked.message
    );
    assert!(finding(&p, findings::STALLED).status);
    assert_eq!(p.journal.operation, None);
}

#[test]
fn refusal_reasons_name_unreachable_and_syncing_replicas() {
    let mut observed = healthy("a");
    down(&mut observed, "a", -3.0);
    down(&mut observed, "b", -3.0);
    observed.members.get_mut("c").unwrap().syncing = true;
    let p = plan(&cluster(), &observed, at(0.0));
    assert_eq!(promotions(&p), vec![]);
    let message = &finding(&p, findings::PROMOTION_BLOCKED).message;
    assert!(message.contains("b: unreachable"), "{message}");
    assert!(
        message.contains("c: still loading a full sync"),
        "{message}"
    );
}

#[test]
fn priority_zero_is_never_promoted_even_when_alone() {
    let mut desired = cluster();
    desired.spec.failover.standby = None;
    desired.spec.members[1].priority = 0;
    desired.spec.members[2].priority = 0;
    let mut observed = healthy("a");
    down(&mut observed, "a", -5.0);
    let p = plan(&desired, &observed, at(0.0));
    assert_eq!(promotions(&p), vec![]);
}

#[test]
fn cooldown_prevents_a_second_automatic_failover() {
    let mut observed = healthy("b");
    observed.journal.epoch = 2;
    observed.journal.acknowledged_primary = Some("a".into());
    observed.journal.last_promotion_at = Some(at(-20.0));
    down(&mut observed, "b", -2.0);
    let p = plan(&cluster(), &observed, at(0.0));
    assert_eq!(promotions(&p), vec![]);
    let blocked = finding(&p, findings::PROMOTION_BLOCKED);
    assert_eq!(blocked.reason, findings::reason::COOLDOWN);
    assert!(
        blocked
            .message
            .contains("allows the next automatic failover in 40s"),
        "{}",
        blocked.message
    );
    assert!(p.requeue_after <= Duration::from_secs(40));

    let p = plan(&cluster(), &observed, at(45.0));
    assert_eq!(
        promotions(&p).len(),
        1,
        "after the cooldown the failover goes ahead"
    );
}

#[test]
fn manual_mode_reports_instead_of_promoting() {
    let mut desired = cluster();
    desired.spec.failover.mode = crate::api::FailoverMode::Manual;
    let mut observed = healthy("a");
    down(&mut observed, "a", -5.0);
    let p = plan(&desired, &observed, at(0.0));
    assert_eq!(promotions(&p), vec![]);
    let blocked = finding(&p, findings::PROMOTION_BLOCKED);
    assert_eq!(blocked.reason, findings::reason::MANUAL_MODE);
    assert!(
        blocked.message.contains("set spec.primary to b"),
        "{}",
        blocked.message
    );

    // The person does as told: that is a failover to the member they named.
    desired.spec.primary = "c".into();
    let p = plan(&desired, &observed, at(1.0));
    assert_eq!(promotions(&p), vec![("c".to_string(), 2)]);
    assert_eq!(p.journal.acknowledged_primary.as_deref(), Some("c"));
}

#[test]
fn suspend_means_no_action_at_all() {
    let mut desired = cluster();
    desired.spec.suspend = true;
    let mut observed = healthy("a");
    down(&mut observed, "a", -60.0);
    observed.members.insert("c".into(), master(0));
    let p = plan(&desired, &observed, at(0.0));
    assert_eq!(actions(&p), vec![]);
    assert!(finding(&p, findings::SUSPENDED).status);
    assert_eq!(p.journal, observed.journal);
}

// ---------------------------------------------------------------- after a failover

/// b was promoted at epoch 2 by an automatic failover, leaving branch r1 at 1000 for r2; c
/// follows it. The spec still says a.
fn after_failover() -> Observed {
    let mut observed = healthy("b");
    let history = History {
        branch: "r2".into(),
        forks: vec![Fork {
            branch: "r1".into(),
            at: 1000,
        }],
    };
    observed.members.get_mut("b").unwrap().history = Some(history.clone());
    observed.members.get_mut("c").unwrap().history = on_branch("r2");
    observed.journal.epoch = 2;
    observed.journal.acknowledged_primary = Some("a".into());
    observed.journal.last_promotion_at = Some(at(-10.0));
    observed.journal.primary_history = Some(history);
    observed
}

#[test]
fn spec_left_behind_by_a_failover_is_reported_not_failed_back() {
    let p = plan(&cluster(), &after_failover(), at(0.0));
    assert_eq!(actions(&p), vec![], "no surprise fail-back to a");
    let mismatch = finding(&p, findings::PRIMARY_MISMATCH);
    assert!(mismatch.status);
    assert!(
        mismatch
            .message
            .contains("Set spec.primary to b to acknowledge"),
        "{}",
        mismatch.message
    );

    let mut acknowledged = cluster();
    acknowledged.spec.primary = "b".into();
    let p = plan(&acknowledged, &after_failover(), at(0.0));
    assert!(!finding(&p, findings::PRIMARY_MISMATCH).status);
    assert_eq!(p.journal.acknowledged_primary.as_deref(), Some("b"));
}

#[test]
fn returning_old_master_is_demoted_never_left_writable() {
    let mut observed = after_failover();
    observed.members.insert("a".into(), master(1000));
    let p = plan(&cluster(), &observed, at(0.0));
    assert_eq!(
        actions(&p)[..2],
        [
            fence("a"),
            Action::Restart {
                member: "a".into(),
                from: "b".into()
            }
        ]
    );
    assert_eq!(retarget(&p, "rw"), None, "rw stays on b");
    assert_eq!(retarget(&p, "ro"), Some(vec!["c".to_string()]));
}

#[test]
fn diverged_old_master_rejoins_and_the_loss_is_named() {
    let mut observed = after_failover();
    observed.members.insert("a".into(), master(1500));
    let p = plan(&cluster(), &observed, at(0.0));
    assert_eq!(
        actions(&p)[..2],
        [
            fence("a"),
            Action::Rejoin {
                member: "a".into(),
                from: "b".into()
            }
        ]
    );
    assert!(
        p.actions[1].why.contains(
            "it holds 500 B on branch r1 past where the primary's history left that branch at 1000"
        ),
        "{}",
        p.actions[1].why
    );
}

#[test]
fn divergence_is_judged_by_history_not_by_position() {
    // Behind the primary, but on a branch the primary never had: it rejoins.
    let mut observed = after_failover();
    let mut stray = replica("b", 10);
    stray.history = on_branch("r9");
    stray.link_up = Some(false);
    observed.members.insert("c".into(), stray);
    let p = plan(&cluster(), &observed, at(0.0));
    assert_eq!(
        actions(&p)[0],
        Action::Rejoin {
            member: "c".into(),
            from: "b".into()
        }
    );
    // A replica still on the old branch, but within the fork: it simply follows.
    let mut observed = after_failover();
    observed.members.insert("c".into(), replica("a", 1000));
    let p = plan(&cluster(), &observed, at(0.0));
    assert_eq!(actions(&p), vec![replicate("c", "b")]);
    // A replica past the fork point (it received writes b never had) is rewound, not left
    // stuck.
    let mut observed = after_failover();
    observed.members.insert("c".into(), replica("b", 1200));
    let p = plan(&cluster(), &observed, at(0.0));
    assert_eq!(
        actions(&p),
        vec![Action::Rejoin {
            member: "c".into(),
            from: "b".into()
        }]
    );
    // The primary's own probe knows no history (it cannot read it): the journal's record of
    // the promotion still decides.
    let mut observed = after_failover();
    observed.members.get_mut("b").unwrap().history = on_branch("r2");
    observed.members.insert("a".into(), master(1500));
    let p = plan(&cluster(), &observed, at(0.0));
    assert!(actions(&p).contains(&Action::Rejoin {
        member: "a".into(),
        from: "b".into()
    }));
}

// ---------------------------------------------------------------- resuming from the journal

fn failover_in_flight(to: &str) -> Observed {
    let mut observed = healthy("a");
    down(&mut observed, "a", -3.0);
    observed.journal.operation = Some(Operation {
        kind: OperationKind::Failover,
        from: Some("a".into()),
        to: to.into(),
        epoch: 2,
        started_at: at(-1.0),
        step: Step::Promote,
        reason: "a unreachable".into(),
    });
    observed
}

#[test]
fn resumed_failover_keeps_its_target_and_epoch() {
    let mut observed = failover_in_flight("b");
    // Since the crash c got ahead of b: the journaled choice still stands.
    observed.members.get_mut("c").unwrap().durable = Some(5000);
    let p = plan(&cluster(), &observed, at(0.0));
    assert_eq!(promotions(&p), vec![("b".to_string(), 2)]);
}

#[test]
fn resumed_failover_whose_target_died_starts_over_at_a_new_epoch() {
    let mut observed = failover_in_flight("b");
    down(&mut observed, "b", -2.0);
    let p = plan(&cluster(), &observed, at(0.0));
    assert_eq!(
        promotions(&p),
        vec![("c".to_string(), 3)],
        "epoch 2 may have been used by b"
    );
    assert_eq!(p.journal.history.last().unwrap().outcome, Outcome::Aborted);
}

#[test]
fn promoted_and_converged_operation_is_finished_into_history() {
    let mut observed = after_failover();
    observed.journal.operation = Some(Operation {
        kind: OperationKind::Failover,
        from: Some("a".into()),
        to: "b".into(),
        epoch: 2,
        started_at: at(-10.0),
        step: Step::MoveNames,
        reason: "a unreachable".into(),
    });
    down(&mut observed, "a", -12.0);
    observed.virtual_names.insert("ro".into(), vec!["c".into()]);
    let p = plan(&cluster(), &observed, at(0.0));
    assert_eq!(actions(&p), vec![]);
    assert_eq!(p.journal.operation, None);
    let last = p.journal.history.last().unwrap();
    assert_eq!(
        (last.kind, last.outcome, last.epoch),
        (OperationKind::Failover, Outcome::Succeeded, 2)
    );
}

// ---------------------------------------------------------------- sync replication

#[test]
fn sync_mode_never_promotes_while_an_acknowledged_write_may_be_out_of_reach() {
    let mut desired = cluster();
    desired.spec.replication.mode = ReplicationMode::Sync;
    let mut observed = healthy("a");
    down(&mut observed, "a", -2.0);
    down(&mut observed, "c", -2.0);
    let p = plan(&desired, &observed, at(0.0));
    assert_eq!(promotions(&p), vec![]);
    let message = &finding(&p, findings::PROMOTION_BLOCKED).message;
    assert!(
        message.contains("sync replication: c unreachable"),
        "{message}"
    );
}

#[test]
fn sync_mode_promotes_only_the_most_up_to_date_replica() {
    let mut desired = cluster();
    desired.spec.replication.mode = ReplicationMode::Sync;
    let mut observed = healthy("a");
    observed.members.get_mut("b").unwrap().durable = Some(990);
    down(&mut observed, "a", -2.0);
    let p = plan(&desired, &observed, at(0.0));
    assert_eq!(
        promotions(&p),
        vec![("c".to_string(), 2)],
        "the standby b lacks 10 bytes c has"
    );
}

// ---------------------------------------------------------------- virtual names

#[test]
fn read_names_leave_out_lagging_and_unlinked_replicas() {
    let mut desired = cluster();
    desired.virtual_names[1].spec.max_lag = Some("100".parse().unwrap());
    let mut observed = healthy("a");
    observed.members.get_mut("b").unwrap().durable = Some(800);
    let p = plan(&desired, &observed, at(0.0));
    assert_eq!(retarget(&p, "ro"), Some(vec!["c".to_string()]));

    observed.members.get_mut("c").unwrap().link_up = Some(false);
    let p = plan(&desired, &observed, at(0.0));
    assert_eq!(
        retarget(&p, "ro"),
        Some(vec![]),
        "fallback none: no endpoints rather than a stale replica"
    );
}

#[test]
fn pinned_and_any_names() {
    let mut desired = cluster();
    desired.virtual_names.push(NamedVirtualName {
        name: "pin".into(),
        spec: VirtualNameSpec {
            cluster: "orders".into(),
            target: Target::Member("c".into()),
            max_lag: None,
            preferred_zones: Vec::new(),
            balancing: Default::default(),
            proxy_mode: Default::default(),
            fallback: Default::default(),
            listen: None,
        },
    });
    desired.virtual_names.push(NamedVirtualName {
        name: "all".into(),
        spec: VirtualNameSpec {
            target: Target::Any,
            ..desired.virtual_names[2].spec.clone()
        },
    });
    let mut observed = healthy("a");
    let p = plan(&desired, &observed, at(0.0));
    assert_eq!(retarget(&p, "pin"), Some(vec!["c".to_string()]));
    assert_eq!(
        retarget(&p, "all"),
        Some(vec!["a".to_string(), "b".to_string(), "c".to_string()])
    );

    down(&mut observed, "c", -5.0);
    let p = plan(&desired, &observed, at(0.0));
    assert_eq!(
        retarget(&p, "pin"),
        Some(vec!["a".to_string()]),
        "pinned member down: fallback to the primary"
    );
}

// ---------------------------------------------------------------- YAML fixtures

/// Each fixture in `tests/fixtures/plan/` holds `desired`, `observed`, `now` and the expected
/// `actions` (as `Type subject`) plus optional expected condition reasons.
#[test]
fn yaml_fixtures() {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Fixture {
        desired: Desired,
        observed: Observed,
        now: Timestamp,
        actions: Vec<String>,
        #[serde(default)]
        conditions: std::collections::BTreeMap<String, String>,
    }
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/plan");
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let fixture: Fixture = serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let p = plan(&fixture.desired, &fixture.observed, fixture.now);
        let got: Vec<String> = p
            .actions
            .iter()
            .map(|a| {
                let kind = serde_json::to_value(&a.action).unwrap()["type"]
                    .as_str()
                    .unwrap()
                    .to_string();
                format!("{kind} {}", a.action.subject())
            })
            .collect();
        assert_eq!(got, fixture.actions, "{}", path.display());
        for (type_, reason) in &fixture.conditions {
            assert_eq!(
                &finding(&p, type_).reason,
                reason,
                "{}: {type_}",
                path.display()
            );
        }
        count += 1;
    }
    assert!(count >= 3, "fixtures missing from {}", dir.display());
}

// ---------------------------------------------------------------- detaching, hosts, identity

fn detach(member: &str) -> Action {
    Action::Detach {
        member: member.into(),
    }
}

/// A host whose agent answers, with its server running.
fn agent_running() -> HostAccess {
    HostAccess::Agent(HostObservation {
        reachable: true,
        running: true,
        ..Default::default()
    })
}

/// A host whose agent answers, with its server stopped.
fn agent_stopped(clean: bool, branch: &str, position: u64) -> HostAccess {
    HostAccess::Agent(HostObservation {
        reachable: true,
        stopped_cleanly: clean,
        branch: Some(branch.into()),
        position: Some(position),
        ..Default::default()
    })
}

#[test]
fn replicas_still_streaming_from_a_failed_primary_are_detached_before_anyone_is_chosen() {
    let mut desired = cluster();
    desired.spec.replication.mode = ReplicationMode::Sync;
    // a froze: it no longer answers the controller, but b and c still hold their links.
    let mut observed = healthy("a");
    let a = observed.members.get_mut("a").unwrap();
    a.reachable = false;
    a.unreachable_since = Some(at(-1.5));
    let p = plan(&desired, &observed, at(0.0));
    assert_eq!(actions(&p), vec![detach("b"), detach("c")]);
    assert!(promotions(&p).is_empty(), "positions may still move");
    let op = p.journal.operation.clone().unwrap();
    assert_eq!((op.step, op.epoch), (Step::Detach, 2));

    // Detached, c turns out to hold more than the standby b: in sync mode c is chosen, the
    // journaled target changes (nothing was promoted at this epoch), and the epoch stays.
    let mut observed = p.journal.clone();
    observed.operation.as_mut().unwrap().step = Step::Detach;
    let mut next = healthy("a");
    next.journal = observed;
    let a = next.members.get_mut("a").unwrap();
    a.reachable = false;
    a.unreachable_since = Some(at(-1.5));
    for (m, position) in [("b", 1000), ("c", 1010)] {
        let o = next.members.get_mut(m).unwrap();
        o.link_up = Some(false);
        o.durable = Some(position);
    }
    let p = plan(&desired, &next, at(0.1));
    assert_eq!(promotions(&p), vec![("c".to_string(), 2)]);
    let op = p.journal.operation.as_ref().unwrap();
    assert_eq!((op.to.as_str(), op.step), ("c", Step::Promote));
    assert!(op.reason.contains("after detaching"), "{}", op.reason);
}

#[test]
fn a_promotion_once_journaled_is_never_rechosen() {
    let mut observed = failover_in_flight("b");
    observed.journal.operation.as_mut().unwrap().step = Step::Promote;
    observed.members.get_mut("c").unwrap().durable = Some(9_000);
    let p = plan(&cluster(), &observed, at(0.0));
    assert_eq!(promotions(&p), vec![("b".to_string(), 2)]);
}

#[test]
fn switchover_through_the_host_stops_the_old_primary_cleanly_then_promotes() {
    let (desired, mut observed) = switchover_started("c");
    observed.members.get_mut("a").unwrap().host = agent_running();
    let p = plan(&desired, &observed, at(0.1));
    assert_eq!(
        actions(&p),
        vec![Action::Stop { member: "a".into() }],
        "no fence: the clean stop sends the replicas everything, then refuses writes"
    );
    assert!(p.actions[0].required);

    // Stopped at 1000 (where its shutdown record begins); c has received up to there only.
    let a = observed.members.get_mut("a").unwrap();
    a.reachable = false;
    a.unreachable_since = Some(at(0.2));
    a.host = agent_stopped(true, "r1", 1000);
    observed.journal.operation.as_mut().unwrap().step = Step::Stop;
    let p = plan(&desired, &observed, at(0.3));
    assert!(promotions(&p).is_empty(), "c lacks the shutdown record");
    assert_eq!(
        finding(&p, findings::RECONCILING).reason,
        findings::reason::SWITCHOVER
    );

    // c holds it: promoted, with no fence, and a restarts as its replica with no rewind.
    observed.members.get_mut("c").unwrap().durable = Some(1040);
    let p = plan(&desired, &observed, at(0.4));
    assert_eq!(actions(&p)[..2], [promote("c", 2), restart("a", "c")]);
    assert!(!actions(&p).contains(&fence("a")));

    // Past the catch-up timeout without it, the switchover is abandoned and a starts again.
    observed.members.get_mut("c").unwrap().durable = Some(1000);
    let p = plan(&desired, &observed, at(11.0));
    assert_eq!(actions(&p)[0], Action::Start { member: "a".into() });
    assert_eq!(p.journal.operation, None);
}

#[test]
fn with_the_primary_silent_a_stopped_replica_is_started_as_it_is_and_nothing_follows_the_primary() {
    // Sync mode: a is down, and so was b, which may hold commits a acknowledged.
    let mut desired = cluster();
    desired.spec.replication.mode = ReplicationMode::Sync;
    let mut observed = healthy("a");
    down(&mut observed, "a", -0.5);
    down(&mut observed, "b", -0.5);
    let with_b = |host: HostAccess| {
        let mut observed = observed.clone();
        observed.members.get_mut("b").unwrap().host = host;
        observed
    };
    let on_b = |p: &Plan| -> Vec<Action> {
        actions(p)
            .into_iter()
            .filter(|a| a.subject() == "b")
            .collect()
    };
    // b's host is back with a replica's data: started as it is (not rewound onto a, which
    // does not answer), so its position can be read.
    let replica_data = HostAccess::Agent(HostObservation {
        reachable: true,
        replica: true,
        branch: Some("r1".into()),
        position: Some(900),
        ..Default::default()
    });
    let p = plan(&desired, &with_b(replica_data), at(0.0));
    assert_eq!(on_b(&p), vec![Action::Start { member: "b".into() }]);
    assert!(
        p.actions[0]
            .why
            .contains("counts when a new primary is chosen")
    );
    // A primary's data is never started on its own: it would accept writes.
    let p = plan(&desired, &with_b(agent_stopped(false, "r1", 900)), at(0.0));
    assert_eq!(on_b(&p), vec![]);
    // c, told to follow nothing, is not pointed at a while a is silent.
    let mut observed = healthy("a");
    down(&mut observed, "a", -0.5);
    observed.members.get_mut("c").unwrap().upstream = None;
    let p = plan(&desired, &observed, at(0.0));
    assert!(
        actions(&p).iter().all(|a| a.subject() != "c"),
        "{:?}",
        actions(&p)
    );
}

#[test]
fn a_member_its_upstream_can_no_longer_feed_is_copied_again() {
    let copy_c = Action::Clone {
        member: "c".into(),
        from: "a".into(),
    };
    let observed_with = |host: HostAccess, c_reachable: bool| {
        let mut observed = healthy("a");
        observed.members.get_mut("a").unwrap().copy_needed_by = vec!["c".into()];
        let c = observed.members.get_mut("c").unwrap();
        c.link_up = Some(false);
        c.host = host;
        c.reachable = c_reachable;
        observed
    };
    let on_c = |p: &Plan| -> Vec<super::PlannedAction> {
        p.actions
            .iter()
            .filter(|a| a.action.subject() == "c")
            .cloned()
            .collect()
    };
    let answering = HostAccess::Agent(HostObservation {
        reachable: true,
        running: true,
        ..Default::default()
    });
    // Its host answers: copied, whatever its role and whether its server runs.
    for reachable in [true, false] {
        let p = plan(
            &cluster(),
            &observed_with(answering.clone(), reachable),
            at(0.0),
        );
        let planned = on_c(&p);
        assert_eq!(planned.len(), 1, "reachable: {reachable}: {planned:?}");
        assert_eq!(planned[0].action, copy_c);
        assert!(
            planned[0]
                .why
                .contains("no longer keeps what it still needs")
        );
        assert!(!planned[0].by_person);
    }
    // No agent: a person is told what to run.
    let p = plan(
        &cluster(),
        &observed_with(HostAccess::Person, true),
        at(0.0),
    );
    let planned = on_c(&p);
    assert_eq!(planned.len(), 1, "{planned:?}");
    assert_eq!(planned[0].action, copy_c);
    assert!(planned[0].by_person);
    // The copy under way, or the host silent: nothing is asked of it.
    let busy = HostAccess::Agent(HostObservation {
        reachable: true,
        busy: Some("clone".into()),
        ..Default::default()
    });
    let silent = HostAccess::Agent(HostObservation::default());
    for host in [busy, silent] {
        let p = plan(&cluster(), &observed_with(host.clone(), false), at(0.0));
        assert_eq!(on_c(&p), vec![], "{host:?}");
    }
    // b, which a still feeds, is left alone.
    let mut observed = healthy("a");
    observed.members.get_mut("a").unwrap().copy_needed_by = vec!["c".into()];
    let p = plan(&cluster(), &observed, at(0.0));
    assert!(actions(&p).iter().all(|a| a.subject() == "c"));
}

#[test]
fn stopped_members_are_restarted_rejoined_or_copied_as_their_data_allows() {
    let observed_with = |host: HostAccess| {
        let mut observed = after_failover();
        let a = observed.members.get_mut("a").unwrap();
        a.reachable = false;
        a.unreachable_since = Some(at(-5.0));
        a.host = host;
        observed
    };
    let on_a = |p: &Plan| -> Vec<Action> {
        actions(p)
            .into_iter()
            .filter(|a| a.subject() == "a")
            .collect()
    };
    let rejoin = Action::Rejoin {
        member: "a".into(),
        from: "b".into(),
    };
    // Cleanly stopped within b's history: started as a replica.
    let p = plan(
        &cluster(),
        &observed_with(agent_stopped(true, "r1", 900)),
        at(0.0),
    );
    assert_eq!(on_a(&p), vec![restart("a", "b")]);
    // Cleanly stopped past the fork: rewound.
    let p = plan(
        &cluster(),
        &observed_with(agent_stopped(true, "r1", 1200)),
        at(0.0),
    );
    assert_eq!(on_a(&p), vec![rejoin.clone()]);
    // Crashed: it may hold changes past its last checkpoint, so it is rewound too.
    let p = plan(
        &cluster(),
        &observed_with(agent_stopped(false, "r1", 900)),
        at(0.0),
    );
    assert_eq!(on_a(&p), vec![rejoin]);
    assert!(p.actions[0].why.contains("without a clean shutdown"));
    // Empty: copied.
    let empty = HostAccess::Agent(HostObservation {
        reachable: true,
        empty: true,
        ..Default::default()
    });
    let p = plan(&cluster(), &observed_with(empty), at(0.0));
    assert_eq!(
        on_a(&p),
        vec![Action::Clone {
            member: "a".into(),
            from: "b".into()
        }]
    );
    // Still running (starting up): left alone.
    let p = plan(&cluster(), &observed_with(agent_running()), at(0.0));
    assert_eq!(on_a(&p), vec![]);
}

#[test]
fn data_its_host_reports_cannot_be_rewound_is_copied_instead() {
    let mut observed = after_failover();
    let a = observed.members.get_mut("a").unwrap();
    a.reachable = false;
    a.unreachable_since = Some(at(-5.0));
    let mut host = agent_stopped(true, "r1", 1200);
    if let HostAccess::Agent(h) = &mut host {
        h.rewindable = Some(false);
    }
    a.host = host.clone();
    let p = plan(&cluster(), &observed, at(0.0));
    let on_a: Vec<&crate::core::plan::PlannedAction> = p
        .actions
        .iter()
        .filter(|a| a.action.subject() == "a")
        .collect();
    assert_eq!(
        on_a.iter().map(|a| a.action.clone()).collect::<Vec<_>>(),
        vec![Action::Clone {
            member: "a".into(),
            from: "b".into()
        }]
    );
    assert!(on_a[0].why.contains("has diverged"), "{}", on_a[0].why);
    assert!(
        on_a[0].why.contains("a rewind cannot bring it back"),
        "{}",
        on_a[0].why
    );

    // Rewindable, or not known: rewound as before.
    for rewindable in [Some(true), None] {
        let mut host = host.clone();
        if let HostAccess::Agent(h) = &mut host {
            h.rewindable = rewindable;
        }
        observed.members.get_mut("a").unwrap().host = host;
        let p = plan(&cluster(), &observed, at(0.0));
        assert!(
            actions(&p).contains(&Action::Rejoin {
                member: "a".into(),
                from: "b".into()
            }),
            "{rewindable:?}: {:?}",
            actions(&p)
        );
    }
}

#[test]
fn a_host_operation_without_an_agent_is_named_for_a_person_and_not_attempted() {
    let mut observed = after_failover();
    let mut a = master(1500);
    a.read_only = Some(true);
    a.host = HostAccess::Person;
    observed.members.insert("a".into(), a);
    let p = plan(&cluster(), &observed, at(0.0));
    let rejoin = p
        .actions
        .iter()
        .find(|a| matches!(a.action, Action::Rejoin { .. }))
        .unwrap();
    assert!(rejoin.by_person);
    let stalled = finding(&p, findings::STALLED);
    assert!(stalled.status);
    assert_eq!(stalled.reason, findings::reason::HOST_OPERATION_NEEDED);
    assert!(
        stalled.message.contains("a has no node agent"),
        "{}",
        stalled.message
    );
}

#[test]
fn a_member_holding_another_data_set_is_refused_never_copied_over() {
    let mut observed = healthy("a");
    observed.journal.identity = Some("7301".into());
    for m in ["a", "b"] {
        observed.members.get_mut(m).unwrap().identity = Some("7301".into());
    }
    let mut c = master(50_000);
    c.identity = Some("9999".into());
    observed.members.insert("c".into(), c);
    let p = plan(&cluster(), &observed, at(0.0));
    assert!(
        !actions(&p).iter().any(|a| a.subject() == "c"),
        "{:?}",
        actions(&p)
    );
    let stalled = finding(&p, findings::STALLED);
    assert_eq!(stalled.reason, findings::reason::FOREIGN_DATA);
    assert!(
        stalled
            .message
            .contains("identity 9999; the cluster's is 7301")
    );

    // Nor is it a failover candidate, however far ahead it is.
    let mut c = replica("a", 90_000);
    c.identity = Some("9999".into());
    observed.members.insert("c".into(), c);
    observed.journal.last_promotion_at = None;
    let mut desired = cluster();
    desired.spec.failover.standby = None;
    down(&mut observed, "a", -2.0);
    let p = plan(&desired, &observed, at(0.0));
    assert_eq!(promotions(&p), vec![("b".to_string(), 2)]);
}

// ---------------------------------------------------------------- invariants

mod invariants {
    use proptest::prelude::*;

    use super::*;

    fn desired_strategy() -> impl Strategy<Value = Desired> {
        (
            2usize..=5,
            prop::collection::vec(0u32..3, 5),
            prop::option::of(0usize..5),
            any::<bool>(),
            any::<bool>(),
            prop::option::of(prop::collection::vec(0usize..3, 5)),
        )
            .prop_map(|(n, priorities, standby, manual, sync, zones)| {
                let names = ["a", "b", "c", "d", "e"];
                let mut desired = cluster();
                desired.spec.members = (0..n)
                    .map(|i| crate::api::Member {
                        name: names[i].into(),
                        address: format!("10.0.0.{}:6379", i + 1),
                        priority: if i == 0 {
                            priorities[i].max(1)
                        } else {
                            priorities[i]
                        },
                        upstream: None,
                        // Zoned clusters cascade: the same invariants hold for them.
                        zone: zones.as_ref().map(|z| format!("zone-{}", z[i])),
                        agent: None,
                    })
                    .collect();
                desired.spec.failover.standby = standby
                    .filter(|&s| s > 0 && s < n)
                    .map(|s| names[s].to_string());
                if manual {
                    desired.spec.failover.mode = crate::api::FailoverMode::Manual;
                }
                if sync {
                    desired.spec.replication.mode = ReplicationMode::Sync;
                }
                desired
            })
    }

    fn observation_strategy() -> impl Strategy<Value = MemberObservation> {
        (
            any::<bool>(),
            prop::option::of(prop_oneof![Just(Role::Master), Just(Role::Replica)]),
            prop::option::of(0usize..5),
            prop::option::of(0u64..3_000_000),
            prop::option::of(any::<bool>()),
            any::<bool>(),
            0u64..10,
            prop::collection::vec(0usize..5, 0..2),
        )
            .prop_map(
                |(reachable, role, upstream, offset, read_only, syncing, down_secs, lost)| {
                    MemberObservation {
                        reachable,
                        unreachable_since: (!reachable).then(|| at(-(down_secs as f64))),
                        role,
                        upstream: upstream.map(|i| ["a", "b", "c", "d", "e"][i].to_string()),
                        durable: offset,
                        applied: offset,
                        history: on_branch("r1"),
                        identity: None,
                        host: Default::default(),
                        link_up: Some(reachable),
                        read_only,
                        syncing,
                        guarded: role.map(|_| true),
                        copy_needed_by: lost
                            .iter()
                            .map(|i| ["a", "b", "c", "d", "e"][*i].to_string())
                            .collect(),
                        refused: !reachable && down_secs % 2 == 0,
                        reached_by: if !reachable && down_secs % 3 == 0 {
                            vec!["b".to_string()]
                        } else {
                            Vec::new()
                        },
                        error: None,
                        error_kind: None,
                        replay_age_ms: None,
                        archive: None,
                    }
                },
            )
    }

    fn world_strategy() -> impl Strategy<Value = (Desired, Observed, Timestamp)> {
        (
            desired_strategy(),
            prop::collection::vec(observation_strategy(), 5),
            prop::option::of(0usize..5),
            0u64..5,
            prop::option::of((0usize..5, any::<bool>(), 0u64..3)),
            0u64..120,
        )
            .prop_map(
                |(desired, observations, current, epoch, operation, last_promo)| {
                    let names: Vec<String> = desired
                        .spec
                        .members
                        .iter()
                        .map(|m| m.name.clone())
                        .collect();
                    let mut observed = Observed::default();
                    for (name, o) in names.iter().zip(observations) {
                        observed.members.insert(name.clone(), o);
                    }
                    let current = current
                        .filter(|&i| i < names.len())
                        .map(|i| names[i].clone());
                    observed.journal = Journal {
                        epoch,
                        current_primary: current.clone(),
                        acknowledged_primary: current.clone(),
                        last_promotion_at: Some(at(-(last_promo as f64))),
                        ..Default::default()
                    };
                    if let (Some(from), Some((to, switchover, extra))) = (current, operation) {
                        let to = names[to % names.len()].clone();
                        if to != from && desired.member(&to).is_some_and(|m| m.priority > 0) {
                            observed.journal.operation = Some(Operation {
                                kind: if switchover {
                                    OperationKind::Switchover
                                } else {
                                    OperationKind::Failover
                                },
                                from: Some(from),
                                to,
                                epoch: epoch + 1 + extra,
                                started_at: at(-2.0),
                                step: Step::Fence,
                                reason: "test".into(),
                            });
                        }
                    }
                    (desired, observed, at(0.0))
                },
            )
    }

    /// Reachable members that accept writes once `plan`'s actions have all succeeded.
    fn writable_after(observed: &Observed, plan: &Plan) -> Vec<String> {
        let mut world = observed.members.clone();
        for a in &plan.actions {
            let Some(o) = world.get_mut(a.action.subject()) else {
                continue;
            };
            if !o.reachable {
                continue;
            }
            match &a.action {
                Action::Fence { .. } => o.read_only = Some(true),
                Action::Promote { .. } => {
                    o.role = Some(Role::Master);
                    o.read_only = Some(false);
                }
                Action::Replicate { .. }
                | Action::Restart { .. }
                | Action::Rejoin { .. }
                | Action::Clone { .. } => {
                    o.role = Some(Role::Replica);
                    o.read_only = Some(true);
                }
                Action::Unfence { .. } | Action::Start { .. } | Action::Initialize { .. } => {
                    o.read_only = Some(false)
                }
                Action::Stop { .. } => o.reachable = false,
                Action::Detach { .. } | Action::RetargetVirtualName { .. } => {}
            }
        }
        world
            .into_iter()
            .filter(|(_, o)| o.is_writable_master())
            .map(|(n, _)| n)
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn plans_are_safe((desired, observed, now) in world_strategy()) {
            let p = plan(&desired, &observed, now);

            // Deterministic.
            prop_assert_eq!(&p, &plan(&desired, &observed, now));

            // Never a priority-0 promotion; at most one promotion; epochs only go up.
            let promoted = promotions(&p);
            prop_assert!(promoted.len() <= 1, "{:?}", promoted);
            for (member, epoch) in &promoted {
                prop_assert!(desired.member(member).unwrap().priority > 0, "promoted priority-0 {}", member);
                prop_assert!(*epoch > observed.journal.epoch, "epoch {} not above {}", epoch, observed.journal.epoch);
            }
            prop_assert!(p.journal.epoch >= observed.journal.epoch);

            // At most one writable master once the plan is applied, whenever it promotes; and a
            // plan never adds a writable master beyond the one it means to have.
            let before = observed.members.values().filter(|o| o.is_writable_master()).count();
            let after = writable_after(&observed, &p);
            if !promoted.is_empty() {
                prop_assert!(after.len() <= 1, "two writable masters after promoting: {:?}", after);
            }
            prop_assert!(after.len() <= before.max(1), "plan added writable masters: {:?}", after);
            if observed.journal.current_primary.is_some() && !desired.spec.suspend {
                let in_switchover_wait = p.journal.operation.as_ref().is_some_and(|op| op.kind == OperationKind::Switchover) && promoted.is_empty();
                if !in_switchover_wait {
                    prop_assert!(after.len() <= 1, "writable masters left: {:?}", after);
                }
            }

            // A suspended cluster is never touched.
            let mut suspended = desired.clone();
            suspended.spec.suspend = true;
            prop_assert!(plan(&suspended, &observed, now).actions.is_empty());
        }
    }
}

#[test]
fn read_names_keep_serving_from_replicas_while_the_primary_is_down() {
    let mut observed = healthy("a");
    down(&mut observed, "a", -0.3);
    for m in ["b", "c"] {
        observed.members.get_mut(m).unwrap().link_up = Some(false);
    }
    let p = plan(&cluster(), &observed, at(0.0));
    assert_eq!(
        retarget(&p, "ro"),
        None,
        "b and c still serve reads: nothing newer exists anywhere"
    );
    assert_eq!(actions(&p), vec![]);
}

#[test]
fn spec_left_behind_is_reported_while_the_old_master_is_still_down() {
    let mut observed = after_failover();
    down(&mut observed, "a", -30.0);
    observed.virtual_names.insert("ro".into(), vec!["c".into()]);
    let p = plan(&cluster(), &observed, at(0.0));
    assert_eq!(actions(&p), vec![]);
    assert!(
        finding(&p, findings::PRIMARY_MISMATCH).status,
        "{:?}",
        p.findings
    );
}

#[test]
fn a_primary_that_restarted_empty_is_failed_over_not_copied_over_its_replicas() {
    let mut observed = healthy("a");
    observed.members.insert("a".into(), master(0));
    for m in ["b", "c"] {
        let o = observed.members.get_mut(m).unwrap();
        o.durable = Some(5_000_000);
        o.link_up = Some(false);
    }
    let p = plan(&cluster(), &observed, at(0.0));
    assert_eq!(actions(&p)[..2], [fence("a"), promote("b", 2)]);
    let op = p.journal.operation.as_ref().unwrap();
    assert!(
        op.reason
            .contains("a answers with position 0 while its replica c holds 5000000"),
        "{}",
        op.reason
    );

    // A replica merely probed a moment after the master is not "ahead" of it.
    let mut skewed = healthy("a");
    skewed.members.get_mut("b").unwrap().durable = Some(1200);
    assert_eq!(actions(&plan(&cluster(), &skewed, at(0.0))), vec![]);
}

#[test]
fn a_primary_that_lost_its_data_is_replaced_even_within_the_cooldown() {
    let mut observed = after_failover();
    observed.members.insert("b".into(), master(0));
    for m in ["a", "c"] {
        observed.members.insert(
            m.into(),
            MemberObservation {
                link_up: Some(false),
                ..replica("b", 4_000_000)
            },
        );
    }
    let p = plan(&cluster(), &observed, at(0.0));
    assert_eq!(promotions(&p).len(), 1, "{:?}", p.findings);
}

#[test]
fn a_master_refusing_connections_is_failed_over_after_refused_after() {
    let mut desired = cluster();
    desired.spec.failover.detect_after = std::time::Duration::from_secs(5).into();
    let mut observed = healthy("a");
    down(&mut observed, "a", -1.2);
    let p = plan(&desired, &observed, at(0.0));
    assert_eq!(promotions(&p), vec![], "silence: wait for detectAfter 5s");

    observed.members.get_mut("a").unwrap().refused = true;
    let p = plan(&desired, &observed, at(0.0));
    assert_eq!(
        promotions(&p),
        vec![("b".to_string(), 2)],
        "no process listening: refusedAfter 1s"
    );
    let op = p.journal.operation.as_ref().unwrap();
    assert!(
        op.reason
            .contains("a refusing connections for 1.2s (refusedAfter 1s)"),
        "{}",
        op.reason
    );
}

#[test]
fn a_primary_the_other_members_still_reach_is_reported_not_failed_over() {
    let mut observed = healthy("a");
    down(&mut observed, "a", -5.0);
    observed.members.get_mut("a").unwrap().reached_by = vec!["b".into(), "c".into()];
    let p = plan(&cluster(), &observed, at(0.0));
    assert_eq!(promotions(&p), vec![]);
    assert_eq!(p.journal.operation, None);
    let blocked = finding(&p, findings::PROMOTION_BLOCKED);
    assert_eq!(blocked.reason, findings::reason::REACHED_BY_PEERS);
    assert!(
        blocked.message.contains("but b, c still reach it"),
        "{}",
        blocked.message
    );
    // Looked at again soon: once they no longer reach it, the failover goes ahead.
    assert!(p.requeue_after <= Duration::from_millis(500));
    observed.members.get_mut("a").unwrap().reached_by.clear();
    assert_eq!(
        promotions(&plan(&cluster(), &observed, at(0.5))),
        vec![("b".to_string(), 2)]
    );

    // A person who names another primary is obeyed: the promotion itself stays safe.
    observed.members.get_mut("a").unwrap().reached_by = vec!["b".into()];
    let mut desired = cluster();
    desired.spec.primary = "c".into();
    assert_eq!(
        promotions(&plan(&desired, &observed, at(1.0))),
        vec![("c".to_string(), 2)]
    );
}
