//! Local `replicant node` agents on loopback for tests and the demo: one per data directory, run
//! as the server user when the caller is root, its state beside the data directory, and
//! stopped or killed (with its postmaster, as a node loss) by PID.

use std::{
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use nix::{sys::signal::Signal, unistd::Pid};

use super::{
    free_port, kill_and_reap,
    postgres::{PASSWORD, PostgresError, owned_dir, server_user},
    signal,
};

/// A `replicant node` process. On drop: SIGTERM (it stops its postgres), then SIGKILL, by PID.
pub struct NodeProcess {
    child: Child,
    /// The agent's API port on 127.0.0.1.
    pub port: u16,
    /// The port its postgres listens on.
    pub pg_port: u16,
    pub data: PathBuf,
}

impl NodeProcess {
    /// Start `exe node` over the postgres of `data` on `pg_port`, presenting `token`, with
    /// `extra` arguments; its log is `node-<port>.log` in `dir`. It replicates as `postgres`
    /// unless `extra` names a `--replication-user`, with [`PASSWORD`]. Returns once the API
    /// listens.
    pub fn start(
        exe: &Path,
        dir: &Path,
        data: &Path,
        pg_port: u16,
        token: &str,
        extra: &[&str],
    ) -> Result<Self, PostgresError> {
        let port = free_port().map_err(|e| PostgresError::NoPort(e.to_string()))?;
        Self::start_on(exe, dir, data, pg_port, token, extra, port)
    }

    /// As [`NodeProcess::start`], with the API on `port`: a host that reboots keeps its address.
    pub fn start_on(
        exe: &Path,
        dir: &Path,
        data: &Path,
        pg_port: u16,
        token: &str,
        extra: &[&str],
        port: u16,
    ) -> Result<Self, PostgresError> {
        let io = |what: String| move |source| PostgresError::Io { what, source };
        let log_path = dir.join(format!("node-{port}.log"));
        let log = std::fs::File::create(&log_path)
            .map_err(io(format!("create {}", log_path.display())))?;
        let mut command = Command::new(exe);
        command.args(["node", "--data"]).arg(data);
        if !extra.contains(&"--replication-user") {
            command.args(["--replication-user", "postgres"]);
        }
        command
            .args(["--port", &pg_port.to_string()])
            .args(["--set", "listen_addresses=127.0.0.1"])
            .args(["--set", "unix_socket_directories="])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--token-env", "NODE_TOKEN"])
            .args(["--replication-password-env", "REPLICATION_PASSWORD"])
            .arg("--state")
            // Beside the data directory, not in it: a copy replaces the directory whole.
            .arg(state_dir(data)?.join("node.json"))
            .args(extra)
            .env("NODE_TOKEN", token)
            .env("REPLICATION_PASSWORD", PASSWORD)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        if let Some((uid, gid)) = server_user() {
            command.uid(uid).gid(gid);
        }
        let mut node = Self {
            child: command
                .spawn()
                .map_err(io(format!("start {}", exe.display())))?,
            port,
            pg_port,
            data: data.to_path_buf(),
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            // The agent's own answer, not any listener: another process may hold a port that
            // `free_port` handed out, and then the agent cannot bind it.
            if answers_http(port) && matches!(node.child.try_wait(), Ok(None)) {
                return Ok(node);
            }
            if let Ok(Some(_)) = node.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        node.kill();
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        Err(PostgresError::Failed {
            command: format!("{} node (listening on port {port})", exe.display()),
            status: "did not listen within 5s".into(),
            output: tail(log.trim(), 2048),
        })
    }

    /// The agent's API address.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Its postgres's address.
    pub fn pg_address(&self) -> String {
        format!("127.0.0.1:{}", self.pg_port)
    }

    /// The agent's PID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The running postmaster's PID, from `postmaster.pid`, if that process is alive and is a
    /// postgres of this data directory (a stale file's PID may belong to anyone by now).
    pub fn postmaster_pid(&self) -> Option<u32> {
        let pid: u32 = std::fs::read_to_string(self.data.join("postmaster.pid"))
            .ok()?
            .lines()
            .next()?
            .trim()
            .parse()
            .ok()?;
        let command_line = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let data = self.data.to_string_lossy();
        let ours = command_line
            .split(|b| *b == 0)
            .any(|arg| arg == data.as_bytes());
        ours.then_some(pid)
    }

    /// SIGKILL of the agent, and of its postmaster and every backend, as a node loss would.
    /// Idempotent.
    pub fn kill_node(&mut self) {
        let postmaster = self.postmaster_pid();
        kill_and_reap(&mut self.child);
        if let Some(pid) = postmaster {
            super::postgres::kill_postmaster(pid, || {
                let _ = nix::sys::signal::kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            });
        }
    }

    /// The host hangs (a stalled VM, a long pause): SIGSTOP of the agent, its postmaster and
    /// every process that started. Nothing answers; connections stay open. End it with
    /// [`thaw_node`](Self::thaw_node) or [`kill_node`](Self::kill_node).
    pub fn freeze_node(&self) {
        signal(&self.child, Signal::SIGSTOP);
        if let Some(pid) = self.postmaster_pid() {
            super::postgres::freeze_postmaster(pid);
        }
    }

    /// The hung host resumes: SIGCONT of the agent, its postmaster and its processes, one
    /// right after another, as a paused machine wakes.
    pub fn thaw_node(&self) {
        signal(&self.child, Signal::SIGCONT);
        if let Some(pid) = self.postmaster_pid() {
            super::postgres::thaw_postmaster(pid);
        }
    }

    /// SIGKILL of the agent alone (its postmaster runs on). Idempotent.
    pub fn kill(&mut self) {
        kill_and_reap(&mut self.child);
    }

    /// SIGTERM, which stops its postgres; SIGKILL after 10s.
    pub fn stop(&mut self) {
        // Never signal a PID already reaped: it may belong to another process by now.
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        signal(&self.child, Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        kill_and_reap(&mut self.child);
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.stop();
        // A postmaster left behind by a killed agent goes with it, and so does the shared
        // memory of one killed with it.
        if let Some(pid) = self.postmaster_pid() {
            let _ = nix::sys::signal::kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            std::thread::sleep(Duration::from_millis(50));
        }
        super::postgres::remove_shared_memory(&self.data);
    }
}

impl NodeProcess {
    /// The state file of the agent of `data`.
    pub fn state_file(data: &Path) -> PathBuf {
        data.with_file_name(format!(
            "{}.agent",
            data.file_name().unwrap_or_default().to_string_lossy()
        ))
        .join("node.json")
    }
}

/// Where the agent of `data` keeps its state: a directory beside it that the server user owns.
fn state_dir(data: &Path) -> Result<PathBuf, PostgresError> {
    let name = format!(
        "{}.agent",
        data.file_name().unwrap_or_default().to_string_lossy()
    );
    owned_dir(data.parent().unwrap_or(Path::new(".")), &name)
}

/// Whether the agent's API answers on 127.0.0.1:`port` within a second: an HTTP reply, or
/// the TLS alert an agent serving TLS sends back to plain text.
fn answers_http(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let mut head = [0u8; 5];
    stream.write_all(b"GET /v1/status HTTP/1.0\r\n\r\n").is_ok()
        && stream.read_exact(&mut head[..1]).is_ok()
        && (head[0] == 0x15 || (stream.read_exact(&mut head[1..]).is_ok() && &head == b"HTTP/"))
}

/// The last `max` bytes of `text` (cut on a character boundary): the end of a log says why a
/// process stopped.
fn tail(text: &str, max: usize) -> String {
    let mut start = text.len().saturating_sub(max);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    text[start..].to_string()
}
