//! Shared pieces of the system benchmarks: child processes killed by PID, the controller, statistics.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use replicant::runtime::{files::state::read_reports, report::ClusterReport};
use replicant_testkit::{free_port, writer::Writer};

/// What one failover trial measured.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// From the fault to the first write acknowledged through the cluster's endpoint that was
    /// sent after it; `None` if none came within the trial.
    pub gap: Option<f64>,
    pub acknowledged: usize,
    /// Acknowledged writes missing from the new primary.
    pub lost: usize,
    /// Writes the old primary acknowledged while another primary existed.
    pub split_brain: usize,
}

/// The totals of several trials of one setup.
pub struct Totals {
    pub gaps: Vec<f64>,
    /// Trials with no write within the trial.
    pub stuck: usize,
    pub acknowledged: usize,
    pub lost: usize,
    pub split_brain: usize,
}

impl Totals {
    pub fn of(outcomes: &[Outcome]) -> Self {
        Self {
            gaps: outcomes.iter().filter_map(|o| o.gap).collect(),
            stuck: outcomes.iter().filter(|o| o.gap.is_none()).count(),
            acknowledged: outcomes.iter().map(|o| o.acknowledged).sum(),
            lost: outcomes.iter().map(|o| o.lost).sum(),
            split_brain: outcomes.iter().map(|o| o.split_brain).sum(),
        }
    }
}

/// Seconds from `fault_at` to the acknowledgement of the writer's first write sent after
/// `after`; `None` if none comes within 60s of the fault.
pub async fn write_gap(writer: &Writer, fault_at: Instant, after: Instant) -> Option<f64> {
    while fault_at.elapsed() < Duration::from_secs(60) {
        if let Some(ack) = writer.first_sent_after(after).await {
            return Some(ack.acked.duration_since(fault_at).as_secs_f64());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    None
}

/// A child process killed (SIGKILL, by PID) and reaped on drop.
pub struct Proc(pub Child);

impl Proc {
    pub fn spawn(program: &str, args: &[&str], log: &Path) -> Self {
        let file = fs::File::create(log).expect("log file");
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log file"))
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
        Self(child)
    }

    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// HAProxy on `config`, written to `{name}.cfg` in `dir` (its log beside it), once it accepts
/// connections on `port`.
pub async fn haproxy(dir: &Path, name: &str, config: &str, port: u16) -> Proc {
    let path = dir.join(format!("{name}.cfg"));
    fs::write(&path, config).expect("haproxy configuration");
    let log = dir.join(format!("{name}.log"));
    let proc = Proc::spawn("haproxy", &["-db", "-f", path.to_str().unwrap()], &log);
    let listening = wait_until(Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    })
    .await;
    assert!(
        listening,
        "haproxy did not start: {}",
        fs::read_to_string(&log).unwrap_or_default()
    );
    proc
}

/// `replicant run` on a spec directory, with an admin endpoint.
pub fn controller(specs: &Path, state: &Path, admin: u16) -> Proc {
    Proc::spawn(
        env!("CARGO_BIN_EXE_replicant"),
        &[
            "run",
            "--specs",
            specs.to_str().unwrap(),
            "--state",
            state.to_str().unwrap(),
            "--admin",
            &format!("127.0.0.1:{admin}"),
        ],
        &state.with_file_name(format!("controller-{admin}.log")),
    )
}

/// `replicant run` on a spec directory of one cluster, once that cluster is Ready (within
/// `within`).
pub async fn ready_controller(specs: &Path, state: &Path, within: Duration) -> Proc {
    let proc = controller(specs, state, free_port().expect("a port"));
    let ready = wait_until(within, || reports(state).first().is_some_and(is_ready)).await;
    assert!(ready, "replicant did not make the cluster ready");
    proc
}

pub fn reports(state: &Path) -> Vec<ClusterReport> {
    read_reports(state).unwrap_or_default()
}

pub fn is_ready(report: &ClusterReport) -> bool {
    report
        .status
        .conditions
        .iter()
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

/// Poll until `check` holds; false after `timeout`.
pub async fn wait_until(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

pub fn median(values: &[f64]) -> f64 {
    percentile(values, 50.0)
}

/// Nearest-rank percentile.
pub fn percentile(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

pub fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

pub fn workdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("replicant-bench-{}-{name}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("bench work dir");
    dir
}

/// `INFO replication` field of a server, if it answers.
pub async fn info_field(address: &str, field: &str) -> Option<String> {
    let client = redis::Client::open(format!("redis://{address}")).ok()?;
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_millis(300)))
        .set_response_timeout(Some(Duration::from_millis(300)));
    let mut conn = client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .ok()?;
    let info: String = redis::cmd("INFO")
        .arg("replication")
        .query_async(&mut conn)
        .await
        .ok()?;
    info.lines()
        .find_map(|l| l.strip_prefix(field).and_then(|r| r.strip_prefix(':')))
        .map(|v| v.trim().to_string())
}

/// Try a write directly on `address`: did the server accept it?
pub async fn accepts_write(address: &str, key: &str) -> bool {
    let Ok(client) = redis::Client::open(format!("redis://{address}")) else {
        return false;
    };
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_millis(200)))
        .set_response_timeout(Some(Duration::from_millis(200)));
    let Ok(mut conn) = client
        .get_multiplexed_async_connection_with_config(&config)
        .await
    else {
        return false;
    };
    redis::cmd("SET")
        .arg(key)
        .arg("x")
        .query_async::<()>(&mut conn)
        .await
        .is_ok()
}

/// CPU seconds (user + system) and resident bytes of a process.
pub fn usage(pid: u32) -> (f64, u64) {
    let ticks: f64 = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0);
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let cpu = fields
        .get(11)
        .and_then(|u| u.parse::<f64>().ok())
        .unwrap_or(0.0)
        + fields
            .get(12)
            .and_then(|s| s.parse::<f64>().ok())
            .unwrap_or(0.0);
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    (cpu / ticks, rss_kib * 1024)
}
