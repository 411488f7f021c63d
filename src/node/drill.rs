//! Restore drills run on this host: the latest base backup restored into a scratch directory
//! beside the agent's state, replayed to the newest archived WAL by a postgres of its own
//! (reachable only through a socket in that directory), checked with `pg_amcheck`, timed,
//! and recorded in the repository. Touches the repository, the scratch directory (made and
//! removed) and the postgres it starts there; never the member's own postgres.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use super::{
    Options,
    replay::{self, ReplayServer},
    restore,
};
use crate::{
    engine::postgres::archive::DrillRequest,
    repository::{Repository, drill::DrillRecord},
};

/// How long the check may take.
const CHECK_LIMIT: Duration = Duration::from_secs(3600);

/// Where this host's drills restore to: beside the agent's state, which the agent's user owns.
pub fn scratch(options: &Options) -> PathBuf {
    let mut name = options.state.file_name().unwrap_or_default().to_os_string();
    name.push(".drill");
    options.state.with_file_name(name)
}

/// Run one drill for `request` and record it in the repository (best effort: the record is
/// also returned, for the agent's own report).
pub async fn run(options: &Options, request: &DrillRequest) -> DrillRecord {
    let started_at = jiff::Timestamp::now();
    let mut record = DrillRecord {
        id: crate::repository::layout::entry_id(started_at),
        member: request.member.clone(),
        backup_id: None,
        started_at,
        finished_at: started_at,
        restore_millis: None,
        reached_lsn: None,
        reached_at: None,
        passed: false,
        message: String::new(),
    };
    let settings = &request.settings;
    let repository = match Repository::open(&settings.repository, settings.key.as_ref()) {
        Ok(r) => r,
        Err(e) => {
            record.message = format!("the repository: {e}");
            record.finished_at = jiff::Timestamp::now();
            return record;
        }
    };
    let scratch = scratch(options);
    let outcome = drill(options, &repository, request, &scratch, &mut record).await;
    let _ = std::fs::remove_dir_all(&scratch);
    record.finished_at = jiff::Timestamp::now();
    match outcome {
        Ok((set, message)) => {
            record.passed = true;
            record.message = message;
            if let Err(e) = repository.record_drill(&set, &record).await {
                tracing::warn!(error = %e, "the drill's record could not be stored");
            }
        }
        Err((set, message)) => {
            record.message = message;
            if let Some(set) = set
                && let Err(e) = repository.record_drill(&set, &record).await
            {
                tracing::warn!(error = %e, "the drill's record could not be stored");
            }
        }
    }
    record
}

type Failed = (Option<crate::repository::layout::DataSet>, String);

/// Restore, replay, check; fills `record` on the way.
async fn drill(
    options: &Options,
    repository: &Repository,
    request: &DrillRequest,
    scratch: &Path,
    record: &mut DrillRecord,
) -> Result<(crate::repository::layout::DataSet, String), Failed> {
    let settings = &request.settings;
    let (set, backup, _) = restore::plan(
        repository,
        &settings.namespace,
        &settings.cluster,
        &restore::RecoveryTarget::Latest,
    )
    .await
    .map_err(|e| (None, e.to_string()))?;
    record.backup_id = Some(backup.id.clone());
    let failed = |message: String| (Some(set.clone()), message);
    let _ = std::fs::remove_dir_all(scratch);
    std::fs::create_dir_all(scratch).map_err(|e| failed(format!("{}: {e}", scratch.display())))?;
    let data = scratch.join("data");
    let exe = std::env::current_exe().map_err(|e| failed(format!("this binary: {e}")))?;
    let began = Instant::now();
    restore::restore(
        repository,
        settings,
        &set,
        &backup,
        &restore::RecoveryTarget::Latest,
        &data,
        &exe,
    )
    .await
    .map_err(|e| failed(e.to_string()))?;
    super::backup::verify_data(&options.bin, &data)
        .await
        .map_err(|e| failed(e.to_string()))?;
    // Small, whatever the data set's own settings say: it shares the host with the member's
    // postgres, which must not be starved of memory or connections. Without hot standby,
    // recovery does not insist on the primary's limits.
    let mut server = ReplayServer::start(
        options,
        scratch,
        &data,
        &[
            ("shared_buffers", "128MB"),
            ("max_connections", "20"),
            ("max_worker_processes", "4"),
            ("max_parallel_workers", "2"),
            ("maintenance_work_mem", "64MB"),
            ("archive_mode", "off"),
            ("hot_standby", "off"),
        ],
    )
    .map_err(failed)?;
    let checked = match server.wait_promoted(options, &data).await {
        Ok(()) => {
            record.restore_millis = Some(began.elapsed().as_millis() as u64);
            let (socket, port) = server.socket();
            check(options, socket, port).await
        }
        Err(e) => Err(e),
    };
    let said = server.stop().await.unwrap_or_else(|said| said);
    let (lsn, at) = replay::reached(&said);
    record.reached_lsn = lsn;
    record.reached_at = at;
    match checked {
        Ok(message) => Ok((set, message)),
        Err(message) => Err(failed(message)),
    }
}

/// `pg_amcheck` on every database of the restored server: every table and index checked
/// against its own structure.
async fn check(options: &Options, scratch: &Path, port: &str) -> Result<String, String> {
    let run = tokio::process::Command::new(options.bin.join("pg_amcheck"))
        .arg("-h")
        .arg(scratch)
        .args(["-p", port, "-U", &options.superuser.name])
        .args(["--all", "--install-missing", "--heapallindexed"])
        .stdin(Stdio::null())
        .output();
    let output = tokio::time::timeout(CHECK_LIMIT, run)
        .await
        .map_err(|_| format!("pg_amcheck took longer than {}s", CHECK_LIMIT.as_secs()))?
        .map_err(|e| format!("cannot run pg_amcheck: {e}"))?;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    match output.status.success() {
        true => Ok("restored and checked against its manifest, replayed to the newest archived WAL, and pg_amcheck found every table and index sound".into()),
        false => Err(format!(
            "pg_amcheck: {}",
            crate::bounded::clip(said.trim(), 1024)
        )),
    }
}
