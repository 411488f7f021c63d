//! Routes: the members a virtual name points at, which of them serve a client's zone, and the
//! [`Router`] trait through which a runtime moves a name (a built-in proxy, a Service's
//! endpoints, a key in etcd). Pure, but for the trait.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// One backend of a virtual name.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub member: String,
    pub address: String,
    /// The member's zone, for routing clients within theirs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
}

/// The zone whose endpoints a client in `client_zone` should use: its own while it has any,
/// else the first of `preferred` that has any; `None` for all of them.
fn serving_zone<'a>(
    endpoints: &[Endpoint],
    client_zone: Option<&'a str>,
    preferred: &'a [String],
) -> Option<&'a str> {
    client_zone
        .into_iter()
        .chain(preferred.iter().map(String::as_str))
        .find(|zone| endpoints.iter().any(|e| e.zone.as_deref() == Some(*zone)))
}

/// The endpoints a client in `client_zone` should use: those in its own zone, else those in
/// the first of `preferred` that has any, else all of them.
pub fn for_zone<'a>(
    endpoints: &'a [Endpoint],
    client_zone: Option<&str>,
    preferred: &[String],
) -> Vec<&'a Endpoint> {
    let zone = serving_zone(endpoints, client_zone, preferred);
    endpoints
        .iter()
        .filter(|e| zone.is_none() || e.zone.as_deref() == zone)
        .collect()
}

/// For each endpoint, the zones whose clients it serves under [`for_zone`], among `zones`:
/// what Kubernetes calls an endpoint's topology hints. Empty lists for all when no zone is
/// known, so that every client uses every endpoint.
pub fn zone_hints(
    endpoints: &[Endpoint],
    zones: &[String],
    preferred: &[String],
) -> Vec<Vec<String>> {
    let serving: Vec<(&String, Option<&str>)> = zones
        .iter()
        .map(|zone| (zone, serving_zone(endpoints, Some(zone), preferred)))
        .collect();
    endpoints
        .iter()
        .map(|e| {
            serving
                .iter()
                .filter(|(_, by)| by.is_none() || e.zone.as_deref() == *by)
                .map(|(zone, _)| (*zone).clone())
                .collect()
        })
        .collect()
}

/// Where virtual names point (a built-in proxy, or a Service's endpoints).
#[async_trait]
pub trait Router: Send + Sync {
    /// Member names `name` points at now; `None` when it has never been set.
    async fn current(&self, name: &str) -> Option<Vec<String>>;
    async fn retarget(&self, name: &str, endpoints: &[Endpoint]) -> Result<(), RouteError>;
}

/// A virtual name could not be moved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// The store the routes are published in (the API server, etcd) refused or failed, or
    /// what the name is published as is gone.
    #[error("{message}")]
    Publish { name: String, message: String },
}

impl RouteError {
    pub fn publish(name: &str, message: impl ToString) -> Self {
        Self::Publish {
            name: name.to_string(),
            message: message.to_string(),
        }
    }
}
