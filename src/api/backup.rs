//! `spec.backup`: where a cluster's previous versions are kept, and how WAL reaches them.

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

use super::{duration::Duration, quantity::ByteSize};

/// Where previous versions of the data set are kept, and how they get there.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupPolicy {
    /// The repositories backups and WAL go to, by name.
    #[schemars(length(min = 1, max = 8))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub repositories: Vec<Repository>,
    /// Continuous WAL archiving (PostgreSQL): every member's node agent sends each finished
    /// WAL segment and timeline history file to a repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive: Option<ArchivePolicy>,
    /// Backups the controller takes by itself: PostgreSQL base backups (on a schedule, and as
    /// soon as the repository is back after WAL was let go unarchived), Redis snapshots (on a
    /// schedule, read by the controller over the replication protocol).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<BaseBackupPolicy>,
    /// Restore drills (PostgreSQL): the latest base backup restored on a member's host into a
    /// scratch directory, replayed to the newest archived WAL, checked with `pg_amcheck`, and
    /// timed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drill: Option<DrillPolicy>,
    /// Which base backups and WAL are kept, computed from the repository's own catalog: the
    /// controller lets go the rest as the catalog shows it expired (after each backup, say),
    /// and `replicant backup prune [--dry-run]` does the same on demand.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<RetentionPolicy>,
    /// How base backups and Redis snapshots are compressed as they stream into the
    /// repository, scheduled and on demand alike. WAL is always zstd.
    #[serde(default, skip_serializing_if = "is_default")]
    pub compression: Compression,
}

fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

/// A compression format for base backups and snapshots. Each backup records its own, so
/// changing it affects only backups taken after.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
pub enum Compression {
    /// zstd at level 3, on every core of the host that takes the backup: small, and fast
    /// with cores to spare.
    #[default]
    Zstd,
    /// lz4 on one core: for hosts with no cores to spare while a backup runs; several times
    /// as large in the repository.
    Lz4,
}

/// When and from where the controller takes base backups.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BaseBackupPolicy {
    /// When, as a cron expression in UTC: five fields (minute hour day-of-month month
    /// day-of-week), or six with seconds first ("0 3 * * *": every day at 03:00). A cluster
    /// with no base backup yet gets one at once.
    #[schemars(length(min = 1, max = 128))]
    pub schedule: String,
    /// The repository backups go to; default: the one WAL is archived to, else the first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub repository: Option<String>,
    /// Which member a backup is read from.
    #[serde(default)]
    pub source: BackupSource,
}

/// When the controller runs restore drills.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DrillPolicy {
    /// When, as a cron expression in UTC ("0 5 * * 0": Sundays at 05:00). The first drill
    /// runs as soon as there is a base backup. It runs on a streaming standby's host (the
    /// primary's when none streams), in a directory beside its agent's state: room for one
    /// more copy of the data set is needed there while it runs.
    #[schemars(length(min = 1, max = 128))]
    pub schedule: String,
}

/// Which member a scheduled base backup is read from.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
pub enum BackupSource {
    /// A streaming standby (with a node agent, for PostgreSQL), the least behind; the primary
    /// when none qualifies.
    #[default]
    PreferStandby,
    /// Only a streaming standby: no backup while none qualifies (status says why).
    Standby,
    /// Always the primary.
    Primary,
}

/// Which base backups and WAL a repository keeps.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetentionPolicy {
    /// Every point this far back stays recoverable ("168h"): the newest backup older than it
    /// stays, with everything after it.
    #[serde(default = "default_retention_window")]
    pub window: Duration,
    /// The newest this many base backups stay, whatever their age.
    #[serde(default = "default_min_full_backups")]
    #[schemars(range(min = 1, max = 1000))]
    pub min_full_backups: u32,
}

fn default_retention_window() -> Duration {
    std::time::Duration::from_secs(7 * 24 * 3600).into()
}

fn default_min_full_backups() -> u32 {
    2
}

/// One place previous versions are kept: exactly one of `directory`, `s3`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Repository {
    /// How the rest of the spec refers to it (a DNS label).
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,
    /// A directory on each database host (a mounted volume, or a local disk): the node
    /// agent of each member writes there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub directory: Option<DirectoryRepository>,
    /// A bucket of an S3-compatible object store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Repository>,
    /// A container of Azure Blob Storage (or a service that speaks its API, such as Azurite).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub azure: Option<AzureRepository>,
    /// A bucket of Google Cloud Storage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gcs: Option<GcsRepository>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GcsRepository {
    #[schemars(length(min = 3, max = 222))]
    pub bucket: String,
    /// Where in the bucket the repository starts ("prod/eu"); default: the bucket's root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub prefix: Option<String>,
    /// The service's URL, for one other than Google's own; default:
    /// `https://storage.googleapis.com`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048))]
    pub endpoint: Option<String>,
    /// A service account's key (its JSON): exactly one of `secretRef`,
    /// `serviceAccountKeyFile`, `serviceAccountKeyEnv`. Omitted: the host's own
    /// (`GOOGLE_APPLICATION_CREDENTIALS`, the metadata server, a workload identity).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<GcsCredentials>,
}

/// Where a Google service account's key is kept. Never written inline.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GcsCredentials {
    /// A Kubernetes Secret in the cluster's namespace with the key `serviceAccountKey`
    /// (operator mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretName>,
    /// A file holding the key's JSON (standalone mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 4096))]
    pub service_account_key_file: Option<String>,
    /// An environment variable holding the key's JSON (standalone mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub service_account_key_env: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AzureRepository {
    /// The storage account.
    #[schemars(length(min = 3, max = 24))]
    pub account: String,
    #[schemars(length(min = 3, max = 63))]
    pub container: String,
    /// Where in the container the repository starts ("prod/eu"); default: its root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub prefix: Option<String>,
    /// The Blob service's URL, account included, for a service other than Azure's own
    /// ("http://127.0.0.1:10000/devstoreaccount1"); default:
    /// `https://<account>.blob.core.windows.net`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048))]
    pub endpoint: Option<String>,
    /// The account's access key: exactly one of `secretRef`, `accountKeyFile`,
    /// `accountKeyEnv`. Omitted: the host's own identity (`AZURE_*` environment, a managed
    /// or workload identity).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<AzureCredentials>,
}

/// Where an Azure storage account's access key is kept. Never written inline.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AzureCredentials {
    /// A Kubernetes Secret in the cluster's namespace with the key `accountKey` (operator
    /// mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretName>,
    /// A file holding the key (standalone mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 4096))]
    pub account_key_file: Option<String>,
    /// An environment variable holding the key (standalone mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub account_key_env: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DirectoryRepository {
    /// An absolute path on the database hosts.
    #[schemars(length(min = 1, max = 4096))]
    pub path: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct S3Repository {
    #[schemars(length(min = 3, max = 63))]
    pub bucket: String,
    /// Where in the bucket the repository starts ("prod/eu"); default: the bucket's root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub prefix: Option<String>,
    /// The store's URL, for S3-compatible servers other than AWS ("https://s3.example:9000").
    /// Path-style requests are used when it is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048))]
    pub endpoint: Option<String>,
    /// Default: `us-east-1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub region: Option<String>,
    /// The access key: exactly one of `secretRef`, the two files, the two environment
    /// variables. Omitted: the host's own (`AWS_*` environment, instance or pod role).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<S3Credentials>,
}

/// Where an S3 access key is kept. Never written inline.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct S3Credentials {
    /// A Kubernetes Secret in the cluster's namespace with the keys `accessKeyId` and
    /// `secretAccessKey` (operator mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretName>,
    /// Files holding the key's id and its secret (standalone mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 4096))]
    pub access_key_id_file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 4096))]
    pub secret_access_key_file: Option<String>,
    /// Environment variables holding the key's id and its secret (standalone mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub access_key_id_env: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub secret_access_key_env: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretName {
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// How WAL leaves the database hosts.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ArchivePolicy {
    /// The repository WAL goes to; default: the first of `repositories`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub repository: Option<String>,
    /// How much finished WAL a host keeps waiting while the repository cannot take it. Past
    /// it, the host lets the oldest go so its disk does not fill: the gap is declared in
    /// status, and point-in-time recovery across it becomes impossible until the next base
    /// backup.
    #[serde(default = "default_pending_limit")]
    pub pending_limit: ByteSize,
    /// From how much waiting WAL on: `ContinuousArchiving` turns False and the alert fires,
    /// well before `pendingLimit`. Default: a quarter of `pendingLimit`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_warning: Option<ByteSize>,
}

impl ArchivePolicy {
    /// `pendingLimit`'s default, in bytes.
    pub const DEFAULT_PENDING_LIMIT: u64 = 4 << 30;

    /// `pendingWarning`, or its default.
    pub fn pending_warning(&self) -> u64 {
        self.pending_warning
            .as_ref()
            .map(ByteSize::bytes)
            .unwrap_or(self.pending_limit.bytes() / 4)
    }
}

impl BackupPolicy {
    /// The repository scheduled base backups go to: the one named, else the archive's, else
    /// the first.
    pub fn base_repository(&self) -> Option<&Repository> {
        match self.base.as_ref().and_then(|b| b.repository.as_ref()) {
            Some(name) => self.repositories.iter().find(|r| &r.name == name),
            None => self.archive_repository().or(self.repositories.first()),
        }
    }

    /// The repository WAL is archived to, if archiving is on and it names one that exists.
    pub fn archive_repository(&self) -> Option<&Repository> {
        let archive = self.archive.as_ref()?;
        match &archive.repository {
            Some(name) => self.repositories.iter().find(|r| &r.name == name),
            None => self.repositories.first(),
        }
    }
}

fn default_pending_limit() -> ByteSize {
    // Written as people write it, for the CRD's default: DEFAULT_PENDING_LIMIT.
    "4Gi".parse().expect("a valid size")
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_default_bound_is_the_constant() {
        assert_eq!(
            super::default_pending_limit().bytes(),
            super::ArchivePolicy::DEFAULT_PENDING_LIMIT
        );
    }
}

/// How WAL archiving goes, per cluster: what `status.archive` shows.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ArchiveStatus {
    /// The repository WAL goes to.
    pub repository: String,
    /// The newest WAL file any member archived, and when (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_archived: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_archived_at: Option<String>,
    /// How far the primary's WAL runs ahead of what is archived, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_bytes: Option<u64>,
    /// How long the oldest WAL file the primary finished has waited to be archived.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_seconds: Option<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<MemberArchive>,
}

/// What one member's host reports of its WAL archiver.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemberArchive {
    pub member: String,
    /// The host archives with the settings the spec gives; false until it has taken them.
    pub configured: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_archived: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_archived_at: Option<String>,
    /// The WAL position the last archived segment ends at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archived_through: Option<u64>,
    /// Finished WAL waiting on the host for the repository, in bytes.
    #[serde(default)]
    pub pending_bytes: u64,
    /// When the oldest waiting file was finished (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oldest_pending_at: Option<String>,
    /// When the current run of failures began; none while archiving succeeds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failing_since: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<String>,
    /// Another content was found under a WAL file's name: archiving from this member stopped
    /// for that timeline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conflict: Option<String>,
    /// WAL let go unarchived (the repository could not take it before the host's bound):
    /// recovery cannot cross these. The newest few; `gapCount` counts them all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gaps: Vec<ArchiveGap>,
    #[serde(default)]
    pub gap_count: u64,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ArchiveGap {
    /// The first and last WAL files let go, inclusive.
    pub first: String,
    pub last: String,
    pub declared_at: String,
}

/// Base backups of a cluster, as the controller last read its repository's catalog: what
/// `status.backup` shows.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupStatus {
    /// The repository base backups go to.
    pub repository: String,
    /// The newest complete base backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_backup: Option<BackupSummary>,
    /// Complete base backups of the cluster's current data set in the repository.
    #[serde(default)]
    pub backup_count: u32,
    /// The points a restore can reach (`replicant restore --time/--lsn`), oldest first: one
    /// stretch, unless WAL was let go unarchived between two base backups.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recoverable: Vec<RecoverableWindow>,
    /// A base backup running now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running: Option<RunningBackup>,
    /// The newest failed attempt, when it came after the newest backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<BackupFailure>,
    /// When the schedule next asks for one (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_scheduled_at: Option<String>,
    /// When the catalog was last read (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_at: Option<String>,
    /// The newest restore drill, and one under way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_drill: Option<DrillSummary>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drill_running: Option<RunningBackup>,
    /// On-demand backups asked for (`Backup` objects) and how each went.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub requests: Vec<RequestOutcome>,
    /// What the controller last let go under `spec.backup.retention`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_prune: Option<PruneSummary>,
}

/// What retention let go, when.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PruneSummary {
    /// When it ended (RFC 3339).
    pub at: String,
    /// The base backups let go, by id, and how many WAL files only they needed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backups: Vec<String>,
    pub wal_files: u64,
    /// Why it stopped short, if it did (it is tried again after 5 minutes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// How a restore drill went.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DrillSummary {
    pub id: String,
    /// The member whose host ran it, and the base backup it restored.
    pub member: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_id: Option<String>,
    pub started_at: String,
    pub finished_at: String,
    /// From the first byte fetched to the restored server accepting writes ("2m5s").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_duration: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_seconds: Option<u64>,
    /// The point the restore reached: where replay ended, and the last replayed commit's time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reached_lsn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reached_at: Option<String>,
    pub passed: bool,
    pub message: String,
}

/// How one on-demand backup went: what its `Backup` object's status shows.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RequestOutcome {
    /// The `Backup` object's name.
    pub name: String,
    pub outcome: super::on_demand_backup::OnDemandBackupStatus,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupSummary {
    pub id: String,
    /// The member it was read from.
    pub member: String,
    pub started_at: String,
    pub finished_at: String,
    /// How long it took ("1m30s").
    pub duration: String,
    /// The data as PostgreSQL sent it, and as stored (compressed), in bytes.
    pub size_bytes: u64,
    pub stored_bytes: u64,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecoverableWindow {
    /// The earliest point: the end of the stretch's oldest base backup (RFC 3339, and as a WAL
    /// position).
    pub earliest: String,
    pub earliest_lsn: String,
    /// The latest point: the end of the WAL archived without a hole after it.
    pub latest: String,
    pub latest_lsn: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunningBackup {
    pub member: String,
    pub since: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupFailure {
    pub member: String,
    pub at: String,
    pub message: String,
}
