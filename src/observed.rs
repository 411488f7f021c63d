//! What the controller saw: per-member observations, current virtual-name endpoints and the journal read back. Types only.

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::journal::Journal;

/// Everything `plan` may know about the world, gathered by `observe`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Observed {
    /// Keyed by member name. A member missing here has never been probed.
    #[serde(default)]
    pub members: BTreeMap<String, MemberObservation>,
    /// Member names each virtual name points at now, keyed by virtual name.
    #[serde(default)]
    pub virtual_names: BTreeMap<String, Vec<String>>,
    /// The controller's durable memory of this cluster, as last written.
    #[serde(default)]
    pub journal: Journal,
}

/// Replication role a server reports.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Master,
    Replica,
}

/// One member as last probed. For an unreachable member the data fields keep their last known values.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MemberObservation {
    pub reachable: bool,
    /// When the member stopped answering; `None` while reachable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unreachable_since: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    /// Name of the member it replicates from (replicas only), or the raw address when it is not a member.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    /// Replication offset: bytes of the replication stream this member holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// Replicas only: whether the link to its upstream is up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_up: Option<bool>,
    /// Whether the member rejects writes (replica, or fenced master).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_only: Option<bool>,
    /// A full sync is loading: the member's data is partial.
    #[serde(default)]
    pub syncing: bool,
    /// Masters only: `Some(false)` when its self-fencing guard is not configured as policy wants.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guarded: Option<bool>,
    /// Unreachable because its port refuses connections: no process is listening.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub refused: bool,
    /// Last probe error, for status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl MemberObservation {
    pub fn is_master(&self) -> bool {
        self.reachable && self.role == Some(Role::Master)
    }

    pub fn is_replica(&self) -> bool {
        self.reachable && self.role == Some(Role::Replica)
    }

    /// A reachable master that has not been fenced: it accepts writes.
    pub fn is_writable_master(&self) -> bool {
        self.is_master() && self.read_only != Some(true)
    }
}
