//! What status says of continuous WAL archiving: the cluster's archive summary (newest file,
//! lag in bytes and seconds) and the `ContinuousArchiving` condition, from what each member's
//! host reported. Pure.

use jiff::Timestamp;

use crate::{
    api::{ArchiveStatus, MemberArchive, human_bytes},
    core::{desired::Desired, observed::Observed, plan::Finding},
};

/// Condition type: WAL reaches the repository as it is written.
pub const CONTINUOUS_ARCHIVING: &str = "ContinuousArchiving";

pub mod reason {
    pub const ARCHIVING: &str = "Archiving";
    /// A host has not yet taken the settings the spec gives.
    pub const NOT_CONFIGURED: &str = "NotConfigured";
    /// A host holds more waiting WAL than `pendingWarning`.
    pub const BACKLOG: &str = "Backlog";
    /// A host has failed to archive for a while, however little WAL waits.
    pub const FAILING: &str = "ArchiveFailing";
    /// A host let WAL go unarchived: recovery cannot cross the gap.
    pub const GAP: &str = "GapDeclared";
    /// Two servers wrote the same timeline: one of them is a second primary.
    pub const CONFLICT: &str = "SecondWriter";
}

/// `status.archive` and the `ContinuousArchiving` finding, when the spec asks for archiving.
pub fn archive_status(
    desired: &Desired,
    observed: &Observed,
    primary: Option<&str>,
    now: Timestamp,
) -> Option<(ArchiveStatus, Finding)> {
    let backup = desired.spec.backup.as_ref()?;
    let policy = backup.archive.as_ref()?;
    let repository = backup.archive_repository()?.name.clone();
    let members: Vec<MemberArchive> = desired
        .spec
        .members
        .iter()
        .filter_map(|m| observed.members.get(&m.name)?.archive.clone())
        .collect();
    let newest = members
        .iter()
        .filter_map(|m| Some((m.archived_through?, m)))
        .max_by_key(|(through, _)| *through)
        .map(|(_, m)| m);
    let primary_position = primary
        .and_then(|p| observed.members.get(p))
        .and_then(|o| o.durable);
    let primary_report = primary.and_then(|p| members.iter().find(|m| m.member == p));
    let lag_seconds = primary_report.map(|m| {
        m.oldest_pending_at
            .as_deref()
            .and_then(|t| t.parse::<Timestamp>().ok())
            .map_or(0, |oldest| {
                now.duration_since(oldest).as_secs().max(0) as u64
            })
    });
    let status = ArchiveStatus {
        repository: repository.clone(),
        last_archived: newest.and_then(|m| m.last_archived.clone()),
        last_archived_at: newest.and_then(|m| m.last_archived_at.clone()),
        lag_bytes: primary_position
            .zip(newest.and_then(|m| m.archived_through))
            .map(|(position, through)| position.saturating_sub(through)),
        lag_seconds,
        members: members.clone(),
    };
    let since = crate::core::backups::newest_backup_start(observed);
    // The primary's word first: it is the member people act on.
    let mut members = members;
    members.sort_by_key(|m| Some(m.member.as_str()) != primary);
    let finding = condition(&members, &repository, policy.pending_warning(), since, now);
    Some((status, finding))
}

/// How long archiving may fail before the condition says so, however little WAL waits.
const FAILING_FOR: std::time::Duration = std::time::Duration::from_secs(60);

/// `since`: when the newest base backup began; a gap declared before it no longer limits
/// recovery, and no longer counts.
fn condition(
    members: &[MemberArchive],
    repository: &str,
    warning: u64,
    since: Option<Timestamp>,
    now: Timestamp,
) -> Finding {
    let found =
        |reason: &str, message: String| Finding::new(CONTINUOUS_ARCHIVING, false, reason, message);
    if members.is_empty() {
        return found(
            reason::NOT_CONFIGURED,
            "no member's host reports a WAL archiver: archiving runs in node agents (spec.members[].agent)".into(),
        );
    }
    if let Some(m) = members.iter().find(|m| m.conflict.is_some()) {
        return found(
            reason::CONFLICT,
            format!(
                "{}: {}. Find which server still writes that timeline and stop it; the repository keeps both copies, and the first stays the one restores use",
                m.member,
                m.conflict.as_deref().unwrap_or_default()
            ),
        );
    }
    let open_gap = |m: &&MemberArchive| {
        m.gaps.last().is_some_and(|g| {
            since.is_none_or(|since| {
                g.declared_at
                    .parse::<Timestamp>()
                    .is_ok_and(|declared| declared > since)
            })
        })
    };
    if let Some(m) = members.iter().find(open_gap) {
        let gap = m.gaps.last().expect("not empty");
        return found(
            reason::GAP,
            format!(
                "{} let WAL {} to {} go unarchived at {} ({} gap(s) in all): {repository} could not take it before the host's pendingLimit. Recovery cannot reach past the gap until a base backup is taken after it: the controller takes one as soon as the repository takes WAL again",
                m.member, gap.first, gap.last, gap.declared_at, m.gap_count
            ),
        );
    }
    if let Some(m) = members.iter().find(|m| m.pending_bytes >= warning) {
        return found(
            reason::BACKLOG,
            format!(
                "{} holds {} of WAL that {repository} has not taken (warning at {}){}",
                m.member,
                human_bytes(m.pending_bytes),
                human_bytes(warning),
                m.last_failure
                    .as_deref()
                    .map(|f| format!(
                        "; failing since {}: {f}",
                        m.failing_since.as_deref().unwrap_or("?")
                    ))
                    .unwrap_or_default()
            ),
        );
    }
    let failing_long = |m: &&MemberArchive| {
        m.failing_since
            .as_deref()
            .and_then(|t| t.parse::<Timestamp>().ok())
            .is_some_and(|since| {
                now.duration_since(since).as_secs() >= FAILING_FOR.as_secs() as i64
            })
    };
    if let Some(m) = members.iter().find(failing_long) {
        return found(
            reason::FAILING,
            format!(
                "{} cannot archive to {repository} since {}: {}",
                m.member,
                m.failing_since.as_deref().unwrap_or_default(),
                m.last_failure.as_deref().unwrap_or("no reason recorded")
            ),
        );
    }
    let unconfigured: Vec<&str> = members
        .iter()
        .filter(|m| !m.configured)
        .map(|m| m.member.as_str())
        .collect();
    if !unconfigured.is_empty() {
        return found(
            reason::NOT_CONFIGURED,
            format!(
                "the hosts of {} have not yet taken the archive settings",
                unconfigured.join(", ")
            ),
        );
    }
    Finding::new(
        CONTINUOUS_ARCHIVING,
        true,
        reason::ARCHIVING,
        format!("WAL reaches {repository} as it is written"),
    )
}
