//! The controller's side of base backups: reads the repository's catalog and recoverable
//! window in the background (never in a round's path), and begins a backup on a member's
//! host through its node agent. Touches the repository (reading) and the agents.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use super::{
    agent::{AgentApi, AgentClient},
    archive::{ArchiveSettings, BackupReport, BackupRequest},
};
use crate::{
    core::{
        engine::EngineError,
        observed::{BackupsObserved, Catalog, CatalogEntry, HostBackups, Stretch},
    },
    repository::{
        Repository,
        base::newest_data_set,
        window::{lsn_text, windows},
    },
};

/// How often the catalog is read again while nothing changes.
pub const CATALOG_READ: Duration = Duration::from_secs(60);
/// The longest one reading may take (every store call under it has its own timeout).
const READ_LIMIT: Duration = Duration::from_secs(120);

pub struct BackupKeeper {
    settings: ArchiveSettings,
    state: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    seen: BackupsObserved,
    /// When the last reading began, and whether one runs now.
    read_began: Option<Instant>,
    reading: bool,
    /// A backup ended since the last reading: read again at once.
    stale: bool,
    /// Backups the controller could not begin, by member (the host never heard of them).
    refused: BTreeMap<String, HostBackups>,
    /// Backups begun, by member, until the host's own report can tell of them.
    begun: BTreeMap<String, (jiff::Timestamp, Instant)>,
}

/// How long a backup just begun counts as running without the host's word: longer than the
/// host's report takes to come around.
const REPORT_COMES: Duration = Duration::from_secs(15);

impl BackupKeeper {
    pub fn new(settings: ArchiveSettings) -> Self {
        let state = State {
            seen: BackupsObserved {
                repository: settings.repository.name.clone(),
                ..Default::default()
            },
            ..Default::default()
        };
        Self {
            settings,
            state: Arc::new(Mutex::new(state)),
        }
    }

    /// The catalog as last read, with what the hosts said (`reports`); a new reading begins in
    /// the background when the last is old or a backup ended since.
    pub fn observed(&self, reports: Vec<(String, BackupReport)>) -> BackupsObserved {
        let mut state = self.state.lock().expect("lock");
        let mut hosts = state.refused.clone();
        for (member, report) in reports {
            let host = hosts.entry(member).or_default();
            host.running_since = report.running_since;
            if let Some(last) = report.last
                && host.last_finished_at.is_none_or(|at| last.finished_at > at)
            {
                if state
                    .seen
                    .read_at
                    .is_some_and(|read| last.finished_at > read)
                {
                    state.stale = true;
                }
                host.last_finished_at = Some(last.finished_at);
                host.last_error = last.error;
            }
        }
        state.begun.retain(|_, (_, at)| at.elapsed() < REPORT_COMES);
        for (member, (began, _)) in &state.begun {
            let host = hosts.entry(member.clone()).or_default();
            if host.running_since.is_none() && host.last_finished_at.is_none_or(|at| at < *began) {
                host.running_since = Some(*began);
            }
        }
        state.seen.hosts = hosts;
        let due = state
            .read_began
            .is_none_or(|at| at.elapsed() >= CATALOG_READ || state.stale);
        if due && !state.reading {
            state.reading = true;
            state.stale = false;
            state.read_began = Some(Instant::now());
            let (settings, shared) = (self.settings.clone(), self.state.clone());
            tokio::spawn(async move {
                let began = jiff::Timestamp::now();
                let read = tokio::time::timeout(READ_LIMIT, read_catalog(&settings))
                    .await
                    .unwrap_or_else(|_| Err(format!("no answer within {}s", READ_LIMIT.as_secs())));
                let mut state = shared.lock().expect("lock");
                state.reading = false;
                state.seen.read_at = Some(began);
                match read {
                    Ok(catalog) => {
                        state.seen.catalog = Some(catalog);
                        state.seen.read_error = None;
                    }
                    Err(error) => {
                        tracing::info!(repository = %settings.repository.name, %error, "the backup catalog could not be read");
                        state.seen.read_error = Some(error);
                    }
                }
            });
        }
        state.seen.clone()
    }

    /// Begin a base backup on `member`'s host.
    pub async fn take(&self, member: &str, agent: &AgentClient) -> Result<(), EngineError> {
        let request = BackupRequest {
            settings: self.settings.clone(),
            member: member.to_string(),
        };
        let outcome = agent.backup(&request).await;
        let mut state = self.state.lock().expect("lock");
        match &outcome {
            Ok(report) => {
                state.refused.remove(member);
                let began = report.running_since.unwrap_or_else(jiff::Timestamp::now);
                state
                    .begun
                    .insert(member.to_string(), (began, Instant::now()));
            }
            // Remembered as a failed attempt, so that the next is not asked for at once.
            Err(error) => {
                state.refused.insert(
                    member.to_string(),
                    HostBackups {
                        running_since: None,
                        last_finished_at: Some(jiff::Timestamp::now()),
                        last_error: Some(format!("could not be begun: {error}")),
                    },
                );
            }
        }
        outcome.map(drop)
    }
}

/// The catalog of the cluster's newest data set and the stretches it can recover.
async fn read_catalog(settings: &ArchiveSettings) -> Result<Catalog, String> {
    let repository =
        Repository::open(&settings.repository, settings.key.as_ref()).map_err(|e| e.to_string())?;
    let catalog = repository
        .catalog(&settings.namespace, &settings.cluster)
        .await
        .map_err(|e| e.to_string())?;
    let Some((set, backups)) = newest_data_set(&catalog) else {
        return Ok(Catalog::default());
    };
    let segments = repository
        .archived_segments(&set)
        .await
        .map_err(|e| e.to_string())?;
    Ok(Catalog {
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
            })
            .collect(),
    })
}
