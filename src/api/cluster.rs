//! The `ReplicationCluster` resource: one replicated data set, its members and its failover policy.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::{
    backup::{ArchiveStatus, BackupPolicy, BackupStatus},
    duration::Duration,
    quantity::ByteSize,
};

/// One replicated data set: its members, the desired primary, and how failover may happen.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "replicant.dev",
    version = "v1alpha1",
    kind = "ReplicationCluster",
    namespaced,
    status = "ReplicationClusterStatus",
    shortname = "rcluster",
    category = "replicant",
    printcolumn = r#"{"name":"Engine","type":"string","jsonPath":".spec.engine"}"#,
    printcolumn = r#"{"name":"Primary","type":"string","description":"The member that is master now","jsonPath":".status.currentPrimary"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","description":"Members replicating as desired / members","jsonPath":".status.readyMembers"}"#,
    printcolumn = r#"{"name":"Epoch","type":"integer","priority":1,"jsonPath":".status.epoch"}"#,
    printcolumn = r#"{"name":"Branch","type":"string","priority":1,"description":"The branch of history the primary is on (a PostgreSQL timeline)","jsonPath":".status.branch"}"#,
    printcolumn = r#"{"name":"Position","type":"integer","priority":1,"description":"How far the primary's durable data reaches","jsonPath":".status.position"}"#,
    printcolumn = r#"{"name":"Status","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[x_kube(
    validation = Rule::new("self.members.exists(m, m.name == self.primary)").message("spec.primary must name one of spec.members"),
    validation = Rule::new("self.members.all(m, m.name != self.primary || m.priority > 0)").message("the desired primary must have priority > 0"),
    validation = Rule::new("!has(self.failover) || !has(self.failover.standby) || self.members.exists(m, m.name == self.failover.standby)").message("spec.failover.standby must name one of spec.members"),
    validation = Rule::new("self.members.all(m, !has(m.upstream) || self.members.exists(n, n.name == m.upstream))").message("every member upstream must name one of spec.members"),
    validation = Rule::new("self.members.all(m, !has(m.upstream) || m.upstream != m.name)").message("a member cannot replicate from itself"),
    validation = Rule::new("self.members.all(m, !has(m.upstream) || m.name != self.primary)").message("the desired primary cannot have an upstream"),
    validation = Rule::new("!has(self.failover) || !has(self.failover.refusedAfter) || !has(self.failover.detectAfter) || duration(self.failover.refusedAfter) <= duration(self.failover.detectAfter)").message("spec.failover.refusedAfter must not exceed spec.failover.detectAfter")
)]
#[serde(rename_all = "camelCase")]
pub struct ReplicationClusterSpec {
    /// The database engine of every member.
    pub engine: EngineKind,
    /// The servers of the data set. `name` is the physical name administrators use.
    #[schemars(length(min = 1, max = 64))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub members: Vec<Member>,
    /// The member that should be master. Changing it is a planned switchover.
    #[schemars(length(min = 1, max = 63))]
    pub primary: String,
    /// When and how the controller may promote another member.
    #[serde(default)]
    pub failover: FailoverPolicy,
    /// How writes reach the replicas.
    #[serde(default)]
    pub replication: ReplicationPolicy,
    /// Where the password for the members is kept. Never written inline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<CredentialsRef>,
    /// Where the bearer token for the members' node agents (`replicant node`) is kept: exactly
    /// one of `secretRef`, `tokenFile`, `tokenEnv`. Needed when a member names an agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_token: Option<TokenRef>,
    /// The certificate authority the members' node agents present certificates from, when
    /// they serve their API over TLS (`replicant node --tls-cert/--tls-key`): exactly one of
    /// `caSecretRef`, `caFile`. The controller then speaks only TLS to them, verifying each
    /// agent's certificate against it and the agent's address; without it, plain HTTP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_tls: Option<AgentTls>,
    /// Where previous versions of the data are kept: repositories, and continuous WAL
    /// archiving to one of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupPolicy>,
    /// Where the data set comes from when no member holds one yet: recovered from another
    /// cluster's backups, instead of a new, empty one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrap: Option<super::bootstrap::Bootstrap>,
    /// Observe and report only; take no action.
    #[serde(default)]
    pub suspend: bool,
}

/// Which database the cluster runs.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    Redis,
    Postgres,
}

/// One server of the data set.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Member {
    /// Physical name, unique in the cluster (a DNS label).
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,
    /// `host:port` the controller and virtual names connect to.
    #[schemars(
        length(min = 3, max = 260),
        regex(pattern = r"^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9._-]+):[0-9]{1,5}$")
    )]
    pub address: String,
    /// Promotion priority: higher wins ties; 0 means never promoted.
    #[serde(default = "default_priority")]
    #[schemars(range(min = 0, max = 1000))]
    pub priority: u32,
    /// Replicate from this member instead of the primary (it then acts as a repli-master).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub upstream: Option<String>,
    /// `host:port` of the member's node agent (`replicant node`, PostgreSQL only). With one,
    /// replicant copies, rewinds, restarts and stops the member itself, and the member's
    /// postgres stops on its own when the controller's lease lapses. Without one the member
    /// is adopt-only: failover works over SQL, and what needs the host is left to a person.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 3, max = 260),
        regex(pattern = r"^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9._-]+):[0-9]{1,5}$")
    )]
    pub agent: Option<String>,
    /// Failure domain (a label value, such as `eu-west-1a`). Zones shape the replication
    /// topology (`replication.topology`), order failover candidates
    /// (`failover.preferredZones`) and keep reads in the client's zone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub zone: Option<String>,
}

fn default_priority() -> u32 {
    1
}

#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum FailoverMode {
    /// Promote a replica on its own once the master is unreachable for `detectAfter`.
    #[default]
    Automatic,
    /// Only report; a person triggers failover by changing `spec.primary`.
    Manual,
}

/// When and how the controller may promote another member.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FailoverPolicy {
    #[serde(default)]
    pub mode: FailoverMode,
    /// The secondary station: tried first when the master fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub standby: Option<String>,
    /// How long the master must stay unreachable before a failover starts ("1s", "500ms").
    #[serde(default = "default_detect_after")]
    pub detect_after: Duration,
    /// How long the master's port must refuse connections before a failover starts: a refusal
    /// means no process is listening, stronger evidence than silence. At most `detectAfter`;
    /// set it equal to `detectAfter` to ride out restarts without failing over. Default: 1s,
    /// or `detectAfter` when that is shorter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused_after: Option<Duration>,
    /// Recovery point objective: a replica further behind than this is never promoted.
    #[serde(default = "default_max_lag")]
    pub max_lag: ByteSize,
    /// No second automatic failover within this long of the last promotion (flap protection).
    #[serde(default = "default_cooldown")]
    pub cooldown: Duration,
    /// Zones to fail over into, most preferred first. Among the candidates that pass every
    /// gate (reachable, synced, within `maxLag`, and in sync mode holding every acknowledged
    /// write), one in an earlier zone wins before position, priority and name are compared;
    /// zones not listed come after the listed ones. The standby is still tried first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), inner(length(min = 1, max = 63)))]
    pub preferred_zones: Vec<String>,
}

impl Default for FailoverPolicy {
    fn default() -> Self {
        Self {
            mode: FailoverMode::default(),
            standby: None,
            detect_after: default_detect_after(),
            refused_after: None,
            max_lag: default_max_lag(),
            cooldown: default_cooldown(),
            preferred_zones: Vec::new(),
        }
    }
}

fn default_detect_after() -> Duration {
    std::time::Duration::from_secs(1).into()
}

impl FailoverPolicy {
    /// `refusedAfter`, or its default: 1s capped at `detectAfter`.
    pub fn refused_after(&self) -> std::time::Duration {
        let detect: std::time::Duration = self.detect_after.into();
        self.refused_after
            .map(Into::into)
            .unwrap_or(std::time::Duration::from_secs(1))
            .min(detect)
    }
}

fn default_cooldown() -> Duration {
    std::time::Duration::from_secs(60).into()
}

fn default_max_lag() -> ByteSize {
    "1Mi".parse().expect("a valid size")
}

#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum ReplicationMode {
    /// The master acknowledges writes before replicas have them; a failover may lose the tail.
    #[default]
    Async,
    /// A write is acknowledged only once `minSyncReplicas` replicas have it.
    Sync,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplicationPolicy {
    #[serde(default)]
    pub mode: ReplicationMode,
    /// In sync mode, how many replicas must hold a write before it is acknowledged.
    #[serde(default = "default_min_sync_replicas")]
    #[schemars(range(min = 1, max = 63))]
    pub min_sync_replicas: u32,
    /// Who replicates from whom. `zoneAware`: in each zone other than the primary's, one
    /// replica (the zone's gateway) streams from the primary and the zone's others stream from
    /// it. `direct`: every replica streams from the primary. An explicit
    /// `members[].upstream` wins over either. Default: `zoneAware` when members carry zones,
    /// else `direct`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topology: Option<Topology>,
    /// Where a member that holds no data gets its copy (PostgreSQL, members with agents).
    #[serde(default)]
    pub copy_from: CopySource,
}

impl Default for ReplicationPolicy {
    fn default() -> Self {
        Self {
            mode: ReplicationMode::Async,
            min_sync_replicas: default_min_sync_replicas(),
            topology: None,
            copy_from: CopySource::default(),
        }
    }
}

/// Where a new replica's data comes from.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
pub enum CopySource {
    /// A copy of the member it will follow (`pg_basebackup`), read from that member's disks.
    #[default]
    Upstream,
    /// The newest base backup in the cluster's repository, replayed from the archived WAL, then
    /// streaming from the member it follows: nothing is read from another member's disks but
    /// the WAL not archived yet. From the upstream while the repository holds no backup of the
    /// data set. Needs `spec.backup.archive`.
    Backup,
}

/// Who replicates from whom, apart from explicit upstreams.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Topology {
    /// One replica per non-primary zone streams across zones; the zone's others follow it.
    ZoneAware,
    /// Every replica streams from the primary.
    Direct,
}

impl ReplicationClusterSpec {
    /// The S3 repositories whose credentials the spec names: each with its field path
    /// (`spec.backup.repositories[0].s3.credentials`).
    pub fn s3_credentials(
        &self,
    ) -> impl Iterator<Item = (String, &crate::api::Repository, &crate::api::S3Credentials)> {
        self.repositories()
            .iter()
            .enumerate()
            .filter_map(|(i, repository)| {
                let credentials = repository.s3.as_ref()?.credentials.as_ref()?;
                let path = format!("spec.backup.repositories[{i}].s3.credentials");
                Some((path, repository, credentials))
            })
    }

    /// The Azure repositories whose credentials the spec names: each with its field path
    /// (`spec.backup.repositories[0].azure.credentials`).
    pub fn azure_credentials(
        &self,
    ) -> impl Iterator<
        Item = (
            String,
            &crate::api::Repository,
            &crate::api::AzureCredentials,
        ),
    > {
        self.repositories()
            .iter()
            .enumerate()
            .filter_map(|(i, repository)| {
                let credentials = repository.azure.as_ref()?.credentials.as_ref()?;
                let path = format!("spec.backup.repositories[{i}].azure.credentials");
                Some((path, repository, credentials))
            })
    }

    /// The GCS repositories whose credentials the spec names: each with its field path
    /// (`spec.backup.repositories[0].gcs.credentials`).
    pub fn gcs_credentials(
        &self,
    ) -> impl Iterator<Item = (String, &crate::api::Repository, &crate::api::GcsCredentials)> {
        self.repositories()
            .iter()
            .enumerate()
            .filter_map(|(i, repository)| {
                let credentials = repository.gcs.as_ref()?.credentials.as_ref()?;
                let path = format!("spec.backup.repositories[{i}].gcs.credentials");
                Some((path, repository, credentials))
            })
    }

    /// `backup.repositories`, or none.
    pub fn repositories(&self) -> &[crate::api::Repository] {
        self.backup
            .as_ref()
            .map(|b| b.repositories.as_slice())
            .unwrap_or_default()
    }

    /// Whether replicas cascade within their zones: `replication.topology`, or by default
    /// whether any member carries a zone.
    pub fn zone_aware(&self) -> bool {
        match self.replication.topology {
            Some(Topology::ZoneAware) => true,
            Some(Topology::Direct) => false,
            None => self.members.iter().any(|m| m.zone.is_some()),
        }
    }
}

fn default_min_sync_replicas() -> u32 {
    1
}

/// Where the members' password comes from: exactly one of `secretRef`, `passwordFile`, `passwordEnv`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CredentialsRef {
    /// User name for engines with ACLs; omitted means the default user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub username: Option<String>,
    /// A Kubernetes Secret in the cluster's namespace (operator mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretKeyRef>,
    /// A file holding the password (standalone mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 4096))]
    pub password_file: Option<String>,
    /// An environment variable holding the password (standalone mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub password_env: Option<String>,
}

/// Where a bearer token comes from: exactly one of `secretRef`, `tokenFile`, `tokenEnv`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenRef {
    /// A Kubernetes Secret in the cluster's namespace (operator mode); its key defaults to
    /// `password`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretKeyRef>,
    /// A file holding the token (standalone mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 4096))]
    pub token_file: Option<String>,
    /// An environment variable holding the token (standalone mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub token_env: Option<String>,
}

/// Where the CA bundle (PEM) for the node agents' certificates is kept.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentTls {
    /// A Kubernetes Secret in the cluster's namespace (operator mode); its key defaults to
    /// `ca.crt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<CertificateKeyRef>,
    /// A file holding the bundle (standalone mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 4096))]
    pub ca_file: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CertificateKeyRef {
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    #[serde(default = "default_certificate_key")]
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

fn default_certificate_key() -> String {
    "ca.crt".to_string()
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    #[serde(default = "default_password_key")]
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

fn default_password_key() -> String {
    "password".to_string()
}

/// What the controller observed and did, computed from what was actually applied.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplicationClusterStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The member that is master now (may differ from `spec.primary` after a failover).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_primary: Option<String>,
    /// Bumped on every promotion.
    #[serde(default)]
    pub epoch: u64,
    /// "ready/total": members reachable and replicating as desired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_members: Option<String>,
    /// The branch of history the primary is on (a PostgreSQL timeline with where it began, a
    /// Redis replication ID), as last observed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// How far the primary's durable data reaches (a WAL position in bytes, a Redis offset),
    /// as last observed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<MemberStatus>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// The most recent failovers and switchovers, newest last.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<PromotionRecord>,
    /// Continuous WAL archiving, when `spec.backup.archive` asks for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive: Option<ArchiveStatus>,
    /// Base backups and the recoverable window, when the cluster has a repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupStatus>,
}

/// A member as last observed.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemberStatus {
    pub name: String,
    pub reachable: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    /// Its zone, from the spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// Whom it should replicate from, and why ("orders-d follows orders-c: gateway of zone
    /// eu-west-1b").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    pub placement: Option<String>,
    /// Durable position: how far into the replication stream it holds data it keeps across a
    /// crash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// Applied position, what readers see, when it differs from `offset`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied: Option<u64>,
    /// The branch of history its data is on (a PostgreSQL timeline, a Redis replication ID).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub branch: Option<String>,
    /// Bytes of durable position behind the current primary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_up: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_only: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// One completed or abandoned change of master.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PromotionRecord {
    pub kind: OperationKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    pub to: String,
    pub epoch: u64,
    /// RFC 3339 time the operation started.
    pub started_at: String,
    /// RFC 3339 time the operation ended.
    pub finished_at: String,
    pub outcome: Outcome,
    pub reason: String,
    /// The branch of history the promoted member started (a PostgreSQL timeline, a Redis
    /// replication ID).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// Where it left the branch it was on: data on that branch past this point was never
    /// part of the new one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fork: Option<Fork>,
}

/// Replication role a server reports.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Master,
    Replica,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum OperationKind {
    /// Unplanned: the master failed.
    Failover,
    /// Planned: `spec.primary` changed while the master was healthy.
    Switchover,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Outcome {
    Succeeded,
    Aborted,
}

/// History left `branch` at position `at`: data on that branch past `at` is not in it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Fork {
    pub branch: String,
    pub at: u64,
}
