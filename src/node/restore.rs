//! Point-in-time recovery from a repository: choose the base backup a target needs, refuse a
//! target outside what the repository can reach (before anything is restored, with the
//! window in the message), unpack the backup into an empty data directory and set it to replay
//! archived WAL to the target and promote. And `replicant restore-wal`, the `restore_command`
//! that hands PostgreSQL each archived WAL file, checked.
//!
//! Touches the data directory it is given, a settings file beside it, and the repository.

use std::path::{Path, PathBuf};

pub use crate::engine::postgres::archive::RecoveryTarget;
use crate::{
    engine::postgres::archive::ArchiveSettings,
    repository::{
        Repository,
        base::{BaseBackup, BaseError, newest_data_set},
        layout::{DataSet, WalFile},
        walscan::{Placed, Sought},
        window::{Window, describe, windows},
    },
};

/// Why a restore was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("the repository holds no base backup of {0}: nothing to restore from")]
    NoBackup(String),
    #[error(
        "{target} is outside what the repository can recover: {}",
        describe(windows)
    )]
    OutsideWindow {
        target: RecoveryTarget,
        windows: Vec<Window>,
    },
    #[error(
        "{target} is outside what the repository can recover: the archived WAL after every base backup holds no record of it (can recover: {})",
        describe(windows)
    )]
    NotArchived {
        target: RecoveryTarget,
        windows: Vec<Window>,
    },
    #[error(
        "{target} is outside what the repository can recover: its record at {} ({}) comes before the end of every base backup that begins before it, so no restore is consistent there (can recover: {})",
        crate::repository::window::lsn_text(found.lsn),
        crate::api::status_time(found.time),
        describe(windows)
    )]
    BeforeConsistent {
        target: RecoveryTarget,
        found: crate::repository::walscan::Found,
        windows: Vec<Window>,
    },
    #[error(transparent)]
    Place(#[from] crate::repository::walscan::PlaceError),
    #[error("{0} is not empty: a restore only fills an empty directory")]
    NotEmpty(String),
    #[error(transparent)]
    Base(#[from] BaseError),
    #[error(transparent)]
    Store(#[from] crate::repository::StoreError),
    #[error("{path}: {source}")]
    Files {
        path: String,
        source: std::io::Error,
    },
}

fn files(path: &Path) -> impl FnOnce(std::io::Error) -> RestoreError + '_ {
    move |source| RestoreError::Files {
        path: path.display().to_string(),
        source,
    }
}

/// The base backup to restore for `target`, and the stretch of the repository's window it
/// lies in, for cluster `namespace/cluster`; refused when the target lies outside every
/// stretch.
pub async fn plan(
    repository: &Repository,
    namespace: &str,
    cluster: &str,
    target: &RecoveryTarget,
) -> Result<(DataSet, BaseBackup, Window), RestoreError> {
    let catalog = repository
        .catalog(namespace, cluster)
        .await
        .map_err(RestoreError::Base)?;
    let Some((set, backups)) = newest_data_set(&catalog) else {
        return Err(RestoreError::NoBackup(format!("{namespace}/{cluster}")));
    };
    let segments = repository.archived_segments(&set).await?;
    let stretches = windows(&backups, &segments);
    let sought = match target {
        RecoveryTarget::Xid(xid) => Sought::Xid(*xid as u32),
        RecoveryTarget::Name(name) => Sought::RestorePoint(name.clone()),
        _ => {
            let (backup, window) = choose(&backups, &stretches, target).ok_or_else(|| {
                RestoreError::OutsideWindow {
                    target: target.clone(),
                    windows: stretches.clone(),
                }
            })?;
            return Ok((set, backup, window));
        }
    };
    // Where a transaction ends or a restore point lies shows only in the WAL: read it,
    // newest stretch first, before anything is restored.
    let mut unreachable = None;
    for window in stretches.iter().rev() {
        let within: Vec<BaseBackup> = backups
            .iter()
            .filter(|b| b.end_lsn >= window.earliest_lsn && b.end_lsn <= window.latest_lsn)
            .cloned()
            .collect();
        let placed = repository.place(&set, &within, &segments, &sought).await?;
        if let Placed::Unreachable(found) = placed {
            unreachable.get_or_insert(found);
        } else if let Placed::Reached { backup, found } = placed {
            tracing::info!(
                %target,
                lsn = %crate::repository::window::lsn_text(found.lsn),
                time = %found.time,
                committed = found.committed,
                backup = %backup.id,
                "the target found in the archived WAL"
            );
            return Ok((set, backup, window.clone()));
        }
    }
    Err(match unreachable {
        Some(found) => RestoreError::BeforeConsistent {
            target: target.clone(),
            found,
            windows: stretches,
        },
        None => RestoreError::NotArchived {
            target: target.clone(),
            windows: stretches,
        },
    })
}

/// The stretch `target` lies in, and the newest backup in it that ends before the target (the
/// least WAL to replay).
fn choose(
    backups: &[BaseBackup],
    stretches: &[Window],
    target: &RecoveryTarget,
) -> Option<(BaseBackup, Window)> {
    let within = |w: &Window| {
        let (earliest, latest) = (w.earliest_lsn, w.latest_lsn);
        backups
            .iter()
            .filter(move |b| b.end_lsn >= earliest && b.end_lsn <= latest)
    };
    let (window, backup) = match target {
        RecoveryTarget::Time(t) => {
            let w = stretches
                .iter()
                .rev()
                .find(|w| *t >= w.earliest_time && *t <= w.latest_time)?;
            (w, within(w).rfind(|b| b.finished_at <= *t))
        }
        RecoveryTarget::Lsn(lsn) => {
            let w = stretches
                .iter()
                .rev()
                .find(|w| *lsn >= w.earliest_lsn && *lsn <= w.latest_lsn)?;
            (w, within(w).rfind(|b| b.end_lsn <= *lsn))
        }
        // Placed by reading the WAL (`plan`).
        RecoveryTarget::Xid(_) | RecoveryTarget::Name(_) => return None,
        RecoveryTarget::Latest => {
            let w = stretches.last()?;
            (w, within(w).next_back())
        }
    };
    Some((backup?.clone(), window.clone()))
}

/// The settings file `restore-wal` reads, beside the data directory `data`.
pub fn restore_settings_path(data: &Path) -> PathBuf {
    let mut name = data.file_name().unwrap_or_default().to_os_string();
    name.push(".restore-settings.json");
    data.with_file_name(name)
}

/// Settings a restored server must not keep from the member the backup came from, and those a
/// restore sets itself.
const REPLACED: &[&str] = &[
    "primary_conninfo",
    "primary_slot_name",
    "restore_command",
    "recovery_target",
    "recovery_target_time",
    "recovery_target_lsn",
    "recovery_target_xid",
    "recovery_target_name",
    "recovery_target_action",
    "recovery_target_timeline",
    "archive_command",
];

/// `postgresql.auto.conf` text without the settings `names`.
fn without(text: &str, names: &[&str]) -> String {
    text.lines()
        .filter(|line| {
            let name = line.split('=').next().unwrap_or_default().trim();
            !names.contains(&name)
        })
        .map(|line| format!("{line}\n"))
        .collect()
}

/// Unpack `backup` of `set` into the empty directory `data` (made if missing, private to its
/// owner), without the signal files of the member it was taken from.
pub async fn unpack(
    repository: &Repository,
    set: &DataSet,
    backup: &BaseBackup,
    data: &Path,
) -> Result<(), RestoreError> {
    std::fs::create_dir_all(data).map_err(files(data))?;
    if std::fs::read_dir(data)
        .map_err(files(data))?
        .next()
        .is_some()
    {
        return Err(RestoreError::NotEmpty(data.display().to_string()));
    }
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(data, std::fs::Permissions::from_mode(0o700))
            .map_err(files(data))?;
    }
    repository.restore_base(set, backup, data).await?;
    // A backup of a standby is a standby's: what it becomes is for the caller to set.
    for signal in ["standby.signal", "recovery.signal"] {
        let _ = std::fs::remove_file(data.join(signal));
    }
    Ok(())
}

/// Unpack `backup` of `set` into the empty directory `data`, and set it up to replay archived
/// WAL (through `exe restore-wal`) to `target` and then promote.
pub async fn restore(
    repository: &Repository,
    settings: &ArchiveSettings,
    set: &DataSet,
    backup: &BaseBackup,
    target: &RecoveryTarget,
    data: &Path,
    exe: &Path,
) -> Result<(), RestoreError> {
    unpack(repository, set, backup, data).await?;
    let settings_path = restore_settings_path(data);
    let bytes = serde_json::to_vec(settings).map_err(|e| RestoreError::Files {
        path: settings_path.display().to_string(),
        source: std::io::Error::other(e),
    })?;
    crate::durable::write_private(&settings_path, &bytes).map_err(files(&settings_path))?;
    let mut text = restore_command_setting(data, exe, &settings_path, false)?;
    text.push_str("recovery_target_timeline = 'latest'\n");
    text.push_str("recovery_target_action = 'promote'\n");
    if let Some((name, value)) = target.setting() {
        text.push_str(&format!("{name} = {}\n", quoted(&value)));
    }
    let auto = data.join("postgresql.auto.conf");
    std::fs::write(&auto, text).map_err(files(&auto))?;
    std::fs::write(data.join("recovery.signal"), "").map_err(files(data))?;
    Ok(())
}

/// Set the unpacked `data` to fetch archived WAL as a standby does, through
/// `exe restore-wal --standby` with the settings file `settings` (the agent's own archive
/// settings, which the controller keeps current). No target: it follows its upstream once
/// the archive has nothing newer.
pub fn follow_archive(data: &Path, exe: &Path, settings: &Path) -> Result<(), RestoreError> {
    let text = restore_command_setting(data, exe, settings, true)?;
    let auto = data.join("postgresql.auto.conf");
    std::fs::write(&auto, text).map_err(files(&auto))
}

fn quoted(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// `data`'s `postgresql.auto.conf` without what a restore replaces, and with a
/// `restore_command` running `exe restore-wal` with `settings`.
fn restore_command_setting(
    data: &Path,
    exe: &Path,
    settings: &Path,
    standby: bool,
) -> Result<String, RestoreError> {
    let auto = data.join("postgresql.auto.conf");
    let mut text = without(
        &std::fs::read_to_string(&auto).unwrap_or_default(),
        REPLACED,
    );
    let shell = super::archive::shell_quoted;
    let command = format!(
        "{} restore-wal{} --settings {} %f %p",
        shell(exe),
        if standby { " --standby" } else { "" },
        shell(&std::path::absolute(settings).map_err(files(settings))?)
    );
    text.push_str(&format!("restore_command = {}\n", quoted(&command)));
    Ok(text)
}

/// What the source cluster's controller set on its primary: its members' names as the
/// synchronous standbys, and its fence. A recovered cluster gets its own from its controller.
const SOURCE_GUARD: &[&str] = &["synchronous_standby_names", "default_transaction_read_only"];

/// After a restored server promoted, to make it a new cluster's: drop what only its recovery
/// needed (the restore command, the target, and the settings file holding the source
/// repository's key), so that nothing copied from it later reads the source's archive, and
/// the source's guard and fence, which would hold its commits for members it does not have.
pub fn forget_recovery(data: &Path) -> Result<(), RestoreError> {
    let auto = data.join("postgresql.auto.conf");
    let text = std::fs::read_to_string(&auto).map_err(files(&auto))?;
    let kept = without(&without(&text, REPLACED), SOURCE_GUARD);
    std::fs::write(&auto, kept).map_err(files(&auto))?;
    let settings = restore_settings_path(data);
    match std::fs::remove_file(&settings) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(files(&settings)(e)),
        _ => Ok(()),
    }
}

/// How a run of `restore-wal` ended, for PostgreSQL.
#[derive(Debug, PartialEq, Eq)]
pub enum Fetched {
    /// Written where PostgreSQL asked.
    Restored,
    /// Never archived: the end of the archive, as far as recovery goes.
    NotArchived,
    /// The repository failed, or holds it damaged or twice: recovery must stop, not end
    /// early as if the archive ended here.
    Failed(String),
}

/// Fetch WAL file `name` into `destination` (relative to the data directory `data`).
pub async fn fetch(settings: &Path, data: &Path, name: &str, destination: &Path) -> Fetched {
    let settings: ArchiveSettings = match std::fs::read(settings)
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
    {
        Ok(settings) => settings,
        Err(e) => return Fetched::Failed(format!("{}: {e}", settings.display())),
    };
    let Some(file) = WalFile::parse(name) else {
        // PostgreSQL asks for files it may not find (a `.partial`'s plain name, say).
        return Fetched::NotArchived;
    };
    let system_identifier = match super::archive::system_identifier(data) {
        Ok(id) => id,
        Err(e) => return Fetched::Failed(e.to_string()),
    };
    let set = DataSet {
        namespace: settings.namespace.clone(),
        cluster: settings.cluster.clone(),
        system_identifier,
    };
    let repository = match Repository::open(&settings.repository, settings.key.as_ref()) {
        Ok(repository) => repository,
        Err(e) => return Fetched::Failed(e.to_string()),
    };
    match repository.fetch_wal(&set, &file).await {
        Ok(Some(content)) => {
            let path = data.join(destination);
            match std::fs::write(&path, content) {
                Ok(()) => Fetched::Restored,
                Err(e) => Fetched::Failed(format!("{}: {e}", path.display())),
            }
        }
        Ok(None) => Fetched::NotArchived,
        Err(e) => Fetched::Failed(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_recovered_data_set_keeps_its_own_settings_and_nothing_of_its_source() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        std::fs::write(
            data.join("postgresql.auto.conf"),
            "work_mem = '64MB'\nrestore_command = 'replicant restore-wal %f %p'\nrecovery_target_lsn = '0/3000060'\nsynchronous_standby_names = 'ANY 1 (b, c)'\ndefault_transaction_read_only = 'on'\n",
        )
        .unwrap();
        let settings = super::restore_settings_path(&data);
        std::fs::write(&settings, "{}").unwrap();
        super::forget_recovery(&data).unwrap();
        assert_eq!(
            std::fs::read_to_string(data.join("postgresql.auto.conf")).unwrap(),
            "work_mem = '64MB'\n"
        );
        assert!(
            !settings.exists(),
            "the source's key goes with its settings"
        );
    }
}
