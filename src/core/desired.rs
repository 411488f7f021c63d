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
        }
    }

    pub fn member(&self, name: &str) -> Option<&crate::api::Member> {
        self.spec.members.iter().find(|m| m.name == name)
    }
}
