//! Human-readable rendering of a plan: what the controller would do, in order, and why.

use std::fmt::Write;

use crate::{
    desired::Desired,
    observed::Observed,
    plan::{Action, Plan, human_duration},
};

fn detail(action: &Action) -> String {
    match action {
        Action::Replicate { from, .. } => format!("from {from}"),
        Action::FullResync { from, .. } => format!("full copy from {from}"),
        Action::Fence { .. } => String::new(),
        Action::Promote { epoch, .. } => format!("epoch {epoch}"),
        Action::SetReadOnly { read_only, .. } => {
            if *read_only { "read-only" } else { "writable" }.to_string()
        }
        Action::RetargetVirtualName { endpoints, .. } => {
            if endpoints.is_empty() {
                "-> (no endpoints)".to_string()
            } else {
                let list: Vec<String> = endpoints
                    .iter()
                    .map(|e| format!("{} ({})", e.member, e.address))
                    .collect();
                format!("-> {}", list.join(", "))
            }
        }
    }
}

fn kind(action: &Action) -> &'static str {
    match action {
        Action::Replicate { .. } => "Replicate",
        Action::FullResync { .. } => "FullResync",
        Action::Fence { .. } => "Fence",
        Action::Promote { .. } => "Promote",
        Action::SetReadOnly { .. } => "SetReadOnly",
        Action::RetargetVirtualName { .. } => "RetargetVirtualName",
    }
}

/// The plan as a table a person can read top to bottom.
pub fn plan_table(desired: &Desired, observed: &Observed, plan: &Plan) -> String {
    let mut out = String::new();
    let before = &observed.journal;
    let _ = writeln!(
        out,
        "Cluster {} ({:?}): spec.primary {}, current primary {}, epoch {}",
        desired.name,
        desired.spec.engine,
        desired.spec.primary,
        before
            .current_primary
            .as_deref()
            .unwrap_or("(not adopted yet)"),
        before.epoch
    );
    let _ = writeln!(out);
    if plan.actions.is_empty() {
        let _ = writeln!(out, "Actions: none");
    } else {
        let rows: Vec<[String; 5]> = plan
            .actions
            .iter()
            .enumerate()
            .map(|(i, a)| {
                [
                    (i + 1).to_string(),
                    kind(&a.action).to_string(),
                    a.action.subject().to_string(),
                    detail(&a.action),
                    format!(
                        "{}{}",
                        if a.required { "" } else { "[best effort] " },
                        a.why
                    ),
                ]
            })
            .collect();
        let header = ["#", "ACTION", "SUBJECT", "DETAIL", "WHY"];
        let widths: Vec<usize> = (0..4)
            .map(|c| {
                rows.iter()
                    .map(|r| r[c].chars().count())
                    .chain([header[c].len()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let line = |cells: [&str; 5]| {
            let mut s = String::new();
            for (c, cell) in cells.iter().enumerate().take(4) {
                let _ = write!(s, "{cell:<width$}  ", width = widths[c]);
            }
            s + cells[4]
        };
        let _ = writeln!(out, "{}", line(header));
        for r in &rows {
            let _ = writeln!(out, "{}", line([&r[0], &r[1], &r[2], &r[3], &r[4]]));
        }
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "Conditions:");
    for f in &plan.findings {
        let status = if f.status { "True" } else { "False" };
        let message = if f.message.is_empty() {
            String::new()
        } else {
            format!("  {}", f.message)
        };
        let _ = writeln!(
            out,
            "  {:<17} {:<6} {}{}",
            f.type_, status, f.reason, message
        );
    }
    let _ = writeln!(out);
    let after = &plan.journal;
    match &after.operation {
        Some(op) => {
            let _ = writeln!(
                out,
                "Journal: {:?} {} -> {} at epoch {} (step {:?}), written before any action",
                op.kind,
                op.from.as_deref().unwrap_or("-"),
                op.to,
                op.epoch,
                op.step
            );
        }
        None if after != before => {
            let _ = writeln!(
                out,
                "Journal: updated (current primary {}, epoch {})",
                after.current_primary.as_deref().unwrap_or("-"),
                after.epoch
            );
        }
        None => {}
    }
    if after.history.len() > before.history.len()
        && let Some(last) = after.history.last()
    {
        let _ = writeln!(
            out,
            "Finished: {:?} to {} at epoch {}: {:?}",
            last.kind, last.to, last.epoch, last.outcome
        );
    }
    let _ = writeln!(out, "Look again in {}", human_duration(plan.requeue_after));
    out
}
