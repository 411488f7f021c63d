//! The postmaster the agent runs as its child: start, wait until it accepts connections, stop.

use std::{path::Path, process::Stdio, time::Duration};

use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use tokio::process::{Child, Command};

use super::{Options, host::HostError};

/// How a stop asks postgres to end (as `pg_ctl stop -m`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StopMode {
    /// Roll back open transactions, checkpoint, end cleanly (SIGINT).
    Fast,
    /// End at once; the next start recovers (SIGQUIT).
    Immediate,
}

/// How long postgres may take to stop before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(60);

pub struct Postmaster {
    child: Child,
}

impl Postmaster {
    pub fn start(options: &Options) -> Result<Self, HostError> {
        let mut command = Command::new(options.bin.join("postgres"));
        command
            .arg("-D")
            .arg(&options.data)
            .args(["-p", &options.port.to_string()])
            // pg_rewind needs it: a rejoining old primary is rewound, not copied.
            .args(["-c", "wal_log_hints=on"]);
        // Every member archives what it has, standbys included (`always`), through this
        // binary; with no settings from the controller the archiver only lets files go. A
        // minute's bound on how long a written change waits for its segment to be archived.
        if let Ok(exe) = std::env::current_exe() {
            command
                .args(["-c", "archive_mode=always", "-c", "archive_timeout=60"])
                .arg("-c")
                .arg(format!(
                    "archive_command={}",
                    // It runs in the data directory: a relative path would lead elsewhere.
                    super::archive::command(
                        &exe,
                        &std::path::absolute(&options.state).unwrap_or(options.state.clone())
                    )
                ));
        }
        for (name, value) in &options.settings {
            command.arg("-c").arg(format!("{name}={value}"));
        }
        let child = command
            .stdin(Stdio::null())
            .kill_on_drop(false)
            .spawn()
            .map_err(|source| HostError::Spawn {
                tool: "cannot start postgres",
                source,
            })?;
        Ok(Self { child })
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Whether the process is still there.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Wait until postgres accepts connections (`pg_isready`), or `limit` passes, or it exits.
    pub async fn wait_ready(
        &mut self,
        bin: &Path,
        port: u16,
        limit: Duration,
    ) -> Result<(), HostError> {
        let deadline = tokio::time::Instant::now() + limit;
        while tokio::time::Instant::now() < deadline {
            if !self.running() {
                return Err(HostError::Exited);
            }
            if accepts(bin, "127.0.0.1".as_ref(), &port.to_string()).await {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(HostError::NotReady { limit })
    }

    /// Stop and reap; killed if it takes longer than the stop timeout.
    pub async fn stop(&mut self, mode: StopMode) {
        if let Some(pid) = self.child.id() {
            let signal = match mode {
                StopMode::Fast => Signal::SIGINT,
                StopMode::Immediate => Signal::SIGQUIT,
            };
            let _ = kill(Pid::from_raw(pid as i32), signal);
        }
        if tokio::time::timeout(STOP_TIMEOUT, self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// Whether the postgres at `host` (an address, or a socket directory) and `port` accepts
/// connections now (`pg_isready`, within a second).
pub async fn accepts(bin: &Path, host: &std::ffi::OsStr, port: &str) -> bool {
    Command::new(bin.join("pg_isready"))
        .arg("-h")
        .arg(host)
        .args(["-p", port, "-t", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await
        .is_ok_and(|s| s.success())
}
