//! Routes in etcd: the leader publishes where each virtual name points; every instance's proxies
//! follow and acknowledge each route by its etcd revision (its epoch), under their session
//! lease. Touches `routes/` (the leader, fenced) and `acks/` (each instance, its own keys).
//!
//! The rule that keeps two masters from taking writes through the proxies: a name gains a
//! member only once every live proxy has acknowledged the route as it stands, so no proxy
//! still sends to a member the route has dropped. A proxy that is cut off cannot acknowledge;
//! the leader then waits for its lease to run out, and the proxy stops routing before that,
//! as soon as it cannot confirm its lease is alive.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use etcd_client::{
    Client, EventType, GetOptions, KeyValue, PutOptions, Txn, TxnOp, TxnOpResponse, WatchOptions,
};
use serde::{Deserialize, Serialize};

use super::{Fence, Keys, RequestError, Session, call, fenced, get, txn};
use crate::{
    core::{
        desired::Desired,
        routes::{Endpoint, RouteError, Router},
    },
    proxy::{Proxies, ProxyShape},
};

/// How often a waiting leader looks at the acknowledgements, and a proxy at its lease.
const POLL: Duration = Duration::from_millis(50);

/// Where a virtual name points and how it is served.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Route {
    pub cluster: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    #[serde(flatten)]
    pub shape: ProxyShape,
    pub endpoints: Vec<Endpoint>,
}

impl Route {
    fn members(&self) -> Vec<String> {
        self.endpoints.iter().map(|e| e.member.clone()).collect()
    }
}

/// Publishes one cluster's routes for the leader: the [`Router`] of the etcd runtime.
pub struct EtcdRouter {
    client: Client,
    keys: Keys,
    namespace: String,
    /// Each virtual name's route as its spec shapes it (endpoints empty).
    shapes: HashMap<String, Route>,
    fence: Fence,
    timeout: Duration,
    /// How long adding a member waits for the proxies: past a silent proxy's lease.
    ack_wait: Duration,
}

impl EtcdRouter {
    pub fn new(
        client: Client,
        keys: Keys,
        namespace: &str,
        desired: &Desired,
        fence: Fence,
        timeout: Duration,
        ack_wait: Duration,
    ) -> Self {
        let shapes = desired
            .virtual_names
            .iter()
            .map(|vn| {
                let shape = Route {
                    cluster: desired.name.clone(),
                    listen: vn.spec.listen.clone(),
                    shape: ProxyShape::of(&vn.spec),
                    endpoints: Vec::new(),
                };
                (vn.name.clone(), shape)
            })
            .collect();
        Self {
            client,
            keys,
            namespace: namespace.to_string(),
            shapes,
            fence,
            timeout,
            ack_wait,
        }
    }

    fn proxy_key(&self, name: &str) -> String {
        format!("{}/{name}", self.namespace)
    }

    /// The route as stored, and its revision.
    async fn read(&self, name: &str) -> Result<Option<(Route, i64)>, RoutesError> {
        let key = self.keys.route(&self.proxy_key(name));
        let found = get(&self.client, &key, None, self.timeout).await?;
        let Some(kv) = found.kvs().first() else {
            return Ok(None);
        };
        let route =
            serde_json::from_slice(kv.value()).map_err(|source| RoutesError::NotUnderstood {
                name: name.to_string(),
                source,
            })?;
        Ok(Some((route, kv.mod_revision())))
    }

    /// Store `endpoints` as `name`'s route, shaped by its spec; returns the route's revision.
    async fn publish(&self, name: &str, endpoints: Vec<Endpoint>) -> Result<i64, RoutesError> {
        let mut route = self
            .shapes
            .get(name)
            .cloned()
            .ok_or_else(|| RoutesError::Unknown(name.to_string()))?;
        route.endpoints = endpoints;
        let bytes = serde_json::to_vec(&route).map_err(RoutesError::Encode)?;
        let key = self.keys.route(&self.proxy_key(name));
        let put = TxnOp::put(key, bytes, None);
        fenced(&self.client, &self.fence, put, self.timeout)
            .await?
            .ok_or(RoutesError::Deposed(self.fence.token))
    }

    /// Bring every stored route's listener and policy in line with the spec (a changed `listen`
    /// moves the proxies of every instance), keeping its endpoints.
    pub async fn publish_shapes(&self) -> Result<(), RoutesError> {
        for (name, shape) in &self.shapes {
            let Some((stored, _)) = self.read(name).await? else {
                continue;
            };
            let stored_shape = Route {
                endpoints: Vec::new(),
                ..stored.clone()
            };
            if stored_shape != *shape {
                self.publish(name, stored.endpoints).await?;
            }
        }
        Ok(())
    }

    /// Wait until every live instance's proxy has applied `name`'s route at `revision` or later.
    async fn wait_for_acks(&self, name: &str, revision: i64) -> Result<(), RoutesError> {
        let deadline = tokio::time::Instant::now() + self.ack_wait;
        loop {
            let missing = self.unacknowledged(name, revision).await?;
            if missing.is_empty() {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(RoutesError::Unacknowledged {
                    name: name.to_string(),
                    missing,
                    revision,
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The live instances whose proxies have not applied `name`'s route at `revision` yet.
    async fn unacknowledged(&self, name: &str, revision: i64) -> Result<Vec<String>, RoutesError> {
        let instances = self.keys.instances();
        let acks = self.keys.acks(&self.proxy_key(name));
        let both = Txn::new().and_then([
            TxnOp::get(instances.as_str(), Some(GetOptions::new().with_prefix())),
            TxnOp::get(acks.as_str(), Some(GetOptions::new().with_prefix())),
        ]);
        let response = txn(&self.client, both, self.timeout).await?;
        let mut ranges = response.op_responses().into_iter().filter_map(|r| match r {
            TxnOpResponse::Get(get) => Some(get),
            _ => None,
        });
        let (Some(live), Some(acked)) = (ranges.next(), ranges.next()) else {
            return Err(RoutesError::Incomplete);
        };
        let acked: HashMap<String, i64> = acked
            .kvs()
            .iter()
            .filter_map(|kv| {
                let instance = key_under(kv, &acks)?.to_string();
                let at = kv.value_str().ok()?.parse().ok()?;
                Some((instance, at))
            })
            .collect();
        Ok(live
            .kvs()
            .iter()
            .filter_map(|kv| key_under(kv, &instances))
            .filter(|instance| acked.get(*instance).is_none_or(|at| *at < revision))
            .map(str::to_string)
            .collect())
    }
}

/// Why a route could not be read, written or acknowledged.
#[derive(Debug, thiserror::Error)]
pub enum RoutesError {
    #[error(transparent)]
    Request(#[from] RequestError),
    #[error(
        "this process no longer leads (fencing token {0} is not the leader key's): the route was not written"
    )]
    Deposed(i64),
    #[error("route of {name} in etcd: {source}")]
    NotUnderstood {
        name: String,
        source: serde_json::Error,
    },
    #[error("{0} is not a virtual name of this cluster")]
    Unknown(String),
    #[error("a route: {0}")]
    Encode(serde_json::Error),
    #[error("etcd answered without the ranges asked for")]
    Incomplete,
    #[error(
        "{name}: the proxies on {} have not acknowledged its route (revision {revision}) and their etcd leases have not run out; it gains a member once they do either",
        missing.join(", ")
    )]
    Unacknowledged {
        name: String,
        missing: Vec<String>,
        revision: i64,
    },
}

#[async_trait]
impl Router for EtcdRouter {
    async fn current(&self, name: &str) -> Option<Vec<String>> {
        match self.read(name).await {
            Ok(route) => route.map(|(route, _)| route.members()),
            Err(error) => {
                tracing::warn!(name, %error, "cannot read the route");
                None
            }
        }
    }

    /// Drop the members that leave at once; add members only once every live proxy has
    /// applied the route as it then stands (or its lease has run out).
    async fn retarget(&self, name: &str, endpoints: &[Endpoint]) -> Result<(), RouteError> {
        self.publish_endpoints(name, endpoints)
            .await
            .map_err(|message| RouteError::publish(name, message))
    }
}

impl EtcdRouter {
    async fn publish_endpoints(
        &self,
        name: &str,
        endpoints: &[Endpoint],
    ) -> Result<(), RoutesError> {
        let Some((stored, mut revision)) = self.read(name).await? else {
            self.publish(name, endpoints.to_vec()).await?;
            return Ok(());
        };
        let mut current = stored.endpoints;
        let kept: Vec<Endpoint> = current
            .iter()
            .filter(|e| endpoints.contains(e))
            .cloned()
            .collect();
        if kept != current {
            revision = self.publish(name, kept.clone()).await?;
            current = kept;
        }
        let gains = endpoints.iter().any(|e| !current.contains(e));
        if gains {
            self.wait_for_acks(name, revision).await?;
        }
        if current != endpoints {
            self.publish(name, endpoints.to_vec()).await?;
        }
        Ok(())
    }
}

/// Remove the routes of names no longer in the specs (`keep` holds `NS/NAME` keys).
pub async fn retain(
    client: &Client,
    keys: &Keys,
    fence: &Fence,
    keep: &[String],
    timeout: Duration,
) -> Result<(), RoutesError> {
    let prefix = keys.routes();
    let keys_only = GetOptions::new().with_prefix().with_keys_only();
    let found = get(client, &prefix, Some(keys_only), timeout).await?;
    for kv in found.kvs() {
        let Some(name) = key_under(kv, &prefix) else {
            continue;
        };
        if !keep.iter().any(|k| k == name) {
            tracing::info!(name, "no longer in the specs: its route is removed");
            let delete = TxnOp::delete(keys.route(name), None);
            if fenced(client, fence, delete, timeout).await?.is_none() {
                return Err(RoutesError::Deposed(fence.token));
            }
        }
    }
    Ok(())
}

/// A route as a proxy holds it: the route and its revision.
type Held = HashMap<String, (Route, i64)>;

/// An instance's proxies, following the routes in etcd.
pub struct Follower {
    pub client: Client,
    pub keys: Keys,
    pub identity: String,
    pub proxies: Arc<Proxies>,
    /// Listen on this address instead of the host part of each name's `listen`.
    pub proxy_host: Option<String>,
    pub timeout: Duration,
}

/// What the follower and its guard share.
#[derive(Default)]
struct Serving {
    /// The routes as last read and followed, by proxy key.
    routes: Held,
    /// Since when nothing is routed because the session was in doubt.
    stopped_since: Option<tokio::time::Instant>,
}

impl Follower {
    /// Serve the routes while `session` lives; returns once it is lost. While the session is
    /// not surely alive nothing is routed: connections are closed and new ones refused, since
    /// the leader may already count this proxy's lease as run out. A guard looks at the
    /// session every few milliseconds, whatever etcd request the follower is waiting on.
    pub async fn follow(&self, session: &Session) {
        let serving = Mutex::new(Serving::default());
        tokio::select! {
            _ = self.guard(session, &serving) => {}
            _ = self.keep_following(session, &serving) => {}
        }
        self.stop_routing(&serving);
    }

    async fn guard(&self, session: &Session, serving: &Mutex<Serving>) {
        while !session.lost() {
            if !session.alive() {
                self.stop_routing(serving);
            }
            tokio::time::sleep(POLL).await;
        }
    }

    async fn keep_following(&self, session: &Session, serving: &Mutex<Serving>) {
        loop {
            if !session.alive() {
                tokio::time::sleep(POLL).await;
                continue;
            }
            let (routes, revision) = match self.load().await {
                Ok(loaded) => loaded,
                Err(error) => {
                    tracing::warn!(%error, "cannot read the routes");
                    tokio::time::sleep(POLL).await;
                    continue;
                }
            };
            // Read while the lease was surely alive: any move since waits for this proxy.
            if !self.serve(session, serving, routes, true).await {
                continue;
            }
            let all: Vec<(String, i64)> = lock(serving)
                .routes
                .iter()
                .map(|(k, (_, r))| (k.clone(), *r))
                .collect();
            if self.acknowledge(session, &all).await {
                self.watch(session, serving, revision).await;
            } else {
                tokio::time::sleep(POLL).await;
            }
        }
    }

    /// Every route with its revision, and the revision the read saw.
    async fn load(&self) -> Result<(Held, i64), RequestError> {
        let prefix = self.keys.routes();
        let found = get(
            &self.client,
            &prefix,
            Some(GetOptions::new().with_prefix()),
            self.timeout,
        )
        .await?;
        let revision = found.header().map(|h| h.revision()).unwrap_or_default();
        let mut routes = HashMap::new();
        for kv in found.kvs() {
            if let Some((name, held)) = held_route(kv, &prefix) {
                routes.insert(name.to_string(), held);
            }
        }
        Ok((routes, revision))
    }

    /// Follow changes after `revision` until the watch breaks or the session is in doubt.
    async fn watch(&self, session: &Session, serving: &Mutex<Serving>, revision: i64) {
        let prefix = self.keys.routes();
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(revision + 1);
        let opened = call(
            self.timeout,
            self.client.clone().watch(prefix.as_str(), Some(options)),
        )
        .await;
        let mut stream = match opened {
            Ok(watch) => watch,
            Err(error) => {
                tracing::warn!(%error, "cannot watch the routes");
                tokio::time::sleep(POLL).await;
                return;
            }
        };
        loop {
            tokio::select! {
                message = stream.message() => {
                    let Ok(Some(response)) = message else { return };
                    if response.canceled() {
                        return;
                    }
                    let mut routes = lock(serving).routes.clone();
                    let mut changed = Vec::new();
                    for event in response.events() {
                        let Some(kv) = event.kv() else { continue };
                        match event.event_type() {
                            EventType::Put => {
                                if let Some((name, held)) = held_route(kv, &prefix) {
                                    changed.push((name.to_string(), held.1));
                                    routes.insert(name.to_string(), held);
                                }
                            }
                            EventType::Delete => {
                                if let Some(name) = key_under(kv, &prefix) {
                                    routes.remove(name);
                                }
                            }
                        }
                    }
                    if !self.serve(session, serving, routes, false).await
                        || !self.acknowledge(session, &changed).await
                    {
                        return; // read again and acknowledge everything
                    }
                }
                _ = tokio::time::sleep(POLL) => {
                    if lock(serving).stopped_since.is_some() {
                        return; // the guard stopped routing: read again before routing
                    }
                }
            }
        }
    }

    /// Listen for every route that has a `listen` address, stop the rest, and point each at
    /// its endpoints, if the session is surely alive and routing was not stopped since
    /// (unless `resume`, after a fresh read). False when nothing was applied.
    async fn serve(
        &self,
        session: &Session,
        serving: &Mutex<Serving>,
        routes: Held,
        resume: bool,
    ) -> bool {
        let mut listening = Vec::new();
        for (name, (route, _)) in &routes {
            let Some(listen) = &route.listen else {
                continue;
            };
            let listen = on_host(listen, self.proxy_host.as_deref());
            match self.proxies.ensure(name, &listen, &route.shape).await {
                Ok(()) => listening.push(name.clone()),
                Err(error) => tracing::error!(%error, "cannot serve a virtual name"),
            }
        }
        let mut state = lock(serving);
        if !session.alive() || (state.stopped_since.is_some() && !resume) {
            return false;
        }
        self.proxies.retain(&listening);
        for name in &listening {
            self.proxies.route(name, routes[name].0.endpoints.clone());
        }
        if let Some(since) = state.stopped_since.take() {
            tracing::info!(after = ?since.elapsed(), "the proxies route again");
        }
        state.routes = routes;
        true
    }

    fn stop_routing(&self, serving: &Mutex<Serving>) {
        let mut state = lock(serving);
        if state.stopped_since.is_some() {
            return;
        }
        tracing::warn!(
            "cannot confirm this instance's etcd lease: its proxies stop routing until it is confirmed and the routes read again"
        );
        for name in state.routes.keys() {
            self.proxies.route(name, Vec::new());
        }
        state.stopped_since = Some(tokio::time::Instant::now());
    }

    /// Record, under the session's lease, the route revisions this instance's proxies now apply.
    async fn acknowledge(&self, session: &Session, applied: &[(String, i64)]) -> bool {
        if applied.is_empty() {
            return true;
        }
        let puts: Vec<TxnOp> = applied
            .iter()
            .map(|(name, revision)| {
                TxnOp::put(
                    self.keys.ack(name, &self.identity),
                    revision.to_string(),
                    Some(PutOptions::new().with_lease(session.lease)),
                )
            })
            .collect();
        let request = Txn::new().and_then(puts);
        match txn(&self.client, request, self.timeout).await {
            Ok(_) => true,
            Err(error) => {
                tracing::warn!(%error, "cannot acknowledge the routes");
                false
            }
        }
    }
}

/// The part of `kv`'s key after `prefix`.
fn key_under<'a>(kv: &'a KeyValue, prefix: &str) -> Option<&'a str> {
    kv.key_str().ok()?.strip_prefix(prefix)
}

/// The route stored in `kv` (a key under `prefix`), by proxy key, with its revision; a value
/// that is not understood is logged and skipped.
fn held_route<'a>(kv: &'a KeyValue, prefix: &str) -> Option<(&'a str, (Route, i64))> {
    let name = key_under(kv, prefix)?;
    match serde_json::from_slice::<Route>(kv.value()) {
        Ok(route) => Some((name, (route, kv.mod_revision()))),
        Err(error) => {
            tracing::warn!(name, %error, "route in etcd not understood");
            None
        }
    }
}

fn lock(serving: &Mutex<Serving>) -> std::sync::MutexGuard<'_, Serving> {
    serving.lock().expect("lock")
}

/// `listen` with its host part replaced by `host`, when one is given.
pub fn on_host(listen: &str, host: Option<&str>) -> String {
    let Some(host) = host else {
        return listen.to_string();
    };
    let port = listen.rsplit_once(':').map_or(listen, |(_, port)| port);
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

#[cfg(test)]
mod tests {
    use super::{Route, on_host};

    #[test]
    fn a_route_keeps_its_stored_form() {
        // Routes written before preferred zones existed still read, and read back the same.
        let stored = r#"{"cluster":"orders","listen":"127.0.0.1:7380","balancing":"leastConnections","proxyMode":"multiplex","endpoints":[{"member":"a","address":"127.0.0.1:6380"}]}"#;
        let route: Route = serde_json::from_str(stored).unwrap();
        assert_eq!(route.shape.mode, crate::api::ProxyMode::Multiplex);
        assert!(route.shape.preferred_zones.is_empty());
        assert_eq!(serde_json::to_string(&route).unwrap(), stored);
    }

    #[test]
    fn a_host_address_replaces_the_listen_host() {
        assert_eq!(on_host("127.0.0.1:6380", None), "127.0.0.1:6380");
        assert_eq!(on_host("0.0.0.0:6380", Some("127.0.0.2")), "127.0.0.2:6380");
        assert_eq!(on_host("[::]:6380", Some("::1")), "[::1]:6380");
        assert_eq!(on_host("[::]:6380", Some("[::1]")), "[::1]:6380");
    }
}
