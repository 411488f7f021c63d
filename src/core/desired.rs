//! What the user asked for, for one cluster: its spec and the virtual names that point into it. Types only.

use serde::{Deserialize, Serialize};

use crate::api::{ReplicationClusterSpec, VirtualNameSpec};

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Desired {
    /// `metadata.name` of the cluster.
    pub name: String,
    pub spec: ReplicationClusterSpec,
    /// The cluster's virtual names, in a stable order.
    #[serde(default)]
    pub virtual_names: Vec<NamedVirtualName>,
    /// On-demand base backups asked for (`Backup` objects) that have not ended yet, oldest
    /// first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backup_requests: Vec<RequestedBackup>,
}

/// One on-demand base backup asked for.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RequestedBackup {
    /// The `Backup` object's name: the catalog records it with the backup.
    pub name: String,
    /// The member to read it from, if the request names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct NamedVirtualName {
    pub name: String,
    pub spec: VirtualNameSpec,
}

impl Desired {
    /// A cluster's desired state from its spec and its names (`(name, spec)`), in name order.
    pub fn new(
        name: String,
        spec: ReplicationClusterSpec,
        names: impl IntoIterator<Item = (String, VirtualNameSpec)>,
    ) -> Self {
        let mut virtual_names: Vec<NamedVirtualName> = names
            .into_iter()
            .map(|(name, spec)| NamedVirtualName { name, spec })
            .collect();
        virtual_names.sort_by(|a, b| a.name.cmp(&b.name));
        Self {
            name,
            spec,
            virtual_names,
            backup_requests: Vec::new(),
        }
    }

    pub fn member(&self, name: &str) -> Option<&crate::api::Member> {
        self.spec.members.iter().find(|m| m.name == name)
    }
}
