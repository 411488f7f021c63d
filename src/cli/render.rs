//! Human-readable rendering of a plan: what the controller would do, in order, and why.

use std::fmt::Write;

use crate::core::{
    desired::Desired,
    observed::Observed,
    plan::{Action, Plan, human_duration},
};

fn detail(action: &Action) -> String {
    match action {
        Action::Replicate { from, .. } | Action::Restart { from, .. } => format!("from {from}"),
        Action::Rejoin { from, .. } => format!("onto {from}'s history"),
        Action::Clone { from, .. } => format!("full copy from {from}"),
        Action::Detach { .. }
        | Action::Fence { .. }
        | Action::Stop { .. }
        | Action::Start { .. }
        | Action::Initialize { .. }
        | Action::Unfence { .. } => String::new(),
        Action::Promote { epoch, .. } => format!("epoch {epoch}"),
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
                    a.action.verb().to_string(),
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
    if !plan.placements.is_empty() {
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "Replication ({}):",
            if desired.spec.zone_aware() {
                "zoneAware"
            } else {
                "direct"
            }
        );
        let zone = |member: &str| {
            desired
                .member(member)
                .and_then(|m| m.zone.as_deref())
                .unwrap_or("-")
        };
        let width = |f: &dyn Fn(&crate::core::plan::Placement) -> usize| {
            plan.placements.iter().map(f).max().unwrap_or(0)
        };
        let (member_width, zone_width) = (
            width(&|p| p.member.chars().count()),
            width(&|p| zone(&p.member).chars().count()),
        );
        for p in &plan.placements {
            let what = match &p.upstream {
                Some(from) => format!("follows {from}: {}", p.why),
                None => p.why.clone(),
            };
            let _ = writeln!(
                out,
                "  {:<member_width$}  {:<zone_width$}  {what}",
                p.member,
                zone(&p.member)
            );
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

/// Problems in the spec directory, before the clusters; nothing when there are none.
pub fn specs_table(specs: &crate::runtime::report::SpecsReport) -> String {
    let mut out = String::new();
    if specs.problems.is_empty() {
        return out;
    }
    let _ = writeln!(
        out,
        "Spec problems (nothing is applied from these; every object keeps its last good version):"
    );
    for problem in &specs.problems {
        let _ = writeln!(out, "  {problem}");
    }
    let _ = writeln!(out);
    out
}

/// The instances coordinated through etcd: who leads, who is present, and what each found wrong
/// in its own spec directory.
pub fn instances_table(overview: &crate::runtime::etcd::status::Overview) -> String {
    let mut out = String::new();
    let leader = overview.leader.as_deref().unwrap_or("none");
    let _ = writeln!(out, "Leader: {leader}");
    let _ = writeln!(out, "Instances:");
    if overview.instances.is_empty() {
        let _ = writeln!(out, "  none present");
    }
    for instance in &overview.instances {
        let proxies = instance
            .proxy_host
            .as_deref()
            .map(|h| format!(" (proxies on {h})"))
            .unwrap_or_default();
        let _ = writeln!(out, "  {}{proxies}", instance.identity);
        for problem in &instance.spec_problems {
            let _ = writeln!(out, "    spec problem: {problem}");
        }
    }
    let _ = writeln!(out);
    out
}

/// Per cluster: members, virtual names, conditions and recent history.
pub fn status_table(reports: &[crate::runtime::report::ClusterReport]) -> String {
    let mut out = String::new();
    if reports.is_empty() {
        let _ = writeln!(out, "no clusters yet");
    }
    for r in reports {
        let s = &r.status;
        let _ = writeln!(
            out,
            "Cluster {}/{} ({}): primary {} (spec.primary {}), epoch {}, ready {}",
            r.namespace,
            r.name,
            r.engine,
            s.current_primary.as_deref().unwrap_or("-"),
            r.spec_primary,
            s.epoch,
            s.ready_members.as_deref().unwrap_or("-")
        );
        if let Some(error) = &r.error {
            let _ = writeln!(out, "  ERROR: {error}");
        }
        let _ = writeln!(
            out,
            "  {:<16} {:<10} {:<8} {:<16} {:>12} {:>10}  LINK",
            "MEMBER", "REACHABLE", "ROLE", "UPSTREAM", "OFFSET", "LAG"
        );
        for m in &s.members {
            let _ = writeln!(
                out,
                "  {:<16} {:<10} {:<8} {:<16} {:>12} {:>10}  {}",
                m.name,
                if m.reachable { "yes" } else { "NO" },
                m.role
                    .map(|r| format!("{r:?}").to_lowercase())
                    .unwrap_or_else(|| "-".into()),
                m.upstream.as_deref().unwrap_or("-"),
                m.offset
                    .map(|o| o.to_string())
                    .unwrap_or_else(|| "-".into()),
                m.lag_bytes
                    .map(crate::api::human_bytes)
                    .unwrap_or_else(|| "-".into()),
                match m.link_up {
                    Some(true) => "up",
                    Some(false) => "down",
                    None => "-",
                }
            );
        }
        if s.members.iter().any(|m| m.zone.is_some()) {
            for m in &s.members {
                if let Some(placement) = &m.placement {
                    let zone = m.zone.as_deref().unwrap_or("-");
                    let _ = writeln!(out, "  zone {zone:<14} {placement}");
                }
            }
        }
        for vn in &r.virtual_names {
            let _ = writeln!(
                out,
                "  name {:<14} target {:<10} listen {:<22} -> {}",
                vn.name,
                vn.target,
                vn.listen.as_deref().unwrap_or("-"),
                if vn.endpoints.is_empty() {
                    "(none)".to_string()
                } else {
                    vn.endpoints.join(", ")
                }
            );
        }
        if let Some(archive) = &s.archive {
            let _ = writeln!(
                out,
                "  archive: to {}, newest {}, lag {}",
                archive.repository,
                archive.last_archived.as_deref().unwrap_or("-"),
                archive
                    .lag_seconds
                    .map(|s| format!("{s}s"))
                    .unwrap_or_else(|| "-".into())
            );
        }
        if let Some(backup) = &s.backup {
            let _ = writeln!(out, "{}", backup_line(backup));
        }
        // Conditions that are good news when True say so only when they are not.
        const GOOD_WHEN_TRUE: [&str; 3] = [
            "ContinuousArchiving",
            "BackupSucceeded",
            "RestoreDrillPassed",
        ];
        for c in &s.conditions {
            let bad_news = GOOD_WHEN_TRUE.contains(&c.type_.as_str()) && c.status != "True";
            if (c.status == "True" && !GOOD_WHEN_TRUE.contains(&c.type_.as_str()))
                || c.type_ == "Ready"
                || bad_news
            {
                let _ = writeln!(
                    out,
                    "  {:<17} {:<6} {:<22} {}",
                    c.type_, c.status, c.reason, c.message
                );
            }
        }
        for h in s.history.iter().rev().take(5) {
            let _ = writeln!(
                out,
                "  history: {} {:?} {} -> {} epoch {} {:?}: {}",
                h.finished_at,
                h.kind,
                h.from.as_deref().unwrap_or("-"),
                h.to,
                h.epoch,
                h.outcome,
                h.reason
            );
        }
        for p in &r.spec_problems {
            let _ = writeln!(out, "  spec problem (last good spec still running): {p}");
        }
        for e in &r.events {
            let _ = writeln!(out, "  event: {e}");
        }
        let _ = writeln!(out);
    }
    out
}

/// A cluster's base backups in one line: the newest, the recoverable window, the newest drill.
fn backup_line(backup: &crate::api::BackupStatus) -> String {
    let newest = match &backup.last_backup {
        Some(b) => format!(
            "newest {} from {} ({} in {}) of {}",
            b.id,
            b.member,
            crate::api::human_bytes(b.size_bytes),
            b.duration,
            backup.backup_count
        ),
        None => "none yet".to_string(),
    };
    let window = match (backup.recoverable.first(), backup.recoverable.last()) {
        (Some(first), Some(last)) => format!(
            "; recoverable {} .. {}{}",
            first.earliest,
            last.latest,
            match backup.recoverable.len() {
                1 => String::new(),
                n => format!(" ({n} stretches)"),
            }
        ),
        _ => String::new(),
    };
    let drill = match &backup.last_drill {
        Some(d) => format!(
            "; drill {} {} ({})",
            if d.passed { "passed" } else { "FAILED" },
            d.finished_at,
            d.restore_duration.as_deref().unwrap_or("-")
        ),
        None => String::new(),
    };
    format!(
        "  backups in {}: {newest}{window}{drill}",
        backup.repository
    )
}

/// The demo's closing lines: per trial and the median.
pub fn demo_summary(trials: &[crate::demo::Trial]) -> String {
    let mut out = String::new();
    let mut gaps: Vec<f64> = trials.iter().map(|t| t.write_gap.as_secs_f64()).collect();
    gaps.sort_by(f64::total_cmp);
    let median = if gaps.is_empty() {
        0.0
    } else if gaps.len() % 2 == 1 {
        gaps[gaps.len() / 2]
    } else {
        (gaps[gaps.len() / 2 - 1] + gaps[gaps.len() / 2]) / 2.0
    };
    let lost: usize = trials.iter().map(|t| t.lost).sum();
    let acked: usize = trials.iter().map(|t| t.acknowledged).sum();
    let _ = writeln!(
        out,
        "\n== summary: {} trial(s), detectAfter 1s",
        trials.len()
    );
    let _ = writeln!(
        out,
        "write unavailability after kill -9: median {median:.3}s (each: {})",
        gaps.iter()
            .map(|g| format!("{g:.3}s"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let _ = writeln!(out, "acknowledged writes: {acked}; lost: {lost}");
    out
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

    use crate::api::{
        BackupStatus, BackupSummary, DrillSummary, RecoverableWindow, ReplicationClusterStatus,
    };

    fn condition(type_: &str, status: &str, reason: &str) -> Condition {
        serde_json::from_value(serde_json::json!({
            "type": type_, "status": status, "reason": reason, "message": format!("{reason} said"),
            "lastTransitionTime": "2026-12-03T12:00:00Z"
        }))
        .unwrap()
    }

    #[test]
    fn the_table_shows_backups_and_the_backup_conditions_only_when_they_are_not_true() {
        let status = ReplicationClusterStatus {
            backup: Some(BackupStatus {
                repository: "offsite".into(),
                last_backup: Some(BackupSummary {
                    id: "20261203T030000.000Z".into(),
                    member: "b".into(),
                    duration: "1m30s".into(),
                    size_bytes: 3 << 30,
                    ..Default::default()
                }),
                backup_count: 4,
                recoverable: vec![RecoverableWindow {
                    earliest: "2026-11-26T03:01:30Z".into(),
                    latest: "2026-12-03T11:59:00Z".into(),
                    ..Default::default()
                }],
                last_drill: Some(DrillSummary {
                    passed: false,
                    finished_at: "2026-12-03T05:02:00Z".into(),
                    restore_duration: Some("2m5s".into()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            conditions: vec![
                condition("BackupSucceeded", "True", "Succeeded"),
                condition("RestoreDrillPassed", "False", "DrillFailed"),
            ],
            ..Default::default()
        };
        let report = crate::runtime::report::ClusterReport {
            namespace: "shop".into(),
            name: "orders".into(),
            engine: "postgres".into(),
            spec_primary: "a".into(),
            status,
            virtual_names: vec![],
            spec_problems: vec![],
            error: None,
            events: vec![],
        };
        let table = super::status_table(&[report]);
        assert!(
            table.contains("backups in offsite: newest 20261203T030000.000Z from b (3 GiB in 1m30s) of 4; recoverable 2026-11-26T03:01:30Z .. 2026-12-03T11:59:00Z; drill FAILED 2026-12-03T05:02:00Z (2m5s)"),
            "{table}"
        );
        assert!(table.contains("DrillFailed said"), "{table}");
        assert!(!table.contains("Succeeded said"), "{table}");
    }
}
