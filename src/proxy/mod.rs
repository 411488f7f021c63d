//! Built-in TCP proxies for virtual names: one listener per name, forwarding to its current endpoints.
//!
//! Retargeting swaps the endpoint list; connections to a member that left the list are closed
//! at once, so clients of a demoted master reconnect to the new one instead of lingering.
//! A name relays in passthrough mode (bytes copied unchanged) or, for Redis, in multiplex mode
//! ([`redis`]).

pub mod redis;

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use tokio::{
    net::{TcpListener, TcpStream},
    sync::watch,
    task::JoinHandle,
};

use crate::{
    accept::{Acceptor, Admitted, PROXY_CLIENTS},
    api::{Balancing, ProxyMode, VirtualNameSpec},
    core::routes::{Endpoint, RouteError, Router, for_zone},
    metrics::Metrics,
};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a name that has never been routed leaves clients queued before it accepts them
/// (and, with still nowhere to send them, closes them).
const FIRST_ROUTE_WAIT: Duration = Duration::from_secs(10);

/// How many threads relay proxy traffic: `REPLICANT_PROXY_THREADS`, else half the CPUs available
/// (at least 1, at most 4). The proxy shares its host with the controller and usually with
/// servers or clients; fewer threads also mean each wakeup handles more connections' events
/// (and, in multiplex mode, longer pipelines), which costs less CPU per request.
pub fn proxy_threads() -> usize {
    std::env::var("REPLICANT_PROXY_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).min(4)))
        .max(1)
}

/// The proxies' runtimes: single-threaded, each on a thread of its own. Relaying is a chain of
/// tiny reads and writes; keeping each connection's wakeups on one thread avoids the hand-offs
/// of a work-stealing scheduler, and the controller's probes never wait behind the traffic.
fn proxy_runtimes() -> &'static [tokio::runtime::Handle] {
    static RUNTIMES: std::sync::OnceLock<Vec<tokio::runtime::Handle>> = std::sync::OnceLock::new();
    RUNTIMES.get_or_init(|| (0..proxy_threads()).map(proxy_runtime).collect())
}

fn proxy_runtime(index: usize) -> tokio::runtime::Handle {
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name(format!("replicant-proxy-{index}"))
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("the proxy runtime builds");
            sender
                .send(runtime.handle().clone())
                .expect("the caller waits for the handle");
            runtime.block_on(std::future::pending::<()>());
        })
        .expect("the proxy thread starts");
    receiver.recv().expect("the proxy runtime starts")
}

/// Which lane a client of a multiplexed name uses: one per proxy thread, member (at its
/// address), protocol version and user.
#[derive(Clone, PartialEq, Eq, Hash)]
struct LaneKey {
    thread: usize,
    member: String,
    address: String,
    protocol: u8,
    /// None for the default user.
    identity: Option<Arc<redis::resp::Credentials>>,
}

/// A lane as the proxy remembers it. The default user's lanes stay open while idle (there are
/// at most two per thread and member); a lane of an authenticated user closes with the last
/// client using it, so credentials seen once do not hold a server connection forever.
struct LaneEntry {
    lane: tokio::sync::mpsc::WeakUnboundedSender<redis::Batch>,
    /// Held only to keep the lane open.
    _open: Option<redis::LaneSender>,
}

/// How a virtual name is served, from its spec.
#[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ProxyShape {
    #[serde(default)]
    pub balancing: Balancing,
    #[serde(default, rename = "proxyMode")]
    pub mode: ProxyMode,
    /// Zones to send clients to when the proxy's own zone has no endpoint.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub preferred_zones: Vec<String>,
}

impl ProxyShape {
    pub fn of(spec: &VirtualNameSpec) -> Self {
        Self {
            balancing: spec.balancing,
            mode: spec.proxy_mode,
            preferred_zones: spec.preferred_zones.clone(),
        }
    }
}

/// One virtual name's proxy.
struct NameProxy {
    listen: String,
    balancing: Balancing,
    mode: ProxyMode,
    /// The zone of the host the proxy runs in (`--zone`): its clients' zone.
    zone: Option<String>,
    preferred_zones: Mutex<Vec<String>>,
    /// Multiplex mode: the shared server connections.
    lanes: Mutex<HashMap<LaneKey, LaneEntry>>,
    endpoints: watch::Sender<Option<Vec<Endpoint>>>,
    next: AtomicUsize,
    active: Mutex<HashMap<String, usize>>,
    task: Mutex<Option<JoinHandle<()>>>,
    /// The listening socket, kept (a duplicate of the one accepting) to pass to a successor.
    listener: Mutex<Option<std::net::TcpListener>>,
    /// Open connections by id: the member each relays to, and how to close it.
    connections: Mutex<HashMap<u64, (String, tokio::task::AbortHandle)>>,
    next_connection: std::sync::atomic::AtomicU64,
}

/// Whether the proxies may route at all now; checked on every connection accepted.
pub type Gate = Arc<dyn Fn() -> bool + Send + Sync>;

/// Every proxy of the process, keyed by virtual name (`namespace/name`).
#[derive(Default)]
pub struct Proxies {
    names: Mutex<HashMap<String, Arc<NameProxy>>>,
    metrics: Option<Arc<Metrics>>,
    gate: Option<Gate>,
    /// The zone this host is in: proxies prefer endpoints there.
    zone: Option<String>,
    /// Listening sockets this process was given (by systemd, or by the process it replaced)
    /// that no name has taken yet: a name listening at one's address takes it instead of
    /// binding.
    inherited: Mutex<Vec<std::net::TcpListener>>,
}

/// A virtual name's listener as passed to a successor, with what it serves.
#[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PassedName {
    /// `namespace/name`.
    pub name: String,
    pub listen: String,
    pub shape: ProxyShape,
    /// Where the name pointed; none before its first route.
    pub endpoints: Option<Vec<Endpoint>>,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {listen} for virtual name {name}: {source}")]
pub struct ListenError {
    pub name: String,
    pub listen: String,
    pub source: std::io::Error,
}

impl Proxies {
    pub fn new(metrics: Option<Arc<Metrics>>) -> Self {
        Self {
            names: Mutex::default(),
            metrics,
            gate: None,
            zone: None,
            inherited: Mutex::default(),
        }
    }

    /// Proxies on a host in `zone`: each sends its clients to endpoints in that zone while
    /// there are any.
    pub fn in_zone(self, zone: Option<String>) -> Self {
        Self { zone, ..self }
    }

    /// Proxies that close every connection they accept while `gate` says no, whatever their
    /// endpoints: a process resumed after a freeze must not route before it has checked that
    /// it still may.
    pub fn gated(metrics: Option<Arc<Metrics>>, gate: Gate) -> Self {
        Self {
            gate: Some(gate),
            ..Self::new(metrics)
        }
    }

    /// Make sure `name` listens on `listen`; a changed address, policy or mode restarts the
    /// listener (keeping its endpoints). Changed preferred zones apply to the next client.
    pub async fn ensure(
        &self,
        name: &str,
        listen: &str,
        shape: &ProxyShape,
    ) -> Result<(), ListenError> {
        let ProxyShape {
            balancing, mode, ..
        } = shape.clone();
        let existing = self.names.lock().expect("lock").get(name).cloned();
        if let Some(proxy) = &existing
            && proxy.listen == listen
            && proxy.balancing == balancing
            && proxy.mode == mode
        {
            *proxy.preferred_zones.lock().expect("lock") = shape.preferred_zones.clone();
            return Ok(());
        }
        let endpoints = existing.as_ref().and_then(|p| p.endpoints.borrow().clone());
        // The same address keeps the same socket: clients queued on it are not dropped.
        let kept = existing
            .as_ref()
            .filter(|p| p.listen == listen)
            .and_then(|p| p.listener.lock().expect("lock").take());
        if let Some(old) = existing {
            old.stop();
        }
        let listen_error = |source| ListenError {
            name: name.to_string(),
            listen: listen.to_string(),
            source,
        };
        let listener = match kept.or_else(|| self.take_inherited(listen)) {
            Some(listener) => listener,
            None => std::net::TcpListener::bind(listen).map_err(listen_error)?,
        };
        self.start(name, listen, shape, listener, endpoints)
            .map_err(listen_error)
    }

    /// Serve `name` from a listener passed by the process this one replaced, pointing where
    /// it pointed there, before this process has looked at anything.
    pub fn adopt(
        &self,
        passed: PassedName,
        listener: std::net::TcpListener,
    ) -> Result<(), ListenError> {
        self.start(
            &passed.name,
            &passed.listen,
            &passed.shape,
            listener,
            passed.endpoints,
        )
        .map_err(|source| ListenError {
            name: passed.name.clone(),
            listen: passed.listen.clone(),
            source,
        })
    }

    /// Keep listening sockets this process was given for the names that will listen at
    /// their addresses.
    pub fn inherit(&self, listeners: Vec<std::net::TcpListener>) {
        self.inherited.lock().expect("lock").extend(listeners);
    }

    /// The inherited listener bound to `listen`, if any (for the admin endpoint too).
    pub fn take_inherited(&self, listen: &str) -> Option<std::net::TcpListener> {
        let mut inherited = self.inherited.lock().expect("lock");
        if inherited.is_empty() {
            return None;
        }
        let wanted: Vec<std::net::SocketAddr> = std::net::ToSocketAddrs::to_socket_addrs(listen)
            .map(Iterator::collect)
            .unwrap_or_default();
        let found = inherited
            .iter()
            .position(|l| l.local_addr().is_ok_and(|a| wanted.contains(&a)))?;
        Some(inherited.swap_remove(found))
    }

    fn start(
        &self,
        name: &str,
        listen: &str,
        shape: &ProxyShape,
        listener: std::net::TcpListener,
        endpoints: Option<Vec<Endpoint>>,
    ) -> std::io::Result<()> {
        listener.set_nonblocking(true)?;
        let kept = listener.try_clone()?;
        let proxy = Arc::new(NameProxy {
            listen: listen.to_string(),
            balancing: shape.balancing,
            mode: shape.mode,
            zone: self.zone.clone(),
            preferred_zones: Mutex::new(shape.preferred_zones.clone()),
            lanes: Mutex::default(),
            endpoints: watch::channel(endpoints).0,
            next: AtomicUsize::new(0),
            active: Mutex::default(),
            task: Mutex::new(None),
            listener: Mutex::new(Some(kept)),
            connections: Mutex::default(),
            next_connection: std::sync::atomic::AtomicU64::new(0),
        });
        let (served, key, metrics) = (proxy.clone(), name.to_string(), self.metrics.clone());
        let gate = self.gate.clone();
        let task = proxy_runtimes()[0].spawn(async move {
            match TcpListener::from_std(listener) {
                Ok(listener) => serve(listener, served, key, metrics, gate).await,
                Err(e) => tracing::error!(name = %key, error = %e, "proxy listener unusable"),
            }
        });
        *proxy.task.lock().expect("lock") = Some(task);
        if let Some(replaced) = self
            .names
            .lock()
            .expect("lock")
            .insert(name.to_string(), proxy)
        {
            replaced.stop();
        }
        Ok(())
    }

    /// Every name's listener with what it serves, for a successor. Each is a new descriptor
    /// for the same socket: clients keep queueing on it whichever process accepts.
    pub fn pass(&self) -> std::io::Result<Vec<(PassedName, std::net::TcpListener)>> {
        let names = self.names.lock().expect("lock");
        let mut passed = Vec::new();
        for (name, proxy) in names.iter() {
            let Some(listener) = proxy
                .listener
                .lock()
                .expect("lock")
                .as_ref()
                .map(|l| l.try_clone())
            else {
                continue;
            };
            let shape = ProxyShape {
                balancing: proxy.balancing,
                mode: proxy.mode,
                preferred_zones: proxy.preferred_zones.lock().expect("lock").clone(),
            };
            passed.push((
                PassedName {
                    name: name.clone(),
                    listen: proxy.listen.clone(),
                    shape,
                    endpoints: proxy.endpoints.borrow().clone(),
                },
                listener?,
            ));
        }
        Ok(passed)
    }

    /// Wait until every client connection has closed, or `grace` has passed; how many are
    /// still open.
    pub async fn drain(&self, grace: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            let open = PROXY_CLIENTS.open();
            if open == 0 || tokio::time::Instant::now() >= deadline {
                return open;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stop accepting clients on every name, leaving the connections open to finish: a
    /// successor accepts from the same sockets now.
    pub fn stop_accepting(&self) {
        self.inherited.lock().expect("lock").clear();
        for proxy in self.names.lock().expect("lock").values() {
            proxy.stop_accepting();
        }
    }

    /// Stop every proxy not in `keep`.
    pub fn retain(&self, keep: &[String]) {
        self.names.lock().expect("lock").retain(|name, proxy| {
            let kept = keep.contains(name);
            if !kept {
                proxy.stop();
            }
            kept
        });
    }

    /// Point proxy `name` at `endpoints`, closing connections to members not among them;
    /// false when there is no such proxy.
    pub fn route(&self, name: &str, endpoints: Vec<Endpoint>) -> bool {
        match self.get(name) {
            Some(proxy) => {
                proxy.set_endpoints(endpoints);
                true
            }
            None => false,
        }
    }

    fn get(&self, name: &str) -> Option<Arc<NameProxy>> {
        self.names.lock().expect("lock").get(name).cloned()
    }
}

impl NameProxy {
    /// No more clients accepted here; the open connections carry on.
    fn stop_accepting(&self) {
        if let Some(task) = self.task.lock().expect("lock").take() {
            task.abort();
        }
        self.listener.lock().expect("lock").take();
    }

    fn stop(&self) {
        self.stop_accepting();
        // Closing every connection: an endpoint list of none.
        self.set_endpoints(Vec::new());
    }

    /// Point the name at `endpoints`, closing connections to members no longer among them.
    fn set_endpoints(&self, endpoints: Vec<Endpoint>) {
        self.endpoints.send_replace(Some(endpoints));
        self.close_unlisted();
    }

    fn listed(&self, member: &str) -> bool {
        self.endpoints
            .borrow()
            .as_ref()
            .is_some_and(|l| l.iter().any(|e| e.member == member))
    }

    fn close_unlisted(&self) {
        self.lanes
            .lock()
            .expect("lock")
            .retain(|key, _| self.listed(&key.member));
        let connections = self.connections.lock().expect("lock");
        for (member, connection) in connections.values() {
            if !self.listed(member) {
                connection.abort();
            }
        }
    }

    fn pick(&self) -> Option<Endpoint> {
        let all = self.endpoints.borrow().clone().unwrap_or_default();
        let preferred = self.preferred_zones.lock().expect("lock").clone();
        let endpoints: Vec<&Endpoint> = for_zone(&all, self.zone.as_deref(), &preferred);
        if endpoints.is_empty() {
            return None;
        }
        match self.balancing {
            Balancing::RoundRobin => {
                let i = self.next.fetch_add(1, Ordering::Relaxed) % endpoints.len();
                Some(endpoints[i].clone())
            }
            Balancing::LeastConnections => {
                let active = self.active.lock().expect("lock");
                let start = self.next.fetch_add(1, Ordering::Relaxed);
                (0..endpoints.len())
                    .map(|k| &endpoints[(start + k) % endpoints.len()])
                    .min_by_key(|e| active.get(&e.member).copied().unwrap_or(0))
                    .map(|e| (*e).clone())
            }
        }
    }

    /// The lane of proxy thread `thread` to `endpoint`, started on this thread if there is none
    /// (or it has failed). It is registered like a connection, so a retarget closes it too.
    fn lane(
        self: &Arc<Self>,
        thread: usize,
        endpoint: &Endpoint,
        protocol: u8,
        identity: Option<Arc<redis::resp::Credentials>>,
        client: &Connection,
    ) -> redis::LaneSender {
        let key = LaneKey {
            thread,
            member: endpoint.member.clone(),
            address: endpoint.address.clone(),
            protocol,
            identity: identity.clone(),
        };
        let mut lanes = self.lanes.lock().expect("lock");
        if let Some(lane) = lanes.get(&key).and_then(|entry| entry.lane.upgrade())
            && !lane.is_closed()
        {
            return lane;
        }
        let (sender, lane) = redis::Lane::new();
        let registration = Connection {
            proxy: self.clone(),
            id: self.next_connection.fetch_add(1, Ordering::Relaxed),
            member: endpoint.member.clone(),
            name: client.name.clone(),
            metrics: None,
            counted: false,
            _admitted: None,
        };
        let mut connections = self.connections.lock().expect("lock");
        let (id, address) = (registration.id, endpoint.address.clone());
        let task = tokio::spawn(async move {
            let _registration = registration;
            lane.run(address, protocol, identity).await;
        });
        connections.insert(id, (endpoint.member.clone(), task.abort_handle()));
        let entry = LaneEntry {
            lane: sender.downgrade(),
            _open: key.identity.is_none().then(|| sender.clone()),
        };
        lanes.insert(key, entry);
        sender
    }

    fn track(&self, member: &str, delta: isize) {
        let mut active = self.active.lock().expect("lock");
        let count = active.entry(member.to_string()).or_default();
        *count = count.saturating_add_signed(delta);
    }
}

async fn serve(
    listener: TcpListener,
    proxy: Arc<NameProxy>,
    name: String,
    metrics: Option<Arc<Metrics>>,
    gate: Option<Gate>,
) {
    // A process that has just started (given its sockets by systemd, say) has nowhere to send
    // clients until its first round: they wait in the socket's queue for it rather than being
    // accepted and closed, for a while.
    let mut routed = proxy.endpoints.subscribe();
    let _ = tokio::time::timeout(FIRST_ROUTE_WAIT, routed.wait_for(Option::is_some)).await;
    let mut acceptor = Acceptor::new(listener, name.clone(), &PROXY_CLIENTS);
    loop {
        let (client, _, admitted) = acceptor.accept().await;
        if gate.as_ref().is_some_and(|open| !open()) {
            continue; // may not route now: close at once
        }
        let Some(endpoint) = proxy.pick() else {
            continue; // nothing to send the client to: close at once
        };
        let id = proxy.next_connection.fetch_add(1, Ordering::Relaxed);
        // Registered before it can run, so a retarget from now on finds it.
        let mut connections = proxy.connections.lock().expect("lock");
        // Connections are spread over the proxy threads; the stream moves to its thread's reactor.
        let Ok(client) = client.into_std() else {
            continue;
        };
        let runtimes = proxy_runtimes();
        let thread = id as usize % runtimes.len();
        let relay = runtimes[thread].spawn(relay(
            client,
            endpoint.clone(),
            thread,
            Connection {
                proxy: proxy.clone(),
                id,
                member: endpoint.member.clone(),
                name: name.clone(),
                metrics: metrics.clone(),
                counted: false,
                _admitted: Some(admitted),
            },
        ));
        connections.insert(id, (endpoint.member, relay.abort_handle()));
        drop(connections);
        // A retarget between the pick and the registration: close it like the others.
        proxy.close_unlisted();
    }
}

/// A relayed connection's bookkeeping, undone on drop: relays end by closing, by error, or by
/// being aborted when their member leaves the name.
struct Connection {
    proxy: Arc<NameProxy>,
    id: u64,
    member: String,
    name: String,
    metrics: Option<Arc<Metrics>>,
    counted: bool,
    /// The client's place in the descriptor budget (none for a multiplex lane).
    _admitted: Option<Admitted>,
}

impl Connection {
    fn count(&mut self) {
        self.counted = true;
        self.proxy.track(&self.member, 1);
        if let Some(m) = &self.metrics {
            m.proxy_connection(&self.name, 1);
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.proxy
            .connections
            .lock()
            .expect("lock")
            .remove(&self.id);
        if self.counted {
            self.proxy.track(&self.member, -1);
            if let Some(m) = &self.metrics {
                m.proxy_connection(&self.name, -1);
            }
        }
    }
}

/// Relay one client connection (on proxy thread `thread`) until either side closes. Nothing
/// else is polled on this path: closing on retarget is done by aborting the task.
async fn relay(
    client: std::net::TcpStream,
    endpoint: Endpoint,
    thread: usize,
    mut connection: Connection,
) {
    let Ok(client) = TcpStream::from_std(client) else {
        return;
    };
    let _ = client.set_nodelay(true);
    let (to_backend, to_client) = match connection.proxy.mode {
        ProxyMode::Passthrough => passthrough(client, &endpoint, &mut connection).await,
        ProxyMode::Multiplex => {
            connection.count();
            redis::relay(client, &endpoint, thread, &connection).await
        }
    };
    if let Some(m) = &connection.metrics {
        m.proxy_bytes(&connection.name, to_backend, to_client);
    }
}

/// Connect to `endpoint` and copy both ways.
async fn passthrough(
    mut client: TcpStream,
    endpoint: &Endpoint,
    connection: &mut Connection,
) -> (u64, u64) {
    let Ok(Ok(mut backend)) =
        tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&endpoint.address)).await
    else {
        return (0, 0);
    };
    let _ = backend.set_nodelay(true);
    connection.count();
    tokio::io::copy_bidirectional(&mut client, &mut backend)
        .await
        .unwrap_or((0, 0))
}

/// The [`Router`] of one cluster: its virtual names are proxies of this process.
pub struct ProxyRouter {
    pub proxies: Arc<Proxies>,
    /// Virtual name -> proxy key.
    pub keys: HashMap<String, String>,
    /// Where names without `listen` point: no proxy, but tracked across rounds.
    pub unproxied: Arc<Mutex<HashMap<String, Vec<String>>>>,
}

#[async_trait]
impl Router for ProxyRouter {
    async fn current(&self, name: &str) -> Option<Vec<String>> {
        match self.keys.get(name).and_then(|k| self.proxies.get(k)) {
            Some(proxy) => proxy
                .endpoints
                .borrow()
                .as_ref()
                .map(|l| l.iter().map(|e| e.member.clone()).collect()),
            None => self.unproxied.lock().expect("lock").get(name).cloned(),
        }
    }

    async fn retarget(&self, name: &str, endpoints: &[Endpoint]) -> Result<(), RouteError> {
        match self.keys.get(name).and_then(|k| self.proxies.get(k)) {
            Some(proxy) => {
                proxy.set_endpoints(endpoints.to_vec());
            }
            None => {
                self.unproxied.lock().expect("lock").insert(
                    name.to_string(),
                    endpoints.iter().map(|e| e.member.clone()).collect(),
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A backend on loopback that answers every connection with its own name, then echoes.
    async fn backend(name: &'static str) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            loop {
                let (mut socket, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let _ = socket.write_all(name.as_bytes()).await;
                    let mut buf = [0u8; 64];
                    while let Ok(n) = socket.read(&mut buf).await {
                        if n == 0 || socket.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        address
    }

    fn endpoint(member: &str, address: &str) -> Endpoint {
        Endpoint {
            member: member.into(),
            address: address.into(),
            zone: None,
        }
    }

    async fn greeting(stream: &mut TcpStream) -> String {
        let mut buf = [0u8; 1];
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .expect("the backend greets")
            .unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[tokio::test]
    async fn a_changed_balancing_keeps_the_socket_and_where_the_name_points() {
        let a = backend("a").await;
        let listen = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            probe.local_addr().unwrap().to_string()
        };
        let shape = |balancing| ProxyShape {
            balancing,
            mode: ProxyMode::Passthrough,
            preferred_zones: Vec::new(),
        };
        let proxies = Proxies::new(None);
        proxies
            .ensure("ns/ro", &listen, &shape(Balancing::RoundRobin))
            .await
            .unwrap();
        proxies.route("ns/ro", vec![endpoint("a", &a)]);
        // Binding the address again while the old listener closes would fail: it is not bound
        // again, the same socket carries on.
        proxies
            .ensure("ns/ro", &listen, &shape(Balancing::LeastConnections))
            .await
            .expect("the changed name listens at once");
        let mut fresh = TcpStream::connect(&listen).await.unwrap();
        assert_eq!(greeting(&mut fresh).await, "a");
        proxies.retain(&[]);
    }

    #[tokio::test]
    async fn retargeting_closes_connections_to_members_that_left_and_keeps_the_others() {
        let (a, b) = (backend("a").await, backend("b").await);
        let listen = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            probe.local_addr().unwrap().to_string()
        };
        let proxies = Proxies::new(None);
        proxies
            .ensure(
                "ns/rw",
                &listen,
                &ProxyShape {
                    balancing: Balancing::RoundRobin,
                    mode: ProxyMode::Passthrough,
                    preferred_zones: Vec::new(),
                },
            )
            .await
            .unwrap();
        let proxy = proxies.get("ns/rw").unwrap();
        proxy.set_endpoints(vec![endpoint("a", &a), endpoint("b", &b)]);

        let mut first = TcpStream::connect(&listen).await.unwrap();
        let mut second = TcpStream::connect(&listen).await.unwrap();
        let (g1, g2) = (greeting(&mut first).await, greeting(&mut second).await);
        let mut both = [g1.clone(), g2];
        both.sort();
        assert_eq!(both, ["a", "b"], "round robin over both members");
        let (mut on_a, mut on_b) = if g1 == "a" {
            (first, second)
        } else {
            (second, first)
        };

        proxy.set_endpoints(vec![endpoint("b", &b)]);
        let mut buf = [0u8; 8];
        let closed = tokio::time::timeout(Duration::from_secs(5), on_a.read(&mut buf))
            .await
            .expect("the connection to a is closed at once");
        assert!(matches!(closed, Ok(0) | Err(_)), "{closed:?}");
        on_b.write_all(b"ping").await.unwrap();
        let mut echoed = [0u8; 4];
        on_b.read_exact(&mut echoed).await.unwrap();
        assert_eq!(&echoed, b"ping", "the connection to b keeps working");
        let mut fresh = TcpStream::connect(&listen).await.unwrap();
        assert_eq!(greeting(&mut fresh).await, "b");
        assert_eq!(
            proxy.connections.lock().unwrap().len(),
            2,
            "a's connection is forgotten"
        );
        proxies.retain(&[]);
    }

    #[tokio::test]
    async fn a_proxy_in_a_zone_sends_clients_there_then_to_the_preferred_zones_then_anywhere() {
        let (a, b, c) = (backend("a").await, backend("b").await, backend("c").await);
        let listen = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            probe.local_addr().unwrap().to_string()
        };
        let zoned = |member: &str, address: &str, zone: &str| Endpoint {
            zone: Some(zone.into()),
            ..endpoint(member, address)
        };
        let proxies = Proxies::new(None).in_zone(Some("z1".into()));
        let mut shape = ProxyShape {
            balancing: Balancing::RoundRobin,
            mode: ProxyMode::Passthrough,
            preferred_zones: vec!["z3".into()],
        };
        proxies.ensure("ns/ro", &listen, &shape).await.unwrap();
        let served = async || {
            let mut seen = Vec::new();
            for _ in 0..4 {
                let mut client = TcpStream::connect(&listen).await.unwrap();
                seen.push(greeting(&mut client).await);
            }
            seen.sort();
            seen.dedup();
            seen
        };
        let all = vec![
            zoned("a", &a, "z1"),
            zoned("b", &b, "z2"),
            zoned("c", &c, "z3"),
        ];
        proxies.route("ns/ro", all.clone());
        assert_eq!(served().await, ["a"], "its own zone first");
        proxies.route("ns/ro", all[1..].to_vec());
        assert_eq!(served().await, ["c"], "then the preferred zone");
        // A change of preferred zones applies without restarting the listener.
        shape.preferred_zones = vec!["z9".into()];
        proxies.ensure("ns/ro", &listen, &shape).await.unwrap();
        assert_eq!(served().await, ["b", "c"], "then any member");
        proxies.retain(&[]);
    }
}
