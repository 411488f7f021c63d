//! Helpers for tests against real postgres servers (see `replicant_testkit::postgres`).

use std::time::Duration;

use replicant::{
    core::engine::EngineError,
    engine::{Credentials, Secret, postgres},
};
use replicant_testkit::postgres::{PASSWORD, postgres_available};

pub const TIMEOUT: Duration = Duration::from_secs(2);

/// Without PostgreSQL, say SKIPPED and pass, unless CI is set (`.ci/run` installs it).
pub fn available() -> bool {
    if postgres_available() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "PostgreSQL is missing under CI: .ci/run should have installed it"
    );
    eprintln!("SKIPPED: PostgreSQL is not installed");
    false
}

pub fn credentials(password: &str) -> Credentials {
    Credentials {
        username: Some("postgres".into()),
        password: Some(Secret::new(password)),
    }
}

pub fn superuser() -> Credentials {
    credentials(PASSWORD)
}

/// A member to act on as `credentials`, with time enough for a promotion or a reload.
pub fn target<'a>(address: &'a str, credentials: &'a Credentials) -> postgres::Target<'a> {
    postgres::Target {
        address,
        credentials,
        timeout: Duration::from_secs(10),
    }
}

pub async fn probe(address: &str) -> Result<postgres::PgProbe, EngineError> {
    postgres::probe(address, &superuser(), TIMEOUT).await
}

/// Probe `address` until `done` holds (10 s at most); the last probe either way.
pub async fn probe_until(
    address: &str,
    done: impl Fn(&postgres::PgProbe) -> bool,
) -> postgres::PgProbe {
    let mut last = probe(address).await.unwrap();
    for _ in 0..200 {
        if done(&last) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        last = probe(address).await.unwrap();
    }
    last
}

/// A session as the superuser on `address`, or why there is none.
pub async fn try_connect(address: &str) -> Result<tokio_postgres::Client, String> {
    try_connect_as(address, "postgres").await
}

/// A session as `user` (with the test password) on `address`, or why there is none.
pub async fn try_connect_as(address: &str, user: &str) -> Result<tokio_postgres::Client, String> {
    let (host, port) = address.rsplit_once(':').ok_or("not host:port")?;
    let (client, connection) = tokio_postgres::Config::new()
        .host(host)
        .port(port.parse().map_err(|_| "bad port")?)
        .user(user)
        .password(PASSWORD)
        .dbname("postgres")
        .connect(tokio_postgres::NoTls)
        .await
        .map_err(|e| match std::error::Error::source(&e) {
            Some(cause) => format!("{e}: {cause}"),
            None => e.to_string(),
        })?;
    tokio::spawn(connection);
    Ok(client)
}

/// A session as the superuser on `address`.
pub async fn connect(address: &str) -> tokio_postgres::Client {
    try_connect(address).await.unwrap()
}

/// Run SQL on `address` as the superuser.
pub async fn sql(address: &str, statement: &str) {
    connect(address)
        .await
        .batch_execute(statement)
        .await
        .unwrap();
}

/// One number from a query on `address`.
pub async fn number(address: &str, query: &str) -> i64 {
    connect(address)
        .await
        .query_one(query, &[])
        .await
        .unwrap()
        .get(0)
}

/// Run SQL on `address` as the superuser, within 2 s; the error when it cannot.
pub async fn try_sql(address: &str, statement: &str) -> Result<(), String> {
    let attempt = async {
        try_connect(address)
            .await?
            .batch_execute(statement)
            .await
            .map_err(|e| e.to_string())
    };
    tokio::time::timeout(TIMEOUT, attempt)
        .await
        .map_err(|_| "timed out".to_string())?
}

/// How many rows a query counts on `address`, or `None` when it cannot be asked.
pub async fn try_number(address: &str, query: &str) -> Option<i64> {
    let attempt = async {
        try_connect(address)
            .await
            .ok()?
            .query_one(query, &[])
            .await
            .ok()
            .map(|row| row.get(0))
    };
    tokio::time::timeout(TIMEOUT, attempt).await.ok().flatten()
}

/// Wait (60 s at most) until `check` holds.
pub async fn eventually_pg<F: AsyncFnMut() -> bool>(what: &str, mut check: F) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while std::time::Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

/// Stop the standby at `address` receiving (its upstream cleared, as a detach does behind
/// the controller's back), and wait until its receiver has gone.
pub async fn stop_receiving(address: &str) {
    sql(address, "ALTER SYSTEM SET primary_conninfo = ''").await;
    sql(address, "SELECT pg_reload_conf()").await;
    eventually_pg("the standby's receiver to stop", async || {
        try_number(address, "SELECT count(*) FROM pg_stat_wal_receiver").await == Some(0)
    })
    .await;
}

/// Switch the WAL of the primary at `address` to a new segment, and wait until its archiver
/// has archived the one that held everything written so far.
pub async fn archived_through_now(address: &str) {
    let client = connect(address).await;
    let last: String = client
        .query_one("SELECT pg_walfile_name(pg_current_wal_lsn())", &[])
        .await
        .unwrap()
        .get(0);
    sql(address, "SELECT pg_switch_wal()").await;
    // Segment names of one timeline are fixed-width hexadecimal: they compare as text.
    eventually_pg(&format!("{last} archived"), async || {
        let Ok(client) = try_connect(address).await else {
            return false;
        };
        client
            .query_one("SELECT last_archived_wal FROM pg_stat_archiver", &[])
            .await
            .ok()
            .and_then(|row| row.get::<_, Option<String>>(0))
            .is_some_and(|archived| archived.as_str() >= last.as_str())
    })
    .await;
}
