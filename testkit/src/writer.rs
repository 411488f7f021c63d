//! A load generator that records every acknowledged write, for the demo, the chaos tests and
//! the benchmarks: Redis keys, or rows in a PostgreSQL table, one write at a time.

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
    /// Keys (Redis) or rows of [`TABLE`] (PostgreSQL) are `{prefix}{n}`.
    pub prefix: String,
    /// Sync mode on Redis: a write counts as acknowledged only once `WAIT` reports this many
    /// replicas. (PostgreSQL's primary waits for its synchronous standbys before it answers.)
    pub wait_replicas: Option<u32>,
    /// Per-command timeout: a frozen server costs at most this before the writer reconnects.
    pub timeout: Duration,
    /// Write to PostgreSQL, logging in as `postgres` with this password, instead of Redis.
    pub postgres_password: Option<String>,
}

/// The table PostgreSQL writes go to, made by the writer when missing.
pub const TABLE: &str = "replicant_writes";

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

/// A session with the server the writer writes to.
enum Session {
    Redis(redis::aio::MultiplexedConnection),
    Postgres(PgSession, tokio_postgres::Statement),
}

/// A PostgreSQL session, with the notices its server sends.
struct PgSession {
    client: tokio_postgres::Client,
    notices: tokio::sync::mpsc::UnboundedReceiver<tokio_postgres::error::DbError>,
}

/// A session for writing: [`TABLE`] made when missing, and the insert prepared once.
async fn pg_open(
    address: &str,
    password: &str,
    timeout: Duration,
) -> Option<(PgSession, tokio_postgres::Statement)> {
    let session = pg_session(address, password, timeout).await.ok()?;
    let create = format!("CREATE TABLE IF NOT EXISTS {TABLE} (key text PRIMARY KEY)");
    tokio::time::timeout(timeout, session.client.batch_execute(&create))
        .await
        .ok()?
        .ok()?;
    let insert = format!("INSERT INTO {TABLE} (key) VALUES ($1)");
    let insert = tokio::time::timeout(timeout, session.client.prepare(&insert))
        .await
        .ok()?
        .ok()?;
    Some((session, insert))
}

/// A session as `postgres`, or why there is none.
async fn pg_session(address: &str, password: &str, timeout: Duration) -> Result<PgSession, String> {
    let (host, port) = address
        .rsplit_once(':')
        .ok_or_else(|| format!("{address} is not host:port"))?;
    let mut config = tokio_postgres::Config::new();
    config
        .host(host)
        .port(
            port.parse()
                .map_err(|_| format!("{address} is not host:port"))?,
        )
        .user("postgres")
        .password(password)
        .dbname("postgres")
        .connect_timeout(timeout);
    let (client, mut connection) =
        tokio::time::timeout(timeout, config.connect(tokio_postgres::NoTls))
            .await
            .map_err(|_| format!("{address}: no answer within {timeout:?}"))?
            .map_err(|e| format!("{address}: {e}"))?;
    let (tx, notices) = tokio::sync::mpsc::unbounded_channel();
    // Notices are forwarded in the order they arrive, before the reply that follows them.
    tokio::spawn(async move {
        while let Some(message) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {
            match message {
                Ok(tokio_postgres::AsyncMessage::Notice(notice)) => {
                    let _ = tx.send(notice);
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
    });
    Ok(PgSession { client, notices })
}

impl PgSession {
    /// Insert `key` in its own transaction. Acknowledged only when the commit succeeded with
    /// no warning: a commit whose wait for synchronous standbys was cancelled comes back as a
    /// success with a WARNING, and is not acknowledged by the cluster.
    async fn write(
        &mut self,
        insert: &tokio_postgres::Statement,
        key: &str,
        timeout: Duration,
    ) -> bool {
        let written = tokio::time::timeout(timeout, self.client.execute(insert, &[&key])).await;
        let done = matches!(written, Ok(Ok(1)));
        let mut warned = false;
        while let Ok(notice) = self.notices.try_recv() {
            warned |= notice.severity() == "WARNING";
        }
        done && !warned
    }
}

async fn connect(options: &WriterOptions) -> Option<(String, Session)> {
    if let Some(password) = &options.postgres_password {
        let Route::Direct(address) = &options.route else {
            unreachable!("Writer::start accepts PostgreSQL writes to one address only");
        };
        let (session, insert) = pg_open(address, password, options.timeout).await?;
        return Some((address.clone(), Session::Postgres(session, insert)));
    }
    let (address, conn) = redis_connect(&options.route, options.timeout).await?;
    Some((address, Session::Redis(conn)))
}

async fn redis_connect(
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

/// SET `key`, then WAIT for `wait_replicas` (or PING): acknowledged when both answered, and
/// WAIT counted enough replicas.
async fn redis_write(
    conn: &mut redis::aio::MultiplexedConnection,
    key: &str,
    n: u64,
    wait_replicas: Option<u32>,
    timeout: Duration,
) -> bool {
    let mut pipe = redis::pipe();
    pipe.cmd("SET").arg(key).arg(n).ignore();
    if let Some(replicas) = wait_replicas {
        pipe.cmd("WAIT")
            .arg(replicas)
            .arg(timeout.as_millis() as u64);
    } else {
        pipe.cmd("PING");
    }
    let reply: redis::RedisResult<(redis::Value,)> = pipe.query_async(conn).await;
    match (&reply, wait_replicas) {
        (Ok((redis::Value::Int(got),)), Some(wanted)) => *got >= i64::from(wanted),
        (Ok(_), Some(_)) => false,
        (Ok(_), None) => true,
        (Err(_), _) => false,
    }
}

impl Writer {
    /// Write until [`finish`](Self::finish). PostgreSQL writes go to one address
    /// ([`Route::Direct`]).
    pub fn start(options: WriterOptions) -> Self {
        assert!(
            options.postgres_password.is_none() || matches!(options.route, Route::Direct(_)),
            "PostgreSQL writes go to one address (Route::Direct)"
        );
        let acks = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (acks2, stop2) = (acks.clone(), stop.clone());
        let task = tokio::spawn(async move {
            let mut n = 0u64;
            let mut conn = None;
            while !stop2.load(Ordering::Relaxed) {
                if conn.is_none() {
                    conn = connect(&options).await;
                    if conn.is_none() {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        continue;
                    }
                }
                n += 1;
                let (server, session) = conn.as_mut().expect("connected above");
                let sent = Instant::now();
                let key = format!("{}{n}", options.prefix);
                let acknowledged = match session {
                    Session::Redis(c) => {
                        redis_write(c, &key, n, options.wait_replicas, options.timeout).await
                    }
                    Session::Postgres(pg, insert) => pg.write(insert, &key, options.timeout).await,
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

/// How many acknowledged rows are missing from [`TABLE`] on the PostgreSQL server at `address`.
pub async fn count_missing_rows(
    address: &str,
    password: &str,
    prefix: &str,
    acks: &[Ack],
) -> Result<usize, String> {
    // The name may be between members for a moment: try for a while.
    let mut attempt = 0;
    let session = loop {
        match pg_session(address, password, Duration::from_secs(5)).await {
            Ok(session) => break session,
            Err(e) if attempt == 20 => return Err(format!("cannot connect: {e}")),
            Err(_) => attempt += 1,
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let mut missing = 0;
    for chunk in acks.chunks(5000) {
        let keys: Vec<String> = chunk.iter().map(|a| format!("{prefix}{}", a.n)).collect();
        let row = session
            .client
            .query_one(
                &format!("SELECT count(*) FROM {TABLE} WHERE key = ANY($1)"),
                &[&keys],
            )
            .await
            .map_err(|e| e.to_string())?;
        let found: i64 = row.get(0);
        missing += keys.len() - found as usize;
    }
    Ok(missing)
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
