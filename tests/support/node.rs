//! `replicant node` processes for tests, on loopback, run as the postgres user when the tests
//! run as root, and killed by PID.

use std::{
    io::{Read, Write},
    os::unix::process::CommandExt,
    path::Path,
    process::{Child, Command, Stdio},
    time::Duration,
};

use replicant::local::{
    free_port,
    postgres::{owned_dir, server_user},
};
use serde_json::Value;

pub const TOKEN: &str = "agent-token-0123456789";

/// Where the agent of `data` keeps its state: a directory beside it that the server user owns.
fn state_dir(data: &Path) -> std::path::PathBuf {
    let name = format!("{}.agent", data.file_name().unwrap().to_string_lossy());
    owned_dir(data.parent().unwrap(), &name).unwrap()
}

/// A `replicant node` process; on drop, SIGTERM (it stops its postgres) then SIGKILL, by PID.
pub struct Node {
    pub child: Child,
    pub port: u16,
}

impl Node {
    /// An agent for the postgres of `data` on `pg_port`, its state file in the data directory.
    pub fn start(dir: &Path, data: &Path, pg_port: u16) -> Self {
        Self::start_with(dir, data, pg_port, &[])
    }

    /// The agent's API address.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Kill the agent and the postgres it runs, by PID, as a node loss would.
    pub fn kill_node(&mut self) {
        let pid = self.status()["pid"].as_i64();
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(pid) = pid {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }

    pub fn start_with(dir: &Path, data: &Path, pg_port: u16, extra: &[&str]) -> Self {
        let port = free_port().unwrap();
        let log = std::fs::File::create(dir.join(format!("node-{port}.log"))).unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_replicant"));
        command
            .args(["node", "--data"])
            .arg(data)
            .args(["--port", &pg_port.to_string()])
            .args(["--set", "listen_addresses=127.0.0.1"])
            .args(["--set", "unix_socket_directories="])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--token-env", "NODE_TOKEN"])
            .args(["--replication-user", "postgres"])
            .args(["--replication-password-env", "REPLICATION_PASSWORD"])
            .env("REPLICATION_PASSWORD", replicant::local::postgres::PASSWORD)
            .arg("--state")
            // Beside the data directory, not in it: a copy replaces the directory whole.
            .arg(state_dir(data).join("node.json"))
            .args(extra)
            .env("NODE_TOKEN", TOKEN)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        if let Some((uid, gid)) = server_user() {
            command.uid(uid).gid(gid);
        }
        let node = Node {
            child: command.spawn().unwrap(),
            port,
        };
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return node;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("the agent did not listen");
    }

    /// One request; the status code and the JSON reply.
    pub fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        token: Option<&str>,
    ) -> (u16, Value) {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(90)))
            .unwrap();
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let auth = token
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        write!(
            stream,
            "{method} {path} HTTP/1.0\r\nHost: x\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let code = response[9..12].parse().unwrap();
        let json = response
            .split_once("\r\n\r\n")
            .and_then(|(_, b)| serde_json::from_str(b).ok())
            .unwrap_or(Value::Null);
        (code, json)
    }

    pub fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call("POST", path, Some(body), Some(TOKEN))
    }

    pub fn status(&self) -> Value {
        let (code, json) = self.call("GET", "/v1/status", None, Some(TOKEN));
        assert_eq!(code, 200, "{json}");
        json
    }

    /// Ask for a long operation (start, clone, standby, rewind), which the agent accepts at
    /// once and carries out in the background; wait until it has ended, and return the
    /// status then (`lastOperation`, `lastError`, `rejoined`).
    pub fn run(&self, path: &str, body: Value) -> Value {
        let (code, accepted) = self.post(path, body);
        assert_eq!(code, 200, "{accepted}");
        assert!(accepted["busy"].is_string(), "begun, not done: {accepted}");
        for _ in 0..2400 {
            let status = self.status();
            if status["busy"].is_null() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("{path} still under way after a minute");
    }

    pub fn stop_process(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        for _ in 0..400 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop_process();
    }
}
