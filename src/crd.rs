//! The CustomResourceDefinitions, generated from the Rust types (`replicant crd`).

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

use crate::api::{ReplicationCluster, VirtualName};

/// Every CRD replicant serves, with the file name it is committed under in `crds/`.
pub fn all() -> Vec<(&'static str, CustomResourceDefinition)> {
    vec![
        (
            "replicationclusters.replicant.dev.yaml",
            ReplicationCluster::crd(),
        ),
        ("virtualnames.replicant.dev.yaml", VirtualName::crd()),
    ]
}

/// One CRD as YAML, as committed.
pub fn to_yaml(crd: &CustomResourceDefinition) -> String {
    serde_yaml::to_string(crd).expect("a CRD always serialises")
}

/// All CRDs as one multi-document YAML stream.
pub fn all_yaml() -> String {
    all()
        .iter()
        .map(|(_, crd)| format!("---\n{}", to_yaml(crd)))
        .collect()
}
