//! Built-in TCP proxies for virtual names: one listener per name, forwarding to its current endpoints.
//!
//! Retargeting swaps the endpoint list; connections to a member that left the list are closed
//! at once, so clients of a demoted master reconnect to the new one instead of lingering.

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

use crate::metrics::Metrics;
use crate::{api::Balancing, plan::Endpoint, reconcile::Router};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// One virtual name's proxy.
struct NameProxy {
    listen: String,
    balancing: Balancing,
    endpoints: watch::Sender<Option<Vec<Endpoint>>>,
    next: AtomicUsize,
    active: Mutex<HashMap<String, usize>>,
    task: Mutex<Option<JoinHandle<()>>>,
}

/// Every proxy of the process, keyed by virtual name (`namespace/name`).
#[derive(Default)]
pub struct Proxies {
    names: Mutex<HashMap<String, Arc<NameProxy>>>,
    metrics: Option<Arc<Metrics>>,
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
        }
    }

    /// Make sure `name` listens on `listen`; a changed address or policy restarts the listener
    /// (keeping its endpoints).
    pub async fn ensure(
        &self,
        name: &str,
        listen: &str,
        balancing: Balancing,
    ) -> Result<(), ListenError> {
        let existing = self.names.lock().expect("lock").get(name).cloned();
        if let Some(proxy) = &existing
            && proxy.listen == listen
            && proxy.balancing == balancing
        {
            return Ok(());
        }
        let endpoints = existing.as_ref().and_then(|p| p.endpoints.borrow().clone());
        if let Some(old) = existing {
            old.stop();
        }
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|source| ListenError {
                name: name.to_string(),
                listen: listen.to_string(),
                source,
            })?;
        let proxy = Arc::new(NameProxy {
            listen: listen.to_string(),
            balancing,
            endpoints: watch::channel(endpoints).0,
            next: AtomicUsize::new(0),
            active: Mutex::default(),
            task: Mutex::new(None),
        });
        let task = tokio::spawn(serve(
            listener,
            proxy.clone(),
            name.to_string(),
            self.metrics.clone(),
        ));
        *proxy.task.lock().expect("lock") = Some(task);
        self.names
            .lock()
            .expect("lock")
            .insert(name.to_string(), proxy);
        Ok(())
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

    fn get(&self, name: &str) -> Option<Arc<NameProxy>> {
        self.names.lock().expect("lock").get(name).cloned()
    }
}

impl NameProxy {
    fn stop(&self) {
        if let Some(task) = self.task.lock().expect("lock").take() {
            task.abort();
        }
        // Closing every connection: an endpoint list of none.
        self.endpoints.send_replace(Some(Vec::new()));
    }

    fn pick(&self) -> Option<Endpoint> {
        let endpoints = self.endpoints.borrow().clone().unwrap_or_default();
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
                    .cloned()
            }
        }
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
) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let proxy = proxy.clone();
        let name = name.clone();
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let Some(endpoint) = proxy.pick() else {
                return; // nothing to send the client to: close at once
            };
            let Ok(Ok(backend)) =
                tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&endpoint.address)).await
            else {
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = backend.set_nodelay(true);
            if let Some(m) = &metrics {
                m.proxy_connection(&name, 1);
            }
            proxy.track(&endpoint.member, 1);
            let (to_backend, to_client) = relay(
                client,
                backend,
                proxy.endpoints.subscribe(),
                &endpoint.member,
            )
            .await;
            proxy.track(&endpoint.member, -1);
            if let Some(m) = &metrics {
                m.proxy_connection(&name, -1);
                m.proxy_bytes(&name, to_backend, to_client);
            }
        });
    }
}

/// Copy both ways until either side closes or `member` leaves the endpoint list.
async fn relay(
    mut client: TcpStream,
    mut backend: TcpStream,
    mut endpoints: watch::Receiver<Option<Vec<Endpoint>>>,
    member: &str,
) -> (u64, u64) {
    let still_listed = |list: &Option<Vec<Endpoint>>| {
        list.as_ref()
            .is_some_and(|l| l.iter().any(|e| e.member == member))
    };
    let removed = async {
        loop {
            if !still_listed(&endpoints.borrow_and_update()) {
                return;
            }
            if endpoints.changed().await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        copied = tokio::io::copy_bidirectional(&mut client, &mut backend) => copied.unwrap_or((0, 0)),
        () = removed => (0, 0),
    }
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

    async fn retarget(&self, name: &str, endpoints: &[Endpoint]) -> Result<(), String> {
        match self.keys.get(name).and_then(|k| self.proxies.get(k)) {
            Some(proxy) => {
                proxy.endpoints.send_replace(Some(endpoints.to_vec()));
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
