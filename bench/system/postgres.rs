//! PostgreSQL failover: replicant (node agents, the standalone controller, a passthrough
//! virtual name) versus Patroni (with etcd and HAProxy), each over three postgres servers of
//! its own on loopback, under the same faults and the same two writers.
//!
//! Every member's postgres, agent or Patroni REST API, and Patroni's etcd are reached through
//! relays, so a partition cuts the old primary off from everything but a client that talks to
//! it directly. Two writers run through every trial: one through the read-write endpoint
//! (replicant's virtual name, or HAProxy), whose first acknowledged commit sent after the
//! fault gives the gap; and one connected straight to the old primary, as a client that never
//! learns of the failover, whose commits acknowledged after the new primary's promotion (the
//! mtime of its timeline history file) are split-brain commits. Lost commits are acknowledged
//! ones (of either writer, before the promotion) missing from the new primary.

#[path = "../../tests/support/relay.rs"]
mod relay;

use std::{
    fmt::Write as _,
    fs,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant, SystemTime},
};

use crate::etcd;
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use replicant_testkit::{
    free_port,
    node::NodeProcess,
    postgres::{
        PASSWORD, bin_dir, empty_data, freeze_postmaster, kill_postmaster, owned_dir, server_user,
        thaw_postmaster,
    },
    writer::{Ack, Route, Writer, WriterOptions, count_missing_rows},
};

use self::relay::Relay;
use crate::support::{self, Outcome, Proc, median, percentile, ready_controller};

const TOKEN: &str = "replicant-bench-agent-token";
const WRITER_TIMEOUT: Duration = Duration::from_millis(500);

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum System {
    Replicant {
        detect_ms: u64,
    },
    /// Patroni's `ttl`, `loop_wait` and `retry_timeout`, in seconds.
    Patroni {
        ttl: u64,
        loop_wait: u64,
        retry: u64,
    },
}

impl System {
    pub fn label(&self) -> String {
        match self {
            System::Replicant { detect_ms } => {
                format!("replicant, detectAfter {}s", *detect_ms as f64 / 1000.0)
            }
            System::Patroni {
                ttl,
                loop_wait,
                retry,
            } => format!("Patroni, ttl {ttl}s loop_wait {loop_wait}s retry_timeout {retry}s"),
        }
    }

    /// Patroni at its minimum `ttl` (20s), with the shortest loop and retry it accepts.
    pub const PATRONI_MINIMUM: System = System::Patroni {
        ttl: 20,
        loop_wait: 1,
        retry: 3,
    };
    pub const PATRONI_DEFAULTS: System = System::Patroni {
        ttl: 30,
        loop_wait: 10,
        retry: 10,
    };
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// kill -9 of the primary's node: its postgres and its agent (or Patroni).
    Kill,
    /// SIGSTOP of the whole node until a new primary has been promoted, then SIGCONT.
    Freeze,
    /// The node cut off from everything but a direct client until after the promotion.
    Partition,
}

impl Fault {
    pub fn label(self) -> &'static str {
        match self {
            Fault::Kill => "node killed (kill -9)",
            Fault::Freeze => "node frozen (SIGSTOP), resumed after the promotion",
            Fault::Partition => "node partitioned, healed after the promotion",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        match name.trim() {
            "kill" => Some(Fault::Kill),
            "freeze" => Some(Fault::Freeze),
            "partition" => Some(Fault::Partition),
            _ => None,
        }
    }
}

/// One member: its postgres as clients reach it directly, and its node's processes.
struct Member {
    data: PathBuf,
    pg_port: u16,
    /// Relays to its postgres, and to its agent or Patroni REST API.
    pg_relay: Relay,
    control_relay: Relay,
    node: Node,
}

enum Node {
    Agent(NodeProcess),
    Patroni { patroni: Proc, etcd_relay: Relay },
}

impl Bed {
    /// The primary `a`, as clients reach it directly.
    pub fn primary(&self) -> String {
        self.members[0].direct()
    }

    /// The data directory of member `i` (`a` is 0).
    pub fn data(&self, i: usize) -> PathBuf {
        self.members[i].data.clone()
    }

    /// Every member as clients reach it directly.
    pub fn members(&self) -> Vec<String> {
        self.members.iter().map(Member::direct).collect()
    }

    /// How many members other than `a` are on a timeline that began after `since` (a promoted
    /// member, and any that follows it, holds its history file).
    pub fn on_new_timeline_since(&self, since: SystemTime) -> usize {
        self.members[1..]
            .iter()
            .filter(|m| m.promoted_at().is_some_and(|t| t > since))
            .count()
    }

    /// kill -9 of the control plane: replicant's controller, or Patroni's etcd.
    pub fn kill_control_plane(&mut self) {
        match &mut self._etcd {
            Some(etcd) => etcd.members.iter_mut().for_each(|m| m.kill()),
            None => self._services.clear(),
        }
    }

    /// The control plane started again over its state (`dir` as the bed was built in).
    pub fn restart_control_plane(&mut self, dir: &Path) {
        match &mut self._etcd {
            Some(etcd) => etcd.members.iter_mut().for_each(|m| m.restart()),
            None => self._services.push(support::controller(
                &dir.join("specs"),
                &dir.join("state"),
                free_port().unwrap(),
            )),
        }
    }
}

impl Member {
    fn direct(&self) -> String {
        format!("127.0.0.1:{}", self.pg_port)
    }

    /// Its postmaster's PID, when that process still runs over its data directory.
    fn postmaster(&self) -> Option<u32> {
        let text = fs::read_to_string(self.data.join("postmaster.pid")).ok()?;
        let pid: u32 = text.lines().next()?.trim().parse().ok()?;
        // A postmaster works in its data directory: a PID reused by another process does not.
        let cwd = fs::read_link(format!("/proc/{pid}/cwd")).ok()?;
        (cwd == fs::canonicalize(&self.data).ok()?).then_some(pid)
    }

    fn kill(&mut self) {
        let postmaster = self.postmaster();
        match &mut self.node {
            Node::Agent(node) => node.kill_node(),
            Node::Patroni { patroni, .. } => {
                let _ = patroni.0.kill();
                let _ = patroni.0.wait();
                if let Some(pid) = postmaster {
                    kill_postmaster(pid, || {
                        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
                    });
                }
            }
        }
    }

    fn freeze(&self) {
        match &self.node {
            Node::Agent(node) => node.freeze_node(),
            Node::Patroni { patroni, .. } => {
                let _ = kill(Pid::from_raw(patroni.pid() as i32), Signal::SIGSTOP);
                if let Some(pid) = self.postmaster() {
                    freeze_postmaster(pid);
                }
            }
        }
    }

    fn thaw(&self) {
        match &self.node {
            Node::Agent(node) => node.thaw_node(),
            Node::Patroni { patroni, .. } => {
                let _ = kill(Pid::from_raw(patroni.pid() as i32), Signal::SIGCONT);
                if let Some(pid) = self.postmaster() {
                    thaw_postmaster(pid);
                }
            }
        }
    }

    fn suffer(&mut self, fault: Fault) {
        match fault {
            Fault::Kill => self.kill(),
            Fault::Freeze => self.freeze(),
            Fault::Partition => self.relays().iter().for_each(|r| r.cut()),
        }
    }

    /// The end of `fault`: a frozen node resumes, a partition heals; a killed node stays dead.
    fn recover(&self, fault: Fault) {
        match fault {
            Fault::Kill => {}
            Fault::Freeze => self.thaw(),
            Fault::Partition => self.relays().iter().for_each(|r| r.heal()),
        }
    }

    fn relays(&self) -> Vec<&Relay> {
        let mut all = vec![&self.pg_relay, &self.control_relay];
        if let Node::Patroni { etcd_relay, .. } = &self.node {
            all.push(etcd_relay);
        }
        all
    }

    /// The newest timeline history file in its WAL, and when it was written.
    fn promoted_at(&self) -> Option<SystemTime> {
        fs::read_dir(self.data.join("pg_wal"))
            .ok()?
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".history"))
            .filter_map(|e| e.metadata().ok()?.modified().ok())
            .max()
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        // Thawed first: a stopped process cannot act on its SIGKILL's consequences.
        self.thaw();
        self.kill();
    }
}

/// A running cluster of either system, ready, with `a` its primary.
pub struct Bed {
    members: Vec<Member>,
    /// The read-write endpoint: replicant's virtual name, or HAProxy.
    pub rw: String,
    /// replicant's controller, or HAProxy.
    _services: Vec<Proc>,
    /// Patroni's etcd.
    _etcd: Option<etcd::Etcd>,
}

fn spawn_as_server_user(program: &Path, args: &[&str], log: &Path) -> Proc {
    let file = fs::File::create(log).expect("log file");
    let mut command = Command::new(program);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(file.try_clone().expect("log file"))
        .stderr(file);
    if let Some((uid, gid)) = server_user() {
        command.uid(uid).gid(gid);
    }
    Proc(
        command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display())),
    )
}

/// replicant over three empty hosts, ready with `a` primary. With `relayed`, the spec names
/// the relays (for faults); otherwise the servers themselves (for throughput).
pub async fn replicant(dir: &Path, detect_ms: u64, sync: bool, relayed: bool) -> Bed {
    replicant_with(dir, detect_ms, sync, relayed, &Extra::default()).await
}

/// More arguments for a member's agent, given its name, host directory and state file.
pub type AgentArgs = fn(&str, &Path, &Path) -> Vec<String>;

/// More for [`replicant_with`]'s cluster.
#[derive(Default)]
pub struct Extra {
    /// More of the spec, indented under `spec:`.
    pub spec: String,
    /// More arguments for each member's agent, by member, given its host directory and the
    /// agent's state file.
    pub agent_args: Option<AgentArgs>,
}

/// As [`replicant`], with `extra`.
pub async fn replicant_with(
    dir: &Path,
    detect_ms: u64,
    sync: bool,
    relayed: bool,
    extra: &Extra,
) -> Bed {
    let secrets = dir.join("secrets");
    fs::create_dir_all(&secrets).unwrap();
    fs::write(secrets.join("password"), PASSWORD).unwrap();
    fs::write(secrets.join("token"), TOKEN).unwrap();
    let exe = Path::new(env!("CARGO_BIN_EXE_replicant"));
    let mut members = Vec::new();
    for name in ["a", "b", "c"] {
        let host = owned_dir(dir, &format!("host-{name}")).unwrap();
        let (data, pg_port) = empty_data(&host).unwrap();
        let mut args = vec![
            "--superuser-password-env".to_string(),
            "REPLICATION_PASSWORD".to_string(),
        ];
        if let Some(more) = extra.agent_args {
            args.extend(more(name, &host, &NodeProcess::state_file(&data)));
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let node = NodeProcess::start(exe, &host, &data, pg_port, TOKEN, &args).unwrap();
        members.push(Member {
            data,
            pg_port,
            pg_relay: Relay::start(format!("127.0.0.1:{pg_port}")).await,
            control_relay: Relay::start(node.address()).await,
            node: Node::Agent(node),
        });
    }
    let rw = free_port().unwrap();
    let list: String = members
        .iter()
        .zip(["a", "b", "c"])
        .map(|(m, name)| {
            let (address, agent) = match (&m.node, relayed) {
                (_, true) => (m.pg_relay.address(), m.control_relay.address()),
                (Node::Agent(node), false) => (m.direct(), node.address()),
                (Node::Patroni { .. }, false) => unreachable!("replicant's members run agents"),
            };
            format!("    - {{name: {name}, address: \"{address}\", agent: \"{agent}\"}}\n")
        })
        .collect();
    let mode = if sync { "sync" } else { "async" };
    let specs = dir.join("specs");
    let state = dir.join("state");
    fs::create_dir_all(&specs).unwrap();
    fs::write(
        specs.join("bench.yaml"),
        format!(
            "apiVersion: replicant.dev/v1alpha1\nkind: ReplicationCluster\nmetadata: {{name: bench}}\nspec:\n  engine: postgres\n  primary: a\n  members:\n{list}  credentials: {{username: postgres, passwordFile: \"{}\"}}\n  agentToken: {{tokenFile: \"{}\"}}\n  replication: {{mode: {mode}}}\n  failover: {{standby: b, detectAfter: {detect_ms}ms, maxLag: 16Mi, cooldown: 1m}}\n{}---\napiVersion: replicant.dev/v1alpha1\nkind: VirtualName\nmetadata: {{name: bench-rw}}\nspec: {{cluster: bench, target: primary, listen: \"127.0.0.1:{rw}\"}}\n",
            secrets.join("password").display(),
            secrets.join("token").display(),
            extra.spec
        ),
    )
    .unwrap();
    let proc = ready_controller(&specs, &state, Duration::from_secs(120)).await;
    Bed {
        members,
        rw: format!("127.0.0.1:{rw}"),
        _services: vec![proc],
        _etcd: None,
    }
}

/// One Patroni node's configuration; `rest` and `pg` are the addresses others reach it at.
#[allow(clippy::too_many_arguments)]
fn patroni_config(
    name: &str,
    host: &Path,
    data: &Path,
    (pg_port, pg): (u16, String),
    (rest_port, rest): (u16, String),
    etcd: &str,
    system: System,
    sync: bool,
    failsafe: bool,
) -> String {
    let System::Patroni {
        ttl,
        loop_wait,
        retry,
    } = system
    else {
        unreachable!("a Patroni configuration")
    };
    let bin = bin_dir().expect("postgres binaries");
    format!(
        r#"scope: bench
name: {name}
log: {{level: WARNING}}
restapi:
  listen: 127.0.0.1:{rest_port}
  connect_address: {rest}
etcd3:
  hosts: ["{etcd}"]
  # Through the relay only: etcd's member list would name its own address, past the cut.
  use_proxies: true
bootstrap:
  dcs:
    ttl: {ttl}
    loop_wait: {loop_wait}
    retry_timeout: {retry}
    failsafe_mode: {failsafe}
    maximum_lag_on_failover: 16777216
    synchronous_mode: {sync}
    postgresql:
      use_pg_rewind: true
      use_slots: true
      parameters:
        wal_log_hints: "on"
  initdb: [{{encoding: UTF8}}]
postgresql:
  listen: 127.0.0.1:{pg_port}
  connect_address: {pg}
  data_dir: {data}
  bin_dir: {bin}
  pgpass: {pgpass}
  authentication:
    superuser: {{username: postgres, password: "{PASSWORD}"}}
    replication: {{username: replicator, password: "{PASSWORD}"}}
  parameters:
    unix_socket_directories: "{host}"
  pg_hba:
    - local all all trust
    - host all all 127.0.0.1/32 scram-sha-256
    - host replication all 127.0.0.1/32 scram-sha-256
"#,
        data = data.display(),
        bin = bin.display(),
        pgpass = host.join("pgpass").display(),
        host = host.display(),
    )
}

/// Patroni over three empty hosts (with etcd and HAProxy), ready with `a` primary; `failsafe`
/// is its `failsafe_mode`.
pub async fn patroni(dir: &Path, system: System, sync: bool, failsafe: bool) -> Bed {
    // Started once its cluster version is decided: Patroni's etcd3 client exits before.
    let etcd = etcd::Etcd::start(dir, 1);
    let etcd_address = format!("127.0.0.1:{}", etcd.members[0].client_port);
    let mut members = Vec::new();
    for name in ["a", "b", "c"] {
        let host = owned_dir(dir, &format!("host-{name}")).unwrap();
        let data = host.join("data");
        let (pg_port, rest_port) = (free_port().unwrap(), free_port().unwrap());
        let pg_relay = Relay::start(format!("127.0.0.1:{pg_port}")).await;
        let control_relay = Relay::start(format!("127.0.0.1:{rest_port}")).await;
        let etcd_relay = Relay::start(etcd_address.clone()).await;
        let config = patroni_config(
            name,
            &host,
            &data,
            (pg_port, pg_relay.address()),
            (rest_port, control_relay.address()),
            &etcd_relay.address(),
            system,
            sync,
            failsafe,
        );
        let path = host.join("patroni.yml");
        fs::write(&path, config).unwrap();
        let patroni = spawn_as_server_user(
            Path::new("patroni"),
            &[path.to_str().unwrap()],
            &host.join("patroni.log"),
        );
        let member = Member {
            data,
            pg_port,
            pg_relay,
            control_relay,
            node: Node::Patroni {
                patroni,
                etcd_relay,
            },
        };
        // a bootstraps the cluster and takes the leader key before the others start.
        if name == "a" {
            let direct = member.direct();
            let led = wait_for(Duration::from_secs(90), || writable(&direct)).await;
            assert!(led, "Patroni did not bootstrap a as the leader");
        }
        members.push(member);
    }
    let primary = members[0].direct();
    let streaming = wait_for(Duration::from_secs(120), || {
        replicas_streaming(&primary, sync)
    })
    .await;
    assert!(streaming, "Patroni's replicas did not stream from a");
    let (haproxy, rw) = haproxy(dir, &members, system).await;
    Bed {
        members,
        rw,
        _services: vec![haproxy],
        _etcd: Some(etcd),
    }
}

/// HAProxy in front of the members' relays, checking Patroni's REST API for the primary: at
/// the check of Patroni's documentation for its defaults, every 500ms otherwise.
async fn haproxy(dir: &Path, members: &[Member], system: System) -> (Proc, String) {
    let port = free_port().unwrap();
    let check = if system == System::PATRONI_DEFAULTS {
        "inter 3s fall 3 rise 2"
    } else {
        "inter 500ms fall 1 rise 1"
    };
    let servers: String = members
        .iter()
        .zip(["a", "b", "c"])
        .map(|(m, name)| {
            format!(
                "  server {name} {} check port {}\n",
                m.pg_relay.address(),
                m.control_relay.port
            )
        })
        .collect();
    let config = format!(
        "global\n  maxconn 2000\ndefaults\n  mode tcp\n  timeout connect 1s\n  timeout client 30m\n  timeout server 30m\n  timeout check 1s\nlisten rw\n  bind 127.0.0.1:{port}\n  option httpchk OPTIONS /primary\n  http-check expect status 200\n  default-server {check} on-marked-down shutdown-sessions\n{servers}"
    );
    let proc = support::haproxy(dir, "haproxy", &config, port).await;
    (proc, format!("127.0.0.1:{port}"))
}

async fn wait_for<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

async fn session(address: &str) -> Option<tokio_postgres::Client> {
    let (host, port) = address.rsplit_once(':')?;
    let mut config = tokio_postgres::Config::new();
    config
        .host(host)
        .port(port.parse().ok()?)
        .user("postgres")
        .password(PASSWORD)
        .dbname("postgres")
        .connect_timeout(Duration::from_secs(1));
    let (client, connection) = tokio::time::timeout(
        Duration::from_secs(2),
        config.connect(tokio_postgres::NoTls),
    )
    .await
    .ok()?
    .ok()?;
    tokio::spawn(connection);
    Some(client)
}

async fn query_bool(address: &str, sql: &str) -> bool {
    let Some(client) = session(address).await else {
        return false;
    };
    tokio::time::timeout(Duration::from_secs(2), client.query_one(sql, &[]))
        .await
        .ok()
        .and_then(Result::ok)
        .is_some_and(|row| row.get::<_, bool>(0))
}

pub async fn writable(address: &str) -> bool {
    query_bool(address, "SELECT NOT pg_is_in_recovery()").await
}

/// Both standbys stream from `primary` through their replication slots (in sync mode, one as
/// a synchronous standby): the steady state. Patroni creates the slots on its next loop after
/// the standbys first stream, and until then a standby that asks for its slot is refused and
/// falls behind (at Patroni's defaults, for up to `loop_wait`).
async fn replicas_streaming(primary: &str, sync: bool) -> bool {
    let streaming = "count(*) FILTER (WHERE r.state = 'streaming' AND s.active) = 2";
    let sql = if sync {
        format!(
            "SELECT {streaming} AND count(*) FILTER (WHERE r.sync_state IN ('sync', 'quorum')) >= 1 FROM pg_stat_replication r LEFT JOIN pg_replication_slots s ON s.active_pid = r.pid"
        )
    } else {
        format!(
            "SELECT {streaming} FROM pg_stat_replication r LEFT JOIN pg_replication_slots s ON s.active_pid = r.pid"
        )
    };
    query_bool(primary, &sql).await
}

pub fn writer(address: &str, prefix: &str) -> Writer {
    Writer::start(WriterOptions {
        route: Route::Direct(address.to_string()),
        prefix: prefix.to_string(),
        wait_replicas: None,
        timeout: WRITER_TIMEOUT,
        postgres_password: Some(PASSWORD.to_string()),
    })
}

fn wall_time(at: Instant, clocks: (Instant, SystemTime)) -> SystemTime {
    clocks.1 + at.saturating_duration_since(clocks.0)
}

/// One trial; `None` when no member was promoted within 120s.
async fn trial(dir: &Path, system: System, fault: Fault, sync: bool) -> Option<Outcome> {
    let mut bed = match system {
        System::Replicant { detect_ms } => replicant(dir, detect_ms, sync, true).await,
        System::Patroni { .. } => patroni(dir, system, sync, false).await,
    };
    let old = bed.members[0].direct();
    let through = writer(&bed.rw, "rw:");
    let direct = writer(&old, "direct:");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let clocks = (Instant::now(), SystemTime::now());
    let fault_wall = SystemTime::now();
    bed.members[0].suffer(fault);
    // Counted once the fault is complete: a backend that had not yet received its SIGKILL
    // may still commit in the meantime, and that is not a write after the node was lost.
    let fault_at = Instant::now();
    // The new primary: the member whose newest history file appeared after the fault.
    let mut promoted = None;
    let deadline = Instant::now() + Duration::from_secs(120);
    while promoted.is_none() && Instant::now() < deadline {
        promoted = bed.members[1..].iter().enumerate().find_map(|(i, m)| {
            m.promoted_at()
                .filter(|t| *t > fault_wall)
                .map(|t| (i + 1, t))
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let Some((new, promoted_at)) = promoted else {
        eprintln!(
            "no promotion within 120s; logs under {} until the benchmark ends",
            dir.display()
        );
        bed.members[0].recover(fault);
        through.finish().await;
        direct.finish().await;
        return None;
    };
    // The old primary comes back a while after the promotion, for clients to find.
    tokio::time::sleep(Duration::from_secs(1)).await;
    bed.members[0].recover(fault);
    tokio::time::sleep(Duration::from_secs(5)).await;
    // A gap ends with the first commit sent after the fault; wait for it a while yet.
    let deadline = Instant::now() + Duration::from_secs(60);
    while through.first_sent_after(fault_at).await.is_none() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let gap = through
        .first_sent_after(fault_at)
        .await
        .map(|a| a.acked.duration_since(fault_at).as_secs_f64());
    let through = through.finish().await;
    let direct = direct.finish().await;
    let (before, after): (Vec<Ack>, Vec<Ack>) = direct
        .iter()
        .cloned()
        .partition(|a| wall_time(a.acked, clocks) < promoted_at);
    let new_primary = bed.members[new].direct();
    let lost_through = count_missing_rows(&new_primary, PASSWORD, "rw:", &through)
        .await
        .unwrap_or_else(|e| panic!("counting on {new_primary}: {e}"));
    let lost_direct = count_missing_rows(&new_primary, PASSWORD, "direct:", &before)
        .await
        .unwrap_or_else(|e| panic!("counting on {new_primary}: {e}"));
    drop(bed);
    Some(Outcome {
        gap,
        acknowledged: through.len() + direct.len(),
        lost: lost_through + lost_direct,
        split_brain: after.len(),
    })
}

/// The systems measured, by the names `BENCH_PG_SYSTEMS` takes.
pub fn systems(names: &str) -> Vec<System> {
    names
        .split(',')
        .filter_map(|name| match name.trim() {
            "replicant-1s" => Some(System::Replicant { detect_ms: 1000 }),
            "replicant-5s" => Some(System::Replicant { detect_ms: 5000 }),
            "patroni-minimum" => Some(System::PATRONI_MINIMUM),
            "patroni-defaults" => Some(System::PATRONI_DEFAULTS),
            _ => None,
        })
        .collect()
}

/// Every system under every fault, in both replication modes, `trials` times; a Markdown
/// report.
pub async fn run(trials: usize, systems: &[System], faults: &[Fault], root: &Path) -> String {
    let mut out = String::from(
        "### PostgreSQL failover: replicant vs Patroni 3.0.2 (etcd, HAProxy)\n\nGap: from the fault to the first commit acknowledged through the read-write endpoint that was sent after it. Lost: acknowledged commits missing from the new primary. Split-brain: commits the old primary acknowledged to a client connected to it directly after the new primary's promotion. Ratio: median gap over Patroni's at its minimum ttl, in the same run.\n\n",
    );
    let mut trial_no = 0;
    for &fault in faults {
        for sync in [false, true] {
            let _ = writeln!(
                out,
                "#### {}, {} replication\n\n| system | trials | median gap | p95 gap | ratio | acked | lost | split-brain |\n|---|---|---|---|---|---|---|---|",
                fault.label(),
                if sync { "sync" } else { "async" }
            );
            let mut rows = Vec::new();
            for &system in systems {
                // Patroni's defaults are a reference for node loss; the other faults show the
                // same detection at a longer ttl.
                if system == System::PATRONI_DEFAULTS && fault != Fault::Kill {
                    continue;
                }
                let (mut outcomes, mut unpromoted) = (Vec::new(), 0);
                for _ in 0..trials {
                    trial_no += 1;
                    let dir = root.join(format!("trial-{trial_no}"));
                    fs::create_dir_all(&dir).unwrap();
                    let outcome = trial(&dir, system, fault, sync).await;
                    eprintln!(
                        "postgres {} / {} / {}: {outcome:?}",
                        system.label(),
                        fault.label(),
                        if sync { "sync" } else { "async" }
                    );
                    match outcome {
                        Some(outcome) => {
                            outcomes.push(outcome);
                            if std::env::var_os("BENCH_KEEP").is_none() {
                                let _ = fs::remove_dir_all(&dir);
                            }
                        }
                        None => unpromoted += 1,
                    }
                }
                rows.push((system, outcomes, unpromoted));
            }
            let gaps = |outcomes: &[Outcome]| -> Vec<f64> {
                outcomes.iter().filter_map(|o| o.gap).collect()
            };
            let reference = rows
                .iter()
                .find(|(s, _, _)| *s == System::PATRONI_MINIMUM)
                .map(|(_, o, _)| median(&gaps(o)))
                .unwrap_or(f64::NAN);
            for (system, outcomes, unpromoted) in &rows {
                let g = gaps(outcomes);
                let missing = outcomes.len() - g.len();
                let mut notes = Vec::new();
                if missing > 0 {
                    notes.push(format!("{missing} with no write within the trial"));
                }
                if *unpromoted > 0 {
                    notes.push(format!("{unpromoted} with no promotion within 120s"));
                }
                let _ = writeln!(
                    out,
                    "| {} | {}{} | {:.2}s | {:.2}s | {:.3} | {} | {} | {} |",
                    system.label(),
                    outcomes.len() + unpromoted,
                    if notes.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", notes.join(", "))
                    },
                    median(&g),
                    percentile(&g, 95.0),
                    median(&g) / reference,
                    outcomes.iter().map(|o| o.acknowledged).sum::<usize>(),
                    outcomes.iter().map(|o| o.lost).sum::<usize>(),
                    outcomes.iter().map(|o| o.split_brain).sum::<usize>(),
                );
            }
            out.push('\n');
        }
    }
    out
}
