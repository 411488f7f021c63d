//! The host's WAL archiver: PostgreSQL runs `replicant archive-wal` for each finished WAL file
//! (`archive_command`, with `archive_mode=always`, so a standby sends what it received and no
//! file is lost when its primary dies before sending it). Each run stores the file in the
//! repository the agent's settings name, once, and records what happened beside the agent's
//! state file. While the repository cannot take it, the file stays on the host, up to the
//! settings' bound; past it the file is let go and the gap recorded, so the disk never fills.
//!
//! Touches the settings and record files beside the agent's state, the data directory's
//! `pg_wal/archive_status` and `global/pg_control` (read only), and the repository.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use crate::{
    durable::{Durability, write_atomically},
    engine::postgres::archive::{
        ArchiveFailure, ArchiveGap, ArchiveRecord, ArchiveReport, ArchiveSettings, ArchivedFile,
        MAX_GAPS_KEPT,
    },
    repository::{
        Repository,
        layout::{DataSet, WalFile},
        wal::PushError,
    },
};

/// How long one file may take to reach the repository, retries included: PostgreSQL's
/// archiver waits for nothing else meanwhile.
const PUSH_TIMEOUT: Duration = Duration::from_secs(90);
/// A WAL segment's size when no finished segment is at hand to measure (PostgreSQL's default).
const DEFAULT_SEGMENT_BYTES: u64 = 16 << 20;

/// The `archive_command` that runs this archiver: `exe archive-wal --state <state> %p`, quoted
/// for the shell PostgreSQL runs it with.
pub fn command(exe: &Path, state: &Path) -> String {
    format!(
        "{} archive-wal --state {} %p",
        shell_quoted(exe),
        shell_quoted(state)
    )
}

/// `path` as one word of a command PostgreSQL runs through the shell (`archive_command`,
/// `restore_command`): inside single quotes only a quote needs care; `%` is PostgreSQL's
/// escape.
pub(super) fn shell_quoted(path: &Path) -> String {
    let text = path
        .display()
        .to_string()
        .replace('\'', "'\\''")
        .replace('%', "%%");
    format!("'{text}'")
}

/// The settings file, beside the agent's state file `state`.
pub fn settings_path(state: &Path) -> PathBuf {
    beside(state, "archive-settings.json")
}

/// The record file, beside the agent's state file `state`.
pub fn record_path(state: &Path) -> PathBuf {
    beside(state, "archive-record.json")
}

fn beside(state: &Path, suffix: &str) -> PathBuf {
    let mut name = state.file_name().unwrap_or_default().to_os_string();
    name.push(".");
    name.push(suffix);
    state.with_file_name(name)
}

/// Why the archiver's own files could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveFileError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Format {
        path: String,
        source: serde_json::Error,
    },
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> ArchiveFileError + '_ {
    move |source| ArchiveFileError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// The settings the controller last gave, if any.
pub fn read_settings(state: &Path) -> Result<Option<ArchiveSettings>, ArchiveFileError> {
    let path = settings_path(state);
    match std::fs::read(&path) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|source| ArchiveFileError::Format {
                    path: path.display().to_string(),
                    source,
                })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_error(&path)(e)),
    }
}

/// Keep `settings` (or none: archiving stops) for the archiver's next runs. The file holds the
/// store's key, so only the agent's user may read it.
pub fn write_settings(
    state: &Path,
    settings: Option<&ArchiveSettings>,
) -> Result<(), ArchiveFileError> {
    let path = settings_path(state);
    let Some(settings) = settings else {
        return match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_error(&path)(e)),
            _ => Ok(()),
        };
    };
    let bytes = serde_json::to_vec(settings).map_err(|source| ArchiveFileError::Format {
        path: path.display().to_string(),
        source,
    })?;
    crate::durable::write_private(&path, &bytes).map_err(io_error(&path))
}

fn read_record(state: &Path) -> ArchiveRecord {
    std::fs::read(record_path(state))
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default()
}

fn write_record(state: &Path, record: &ArchiveRecord) -> Result<(), ArchiveFileError> {
    let path = record_path(state);
    let bytes = serde_json::to_vec(record).map_err(|source| ArchiveFileError::Format {
        path: path.display().to_string(),
        source,
    })?;
    // A declared gap must outlive a power loss: recovery plans around it.
    write_atomically(&path, &bytes, Durability::Synced).map_err(io_error(&path))
}

/// The files PostgreSQL has finished and not yet archived: their number, and the oldest's
/// modification time.
fn waiting(data: &Path) -> (u64, Option<std::time::SystemTime>) {
    let Ok(entries) = std::fs::read_dir(data.join("pg_wal").join("archive_status")) else {
        return (0, None);
    };
    let mut count = 0;
    let mut oldest: Option<std::time::SystemTime> = None;
    for entry in entries.flatten() {
        if !entry.file_name().to_string_lossy().ends_with(".ready") {
            continue;
        }
        count += 1;
        if let Ok(modified) = entry.metadata().and_then(|m| m.modified()) {
            oldest = Some(oldest.map_or(modified, |o| o.min(modified)));
        }
    }
    (count, oldest)
}

/// What the agent reports of its archiver.
pub fn report(state: &Path, data: &Path) -> ArchiveReport {
    let (count, oldest) = waiting(data);
    ArchiveReport {
        settings: read_settings(state).ok().flatten().map(|s| s.fingerprint()),
        pending_bytes: count * DEFAULT_SEGMENT_BYTES,
        oldest_pending: oldest.and_then(|t| jiff::Timestamp::try_from(t).ok()),
        record: read_record(state),
    }
}

/// How one run of the archiver ended, for PostgreSQL: archived (or let go past the bound), or
/// to be retried.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Stored now, or already there.
    Archived,
    /// Archiving is off (no settings): PostgreSQL may recycle the file.
    Off,
    /// The repository could not take it, and the host's bound was reached: let go, the gap
    /// recorded.
    LetGo,
    /// Not archived: PostgreSQL keeps the file and runs the archiver again for it.
    Retry(String),
}

/// The system identifier in the data directory's control file (its first eight bytes).
pub(super) fn system_identifier(data: &Path) -> Result<u64, ArchiveFileError> {
    let path = data.join("global").join("pg_control");
    let bytes = std::fs::read(&path).map_err(io_error(&path))?;
    bytes
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_le_bytes)
        .ok_or_else(|| ArchiveFileError::Io {
            path: path.display().to_string(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, "shorter than 8 bytes"),
        })
}

/// Archive the file PostgreSQL names (`%p`, relative to the data directory `data`).
pub async fn archive(state: &Path, data: &Path, wal: &Path) -> Outcome {
    // Settings that cannot be read, or a file this archiver does not know, fail the run like
    // an unreachable repository: retried, and bounded all the same (by the default bound when
    // the settings are what is missing), so the disk never fills.
    let settings = match read_settings(state) {
        Ok(Some(settings)) => Ok(settings),
        Ok(None) => return Outcome::Off,
        Err(e) => Err(e.to_string()),
    };
    let pending_limit = settings
        .as_ref()
        .map_or(crate::api::ArchivePolicy::DEFAULT_PENDING_LIMIT, |s| {
            s.pending_limit
        });
    let name = wal
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let file = WalFile::parse(&name)
        .ok_or_else(|| format!("{name:?} is not a WAL file name this archiver knows"));
    let mut record = read_record(state);
    let result = match (&settings, &file) {
        (Ok(settings), Ok(file)) => push(settings, &record, data, wal, file).await,
        (Err(e), _) | (_, Err(e)) => Err(Refused::from(e.clone())),
    };
    let now = jiff::Timestamp::now();
    let outcome = match result {
        Ok(()) => {
            record.last_archived = Some(ArchivedFile {
                file: name.clone(),
                at: now,
            });
            record.archived_count += 1;
            record.failing_since = None;
            Outcome::Archived
        }
        Err(message) => {
            let failure = ArchiveFailure {
                file: name.clone(),
                at: now,
                message: message.text.clone(),
            };
            if message.conflict {
                record.conflict = Some(failure.clone());
            }
            record.last_failure = Some(failure);
            record.failing_since.get_or_insert(now);
            let (count, _) = waiting(data);
            let segment_bytes = std::fs::metadata(data.join(wal))
                .map(|m| m.len())
                .ok()
                .filter(|_| matches!(file, Ok(WalFile::Segment { .. })))
                .unwrap_or(DEFAULT_SEGMENT_BYTES);
            if count.saturating_mul(segment_bytes) >= pending_limit {
                declare_gap(&mut record, &name, now);
                Outcome::LetGo
            } else {
                Outcome::Retry(message.text)
            }
        }
    };
    if let Err(e) = write_record(state, &record) {
        // Unrecorded, a gap would go unseen: keep the file and try again.
        return Outcome::Retry(format!("cannot record the outcome: {e}"));
    }
    outcome
}

struct Refused {
    text: String,
    conflict: bool,
}

impl From<String> for Refused {
    fn from(text: String) -> Self {
        Self {
            text,
            conflict: false,
        }
    }
}

async fn push(
    settings: &ArchiveSettings,
    record: &ArchiveRecord,
    data: &Path,
    wal: &Path,
    file: &WalFile,
) -> Result<(), Refused> {
    if let Some(conflict) = &record.conflict
        && WalFile::parse(&conflict.file).is_some_and(|c| c.timeline() == file.timeline())
    {
        return Err(Refused {
            text: format!(
                "archiving from this member stopped for timeline {} at {}: {}",
                file.timeline(),
                conflict.file,
                conflict.message
            ),
            conflict: false,
        });
    }
    let set = DataSet {
        namespace: settings.namespace.clone(),
        cluster: settings.cluster.clone(),
        system_identifier: system_identifier(data).map_err(|e| e.to_string())?,
    };
    let content = std::fs::read(data.join(wal)).map_err(|e| format!("{}: {e}", wal.display()))?;
    let repository =
        Repository::open(&settings.repository, settings.key.as_ref()).map_err(|e| e.to_string())?;
    match tokio::time::timeout(PUSH_TIMEOUT, repository.push_wal(&set, file, &content)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e @ PushError::Conflict { .. })) => Err(Refused {
            text: e.to_string(),
            conflict: true,
        }),
        Ok(Err(e)) => Err(e.to_string().into()),
        Err(_) => Err(format!(
            "{}: the repository took longer than {}s",
            file.name(),
            PUSH_TIMEOUT.as_secs()
        )
        .into()),
    }
}

/// Record `name` as let go: it extends the last gap when it follows it, else opens a new one.
fn declare_gap(record: &mut ArchiveRecord, name: &str, now: jiff::Timestamp) {
    let follows = record
        .gaps
        .last()
        .is_some_and(|gap| next_segment(&gap.last).as_deref() == Some(name));
    if follows {
        if let Some(gap) = record.gaps.last_mut() {
            gap.last = name.to_string();
        }
        return;
    }
    record.gaps.push(ArchiveGap {
        first: name.to_string(),
        last: name.to_string(),
        declared_at: now,
    });
    record.gap_count += 1;
    if record.gaps.len() > MAX_GAPS_KEPT {
        record.gaps.remove(0);
    }
}

/// The segment after `name` (same timeline), for 16 MiB segments: 256 per log file.
fn next_segment(name: &str) -> Option<String> {
    if name.len() != 24 {
        return None;
    }
    let timeline = &name[..8];
    let log = u32::from_str_radix(&name[8..16], 16).ok()?;
    let segment = u32::from_str_radix(&name[16..24], 16).ok()?;
    let (log, segment) = if segment >= 0xFF {
        (log.checked_add(1)?, 0)
    } else {
        (log, segment + 1)
    };
    Some(format!("{timeline}{log:08X}{segment:08X}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contiguous_segments_let_go_make_one_gap_and_a_jump_opens_another() {
        let mut record = ArchiveRecord::default();
        let now = jiff::Timestamp::now();
        declare_gap(&mut record, "0000000100000000000000FE", now);
        declare_gap(&mut record, "0000000100000000000000FF", now);
        declare_gap(&mut record, "000000010000000100000000", now);
        declare_gap(&mut record, "000000010000000100000005", now);
        assert_eq!(record.gap_count, 2);
        assert_eq!(
            (record.gaps[0].first.as_str(), record.gaps[0].last.as_str()),
            ("0000000100000000000000FE", "000000010000000100000000")
        );
        assert_eq!(record.gaps[1].first, "000000010000000100000005");
        for n in 0..40u32 {
            declare_gap(&mut record, &format!("0000000200000000{:08X}", n * 2), now);
        }
        assert_eq!(record.gaps.len(), MAX_GAPS_KEPT);
        assert_eq!(record.gap_count, 42);
    }

    /// A data directory with `ready` finished files waiting, and the WAL file `name`.
    fn waiting_data(dir: &Path, ready: usize, name: &str) -> PathBuf {
        let data = dir.join("data");
        let status = data.join("pg_wal").join("archive_status");
        std::fs::create_dir_all(&status).unwrap();
        for n in 0..ready {
            std::fs::write(status.join(format!("{n:024X}.ready")), "").unwrap();
        }
        std::fs::write(data.join("pg_wal").join(name), b"wal").unwrap();
        data
    }

    #[tokio::test]
    async fn unreadable_settings_are_retried_and_bounded_by_the_default_bound() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("agent.json");
        std::fs::write(settings_path(&state), "{ not json").unwrap();
        let wal = Path::new("pg_wal/000000010000000000000003");
        let data = waiting_data(dir.path(), 3, "000000010000000000000003");
        assert!(matches!(
            archive(&state, &data, wal).await,
            Outcome::Retry(_)
        ));
        assert!(read_record(&state).failing_since.is_some());
        // 256 waiting files of 16 MiB reach the default 4 GiB: let go, and said.
        let data = waiting_data(&dir.path().join("full"), 256, "history.unknown");
        let outcome = archive(&state, &data, Path::new("pg_wal/history.unknown")).await;
        assert_eq!(outcome, Outcome::LetGo);
        let record = read_record(&state);
        assert_eq!(record.gap_count, 1);
        assert!(
            record
                .last_failure
                .unwrap()
                .message
                .contains("archive-settings.json"),
            "the failure names the file that could not be read"
        );
    }

    #[test]
    fn settings_and_record_sit_beside_the_state_file_and_the_settings_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("agent.json");
        assert_eq!(
            settings_path(&state),
            dir.path().join("agent.json.archive-settings.json")
        );
        let settings = ArchiveSettings {
            namespace: "default".into(),
            cluster: "orders".into(),
            repository: crate::api::Repository {
                name: "local".into(),
                directory: Some(crate::api::DirectoryRepository {
                    path: dir.path().join("repo").display().to_string(),
                }),
                s3: None,
                azure: None,
                gcs: None,
            },
            key: None,
            pending_limit: 1 << 30,
            compression: Default::default(),
        };
        write_settings(&state, Some(&settings)).unwrap();
        let mode = std::fs::metadata(settings_path(&state))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "{mode:o}");
        assert_eq!(read_settings(&state).unwrap(), Some(settings));
        write_settings(&state, None).unwrap();
        assert_eq!(read_settings(&state).unwrap(), None);
    }
}
