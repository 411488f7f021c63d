//! What the controller does to a member over SQL, with no restart: re-point or detach a standby,
//! promote, fence softly and lift the fence. Each is idempotent, checks that it took effect,
//! and runs within the timeout it is given. Touches only the member it is given.

use std::time::{Duration, Instant};

use super::probe::{Session, classify, slot_name, split_address};
use crate::{core::engine::EngineError, engine::Credentials};

/// A name no standby has: with it as `synchronous_standby_names`, no commit is acknowledged.
pub const FENCED_STANDBY_NAME: &str = "replicant_fenced";

/// Where a standby streams from.
#[derive(Clone, Copy, Debug)]
pub struct Upstream<'a> {
    /// `host:port` of the member to stream from.
    pub address: &'a str,
    /// The replication slot kept for this standby on its upstream, if any.
    pub slot: Option<&'a str>,
    /// The name the standby reports upstream: `synchronous_standby_names` lists these.
    pub application_name: &'a str,
    /// How the standby authenticates to its upstream.
    pub auth: UpstreamAuth<'a>,
}

/// How a standby authenticates to its upstream.
#[derive(Clone, Copy, Debug)]
pub enum UpstreamAuth<'a> {
    /// With these credentials, written into `primary_conninfo`.
    Credentials(&'a Credentials),
    /// As `user`, with the password its host keeps in the password file at `passfile`: no
    /// password in the settings.
    Passfile { user: &'a str, passfile: &'a str },
}

impl UpstreamAuth<'_> {
    /// The `primary_conninfo` fields that say it.
    pub fn fields(&self) -> Vec<(&str, &str)> {
        match self {
            UpstreamAuth::Credentials(credentials) => {
                let mut fields = Vec::new();
                if let Some(user) = &credentials.username {
                    fields.push(("user", user.as_str()));
                }
                if let Some(password) = &credentials.password {
                    fields.push(("password", password.expose()));
                }
                fields
            }
            UpstreamAuth::Passfile { user, passfile } => {
                vec![("user", *user), ("passfile", *passfile)]
            }
        }
    }
}

/// A member to act on, and how.
#[derive(Clone, Copy, Debug)]
pub struct Target<'a> {
    pub address: &'a str,
    pub credentials: &'a Credentials,
    pub timeout: Duration,
}

impl Target<'_> {
    fn timed_out(&self, during: &'static str) -> EngineError {
        EngineError::Timeout {
            address: self.address.to_string(),
            millis: self.timeout.as_millis(),
            during,
        }
    }

    /// Run `work` on a fresh session, within the timeout.
    async fn with_session<T>(
        &self,
        during: &'static str,
        work: impl AsyncFnOnce(&Session) -> Result<T, EngineError>,
    ) -> Result<T, EngineError> {
        let run = async {
            let session = Session::connect(self.address, self.credentials).await?;
            let result = work(&session).await;
            session.close().await;
            result
        };
        tokio::time::timeout(self.timeout, run)
            .await
            .map_err(|_| self.timed_out(during))?
    }

    async fn execute(
        &self,
        session: &Session,
        during: &'static str,
        sql: &str,
    ) -> Result<(), EngineError> {
        session
            .client
            .batch_execute(sql)
            .await
            .map_err(|e| classify(self.address, during, &e))
    }

    async fn query_bool(
        &self,
        session: &Session,
        during: &'static str,
        sql: &str,
    ) -> Result<bool, EngineError> {
        session
            .client
            .query_one(sql, &[])
            .await
            .map(|row| row.get(0))
            .map_err(|e| classify(self.address, during, &e))
    }

    /// Change settings with `ALTER SYSTEM` (kept across restarts) and reload; each statement on
    /// its own, as `ALTER SYSTEM` refuses to run in a transaction block.
    async fn alter_system(
        &self,
        during: &'static str,
        settings: &[(&str, Option<String>)],
    ) -> Result<(), EngineError> {
        self.with_session(during, async |session| {
            for (name, value) in settings {
                let sql = match value {
                    Some(value) => format!("ALTER SYSTEM SET {name} = {}", literal(value)),
                    None => format!("ALTER SYSTEM RESET {name}"),
                };
                self.execute(session, during, &sql).await?;
            }
            self.execute(session, during, "SELECT pg_reload_conf()")
                .await
        })
        .await
    }

    /// Poll with new sessions until `check` holds: a reload reaches new backends a moment after
    /// it is asked for.
    async fn until(&self, during: &'static str, sql: &str) -> Result<(), EngineError> {
        let deadline = Instant::now() + self.timeout;
        loop {
            let holds = self
                .with_session(during, async |session| {
                    self.query_bool(session, during, sql).await
                })
                .await?;
            if holds {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(EngineError::NotApplied {
                    address: self.address.to_string(),
                    during,
                    detail: format!("still not true: {sql}"),
                });
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// `value` as an SQL string literal (standard_conforming_strings: only quotes are doubled).
fn literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// `value` as a libpq connection-string value.
fn conninfo_value(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// A libpq connection string to `address` (`host:port`) with `fields`, every value quoted.
pub fn conninfo(address: &str, fields: &[(&str, &str)]) -> Result<String, EngineError> {
    let (host, port) = split_address(address)?;
    let mut conninfo = format!("host={} port={port}", conninfo_value(host));
    for (name, value) in fields {
        conninfo.push_str(&format!(" {name}={}", conninfo_value(value)));
    }
    Ok(conninfo)
}

/// Make `target` stream from `upstream`: `primary_conninfo` and `primary_slot_name` changed and
/// reloaded, so the WAL receiver restarts towards it while the server keeps running.
pub async fn repoint(target: Target<'_>, upstream: Upstream<'_>) -> Result<(), EngineError> {
    let mut fields = vec![("application_name", upstream.application_name)];
    fields.extend(upstream.auth.fields());
    let conninfo = conninfo(upstream.address, &fields)?;
    target
        .alter_system(
            "re-point",
            &[
                ("primary_conninfo", Some(conninfo)),
                ("primary_slot_name", upstream.slot.map(str::to_string)),
            ],
        )
        .await
}

/// Stop `target` streaming, so that its position stops moving (before a candidate is chosen).
pub async fn detach(target: Target<'_>) -> Result<(), EngineError> {
    target
        .alter_system(
            "detach",
            &[("primary_conninfo", None), ("primary_slot_name", None)],
        )
        .await?;
    target
        .until(
            "detach",
            "SELECT NOT EXISTS (SELECT FROM pg_stat_wal_receiver)",
        )
        .await
}

/// End recovery on `target` and wait until it accepts writes. A member already out of
/// recovery is left as it is.
pub async fn promote(target: Target<'_>) -> Result<(), EngineError> {
    target
        .with_session("promote", async |session| {
            if target
                .query_bool(session, "promote", "SELECT pg_is_in_recovery()")
                .await?
            {
                target
                    .query_bool(session, "promote", "SELECT pg_promote(false)")
                    .await?;
            }
            loop {
                if !target
                    .query_bool(session, "promote", "SELECT pg_is_in_recovery()")
                    .await?
                {
                    return Ok(());
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
}

/// Stop `target` acknowledging commits, durably and without a restart: commits wait for a
/// synchronous standby that cannot exist, new transactions are read-only, and the client
/// sessions open now are ended. Checked from a new session.
///
/// Not covered, as PostgreSQL allows it: a session that sets `synchronous_commit` to `local`
/// or `off` and `default_transaction_read_only` off still commits, until the server stops.
pub async fn fence(target: Target<'_>) -> Result<(), EngineError> {
    target
        .alter_system(
            "fence",
            &[
                (
                    "synchronous_standby_names",
                    Some(FENCED_STANDBY_NAME.to_string()),
                ),
                ("default_transaction_read_only", Some("on".to_string())),
            ],
        )
        .await?;
    target
        .until(
            "fence",
            &format!(
                "SELECT current_setting('synchronous_standby_names') = {} AND current_setting('default_transaction_read_only') = 'on'",
                literal(FENCED_STANDBY_NAME)
            ),
        )
        .await?;
    target
        .with_session("fence", async |session| {
            target
                .execute(
                    session,
                    "fence",
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()",
                )
                .await
        })
        .await
}

/// Lift a fence: writes accepted again, commits waiting for `synchronous_standby_names` as
/// given (empty for asynchronous replication).
pub async fn unfence(
    target: Target<'_>,
    synchronous_standby_names: &str,
) -> Result<(), EngineError> {
    let names =
        (!synchronous_standby_names.is_empty()).then(|| synchronous_standby_names.to_string());
    target
        .alter_system(
            "lift the fence",
            &[
                ("synchronous_standby_names", names),
                ("default_transaction_read_only", None),
            ],
        )
        .await?;
    target
        .until(
            "lift the fence",
            &format!(
                "SELECT current_setting('synchronous_standby_names') = {} AND current_setting('default_transaction_read_only') = 'off'",
                literal(synchronous_standby_names)
            ),
        )
        .await
}

/// Make sure `target`'s control file names its current timeline: after a promotion it does
/// only from the first checkpoint on, and a rewind onto it reads the control file. Asks for a
/// checkpoint (which needs a superuser or `pg_checkpoint`) when it has not happened yet.
pub async fn checkpoint(target: Target<'_>) -> Result<(), EngineError> {
    const ON_TIMELINE: &str = "SELECT (SELECT timeline_id FROM pg_control_checkpoint()) = ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int";
    let done = target
        .with_session("checkpoint", async |session| {
            target.query_bool(session, "checkpoint", ON_TIMELINE).await
        })
        .await?;
    if !done {
        target
            .with_session("checkpoint", async |session| {
                target.execute(session, "checkpoint", "CHECKPOINT").await
            })
            .await?;
    }
    target.until("checkpoint", ON_TIMELINE).await
}

/// `synchronous_standby_names` that makes every commit wait for `k` of `names` (quorum
/// commit), with `synchronous_commit` on: the guard a primary runs with in sync mode.
pub fn quorum(k: usize, names: &[&str]) -> String {
    let quoted: Vec<String> = names
        .iter()
        .map(|n| format!("\"{}\"", n.replace('"', "\"\"")))
        .collect();
    format!("ANY {k} ({})", quoted.join(", "))
}

/// Keep exactly the replication slots of `members` (see [`slot_name`]) on `target`: missing
/// ones created, others of replicant's dropped once no standby uses them. On a standby, the
/// slots are created too and moved to what it has replayed, so they exist, with the right
/// position, the moment it is promoted.
pub async fn keep_slots(target: Target<'_>, members: &[&str]) -> Result<(), EngineError> {
    let wanted: Vec<String> = members.iter().map(|m| slot_name(m)).collect();
    target
        .with_session("replication slots", async |session| {
            let during = "replication slots";
            // A standby's slots only wait for its promotion: one that lost its WAL is made
            // again. A primary's lost slot stays, as the sign that its member needs a copy.
            target
                .execute(
                    session,
                    during,
                    "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE pg_is_in_recovery() AND slot_type = 'physical' AND slot_name LIKE 'replicant\\_%' AND wal_status = 'lost' AND NOT active",
                )
                .await?;
            for slot in &wanted {
                target
                    .execute(
                        session,
                        during,
                        &format!(
                            "SELECT pg_create_physical_replication_slot({0}, true) WHERE NOT EXISTS (SELECT FROM pg_replication_slots WHERE slot_name = {0})",
                            literal(slot)
                        ),
                    )
                    .await?;
            }
            let list = wanted.iter().map(|s| literal(s)).collect::<Vec<_>>().join(", ");
            let keep = if list.is_empty() { "''".to_string() } else { list };
            target
                .execute(
                    session,
                    during,
                    &format!(
                        "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_type = 'physical' AND slot_name LIKE 'replicant\\_%' AND slot_name NOT IN ({keep}) AND NOT active"
                    ),
                )
                .await?;
            // On a standby: nothing streams through these slots, so move them on by hand.
            target
                .execute(
                    session,
                    during,
                    "SELECT pg_replication_slot_advance(slot_name, pg_last_wal_replay_lsn()) FROM pg_replication_slots WHERE pg_is_in_recovery() AND slot_type = 'physical' AND slot_name LIKE 'replicant\\_%' AND NOT active AND wal_status IS DISTINCT FROM 'lost' AND pg_last_wal_replay_lsn() IS NOT NULL AND (restart_lsn IS NULL OR restart_lsn < pg_last_wal_replay_lsn())",
                )
                .await
        })
        .await
}

/// Drop `member`'s slot if it has lost the WAL it kept (and nobody streams through it), so that
/// a new one, made before a full copy of the member, keeps WAL from the copy on.
pub async fn renew_lost_slot(target: Target<'_>, member: &str) -> Result<(), EngineError> {
    target
        .with_session("renew a lost replication slot", async |session| {
            target
                .execute(
                    session,
                    "renew a lost replication slot",
                    &format!(
                        "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = {} AND wal_status = 'lost' AND NOT active",
                        literal(&slot_name(member))
                    ),
                )
                .await
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::{conninfo_value, literal, quorum};

    #[test]
    fn quorum_names_are_quoted_identifiers() {
        assert_eq!(
            quorum(1, &["orders-b", "orders-c"]),
            "ANY 1 (\"orders-b\", \"orders-c\")"
        );
    }

    #[test]
    fn values_are_quoted_for_sql_and_for_libpq() {
        assert_eq!(literal("it's"), "'it''s'");
        assert_eq!(literal("a\\b"), "'a\\b'");
        assert_eq!(conninfo_value("pa'ss\\"), "'pa\\'ss\\\\'");
    }
}
