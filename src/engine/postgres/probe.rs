//! One member as PostgreSQL describes itself, read with a single query: role, positions,
//! timeline, upstream, identity and the settings replicant manages. Touches only the member it
//! is given, read-only.

use std::{fmt, str::FromStr, time::Duration};

use tokio_postgres::{NoTls, error::SqlState};

use super::history::{self, TimelineSwitch};
use crate::{core::engine::EngineError, engine::Credentials};

/// A WAL position (`pg_lsn`), as a byte offset in the WAL stream.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Lsn(pub u64);

impl FromStr for Lsn {
    type Err = String;

    /// `16/B374D848`, as PostgreSQL prints it.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (high, low) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not an LSN"))?;
        let part = |p: &str| u32::from_str_radix(p, 16).map_err(|_| format!("{s:?} is not an LSN"));
        Ok(Lsn(((part(high)? as u64) << 32) | part(low)? as u64))
    }
}

impl serde::Serialize for Lsn {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Lsn {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

/// The WAL receiver of a standby, when it runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Receiver {
    /// `host:port` it streams from.
    pub sender: String,
    /// `streaming`, `catchup`, `starting`, `waiting`, `restarting` or `stopping`.
    pub status: String,
    /// The timeline it receives.
    pub timeline: u32,
}

/// What one query tells about a member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PgProbe {
    /// In recovery: a standby (or a primary not promoted yet).
    pub in_recovery: bool,
    /// Which data set this is: `pg_control_system().system_identifier`. Members of one cluster
    /// share it; a member with another holds other data and is never copied over.
    pub system_identifier: u64,
    /// The timeline its data is on: the primary's current one, the timeline a standby receives,
    /// or, with no receiver, the one its recovery has reached.
    pub timeline: u32,
    /// How that timeline was reached: where each earlier one forked (empty on timeline 1, or
    /// when the file cannot be read: it needs a superuser or `pg_read_server_files`).
    pub history: Vec<TimelineSwitch>,
    /// Durable position: WAL flushed on a primary, received and flushed on a standby. `None`
    /// on a standby that has received nothing since it started.
    pub durable: Option<Lsn>,
    /// Applied position: WAL replayed, visible to readers (a primary's equals `durable`).
    pub applied: Option<Lsn>,
    /// The receiver, when a standby's runs.
    pub receiver: Option<Receiver>,
    /// `host:port` of `primary_conninfo`: where a standby is told to stream from, whether or
    /// not it does. The rest of the setting (which may hold a password) is never kept.
    pub configured_upstream: Option<String>,
    pub primary_slot_name: Option<String>,
    pub synchronous_standby_names: String,
    pub synchronous_commit: String,
    pub default_transaction_read_only: bool,
    /// The physical replication slots replicant keeps here (named `replicant_<member>`).
    pub slots: Vec<Slot>,
    /// A standby's: milliseconds since the last transaction it replayed was committed on the
    /// primary; `None` before it replayed one.
    pub replay_age_ms: Option<u64>,
}

/// A replication slot kept for one member.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
pub struct Slot {
    pub name: String,
    /// A standby streams through it now.
    pub active: bool,
    /// The oldest WAL it keeps; `None` before anything was reserved.
    #[serde(rename = "restart", deserialize_with = "lsn_or_none")]
    pub restart: Option<Lsn>,
    /// The WAL it needed is gone: its standby cannot catch up and must be copied again.
    #[serde(default)]
    pub lost: Option<bool>,
}

fn lsn_or_none<'de, D: serde::Deserializer<'de>>(de: D) -> Result<Option<Lsn>, D::Error> {
    let text: Option<String> = serde::Deserialize::deserialize(de)?;
    text.map(|t| t.parse().map_err(serde::de::Error::custom))
        .transpose()
}

/// The slot replicant keeps for `member`: slot names allow lowercase letters, digits and `_`.
pub fn slot_name(member: &str) -> String {
    format!("replicant_{}", member.replace('-', "_"))
}

/// The member's timeline, computed once: the primary's current one, else the one a standby
/// receives, else the one its recovery has reached, else its last checkpoint's.
const PROBE: &str = "
WITH member AS (
  SELECT pg_is_in_recovery() AS recovering,
         coalesce(
           CASE WHEN pg_is_in_recovery() THEN NULL
                ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END,
           (SELECT received_tli FROM pg_stat_wal_receiver),
           nullif((SELECT min_recovery_end_timeline FROM pg_control_recovery()), 0),
           (SELECT timeline_id FROM pg_control_checkpoint())) AS timeline)
SELECT recovering,
       (SELECT system_identifier FROM pg_control_system())::text,
       timeline,
       (SELECT received_tli FROM pg_stat_wal_receiver),
       CASE WHEN recovering THEN pg_last_wal_receive_lsn()::text
            ELSE pg_current_wal_flush_lsn()::text END,
       CASE WHEN recovering THEN pg_last_wal_replay_lsn()::text
            ELSE pg_current_wal_flush_lsn()::text END,
       (SELECT sender_host || ':' || sender_port FROM pg_stat_wal_receiver),
       (SELECT status FROM pg_stat_wal_receiver),
       current_setting('primary_conninfo'),
       current_setting('primary_slot_name'),
       current_setting('synchronous_standby_names'),
       current_setting('synchronous_commit'),
       current_setting('default_transaction_read_only'),
       (SELECT coalesce(json_agg(json_build_object(
                  'name', slot_name, 'active', active,
                  'restart', restart_lsn::text, 'lost', wal_status = 'lost')
                ORDER BY slot_name), '[]')
          FROM pg_replication_slots
         WHERE slot_type = 'physical' AND slot_name LIKE 'replicant\\_%')::text,
       CASE WHEN timeline > 1 AND pg_has_role(current_user, 'pg_read_server_files', 'USAGE') THEN
         pg_read_file('pg_wal/' || lpad(upper(to_hex(timeline)), 8, '0') || '.history',
                      0, 1048576, true)
       END,
       CASE WHEN recovering THEN
         (1000 * extract(epoch FROM clock_timestamp() - pg_last_xact_replay_timestamp()))::float8
       END
  FROM member";

/// Probe `address` (`host:port`) within `timeout` for connecting and querying together.
pub async fn probe(
    address: &str,
    credentials: &Credentials,
    timeout: Duration,
) -> Result<PgProbe, EngineError> {
    let timed_out = || EngineError::Timeout {
        address: address.to_string(),
        millis: timeout.as_millis(),
        during: "probe",
    };
    let probe = async {
        let session = Session::connect(address, credentials).await?;
        let probe = session.probe(address).await;
        session.close().await;
        probe
    };
    tokio::time::timeout(timeout, probe)
        .await
        .map_err(|_| timed_out())?
}

/// The member's answer to [`PROBE`], read into a [`PgProbe`].
fn parse(row: &tokio_postgres::Row, address: &str) -> Result<PgProbe, EngineError> {
    let protocol = |detail: String| EngineError::Protocol {
        address: address.to_string(),
        during: "probe",
        detail,
    };
    let lsn = |text: Option<String>| -> Result<Option<Lsn>, EngineError> {
        text.map(|t| t.parse().map_err(protocol)).transpose()
    };
    let system_identifier: String = column(row, 1, address)?;
    let timeline: Option<i32> = column(row, 2, address)?;
    let received_timeline: Option<i32> = column(row, 3, address)?;
    let sender: Option<String> = column(row, 6, address)?;
    let status: Option<String> = column(row, 7, address)?;
    let conninfo: String = column(row, 8, address)?;
    let slot: String = column(row, 9, address)?;
    let history: Option<String> = column(row, 14, address)?;
    let replay_age_ms: Option<f64> = column(row, 15, address)?;
    Ok(PgProbe {
        in_recovery: column(row, 0, address)?,
        system_identifier: system_identifier
            .parse()
            .map_err(|_| protocol(format!("system identifier {system_identifier:?}")))?,
        timeline: timeline.unwrap_or(0) as u32,
        history: history
            .as_deref()
            .map(history::parse)
            .transpose()
            .map_err(|e| protocol(format!("timeline history: {e}")))?
            .unwrap_or_default(),
        durable: lsn(column(row, 4, address)?)?,
        applied: lsn(column(row, 5, address)?)?,
        receiver: sender.zip(status).map(|(sender, status)| Receiver {
            sender,
            status,
            timeline: received_timeline.unwrap_or(0) as u32,
        }),
        configured_upstream: conninfo_address(&conninfo),
        primary_slot_name: (!slot.is_empty()).then_some(slot),
        synchronous_standby_names: column(row, 10, address)?,
        synchronous_commit: column(row, 11, address)?,
        default_transaction_read_only: column::<String>(row, 12, address)? == "on",
        slots: serde_json::from_str(column(row, 13, address)?)
            .map_err(|e| protocol(format!("slots: {e}")))?,
        // A clock behind the primary's reads as no age rather than a negative one.
        replay_age_ms: replay_age_ms.map(|ms| ms.max(0.0) as u64),
    })
}

/// Column `index` of a reply: a reply of the wrong shape is the server's protocol error, never
/// a panic here.
fn column<'a, T: tokio_postgres::types::FromSql<'a>>(
    row: &'a tokio_postgres::Row,
    index: usize,
    address: &str,
) -> Result<T, EngineError> {
    row.try_get(index).map_err(|e| EngineError::Protocol {
        address: address.to_string(),
        during: "probe",
        detail: format!("column {index}: {e}"),
    })
}

/// One connection to a member, for the length of one probe or action.
pub(super) struct Session {
    pub client: tokio_postgres::Client,
    connection: tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>,
}

impl Session {
    pub async fn connect(address: &str, credentials: &Credentials) -> Result<Self, EngineError> {
        let (host, port) = split_address(address)?;
        let mut config = tokio_postgres::Config::new();
        config
            .host(host)
            .port(port)
            .user(credentials.username.as_deref().unwrap_or("postgres"))
            .dbname("postgres")
            .application_name("replicant");
        if let Some(password) = &credentials.password {
            config.password(password.expose());
        }
        let (client, connection) = config
            .connect(NoTls)
            .await
            .map_err(|e| classify(address, "connect", &e))?;
        Ok(Self {
            client,
            connection: tokio::spawn(connection),
        })
    }

    /// Close the connection and wait until it has gone.
    pub async fn close(self) {
        drop(self.client);
        let _ = self.connection.await;
    }

    /// Drop the connection at once, without waiting for a server that may not answer.
    pub fn discard(self) {
        self.connection.abort();
    }

    /// One probe over this session, unbounded: the caller sets the time limit.
    pub async fn probe(&self, address: &str) -> Result<PgProbe, EngineError> {
        let row = self
            .client
            .query_one(PROBE, &[])
            .await
            .map_err(|e| classify(address, "probe", &e))?;
        parse(&row, address)
    }
}

/// Host (without IPv6 brackets) and port of a member's `host:port`.
pub fn split_address(address: &str) -> Result<(&str, u16), EngineError> {
    let bad = || EngineError::Connect {
        address: address.to_string(),
        message: "not host:port".into(),
    };
    let (host, port) = address.rsplit_once(':').ok_or_else(bad)?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Ok((host, port.parse().map_err(|_| bad())?))
}

/// `host:port` of a libpq connection string (`host=... port=...`), nothing else of it.
pub fn conninfo_address(conninfo: &str) -> Option<String> {
    let mut host = None;
    let mut port = None;
    for pair in conninfo.split_whitespace() {
        match pair.split_once('=') {
            Some(("host", value)) => host = Some(value.trim_matches('\'')),
            Some(("port", value)) => port = Some(value.trim_matches('\'')),
            _ => {}
        }
    }
    let host = host?;
    Some(format!("{host}:{}", port.unwrap_or("5432")))
}

/// Tell apart what a caller acts on differently: nothing listening, wrong credentials, a
/// server not accepting connections yet, and the rest.
pub(super) fn classify(
    address: &str,
    during: &'static str,
    error: &tokio_postgres::Error,
) -> EngineError {
    let address = address.to_string();
    if let Some(db) = error.as_db_error() {
        let message = db.message().to_string();
        return match *db.code() {
            SqlState::INVALID_PASSWORD | SqlState::INVALID_AUTHORIZATION_SPECIFICATION => {
                EngineError::Auth { address, message }
            }
            SqlState::CANNOT_CONNECT_NOW => EngineError::NotAccepting { address, message },
            _ => EngineError::Command {
                address,
                during,
                message: format!("{} ({})", message, db.code().code()),
            },
        };
    }
    let io = std::error::Error::source(error).and_then(|s| s.downcast_ref::<std::io::Error>());
    match io.map(std::io::Error::kind) {
        Some(std::io::ErrorKind::ConnectionRefused) => EngineError::Refused { address },
        _ => EngineError::Connect {
            address,
            message: error.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsns_read_and_print_as_postgres_writes_them() {
        let lsn: Lsn = "16/B374D848".parse().unwrap();
        assert_eq!(lsn.0, (0x16 << 32) | 0xB374_D848);
        assert_eq!(lsn.to_string(), "16/B374D848");
        assert!("0/3000060".parse::<Lsn>().unwrap() < "1/0".parse::<Lsn>().unwrap());
        assert!("nonsense".parse::<Lsn>().is_err());
    }

    #[test]
    fn only_host_and_port_are_kept_of_a_conninfo() {
        assert_eq!(
            conninfo_address(
                "user=postgres password=secret host=10.0.0.1 port=5433 sslmode=prefer"
            )
            .as_deref(),
            Some("10.0.0.1:5433")
        );
        assert_eq!(
            conninfo_address("host='db-a'").as_deref(),
            Some("db-a:5432")
        );
        assert_eq!(conninfo_address(""), None);
    }
}
