//! Test harness: real redis-servers and a real `replicant run` process on loopback, all killed by PID.
#![allow(dead_code)]

pub mod away;
pub mod etcd;
pub mod gcs_mock;
pub mod hosts;
pub mod k8s;
pub mod node;
pub mod pg;
pub mod pg_bed;
pub mod prometheus;
pub mod relay;

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use replicant::runtime::{files::state::read_reports, report::ClusterReport};
use replicant_testkit::{RedisProcess, free_port};

/// Garage (an S3-compatible store) from `GARAGE`, else on the PATH, else where
/// `scripts/install-garage` puts it.
pub fn garage_binary() -> Option<PathBuf> {
    tool(
        "garage",
        "GARAGE",
        "scripts/install-garage, then GARAGE=<its output>",
    )
}

/// Azurite's Blob service (`azurite-blob`): `AZURITE`, else on the PATH; where
/// `scripts/install-azurite` puts it.
pub fn azurite_binary() -> Option<PathBuf> {
    tool(
        "azurite-blob",
        "AZURITE",
        "scripts/install-azurite, then AZURITE=<its output>",
    )
}

/// A tool the tests run: the file `env` names, else `name` on the PATH. `None` (the test is
/// skipped, saying so) where it is missing, except under CI, where that fails; `install`
/// says how to get it.
pub fn tool(name: &str, env: &str, install: &str) -> Option<PathBuf> {
    let found = std::env::var_os(env).map(PathBuf::from).or_else(|| {
        std::env::split_paths(&std::env::var_os("PATH")?)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{name} is missing under CI: {install}"
        );
        eprintln!("SKIPPED: {name} not found ({install})");
    }
    found
}

/// A replicant child process (`replicant run`, or `replicant operator` in `k8s`), its stderr in
/// `log`. Killed (SIGKILL, by PID) on drop.
pub struct Controller {
    child: Child,
    pub log: PathBuf,
}

impl Controller {
    pub fn start(specs: &Path, state: &Path, env: &[(&str, &str)]) -> Self {
        Self::start_with(specs, state, env, &[])
    }

    pub fn start_with(specs: &Path, state: &Path, env: &[(&str, &str)], args: &[&str]) -> Self {
        static STARTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = STARTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let log = state.with_file_name(format!("controller-{n}.log"));
        Self::spawn(
            &[
                "run",
                "--specs",
                specs.to_str().unwrap(),
                "--state",
                state.to_str().unwrap(),
            ],
            args,
            env,
            log,
        )
    }

    /// A replicant process started some other way (under another program that execs it).
    pub fn adopt(child: Child, log: PathBuf) -> Self {
        Self { child, log }
    }

    /// Start `replicant <command...> <args...>` with `env`, logging at info to `log`.
    pub fn spawn(command: &[&str], args: &[&str], env: &[(&str, &str)], log: PathBuf) -> Self {
        Self::spawn_configured(command, args, env, log, |_| {})
    }

    /// As [`Controller::spawn`], with `configure` applied to the command before it starts.
    pub fn spawn_configured(
        command: &[&str],
        args: &[&str],
        env: &[(&str, &str)],
        log: PathBuf,
        configure: impl FnOnce(&mut Command),
    ) -> Self {
        let file = fs::File::create(&log).unwrap();
        let mut process = Command::new(env!("CARGO_BIN_EXE_replicant"));
        process
            .args(command)
            .args(args)
            .env(
                "RUST_LOG",
                std::env::var("TEST_RUST_LOG").unwrap_or("info".into()),
            )
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file);
        configure(&mut process);
        let child = process.spawn().expect("replicant runs");
        Self { child, log }
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Whether the process ended on its own (e.g. at a crash point).
    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// Wait (`secs` at most) for the process to end on its own, at the crash point `what`
    /// names; panics with its log otherwise.
    pub async fn wait_for_exit(&mut self, secs: u64, what: &str) {
        self.wait_for_exit_or_show(secs, what, String::new).await
    }

    /// As [`Controller::wait_for_exit`], with `more()` (the servers' logs, say) in the panic.
    pub async fn wait_for_exit_or_show(
        &mut self,
        secs: u64,
        what: &str,
        more: impl Fn() -> String,
    ) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !self.exited() {
            assert!(
                Instant::now() < deadline,
                "{what}: the controller never reached it:\n{}\n{}",
                self.log_text(),
                more()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGSTOP: the process is alive but does nothing (a stalled node, a long GC pause).
    pub fn freeze(&self) {
        self.signal(nix::sys::signal::Signal::SIGSTOP);
    }

    pub fn thaw(&self) {
        self.signal(nix::sys::signal::Signal::SIGCONT);
    }

    /// SIGTERM: the way a service manager stops the process.
    pub fn terminate(&self) {
        self.signal(nix::sys::signal::Signal::SIGTERM);
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// CPU time (user + system) the process has used so far, from /proc.
    pub fn cpu_time(&self) -> Duration {
        let stat = fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap();
        // Fields after the command name, which is in parentheses and may hold spaces.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .unwrap()
            .1
            .split_whitespace()
            .collect();
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        // /proc counts in USER_HZ, which Linux fixes at 100 per second.
        Duration::from_millis(ticks * 10)
    }

    fn signal(&self, signal: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, signal).expect("signal the process");
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A cluster of real redis-servers described by a spec file in a spec directory.
pub struct Bed {
    pub dir: tempfile::TempDir,
    pub servers: Vec<RedisProcess>,
    pub rw_port: u16,
    pub ro_port: u16,
}

pub const NAMES: [&str; 6] = ["a", "b", "c", "d", "e", "f"];

impl Bed {
    pub fn new(members: usize) -> Self {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("specs")).unwrap();
        let servers = (0..members)
            .map(|_| RedisProcess::start(dir.path(), &[]).unwrap())
            .collect();
        Self {
            dir,
            servers,
            rw_port: free_port().unwrap(),
            ro_port: free_port().unwrap(),
        }
    }

    pub fn specs(&self) -> PathBuf {
        self.dir.path().join("specs")
    }

    pub fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub fn address(&self, member: &str) -> String {
        self.servers[NAMES.iter().position(|n| *n == member).unwrap()].address()
    }

    pub fn server(&mut self, member: &str) -> &mut RedisProcess {
        &mut self.servers[NAMES.iter().position(|n| *n == member).unwrap()]
    }

    /// The cluster spec: members a, b, c... with `extra` lines appended to each member
    /// (`upstream: b` for c, say), primary and failover lines as given.
    pub fn spec(&self, primary: &str, member_extra: &[(&str, &str)], failover: &str) -> String {
        let mut members = String::new();
        for (i, server) in self.servers.iter().enumerate() {
            members.push_str(&format!(
                "    - name: {}\n      address: \"{}\"\n",
                NAMES[i],
                server.address()
            ));
            for (m, line) in member_extra {
                if *m == NAMES[i] {
                    members.push_str(&format!("      {line}\n"));
                }
            }
        }
        format!(
            "apiVersion: replicant.dev/v1alpha1\nkind: ReplicationCluster\nmetadata: {{name: orders}}\nspec:\n  engine: redis\n  primary: {primary}\n  members:\n{members}  failover:\n{failover}\n---\napiVersion: replicant.dev/v1alpha1\nkind: VirtualName\nmetadata: {{name: orders-rw}}\nspec: {{cluster: orders, target: primary, listen: \"127.0.0.1:{}\"}}\n---\napiVersion: replicant.dev/v1alpha1\nkind: VirtualName\nmetadata: {{name: orders-ro}}\nspec: {{cluster: orders, target: replicas, listen: \"127.0.0.1:{}\"}}\n",
            self.rw_port, self.ro_port
        )
    }

    pub fn write_spec(&self, file: &str, content: &str) {
        // Write then rename, as git does, so the controller never reads half a file.
        let tmp = self.specs().join(format!(".{file}.tmp"));
        fs::write(&tmp, content).unwrap();
        fs::rename(&tmp, self.specs().join(file)).unwrap();
    }

    pub fn controller(&self) -> Controller {
        Controller::start(&self.specs(), &self.state(), &[])
    }

    /// Write `spec` as `orders.yaml`, start a controller and wait until the cluster is ready.
    pub async fn started(&self, spec: &str) -> Controller {
        self.write_spec("orders.yaml", spec);
        let ctl = self.controller();
        self.wait_for("ready", &ctl, 30, ready).await;
        ctl
    }

    pub fn report(&self) -> Option<ClusterReport> {
        read_reports(&self.state())
            .ok()?
            .into_iter()
            .find(|r| r.name == "orders")
    }

    pub fn journal(&self) -> serde_json::Value {
        read_journal(&self.state(), "orders")
    }

    /// Wait until the status report satisfies `check`; panics with the last report and the log.
    pub async fn wait_for(
        &self,
        what: &str,
        controller: &Controller,
        secs: u64,
        check: impl Fn(&ClusterReport) -> bool,
    ) -> ClusterReport {
        wait_for_report(&self.state(), "orders", what, controller, secs, check).await
    }
}

/// Wait until the status report of `cluster` in the state directory `state` satisfies
/// `check`; panics with the last report and the controller's log.
pub async fn wait_for_report(
    state: &Path,
    cluster: &str,
    what: &str,
    controller: &Controller,
    secs: u64,
    check: impl Fn(&ClusterReport) -> bool,
) -> ClusterReport {
    match try_wait_for_report(state, cluster, what, controller, secs, check).await {
        Ok(report) => report,
        Err(timed_out) => panic!("{timed_out}"),
    }
}

/// As [`wait_for_report`], with the time-out's explanation returned instead of raised.
#[allow(dead_code)]
pub async fn try_wait_for_report(
    state: &Path,
    cluster: &str,
    what: &str,
    controller: &Controller,
    secs: u64,
    check: impl Fn(&ClusterReport) -> bool,
) -> Result<ClusterReport, String> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut last = None;
    while Instant::now() < deadline {
        let report = read_reports(state)
            .ok()
            .and_then(|reports| reports.into_iter().find(|r| r.name == cluster));
        if let Some(report) = report {
            if check(&report) {
                return Ok(report);
            }
            last = Some(report);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(format!(
        "timed out waiting for {what}\nlast report: {}\ncontroller log:\n{}",
        serde_json::to_string_pretty(&last).unwrap(),
        controller.log_text()
    ))
}

/// The journal of `cluster` in the state directory `state` (null when there is none yet).
pub fn read_journal(state: &Path, cluster: &str) -> serde_json::Value {
    let path = state.join(format!("clusters/default.{cluster}/journal.json"));
    fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

pub fn ready(report: &ClusterReport) -> bool {
    report
        .status
        .conditions
        .iter()
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

pub fn condition<'a>(
    report: &'a ClusterReport,
    type_: &str,
) -> Option<&'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    report.status.conditions.iter().find(|c| c.type_ == type_)
}

pub fn endpoints<'a>(report: &'a ClusterReport, name: &str) -> Vec<&'a str> {
    report
        .virtual_names
        .iter()
        .find(|v| v.name == name)
        .map(|v| v.endpoints.iter().map(String::as_str).collect())
        .unwrap_or_default()
}

pub async fn connect(address: &str) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
    let client = redis::Client::open(format!("redis://{address}"))?;
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_millis(500)))
        .set_response_timeout(Some(Duration::from_millis(500)));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
}

pub async fn set(address: &str, key: &str, value: &str) -> redis::RedisResult<()> {
    let mut conn = connect(address).await?;
    redis::cmd("SET")
        .arg(key)
        .arg(value)
        .query_async(&mut conn)
        .await
}

pub async fn get(address: &str, key: &str) -> redis::RedisResult<Option<String>> {
    let mut conn = connect(address).await?;
    redis::cmd("GET").arg(key).query_async(&mut conn).await
}

/// The value of `key`, or `None` when it is missing or the server does not answer.
pub async fn value(address: &str, key: &str) -> Option<String> {
    get(address, key).await.ok().flatten()
}

/// `INFO replication` as key/value pairs.
pub async fn replication(address: &str) -> std::collections::HashMap<String, String> {
    info(address, "replication").await
}

/// One `INFO` section as key/value pairs (none when the server does not answer).
pub async fn info(address: &str, section: &str) -> std::collections::HashMap<String, String> {
    let Ok(mut conn) = connect(address).await else {
        return Default::default();
    };
    let info: String = redis::cmd("INFO")
        .arg(section)
        .query_async(&mut conn)
        .await
        .unwrap_or_default();
    info.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

pub async fn role(address: &str) -> String {
    replication(address)
        .await
        .get("role")
        .cloned()
        .unwrap_or_default()
}

/// The `host:port` a replica follows.
pub async fn upstream(address: &str) -> String {
    let info = replication(address).await;
    format!(
        "{}:{}",
        info.get("master_host").cloned().unwrap_or_default(),
        info.get("master_port").cloned().unwrap_or_default()
    )
}

pub async fn eventually<F: AsyncFnMut() -> bool>(what: &str, secs: u64, mut check: F) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

/// Run `replicant demo` with `args`; its output, once it has succeeded.
pub fn demo(args: &[&str]) -> String {
    replicant_ok(&[&["demo"], args].concat(), &[])
}

/// Run `replicant <args...>` with `env` and insist it succeeds; returns its stdout.
pub fn replicant_ok(args: &[&str], env: &[(&str, &Path)]) -> String {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_replicant"))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// `bed`'s spec in sync mode (one replica must hold each write before it is acknowledged).
pub fn sync_spec(bed: &Bed, primary: &str, failover: &str) -> String {
    bed.spec(primary, &[], failover).replacen(
        "  failover:\n",
        "  replication: {mode: sync, minSyncReplicas: 1}\n  failover:\n",
        1,
    )
}

async fn config_number(address: &str, key: &str) -> Option<u64> {
    let mut conn = connect(address).await.ok()?;
    let reply: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg(key)
        .query_async(&mut conn)
        .await
        .ok()?;
    reply.get(1)?.parse().ok()
}

/// The chaos invariants on the servers themselves, for a settled `report`: exactly one writable
/// master, every other reachable member following it, and the read-write name on it. Returns
/// the primary's address.
pub async fn check_servers(bed: &Bed, report: &ClusterReport, expect_reachable: &[&str]) -> String {
    let primary = report.status.current_primary.clone().unwrap();
    let primary_address = bed.address(&primary);
    let mut writable = Vec::new();
    let mut seen = Vec::new();
    for m in expect_reachable {
        let address = bed.address(m);
        let role = role(&address).await;
        let guard = config_number(&address, "min-replicas-to-write").await;
        seen.push(format!(
            "{m}: role {role:?}, min-replicas-to-write {guard:?}"
        ));
        let fenced = guard.unwrap_or(0) >= u64::from(replicant::engine::redis::FENCE_MARK);
        if role == "master" && !fenced {
            writable.push(m.to_string());
        }
        if *m != primary {
            assert_eq!(
                upstream(&address).await,
                primary_address,
                "{m} follows the primary"
            );
        }
    }
    assert_eq!(
        writable,
        std::slice::from_ref(&primary),
        "exactly one writable master ({})",
        seen.join("; ")
    );
    assert_eq!(endpoints(report, "orders-rw"), [primary.as_str()]);
    primary_address
}

/// Every write the writer saw acknowledged is on `primary` (sync mode).
pub async fn assert_nothing_lost(
    primary: &str,
    prefix: &str,
    acks: &[replicant_testkit::writer::Ack],
) {
    assert!(
        acks.len() > 20,
        "the writer made progress: {} writes",
        acks.len()
    );
    let lost = replicant_testkit::writer::count_missing(primary, prefix, acks)
        .await
        .unwrap();
    assert_eq!(
        lost,
        0,
        "acknowledged writes lost in sync mode ({} acknowledged)",
        acks.len()
    );
}

/// Whether the cluster has settled with exactly `expect_reachable` answering: reconciled, and
/// every reachable replica linked to its upstream.
pub fn converged(report: &ClusterReport, expect_reachable: &[&str]) -> bool {
    let reachable: Vec<&str> = report
        .status
        .members
        .iter()
        .filter(|m| m.reachable)
        .map(|m| m.name.as_str())
        .collect();
    reachable == expect_reachable
        && condition(report, "Reconciling").is_some_and(|c| c.status == "False")
        && report
            .status
            .members
            .iter()
            .filter(|m| m.reachable)
            .all(|m| m.link_up != Some(false))
}

/// `GET path` over HTTP/1.0 from a server on 127.0.0.1:`port`: the whole response, status
/// line and headers included. Reads give up after 5s.
pub fn try_http_get(port: u16, path: &str) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(response)
}
