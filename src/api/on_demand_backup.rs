//! The `Backup` resource: one base backup of a cluster, asked for by applying it
//! (`kubectl apply`, or a file beside the specs), and what became of it.

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One base backup, taken once: applying it asks for it, its status says how it went.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "replicant.dev",
    version = "v1alpha1",
    kind = "Backup",
    namespaced,
    status = "OnDemandBackupStatus",
    shortname = "rbackup",
    category = "replicant",
    printcolumn = r#"{"name":"Cluster","type":"string","jsonPath":".spec.cluster"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Backup","type":"string","jsonPath":".status.backupId"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct BackupSpec {
    /// The `ReplicationCluster` (same namespace) to back up; it needs `spec.backup`.
    #[schemars(length(min = 1, max = 253))]
    pub cluster: String,
    /// The member to read it from; default: as `spec.backup.base.source` says (a streaming
    /// standby first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub member: Option<String>,
}

/// How an on-demand backup went.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OnDemandBackupStatus {
    pub phase: BackupPhase,
    /// What happened, in words.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// The repository and the backup's id in its catalog, once complete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored_bytes: Option<u64>,
}

/// Where an on-demand backup stands. `Completed` and `Failed` are final: a backup is asked
/// for once; apply a new object for another.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum BackupPhase {
    /// Waiting for a member to read it from, or for the backup under way to end.
    #[default]
    Pending,
    Running,
    Completed,
    Failed,
}

impl BackupPhase {
    pub fn is_final(self) -> bool {
        matches!(self, Self::Completed | Self::Failed)
    }
}
