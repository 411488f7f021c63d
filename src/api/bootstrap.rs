//! `spec.bootstrap`: where a new cluster's first data set comes from, when not from `initdb`.

use serde::{Deserialize, Serialize};

/// How the cluster's data set is made when no member holds one yet. Read only then: once a
/// member holds data, changing it changes nothing.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Bootstrap {
    /// Recover the data set from another cluster's base backups and archived WAL (PostgreSQL),
    /// instead of creating an empty one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery: Option<Recovery>,
}

/// Point-in-time recovery into this cluster: the desired primary's agent restores the newest
/// base backup the target needs, replays archived WAL to the target, and promotes; the other
/// members are then copied from it, as after `initdb`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Recovery {
    /// The repository (one of `spec.backup.repositories`) holding the source's backups.
    #[schemars(length(min = 1, max = 63))]
    pub repository: String,
    /// The cluster whose backups are restored.
    pub source: RecoverySource,
    /// Where replay stops; absent: at the end of the archived WAL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<RecoveryTargetSpec>,
}

/// The cluster a recovery reads from, by the names its repository is laid out by.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecoverySource {
    #[schemars(length(min = 1, max = 253))]
    pub cluster: String,
    /// Default: this cluster's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub namespace: Option<String>,
}

/// Exactly one point to recover to.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecoveryTargetSpec {
    /// A time, RFC 3339 ("2026-12-01T09:59:00Z"): the last transaction committed at or before
    /// it is the last one kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub time: Option<String>,
    /// A WAL position ("0/3000060").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 3, max = 17))]
    pub lsn: Option<String>,
    /// Just after this transaction commits. Where it lies is known only by replaying, from
    /// the oldest backup of the newest recoverable stretch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xid: Option<u64>,
    /// A restore point made with `pg_create_restore_point`; found by replaying, as `xid`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub name: Option<String>,
}

/// A checked target: which one of the four, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TargetPoint {
    Time(jiff::Timestamp),
    Lsn(u64),
    Xid(u64),
    Name(String),
}

impl RecoveryTargetSpec {
    /// The one point this names, or the field (relative to `target`) and what is wrong.
    pub fn point(&self) -> Result<TargetPoint, (&'static str, String)> {
        let set = [
            self.time.is_some(),
            self.lsn.is_some(),
            self.xid.is_some(),
            self.name.is_some(),
        ];
        if set.iter().filter(|s| **s).count() != 1 {
            return Err(("", "set exactly one of time, lsn, xid, name".into()));
        }
        if let Some(time) = &self.time {
            return time.parse().map(TargetPoint::Time).map_err(|_| {
                (
                    ".time",
                    format!("{time:?} is not an RFC 3339 time (\"2026-12-01T09:59:00Z\")"),
                )
            });
        }
        if let Some(lsn) = &self.lsn {
            return parse_lsn(lsn).map(TargetPoint::Lsn).ok_or_else(|| {
                (
                    ".lsn",
                    format!("{lsn:?} is not a WAL position (\"0/3000060\")"),
                )
            });
        }
        if let Some(xid) = self.xid {
            return Ok(TargetPoint::Xid(xid));
        }
        Ok(TargetPoint::Name(self.name.clone().unwrap_or_default()))
    }
}

/// A WAL position as PostgreSQL prints it (`0/2000028`).
pub fn parse_lsn(text: &str) -> Option<u64> {
    let (high, low) = text.trim().split_once('/')?;
    Some((u64::from_str_radix(high, 16).ok()? << 32) | u64::from_str_radix(low, 16).ok()?)
}
