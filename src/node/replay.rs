//! A postgres of the agent's own over a restored data directory, reachable only through a
//! socket in its work directory: started, waited on until recovery ends and it promotes,
//! stopped. Restore drills and recoveries into a new cluster replay through it; it is never
//! the member's own postgres. Touches the work directory and the process it starts there.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use super::Options;

/// How long replay may take before it is abandoned.
pub const REPLAY_LIMIT: Duration = Duration::from_secs(6 * 3600);

pub struct ReplayServer {
    child: tokio::process::Child,
    work: PathBuf,
    port: String,
}

impl ReplayServer {
    /// Start postgres on `data` with `settings` besides its own, listening only on a socket
    /// in `work` (the agent's user's, 0700), trusting whoever reaches that socket, logging to
    /// `work/replay.log`.
    pub fn start(
        options: &Options,
        work: &Path,
        data: &Path,
        settings: &[(&str, &str)],
    ) -> Result<Self, String> {
        let hba = work.join("replay_hba.conf");
        std::fs::write(&hba, "local all all trust\n")
            .map_err(|e| format!("{}: {e}", hba.display()))?;
        let log = Self::log_path(work);
        let log_file =
            std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let port = options.port.to_string();
        let mut command = tokio::process::Command::new(options.bin.join("postgres"));
        command
            .arg("-D")
            .arg(data)
            .args(["-p", &port, "-c", "listen_addresses="])
            .arg("-c")
            .arg(format!("unix_socket_directories={}", work.display()))
            .arg("-c")
            .arg(format!("hba_file={}", hba.display()))
            .args(["-c", "log_timezone=UTC", "-c", "logging_collector=off"]);
        for (name, value) in settings {
            command.arg("-c").arg(format!("{name}={value}"));
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start postgres: {e}"))?;
        Ok(Self {
            child,
            work: work.to_path_buf(),
            port,
        })
    }

    fn log_path(work: &Path) -> PathBuf {
        work.join("replay.log")
    }

    /// Where clients reach it: the socket directory and the port.
    pub fn socket(&self) -> (&Path, &str) {
        (&self.work, &self.port)
    }

    /// Wait until recovery ended and the server accepts connections (PostgreSQL removes
    /// `recovery.signal` when it promotes); an exit before that fails with its last words.
    pub async fn wait_promoted(&mut self, options: &Options, data: &Path) -> Result<(), String> {
        let deadline = Instant::now() + REPLAY_LIMIT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                let said = std::fs::read_to_string(Self::log_path(&self.work)).unwrap_or_default();
                return Err(format!(
                    "the restored postgres exited ({status}) before recovery ended: {}",
                    crate::bounded::clip(last_lines(&said, 6).trim(), 1024)
                ));
            }
            if !data.join("recovery.signal").exists()
                && super::postmaster::accepts(&options.bin, self.work.as_os_str(), &self.port).await
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

    /// Stop it cleanly (a shutdown checkpoint: the data directory needs no recovery after),
    /// and return its log.
    pub async fn stop(mut self) -> Result<String, String> {
        if let Some(pid) = self.child.id() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGINT,
            );
        }
        let stopped = tokio::time::timeout(Duration::from_secs(120), self.child.wait()).await;
        let said = std::fs::read_to_string(Self::log_path(&self.work)).unwrap_or_default();
        match stopped {
            Ok(Ok(status)) if status.success() => Ok(said),
            Ok(Ok(status)) => Err(format!(
                "the restored postgres did not stop cleanly ({status}): {}",
                crate::bounded::clip(last_lines(&said, 6).trim(), 1024)
            )),
            Ok(Err(e)) => Err(format!("the restored postgres: {e}")),
            Err(_) => Err("the restored postgres did not stop within 120s".into()),
        }
    }
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Where replay ended, and the last replayed commit's time, from the server's log.
pub fn reached(log: &str) -> (Option<String>, Option<jiff::Timestamp>) {
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
