//! Base backups taken on this host: `pg_basebackup` of the local postgres (a standby's, by
//! choice of whoever asks), streamed into the repository as it runs, entered in the catalog
//! once the tool says the backup is complete. And their check: a backup restored into a scratch
//! directory, then `pg_verifybackup` against its own manifest.
//!
//! Touches the local postgres (as the replication user), the repository, and scratch
//! directories it makes and removes.

use std::{path::Path, process::Stdio, time::Duration};

use super::Options;
use crate::{
    engine::postgres::archive::BackupRequest,
    repository::{
        Repository,
        base::{BaseBackup, BaseError, wal_range},
        layout::DataSet,
    },
};

/// How long a base backup may take before it is abandoned.
const BACKUP_TIMEOUT: Duration = Duration::from_secs(6 * 3600);

/// Why a base backup failed.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("cannot start pg_basebackup: {0}")]
    Spawn(std::io::Error),
    #[error("pg_basebackup failed: {0}")]
    Tool(String),
    #[error("the backup took longer than {}h and was abandoned", BACKUP_TIMEOUT.as_secs() / 3600)]
    TimedOut,
    #[error("the repository: {0}")]
    Open(#[from] crate::repository::OpenError),
    #[error(transparent)]
    Base(#[from] BaseError),
    #[error("{0}")]
    Control(String),
}

/// Take a base backup of the local postgres into the request's repository.
pub async fn take(options: &Options, request: &BackupRequest) -> Result<BaseBackup, BackupError> {
    let settings = &request.settings;
    let set = DataSet {
        namespace: settings.namespace.clone(),
        cluster: settings.cluster.clone(),
        system_identifier: super::archive::system_identifier(&options.data)
            .map_err(|e| BackupError::Control(e.to_string()))?,
    };
    let repository = Repository::open(&settings.repository, settings.key.as_ref())?;
    let started_at = jiff::Timestamp::now();
    // Milliseconds: two backups in one second keep apart.
    let id = crate::repository::layout::entry_id(started_at);
    let mut command = std::process::Command::new(options.bin.join("pg_basebackup"));
    command
        .args(["-h", "127.0.0.1", "-p", &options.port.to_string()])
        .args(["-U", &options.replication.user])
        // One tar on stdout, its manifest inside; the WAL it needs fetched at its end, so a
        // backup is consistent without the archive.
        .args(["-D", "-", "-F", "t", "-X", "fetch", "--checkpoint=fast"])
        .args(["--label", &format!("replicant {id}")])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(password) = &options.replication.password {
        command.env("PGPASSWORD", password.expose());
    }
    let mut child = command.spawn().map_err(BackupError::Spawn)?;
    let stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let said = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
        text
    });
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    let uploading = repository.upload_base(&set, &id, stdout, (settings.compression, threads));
    let uploaded = match tokio::time::timeout(BACKUP_TIMEOUT, uploading).await {
        Ok(uploaded) => uploaded,
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            let _ = repository.remove_base(&set, &id).await;
            return Err(BackupError::TimedOut);
        }
    };
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .map_err(|e| BackupError::Spawn(std::io::Error::other(e)))?
        .map_err(BackupError::Spawn)?;
    let said = said.join().unwrap_or_default();
    if !status.success() {
        let _ = repository.remove_base(&set, &id).await;
        return Err(BackupError::Tool(
            crate::bounded::clip(said.trim(), 512).to_string(),
        ));
    }
    let uploaded = match uploaded {
        Ok(uploaded) => uploaded,
        Err(e) => {
            let _ = repository.remove_base(&set, &id).await;
            return Err(e.into());
        }
    };
    let (timeline, start_lsn, start_wal, end_lsn) = wal_range(&uploaded.label, &uploaded.manifest)?;
    let backup = BaseBackup {
        id,
        member: request.member.clone(),
        started_at,
        finished_at: jiff::Timestamp::now(),
        timeline,
        start_lsn,
        end_lsn,
        start_wal,
        raw_bytes: uploaded.raw_bytes,
        stored_bytes: uploaded.stored_bytes,
        compression: settings.compression,
        request: request.request.clone(),
    };
    repository.record_base(&set, &backup).await?;
    Ok(backup)
}

/// Why a base backup did not pass its check.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("cannot restore it: {0}")]
    Restore(#[from] BaseError),
    #[error("cannot run pg_verifybackup: {0}")]
    Spawn(std::io::Error),
    #[error("pg_verifybackup finds it damaged: {0}")]
    Damaged(String),
}

/// Restore `backup` of `set` into `scratch` (an empty directory) and check it against its own
/// manifest with `pg_verifybackup` from `bin`: every file's checksum, and the WAL it needs.
pub async fn verify_backup(
    repository: &Repository,
    set: &DataSet,
    backup: &BaseBackup,
    bin: &Path,
    scratch: &Path,
) -> Result<(), VerifyError> {
    let data = scratch.join("data");
    std::fs::create_dir_all(&data).map_err(|e| {
        VerifyError::Restore(BaseError::Restore {
            path: data.display().to_string(),
            source: e,
        })
    })?;
    repository.restore_base(set, backup, &data).await?;
    verify_data(bin, &data).await
}

/// Check a restored backup in `data` against its own manifest with `pg_verifybackup` from
/// `bin` (which leaves alone the settings a restore writes).
pub async fn verify_data(bin: &Path, data: &Path) -> Result<(), VerifyError> {
    let output = tokio::process::Command::new(bin.join("pg_verifybackup"))
        .arg(data)
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(VerifyError::Spawn)?;
    if output.status.success() {
        return Ok(());
    }
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Err(VerifyError::Damaged(
        crate::bounded::clip(said.trim(), 1024).to_string(),
    ))
}
