//! The state directory: one folder per cluster holding its journal and last status; atomic, fsynced writes.

use std::{
    fs,
    path::{Path, PathBuf},
};

use async_trait::async_trait;

use crate::{
    core::{
        journal::Journal,
        reconcile::{JournalStore, Revision, StoreError},
    },
    durable::{Durability, write_atomically},
    runtime::report::{ClusterReport, SpecsReport},
};

/// `STATE/clusters/<namespace>.<name>/`
pub fn cluster_dir(state: &Path, namespace: &str, name: &str) -> PathBuf {
    state.join("clusters").join(format!("{namespace}.{name}"))
}

/// The journal of one cluster, as `journal.json` in its folder.
pub struct FileJournalStore {
    path: PathBuf,
}

impl FileJournalStore {
    pub fn new(cluster_dir: &Path) -> Self {
        Self {
            path: cluster_dir.join("journal.json"),
        }
    }
}

/// The revision of a journal file's content: a digest of its bytes.
fn digest(bytes: &[u8]) -> Revision {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::hash::DefaultHasher::new();
    bytes.hash(&mut hasher);
    Revision(Some(format!("{:016x}", hasher.finish())))
}

/// The journal file's bytes, `None` when there is none yet.
fn read_journal_file(path: &Path) -> Result<Option<Vec<u8>>, StoreError> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StoreError::failed(
            "read",
            format!("{}: {e}", path.display()),
        )),
    }
}

fn revision_of(bytes: Option<&[u8]>) -> Revision {
    bytes.map_or(Revision::NONE, digest)
}

/// Compare-and-swap on a digest of the file: it catches a second process writing the same
/// state directory between a round's read and its write, though not one that writes in the
/// instant between this check and the rename. One process per state directory is the rule;
/// hosts that share a journal use etcd.
#[async_trait]
impl JournalStore for FileJournalStore {
    async fn load(&self) -> Result<(Journal, Revision), StoreError> {
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let Some(bytes) = read_journal_file(&path)? else {
                return Ok((Journal::default(), Revision::NONE));
            };
            let journal = serde_json::from_slice(&bytes).map_err(|e| {
                // A damaged journal must stop the controller, never be silently reset.
                StoreError::failed("parse", format!("{}: {e}", path.display()))
            })?;
            Ok((journal, digest(&bytes)))
        })
        .await
        .map_err(|e| StoreError::failed("read", e))?
    }

    async fn save(&self, journal: &Journal, expected: &Revision) -> Result<Revision, StoreError> {
        let path = self.path.clone();
        let expected = expected.clone();
        let bytes =
            serde_json::to_vec_pretty(journal).map_err(|e| StoreError::failed("encode", e))?;
        tokio::task::spawn_blocking(move || {
            let current = read_journal_file(&path)?;
            if revision_of(current.as_deref()) != expected {
                return Err(StoreError::Conflict { expected });
            }
            write_atomically(&path, &bytes, Durability::Synced)
                .map_err(|e| StoreError::failed("write", e))?;
            Ok(digest(&bytes))
        })
        .await
        .map_err(|e| StoreError::failed("write", e))?
    }
}

fn specs_report_path(state: &Path) -> PathBuf {
    state.join("specs.json")
}

pub fn write_specs_report(state: &Path, report: &SpecsReport) -> std::io::Result<()> {
    let bytes = serde_json::to_vec_pretty(report).map_err(std::io::Error::other)?;
    write_atomically(&specs_report_path(state), &bytes, Durability::Atomic)
}

/// The spec problems `replicant run` last reported; none when it never wrote any.
pub fn read_specs_report(state: &Path) -> std::io::Result<SpecsReport> {
    let path = specs_report_path(state);
    match fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| std::io::Error::other(format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(SpecsReport::default()),
        Err(e) => Err(e),
    }
}

pub fn write_report(cluster_dir: &Path, report: &ClusterReport) -> std::io::Result<()> {
    let bytes = serde_json::to_vec_pretty(report).map_err(std::io::Error::other)?;
    write_atomically(&cluster_dir.join("status.json"), &bytes, Durability::Atomic)
}

/// Every cluster report under `state`, sorted by namespace and name.
pub fn read_reports(state: &Path) -> std::io::Result<Vec<ClusterReport>> {
    let mut reports = Vec::new();
    let dir = state.join("clusters");
    if !dir.exists() {
        return Ok(reports);
    }
    for entry in fs::read_dir(dir)? {
        let path = entry?.path().join("status.json");
        if let Ok(bytes) = fs::read(&path) {
            match serde_json::from_slice::<ClusterReport>(&bytes) {
                Ok(report) => reports.push(report),
                Err(e) => return Err(std::io::Error::other(format!("{}: {e}", path.display()))),
            }
        }
    }
    reports.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    Ok(reports)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn journal_round_trips_and_damage_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileJournalStore::new(dir.path());
        let (empty, none) = store.load().await.unwrap();
        assert_eq!(
            (empty, none.clone()),
            (Journal::default(), Revision::NONE),
            "a new cluster starts empty"
        );
        let journal = Journal {
            epoch: 7,
            current_primary: Some("b".into()),
            ..Default::default()
        };
        let written = store.save(&journal, &none).await.unwrap();
        assert_eq!(store.load().await.unwrap(), (journal, written));
        assert!(!dir.path().join("journal.tmp").exists());
        fs::write(dir.path().join("journal.json"), b"{not json").unwrap();
        let err = store.load().await.unwrap_err();
        assert!(
            matches!(err, StoreError::Failed { what: "parse", .. }),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_save_against_a_journal_changed_since_it_was_read_is_a_conflict() {
        let dir = tempfile::tempdir().unwrap();
        let (mine, theirs) = (
            FileJournalStore::new(dir.path()),
            FileJournalStore::new(dir.path()),
        );
        let (_, read) = mine.load().await.unwrap();
        let (_, also_read) = theirs.load().await.unwrap();
        let first = Journal {
            epoch: 1,
            ..Default::default()
        };
        let after_theirs = theirs.save(&first, &also_read).await.unwrap();
        let stale = Journal {
            epoch: 2,
            ..Default::default()
        };
        let refused = mine.save(&stale, &read).await.unwrap_err();
        assert!(matches!(refused, StoreError::Conflict { .. }), "{refused}");
        assert_eq!(mine.load().await.unwrap().0, first, "nothing overwritten");
        // Read afresh, the save goes through.
        mine.save(&stale, &after_theirs).await.unwrap();
        assert_eq!(theirs.load().await.unwrap().0.epoch, 2);
    }
}
