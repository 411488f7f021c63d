//! Virtual names as Kubernetes Services: a selectorless Service plus EndpointSlices the operator owns.
//!
//! The EndpointSlice version is discovered once (`discovery.k8s.io/v1`, else `v1beta1`), and
//! slices are handled as dynamic objects so both look the same here. Each slice records the
//! member names it points at in an annotation, which is how [`Router::current`] reads routes
//! back after a restart. Touches Services and EndpointSlices labelled as managed by replicant.

use std::{
    collections::{BTreeMap, HashMap},
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
use crate::{
    api::{ReplicationClusterSpec, Target, VirtualNameSpec},
    core::routes::{Endpoint, RouteError, Router, zone_hints},
};

pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "replicant.dev";
/// Member names a slice points at, comma-separated.
pub const MEMBERS_ANNOTATION: &str = "replicant.dev/members";
/// The zones a slice's hints were computed from (see [`Locality::fingerprint`]).
pub const ZONES_ANNOTATION: &str = "replicant.dev/zones";
/// The Service annotations that let kube-proxy use the slices' hints: current Kubernetes,
/// then the name it had before 1.27.
const TOPOLOGY_MODE: (&str, &str) = ("service.kubernetes.io/topology-mode", "Auto");
const TOPOLOGY_HINTS: (&str, &str) = ("service.kubernetes.io/topology-aware-hints", "auto");

/// What a name's slices say about zones: each member's zone, and for read names the zones
/// their clients prefer after their own.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Locality {
    pub member_zones: BTreeMap<String, String>,
    /// Read targets only: slices carry topology hints.
    pub hinted: bool,
    pub preferred: Vec<String>,
}

impl Locality {
    pub fn of(cluster: &ReplicationClusterSpec, name: &VirtualNameSpec) -> Self {
        let member_zones: BTreeMap<String, String> = cluster
            .members
            .iter()
            .filter_map(|m| Some((m.name.clone(), m.zone.clone()?)))
            .collect();
        Self {
            hinted: !member_zones.is_empty()
                && matches!(name.target, Target::Replicas | Target::Any),
            member_zones,
            preferred: name.preferred_zones.clone(),
        }
    }

    /// A summary that changes whenever the slices' zones or hints would: empty without zones,
    /// so names of clusters without zones keep the slices they had.
    pub fn fingerprint(&self) -> String {
        if self.member_zones.is_empty() {
            return String::new();
        }
        let members: Vec<String> = self
            .member_zones
            .iter()
            .map(|(m, z)| format!("{m}={z}"))
            .collect();
        format!(
            "{};hinted={};preferred={}",
            members.join(","),
            self.hinted,
            self.preferred.join(",")
        )
    }

    /// Each endpoint's hints, or none when some endpoint would have no zone to serve (kube-proxy
    /// then ignores every hint anyway).
    fn hints(&self, endpoints: &[Endpoint]) -> Option<Vec<Vec<String>>> {
        if !self.hinted || endpoints.iter().any(|e| e.zone.is_none()) {
            return None;
        }
        let zones: Vec<String> = self
            .member_zones
            .values()
            .cloned()
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let hints = zone_hints(endpoints, &zones, &self.preferred);
        hints.iter().all(|h| !h.is_empty()).then_some(hints)
    }
}

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

/// The zones fingerprint the given slices were written with ("" when none).
fn zones_of(slices: &[DynamicObject]) -> String {
    slices
        .iter()
        .find_map(|s| {
            s.metadata
                .annotations
                .as_ref()?
                .get(ZONES_ANNOTATION)
                .cloned()
        })
        .unwrap_or_default()
}

/// Member names the given slices point at, in the order they were applied.
pub fn members_of(slices: &[DynamicObject]) -> Vec<String> {
    slices
        .iter()
        .filter_map(|s| s.metadata.annotations.as_ref()?.get(MEMBERS_ANNOTATION))
        .flat_map(|list| list.split(',').filter(|m| !m.is_empty()).map(String::from))
        .collect()
}

/// Each name's route as last applied or read: its members and its zones fingerprint.
pub type KnownRoutes = Arc<Mutex<HashMap<String, (Vec<String>, String)>>>;

/// One cluster's router, rebuilt each round from the current VirtualNames.
pub struct ServiceRouter {
    pub client: Client,
    pub namespace: String,
    pub slices: ApiResource,
    /// Owner reference of each virtual name (its VirtualName object), by name.
    pub owners: HashMap<String, OwnerReference>,
    /// What each name's slices say about zones, by name.
    pub localities: HashMap<String, Locality>,
    /// Service port when a name has no endpoints to take one from.
    pub default_port: u16,
    /// Routes as last applied or read, shared across rounds.
    pub known: KnownRoutes,
}

impl ServiceRouter {
    fn slice_api(&self) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), &self.namespace, &self.slices)
    }

    async fn list_slices(&self, name: &str) -> Result<Vec<DynamicObject>, ApiError> {
        list_slices(&self.client, &self.namespace, &self.slices, name).await
    }

    fn locality(&self, name: &str) -> Locality {
        self.localities.get(name).cloned().unwrap_or_default()
    }

    async fn apply_service(
        &self,
        name: &str,
        owner: &OwnerReference,
        port: u16,
        hinted: bool,
    ) -> Result<(), ApiError> {
        let annotations: BTreeMap<&str, &str> = if hinted {
            BTreeMap::from([TOPOLOGY_MODE, TOPOLOGY_HINTS])
        } else {
            BTreeMap::new()
        };
        let service = json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {
                "name": name,
                "ownerReferences": [owner],
                "labels": {"app.kubernetes.io/managed-by": "replicant"},
                "annotations": annotations,
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

/// One endpoint as a slice carries it.
struct SliceEndpoint {
    member: String,
    ip: IpAddr,
    zone: Option<String>,
    /// Zones whose clients kube-proxy sends here; none when the name has no hints.
    for_zones: Option<Vec<String>>,
}

/// Endpoints grouped into the slices that carry them: one per address family and port.
struct SliceGroup {
    address_type: &'static str,
    port: u16,
    addresses: Vec<SliceEndpoint>,
}

impl SliceGroup {
    /// The slice's `endpoints`. `discovery.k8s.io/v1` has `zone` and `hints`; v1beta1 has
    /// the zone as a topology label, and no hints.
    fn endpoints(&self, v1: bool) -> Vec<serde_json::Value> {
        self.addresses
            .iter()
            .map(|e| {
                let mut endpoint = json!({
                    "addresses": [e.ip.to_string()],
                    "conditions": {"ready": true},
                    "hostname": e.member,
                });
                match (&e.zone, v1) {
                    (Some(zone), true) => endpoint["zone"] = json!(zone),
                    (Some(zone), false) => {
                        endpoint["topology"] = json!({"topology.kubernetes.io/zone": zone})
                    }
                    (None, _) => {}
                }
                if let (Some(zones), true) = (&e.for_zones, v1) {
                    let for_zones: Vec<_> = zones.iter().map(|z| json!({"name": z})).collect();
                    endpoint["hints"] = json!({"forZones": for_zones});
                }
                endpoint
            })
            .collect()
    }
}

fn slice_name(service: &str, group: &SliceGroup) -> String {
    match group.address_type {
        "IPv6" => format!("{service}-{}-v6", group.port),
        _ => format!("{service}-{}", group.port),
    }
}

/// Why a virtual name's Service and slices could not be written.
#[derive(Debug, thiserror::Error)]
enum PublishError {
    #[error("VirtualName {0} is gone")]
    Gone(String),
    #[error("resolving {0} timed out")]
    ResolveTimeout(String),
    #[error("cannot resolve {address}: {source}")]
    Resolve {
        address: String,
        source: std::io::Error,
    },
    #[error("{0} resolves to no address")]
    NoAddress(String),
    #[error(transparent)]
    Api(#[from] super::call::ApiError),
}

/// Split `host:port`, resolving a host name (a StatefulSet pod's DNS name, say) to its address.
async fn resolve(address: &str) -> Result<(IpAddr, u16), PublishError> {
    let found = tokio::time::timeout(
        super::call::API_TIMEOUT,
        tokio::net::lookup_host(address.to_string()),
    )
    .await
    .map_err(|_| PublishError::ResolveTimeout(address.to_string()))?
    .map_err(|source| PublishError::Resolve {
        address: address.to_string(),
        source,
    })?
    .next()
    .ok_or_else(|| PublishError::NoAddress(address.to_string()))?;
    Ok((found.ip(), found.port()))
}

#[async_trait]
impl Router for ServiceRouter {
    /// The members a name's slices point at, or none when they were written for other zones
    /// (so that the planner writes them again).
    async fn current(&self, name: &str) -> Option<Vec<String>> {
        let fingerprint = self.locality(name).fingerprint();
        let cached = self.known.lock().expect("not poisoned").get(name).cloned();
        let (members, zones) = match cached {
            Some(known) => known,
            None => {
                let slices = self.list_slices(name).await.ok()?;
                if slices.is_empty() {
                    return None;
                }
                let known = (members_of(&slices), zones_of(&slices));
                self.known
                    .lock()
                    .expect("not poisoned")
                    .insert(name.to_string(), known.clone());
                known
            }
        };
        (zones == fingerprint).then_some(members)
    }

    async fn retarget(&self, name: &str, endpoints: &[Endpoint]) -> Result<(), RouteError> {
        self.publish_endpoints(name, endpoints)
            .await
            .map_err(|message| RouteError::publish(name, message))
    }
}

impl ServiceRouter {
    async fn publish_endpoints(
        &self,
        name: &str,
        endpoints: &[Endpoint],
    ) -> Result<(), PublishError> {
        let owner = self
            .owners
            .get(name)
            .ok_or_else(|| PublishError::Gone(name.to_string()))?;
        let locality = self.locality(name);
        let hints = locality.hints(endpoints);
        let mut groups: Vec<SliceGroup> = Vec::new();
        for (i, endpoint) in endpoints.iter().enumerate() {
            let (ip, port) = resolve(&endpoint.address).await?;
            let address_type = if ip.is_ipv4() { "IPv4" } else { "IPv6" };
            let entry = SliceEndpoint {
                member: endpoint.member.clone(),
                ip,
                zone: endpoint.zone.clone(),
                for_zones: hints.as_ref().map(|h| h[i].clone()),
            };
            match groups
                .iter_mut()
                .find(|g| g.address_type == address_type && g.port == port)
            {
                Some(group) => group.addresses.push(entry),
                None => groups.push(SliceGroup {
                    address_type,
                    port,
                    addresses: vec![entry],
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
        let v1 = self.slices.version == "v1";
        self.apply_service(name, owner, port, hints.is_some() && v1)
            .await?;
        let api = self.slice_api();
        let fingerprint = locality.fingerprint();
        let mut wanted = Vec::new();
        for group in &groups {
            let slice_name = slice_name(name, group);
            let members: Vec<&str> = group.addresses.iter().map(|e| e.member.as_str()).collect();
            let mut annotations = BTreeMap::from([(MEMBERS_ANNOTATION, members.join(","))]);
            if !fingerprint.is_empty() {
                annotations.insert(ZONES_ANNOTATION, fingerprint.clone());
            }
            let slice = json!({
                "apiVersion": self.slices.api_version,
                "kind": "EndpointSlice",
                "metadata": {
                    "name": slice_name,
                    "labels": {SERVICE_NAME_LABEL: name, MANAGED_BY_LABEL: MANAGED_BY},
                    "annotations": annotations,
                    "ownerReferences": [owner],
                },
                "addressType": group.address_type,
                "endpoints": group.endpoints(v1),
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
            .await?;
            wanted.push(slice_name);
        }
        // Slices for ports or address families no longer used.
        let existing = self.list_slices(name).await?;
        for stale in existing
            .iter()
            .filter_map(|s| s.metadata.name.as_ref())
            .filter(|s| !wanted.contains(s))
        {
            call(
                format!("delete endpointslice {stale}"),
                api.delete(stale, &DeleteParams::default()),
            )
            .await?;
        }
        let members: Vec<String> = endpoints.iter().map(|e| e.member.clone()).collect();
        self.known
            .lock()
            .expect("not poisoned")
            .insert(name.to_string(), (members, fingerprint));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(member: &str, zone: Option<&str>) -> Endpoint {
        Endpoint {
            member: member.into(),
            address: "127.0.0.1:6379".into(),
            zone: zone.map(String::from),
        }
    }

    fn locality(hinted: bool, preferred: &[&str]) -> Locality {
        Locality {
            member_zones: [("a", "z1"), ("b", "z1"), ("c", "z2"), ("d", "z3")]
                .iter()
                .map(|(m, z)| (m.to_string(), z.to_string()))
                .collect(),
            hinted,
            preferred: preferred.iter().map(|z| z.to_string()).collect(),
        }
    }

    #[test]
    fn v1_slices_carry_zones_and_hints_and_v1beta1_slices_the_zone_label_only() {
        // z3's replica d is not among the endpoints: its clients go to the preferred z2.
        let endpoints = [endpoint("b", Some("z1")), endpoint("c", Some("z2"))];
        let hints = locality(true, &["z2"]).hints(&endpoints).unwrap();
        assert_eq!(
            hints,
            vec![
                vec!["z1".to_string()],
                vec!["z2".to_string(), "z3".to_string()]
            ]
        );
        let group = SliceGroup {
            address_type: "IPv4",
            port: 6379,
            addresses: endpoints
                .iter()
                .zip(&hints)
                .map(|(e, h)| SliceEndpoint {
                    member: e.member.clone(),
                    ip: "127.0.0.1".parse().unwrap(),
                    zone: e.zone.clone(),
                    for_zones: Some(h.clone()),
                })
                .collect(),
        };
        let v1 = group.endpoints(true);
        assert_eq!(v1[1]["zone"], "z2");
        assert_eq!(
            v1[1]["hints"],
            json!({"forZones": [{"name": "z2"}, {"name": "z3"}]})
        );
        let beta = group.endpoints(false);
        assert_eq!(beta[1]["topology"]["topology.kubernetes.io/zone"], "z2");
        assert!(beta[1].get("hints").is_none() && beta[1].get("zone").is_none());
    }

    #[test]
    fn hints_are_left_off_where_kube_proxy_could_not_use_them() {
        let zoned = [endpoint("b", Some("z1"))];
        // Not a read name.
        assert_eq!(locality(false, &[]).hints(&zoned), None);
        // An endpoint without a zone.
        let mixed = [endpoint("b", Some("z1")), endpoint("x", None)];
        assert_eq!(locality(true, &[]).hints(&mixed), None);
        // Without preferred zones, z2 and z3 fall back to every endpoint: b serves all three.
        assert_eq!(
            locality(true, &[]).hints(&zoned),
            Some(vec![vec![
                "z1".to_string(),
                "z2".to_string(),
                "z3".to_string()
            ]])
        );
    }

    #[test]
    fn the_fingerprint_changes_with_zones_and_preferences_and_is_empty_without_zones() {
        let base = locality(true, &["z2"]);
        assert_ne!(base.fingerprint(), locality(true, &["z3"]).fingerprint());
        let mut moved = base.clone();
        moved.member_zones.insert("a".into(), "z2".into());
        assert_ne!(base.fingerprint(), moved.fingerprint());
        assert_eq!(Locality::default().fingerprint(), "");
    }
}
