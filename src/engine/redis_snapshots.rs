//! Redis snapshots taken by the controller: the repository's snapshot catalog read in the
//! background (never in a round's path), a snapshot read from a member over the replication
//! protocol (`rdb.rs`, no agent) and uploaded as it arrives, in the background, and the
//! snapshots retention no longer keeps let go. Touches the repository and the members' servers.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use super::{
    Credentials,
    postgres::archive::ArchiveSettings,
    rdb,
    readings::{Readings, prune_within},
};
use crate::{
    api::Member,
    core::{
        engine::{Backups, EngineError},
        observed::{BackupsObserved, Catalog, CatalogEntry},
    },
    repository::{
        Repository,
        codec::Codec,
        retention::{Retention, expired_by},
        snapshot::Snapshot,
    },
};

/// How long the server may stay silent while it sends a snapshot.
const READ_TIMEOUT: Duration = Duration::from_secs(60);
/// The longest one reading, or one letting go, may take.
const STORE_LIMIT: Duration = Duration::from_secs(300);
/// The longest one snapshot may take.
const SNAPSHOT_LIMIT: Duration = Duration::from_secs(6 * 3600);

/// Why a snapshot could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error(transparent)]
    Read(#[from] rdb::RdbError),
    #[error("{member}: {source}")]
    Store {
        member: String,
        source: Box<crate::repository::base::BaseError>,
    },
    #[error("{member}: the snapshot announced {announced} bytes and {arrived} arrived")]
    Short {
        member: String,
        announced: u64,
        arrived: u64,
    },
    #[error("{0}")]
    Task(String),
}

/// Read a snapshot from `member` (at `address`) and store it as `namespace/cluster`'s newest,
/// answering on-demand `request` if one: uploaded as it arrives, entered in the catalog only
/// once every announced byte arrived.
pub async fn take_snapshot(
    (repository, codec): (&Repository, Codec),
    (namespace, cluster): (&str, &str),
    (member, address): (&str, &str),
    credentials: &Credentials,
    request: Option<&str>,
) -> Result<Snapshot, SnapshotError> {
    let started_at = jiff::Timestamp::now();
    let id = crate::repository::layout::entry_id(started_at);
    let (address, credentials) = (address.to_string(), credentials.clone());
    let (stream, length) =
        tokio::task::spawn_blocking(move || rdb::open(&address, &credentials, READ_TIMEOUT))
            .await
            .map_err(|e| SnapshotError::Task(e.to_string()))??;
    let store = |source| SnapshotError::Store {
        member: member.to_string(),
        source: Box::new(source),
    };
    let (raw_bytes, stored_bytes) = repository
        .upload_snapshot((namespace, cluster), &id, codec, stream)
        .await
        .map_err(store)?;
    if raw_bytes != length {
        return Err(SnapshotError::Short {
            member: member.to_string(),
            announced: length,
            arrived: raw_bytes,
        });
    }
    let snapshot = Snapshot {
        id,
        member: member.to_string(),
        started_at,
        finished_at: jiff::Timestamp::now(),
        raw_bytes,
        stored_bytes,
        compression: codec,
        request: request.map(str::to_string),
    };
    repository
        .record_snapshot(namespace, cluster, &snapshot)
        .await
        .map_err(store)?;
    Ok(snapshot)
}

pub struct SnapshotKeeper {
    settings: ArchiveSettings,
    credentials: Credentials,
    retention: Option<Retention>,
    state: Arc<Mutex<State>>,
}

/// What the core is shown, and when the catalog is read next.
type State = Readings;

impl SnapshotKeeper {
    pub fn new(
        settings: ArchiveSettings,
        credentials: Credentials,
        retention: Option<Retention>,
    ) -> Self {
        let state = Readings::new(&settings.repository.name);
        Self {
            settings,
            credentials,
            retention,
            state: Arc::new(Mutex::new(state)),
        }
    }

    fn repository(&self) -> Result<Repository, String> {
        Repository::open(&self.settings.repository, self.settings.key.as_ref())
            .map_err(|e| e.to_string())
    }
}

#[async_trait::async_trait]
impl Backups for SnapshotKeeper {
    fn observed(&self) -> Option<BackupsObserved> {
        let mut state = self.state.lock().expect("lock");
        if state.begin_if_due() {
            let (settings, shared, retention) =
                (self.settings.clone(), self.state.clone(), self.retention);
            let repository = self.repository();
            tokio::spawn(async move {
                let began = jiff::Timestamp::now();
                let read = async {
                    let snapshots = repository?
                        .snapshots(&settings.namespace, &settings.cluster)
                        .await
                        .map_err(|e| e.to_string())?;
                    Ok::<_, String>(catalog(&snapshots, retention))
                };
                let read = tokio::time::timeout(STORE_LIMIT, read)
                    .await
                    .unwrap_or_else(|_| {
                        Err(format!("no answer within {}s", STORE_LIMIT.as_secs()))
                    });
                if let Err(error) = &read {
                    tracing::info!(repository = %settings.repository.name, %error, "the snapshot catalog could not be read");
                }
                shared.lock().expect("lock").finish(began, read);
            });
        }
        Some(state.seen.clone())
    }

    async fn take(&self, member: &Member, request: Option<&str>) -> Result<(), EngineError> {
        let repository = self.repository().map_err(|message| EngineError::Command {
            address: member.address.clone(),
            during: "take a snapshot",
            message,
        })?;
        let now = jiff::Timestamp::now();
        {
            let mut state = self.state.lock().expect("lock");
            if state.seen.running().is_some() {
                return Ok(());
            }
            let host = state.seen.hosts.entry(member.name.clone()).or_default();
            host.running_since = Some(now);
            host.running_request = request.map(str::to_string);
        }
        let (settings, credentials, shared) = (
            self.settings.clone(),
            self.credentials.clone(),
            self.state.clone(),
        );
        let (name, address, request) = (
            member.name.clone(),
            member.address.clone(),
            request.map(str::to_string),
        );
        tokio::spawn(async move {
            let taken = tokio::time::timeout(
                SNAPSHOT_LIMIT,
                take_snapshot(
                    (&repository, settings.compression),
                    (&settings.namespace, &settings.cluster),
                    (&name, &address),
                    &credentials,
                    request.as_deref(),
                ),
            )
            .await
            .unwrap_or_else(|_| {
                Err(SnapshotError::Task(format!(
                    "not done within {}h",
                    SNAPSHOT_LIMIT.as_secs() / 3600
                )))
            });
            match &taken {
                Ok(snapshot) => {
                    tracing::info!(member = %name, id = %snapshot.id, bytes = snapshot.raw_bytes, "snapshot taken")
                }
                Err(error) => tracing::warn!(member = %name, %error, "snapshot failed"),
            }
            let mut state = shared.lock().expect("lock");
            let host = state.seen.hosts.entry(name).or_default();
            host.running_since = None;
            host.running_request = None;
            host.last_finished_at = Some(jiff::Timestamp::now());
            host.last_error = taken.err().map(|e| e.to_string());
            host.last_request = request;
            state.stale = true;
        });
        Ok(())
    }

    async fn drill(&self, member: &Member) -> Result<(), EngineError> {
        Err(EngineError::Command {
            address: member.address.clone(),
            during: "begin a restore drill",
            message: "restore drills are for PostgreSQL clusters".into(),
        })
    }

    fn prune(&self, snapshots: &[String]) {
        let Some(retention) = self.retention else {
            return;
        };
        let Ok(repository) = self.repository() else {
            return;
        };
        if !self.state.lock().expect("lock").begin_prune() {
            return;
        }
        let (settings, shared, planned) = (
            self.settings.clone(),
            self.state.clone(),
            snapshots.to_vec(),
        );
        tokio::spawn(async move {
            let (namespace, cluster) = (&settings.namespace, &settings.cluster);
            let prune = async {
                let all = repository
                    .snapshots(namespace, cluster)
                    .await
                    .map_err(|e| (Vec::new(), 0, e.to_string()))?;
                let now = catalog(&all, Some(retention)).expired;
                // The catalog moved since it was read: the next reading plans again.
                if now != planned {
                    return Ok(None);
                }
                let mut gone = Vec::new();
                for id in &planned {
                    repository
                        .remove_snapshot(namespace, cluster, id)
                        .await
                        .map_err(|e| (gone.clone(), 0, e.to_string()))?;
                    gone.push(id.clone());
                }
                Ok(Some((gone, 0)))
            };
            let outcome = prune_within(STORE_LIMIT, prune).await;
            shared.lock().expect("lock").finish_prune(outcome);
        });
    }
}

/// The catalog the core sees of `snapshots` (oldest first): no recoverable window (a snapshot
/// restores to the moment it was taken, and nothing between), and what retention lets go.
fn catalog(snapshots: &[Snapshot], retention: Option<Retention>) -> Catalog {
    let expired = retention
        .map(|r| expired_by(snapshots, |s| s.finished_at, r, jiff::Timestamp::now()))
        .unwrap_or_default();
    Catalog {
        backups: snapshots
            .iter()
            .map(|s| CatalogEntry {
                id: s.id.clone(),
                member: s.member.clone(),
                started_at: s.started_at,
                finished_at: s.finished_at,
                raw_bytes: s.raw_bytes,
                stored_bytes: s.stored_bytes,
                request: s.request.clone(),
            })
            .collect(),
        windows: Vec::new(),
        expired: expired.into_iter().map(|s| s.id).collect(),
    }
}
