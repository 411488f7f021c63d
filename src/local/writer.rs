//! A load generator that records every acknowledged write, for the demo, the chaos tests and the benchmarks.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use tokio::sync::Mutex;

/// How the writer finds the master.
#[derive(Clone, Debug)]
pub enum Route {
    /// Always this address (a virtual name, or a server).
    Direct(String),
    /// Ask these Sentinels for the master named `master` before each (re)connect, as Sentinel
    /// clients do, and check the answer with ROLE.
    Sentinel {
        sentinels: Vec<String>,
        master: String,
    },
}

#[derive(Clone, Debug)]
pub struct WriterOptions {
    pub route: Route,
    /// Keys are `{prefix}{n}`.
    pub prefix: String,
    /// Sync mode: a write counts as acknowledged only once `WAIT` reports this many replicas.
    pub wait_replicas: Option<u32>,
    /// Per-command timeout: a frozen server costs at most this before the writer reconnects.
    pub timeout: Duration,
}

/// One acknowledged write.
#[derive(Clone, Debug)]
pub struct Ack {
    pub n: u64,
    pub sent: Instant,
    pub acked: Instant,
    /// The address the writer was connected to.
    pub server: String,
}

pub struct Writer {
    acks: Arc<Mutex<Vec<Ack>>>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

async fn open(address: &str, timeout: Duration) -> Option<redis::aio::MultiplexedConnection> {
    let client = redis::Client::open(format!("redis://{address}")).ok()?;
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .ok()
}

/// The master's address according to the first Sentinel that answers, if it confirms with ROLE.
pub async fn sentinel_master(
    sentinels: &[String],
    master: &str,
    timeout: Duration,
) -> Option<String> {
    for sentinel in sentinels {
        let Some(mut conn) = open(sentinel, timeout).await else {
            continue;
        };
        let reply: redis::RedisResult<Option<(String, String)>> = redis::cmd("SENTINEL")
            .arg("get-master-addr-by-name")
            .arg(master)
            .query_async(&mut conn)
            .await;
        if let Ok(Some((host, port))) = reply {
            return Some(format!("{host}:{port}"));
        }
    }
    None
}

async fn connect(
    route: &Route,
    timeout: Duration,
) -> Option<(String, redis::aio::MultiplexedConnection)> {
    match route {
        Route::Direct(address) => Some((address.clone(), open(address, timeout).await?)),
        Route::Sentinel { sentinels, master } => {
            let address = sentinel_master(sentinels, master, timeout).await?;
            let mut conn = open(&address, timeout).await?;
            let role: (String,) = redis::cmd("ROLE").query_async(&mut conn).await.ok().map(
                |r: Vec<redis::Value>| {
                    (match r.first() {
                        Some(redis::Value::BulkString(b)) => String::from_utf8_lossy(b).to_string(),
                        Some(redis::Value::SimpleString(s)) => s.clone(),
                        _ => String::new(),
                    },)
                },
            )?;
            (role.0 == "master").then_some((address, conn))
        }
    }
}

impl Writer {
    pub fn start(options: WriterOptions) -> Self {
        let acks = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (acks2, stop2) = (acks.clone(), stop.clone());
        let task = tokio::spawn(async move {
            let mut n = 0u64;
            let mut conn = None;
            while !stop2.load(Ordering::Relaxed) {
                if conn.is_none() {
                    conn = connect(&options.route, options.timeout).await;
                    if conn.is_none() {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        continue;
                    }
                }
                n += 1;
                let (server, c) = conn.as_mut().expect("connected above");
                let sent = Instant::now();
                let mut pipe = redis::pipe();
                pipe.cmd("SET")
                    .arg(format!("{}{n}", options.prefix))
                    .arg(n)
                    .ignore();
                if let Some(replicas) = options.wait_replicas {
                    pipe.cmd("WAIT")
                        .arg(replicas)
                        .arg(options.timeout.as_millis() as u64);
                } else {
                    pipe.cmd("PING");
                }
                let reply: redis::RedisResult<(redis::Value,)> = pipe.query_async(c).await;
                let acknowledged = match (&reply, options.wait_replicas) {
                    (Ok((redis::Value::Int(got),)), Some(wanted)) => *got >= i64::from(wanted),
                    (Ok(_), Some(_)) => false,
                    (Ok(_), None) => true,
                    (Err(_), _) => false,
                };
                if acknowledged {
                    acks2.lock().await.push(Ack {
                        n,
                        sent,
                        acked: Instant::now(),
                        server: server.clone(),
                    });
                } else {
                    conn = None;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        });
        Self { acks, stop, task }
    }

    pub async fn count(&self) -> usize {
        self.acks.lock().await.len()
    }

    /// The first write sent after `t` that was acknowledged, if any yet.
    pub async fn first_sent_after(&self, t: Instant) -> Option<Ack> {
        self.acks.lock().await.iter().find(|a| a.sent > t).cloned()
    }

    pub async fn finish(self) -> Vec<Ack> {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        std::mem::take(&mut *self.acks.lock().await)
    }
}

/// How many acknowledged keys are missing on the server at `address`.
pub async fn count_missing(address: &str, prefix: &str, acks: &[Ack]) -> Result<usize, String> {
    let mut conn = open(address, Duration::from_secs(2))
        .await
        .ok_or_else(|| format!("cannot connect to {address}"))?;
    let mut missing = 0;
    for chunk in acks.chunks(500) {
        let keys: Vec<String> = chunk.iter().map(|a| format!("{prefix}{}", a.n)).collect();
        let values: Vec<Option<String>> = redis::cmd("MGET")
            .arg(&keys)
            .query_async(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
        missing += values.iter().filter(|v| v.is_none()).count();
    }
    Ok(missing)
}
