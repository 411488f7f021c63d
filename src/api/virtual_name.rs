//! The `VirtualName` resource: a stable client-facing endpoint that follows a cluster's members.

use std::fmt;

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::quantity::ByteSize;

/// A stable endpoint clients use instead of a physical server.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "replicant.dev",
    version = "v1alpha1",
    kind = "VirtualName",
    namespaced,
    status = "VirtualNameStatus",
    shortname = "vn",
    category = "replicant",
    printcolumn = r#"{"name":"Cluster","type":"string","jsonPath":".spec.cluster"}"#,
    printcolumn = r#"{"name":"Target","type":"string","jsonPath":".spec.target"}"#,
    printcolumn = r#"{"name":"Endpoints","type":"string","jsonPath":".status.endpointSummary"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[x_kube(
    validation = Rule::new("!has(self.maxLag) || self.target != 'primary'").message("spec.maxLag applies only to read targets (replicas, any or a member)"),
    validation = Rule::new("!has(self.preferredZones) || self.target == 'replicas' || self.target == 'any'").message("spec.preferredZones applies only to targets replicas and any")
)]
#[serde(rename_all = "camelCase")]
pub struct VirtualNameSpec {
    /// The `ReplicationCluster` (same namespace) this name belongs to.
    #[schemars(length(min = 1, max = 253))]
    pub cluster: String,
    /// `primary`, `replicas`, `any`, or the name of one member (static pinning).
    pub target: Target,
    /// Read targets only: members further behind the primary than this are left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_lag: Option<ByteSize>,
    /// Read targets (`replicas`, `any`): zones to send clients to, most preferred first, when
    /// their own zone has no member that qualifies. A client's own zone always comes first:
    /// on Kubernetes through the EndpointSlices' topology hints, standalone through the
    /// proxy's `--zone`. Where no listed zone has a member either, every qualifying member
    /// serves.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), inner(length(min = 1, max = 63)))]
    pub preferred_zones: Vec<String>,
    /// How connections are spread when several members qualify.
    #[serde(default)]
    pub balancing: Balancing,
    /// Where to send clients when no member qualifies.
    #[serde(default)]
    pub fallback: Fallback,
    /// Standalone mode only: the `host:port` the built-in proxy listens on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 3, max = 260),
        regex(pattern = r"^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9._-]+):[0-9]{1,5}$")
    )]
    pub listen: Option<String>,
    /// Standalone mode only: how the built-in proxy relays. `passthrough` copies bytes and
    /// works for any engine; `multiplex` (Redis only) pipelines the requests of many clients
    /// over one server connection per proxy thread, and gives a client a connection of its own
    /// once it uses connection state (transactions, SELECT, AUTH, blocking commands, pub/sub).
    #[serde(default)]
    pub proxy_mode: ProxyMode,
}

/// What a virtual name points at.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    Primary,
    Replicas,
    Any,
    Member(String),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Primary => f.write_str("primary"),
            Target::Replicas => f.write_str("replicas"),
            Target::Any => f.write_str("any"),
            Target::Member(name) => f.write_str(name),
        }
    }
}

impl From<&str> for Target {
    fn from(s: &str) -> Self {
        match s {
            "primary" => Target::Primary,
            "replicas" => Target::Replicas,
            "any" => Target::Any,
            other => Target::Member(other.to_string()),
        }
    }
}

impl Serialize for Target {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Target {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Ok(Target::from(text.as_str()))
    }
}

impl JsonSchema for Target {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Target".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "minLength": 1,
            "maxLength": 63,
            "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
            "description": "`primary`, `replicas`, `any`, or the name of one member (static pinning)."
        })
    }
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Balancing {
    #[default]
    RoundRobin,
    LeastConnections,
}

/// How the built-in proxy relays a virtual name's connections.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum ProxyMode {
    /// Every client connection gets a server connection; bytes are copied unchanged.
    #[default]
    Passthrough,
    /// Redis only: stateless commands of many clients share pipelined server connections.
    Multiplex,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Fallback {
    /// Send clients to the primary when no read target qualifies.
    #[default]
    Primary,
    /// Refuse connections when no member qualifies.
    None,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct VirtualNameStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Members the name points at now.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<String>,
    /// Comma-separated endpoints, for `kubectl get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_summary: Option<String>,
    /// Operator mode: the Service clients connect to (same name, same namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// `Ready` (the name has endpoints), `Reconciling`, `Stalled` (e.g. its cluster is missing).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>,
}
