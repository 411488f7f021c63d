//! What `replicant status` shows of a Kubernetes cluster: every ReplicationCluster's status,
//! its VirtualNames and its recent Events, read (never written) through the API server.

use k8s_openapi::api::core::v1::Event;
use kube::{Api, Client, ResourceExt, api::ListParams};

use super::call::{ApiError, call};
use crate::{
    api::{ReplicationCluster, VirtualName},
    runtime::report::{ClusterReport, NameReport},
};

/// Events shown per cluster, newest last.
const EVENTS_SHOWN: usize = 10;
/// Objects read per list request: a large installation is read in pages, not at once.
const PAGE: u32 = 500;

/// Every ReplicationCluster in `namespace` (or in all namespaces), as `replicant status`
/// shows it, in namespace and name order.
pub async fn overview(
    client: Client,
    namespace: Option<&str>,
) -> Result<Vec<ClusterReport>, ApiError> {
    let (clusters, names, events) = match namespace {
        Some(ns) => (
            Api::<ReplicationCluster>::namespaced(client.clone(), ns),
            Api::<VirtualName>::namespaced(client.clone(), ns),
            Api::<Event>::namespaced(client, ns),
        ),
        None => (
            Api::all(client.clone()),
            Api::all(client.clone()),
            Api::all(client),
        ),
    };
    let clusters = list_all(&clusters, ListParams::default(), "list ReplicationClusters").await?;
    let names = list_all(&names, ListParams::default(), "list VirtualNames").await?;
    let events = list_all(
        &events,
        ListParams::default().fields("involvedObject.kind=ReplicationCluster"),
        "list Events of ReplicationClusters",
    )
    .await?;
    let mut reports: Vec<ClusterReport> = clusters
        .iter()
        .map(|cluster| report(cluster, &names, &events))
        .collect();
    reports.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    Ok(reports)
}

async fn list_all<K>(api: &Api<K>, params: ListParams, what: &str) -> Result<Vec<K>, ApiError>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let mut items = Vec::new();
    let mut params = params.limit(PAGE);
    loop {
        let page = call(what, api.list(&params)).await?;
        items.extend(page.items);
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => params = params.continue_token(&token),
            _ => return Ok(items),
        }
    }
}

fn report(cluster: &ReplicationCluster, names: &[VirtualName], events: &[Event]) -> ClusterReport {
    let namespace = cluster.namespace().unwrap_or_default();
    let name = cluster.name_any();
    let status = cluster.status.clone().unwrap_or_default();
    let spec_problems = status
        .conditions
        .iter()
        .filter(|c| c.type_ == crate::runtime::reconciler::SPEC_VALID && c.status == "False")
        .map(|c| c.message.clone())
        .collect();
    let virtual_names = names
        .iter()
        .filter(|vn| vn.namespace().as_deref() == Some(&namespace) && vn.spec.cluster == name)
        .map(|vn| {
            let vn_status = vn.status.clone().unwrap_or_default();
            NameReport {
                name: vn.name_any(),
                target: vn.spec.target.to_string(),
                listen: vn_status
                    .service
                    .map(|service| format!("{service}.{namespace}.svc")),
                endpoints: vn_status.endpoints,
            }
        })
        .collect();
    let mut mine: Vec<&Event> = events
        .iter()
        .filter(|e| {
            e.involved_object.name.as_deref() == Some(&name)
                && e.involved_object.namespace.as_deref() == Some(&namespace)
        })
        .collect();
    mine.sort_by_key(|e| event_time(e));
    let skip = mine.len().saturating_sub(EVENTS_SHOWN);
    ClusterReport {
        engine: format!("{:?}", cluster.spec.engine).to_lowercase(),
        spec_primary: cluster.spec.primary.clone(),
        status,
        virtual_names,
        spec_problems,
        error: None,
        events: mine.into_iter().skip(skip).map(event_line).collect(),
        namespace,
        name,
    }
}

/// When an Event last happened, as RFC 3339 (which sorts as text).
fn event_time(event: &Event) -> String {
    event
        .last_timestamp
        .as_ref()
        .map(|t| t.0.to_string())
        .or_else(|| event.event_time.as_ref().map(|t| t.0.to_string()))
        .or_else(|| {
            event
                .metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0.to_string())
        })
        .unwrap_or_default()
}

fn event_line(event: &Event) -> String {
    let count = event.count.filter(|c| *c > 1);
    format!(
        "{} {} {}{}: {}",
        event_time(event),
        event.type_.as_deref().unwrap_or("Normal"),
        event.reason.as_deref().unwrap_or("-"),
        count.map(|c| format!(" (x{c})")).unwrap_or_default(),
        event.message.as_deref().unwrap_or("")
    )
}
