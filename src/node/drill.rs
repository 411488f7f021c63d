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

use super::{Options, restore};
use crate::{
    engine::postgres::archive::DrillRequest,
    repository::{Repository, drill::DrillRecord},
};

/// How long replay may take before the drill is abandoned.
const REPLAY_LIMIT: Duration = Duration::from_secs(6 * 3600);
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
    let hba = scratch.join("drill_hba.conf");
    // Only the socket in the scratch directory (0700, the agent's user) reaches it.
    std::fs::write(&hba, "local all all trust\n").map_err(|e| failed(e.to_string()))?;
    let log = scratch.join("drill.log");
    let log_file = std::fs::File::create(&log).map_err(|e| failed(e.to_string()))?;
    let port = options.port.to_string();
    let mut postgres = tokio::process::Command::new(options.bin.join("postgres"))
        .arg("-D")
        .arg(&data)
        .args(["-p", &port, "-c", "listen_addresses="])
        .arg("-c")
        .arg(format!("unix_socket_directories={}", scratch.display()))
        .arg("-c")
        .arg(format!("hba_file={}", hba.display()))
        // Small, whatever the data set's own settings say: it shares the host with the
        // member's postgres, which must not be starved of memory or connections. Without hot
        // standby, recovery does not insist on the primary's limits.
        .args([
            "-c",
            "shared_buffers=128MB",
            "-c",
            "max_connections=20",
            "-c",
            "max_worker_processes=4",
            "-c",
            "max_parallel_workers=2",
            "-c",
            "maintenance_work_mem=64MB",
            "-c",
            "archive_mode=off",
            "-c",
            "hot_standby=off",
            "-c",
            "log_timezone=UTC",
            "-c",
            "logging_collector=off",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log_file)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| failed(format!("cannot start postgres: {e}")))?;
    let replayed = replay(options, scratch, &data, &port, &mut postgres).await;
    let checked = match replayed {
        Ok(()) => {
            record.restore_millis = Some(began.elapsed().as_millis() as u64);
            check(options, scratch, &port).await
        }
        Err(e) => Err(e),
    };
    if let Some(pid) = postgres.id() {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGINT,
        );
    }
    let _ = tokio::time::timeout(Duration::from_secs(60), postgres.wait()).await;
    let said = std::fs::read_to_string(&log).unwrap_or_default();
    let (lsn, at) = reached(&said);
    record.reached_lsn = lsn;
    record.reached_at = at;
    match checked {
        Ok(message) => Ok((set, message)),
        Err(message) => Err(failed(message)),
    }
}

/// Wait until recovery ended and the server accepts connections: PostgreSQL removes
/// `recovery.signal` when it promotes.
async fn replay(
    options: &Options,
    scratch: &Path,
    data: &Path,
    port: &str,
    postgres: &mut tokio::process::Child,
) -> Result<(), String> {
    let deadline = Instant::now() + REPLAY_LIMIT;
    loop {
        if let Ok(Some(status)) = postgres.try_wait() {
            let said = std::fs::read_to_string(scratch.join("drill.log")).unwrap_or_default();
            return Err(format!(
                "the restored postgres exited ({status}) before recovery ended: {}",
                crate::bounded::clip(last_lines(&said, 6).trim(), 1024)
            ));
        }
        if !data.join("recovery.signal").exists()
            && super::postmaster::accepts(&options.bin, scratch.as_os_str(), port).await
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "recovery had not ended after {}h",
                REPLAY_LIMIT.as_secs() / 3600
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
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

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Where replay ended, and the last replayed commit's time, from the server's log.
fn reached(log: &str) -> (Option<String>, Option<jiff::Timestamp>) {
    let lsn = log.lines().find_map(|l| {
        let rest = l.split("redo done at ").nth(1)?;
        Some(rest.split_whitespace().next()?.to_string())
    });
    let at = log.lines().find_map(|l| {
        let rest = l
            .split("last completed transaction was at log time ")
            .nth(1)?;
        // "2026-12-03 22:17:07.898765+00": as RFC 3339.
        let text = rest.trim().replacen(' ', "T", 1);
        let text = match text.len() {
            n if text.ends_with("+00") && n > 3 => format!("{}Z", &text[..n - 3]),
            _ => text,
        };
        text.parse().ok()
    });
    (lsn, at)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_point_reached_is_read_from_the_log() {
        let log = "LOG:  redo starts at 0/2000028\n\
                   LOG:  redo done at 0/5000148 system usage: CPU: user: 0.00 s\n\
                   LOG:  last completed transaction was at log time 2026-12-03 22:17:07.898765+00\n";
        let (lsn, at) = super::reached(log);
        assert_eq!(lsn.as_deref(), Some("0/5000148"));
        assert_eq!(at, Some("2026-12-03T22:17:07.898765Z".parse().unwrap()));
        assert_eq!(super::reached("nothing"), (None, None));
    }
}
