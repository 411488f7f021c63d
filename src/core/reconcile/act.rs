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
    status::{ActionResult, Applied},
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
            let command = deps.engine.manual_command(&planned.action, desired);
            results.push((planned.clone(), ActionResult::Manual(command)));
            continue;
        }
        journal.step_started(planned.action.step());
        save_if_changed(deps, &journal, &mut written).await?;
        crash_point("before", &planned.action, &journal);
        deps.store.confirm().map_err(ReconcileError::Act)?;
        let result = execute(desired, &planned.action, journal.epoch, deps).await;
        let result = match result {
            Ok(history) => {
                if let Action::Promote { member, epoch } = &planned.action {
                    journal.promoted(member, *epoch, Timestamp::now(), history);
                }
                save_if_changed(deps, &journal, &mut written).await?;
                crash_point("after", &planned.action, &journal);
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
    Ok(Applied { journal, results })
}

/// Fault injection for crash-recovery tests: with `REPLICANT_CRASH_AT=before-promote` (or
/// `after-fence`, ...) the process dies like `kill -9` at that point of a failover or switchover;
/// with `REPLICANT_FREEZE_AT=...` it stops itself (SIGSTOP) there once, until sent SIGCONT.
fn crash_point(when: &str, action: &Action, journal: &Journal) {
    if journal.operation.is_none() {
        return;
    }
    let point = format!("{when}-{:?}", action.step()).to_lowercase();
    if std::env::var("REPLICANT_CRASH_AT").is_ok_and(|wanted| wanted == point) {
        eprintln!("REPLICANT_CRASH_AT={point}: aborting");
        std::process::abort();
    }
    static FROZEN: std::sync::Once = std::sync::Once::new();
    if std::env::var("REPLICANT_FREEZE_AT").is_ok_and(|wanted| wanted == point) {
        FROZEN.call_once(|| {
            eprintln!("REPLICANT_FREEZE_AT={point}: stopping");
            let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGSTOP);
        });
    }
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
) -> Result<Option<History>, String> {
    let member = |name: &str| {
        desired
            .member(name)
            .ok_or_else(|| format!("{name} is not a member"))
    };
    let engine = deps.engine;
    let done = |result: Result<(), EngineError>| result.map(|()| None);
    match action {
        Action::Replicate { member: m, from } => {
            done(engine.replicate(member(m)?, member(from)?).await)
        }
        Action::Restart { member: m, from } => {
            done(engine.restart(member(m)?, member(from)?, epoch).await)
        }
        Action::Rejoin { member: m, from } => {
            done(engine.rejoin(member(m)?, member(from)?, epoch).await)
        }
        Action::Clone { member: m, from } => {
            done(engine.clone_from(member(m)?, member(from)?, epoch).await)
        }
        Action::Detach { member: m } => done(engine.detach(member(m)?).await),
        Action::Fence { member: m } => done(engine.fence(member(m)?, epoch).await),
        Action::Stop { member: m } => done(engine.stop(member(m)?, epoch).await),
        Action::Start { member: m } => done(engine.start(member(m)?, epoch).await),
        Action::Initialize { member: m } => done(engine.initialize(member(m)?, epoch).await),
        Action::Promote { member: m, epoch } => engine.promote(member(m)?, *epoch).await,
        Action::Unfence { member: m } => done(engine.unfence(member(m)?, epoch).await),
        Action::RetargetVirtualName { name, endpoints } => {
            return deps.router.retarget(name, endpoints).await.map(|_| None);
        }
    }
    .map_err(|e| e.to_string())
}
