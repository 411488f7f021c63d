//! Continuous WAL archiving and base backups, as the controller and a node agent speak of
//! them: the settings the controller gives each agent (`POST /v1/archive`), a request for a
//! base backup (`POST /v1/backup`), and what an agent reports of both in `/v1/status`. The
//! work itself runs on the host, without the controller.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{api::Repository, repository::StoreKey};

/// Where and how a host archives its WAL. Holds a secret (the store's key): the agent keeps it
/// in a file only its user reads, and reports only its fingerprint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArchiveSettings {
    /// The cluster's namespace and name: the repository's top directories.
    pub namespace: String,
    pub cluster: String,
    pub repository: Repository,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<StoreKey>,
    /// Finished WAL the host keeps waiting for the repository, in bytes, before it lets the
    /// oldest go and declares the gap.
    pub pending_limit: u64,
    /// How base backups are compressed (WAL is always zstd).
    #[serde(default)]
    pub compression: crate::repository::codec::Codec,
}

impl ArchiveSettings {
    /// The settings for `repository` of cluster `namespace/cluster`, with its key from `keys`
    /// and the archive's bound from `spec` (or its default).
    pub fn for_repository(
        namespace: &str,
        cluster: &str,
        spec: &crate::api::ReplicationClusterSpec,
        repository: &Repository,
        keys: &std::collections::BTreeMap<String, StoreKey>,
    ) -> Self {
        let pending_limit = spec
            .backup
            .as_ref()
            .and_then(|b| b.archive.as_ref())
            .map_or(crate::api::ArchivePolicy::DEFAULT_PENDING_LIMIT, |a| {
                a.pending_limit.bytes()
            });
        Self {
            namespace: namespace.to_string(),
            cluster: cluster.to_string(),
            repository: repository.clone(),
            key: keys.get(&repository.name).cloned(),
            pending_limit,
            compression: spec
                .backup
                .as_ref()
                .map(|b| b.compression.into())
                .unwrap_or_default(),
        }
    }

    /// A digest of the settings, key included, so that a changed key is sent again: what the
    /// agent reports, and the controller compares with its own.
    pub fn fingerprint(&self) -> String {
        let text = serde_json::to_vec(self).unwrap_or_default();
        Sha256::digest(&text)
            .iter()
            .take(8)
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

/// The last WAL file a host archived.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArchivedFile {
    pub file: String,
    pub at: jiff::Timestamp,
}

/// Why a host's archiver failed last.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArchiveFailure {
    pub file: String,
    pub at: jiff::Timestamp,
    pub message: String,
}

/// WAL a host let go unarchived, because the repository could not take it before the host's
/// bound was reached: recovery cannot cross it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArchiveGap {
    /// The first and last WAL files let go, inclusive.
    pub first: String,
    pub last: String,
    pub declared_at: jiff::Timestamp,
}

/// At most this many gaps are kept; older ones are counted, not listed.
pub const MAX_GAPS_KEPT: usize = 16;

/// What the archiver on a host has done: written by each run of `archive_command`, read by the
/// agent for its status.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArchiveRecord {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_archived: Option<ArchivedFile>,
    /// Files stored since the record began.
    #[serde(default)]
    pub archived_count: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<ArchiveFailure>,
    /// When the current run of failures began; none while archiving succeeds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failing_since: Option<jiff::Timestamp>,
    /// Another content was found under a file's name: archiving from this host stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conflict: Option<ArchiveFailure>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gaps: Vec<ArchiveGap>,
    /// Gaps declared in all, listed or not.
    #[serde(default)]
    pub gap_count: u64,
}

/// An agent's report of its archiver.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArchiveReport {
    /// The fingerprint of the settings the host archives with; none when it has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settings: Option<String>,
    /// Finished WAL waiting to be archived, in bytes.
    #[serde(default)]
    pub pending_bytes: u64,
    /// When the oldest waiting file was finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oldest_pending: Option<jiff::Timestamp>,
    #[serde(default)]
    pub record: ArchiveRecord,
}

/// A request for a base backup of the host's postgres.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackupRequest {
    /// Where it goes: the cluster's repository and key.
    pub settings: ArchiveSettings,
    /// The member the host serves, for the catalog.
    pub member: String,
    /// The on-demand request it answers (a `Backup` object's name), recorded in the catalog.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
}

/// How the host's last base backup ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackupOutcome {
    pub finished_at: jiff::Timestamp,
    /// The on-demand request it answered, if one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<crate::repository::base::BaseBackup>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// An agent's report of its base backups.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackupReport {
    /// When the backup under way began, if one is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running_since: Option<jiff::Timestamp>,
    /// The on-demand request the backup under way answers, if one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running_request: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<BackupOutcome>,
}

/// A request for a restore drill on the host: the latest base backup of the repository in
/// `settings`, restored and checked in a scratch directory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DrillRequest {
    pub settings: ArchiveSettings,
    /// The member the host serves, for the record.
    pub member: String,
}

/// An agent's report of its restore drills.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DrillReport {
    /// When the drill under way began, if one is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running_since: Option<jiff::Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<crate::repository::drill::DrillRecord>,
}

/// Where recovery stops.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RecoveryTarget {
    /// The end of the archived WAL.
    Latest,
    Time(jiff::Timestamp),
    Lsn(u64),
    /// Just after this transaction commits.
    Xid(u64),
    /// A restore point made with `pg_create_restore_point`.
    Name(String),
}

impl std::fmt::Display for RecoveryTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Latest => write!(f, "the latest archived WAL"),
            Self::Time(t) => write!(f, "time {}", t.strftime("%Y-%m-%dT%H:%M:%S%.fZ")),
            Self::Lsn(lsn) => write!(f, "position {}", crate::repository::window::lsn_text(*lsn)),
            Self::Xid(xid) => write!(f, "transaction {xid}"),
            Self::Name(name) => write!(f, "restore point {name:?}"),
        }
    }
}

impl RecoveryTarget {
    /// The LSN form PostgreSQL takes, from text (`0/3000060`).
    pub fn lsn(text: &str) -> Option<Self> {
        crate::repository::base::parse_lsn(text).map(Self::Lsn)
    }

    /// The `recovery_target_*` setting, if any.
    pub fn setting(&self) -> Option<(&'static str, String)> {
        match self {
            Self::Latest => None,
            Self::Time(t) => Some((
                "recovery_target_time",
                t.strftime("%Y-%m-%d %H:%M:%S%.f+00").to_string(),
            )),
            Self::Lsn(lsn) => Some((
                "recovery_target_lsn",
                crate::repository::window::lsn_text(*lsn),
            )),
            Self::Xid(xid) => Some(("recovery_target_xid", xid.to_string())),
            Self::Name(name) => Some(("recovery_target_name", name.clone())),
        }
    }

    /// The target `spec.bootstrap.recovery.target` names (the latest when none), or why it
    /// names none: the field and what is wrong with it.
    pub fn from_spec(
        spec: Option<&crate::api::RecoveryTargetSpec>,
    ) -> Result<Self, (&'static str, String)> {
        use crate::api::bootstrap::TargetPoint;
        let Some(spec) = spec else {
            return Ok(Self::Latest);
        };
        Ok(match spec.point()? {
            TargetPoint::Time(t) => Self::Time(t),
            TargetPoint::Lsn(lsn) => Self::Lsn(lsn),
            TargetPoint::Xid(xid) => Self::Xid(xid),
            TargetPoint::Name(name) => Self::Name(name),
        })
    }
}

/// A recovery asked of the desired primary's agent, in place of a new, empty data set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecoveryRequest {
    /// The source's repository and key, and the source cluster's names in it.
    pub settings: ArchiveSettings,
    pub target: RecoveryTarget,
}
