//! Kubernetes Events for what a person wants in `kubectl describe`: promotions, fencing, failed
//! required actions with their kind, blocked promotions, spec errors. Pure selection, then
//! publishing.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::runtime::events::{Event, EventType};

use crate::{
    api::{Outcome, ReplicationClusterStatus},
    core::{
        plan::{Action, findings},
        reconcile::Round,
        status::{ActionResult, failure_message},
    },
};

/// The events one round deserves, given the status published before it.
pub fn for_round(round: &Round, previous: Option<&ReplicationClusterStatus>) -> Vec<Event> {
    let mut events = Vec::new();
    for (planned, result) in &round.applied.results {
        if *result != ActionResult::Done {
            continue;
        }
        match &planned.action {
            Action::Fence { member } => events.push(event(
                EventType::Warning,
                "Fenced",
                "Fence",
                format!("{member} no longer accepts writes: {}", planned.why),
            )),
            Action::Promote { member, epoch } => events.push(event(
                EventType::Normal,
                "Promoted",
                "Promote",
                format!("{member} is master at epoch {epoch}: {}", planned.why),
            )),
            Action::Rejoin { member, from } => events.push(event(
                EventType::Warning,
                "Rejoined",
                "Rejoin",
                format!(
                    "{member} discarded what diverged and follows {from}: {}",
                    planned.why
                ),
            )),
            Action::Clone { member, from } => events.push(event(
                EventType::Normal,
                "Cloned",
                "Clone",
                format!("{member} was copied from {from}: {}", planned.why),
            )),
            Action::Stop { member } => events.push(event(
                EventType::Normal,
                "Stopped",
                "Stop",
                format!("{member} stopped cleanly: {}", planned.why),
            )),
            _ => {}
        }
    }
    for entry in round.finished_operations() {
        let (type_, reason) = match entry.outcome {
            Outcome::Succeeded => (EventType::Normal, format!("{:?}Succeeded", entry.kind)),
            _ => (EventType::Warning, format!("{:?}Aborted", entry.kind)),
        };
        events.push(event(
            type_,
            &reason,
            "Promote",
            format!(
                "{} -> {} (epoch {}): {}",
                entry.from.as_deref().unwrap_or("-"),
                entry.to,
                entry.epoch,
                entry.reason
            ),
        ));
    }
    let before = previous.map(|p| p.conditions.as_slice()).unwrap_or(&[]);
    if let Some(event) = action_failed(round, before) {
        events.push(event);
    }
    for type_ in [findings::PROMOTION_BLOCKED, findings::STALLED] {
        if let Some(c) = newly_true(before, &round.status.conditions, type_) {
            events.push(event(
                EventType::Warning,
                &c.reason,
                type_,
                c.message.clone(),
            ));
        }
    }
    events
}

/// A required action that failed, with its kind (`auth`, `timeout`, `route`, ...), so that a
/// person can tell a refused password, which retrying will not mend, from a slow server. Once
/// per failure: a round that fails as the previous one did (the same message in
/// `Reconciling`) records nothing new.
fn action_failed(round: &Round, before: &[Condition]) -> Option<Event> {
    let (planned, error) = round.applied.failed_required()?;
    let message = failure_message(&planned.action, error);
    let repeated = before.iter().any(|c| {
        c.type_ == findings::RECONCILING && c.reason == "ActionFailed" && c.message == message
    });
    (!repeated).then(|| {
        event(
            EventType::Warning,
            "ActionFailed",
            planned.action.verb(),
            format!("{message} (kind: {})", error.kind()),
        )
    })
}

/// An event for a spec the operator refuses to act on.
pub fn invalid_spec(problems: &[String]) -> Event {
    event(
        EventType::Warning,
        "InvalidSpec",
        "Validate",
        format!("nothing is applied from this spec: {}", problems.join("; ")),
    )
}

/// An event for a cluster the operator cannot manage (a missing Secret, an unsupported engine).
pub fn cannot_manage(message: &str) -> Event {
    event(
        EventType::Warning,
        "CannotManage",
        "Configure",
        message.to_string(),
    )
}

fn newly_true<'a>(
    before: &[Condition],
    after: &'a [Condition],
    type_: &str,
) -> Option<&'a Condition> {
    let now = after
        .iter()
        .find(|c| c.type_ == type_ && c.status == "True")?;
    let was = before
        .iter()
        .find(|c| c.type_ == type_ && c.status == "True");
    match was {
        Some(w) if w.reason == now.reason => None,
        _ => Some(now),
    }
}

fn event(type_: EventType, reason: &str, action: &str, note: String) -> Event {
    // The Events API caps notes at 1 kB: room for the cut and the note of the full length.
    let note = crate::bounded::clip(&note, 960).into_owned();
    Event {
        type_,
        reason: reason.to_string(),
        note: Some(note),
        action: action.to_string(),
        secondary: None,
    }
}

#[cfg(test)]
mod tests {
    use jiff::Timestamp;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use super::*;
    use crate::{
        api::{OperationKind, PromotionRecord},
        core::{journal::Journal, plan::PlannedAction},
    };

    fn planned(action: Action) -> PlannedAction {
        PlannedAction {
            action,
            why: "orders-a unreachable for 1s".into(),
            required: true,
            by_person: false,
        }
    }

    fn round(
        results: Vec<(PlannedAction, ActionResult)>,
        history: Vec<PromotionRecord>,
        conditions: Vec<Condition>,
    ) -> Round {
        let journal = Journal {
            history,
            ..Default::default()
        };
        let status = ReplicationClusterStatus {
            conditions,
            ..Default::default()
        };
        Round::applied(results, journal, status)
    }

    fn blocked(reason: &str) -> Condition {
        Condition {
            type_: findings::PROMOTION_BLOCKED.into(),
            status: "True".into(),
            reason: reason.into(),
            message: "orders-b: lag 784 MiB exceeds maxLag 1 MiB".into(),
            observed_generation: None,
            last_transition_time: Time(Timestamp::UNIX_EPOCH),
        }
    }

    #[test]
    fn fencing_and_promotion_that_took_effect_are_recorded() {
        // Fencing an unreachable old master is best effort: the promotion goes ahead.
        let fence = PlannedAction {
            required: false,
            ..planned(Action::Fence {
                member: "orders-a".into(),
            })
        };
        let r = round(
            vec![
                (
                    fence,
                    ActionResult::Failed(crate::core::status::ActError::Engine(
                        crate::core::engine::EngineError::Refused {
                            address: "orders-a:6379".into(),
                        },
                    )),
                ),
                (
                    planned(Action::Promote {
                        member: "orders-b".into(),
                        epoch: 4,
                    }),
                    ActionResult::Done,
                ),
            ],
            Vec::new(),
            Vec::new(),
        );
        let events = for_round(&r, None);
        assert_eq!(events.len(), 1, "a failed fence is not an event");
        assert_eq!(events[0].reason, "Promoted");
        assert_eq!(events[0].type_, EventType::Normal);
        assert!(
            events[0]
                .note
                .as_deref()
                .unwrap()
                .contains("orders-b is master at epoch 4")
        );
    }

    #[test]
    fn a_failed_required_action_is_one_event_with_its_kind_until_it_changes() {
        let refused = || {
            ActionResult::Failed(crate::core::status::ActError::Engine(
                crate::core::engine::EngineError::Auth {
                    address: "orders-b:6379".into(),
                    message: "WRONGPASS invalid username-password pair".into(),
                },
            ))
        };
        let promote = || {
            planned(Action::Promote {
                member: "orders-b".into(),
                epoch: 4,
            })
        };
        let failing = round(vec![(promote(), refused())], Vec::new(), Vec::new());
        let events = for_round(&failing, None);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].reason, "ActionFailed");
        assert_eq!(events[0].action, "Promote");
        assert_eq!(events[0].type_, EventType::Warning);
        let note = events[0].note.as_deref().unwrap();
        assert!(
            note.starts_with("Promote orders-b (epoch 4) failed: "),
            "{note}"
        );
        assert!(note.contains("retrying will not help until"), "{note}");
        assert!(note.ends_with("(kind: auth)"), "{note}");

        // The next round fails the same way: the status already says so, no second Event.
        let message = failure_message(
            &promote().action,
            &match refused() {
                ActionResult::Failed(e) => e,
                _ => unreachable!(),
            },
        );
        let reconciling = Condition {
            type_: findings::RECONCILING.into(),
            status: "True".into(),
            reason: "ActionFailed".into(),
            message,
            observed_generation: None,
            last_transition_time: Time(Timestamp::UNIX_EPOCH),
        };
        let previous = ReplicationClusterStatus {
            conditions: vec![reconciling.clone()],
            ..Default::default()
        };
        assert!(for_round(&failing, Some(&previous)).is_empty());

        // A best-effort action failing is expected (fencing a dead master): no Event.
        let best_effort = PlannedAction {
            required: false,
            ..planned(Action::Fence {
                member: "orders-a".into(),
            })
        };
        let r = round(vec![(best_effort, refused())], Vec::new(), Vec::new());
        assert!(for_round(&r, None).is_empty());
    }

    #[test]
    fn a_finished_failover_is_one_event() {
        let record = PromotionRecord {
            kind: OperationKind::Failover,
            from: Some("orders-a".into()),
            to: "orders-b".into(),
            epoch: 1,
            started_at: "2026-11-22T00:00:00Z".into(),
            finished_at: "2026-11-22T00:00:01Z".into(),
            outcome: Outcome::Succeeded,
            reason: "orders-a unreachable".into(),
            branch: None,
            fork: None,
        };
        let events = for_round(&round(Vec::new(), vec![record.clone()], Vec::new()), None);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].reason, "FailoverSucceeded");
        assert!(
            events[0]
                .note
                .as_deref()
                .unwrap()
                .starts_with("orders-a -> orders-b (epoch 1)")
        );
        let mut seen = round(Vec::new(), vec![record.clone()], Vec::new());
        seen.observed.journal.history = seen.applied.journal.history.clone();
        assert!(for_round(&seen, None).is_empty(), "history already seen");

        // A full history drops its oldest record as the new one arrives: still one event.
        let older = |epoch| PromotionRecord {
            epoch,
            ..record.clone()
        };
        let mut full = round(Vec::new(), Vec::new(), Vec::new());
        full.observed.journal.history = (0..10).map(older).collect();
        full.applied.journal.history = (1..10).map(older).chain([older(10)]).collect();
        let events = for_round(&full, None);
        assert_eq!(events.len(), 1);
        assert!(events[0].note.as_deref().unwrap().contains("(epoch 10)"));
    }

    #[test]
    fn a_blocked_promotion_is_reported_once_per_reason() {
        let now = round(Vec::new(), Vec::new(), vec![blocked("NoCandidate")]);
        let events = for_round(&now, None);
        assert_eq!(events.len(), 1);
        assert_eq!(
            (events[0].type_, events[0].reason.as_str()),
            (EventType::Warning, "NoCandidate")
        );
        let before = ReplicationClusterStatus {
            conditions: vec![blocked("NoCandidate")],
            ..Default::default()
        };
        assert!(for_round(&now, Some(&before)).is_empty());
        let changed = round(Vec::new(), Vec::new(), vec![blocked("CooldownActive")]);
        assert_eq!(for_round(&changed, Some(&before)).len(), 1);
    }

    #[test]
    fn notes_fit_the_events_api_and_stay_utf8() {
        let long = "é".repeat(800);
        let e = invalid_spec(&[long]);
        let note = e.note.unwrap();
        assert!(note.len() <= 1000 && note.starts_with("nothing is applied"));
    }
}
