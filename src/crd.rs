//! The CustomResourceDefinitions, generated from the Rust types (`replicant crd`).

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

use crate::api::{Backup, ReplicationCluster, VirtualName};

/// Every CRD replicant serves, with the file name it is committed under in `crds/`.
pub fn all() -> Vec<(&'static str, CustomResourceDefinition)> {
    vec![
        (
            "replicationclusters.replicant.dev.yaml",
            portable(ReplicationCluster::crd()),
        ),
        (
            "virtualnames.replicant.dev.yaml",
            portable(VirtualName::crd()),
        ),
        ("backups.replicant.dev.yaml", portable(Backup::crd())),
    ]
}

/// Drop `null` from `enum` lists (an optional enum's schema): `nullable: true` already allows
/// null, and older API servers (1.20) fail to decode a CRD whose enum holds a null.
fn portable(crd: CustomResourceDefinition) -> CustomResourceDefinition {
    fn strip(value: &mut serde_json::Value) {
        match value {
            serde_json::Value::Object(map) => {
                if let Some(serde_json::Value::Array(items)) = map.get_mut("enum") {
                    items.retain(|v| !v.is_null());
                }
                map.values_mut().for_each(strip);
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let mut value = serde_json::to_value(&crd).expect("a CRD always serialises");
    strip(&mut value);
    serde_json::from_value(value).expect("stripping enum nulls keeps a valid CRD")
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
