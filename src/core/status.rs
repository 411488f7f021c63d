//! Status computed from what was actually applied, never from the plan alone. Pure.
//!
//! Conditions keep their `lastTransitionTime` while their status is unchanged, and are compared
//! without timestamps, so publishing the same state twice writes nothing.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::{
    api::{MemberStatus, ReplicationClusterStatus, Role},
    core::{
        desired::Desired,
        engine::EngineError,
        journal::Journal,
        observed::Observed,
        plan::{Action, Finding, Plan, PlannedAction, findings, observation},
        routes::RouteError,
    },
};

/// What became of one planned action.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ActionResult {
    Done,
    Failed(ActError),
    /// Not attempted because a required action before it failed.
    Skipped,
    /// A host operation for a person to carry out: the command to run.
    Manual(String),
}

/// Why an action failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ActError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Route(#[from] RouteError),
    /// The plan names a member the spec does not have (a spec changed under a round).
    #[error("{0} is not a member")]
    NotAMember(String),
    /// A host operation for an engine whose members have none.
    #[error("{member}: replicant does not {operation} the servers of this engine")]
    NoHostOperations {
        member: String,
        operation: &'static str,
    },
}

impl ActError {
    /// The class of failure, as metrics label it: a probe error's class for an engine's
    /// error, else `route`, `spec` or `unsupported`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Engine(error) => error.kind().as_str(),
            Self::Route(_) => "route",
            Self::NotAMember(_) => "spec",
            Self::NoHostOperations { .. } => "unsupported",
        }
    }

    /// What a person must change before trying again can help, when trying again alone
    /// cannot.
    pub fn needs(&self) -> Option<&'static str> {
        match self {
            Self::Engine(EngineError::Auth { .. }) => Some("the credentials the server accepts"),
            Self::NotAMember(_) => Some("the spec"),
            Self::NoHostOperations { .. } => Some("the spec or the server, by hand"),
            Self::Engine(_) | Self::Route(_) => None,
        }
    }
}

/// The outcome of `act`: the journal as finally written and each action's result.
#[derive(Clone, Debug, PartialEq)]
pub struct Applied {
    pub journal: Journal,
    pub results: Vec<(PlannedAction, ActionResult)>,
    /// Why the base backup the plan asked for could not be begun, when it could not.
    pub backup_refused: Option<String>,
    /// Likewise for the restore drill.
    pub drill_refused: Option<String>,
}

impl Applied {
    /// The required action that failed and ended the round, if one did.
    pub fn failed_required(&self) -> Option<(&PlannedAction, &ActError)> {
        self.failures().find(|(a, _)| a.required)
    }

    pub fn failures(&self) -> impl Iterator<Item = (&PlannedAction, &ActError)> {
        self.results.iter().filter_map(|(a, r)| match r {
            ActionResult::Failed(e) => Some((a, e)),
            _ => None,
        })
    }
}

/// Build the status to publish.
pub fn cluster_status(
    desired: &Desired,
    observed: &Observed,
    plan: &Plan,
    applied: &Applied,
    previous: Option<&ReplicationClusterStatus>,
    generation: Option<i64>,
    now: Timestamp,
) -> ReplicationClusterStatus {
    let journal = &applied.journal;
    let primary = journal.current_primary.as_deref();
    let primary_offset = primary.and_then(|p| observation(observed, p).durable);
    let members: Vec<MemberStatus> = desired
        .spec
        .members
        .iter()
        .map(|m| {
            let o = observation(observed, &m.name);
            let lag_bytes = match (o.role, primary_offset, o.durable) {
                (Some(Role::Replica), Some(p), Some(r)) => Some(p.saturating_sub(r)),
                _ => None,
            };
            MemberStatus {
                name: m.name.clone(),
                reachable: o.reachable,
                role: o.role,
                upstream: o.upstream.clone(),
                zone: m.zone.clone(),
                placement: plan
                    .placements
                    .iter()
                    .find(|p| p.member == m.name)
                    .map(|p| p.sentence()),
                offset: o.durable,
                applied: o.applied.filter(|a| Some(*a) != o.durable),
                branch: o.history.as_ref().map(|h| h.branch.clone()),
                lag_bytes,
                link_up: o.link_up,
                read_only: o.read_only,
                message: o.error.clone(),
            }
        })
        .collect();
    let untouched = |name: &str| {
        !applied
            .results
            .iter()
            .any(|(a, _)| a.action.subject() == name)
    };
    let ready = members
        .iter()
        .filter(|m| m.reachable && untouched(&m.name))
        .filter(|m| match m.role {
            Some(Role::Master) => Some(m.name.as_str()) == primary && m.read_only != Some(true),
            Some(Role::Replica) => Some(m.name.as_str()) != primary && m.link_up == Some(true),
            None => false,
        })
        .count();

    let mut adjusted: Vec<Finding> = plan.findings.to_vec();
    // A best-effort action failing (fencing a dead master) is expected and changes nothing.
    if let Some((action, error)) = applied.failed_required() {
        let message = failure_message(&action.action, error);
        for f in adjusted.iter_mut() {
            if f.type_ == findings::READY {
                *f = Finding::new(findings::READY, false, "ActionFailed", message.clone());
            } else if f.type_ == findings::RECONCILING {
                *f = Finding::new(findings::RECONCILING, true, "ActionFailed", message.clone());
            }
        }
    }
    // A host operation waiting for a person: say exactly what to run.
    let manual: Vec<String> = applied
        .results
        .iter()
        .filter_map(|(a, r)| match r {
            ActionResult::Manual(command) => {
                Some(format!("on {}'s host, run: {command}", a.action.subject()))
            }
            _ => None,
        })
        .collect();
    if !manual.is_empty() {
        let suffix = manual.join("; ");
        for f in adjusted.iter_mut() {
            if f.reason == findings::reason::HOST_OPERATION_NEEDED {
                f.message = format!("{}. {suffix}", f.message);
            }
        }
    }
    let previous_conditions = previous
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    let archive = crate::core::archiving::archive_status(
        desired,
        observed,
        journal.current_primary.as_deref(),
        now,
    )
    .map(|(status, finding)| {
        adjusted.push(finding);
        status
    });
    let backup = crate::core::backups::backup_status(
        desired,
        observed,
        plan.backup.as_ref(),
        applied.backup_refused.as_deref(),
        now,
    )
    .map(|(mut status, finding)| {
        adjusted.push(finding);
        if let Some((last, running, finding)) = crate::core::backups::drill_status(
            desired,
            observed,
            plan.drill.as_ref(),
            applied.drill_refused.as_deref(),
            now,
        ) {
            status.last_drill = last;
            status.drill_running = running;
            adjusted.push(finding);
        }
        status
    });
    let conditions = adjusted
        .iter()
        .map(|f| to_condition(f, previous_conditions, generation, now))
        .collect();

    let primary = members
        .iter()
        .find(|m| Some(&m.name) == journal.current_primary.as_ref());
    ReplicationClusterStatus {
        observed_generation: generation,
        current_primary: journal.current_primary.clone(),
        epoch: journal.epoch,
        ready_members: Some(format!("{ready}/{}", desired.spec.members.len())),
        branch: primary.and_then(|m| m.branch.clone()),
        position: primary.and_then(|m| m.offset),
        members,
        conditions,
        history: journal.history.clone(),
        archive,
        backup,
    }
}

/// "Promote orders-b (epoch 4)", for messages.
/// What a person reads about a failed action: what failed, why, and when retrying cannot help.
pub fn failure_message(action: &Action, error: &ActError) -> String {
    let mut message = format!("{} failed: {error}", describe(action));
    if let Some(needs) = error.needs() {
        message.push_str(&format!(" (retrying will not help until {needs} changes)"));
    }
    message
}

pub fn describe(action: &Action) -> String {
    match action {
        Action::Replicate { member, from } => format!("Replicate {member} from {from}"),
        Action::Restart { member, from } => format!("Restart {member} as a replica of {from}"),
        Action::Rejoin { member, from } => format!("Rejoin {member} to {from}"),
        Action::Clone { member, from } => format!("Clone {member} from {from}"),
        Action::Detach { member } => format!("Detach {member}"),
        Action::Fence { member } => format!("Fence {member}"),
        Action::Stop { member } => format!("Stop {member}"),
        Action::Start { member } => format!("Start {member}"),
        Action::Initialize { member } => format!("Initialize {member}"),
        Action::Promote { member, epoch } => format!("Promote {member} (epoch {epoch})"),
        Action::Unfence { member } => format!("Unfence {member}"),
        Action::RetargetVirtualName { name, .. } => format!("RetargetVirtualName {name}"),
    }
}

fn to_condition(
    f: &Finding,
    previous: &[Condition],
    generation: Option<i64>,
    now: Timestamp,
) -> Condition {
    let status = if f.status { "True" } else { "False" }.to_string();
    let since = previous
        .iter()
        .find(|c| c.type_ == f.type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or(Time(now));
    Condition {
        type_: f.type_.clone(),
        status,
        reason: f.reason.clone(),
        message: f.message.clone(),
        observed_generation: generation,
        last_transition_time: since,
    }
}

/// Set one condition in place, keeping its `lastTransitionTime` while its status is unchanged.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    finding: &Finding,
    generation: Option<i64>,
    now: Timestamp,
) {
    let new = to_condition(finding, conditions, generation, now);
    match conditions.iter_mut().find(|c| c.type_ == new.type_) {
        Some(c) => *c = new,
        None => conditions.push(new),
    }
}

/// Whether two condition lists say the same thing, ignoring when they started saying it.
pub fn same_conditions(a: &[Condition], b: &[Condition]) -> bool {
    let key = |c: &Condition| {
        (
            c.type_.clone(),
            c.status.clone(),
            c.reason.clone(),
            c.message.clone(),
            c.observed_generation,
        )
    };
    let mut a: Vec<_> = a.iter().map(key).collect();
    let mut b: Vec<_> = b.iter().map(key).collect();
    a.sort();
    b.sort();
    a == b
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{
        observed::MemberObservation,
        plan::{self, PlannedAction},
    };

    fn desired() -> Desired {
        serde_yaml::from_str(
            r#"
name: orders
spec:
  engine: redis
  primary: a
  members:
    - { name: a, address: "127.0.0.1:1" }
    - { name: b, address: "127.0.0.1:2" }
"#,
        )
        .unwrap()
    }

    fn observed() -> Observed {
        let mut o = Observed::default();
        o.members.insert(
            "a".into(),
            MemberObservation {
                reachable: true,
                role: Some(Role::Master),
                durable: Some(500),
                read_only: Some(false),
                ..Default::default()
            },
        );
        o.members.insert(
            "b".into(),
            MemberObservation {
                reachable: true,
                role: Some(Role::Replica),
                upstream: Some("a".into()),
                durable: Some(400),
                link_up: Some(true),
                read_only: Some(true),
                ..Default::default()
            },
        );
        o.journal.current_primary = Some("a".into());
        o.journal.acknowledged_primary = Some("a".into());
        o
    }

    #[test]
    fn status_reports_members_lag_and_readiness() {
        let (d, o) = (desired(), observed());
        let now: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let p = plan::plan(&d, &o, now);
        let applied = Applied {
            journal: p.journal.clone(),
            results: vec![],
            backup_refused: None,
            drill_refused: None,
        };
        let s = cluster_status(&d, &o, &p, &applied, None, Some(3), now);
        assert_eq!(s.current_primary.as_deref(), Some("a"));
        assert_eq!(s.ready_members.as_deref(), Some("2/2"));
        assert_eq!(s.members[1].lag_bytes, Some(100));
        assert_eq!(s.observed_generation, Some(3));
        let ready = s.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!(ready.status, "True");

        // Same state later: conditions keep their transition time and compare equal.
        let later: Timestamp = "2026-01-01T00:05:00Z".parse().unwrap();
        let again = cluster_status(&d, &o, &p, &applied, Some(&s), Some(3), later);
        assert_eq!(again, s);
        assert!(same_conditions(&again.conditions, &s.conditions));
    }

    #[test]
    fn a_failed_action_shows_in_ready_and_status_follows_the_applied_journal() {
        let (d, o) = (desired(), observed());
        let now: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let promote = PlannedAction {
            action: Action::Promote {
                member: "b".into(),
                epoch: 1,
            },
            why: "test".into(),
            required: true,
            by_person: false,
        };
        let applied = Applied {
            journal: o.journal.clone(),
            backup_refused: None,
            drill_refused: None,
            results: vec![(
                promote,
                ActionResult::Failed(ActError::Engine(EngineError::Timeout {
                    address: "b:6379".into(),
                    millis: 500,
                    during: "promote",
                })),
            )],
        };
        let p = plan::plan(&d, &o, now);
        let s = cluster_status(&d, &o, &p, &applied, None, None, now);
        assert_eq!(
            s.current_primary.as_deref(),
            Some("a"),
            "the promotion did not happen"
        );
        let ready = s.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "ActionFailed")
        );
        assert_eq!(
            ready.message,
            "Promote b (epoch 1) failed: b:6379: no answer within 500ms (promote)"
        );
        assert_eq!(s.ready_members.as_deref(), Some("1/2"));

        // Refused credentials: the message says that trying again will not help.
        let applied = Applied {
            results: vec![(
                applied.results[0].0.clone(),
                ActionResult::Failed(ActError::Engine(EngineError::Auth {
                    address: "b:6379".into(),
                    message: "password authentication failed".into(),
                })),
            )],
            ..applied
        };
        let s = cluster_status(&d, &o, &p, &applied, None, None, now);
        let ready = s.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!(
            ready.message,
            "Promote b (epoch 1) failed: b:6379: authentication failed: password authentication \
             failed (retrying will not help until the credentials the server accepts changes)"
        );
    }
}
