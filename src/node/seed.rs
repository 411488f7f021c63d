//! A new standby's copy made from the cluster's newest base backup instead of from a member:
//! unpacked into the copy directory, checked against its manifest, and set to replay the
//! archived WAL through this agent's own archive settings before it streams from its upstream.
//! Touches the repository and the copy directory it is given.

use std::path::Path;

use super::{
    Options,
    host::{self, HostError},
    restore,
};
use crate::{
    engine::postgres::{
        agent::Source,
        archive::{ArchiveSettings, RecoveryTarget},
    },
    repository::Repository,
};

/// Copy `source` into the data directory as a standby of it: from the newest base backup in
/// the repository of `seed` when given and it holds one of the source's data set, else from
/// the source (`host::clone`).
pub async fn clone(
    options: &Options,
    source: &Source,
    seed: Option<&ArchiveSettings>,
) -> Result<(), HostError> {
    let Some(settings) = seed else {
        return host::clone(options, source).await;
    };
    let theirs = host::same_data_set(options, source).await?;
    let copy = host::copy_dir(options);
    let _ = std::fs::remove_dir_all(&copy);
    let seeded = from_backup(options, settings, theirs, &copy).await;
    if !matches!(seeded, Ok(Some(_))) {
        let _ = std::fs::remove_dir_all(&copy);
    }
    match seeded? {
        Some(backup) => {
            tracing::info!(%backup, "copied from a base backup; the archive and the upstream bring it up to date");
            host::swap_in(options, &copy)?;
            host::configure_standby(options, source)
        }
        None => {
            tracing::info!(
                "the repository holds no backup of this data set to copy from: copied from the upstream"
            );
            host::clone(options, source).await
        }
    }
}

/// Unpack the newest base backup of data set `system_identifier` into the empty directory
/// `copy`, ready to follow the archive as a standby. `Ok(None)` when the repository holds no
/// backup of that data set (the copy then comes from the upstream); the backup's id otherwise.
async fn from_backup(
    options: &Options,
    settings: &ArchiveSettings,
    system_identifier: u64,
    copy: &Path,
) -> Result<Option<String>, HostError> {
    let refused = |e: String| HostError::Refused(format!("a copy from a backup: {e}"));
    let repository = Repository::open(&settings.repository, settings.key.as_ref())
        .map_err(|e| refused(e.to_string()))?;
    let planned = restore::plan(
        &repository,
        &settings.namespace,
        &settings.cluster,
        &RecoveryTarget::Latest,
    )
    .await;
    let (set, backup) = match planned {
        Ok((set, backup, _)) if set.system_identifier == system_identifier => (set, backup),
        Ok(_) | Err(restore::RestoreError::NoBackup(_)) => return Ok(None),
        // Backups there, but none the archive reaches from: no standby could catch up from one.
        Err(restore::RestoreError::OutsideWindow { .. }) => return Ok(None),
        Err(e) => return Err(refused(e.to_string())),
    };
    restore::unpack(&repository, &set, &backup, copy)
        .await
        .map_err(|e| refused(e.to_string()))?;
    super::backup::verify_data(&options.bin, copy)
        .await
        .map_err(|e| refused(e.to_string()))?;
    let exe = std::env::current_exe().map_err(|source| HostError::Files {
        doing: "find this binary".into(),
        source,
    })?;
    let archive_settings = super::archive::settings_path(
        &std::path::absolute(&options.state).unwrap_or(options.state.clone()),
    );
    restore::follow_archive(copy, &exe, &archive_settings).map_err(|e| refused(e.to_string()))?;
    Ok(Some(backup.id))
}
