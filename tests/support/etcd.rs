//! A real etcd cluster on loopback for tests: `n` members on random ports, each with its own
//! data directory and log; every member killed by PID on drop. The benchmarks use it too.
#![allow(dead_code)]

use std::{
    io::{Read, Write},
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use replicant_testkit::free_port;

pub struct EtcdMember {
    pub name: String,
    pub client_port: u16,
    child: Child,
    /// How it was started, to start it again over the same data.
    command: Vec<String>,
    log: std::path::PathBuf,
}

pub struct Etcd {
    pub members: Vec<EtcdMember>,
}

/// Whether the `etcd` binary is installed; tests skip, saying so, where it is not (CI installs it).
pub fn available() -> bool {
    let found = Command::new("etcd")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        assert!(std::env::var_os("CI").is_none(), "etcd is missing under CI");
        eprintln!("etcd not installed; skipping");
    }
    found
}

impl EtcdMember {
    fn signal(&self, signal: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, signal).unwrap();
    }

    /// SIGSTOP: the member holds its connections and answers nothing.
    pub fn freeze(&self) {
        self.signal(nix::sys::signal::Signal::SIGSTOP);
    }

    pub fn thaw(&self) {
        self.signal(nix::sys::signal::Signal::SIGCONT);
    }

    /// kill -9, by PID.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Start it again over its data, as it was started (after [`EtcdMember::kill`]), and wait
    /// until it answers.
    pub fn restart(&mut self) {
        self.kill();
        self.child = spawn(&self.command, &self.log);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !decided(self.client_port) {
            assert!(Instant::now() < deadline, "etcd did not come back");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn spawn(command: &[String], log: &Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    Command::new("etcd")
        .args(command)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("etcd starts")
}

impl Etcd {
    /// Start an `n`-member cluster under `dir` and wait until it has decided its version.
    pub fn start(dir: &Path, n: usize) -> Self {
        let ports: Vec<(u16, u16)> = (0..n)
            .map(|_| (free_port().unwrap(), free_port().unwrap()))
            .collect();
        let initial: Vec<String> = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("m{i}=http://127.0.0.1:{peer}"))
            .collect();
        let members = ports
            .iter()
            .enumerate()
            .map(|(i, (client, peer))| {
                let name = format!("m{i}");
                let log = dir.join(format!("etcd-{name}.log"));
                let _ = std::fs::remove_file(&log);
                let command: Vec<String> = [
                    "--name",
                    &name,
                    "--data-dir",
                    dir.join(&name).to_str().unwrap(),
                    "--listen-client-urls",
                    &format!("http://127.0.0.1:{client}"),
                    "--advertise-client-urls",
                    &format!("http://127.0.0.1:{client}"),
                    "--listen-peer-urls",
                    &format!("http://127.0.0.1:{peer}"),
                    "--initial-advertise-peer-urls",
                    &format!("http://127.0.0.1:{peer}"),
                    "--initial-cluster",
                    &initial.join(","),
                    "--initial-cluster-token",
                    "replicant-test",
                ]
                .iter()
                .map(|arg| arg.to_string())
                .collect();
                let child = spawn(&command, &log);
                EtcdMember {
                    name,
                    client_port: *client,
                    child,
                    command,
                    log,
                }
            })
            .collect();
        let etcd = Etcd { members };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !etcd.members.iter().all(|m| decided(m.client_port)) {
            assert!(Instant::now() < deadline, "etcd did not come up");
            std::thread::sleep(Duration::from_millis(50));
        }
        etcd
    }

    /// Every member's client address, as `etcd-client` takes them.
    pub fn endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| format!("http://127.0.0.1:{}", m.client_port))
            .collect()
    }
}

/// Whether the member at `port` answers `/version` with a decided cluster version (clients
/// such as Patroni's refuse one that says "not_decided", as a new member does at first).
fn decided(port: u16) -> bool {
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    if write!(stream, "GET /version HTTP/1.0\r\nHost: etcd\r\n\r\n").is_err() {
        return false;
    }
    let mut reply = String::new();
    let _ = stream.take(4096).read_to_string(&mut reply);
    reply.contains("\"etcdcluster\"") && !reply.contains("not_decided")
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for m in &mut self.members {
            let _ = m.child.kill();
            let _ = m.child.wait();
        }
    }
}
