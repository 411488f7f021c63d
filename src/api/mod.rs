//! The resources users write (API group `replicant.dev`, version `v1alpha1`); types only, no I/O.

pub mod backup;
pub mod bootstrap;
pub mod cluster;
pub mod duration;
pub mod on_demand_backup;
pub mod quantity;
pub mod schedule;
pub mod virtual_name;

pub use backup::{
    ArchiveGap, ArchivePolicy, ArchiveStatus, AzureCredentials, AzureRepository, BackupFailure,
    BackupPolicy, BackupSource, BackupStatus, BackupSummary, BaseBackupPolicy, Compression,
    DirectoryRepository, DrillPolicy, DrillSummary, GcsCredentials, GcsRepository, MemberArchive,
    PruneSummary, RecoverableWindow, Repository, RequestOutcome, RetentionPolicy, RunningBackup,
    S3Credentials, S3Repository, SecretName,
};
pub use bootstrap::{Bootstrap, Recovery, RecoverySource, RecoveryTargetSpec};
pub use cluster::{
    CopySource, CredentialsRef, EngineKind, FailoverMode, FailoverPolicy, Fork, Member,
    MemberStatus, OperationKind, Outcome, PromotionRecord, ReplicationCluster,
    ReplicationClusterSpec, ReplicationClusterStatus, ReplicationMode, ReplicationPolicy, Role,
    SecretKeyRef, TokenRef, Topology,
};
pub use duration::Duration;
pub use on_demand_backup::{Backup, BackupPhase, BackupSpec, OnDemandBackupStatus};
pub use quantity::{ByteSize, human_bytes};
pub use virtual_name::{
    Balancing, Fallback, ProxyMode, Target, VirtualName, VirtualNameSpec, VirtualNameStatus,
};

/// A time as status writes it: RFC 3339 in UTC, whole seconds ("2026-12-03T19:02:17Z").
pub fn status_time(t: jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// API group of every replicant resource.
pub const GROUP: &str = "replicant.dev";
/// The one served version.
pub const VERSION: &str = "v1alpha1";
