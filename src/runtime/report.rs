//! What `replicant status` shows of a cluster, the same for every runtime: its status, its
//! virtual names as the router has them, and the problems of its spec.

use serde::{Deserialize, Serialize};

use crate::{api::ReplicationClusterStatus, core::routes::Router, runtime::spec_loop::Input};

/// What `replicant status` shows for one cluster: written after every round that changed it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ClusterReport {
    pub namespace: String,
    pub name: String,
    pub engine: String,
    pub spec_primary: String,
    pub status: ReplicationClusterStatus,
    #[serde(default)]
    pub virtual_names: Vec<NameReport>,
    /// Problems in this cluster's spec files; the last good spec keeps running meanwhile.
    #[serde(default)]
    pub spec_problems: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Kubernetes only: the cluster's recent Events, newest last, one line each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NameReport {
    pub name: String,
    pub target: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    pub endpoints: Vec<String>,
}

/// Problems in the spec directory as a whole, written by `replicant run` whenever they change:
/// a file may be refused before it names any cluster (a file past the parser's limits, say).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SpecsReport {
    /// One line per problem, `FILE: ...` as `replicant validate` prints it.
    pub problems: Vec<String>,
}

/// What `replicant status` shows for a cluster, its names as `router` has them.
pub async fn report(
    input: &Input,
    status: ReplicationClusterStatus,
    router: &dyn Router,
    error: Option<String>,
) -> ClusterReport {
    let mut names = Vec::new();
    for vn in &input.desired.virtual_names {
        names.push(NameReport {
            name: vn.name.clone(),
            target: vn.spec.target.to_string(),
            listen: vn.spec.listen.clone(),
            endpoints: router.current(&vn.name).await.unwrap_or_default(),
        });
    }
    ClusterReport {
        namespace: input.namespace.clone(),
        name: input.desired.name.clone(),
        engine: format!("{:?}", input.desired.spec.engine).to_lowercase(),
        spec_primary: input.desired.spec.primary.clone(),
        status,
        virtual_names: names,
        spec_problems: input.spec_problems.clone(),
        error,
        events: Vec::new(),
    }
}
