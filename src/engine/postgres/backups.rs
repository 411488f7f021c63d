//! The controller's side of base backups: reads the repository's catalog and recoverable
//! window in the background (never in a round's path), begins a backup on a member's host
//! through its node agent, and lets go what retention no longer keeps. Touches the repository
//! (reading, and deleting expired backups) and the agents.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use super::{
    super::readings::{Pruned, Readings, prune_within},
    agent::{AgentApi, AgentClient},
    archive::{ArchiveSettings, BackupReport, BackupRequest, DrillReport, DrillRequest},
};
use crate::{
    core::{
        engine::EngineError,
        observed::{
            BackupsObserved, Catalog, CatalogEntry, DrillRunning, HostBackups, ObservedDrill,
            Stretch,
        },
    },
    repository::{
        Repository,
        base::newest_data_set,
        drill::DrillRecord,
        retention::{Retention, expired},
        window::{lsn_text, windows},
    },
};

/// The longest one reading may take (every store call under it has its own timeout).
const READ_LIMIT: Duration = Duration::from_secs(120);

pub struct BackupKeeper {
    settings: ArchiveSettings,
    /// What the controller lets go after backups, if anything.
    retention: Option<Retention>,
    state: Arc<Mutex<State>>,
}

struct State {
    readings: Readings,
    /// Backups the controller could not begin, by member (the host never heard of them).
    refused: BTreeMap<String, HostBackups>,
    /// Backups begun, by member, until the host's own report can tell of them.
    begun: BTreeMap<String, (jiff::Timestamp, Instant, Option<String>)>,
    /// The newest drill record the last reading found; a drill begun, until its host's report
    /// tells of it; one that could not be begun.
    read_drill: Option<ObservedDrill>,
    drill_begun: Option<(String, jiff::Timestamp, Instant)>,
    drill_refused: Option<ObservedDrill>,
}

/// How long a backup just begun counts as running without the host's word: longer than the
/// host's report takes to come around.
const REPORT_COMES: Duration = Duration::from_secs(15);

impl BackupKeeper {
    pub fn new(settings: ArchiveSettings, retention: Option<Retention>) -> Self {
        let state = State {
            readings: Readings::new(&settings.repository.name),
            refused: BTreeMap::new(),
            begun: BTreeMap::new(),
            read_drill: None,
            drill_begun: None,
            drill_refused: None,
        };
        Self {
            settings,
            retention,
            state: Arc::new(Mutex::new(state)),
        }
    }

    /// The catalog as last read, with what the hosts said (`reports`); a new reading begins in
    /// the background when the last is old or a backup ended since.
    pub fn observed(
        &self,
        reports: Vec<(String, Option<BackupReport>, Option<DrillReport>)>,
    ) -> BackupsObserved {
        let mut state = self.state.lock().expect("lock");
        let mut hosts = state.refused.clone();
        let mut drill_running = None;
        let mut host_drill: Option<ObservedDrill> = None;
        for (member, backups, drills) in reports {
            if let Some(drills) = drills {
                if let Some(since) = drills.running_since {
                    drill_running = Some(DrillRunning {
                        member: member.clone(),
                        since,
                    });
                }
                if let Some(last) = drills.last
                    && host_drill
                        .as_ref()
                        .is_none_or(|d| last.started_at > d.started_at)
                {
                    host_drill = Some(observed_drill(last));
                }
            }
            let Some(report) = backups else {
                continue;
            };
            let host = hosts.entry(member).or_default();
            host.running_since = report.running_since;
            host.running_request = report.running_request;
            if let Some(last) = report.last
                && host.last_finished_at.is_none_or(|at| last.finished_at > at)
            {
                if state
                    .readings
                    .seen
                    .read_at
                    .is_some_and(|read| last.finished_at > read)
                {
                    state.readings.stale = true;
                }
                host.last_finished_at = Some(last.finished_at);
                host.last_error = last.error;
                host.last_request = last.request;
            }
        }
        state
            .begun
            .retain(|_, (_, at, _)| at.elapsed() < REPORT_COMES);
        for (member, (began, _, request)) in &state.begun {
            let host = hosts.entry(member.clone()).or_default();
            if host.running_since.is_none() && host.last_finished_at.is_none_or(|at| at < *began) {
                host.running_since = Some(*began);
                host.running_request = request.clone();
            }
        }
        state.readings.seen.hosts = hosts;
        state.drill_begun = state
            .drill_begun
            .take()
            .filter(|(_, _, at)| at.elapsed() < REPORT_COMES);
        if drill_running.is_none()
            && let Some((member, since, _)) = &state.drill_begun
            && host_drill.as_ref().is_none_or(|d| d.started_at < *since)
        {
            drill_running = Some(DrillRunning {
                member: member.clone(),
                since: *since,
            });
        }
        state.readings.seen.drill_running = drill_running;
        // The newest of the repository's record, a host's word and a drill not begun.
        let newest = [
            state.read_drill.clone(),
            host_drill,
            state.drill_refused.clone(),
        ]
        .into_iter()
        .flatten()
        .max_by_key(|d| d.started_at);
        state.readings.seen.last_drill = newest;
        if state.readings.begin_if_due() {
            let (settings, shared) = (self.settings.clone(), self.state.clone());
            let retention = self.retention;
            tokio::spawn(async move {
                let began = jiff::Timestamp::now();
                let read = tokio::time::timeout(READ_LIMIT, read_catalog(&settings, retention))
                    .await
                    .unwrap_or_else(|_| Err(format!("no answer within {}s", READ_LIMIT.as_secs())));
                let mut state = shared.lock().expect("lock");
                let read = match read {
                    Ok((catalog, drill)) => {
                        state.read_drill = drill.map(observed_drill);
                        Ok(catalog)
                    }
                    Err(error) => {
                        tracing::info!(repository = %settings.repository.name, %error, "the backup catalog could not be read");
                        Err(error)
                    }
                };
                state.readings.finish(began, read);
            });
        }
        state.readings.seen.clone()
    }

    /// Let go `backups` (and the WAL only they need) in the background, when the catalog still
    /// lists exactly these as expired; the outcome is in the next observation.
    pub fn prune(&self, backups: &[String]) {
        let Some(retention) = self.retention else {
            return;
        };
        if !self.state.lock().expect("lock").readings.begin_prune() {
            return;
        }
        let (settings, shared, planned) =
            (self.settings.clone(), self.state.clone(), backups.to_vec());
        tokio::spawn(async move {
            let outcome = prune_within(PRUNE_LIMIT, prune(&settings, retention, &planned)).await;
            shared.lock().expect("lock").readings.finish_prune(outcome);
        });
    }

    /// Begin a restore drill on `member`'s host.
    pub async fn drill(&self, member: &str, agent: &AgentClient) -> Result<(), EngineError> {
        let request = DrillRequest {
            settings: self.settings.clone(),
            member: member.to_string(),
        };
        let outcome = agent.drill(&request).await;
        let mut state = self.state.lock().expect("lock");
        let now = jiff::Timestamp::now();
        match &outcome {
            Ok(report) => {
                let since = report.running_since.unwrap_or(now);
                state.drill_begun = Some((member.to_string(), since, Instant::now()));
            }
            // Remembered as a failed drill: the next waits for the schedule.
            Err(error) => {
                state.drill_refused = Some(ObservedDrill {
                    id: crate::repository::layout::entry_id(now),
                    member: member.to_string(),
                    backup_id: None,
                    started_at: now,
                    finished_at: now,
                    restore_millis: None,
                    reached_lsn: None,
                    reached_at: None,
                    passed: false,
                    message: format!("could not be begun: {error}"),
                });
            }
        }
        outcome.map(drop)
    }

    /// Begin a base backup on `member`'s host, answering on-demand `request` if one.
    pub async fn take(
        &self,
        member: &str,
        request: Option<&str>,
        agent: &AgentClient,
    ) -> Result<(), EngineError> {
        let request = BackupRequest {
            settings: self.settings.clone(),
            member: member.to_string(),
            request: request.map(str::to_string),
        };
        let outcome = agent.backup(&request).await;
        let mut state = self.state.lock().expect("lock");
        match &outcome {
            Ok(report) => {
                state.refused.remove(member);
                let began = report.running_since.unwrap_or_else(jiff::Timestamp::now);
                let answers = report.running_request.clone().or(request.request);
                state
                    .begun
                    .insert(member.to_string(), (began, Instant::now(), answers));
            }
            // Remembered as a failed attempt, so that the next is not asked for at once.
            Err(error) => {
                state.refused.insert(
                    member.to_string(),
                    // Not the request's end: it is asked for again after a while.
                    HostBackups {
                        last_finished_at: Some(jiff::Timestamp::now()),
                        last_error: Some(format!("could not be begun: {error}")),
                        ..Default::default()
                    },
                );
            }
        }
        outcome.map(drop)
    }
}

/// The longest letting go may take.
const PRUNE_LIMIT: Duration = Duration::from_secs(600);

/// Let go `planned` and the WAL only they need, when retention at this moment lets go exactly
/// those: the backups gone and how many WAL files, or why not (with what went before that).
async fn prune(settings: &ArchiveSettings, retention: Retention, planned: &[String]) -> Pruned {
    let failed = |e: String| (Vec::new(), 0, e);
    let repository = Repository::open(&settings.repository, settings.key.as_ref())
        .map_err(|e| failed(e.to_string()))?;
    let catalog = repository
        .catalog(&settings.namespace, &settings.cluster)
        .await
        .map_err(|e| failed(e.to_string()))?;
    let Some((set, backups)) = newest_data_set(&catalog) else {
        return Ok(None);
    };
    let plan = repository
        .plan_prune(&set, &backups, retention, jiff::Timestamp::now())
        .await
        .map_err(|e| failed(e.to_string()))?;
    let ids: Vec<String> = plan.backups.iter().map(|b| b.id.clone()).collect();
    if ids != planned {
        return Ok(None);
    }
    repository
        .prune(&set, &plan)
        .await
        .map_err(|e| (Vec::new(), 0, e.to_string()))?;
    Ok(Some((ids, plan.wal.len() as u64)))
}

/// The catalog of the cluster's newest data set, the stretches it can recover, what retention
/// lets go, and its newest drill record.
async fn read_catalog(
    settings: &ArchiveSettings,
    retention: Option<Retention>,
) -> Result<(Catalog, Option<DrillRecord>), String> {
    let repository =
        Repository::open(&settings.repository, settings.key.as_ref()).map_err(|e| e.to_string())?;
    let catalog = repository
        .catalog(&settings.namespace, &settings.cluster)
        .await
        .map_err(|e| e.to_string())?;
    let Some((set, backups)) = newest_data_set(&catalog) else {
        return Ok((Catalog::default(), None));
    };
    let segments = repository
        .archived_segments(&set)
        .await
        .map_err(|e| e.to_string())?;
    let drill = repository
        .newest_drill(&set)
        .await
        .map_err(|e| e.to_string())?;
    let expired = retention
        .map(|r| expired(&backups, r, jiff::Timestamp::now()))
        .unwrap_or_default()
        .into_iter()
        .map(|b| b.id)
        .collect();
    let catalog = Catalog {
        expired,
        windows: windows(&backups, &segments)
            .into_iter()
            .map(|w| Stretch {
                earliest: w.earliest_time,
                earliest_lsn: lsn_text(w.earliest_lsn),
                latest: w.latest_time,
                latest_lsn: lsn_text(w.latest_lsn),
            })
            .collect(),
        backups: backups
            .into_iter()
            .map(|b| CatalogEntry {
                id: b.id,
                member: b.member,
                started_at: b.started_at,
                finished_at: b.finished_at,
                raw_bytes: b.raw_bytes,
                stored_bytes: b.stored_bytes,
                request: b.request,
            })
            .collect(),
    };
    Ok((catalog, drill))
}

fn observed_drill(record: DrillRecord) -> ObservedDrill {
    ObservedDrill {
        id: record.id,
        member: record.member,
        backup_id: record.backup_id,
        started_at: record.started_at,
        finished_at: record.finished_at,
        restore_millis: record.restore_millis,
        reached_lsn: record.reached_lsn,
        reached_at: record.reached_at,
        passed: record.passed,
        message: record.message,
    }
}
