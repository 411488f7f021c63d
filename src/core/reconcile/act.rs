//! Act: take the plan's actions in order, journaling each step before it is taken; stop after a required one fails.

use jiff::Timestamp;

use super::{Deps, ReconcileError, Revision};
use crate::core::{
    desired::Desired,
    engine::EngineError,
    history::History,
    journal::Journal,
    observed::Observed,
    plan::{Action, Plan},
    status::{ActError, ActionResult, Applied},
};

pub async fn act(
    desired: &Desired,
    observed: &Observed,
    revision: Revision,
    plan: &Plan,
    deps: &Deps<'_>,
) -> Result<Applied, ReconcileError> {
    let mut written = (observed.journal.clone(), revision);
    let mut journal = plan.journal.clone();
    save_if_changed(deps, &journal, &mut written).await?;
    let mut results = Vec::with_capacity(plan.actions.len());
    let mut halted = false;
    for planned in &plan.actions {
        if halted {
            results.push((planned.clone(), ActionResult::Skipped));
            continue;
        }
        if planned.by_person {
            let command = match deps.engine.hosts() {
                Some(hosts) => hosts.manual_command(&planned.action, desired),
                None => format!("{:?}", planned.action),
            };
            results.push((planned.clone(), ActionResult::Manual(command)));
            continue;
        }
        journal.step_started(planned.action.step());
        save_if_changed(deps, &journal, &mut written).await?;
        if let Some(point) = fault_point("before", &planned.action, &journal) {
            deps.faults.reached(&point);
        }
        deps.store.confirm().map_err(ReconcileError::Act)?;
        let result = execute(desired, &planned.action, journal.epoch, deps).await;
        let result = match result {
            Ok(history) => {
                if let Action::Promote { member, epoch } = &planned.action {
                    journal.promoted(member, *epoch, Timestamp::now(), history);
                }
                save_if_changed(deps, &journal, &mut written).await?;
                if let Some(point) = fault_point("after", &planned.action, &journal) {
                    deps.faults.reached(&point);
                }
                tracing::info!(cluster = %desired.name, action = ?planned.action, why = %planned.why, "applied");
                ActionResult::Done
            }
            Err(error) => {
                if planned.required {
                    tracing::warn!(cluster = %desired.name, action = ?planned.action, %error, "action failed; the rest of this round is skipped");
                } else {
                    // Expected when it targets an unreachable member (fencing a dead master).
                    tracing::info!(cluster = %desired.name, action = ?planned.action, %error, "best-effort action failed");
                }
                halted = planned.required;
                ActionResult::Failed(error)
            }
        };
        results.push((planned.clone(), result));
    }
    // Best effort, after the plan's actions: neither ever holds up the round, and the plan
    // asks again after a while.
    let backups = deps.engine.backups().filter(|_| !halted);
    let member = |name: &str| desired.member(name);
    let backup_refused = match (backups, &plan.backup) {
        (Some(backups), Some(due)) => match member(&due.member) {
            Some(m) => {
                let begun = backups.take(m, due.request.as_deref()).await;
                begun_or_why(desired, &due.member, &due.why, "base backup", begun)
            }
            None => None,
        },
        _ => None,
    };
    let drill_refused = match (backups, &plan.drill) {
        (Some(backups), Some(due)) => match member(&due.member) {
            Some(m) => {
                let begun = backups.drill(m).await;
                begun_or_why(desired, &due.member, &due.why, "restore drill", begun)
            }
            None => None,
        },
        _ => None,
    };
    if let (Some(backups), Some(due)) = (backups, &plan.prune) {
        tracing::info!(cluster = %desired.name, backups = ?due.backups, why = %due.why, "letting go expired backups");
        backups.prune(&due.backups);
    }
    Ok(Applied {
        journal,
        results,
        backup_refused,
        drill_refused,
    })
}

/// Log how beginning `what` on `member` went; why it could not be begun, when it could not.
fn begun_or_why(
    desired: &Desired,
    member: &str,
    why: &str,
    what: &str,
    begun: Result<(), EngineError>,
) -> Option<String> {
    match begun {
        Ok(()) => {
            tracing::info!(cluster = %desired.name, %member, %why, "{what} begun");
            None
        }
        Err(error) => {
            tracing::warn!(cluster = %desired.name, %member, %error, "{what} not begun");
            Some(error.to_string())
        }
    }
}

/// Where an operation's step is, for the [`FaultPoints`](super::FaultPoints) seam: `before-promote`,
/// `after-fence`, ... Only steps of a failover or switchover are points.
fn fault_point(when: &str, action: &Action, journal: &Journal) -> Option<String> {
    journal.operation.as_ref()?;
    Some(format!("{when}-{:?}", action.step()).to_lowercase())
}

/// Save `journal` unless it is what was last written (`written`, with its revision): a save
/// that finds the journal changed since fails, and so does the round.
async fn save_if_changed(
    deps: &Deps<'_>,
    journal: &Journal,
    written: &mut (Journal, Revision),
) -> Result<(), ReconcileError> {
    if *journal != written.0 {
        let revision = deps
            .store
            .save(journal, &written.1)
            .await
            .map_err(ReconcileError::Act)?;
        *written = (journal.clone(), revision);
    }
    Ok(())
}

/// Run one action; a promotion returns the promoted member's history. `epoch` is the newest
/// the journal holds, carried to the hosts so that they refuse older controllers.
async fn execute(
    desired: &Desired,
    action: &Action,
    epoch: u64,
    deps: &Deps<'_>,
) -> Result<Option<History>, ActError> {
    let member = |name: &str| {
        desired
            .member(name)
            .ok_or_else(|| ActError::NotAMember(name.to_string()))
    };
    let engine = deps.engine;
    // Without host operations, a member re-pointed resyncs by itself as it must.
    let hosts = || engine.hosts();
    let no_hosts = |m: &str, operation: &'static str| ActError::NoHostOperations {
        member: m.to_string(),
        operation,
    };
    let done = |result: Result<(), EngineError>| result.map(|()| None).map_err(ActError::from);
    match action {
        Action::Replicate { member: m, from } => {
            done(engine.replicate(member(m)?, member(from)?).await)
        }
        Action::Restart { member: m, from } => match hosts() {
            Some(hosts) => done(hosts.restart(member(m)?, member(from)?, epoch).await),
            None => done(engine.replicate(member(m)?, member(from)?).await),
        },
        Action::Rejoin { member: m, from } => match hosts() {
            Some(hosts) => done(hosts.rejoin(member(m)?, member(from)?, epoch).await),
            None => done(engine.replicate(member(m)?, member(from)?).await),
        },
        Action::Clone { member: m, from } => match hosts() {
            Some(hosts) => done(hosts.clone_from(member(m)?, member(from)?, epoch).await),
            None => done(engine.replicate(member(m)?, member(from)?).await),
        },
        Action::Detach { member: m } => done(engine.detach(member(m)?).await),
        Action::Fence { member: m } => done(engine.fence(member(m)?, epoch).await),
        Action::Stop { member: m } => match hosts() {
            Some(hosts) => done(hosts.stop(member(m)?, epoch).await),
            None => Err(no_hosts(m, "stop")),
        },
        Action::Start { member: m } => match hosts() {
            Some(hosts) => done(hosts.start(member(m)?, epoch).await),
            None => Err(no_hosts(m, "start")),
        },
        Action::Initialize { member: m } => match hosts() {
            Some(hosts) => done(hosts.initialize(member(m)?, epoch).await),
            None => Err(no_hosts(m, "initialize")),
        },
        Action::Promote { member: m, epoch } => Ok(engine.promote(member(m)?, *epoch).await?),
        Action::Unfence { member: m } => done(engine.unfence(member(m)?, epoch).await),
        Action::RetargetVirtualName { name, endpoints } => {
            deps.router.retarget(name, endpoints).await?;
            Ok(None)
        }
    }
}
