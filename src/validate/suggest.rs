//! Field paths for people, and "did you mean" hints taken from the generated CRD schema.

use std::sync::OnceLock;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

use crate::api::{ReplicationCluster, VirtualName};

/// `spec.members[1].adress`, from serde_ignored's path.
pub fn render(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", render(parent)),
        Path::Map { parent, key } => match render(parent) {
            p if p.is_empty() => key.to_string(),
            p => format!("{p}.{key}"),
        },
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => render(parent),
    }
}

/// Largest edit distance at which a known field is suggested.
const CLOSE: usize = 2;

/// The OpenAPI schema of a kind, generated once: a file may hold thousands of unknown fields.
fn schema(kind: &str) -> Option<&'static serde_json::Value> {
    static CLUSTER: OnceLock<Option<serde_json::Value>> = OnceLock::new();
    static NAME: OnceLock<Option<serde_json::Value>> = OnceLock::new();
    let generate = |crd: CustomResourceDefinition| {
        serde_json::to_value(
            crd.spec
                .versions
                .first()?
                .schema
                .as_ref()?
                .open_api_v3_schema
                .as_ref()?,
        )
        .ok()
    };
    match kind {
        "ReplicationCluster" => CLUSTER.get_or_init(|| generate(ReplicationCluster::crd())),
        "VirtualName" => NAME.get_or_init(|| generate(VirtualName::crd())),
        _ => return None,
    }
    .as_ref()
}

/// The known field closest to the unknown one at `path`, if any is close.
pub fn field(kind: &str, path: &str) -> Option<String> {
    let schema = schema(kind)?;
    let segments: Vec<&str> = path.split('.').collect();
    let (unknown, parents) = segments.split_last()?;
    let mut node = schema;
    for segment in parents {
        let (key, indexed) = match segment.find('[') {
            Some(at) => (&segment[..at], true),
            None => (*segment, false),
        };
        node = node.get("properties")?.get(key)?;
        if indexed {
            node = node.get("items")?;
        }
    }
    let unknown = unknown.split('[').next()?;
    let known = node.get("properties")?.as_object()?;
    known
        .keys()
        // Lengths further apart than CLOSE cannot be close; the distance would cost their product.
        .filter(|k| k.len().abs_diff(unknown.len()) <= CLOSE)
        .map(|k| {
            (
                strsim::damerau_levenshtein(&k.to_lowercase(), &unknown.to_lowercase()),
                k,
            )
        })
        .filter(|(distance, _)| *distance <= CLOSE)
        .min()
        .map(|(_, k)| format!("`{k}`"))
}

#[cfg(test)]
mod tests {
    use super::field;

    #[test]
    fn suggests_the_nearest_known_field() {
        assert_eq!(
            field("ReplicationCluster", "spec.failover.detectafter").as_deref(),
            Some("`detectAfter`")
        );
        assert_eq!(
            field("ReplicationCluster", "spec.members[0].adress").as_deref(),
            Some("`address`")
        );
        assert_eq!(
            field("VirtualName", "spec.maxlag").as_deref(),
            Some("`maxLag`")
        );
        assert_eq!(
            field("ReplicationCluster", "spec.completelyDifferent"),
            None
        );
    }
}
