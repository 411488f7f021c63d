//! `replicant node` processes for tests, on loopback, run as the postgres user when the tests
//! run as root, and killed by PID.

use std::{
    io::{Read, Write},
    path::{Path, PathBuf},
    time::Duration,
};

use replicant_testkit::node::NodeProcess;
use serde_json::Value;

pub const TOKEN: &str = "agent-token-0123456789";

/// A `replicant node` process (see [`NodeProcess`]) with the calls tests make to its API.
pub struct Node {
    pub process: NodeProcess,
    pub port: u16,
    dir: PathBuf,
    extra: Vec<String>,
}

impl Node {
    /// An agent for the postgres of `data` on `pg_port`, its state beside the data directory.
    pub fn start(dir: &Path, data: &Path, pg_port: u16) -> Self {
        Self::start_with(dir, data, pg_port, &[])
    }

    /// The agent's API address.
    pub fn address(&self) -> String {
        self.process.address()
    }

    /// Kill the agent and the postgres it runs, by PID, as a node loss would.
    pub fn kill_node(&mut self) {
        self.process.kill_node();
    }

    pub fn start_with(dir: &Path, data: &Path, pg_port: u16, extra: &[&str]) -> Self {
        let exe = Path::new(env!("CARGO_BIN_EXE_replicant"));
        let process = NodeProcess::start(exe, dir, data, pg_port, TOKEN, extra).unwrap();
        Node {
            port: process.port,
            process,
            dir: dir.to_path_buf(),
            extra: extra.iter().map(|e| e.to_string()).collect(),
        }
    }

    /// The host reboots: agent and postmaster are killed, and a new agent starts over the same
    /// data at the same address. It starts no postgres until the controller asks.
    pub fn reboot(&mut self) {
        self.process.kill_node();
        let exe = Path::new(env!("CARGO_BIN_EXE_replicant"));
        let extra: Vec<&str> = self.extra.iter().map(String::as_str).collect();
        let (data, pg_port) = (self.process.data.clone(), self.process.pg_port);
        self.process =
            NodeProcess::start_on(exe, &self.dir, &data, pg_port, TOKEN, &extra, self.port)
                .unwrap();
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

    /// A lease nonce, as the controller fetches one before each renewal.
    pub fn lease_nonce(&self) -> Value {
        let (code, nonce) = self.call("GET", "/v1/lease", None, Some(TOKEN));
        assert_eq!(code, 200, "{nonce}");
        nonce
    }

    /// Renew the lease for `ttl_ms` from a fresh nonce.
    pub fn lease(&self, epoch: u64, ttl_ms: u64) -> (u16, Value) {
        let nonce = self.lease_nonce();
        self.post(
            "/v1/lease",
            serde_json::json!({"epoch": epoch, "ttlMs": ttl_ms, "nonce": nonce}),
        )
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
        self.process.stop();
    }
}

/// A server certificate for 127.0.0.1 and its key (PEM, readable by the server user) in `dir`,
/// self-signed: a client that trusts the certificate itself accepts it.
pub fn certificate_for_loopback(dir: &Path) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("agent.crt"), dir.join("agent.key"));
    let made = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "1", "-subj", "/CN=agent"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1"])
        // A server certificate, not a CA: webpki refuses a CA as the server's own certificate.
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .args(["-addext", "extendedKeyUsage=serverAuth", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(made.success(), "openssl could not make a certificate");
    let owner = replicant_testkit::postgres::server_user();
    for file in [&cert, &key] {
        std::os::unix::fs::chown(file, owner.map(|u| u.0), owner.map(|u| u.1)).unwrap();
    }
    (cert, key)
}
