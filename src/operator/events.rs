//! Kubernetes Events for what a person wants in `kubectl describe`: promotions, fencing, blocked promotions, spec errors. Pure selection, then publishing.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::runtime::events::{Event, EventType};

use crate::{
    api::ReplicationClusterStatus,
    journal::Outcome,
    plan::{Action, findings},
    reconcile::Round,
    status::ActionResult,
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
            Action::FullResync { member, from } => events.push(event(
                EventType::Warning,
                "FullResync",
                "Resync",
                format!(
                    "{member} discards its data and copies {from}: {}",
                    planned.why
                ),
            )),
            _ => {}
        }
    }
    let before = round.observed.journal.history.len();
    let history = &round.applied.journal.history;
    for entry in history.iter().skip(before.min(history.len())) {
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

/// An event for a spec the operator refuses to act on.
pub fn invalid_spec(problems: &[String]) -> Event {
    event(
        EventType::Warning,
        "InvalidSpec",
        "Validate",
        format!("nothing is applied from this spec: {}", problems.join("; ")),
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
    // The Events API caps notes at 1 kB.
    let mut note = note;
    if note.len() > 1000 {
        let mut cut = 1000;
        while !note.is_char_boundary(cut) {
            cut -= 1;
        }
        note.truncate(cut);
    }
    Event {
        type_,
        reason: reason.to_string(),
        note: Some(note),
        action: action.to_string(),
        secondary: None,
    }
}
