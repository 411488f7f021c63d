//! Whether a base backup is due, and from which member: when the schedule says so, or when
//! WAL was let go unarchived after the newest backup and the repository takes WAL again.
//! Likewise restore drills, and letting go what retention no longer keeps.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::{
    api::{BackupSource, Role, schedule::Schedule},
    core::{
        desired::Desired,
        observed::{CatalogEntry, HostAccess, Observed},
    },
};

/// A failed backup is tried again no sooner than this after it ended.
pub const RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(300);

/// A base backup to begin now.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct BackupDue {
    pub member: String,
    pub why: String,
    /// The on-demand request it answers, if one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
}

/// Whether the controller should begin a base backup now, and from which member: for the
/// oldest on-demand request still open, when the schedule says so (at once when there is none
/// yet), or when WAL was let go unarchived after the newest backup and the repository takes
/// WAL again. Never while an operation is in flight, a backup runs, the catalog is unread, or
/// a failure is recent.
pub fn due(desired: &Desired, observed: &Observed, now: Timestamp) -> Option<BackupDue> {
    let policy = desired.spec.backup.as_ref()?;
    let seen = observed.backups.as_ref()?;
    let catalog = seen.catalog.as_ref()?;
    if observed.journal.operation.is_some() || seen.running().is_some() || seen.stale() {
        return None;
    }
    if let Some((_, at, _)) = seen.failure()
        && now.duration_since(at).as_secs() < RETRY_AFTER.as_secs() as i64
    {
        return None;
    }
    let source = policy.base.as_ref().map(|b| b.source).unwrap_or_default();
    if let Some(request) = desired.backup_requests.iter().find(|r| {
        seen.request_open(&r.name)
            && r.member
                .as_ref()
                .is_none_or(|m| desired.member(m).is_some())
    }) {
        let member = match &request.member {
            Some(member) => qualifies(desired, observed, member).then(|| member.clone()),
            None => source_member(desired, observed, source),
        }?;
        return Some(BackupDue {
            member,
            why: format!("asked for by Backup {}", request.name),
            request: Some(request.name.clone()),
        });
    }
    let newest = catalog.backups.last();
    let gap = policy
        .archive
        .as_ref()
        .and_then(|_| gap_after(observed, newest));
    let scheduled = policy.base.as_ref().and_then(|base| {
        let schedule: Schedule = base.schedule.parse().ok()?;
        match newest {
            None => Some("the repository holds no base backup yet".to_string()),
            Some(b) => {
                let next = schedule.next_after(b.started_at)?;
                (next <= now).then(|| format!("scheduled at {next} ({})", base.schedule))
            }
        }
    });
    let why = gap.or(scheduled)?;
    let member = source_member(desired, observed, source)?;
    Some(BackupDue {
        member,
        why,
        request: None,
    })
}

/// A member a request names can give a backup: its server answers and it has an agent.
fn qualifies(desired: &Desired, observed: &Observed, member: &str) -> bool {
    observed
        .members
        .get(member)
        .is_some_and(|o| o.reachable && can_read_from(desired, o))
}

/// Whether a backup can be read from a member: through its node agent (PostgreSQL), or over
/// the replication protocol, which needs none (Redis).
fn can_read_from(desired: &Desired, o: &crate::core::observed::MemberObservation) -> bool {
    desired.spec.engine == crate::api::EngineKind::Redis || matches!(o.host, HostAccess::Agent(_))
}

/// A gap declared after `newest` began, by a member whose host archives again.
fn gap_after(observed: &Observed, newest: Option<&CatalogEntry>) -> Option<String> {
    observed.members.iter().find_map(|(member, o)| {
        let archive = o.archive.as_ref()?;
        let gap = archive.gaps.last()?;
        let declared: Timestamp = gap.declared_at.parse().ok()?;
        let after = newest.is_none_or(|b| declared > b.started_at);
        (after && archive.failing_since.is_none()).then(|| {
            format!(
                "{member} let WAL {} to {} go unarchived at {declared}, and the repository takes WAL again: the recoverable window restarts at a new base backup",
                gap.first, gap.last
            )
        })
    })
}

/// The member to read a backup from: a streaming standby it can be read from (with an agent,
/// for PostgreSQL), the least behind, or the primary as `source` allows.
fn source_member(desired: &Desired, observed: &Observed, source: BackupSource) -> Option<String> {
    let with_agent = |name: &str| {
        observed
            .members
            .get(name)
            .is_some_and(|o| can_read_from(desired, o))
    };
    let primary = observed.journal.current_primary.as_deref();
    let standby = desired
        .spec
        .members
        .iter()
        .filter_map(|m| Some((m.name.as_str(), observed.members.get(&m.name)?)))
        .filter(|(name, o)| {
            Some(*name) != primary
                && o.role == Some(Role::Replica)
                && o.reachable
                && o.link_up == Some(true)
                && !o.syncing
                && with_agent(name)
        })
        .max_by_key(|(_, o)| o.durable.unwrap_or(0))
        .map(|(name, _)| name.to_string());
    let primary = primary
        .filter(|p| {
            with_agent(p)
                && observed
                    .members
                    .get(*p)
                    .is_some_and(|o| o.is_writable_master())
        })
        .map(str::to_string);
    match source {
        BackupSource::PreferStandby => standby.or(primary),
        BackupSource::Standby => standby,
        BackupSource::Primary => primary,
    }
}

/// A restore drill to begin now.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct DrillDue {
    pub member: String,
    pub why: String,
}

/// Whether the controller should begin a restore drill now, and on which member's host: when
/// the drill schedule says so after the newest drill began (at once when none ran yet and a
/// base backup exists). Never while an operation is in flight, a drill runs, or the catalog is
/// unread.
pub fn drill_due(desired: &Desired, observed: &Observed, now: Timestamp) -> Option<DrillDue> {
    let policy = desired.spec.backup.as_ref()?.drill.as_ref()?;
    let seen = observed.backups.as_ref()?;
    let catalog = seen.catalog.as_ref()?;
    if observed.journal.operation.is_some() || seen.drill_running.is_some() {
        return None;
    }
    catalog.backups.last()?;
    let why = match &seen.last_drill {
        None => "no restore drill has run yet".to_string(),
        Some(last) => {
            let schedule: Schedule = policy.schedule.parse().ok()?;
            let next = schedule.next_after(last.started_at)?;
            if next > now {
                return None;
            }
            format!("scheduled at {next} ({})", policy.schedule)
        }
    };
    let member = source_member(desired, observed, BackupSource::PreferStandby)?;
    Some(DrillDue { member, why })
}

/// Expired backups to let go now.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PruneDue {
    /// By id, oldest first: exactly these, with the WAL only they need.
    pub backups: Vec<String>,
    pub why: String,
}

/// Whether the controller should let go the backups retention no longer keeps, as the last
/// reading of the catalog found them. Never while an operation is in flight, a backup or a
/// drill runs, a letting go runs, the catalog is older than a backup that ended, or within
/// [`RETRY_AFTER`] of one that failed.
pub fn prune_due(desired: &Desired, observed: &Observed, now: Timestamp) -> Option<PruneDue> {
    let retention = desired.spec.backup.as_ref()?.retention.as_ref()?;
    let seen = observed.backups.as_ref()?;
    let catalog = seen.catalog.as_ref()?;
    if catalog.expired.is_empty()
        || observed.journal.operation.is_some()
        || seen.running().is_some()
        || seen.drill_running.is_some()
        || seen.pruning
        || seen.stale()
    {
        return None;
    }
    if let Some(last) = &seen.last_prune
        && last.error.is_some()
        && now.duration_since(last.at).as_secs() < RETRY_AFTER.as_secs() as i64
    {
        return None;
    }
    Some(PruneDue {
        backups: catalog.expired.clone(),
        why: format!(
            "retention keeps {} and the newest {} backups",
            retention.window, retention.min_full_backups
        ),
    })
}
