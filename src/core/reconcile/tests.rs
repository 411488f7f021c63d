//! `act`'s rules, on the fake engine, journal and router of [`super::fake`]: each step is
//! journaled before it is taken, a failed required step ends the round, a person's step is shown
//! and never taken, a step whose start cannot be journaled is not taken, and an engine without
//! host operations is never asked for one.

use std::time::Duration;

use jiff::Timestamp;

use super::{
    Deps, ReconcileError,
    fake::{CallLog, FakeEngine, LoggedFaults, MemoryJournal, MemoryRouter},
};
use crate::{
    api::OperationKind,
    core::{
        desired::Desired,
        engine::EngineError,
        journal::{Journal, Operation, Step},
        observed::Observed,
        plan::{Action, Plan, PlannedAction},
        routes::Endpoint,
        status::{ActError, ActionResult, Applied},
    },
};

/// Redis members a (the primary being replaced), b and c, and a read-write name.
fn desired() -> Desired {
    serde_yaml::from_str(
        r#"
name: orders
spec:
  engine: redis
  primary: a
  members:
    - { name: a, address: "10.0.0.1:6379", priority: 2 }
    - { name: b, address: "10.0.0.2:6379", priority: 2 }
    - { name: c, address: "10.0.0.3:6379", priority: 1 }
  failover: { standby: b, detectAfter: 1s }
virtualNames:
  - name: rw
    spec: { cluster: orders, target: primary }
"#,
    )
    .unwrap()
}

/// Adopted at epoch 1 with a primary.
fn adopted() -> Journal {
    Journal {
        epoch: 1,
        current_primary: Some("a".into()),
        ..Default::default()
    }
}

/// A failover from a to b at epoch 2, just decided.
fn failing_over() -> Journal {
    Journal {
        operation: Some(Operation {
            kind: OperationKind::Failover,
            from: Some("a".into()),
            to: "b".into(),
            epoch: 2,
            started_at: Timestamp::UNIX_EPOCH,
            step: Step::Detach,
            reason: "a unreachable for 1s".into(),
        }),
        ..adopted()
    }
}

fn planned(action: Action, required: bool) -> PlannedAction {
    PlannedAction {
        action,
        why: "the test says so".into(),
        required,
        by_person: false,
    }
}

fn fence(member: &str) -> Action {
    Action::Fence {
        member: member.into(),
    }
}

fn promote(member: &str, epoch: u64) -> Action {
    Action::Promote {
        member: member.into(),
        epoch,
    }
}

fn replicate(member: &str, from: &str) -> Action {
    Action::Replicate {
        member: member.into(),
        from: from.into(),
    }
}

fn move_rw_to(member: &str) -> Action {
    Action::RetargetVirtualName {
        name: "rw".into(),
        endpoints: vec![Endpoint {
            member: member.into(),
            address: "10.0.0.2:6379".into(),
            zone: None,
        }],
    }
}

/// The failover's four steps: fence a (best effort: it is gone), promote b, re-point c, move
/// the name.
fn failover_plan() -> Plan {
    Plan {
        journal: failing_over(),
        actions: vec![
            planned(fence("a"), false),
            planned(promote("b", 2), true),
            planned(replicate("c", "b"), false),
            planned(move_rw_to("b"), true),
        ],
        findings: Vec::new(),
        placements: Vec::new(),
        requeue_after: Duration::from_secs(1),
        backup: None,
        drill: None,
        prune: None,
    }
}

struct Bed {
    log: CallLog,
    engine: FakeEngine,
    store: MemoryJournal,
    router: MemoryRouter,
    faults: LoggedFaults,
}

impl Bed {
    /// The journal as stored is `adopted()`.
    fn new(with_hosts: bool) -> Self {
        let log = CallLog::default();
        Self {
            engine: FakeEngine::new(&log, with_hosts),
            store: MemoryJournal::new(&log, adopted()),
            router: MemoryRouter::new(&log),
            faults: LoggedFaults { log: log.clone() },
            log,
        }
    }

    async fn act(&self, plan: &Plan) -> Result<Applied, ReconcileError> {
        let observed = Observed {
            journal: self.store.stored(),
            ..Default::default()
        };
        let deps = Deps {
            engine: &self.engine,
            store: &self.store,
            router: &self.router,
            faults: &self.faults,
        };
        super::act(&desired(), &observed, self.store.revision(), plan, &deps).await
    }

    fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

fn results(applied: &Applied) -> Vec<&ActionResult> {
    applied.results.iter().map(|(_, r)| r).collect()
}

#[tokio::test]
async fn each_step_is_journaled_before_it_is_taken_and_a_promotion_after() {
    let bed = Bed::new(false);
    let applied = bed.act(&failover_plan()).await.unwrap();
    assert_eq!(
        bed.log(),
        [
            "save detach epoch 1", // the operation, as decided
            "save fence epoch 1",
            "point before-fence",
            "fence a 1",
            "point after-fence",
            "save promote epoch 1",
            "point before-promote",
            "promote b 2",
            "save promote epoch 2", // b is primary at epoch 2: written before anything else
            "point after-promote",
            "save repoint epoch 2",
            "point before-repoint",
            "replicate c b",
            "point after-repoint",
            "save movenames epoch 2",
            "point before-movenames",
            "retarget rw b",
            "point after-movenames",
        ]
    );
    assert!(results(&applied).iter().all(|r| **r == ActionResult::Done));
    let stored = bed.store.stored();
    assert_eq!(
        (stored.epoch, stored.current_primary.as_deref()),
        (2, Some("b"))
    );
    assert_eq!(stored.primary_history.unwrap().branch, "branch-2");
    assert_eq!(applied.journal, bed.store.stored());
}

#[tokio::test]
async fn a_failed_required_step_ends_the_round_and_a_best_effort_one_does_not() {
    let bed = Bed::new(false);
    let refused = EngineError::Refused {
        address: "10.0.0.1:6379".into(),
    };
    let auth = EngineError::Auth {
        address: "10.0.0.2:6379".into(),
        message: "WRONGPASS".into(),
    };
    bed.engine.fail("fence a 1", refused.clone());
    bed.engine.fail("promote b 2", auth.clone());
    let applied = bed.act(&failover_plan()).await.unwrap();
    assert_eq!(
        results(&applied),
        [
            &ActionResult::Failed(ActError::Engine(refused)),
            &ActionResult::Failed(ActError::Engine(auth)),
            &ActionResult::Skipped,
            &ActionResult::Skipped,
        ]
    );
    let log = bed.log();
    assert!(log.contains(&"promote b 2".to_string()), "{log:?}");
    assert!(
        !log.iter()
            .any(|l| l.starts_with("replicate") || l.starts_with("retarget")),
        "steps after a failed required one were taken: {log:?}"
    );
    // The failure says its kind, and that retrying alone will not help.
    let (_, error) = applied.failures().nth(1).unwrap();
    assert_eq!(error.kind(), "auth");
    assert!(error.needs().is_some());
    // Nothing was promoted: the journal still says a, with the promotion step started.
    let stored = bed.store.stored();
    assert_eq!(
        (stored.epoch, stored.current_primary.as_deref()),
        (1, Some("a"))
    );
    assert_eq!(stored.operation.unwrap().step, Step::Promote);
}

#[tokio::test]
async fn a_step_for_a_person_is_shown_and_never_taken() {
    let bed = Bed::new(true);
    let clone = Action::Clone {
        member: "c".into(),
        from: "a".into(),
    };
    let plan = Plan {
        journal: adopted(),
        actions: vec![
            PlannedAction {
                by_person: true,
                ..planned(clone.clone(), true)
            },
            planned(replicate("b", "a"), false),
        ],
        ..failover_plan()
    };
    let applied = bed.act(&plan).await.unwrap();
    assert_eq!(
        results(&applied),
        [
            &ActionResult::Manual(format!("run by hand: {clone:?}")),
            &ActionResult::Done,
        ]
    );
    assert_eq!(
        bed.log(),
        ["replicate b a"],
        "no operation in flight: nothing to save"
    );
}

#[tokio::test]
async fn no_step_is_taken_when_its_start_cannot_be_journaled() {
    let bed = Bed::new(false);
    // The operation is written; the start of its first step is not.
    bed.store.fail_saves_from(1);
    let error = bed.act(&failover_plan()).await.unwrap_err();
    assert!(matches!(error, ReconcileError::Act(_)), "{error:?}");
    assert_eq!(bed.log(), ["save detach epoch 1", "save failed"]);
}

#[tokio::test]
async fn an_engine_without_host_operations_repoints_instead_and_is_never_asked_to_stop() {
    let rejoin = Action::Rejoin {
        member: "c".into(),
        from: "b".into(),
    };
    let stop = Action::Stop { member: "a".into() };
    let plan = Plan {
        journal: adopted(),
        actions: vec![planned(rejoin, false), planned(stop, false)],
        ..failover_plan()
    };

    let without = Bed::new(false);
    let applied = without.act(&plan).await.unwrap();
    assert_eq!(without.log(), ["replicate c b"]);
    let (_, error) = applied.failures().next().unwrap();
    assert_eq!(
        *error,
        ActError::NoHostOperations {
            member: "a".into(),
            operation: "stop",
        }
    );
    assert_eq!(error.kind(), "unsupported");

    let with = Bed::new(true);
    let applied = with.act(&plan).await.unwrap();
    assert_eq!(with.log(), ["rejoin c b", "stop a 1"]);
    assert_eq!(applied.failures().count(), 0);
}

/// A spec changed under a round: the plan names a member the spec no longer has.
#[tokio::test]
async fn an_action_on_a_member_the_spec_lacks_fails_as_such() {
    let bed = Bed::new(false);
    let plan = Plan {
        journal: adopted(),
        actions: vec![planned(replicate("z", "a"), true)],
        ..failover_plan()
    };
    let applied = bed.act(&plan).await.unwrap();
    assert_eq!(
        results(&applied),
        [&ActionResult::Failed(ActError::NotAMember("z".into()))]
    );
    assert!(bed.log().is_empty());
}
