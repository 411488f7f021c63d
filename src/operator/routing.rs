//! Virtual names as Kubernetes Services: a selectorless Service plus EndpointSlices the operator owns.
//!
//! The EndpointSlice version is discovered once (`discovery.k8s.io/v1`, else `v1beta1`), and
//! slices are handled as dynamic objects so both look the same here. Each slice records the
//! member names it points at in an annotation, which is how [`Router::current`] reads routes
//! back after a restart. Touches Services and EndpointSlices labelled as managed by replicant.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, Mutex},
};

use async_trait::async_trait;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::{
    Client,
    api::{Api, DeleteParams, ListParams, Patch, PatchParams},
    core::{ApiResource, DynamicObject, GroupVersionKind},
};
use serde_json::json;

use super::{
    FIELD_MANAGER,
    call::{ApiError, call},
};
use crate::{plan::Endpoint, reconcile::Router};

pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "replicant.dev";
/// Member names a slice points at, comma-separated.
pub const MEMBERS_ANNOTATION: &str = "replicant.dev/members";

/// The EndpointSlice API this server serves, newest first.
pub async fn slice_resource(client: &Client) -> Result<Option<ApiResource>, ApiError> {
    for version in ["v1", "v1beta1"] {
        let group_version = format!("discovery.k8s.io/{version}");
        match call(
            format!("discover {group_version}"),
            client.list_api_group_resources(&group_version),
        )
        .await
        {
            Ok(list) if list.resources.iter().any(|r| r.name == "endpointslices") => {
                let gvk = GroupVersionKind::gvk("discovery.k8s.io", version, "EndpointSlice");
                return Ok(Some(ApiResource::from_gvk_with_plural(
                    &gvk,
                    "endpointslices",
                )));
            }
            Ok(_) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

/// Label selector for the slices of one Service.
pub fn slices_of(service: &str) -> String {
    format!("{SERVICE_NAME_LABEL}={service},{MANAGED_BY_LABEL}={MANAGED_BY}")
}

/// Member names the given slices point at, in the order they were applied.
pub fn members_of(slices: &[DynamicObject]) -> Vec<String> {
    slices
        .iter()
        .filter_map(|s| s.metadata.annotations.as_ref()?.get(MEMBERS_ANNOTATION))
        .flat_map(|list| list.split(',').filter(|m| !m.is_empty()).map(String::from))
        .collect()
}

/// One cluster's router, rebuilt each round from the current VirtualNames.
pub struct ServiceRouter {
    pub client: Client,
    pub namespace: String,
    pub slices: ApiResource,
    /// Owner reference of each virtual name (its VirtualName object), by name.
    pub owners: HashMap<String, OwnerReference>,
    /// Service port when a name has no endpoints to take one from.
    pub default_port: u16,
    /// Routes as last applied or read, shared across rounds.
    pub known: Arc<Mutex<HashMap<String, Vec<String>>>>,
}

impl ServiceRouter {
    fn slice_api(&self) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), &self.namespace, &self.slices)
    }

    async fn list_slices(&self, name: &str) -> Result<Vec<DynamicObject>, ApiError> {
        list_slices(&self.client, &self.namespace, &self.slices, name).await
    }

    async fn apply_service(
        &self,
        name: &str,
        owner: &OwnerReference,
        port: u16,
    ) -> Result<(), ApiError> {
        let service = json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {
                "name": name,
                "ownerReferences": [owner],
                "labels": {"app.kubernetes.io/managed-by": "replicant"},
            },
            // No selector: the endpoints are the operator's to set.
            "spec": {
                "ports": [{"name": "db", "port": port, "protocol": "TCP", "targetPort": port}],
            },
        });
        let api: Api<k8s_openapi::api::core::v1::Service> =
            Api::namespaced(self.client.clone(), &self.namespace);
        call(
            format!("apply service {name}"),
            api.patch(
                name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(service),
            ),
        )
        .await?;
        Ok(())
    }
}

/// Endpoints grouped into the slices that carry them: one per address family and port.
struct SliceGroup {
    address_type: &'static str,
    port: u16,
    addresses: Vec<(String, IpAddr)>,
}

fn slice_name(service: &str, group: &SliceGroup) -> String {
    match group.address_type {
        "IPv6" => format!("{service}-{}-v6", group.port),
        _ => format!("{service}-{}", group.port),
    }
}

/// Split `host:port`, resolving a host name (a StatefulSet pod's DNS name, say) to its address.
async fn resolve(address: &str) -> Result<(IpAddr, u16), String> {
    let found = tokio::time::timeout(
        super::call::API_TIMEOUT,
        tokio::net::lookup_host(address.to_string()),
    )
    .await
    .map_err(|_| format!("resolving {address} timed out"))?
    .map_err(|e| format!("cannot resolve {address}: {e}"))?
    .next()
    .ok_or_else(|| format!("{address} resolves to no address"))?;
    Ok((found.ip(), found.port()))
}

#[async_trait]
impl Router for ServiceRouter {
    async fn current(&self, name: &str) -> Option<Vec<String>> {
        if let Some(known) = self.known.lock().expect("not poisoned").get(name) {
            return Some(known.clone());
        }
        let slices = self.list_slices(name).await.ok()?;
        if slices.is_empty() {
            return None;
        }
        let members = members_of(&slices);
        self.known
            .lock()
            .expect("not poisoned")
            .insert(name.to_string(), members.clone());
        Some(members)
    }

    async fn retarget(&self, name: &str, endpoints: &[Endpoint]) -> Result<(), String> {
        let owner = self
            .owners
            .get(name)
            .ok_or_else(|| format!("VirtualName {name} is gone"))?;
        let mut groups: Vec<SliceGroup> = Vec::new();
        for endpoint in endpoints {
            let (ip, port) = resolve(&endpoint.address).await?;
            let address_type = if ip.is_ipv4() { "IPv4" } else { "IPv6" };
            match groups
                .iter_mut()
                .find(|g| g.address_type == address_type && g.port == port)
            {
                Some(group) => group.addresses.push((endpoint.member.clone(), ip)),
                None => groups.push(SliceGroup {
                    address_type,
                    port,
                    addresses: vec![(endpoint.member.clone(), ip)],
                }),
            }
        }
        let port = groups.first().map_or(self.default_port, |g| g.port);
        if groups.is_empty() {
            // Keep one empty slice so the Service visibly has no endpoints, rather than stale ones.
            groups.push(SliceGroup {
                address_type: "IPv4",
                port,
                addresses: Vec::new(),
            });
        }
        self.apply_service(name, owner, port)
            .await
            .map_err(|e| e.to_string())?;
        let api = self.slice_api();
        let mut wanted = Vec::new();
        for group in &groups {
            let slice_name = slice_name(name, group);
            let members: Vec<&str> = group.addresses.iter().map(|(m, _)| m.as_str()).collect();
            let slice = json!({
                "apiVersion": self.slices.api_version,
                "kind": "EndpointSlice",
                "metadata": {
                    "name": slice_name,
                    "labels": {SERVICE_NAME_LABEL: name, MANAGED_BY_LABEL: MANAGED_BY},
                    "annotations": {MEMBERS_ANNOTATION: members.join(",")},
                    "ownerReferences": [owner],
                },
                "addressType": group.address_type,
                "endpoints": group.addresses.iter().map(|(member, ip)| json!({
                    "addresses": [ip.to_string()],
                    "conditions": {"ready": true},
                    "hostname": member,
                })).collect::<Vec<_>>(),
                "ports": [{"name": "db", "port": group.port, "protocol": "TCP"}],
            });
            call(
                format!("apply endpointslice {slice_name}"),
                api.patch(
                    &slice_name,
                    &PatchParams::apply(FIELD_MANAGER).force(),
                    &Patch::Apply(slice),
                ),
            )
            .await
            .map_err(|e| e.to_string())?;
            wanted.push(slice_name);
        }
        // Slices for ports or address families no longer used.
        let existing = self.list_slices(name).await.map_err(|e| e.to_string())?;
        for stale in existing
            .iter()
            .filter_map(|s| s.metadata.name.as_ref())
            .filter(|s| !wanted.contains(s))
        {
            call(
                format!("delete endpointslice {stale}"),
                api.delete(stale, &DeleteParams::default()),
            )
            .await
            .map_err(|e| e.to_string())?;
        }
        let members: Vec<String> = endpoints.iter().map(|e| e.member.clone()).collect();
        self.known
            .lock()
            .expect("not poisoned")
            .insert(name.to_string(), members);
        Ok(())
    }
}

/// The slices a Service's endpoints live in, ordered by name.
pub async fn list_slices(
    client: &Client,
    namespace: &str,
    slices: &ApiResource,
    service: &str,
) -> Result<Vec<DynamicObject>, ApiError> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, slices);
    let lp = ListParams::default().labels(&slices_of(service));
    let mut list = call(format!("list endpointslices of {service}"), api.list(&lp))
        .await?
        .items;
    list.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    Ok(list)
}
