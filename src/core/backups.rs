//! What status says of base backups (`status.backup`, the `BackupSucceeded`
//! condition), from the repository's catalog as the engine last read it and what the hosts
//! report. Pure.

use jiff::Timestamp;

use crate::{
    api::{
        BackupFailure, BackupPhase, BackupStatus, BackupSummary, DrillSummary,
        OnDemandBackupStatus, PruneSummary, RecoverableWindow, RequestOutcome, RunningBackup,
        human_bytes, schedule::Schedule, status_time,
    },
    core::{
        desired::Desired,
        observed::{BackupsObserved, Observed},
        plan::{Finding, RETRY_AFTER, human_duration},
    },
};

/// Condition type: the newest base backup attempt succeeded.
pub const BACKUP_SUCCEEDED: &str = "BackupSucceeded";

/// Condition type: the newest restore drill restored, replayed and checked the data.
pub const RESTORE_DRILL_PASSED: &str = "RestoreDrillPassed";

pub mod reason {
    /// The newest drill failed.
    pub const DRILL_FAILED: &str = "DrillFailed";
    /// No drill has run yet.
    pub const NO_DRILL: &str = "NoDrill";
    pub const SUCCEEDED: &str = "Succeeded";
    /// The newest attempt failed.
    pub const FAILED: &str = "BackupFailed";
    /// The repository holds no base backup of the cluster yet.
    pub const NONE_YET: &str = "NoBackup";
    /// The schedule asked for backups that were not taken.
    pub const OVERDUE: &str = "Overdue";
    /// The repository's catalog cannot be read.
    pub const UNREADABLE: &str = "CatalogUnreadable";
}

/// `status.backup` and the `BackupSucceeded` finding, when the cluster has a repository and
/// its engine reads catalogs. `began` is the backup this round began, and `refused` why
/// beginning it failed.
pub fn backup_status(
    desired: &Desired,
    observed: &Observed,
    began: Option<&crate::core::plan::BackupDue>,
    refused: Option<&str>,
    now: Timestamp,
) -> Option<(BackupStatus, Finding)> {
    let policy = desired.spec.backup.as_ref()?;
    let seen = observed.backups.as_ref()?;
    let schedule = policy
        .base
        .as_ref()
        .and_then(|b| Some((b.schedule.parse::<Schedule>().ok()?, b.schedule.as_str())));
    let catalog = seen.catalog.clone().unwrap_or_default();
    let newest = catalog.backups.last();
    let running = match (refused, began) {
        (None, Some(due)) => Some((due.member.as_str(), now)),
        _ => seen.running(),
    };
    let failure = match (refused, began) {
        (Some(message), Some(due)) => Some((due.member.as_str(), now, message)),
        _ => seen.failure(),
    };
    let status = BackupStatus {
        repository: seen.repository.clone(),
        last_backup: newest.map(|b| BackupSummary {
            id: b.id.clone(),
            member: b.member.clone(),
            started_at: status_time(b.started_at),
            finished_at: status_time(b.finished_at),
            duration: human_duration(b.finished_at.duration_since(b.started_at).unsigned_abs()),
            size_bytes: b.raw_bytes,
            stored_bytes: b.stored_bytes,
        }),
        backup_count: catalog.backups.len() as u32,
        recoverable: catalog
            .windows
            .iter()
            .map(|w| RecoverableWindow {
                earliest: status_time(w.earliest),
                earliest_lsn: w.earliest_lsn.clone(),
                latest: status_time(w.latest),
                latest_lsn: w.latest_lsn.clone(),
            })
            .collect(),
        running: running.map(|(member, since)| RunningBackup {
            member: member.to_string(),
            since: status_time(since),
        }),
        last_failure: failure.map(|(member, at, message)| BackupFailure {
            member: member.to_string(),
            at: status_time(at),
            message: message.to_string(),
        }),
        next_scheduled_at: schedule
            .as_ref()
            .and_then(|(s, _)| s.next_after(newest.map_or(now, |b| b.started_at).max(now)))
            .map(status_time),
        read_at: seen.read_at.map(status_time),
        last_drill: None,
        drill_running: None,
        requests: desired
            .backup_requests
            .iter()
            .map(|r| RequestOutcome {
                name: r.name.clone(),
                outcome: request_outcome(
                    seen,
                    &r.name,
                    r.member.as_deref().filter(|m| desired.member(m).is_none()),
                    running,
                    failure,
                    began,
                ),
            })
            .collect(),
        last_prune: seen.last_prune.as_ref().map(|p| PruneSummary {
            at: status_time(p.at),
            backups: p.backups.clone(),
            wal_files: p.wal_files,
            error: p.error.clone(),
        }),
    };
    let found = |ok: bool, reason: &str, message: String| {
        Finding::new(BACKUP_SUCCEEDED, ok, reason, message)
    };
    let repository = &seen.repository;
    let running_note = running
        .map(|(m, since)| format!("; one runs on {m} since {}", status_time(since)))
        .unwrap_or_default();
    let finding = if let (Some(error), None) = (&seen.read_error, &seen.catalog) {
        found(
            false,
            reason::UNREADABLE,
            format!("the catalog of {repository} cannot be read: {error}"),
        )
    } else if let Some((member, at, message)) = failure {
        found(
            false,
            reason::FAILED,
            format!(
                "the base backup from {member} failed at {}: {message}. Tried again from {} on{running_note}",
                status_time(at),
                status_time(at + RETRY_AFTER)
            ),
        )
    } else if let Some(b) = newest {
        let overdue = schedule.as_ref().and_then(|(s, text)| {
            let first = s.next_after(b.started_at)?;
            let second = s.next_after(first)?;
            (second <= now && running.is_none()).then_some((first, *text))
        });
        match overdue {
            Some((first, text)) => found(
                false,
                reason::OVERDUE,
                format!(
                    "the newest base backup, {}, finished at {}; the schedule ({text}) asked for one at {} and since, and none was taken: no member qualifies as spec.backup.base.source asks (a streaming standby, or the primary, with a node agent)",
                    b.id,
                    status_time(b.finished_at),
                    status_time(first)
                ),
            ),
            None => found(
                true,
                reason::SUCCEEDED,
                format!(
                    "the newest base backup, {}, from {}, finished at {}: {} ({} stored) in {}{running_note}",
                    b.id,
                    b.member,
                    status_time(b.finished_at),
                    human_bytes(b.raw_bytes),
                    human_bytes(b.stored_bytes),
                    human_duration(b.finished_at.duration_since(b.started_at).unsigned_abs())
                ),
            ),
        }
    } else {
        found(
            false,
            reason::NONE_YET,
            format!(
                "{repository} holds no base backup of the cluster yet{}{running_note}",
                match (&policy.base, seen.catalog.is_some()) {
                    (_, false) => ": its catalog has not been read yet".to_string(),
                    (Some(_), true) => String::new(),
                    (None, true) =>
                        ": take one (replicant backup take), or set spec.backup.base.schedule"
                            .to_string(),
                }
            ),
        )
    };
    Some((status, finding))
}

/// Where on-demand request `name` stands: in the catalog (completed), failed on a host, under
/// way, or waiting, and why.
fn request_outcome(
    seen: &BackupsObserved,
    name: &str,
    unknown_member: Option<&str>,
    running: Option<(&str, Timestamp)>,
    failure: Option<(&str, Timestamp, &str)>,
    began: Option<&crate::core::plan::BackupDue>,
) -> OnDemandBackupStatus {
    let repository = Some(seen.repository.clone());
    let catalog = seen.catalog.as_ref();
    if let Some(b) = catalog.and_then(|c| {
        c.backups
            .iter()
            .find(|b| b.request.as_deref() == Some(name))
    }) {
        return OnDemandBackupStatus {
            phase: BackupPhase::Completed,
            message: format!(
                "{} ({} stored) in {}",
                human_bytes(b.raw_bytes),
                human_bytes(b.stored_bytes),
                human_duration(b.finished_at.duration_since(b.started_at).unsigned_abs())
            ),
            repository,
            backup_id: Some(b.id.clone()),
            member: Some(b.member.clone()),
            started_at: Some(status_time(b.started_at)),
            finished_at: Some(status_time(b.finished_at)),
            size_bytes: Some(b.raw_bytes),
            stored_bytes: Some(b.stored_bytes),
        };
    }
    if let Some(member) = unknown_member {
        return OnDemandBackupStatus {
            phase: BackupPhase::Failed,
            message: format!("the request names {member}, which is no member of the cluster"),
            repository,
            ..Default::default()
        };
    }
    let failed = seen
        .hosts
        .iter()
        .find(|(_, h)| h.last_request.as_deref() == Some(name) && h.last_error.is_some());
    if let Some((member, host)) = failed {
        return OnDemandBackupStatus {
            phase: BackupPhase::Failed,
            message: host.last_error.clone().unwrap_or_default(),
            repository,
            member: Some(member.clone()),
            finished_at: host.last_finished_at.map(status_time),
            ..Default::default()
        };
    }
    let under_way = seen
        .hosts
        .iter()
        .find(|(_, h)| h.running_request.as_deref() == Some(name) && h.running_since.is_some())
        .map(|(member, h)| (member.as_str(), h.running_since.expect("checked")))
        .or(began
            .filter(|due| due.request.as_deref() == Some(name))
            .and(running));
    if let Some((member, since)) = under_way {
        return OnDemandBackupStatus {
            phase: BackupPhase::Running,
            message: format!("reading from {member}"),
            repository,
            member: Some(member.to_string()),
            started_at: Some(status_time(since)),
            ..Default::default()
        };
    }
    let message = if catalog.is_none() {
        "waiting for the repository's catalog to be read".to_string()
    } else if let Some((member, since)) = running {
        format!(
            "waiting for the backup under way on {member} since {} to end",
            status_time(since)
        )
    } else if let Some((member, at, message)) = failure {
        format!(
            "waiting: the last backup from {member} failed at {} ({message}); the next is tried from {}",
            status_time(at),
            status_time(at + RETRY_AFTER)
        )
    } else {
        "waiting for a member to read it from: the one the request names, or one spec.backup.base.source allows, must answer and have a node agent; none may be failing over".to_string()
    };
    OnDemandBackupStatus {
        phase: BackupPhase::Pending,
        message,
        repository,
        ..Default::default()
    }
}

/// The newest restore drill, one under way, and the `RestoreDrillPassed` finding, when the
/// spec asks for drills or one has run. `began` is the drill this round began, `refused` why
/// beginning it failed.
pub fn drill_status(
    desired: &Desired,
    observed: &Observed,
    began: Option<&crate::core::plan::DrillDue>,
    refused: Option<&str>,
    now: Timestamp,
) -> Option<(Option<DrillSummary>, Option<RunningBackup>, Finding)> {
    let seen = observed.backups.as_ref()?;
    let asked = desired
        .spec
        .backup
        .as_ref()
        .is_some_and(|b| b.drill.is_some());
    if !asked && seen.last_drill.is_none() {
        return None;
    }
    let running = match (began, refused) {
        (Some(due), None) => Some(RunningBackup {
            member: due.member.clone(),
            since: status_time(now),
        }),
        _ => seen.drill_running.as_ref().map(|r| RunningBackup {
            member: r.member.clone(),
            since: status_time(r.since),
        }),
    };
    let last = seen.last_drill.as_ref().map(|d| DrillSummary {
        id: d.id.clone(),
        member: d.member.clone(),
        backup_id: d.backup_id.clone(),
        started_at: status_time(d.started_at),
        finished_at: status_time(d.finished_at),
        restore_duration: d
            .restore_millis
            .map(|ms| human_duration(std::time::Duration::from_millis(ms))),
        restore_seconds: d.restore_millis.map(|ms| ms.div_ceil(1000)),
        reached_lsn: d.reached_lsn.clone(),
        reached_at: d.reached_at.map(status_time),
        passed: d.passed,
        message: d.message.clone(),
    });
    let found = |ok: bool, reason: &str, message: String| {
        Finding::new(RESTORE_DRILL_PASSED, ok, reason, message)
    };
    let running_note = running
        .as_ref()
        .map(|r| format!("; one runs on {} since {}", r.member, r.since))
        .unwrap_or_default();
    let finding = match (&last, refused) {
        (_, Some(why)) => found(
            false,
            reason::DRILL_FAILED,
            format!("a restore drill could not be begun: {why}"),
        ),
        (Some(d), None) if d.passed => found(
            true,
            reason::SUCCEEDED,
            format!(
                "the drill of {} restored base backup {} in {} and reached {} ({}): {}{running_note}",
                d.finished_at,
                d.backup_id.as_deref().unwrap_or("?"),
                d.restore_duration.as_deref().unwrap_or("?"),
                d.reached_lsn.as_deref().unwrap_or("?"),
                d.reached_at.as_deref().unwrap_or("no transaction replayed"),
                d.message
            ),
        ),
        (Some(d), None) => found(
            false,
            reason::DRILL_FAILED,
            format!(
                "the drill of {} on {}'s host failed: {}{running_note}",
                d.finished_at, d.member, d.message
            ),
        ),
        (None, None) => found(
            false,
            reason::NO_DRILL,
            format!(
                "no restore drill has run yet: the first runs once there is a base backup{running_note}"
            ),
        ),
    };
    Some((last, running, finding))
}

/// When the newest base backup began: a gap declared before it no longer limits recovery.
pub fn newest_backup_start(observed: &Observed) -> Option<Timestamp> {
    Some(observed.backups.as_ref()?.newest()?.started_at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Role;
    use crate::core::observed::{
        Catalog, HostBackups, HostObservation, MemberObservation, Stretch,
    };
    use crate::core::{
        observed::{BackupsObserved, CatalogEntry, HostAccess, PruneOutcome},
        plan::{due, prune_due},
    };

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    /// a primary, b and c streaming standbys (c further ahead), all with agents; a daily
    /// schedule at 03:00 into a directory repository.
    fn cluster(source: &str) -> Desired {
        let yaml = format!(
            r#"
name: orders
spec:
  engine: postgres
  primary: a
  members:
    - {{ name: a, address: "10.0.0.1:5432", agent: "10.0.0.1:8008" }}
    - {{ name: b, address: "10.0.0.2:5432", agent: "10.0.0.2:8008" }}
    - {{ name: c, address: "10.0.0.3:5432", agent: "10.0.0.3:8008" }}
  agentToken: {{ file: /etc/token }}
  backup:
    repositories: [{{ name: store, directory: {{ path: /backups }} }}]
    archive: {{}}
    base: {{ schedule: "0 3 * * *", source: {source} }}
"#
        );
        serde_yaml::from_str(&yaml).unwrap()
    }

    fn member(role: Role, durable: u64) -> MemberObservation {
        MemberObservation {
            reachable: true,
            role: Some(role),
            durable: Some(durable),
            link_up: (role == Role::Replica).then_some(true),
            read_only: Some(role == Role::Replica),
            host: HostAccess::Agent(HostObservation {
                reachable: true,
                running: true,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn backup(id: &str, started: &str) -> CatalogEntry {
        CatalogEntry {
            id: id.into(),
            member: "b".into(),
            started_at: at(started),
            finished_at: at(started) + jiff::SignedDuration::from_secs(90),
            raw_bytes: 3 << 30,
            stored_bytes: 1 << 30,
            request: None,
        }
    }

    fn observed(backups: Vec<CatalogEntry>) -> Observed {
        let mut observed = Observed::default();
        observed.journal.current_primary = Some("a".into());
        observed
            .members
            .insert("a".into(), member(Role::Master, 300));
        observed
            .members
            .insert("b".into(), member(Role::Replica, 100));
        observed
            .members
            .insert("c".into(), member(Role::Replica, 200));
        observed.backups = Some(BackupsObserved {
            repository: "store".into(),
            read_at: Some(at("2026-12-03T03:00:00Z")),
            catalog: Some(Catalog {
                backups,
                windows: Vec::new(),
                expired: Vec::new(),
            }),
            ..Default::default()
        });
        observed
    }

    #[test]
    fn expired_backups_go_only_under_retention_while_nothing_runs_and_status_says_what_went() {
        let mut desired = cluster("PreferStandby");
        let now = at("2026-12-03T12:00:00Z");
        let mut seen = observed(vec![
            backup("b1", "2026-11-01T03:00:00Z"),
            backup("b2", "2026-12-03T03:00:00Z"),
        ]);
        let catalog = seen.backups.as_mut().unwrap().catalog.as_mut().unwrap();
        catalog.expired = vec!["b1".into()];
        assert_eq!(prune_due(&desired, &seen, now), None, "no retention set");
        desired.spec.backup.as_mut().unwrap().retention = Some(crate::api::RetentionPolicy {
            window: std::time::Duration::from_secs(7 * 24 * 3600).into(),
            min_full_backups: 1,
        });
        let asked = prune_due(&desired, &seen, now).unwrap();
        assert_eq!(asked.backups, vec!["b1".to_string()]);
        assert!(asked.why.contains("newest 1 backups"), "{}", asked.why);
        // Not while a backup runs, nor while one runs already.
        let backups = seen.backups.as_mut().unwrap();
        backups.hosts.insert(
            "b".into(),
            HostBackups {
                running_since: Some(now),
                ..Default::default()
            },
        );
        assert_eq!(prune_due(&desired, &seen, now), None);
        let backups = seen.backups.as_mut().unwrap();
        backups.hosts.clear();
        backups.pruning = true;
        assert_eq!(prune_due(&desired, &seen, now), None);
        // A failure waits; what went is in status.
        let backups = seen.backups.as_mut().unwrap();
        backups.pruning = false;
        backups.last_prune = Some(PruneOutcome {
            at: now,
            backups: vec!["b0".into()],
            wal_files: 12,
            error: Some("permission denied".into()),
        });
        assert_eq!(prune_due(&desired, &seen, now), None);
        assert!(prune_due(&desired, &seen, now + jiff::SignedDuration::from_secs(300)).is_some());
        let (status, _) = backup_status(&desired, &seen, None, None, now).unwrap();
        let pruned = status.last_prune.unwrap();
        assert_eq!(
            (pruned.backups, pruned.wal_files),
            (vec!["b0".to_string()], 12)
        );
        assert_eq!(pruned.error.as_deref(), Some("permission denied"));
    }

    #[test]
    fn the_schedule_asks_after_its_time_from_the_standby_furthest_ahead() {
        let desired = cluster("PreferStandby");
        let seen = observed(vec![backup("b1", "2026-12-02T03:00:01Z")]);
        assert_eq!(due(&desired, &seen, at("2026-12-03T02:59:00Z")), None);
        let asked = due(&desired, &seen, at("2026-12-03T03:00:00Z")).unwrap();
        assert_eq!(asked.member, "c");
        assert!(asked.why.contains("0 3 * * *"), "{}", asked.why);
    }

    #[test]
    fn a_cluster_without_a_backup_gets_one_at_once_and_none_while_one_runs() {
        let desired = cluster("PreferStandby");
        let mut seen = observed(vec![]);
        let now = at("2026-12-03T12:00:00Z");
        assert!(
            due(&desired, &seen, now)
                .unwrap()
                .why
                .contains("no base backup")
        );
        let hosts = &mut seen.backups.as_mut().unwrap().hosts;
        hosts.insert(
            "b".into(),
            HostBackups {
                running_since: Some(now),
                ..Default::default()
            },
        );
        assert_eq!(due(&desired, &seen, now), None);
        // Ended well after the catalog was read: none until it is read again.
        let hosts = &mut seen.backups.as_mut().unwrap().hosts;
        hosts.get_mut("b").unwrap().running_since = None;
        hosts.get_mut("b").unwrap().last_finished_at = Some(now);
        assert_eq!(due(&desired, &seen, now), None);
        seen.backups.as_mut().unwrap().read_at = Some(now + jiff::SignedDuration::from_secs(1));
        assert!(due(&desired, &seen, now).is_some());
    }

    #[test]
    fn a_failure_waits_before_it_is_tried_again_and_says_so() {
        let desired = cluster("PreferStandby");
        let mut seen = observed(vec![]);
        let failed = at("2026-12-03T12:00:00Z");
        seen.backups.as_mut().unwrap().hosts.insert(
            "c".into(),
            HostBackups {
                last_finished_at: Some(failed),
                last_error: Some("pg_basebackup: disk full".into()),
                ..Default::default()
            },
        );
        assert_eq!(
            due(
                &desired,
                &seen,
                failed + jiff::SignedDuration::from_secs(60)
            ),
            None
        );
        assert!(
            due(
                &desired,
                &seen,
                failed + jiff::SignedDuration::from_secs(300)
            )
            .is_some()
        );
        let (status, finding) = backup_status(&desired, &seen, None, None, failed).unwrap();
        assert!(!finding.status);
        assert_eq!(finding.reason, reason::FAILED);
        assert!(finding.message.contains("disk full"), "{}", finding.message);
        assert_eq!(status.last_failure.unwrap().member, "c");
    }

    #[test]
    fn the_source_policy_decides_between_standby_and_primary() {
        let now = at("2026-12-03T12:00:00Z");
        let mut seen = observed(vec![]);
        assert_eq!(due(&cluster("Primary"), &seen, now).unwrap().member, "a");
        for standby in ["b", "c"] {
            seen.members.get_mut(standby).unwrap().link_up = Some(false);
        }
        assert_eq!(due(&cluster("Standby"), &seen, now), None);
        assert_eq!(
            due(&cluster("PreferStandby"), &seen, now).unwrap().member,
            "a"
        );
    }

    #[test]
    fn no_backup_during_an_operation_or_before_the_catalog_is_read() {
        let desired = cluster("PreferStandby");
        let now = at("2026-12-03T12:00:00Z");
        let mut unread = observed(vec![]);
        unread.backups.as_mut().unwrap().catalog = None;
        assert_eq!(due(&desired, &unread, now), None);
        let (_, finding) = backup_status(&desired, &unread, None, None, now).unwrap();
        assert_eq!(finding.reason, reason::NONE_YET);
        assert!(
            finding.message.contains("not been read yet"),
            "{}",
            finding.message
        );
    }

    #[test]
    fn a_gap_after_the_newest_backup_asks_for_one_once_archiving_works_again() {
        let desired = cluster("PreferStandby");
        let mut seen = observed(vec![backup("b1", "2026-12-03T03:00:00Z")]);
        let now = at("2026-12-03T12:00:00Z");
        assert_eq!(due(&desired, &seen, now), None);
        let archive = crate::api::MemberArchive {
            member: "a".into(),
            gaps: vec![crate::api::ArchiveGap {
                first: "000000010000000000000010".into(),
                last: "000000010000000000000013".into(),
                declared_at: "2026-12-03T11:00:00Z".into(),
            }],
            gap_count: 1,
            failing_since: Some("2026-12-03T10:00:00Z".into()),
            ..Default::default()
        };
        seen.members.get_mut("a").unwrap().archive = Some(archive);
        assert_eq!(due(&desired, &seen, now), None, "the store is still away");
        let archive = seen.members.get_mut("a").unwrap().archive.as_mut().unwrap();
        archive.failing_since = None;
        let asked = due(&desired, &seen, now).unwrap();
        assert!(asked.why.contains("go unarchived"), "{}", asked.why);
    }

    #[test]
    fn status_shows_the_newest_backup_the_window_and_the_next_time() {
        let desired = cluster("PreferStandby");
        let mut seen = observed(vec![
            backup("b1", "2026-12-02T03:00:00Z"),
            backup("b2", "2026-12-03T03:00:00Z"),
        ]);
        seen.backups
            .as_mut()
            .unwrap()
            .catalog
            .as_mut()
            .unwrap()
            .windows = vec![Stretch {
            earliest: at("2026-12-02T03:01:30Z"),
            earliest_lsn: "0/2000100".into(),
            latest: at("2026-12-03T11:59:00Z"),
            latest_lsn: "0/9000000".into(),
        }];
        let now = at("2026-12-03T12:00:00Z");
        let (status, finding) = backup_status(&desired, &seen, None, None, now).unwrap();
        assert!(finding.status, "{finding:?}");
        assert!(finding.message.contains("b2"), "{}", finding.message);
        let last = status.last_backup.unwrap();
        assert_eq!((last.id.as_str(), last.duration.as_str()), ("b2", "1m30s"));
        assert_eq!(status.backup_count, 2);
        assert_eq!(status.recoverable[0].earliest, "2026-12-02T03:01:30Z");
        assert_eq!(
            status.next_scheduled_at.as_deref(),
            Some("2026-12-04T03:00:00Z")
        );
        // Two scheduled times missed, nothing running: overdue.
        let (_, late) =
            backup_status(&desired, &seen, None, None, at("2026-12-05T04:00:00Z")).unwrap();
        assert_eq!(late.reason, reason::OVERDUE);
    }

    #[test]
    fn a_request_goes_first_and_ends_completed_or_failed() {
        use crate::core::desired::RequestedBackup;
        let mut desired = cluster("PreferStandby");
        desired.backup_requests = vec![
            RequestedBackup {
                name: "before-migration".into(),
                member: Some("b".into()),
            },
            RequestedBackup {
                name: "typo".into(),
                member: Some("z".into()),
            },
        ];
        let now = at("2026-12-03T12:00:00Z");
        let mut seen = observed(vec![backup("b1", "2026-12-03T03:00:00Z")]);
        let asked = due(&desired, &seen, now).unwrap();
        assert_eq!(
            (asked.member.as_str(), asked.request.as_deref()),
            ("b", Some("before-migration"))
        );
        let outcome = |seen: &Observed, began: Option<&crate::core::plan::BackupDue>| {
            backup_status(&desired, seen, began, None, now)
                .unwrap()
                .0
                .requests
        };
        let requests = outcome(&seen, Some(&asked));
        assert_eq!(requests[0].outcome.phase, BackupPhase::Running);
        assert_eq!(requests[1].outcome.phase, BackupPhase::Failed);
        assert!(requests[1].outcome.message.contains("no member"));
        // Done: the catalog holds it, and nothing more is asked for.
        let mut done = backup("b2", "2026-12-03T12:00:00Z");
        done.request = Some("before-migration".into());
        entries(&mut seen).push(done);
        let requests = outcome(&seen, None);
        assert_eq!(requests[0].outcome.phase, BackupPhase::Completed);
        assert_eq!(requests[0].outcome.backup_id.as_deref(), Some("b2"));
        assert_eq!(due(&desired, &seen, now), None);
        // Failed on its host: final, with the host's words.
        entries(&mut seen).pop();
        seen.backups.as_mut().unwrap().hosts.insert(
            "b".into(),
            HostBackups {
                last_finished_at: Some(now),
                last_error: Some("pg_basebackup: could not connect".into()),
                last_request: Some("before-migration".into()),
                ..Default::default()
            },
        );
        let requests = outcome(&seen, None);
        assert_eq!(requests[0].outcome.phase, BackupPhase::Failed);
        assert!(requests[0].outcome.message.contains("could not connect"));
    }

    fn entries(seen: &mut Observed) -> &mut Vec<CatalogEntry> {
        &mut seen
            .backups
            .as_mut()
            .unwrap()
            .catalog
            .as_mut()
            .unwrap()
            .backups
    }
}
