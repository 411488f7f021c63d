//! Local `redis-server`, `postgres` and `replicant node` processes on loopback for replicant's tests,
//! benchmarks and demo (start, freeze, kill, always by PID), and a writer that counts acknowledged
//! writes, and a one-node Garage (S3) store. Not part of replicant's library: it depends on no part of it.

pub mod azurite;
pub mod garage;
pub mod node;
pub mod postgres;
pub mod writer;

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};

/// A `redis-server` child process bound to 127.0.0.1 on a free port. Killed (by PID) on drop.
pub struct RedisProcess {
    child: Child,
    pub port: u16,
    pub dir: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error(
        "redis-server is not installed (on Debian/Ubuntu: sudo apt-get install redis-server; on macOS: brew install redis)"
    )]
    RedisMissing,
    #[error("cannot start redis-server: {0}")]
    Spawn(std::io::Error),
    #[error("redis-server on port {port} did not answer within {secs}s; see {log}")]
    NotReady { port: u16, secs: u64, log: String },
    #[error("no free port on 127.0.0.1: {0}")]
    NoPort(std::io::Error),
}

/// SIGKILL a child by its PID and reap it. Idempotent.
fn kill_and_reap(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Send `signal` to a child by its PID (ignored once it has gone).
fn signal(child: &Child, signal: Signal) {
    let _ = kill(Pid::from_raw(child.id() as i32), signal);
}

/// A port nobody listens on right now (the kernel's choice), and never handed out before by
/// this process: servers bind their ports some time later, and the kernel may offer a port
/// again meanwhile.
pub fn free_port() -> Result<u16, LocalError> {
    static HANDED_OUT: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    loop {
        let listener = TcpListener::bind("127.0.0.1:0").map_err(LocalError::NoPort)?;
        let port = listener
            .local_addr()
            .map(|a| a.port())
            .map_err(LocalError::NoPort)?;
        if HANDED_OUT.lock().expect("lock").insert(port) {
            return Ok(port);
        }
    }
}

/// Whether `redis-server` can be run.
pub fn redis_available() -> bool {
    Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl RedisProcess {
    /// Start an empty, non-persistent server in `dir` and wait until it answers.
    pub fn start(dir: &Path, extra: &[&str]) -> Result<Self, LocalError> {
        if !redis_available() {
            return Err(LocalError::RedisMissing);
        }
        let port = free_port()?;
        let dir = dir.join(format!("redis-{port}"));
        std::fs::create_dir_all(&dir).map_err(LocalError::Spawn)?;
        let child = spawn(port, &dir, extra)?;
        let mut process = Self { child, port, dir };
        if let Err(e) = process.wait_ready() {
            process.kill();
            return Err(e);
        }
        Ok(process)
    }

    fn wait_ready(&mut self) -> Result<(), LocalError> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.ping() {
                return Ok(());
            }
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(LocalError::NotReady {
            port: self.port,
            secs: 10,
            log: self.dir.join("redis.log").display().to_string(),
        })
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn ping(&self) -> bool {
        use std::io::{Read, Write};
        let Ok(mut stream) = std::net::TcpStream::connect_timeout(
            &std::net::SocketAddr::from(([127, 0, 0, 1], self.port)),
            Duration::from_millis(200),
        ) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
        let mut buf = [0u8; 16];
        stream.write_all(b"PING\r\n").is_ok()
            && stream
                .read(&mut buf)
                .is_ok_and(|n| buf[..n].starts_with(b"+PONG") || buf[..n].starts_with(b"-NOAUTH"))
    }

    /// SIGKILL by PID and reap. Idempotent.
    pub fn kill(&mut self) {
        kill_and_reap(&mut self.child);
    }

    /// SIGSTOP: the process stays, its sockets accept connections, nothing answers.
    pub fn freeze(&self) {
        signal(&self.child, Signal::SIGSTOP);
    }

    /// SIGCONT after [`freeze`](Self::freeze).
    pub fn thaw(&self) {
        signal(&self.child, Signal::SIGCONT);
    }

    /// Start again on the same port (after a kill), empty.
    pub fn restart(&mut self, extra: &[&str]) -> Result<(), LocalError> {
        self.kill();
        self.child = spawn(self.port, &self.dir, extra)?;
        self.wait_ready()
    }
}

fn spawn(port: u16, dir: &Path, extra: &[&str]) -> Result<Child, LocalError> {
    let log = dir.join("redis.log");
    Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .args([
            "--dir",
            &dir.display().to_string(),
            "--logfile",
            &log.display().to_string(),
        ])
        .args(["--daemonize", "no", "--protected-mode", "no"])
        // Small local data sets: start a replica's full sync at once instead of waiting 5s for company.
        .args(["--repl-diskless-sync-delay", "0"])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(LocalError::Spawn)
}

impl Drop for RedisProcess {
    fn drop(&mut self) {
        // A frozen process ignores nothing but SIGKILL; thaw first so it can be reaped promptly.
        self.thaw();
        self.kill();
    }
}
