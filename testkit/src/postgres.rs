//! Local `postgres` servers on loopback for tests, the demo and benchmarks: a primary made with
//! initdb, standbys cloned from it with pg_basebackup. Run as the unprivileged `postgres` user
//! when the caller is root (PostgreSQL refuses root), each in its own data directory, on TCP
//! only; shut down by PID.

use std::{
    os::unix::{fs::PermissionsExt, process::CommandExt},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use nix::{
    sys::signal::{Signal, kill},
    unistd::{Gid, Pid, Uid, User, chown},
};

use super::{free_port, kill_and_reap, signal};

/// The superuser's password in servers made here (scram-sha-256 on loopback).
pub const PASSWORD: &str = "replicant-test";

#[derive(Debug, thiserror::Error)]
pub enum PostgresError {
    #[error(
        "PostgreSQL is not installed (Debian: sudo apt-get install postgresql-15; or set REPLICANT_PG_BIN to its bin directory)"
    )]
    Missing,
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("{command} failed ({status}): {output}")]
    Failed {
        command: String,
        status: String,
        output: String,
    },
    #[error("postgres on port {port} did not accept connections within {secs}s; see {log}")]
    NotReady { port: u16, secs: u64, log: String },
    #[error("no free port: {0}")]
    NoPort(String),
}

/// The directory of `postgres`, `initdb`, `pg_basebackup`...: `REPLICANT_PG_BIN`, else the
/// newest `/usr/lib/postgresql/*/bin` (Debian keeps them off the PATH), else the PATH. The
/// node agent looks the same way (`replicant node --pg-bin`'s default), so that tests and the
/// agents they start use one installation.
pub fn bin_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("REPLICANT_PG_BIN") {
        return Some(PathBuf::from(dir));
    }
    let newest = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version: u32 = entry.file_name().to_str()?.parse().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .filter(|(_, bin)| bin.join("postgres").exists())
        .max();
    if let Some((_, bin)) = newest {
        return Some(bin);
    }
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths).find(|dir| dir.join("postgres").exists())
}

/// Whether PostgreSQL's server binaries can be found.
pub fn postgres_available() -> bool {
    bin_dir().is_some()
}

/// A new data directory in `dir` made by initdb (superuser `postgres`, password [`PASSWORD`],
/// replication allowed from loopback), not started; and a free port for it.
pub fn init_data(dir: &Path) -> Result<(PathBuf, u16), PostgresError> {
    let port = free_port().map_err(|e| PostgresError::NoPort(e.to_string()))?;
    let data = prepare(dir, port)?;
    let pwfile = data.with_extension("pw");
    write_owned(&pwfile, PASSWORD)?;
    run(Command::new(tool("initdb")?)
        .args(["-D"])
        .arg(&data)
        .args([
            "-U",
            "postgres",
            "--auth=scram-sha-256",
            "--no-sync",
            "-E",
            "UTF8",
        ])
        .arg(format!("--pwfile={}", pwfile.display())))?;
    let hba = "local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\nhost replication all 127.0.0.1/32 scram-sha-256\n";
    write_owned(&data.join("pg_hba.conf"), hba)?;
    Ok((data, port))
}

/// A directory `parent/name` owned by the user servers run as: a data directory's parent on a
/// real host, where an agent may set directories beside it.
pub fn owned_dir(parent: &Path, name: &str) -> Result<PathBuf, PostgresError> {
    let dir = parent.join(name);
    std::fs::create_dir_all(&dir).map_err(|source| PostgresError::Io {
        what: format!("create {}", dir.display()),
        source,
    })?;
    if let Some((uid, gid)) = run_as() {
        chown(&dir, Some(uid), Some(gid)).map_err(|e| PostgresError::Io {
            what: format!("chown {}", dir.display()),
            source: e.into(),
        })?;
    }
    Ok(dir)
}

/// An empty data directory in `dir` and a free port for it (for a copy to fill).
pub fn empty_data(dir: &Path) -> Result<(PathBuf, u16), PostgresError> {
    let port = free_port().map_err(|e| PostgresError::NoPort(e.to_string()))?;
    Ok((prepare(dir, port)?, port))
}

/// The user and group servers (and node agents) run as when we are root: PostgreSQL refuses
/// to run as root.
pub fn server_user() -> Option<(u32, u32)> {
    run_as().map(|(uid, gid)| (uid.as_raw(), gid.as_raw()))
}

/// Who the servers run as: the `postgres` user (or `nobody`) when we are root, else ourselves.
fn run_as() -> Option<(Uid, Gid)> {
    if !Uid::effective().is_root() {
        return None;
    }
    let user = User::from_name("postgres")
        .ok()
        .flatten()
        .or_else(|| User::from_name("nobody").ok().flatten())?;
    Some((user.uid, user.gid))
}

/// A `postgres` server on 127.0.0.1. Shut down on drop (SIGQUIT, then SIGKILL), by PID.
pub struct PostgresProcess {
    child: Child,
    pub port: u16,
    pub data: PathBuf,
    log: PathBuf,
}

impl PostgresProcess {
    /// A new primary in `dir`: initdb, replication allowed from loopback, then started.
    pub fn primary(dir: &Path, settings: &[(&str, &str)]) -> Result<Self, PostgresError> {
        let (data, port) = init_data(dir)?;
        Self::start(data, port, settings)
    }

    /// A standby streaming from `primary`, cloned with pg_basebackup into `dir`.
    pub fn standby_of(
        primary: &PostgresProcess,
        dir: &Path,
        settings: &[(&str, &str)],
    ) -> Result<Self, PostgresError> {
        Self::standby_of_port(primary.port, dir, settings)
    }

    /// A standby streaming from the server on 127.0.0.1:`primary_port`.
    pub fn standby_of_port(
        primary_port: u16,
        dir: &Path,
        settings: &[(&str, &str)],
    ) -> Result<Self, PostgresError> {
        let port = free_port().map_err(|e| PostgresError::NoPort(e.to_string()))?;
        // Empty and owned by the server's user: pg_basebackup fills it.
        let data = prepare(dir, port)?;
        run(Command::new(tool("pg_basebackup")?)
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &primary_port.to_string(),
                "-U",
                "postgres",
            ])
            .arg("-D")
            .arg(&data)
            .args(["-R", "-X", "stream", "--no-sync"])
            .env("PGPASSWORD", PASSWORD))?;
        Self::start(data, port, settings)
    }

    /// Start the data directory `data` (owned by the servers' user) on a free port, and wait
    /// until it accepts connections.
    pub fn existing(data: &Path, settings: &[(&str, &str)]) -> Result<Self, PostgresError> {
        let port = free_port().map_err(|e| PostgresError::NoPort(e.to_string()))?;
        Self::start(data.to_path_buf(), port, settings)
    }

    fn start(data: PathBuf, port: u16, settings: &[(&str, &str)]) -> Result<Self, PostgresError> {
        let log = data.with_extension("log");
        let mut process = Self {
            child: spawn(&data, port, settings, &log)?,
            port,
            data,
            log,
        };
        process.wait_until(Duration::from_secs(30), |p| p.accepting())?;
        Ok(process)
    }

    /// Start again after a kill or a stop, with the same data, port and `settings`; waits until
    /// the server accepts connections (`wait_ready`) or only until it listens.
    pub fn restart(
        &mut self,
        settings: &[(&str, &str)],
        wait_ready: bool,
    ) -> Result<(), PostgresError> {
        self.kill();
        self.child = spawn(&self.data, self.port, settings, &self.log)?;
        if wait_ready {
            self.wait_until(Duration::from_secs(30), |p| p.accepting())
        } else {
            self.wait_until(Duration::from_secs(30), |p| p.listening())
        }
    }

    fn wait_until(
        &mut self,
        limit: Duration,
        ready: impl Fn(&Self) -> bool,
    ) -> Result<(), PostgresError> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if ready(self) {
                return Ok(());
            }
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(PostgresError::NotReady {
            port: self.port,
            secs: limit.as_secs(),
            log: self.log.display().to_string(),
        })
    }

    /// `pg_isready`: 0 accepting, 1 rejecting (starting up, no hot standby), 2 no answer.
    fn isready(&self) -> Option<i32> {
        let tool = tool("pg_isready").ok()?;
        Command::new(tool)
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-t", "1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .ok()?
            .code()
    }

    fn accepting(&self) -> bool {
        self.isready() == Some(0)
    }

    fn listening(&self) -> bool {
        matches!(self.isready(), Some(0 | 1))
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The postmaster's PID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL of the postmaster and of every process it started, by PID, as the loss of the
    /// node would. Idempotent.
    pub fn kill(&mut self) {
        kill_postmaster(self.child.id(), || kill_and_reap(&mut self.child));
    }

    /// SIGSTOP of the postmaster: connections are accepted by the kernel, nothing answers.
    pub fn freeze(&self) {
        signal(&self.child, Signal::SIGSTOP);
    }

    /// SIGCONT after [`freeze`](Self::freeze).
    pub fn thaw(&self) {
        signal(&self.child, Signal::SIGCONT);
    }
}

impl Drop for PostgresProcess {
    fn drop(&mut self) {
        // Immediate shutdown: the postmaster stops its backends and removes its shared memory.
        signal(&self.child, Signal::SIGCONT);
        if kill(Pid::from_raw(self.child.id() as i32), Signal::SIGQUIT).is_ok() {
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        self.kill();
        remove_shared_memory(&self.data);
    }
}

/// A postmaster killed with SIGKILL leaves its small System V segment behind; its id is on the
/// seventh line of `postmaster.pid`, which a clean shutdown removes.
pub fn remove_shared_memory(data: &Path) {
    let Ok(pidfile) = std::fs::read_to_string(data.join("postmaster.pid")) else {
        return;
    };
    if let Some(id) = pidfile
        .lines()
        .nth(6)
        .and_then(|l| l.split_whitespace().nth(1))
        .filter(|id| id.bytes().all(|b| b.is_ascii_digit()))
    {
        let _ = Command::new("ipcrm")
            .args(["-m", id])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// SIGKILL of the postmaster `pid` (by `kill_it`), then of every backend it had: they are read
/// first, since once it dies they belong to init.
pub fn kill_postmaster(pid: u32, kill_it: impl FnOnce()) {
    let backends = children_of(pid);
    kill_it();
    for backend in backends {
        let _ = kill(backend, Signal::SIGKILL);
    }
}

/// SIGSTOP of a postmaster and of every process it started: the server hangs as on a stalled
/// host, its connections open and silent. The postmaster first, so it forks no more.
pub fn freeze_postmaster(pid: u32) {
    let _ = kill(Pid::from_raw(pid as i32), Signal::SIGSTOP);
    for backend in children_of(pid) {
        let _ = kill(backend, Signal::SIGSTOP);
    }
}

/// SIGCONT of a postmaster frozen by [`freeze_postmaster`], and of every process it started.
pub fn thaw_postmaster(pid: u32) {
    for backend in children_of(pid) {
        let _ = kill(backend, Signal::SIGCONT);
    }
    let _ = kill(Pid::from_raw(pid as i32), Signal::SIGCONT);
}

/// The processes whose parent is `parent`, from /proc.
fn children_of(parent: u32) -> Vec<Pid> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            // After the command name, in parentheses: state, then the parent's PID.
            let ppid: u32 = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            (ppid == parent).then(|| Pid::from_raw(pid))
        })
        .collect()
}

fn tool(name: &str) -> Result<PathBuf, PostgresError> {
    let path = bin_dir().ok_or(PostgresError::Missing)?.join(name);
    path.exists().then_some(path).ok_or(PostgresError::Missing)
}

/// `dir/pg-<port>`, empty, owned by the user the server runs as (with `dir` made passable).
fn prepare(dir: &Path, port: u16) -> Result<PathBuf, PostgresError> {
    let io = |what: String| move |source| PostgresError::Io { what, source };
    let data = dir.join(format!("pg-{port}"));
    std::fs::create_dir_all(&data).map_err(io(format!("create {}", data.display())))?;
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700))
        .map_err(io(format!("chmod {}", data.display())))?;
    if let Some((uid, gid)) = run_as() {
        let mode = std::fs::metadata(dir)
            .map_err(io(format!("stat {}", dir.display())))?
            .permissions()
            .mode();
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode | 0o711))
            .map_err(io(format!("chmod {}", dir.display())))?;
        chown(&data, Some(uid), Some(gid)).map_err(|e| PostgresError::Io {
            what: format!("chown {}", data.display()),
            source: e.into(),
        })?;
    }
    Ok(data)
}

fn write_owned(path: &Path, content: &str) -> Result<(), PostgresError> {
    std::fs::write(path, content).map_err(|source| PostgresError::Io {
        what: format!("write {}", path.display()),
        source,
    })?;
    if let Some((uid, gid)) = run_as() {
        chown(path, Some(uid), Some(gid)).map_err(|e| PostgresError::Io {
            what: format!("chown {}", path.display()),
            source: e.into(),
        })?;
    }
    Ok(())
}

/// Drop root for a child, when we are root.
fn as_server_user(command: &mut Command) -> &mut Command {
    if let Some((uid, gid)) = run_as() {
        command.uid(uid.as_raw()).gid(gid.as_raw());
    }
    command
}

fn run(command: &mut Command) -> Result<(), PostgresError> {
    let name = format!("{:?}", command.get_program());
    let output = as_server_user(command)
        .output()
        .map_err(|source| PostgresError::Io {
            what: name.clone(),
            source,
        })?;
    if output.status.success() {
        return Ok(());
    }
    Err(PostgresError::Failed {
        command: name,
        status: output.status.to_string(),
        output: format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    })
}

fn spawn(
    data: &Path,
    port: u16,
    settings: &[(&str, &str)],
    log: &Path,
) -> Result<Child, PostgresError> {
    let io = |what: &str| {
        let what = what.to_string();
        move |source| PostgresError::Io { what, source }
    };
    let file = std::fs::File::create(log).map_err(io("create the server log"))?;
    if let Some((uid, gid)) = run_as() {
        let _ = chown(log, Some(uid), Some(gid));
    }
    let mut command = Command::new(tool("postgres")?);
    command
        .arg("-D")
        .arg(data)
        .args(["-p", &port.to_string()])
        .args(["-c", "listen_addresses=127.0.0.1"])
        // TCP only: a socket in the data directory would be one more file for pg_rewind to copy.
        .args(["-c", "unix_socket_directories="])
        .args([
            "-c",
            "fsync=off",
            "-c",
            "max_wal_senders=10",
            "-c",
            "wal_keep_size=128MB",
        ]);
    for (name, value) in settings {
        command.arg("-c").arg(format!("{name}={value}"));
    }
    as_server_user(&mut command)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(file)
        .spawn()
        .map_err(io("start postgres"))
}
