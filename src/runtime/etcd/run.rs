//! `replicant run --coordinator etcd://...`: the same command on every host. Each instance keeps
//! an etcd session, registers itself, serves the virtual names' proxies from the routes in
//! etcd, and campaigns; the one that leads drives every cluster of its spec directory through
//! the shared reconciler, with its journal, routes and status in etcd under its fence. The
//! others probe, so that the next leader knows how long a member has been silent.

use std::{
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use etcd_client::Client;
use tokio::sync::watch;

use super::{
    Coordinator, CoordinatorError, EtcdJournalStore, Fence, Keys, Leadership, Session,
    leader::{ElectionOptions, campaign},
    routes::{self, EtcdRouter, Follower},
    status::{self, InstanceReport},
};
use crate::{
    api::{ReplicationClusterSpec, ReplicationClusterStatus},
    core::{desired::NamedVirtualName, reconcile::JournalStore, routes::Router},
    metrics::{self, Metrics},
    proxy::Proxies,
    runtime::{
        reconciler::{
            ClusterReconciler, ClusterSecrets, Notice, RuntimeAdapter, SecretsError,
            StatusStoreError,
        },
        report::report,
        spec_loop::{
            ClusterRunner, Coordination, Input, SpecDirError, round_input, secrets::local_secrets,
            serve_specs,
        },
    },
};

/// How `replicant run --coordinator` was asked to work.
#[derive(Clone, Debug)]
pub struct EtcdOptions {
    pub specs: PathBuf,
    pub admin: Option<std::net::SocketAddr>,
    pub rescan: Duration,
    pub coordinator: Coordinator,
    /// This instance's name among the others: unique, stable across restarts.
    pub identity: String,
    /// The session lease: how long a dead leader holds on, and how long a proxy cut off from
    /// etcd keeps routing (less a margin).
    pub lease: Duration,
    /// Where this host's proxies listen, instead of the host part of each name's `listen`.
    pub proxy_host: Option<String>,
    /// This host's zone: proxies prefer members there.
    pub zone: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum EtcdRunError {
    #[error(transparent)]
    Coordinator(#[from] CoordinatorError),
    #[error(transparent)]
    Specs(#[from] SpecDirError),
    #[error("admin address {0}: {1}")]
    Admin(std::net::SocketAddr, std::io::Error),
}

/// What every part of the process shares.
struct Shared {
    client: Client,
    keys: Keys,
    options: EtcdOptions,
    metrics: Arc<Metrics>,
    /// This process's leadership, while it has one.
    leadership: watch::Sender<Option<Arc<Leadership>>>,
    /// The session of the moment, to register under.
    session: watch::Sender<Option<Arc<Session>>>,
    instance: Mutex<InstanceReport>,
}

impl Shared {
    fn timeout(&self) -> Duration {
        self.options.coordinator.timeout
    }

    /// How long adding a member to a name waits for the proxies: past the lease of one that is
    /// cut off, which stopped routing before etcd can let its lease go.
    fn ack_wait(&self) -> Duration {
        Duration::from_secs(super::session::lease_seconds(self.options.lease) as u64)
            + self.timeout()
    }
}

/// Run until `shutdown` completes.
pub async fn run(
    options: EtcdOptions,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), EtcdRunError> {
    crate::accept::raise_descriptor_limit();
    let client = options.coordinator.connect().await?;
    let metrics = Arc::new(Metrics::default());
    if let Some(addr) = options.admin {
        metrics::start_admin(addr, metrics.clone())
            .await
            .map_err(|e| EtcdRunError::Admin(addr, e))?;
    }
    let session = watch::channel(None::<Arc<Session>>).0;
    let current = session.subscribe();
    let gate = Arc::new(move || current.borrow().as_ref().is_some_and(|s| s.alive()));
    let proxies =
        Arc::new(Proxies::gated(Some(metrics.clone()), gate).in_zone(options.zone.clone()));
    let shared = Arc::new(Shared {
        client,
        keys: Keys::new(&options.coordinator.prefix),
        instance: Mutex::new(InstanceReport {
            identity: options.identity.clone(),
            proxy_host: options.proxy_host.clone(),
            spec_problems: Vec::new(),
        }),
        options,
        metrics,
        leadership: watch::channel(None).0,
        session,
    });
    let leadership = shared.leadership.subscribe();
    shared
        .metrics
        .lead_when(move || leadership.borrow().as_ref().is_some_and(|l| l.may_act()));
    let membership = tokio::spawn(membership(shared.clone(), proxies));
    let specs = shared.options.specs.clone();
    let rescan = shared.options.rescan;
    let served = serve_specs(&specs, rescan, shared.clone(), shutdown).await;
    membership.abort();
    // Hand over at once rather than a lease later.
    let session = shared.session.borrow().clone();
    shared.leadership.send_replace(None);
    if let Some(session) = session {
        session.close(&shared.client, shared.timeout()).await;
    }
    served.map_err(Into::into)
}

/// Keep a session, and under it this instance's registration, its proxies and its campaign; open
/// a new one whenever the last is lost.
async fn membership(shared: Arc<Shared>, proxies: Arc<Proxies>) {
    let follower = Follower {
        client: shared.client.clone(),
        keys: shared.keys.clone(),
        identity: shared.options.identity.clone(),
        proxies,
        proxy_host: shared.options.proxy_host.clone(),
        timeout: shared.timeout(),
    };
    let mut failures = 0;
    loop {
        let opened = Session::open(&shared.client, shared.options.lease, shared.timeout()).await;
        let session = match opened {
            Ok(session) => Arc::new(session),
            Err(error) => {
                failures += 1;
                if failures == 1 || failures % 20 == 0 {
                    tracing::warn!(%error, "etcd unreachable: not leading, proxies not routing");
                }
                tokio::time::sleep(crate::runtime::reconciler::backoff(failures.min(3))).await;
                continue;
            }
        };
        failures = 0;
        tracing::info!(lease = session.lease, "etcd session open");
        shared.session.send_replace(Some(session.clone()));
        register(&shared, &session).await;
        tokio::select! {
            _ = follower.follow(&session) => {}
            _ = lead(&shared, &session) => {}
        }
        shared.leadership.send_replace(None);
        shared.session.send_replace(None);
        tracing::warn!("etcd session lost: not leading; proxies stopped until a new one is open");
    }
}

/// Put this instance's key under `session`, until it is there or the session is lost. Until
/// then this instance neither serves nor campaigns.
async fn register(shared: &Shared, session: &Session) {
    let mut reported = None;
    loop {
        let instance = shared.instance.lock().expect("lock").clone();
        match status::register(
            &shared.client,
            &shared.keys,
            session,
            &instance,
            shared.timeout(),
        )
        .await
        {
            Ok(()) => return,
            Err(error) if session.lost() => {
                tracing::warn!(%error, "cannot register this instance");
                return;
            }
            Err(error) => {
                // Logged once each time it changes, not every 200ms.
                let said = error.to_string();
                if reported.as_ref() != Some(&said) {
                    tracing::error!(%error, "cannot register this instance: not serving, not leading");
                    reported = Some(said);
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// Campaign, lead while the leader key stays this session's, and campaign again after
/// stepping down; returns once the session is lost.
async fn lead(shared: &Shared, session: &Arc<Session>) {
    let options = ElectionOptions {
        key: shared.keys.leader(),
        identity: shared.options.identity.clone(),
        timeout: shared.timeout(),
    };
    loop {
        let leadership = match campaign(&shared.client, session, &options).await {
            Ok(leadership) => Arc::new(leadership),
            Err(_) => return, // the session is lost
        };
        tracing::info!(token = leadership.fence.token, "leading");
        shared.leadership.send_replace(Some(leadership.clone()));
        loop {
            tokio::select! {
                _ = session.ended() => return,
                _ = tokio::time::sleep(session.ttl / 3) => {}
            }
            // Someone may have deleted the key by hand: then another may lead already.
            if let Ok(false) = leadership.confirmed(&shared.client, shared.timeout()).await {
                tracing::warn!("the leader key is no longer this process's: stepping down");
                break;
            }
        }
        shared.leadership.send_replace(None);
    }
}

#[async_trait]
impl Coordination for Shared {
    async fn report_problems(&self, problems: &[String]) {
        self.instance.lock().expect("lock").spec_problems = problems.to_vec();
        let session = self.session.borrow().clone();
        if let Some(session) = session {
            let instance = self.instance.lock().expect("lock").clone();
            let registered = status::register(
                &self.client,
                &self.keys,
                &session,
                &instance,
                self.timeout(),
            )
            .await;
            if let Err(error) = registered {
                tracing::warn!(%error, "the spec problems are not shown in etcd");
            }
        }
    }

    async fn keep_names(&self, keep: &[String]) {
        let leadership = self.leadership.borrow().clone();
        let Some(leadership) = leadership.filter(|l| l.may_act()) else {
            return;
        };
        let fence = &leadership.fence;
        if let Err(error) =
            routes::retain(&self.client, &self.keys, fence, keep, self.timeout()).await
        {
            tracing::warn!(%error, "cannot retire the routes of removed names");
        }
    }

    fn runner(&self, namespace: &str, name: &str) -> Box<dyn ClusterRunner> {
        Box::new(EtcdRunner {
            client: self.client.clone(),
            keys: self.keys.clone(),
            namespace: namespace.to_string(),
            timeout: self.timeout(),
            ack_wait: self.ack_wait(),
            leadership: self.leadership.subscribe(),
            reconciler: ClusterReconciler::new(namespace, name, Some(self.metrics.clone())),
            shapes_published: None,
        })
    }
}

struct EtcdRunner {
    client: Client,
    keys: Keys,
    namespace: String,
    timeout: Duration,
    ack_wait: Duration,
    leadership: watch::Receiver<Option<Arc<Leadership>>>,
    reconciler: ClusterReconciler,
    /// The names whose shapes were last published, and under which fencing token: only the
    /// leader writes routes, so they need publishing again only when either changes.
    shapes_published: Option<(i64, Vec<NamedVirtualName>)>,
}

#[async_trait]
impl ClusterRunner for EtcdRunner {
    async fn round(&mut self, current: &Input) -> Option<Duration> {
        let leadership = self.leadership.borrow_and_update().clone();
        let name = &current.desired.name;
        // A process that does not lead writes under a fence that matches nothing.
        let fence = leadership.as_ref().map_or_else(
            || Fence {
                leader_key: self.keys.leader(),
                token: 0,
            },
            |l| l.fence.clone(),
        );
        let mut journal = EtcdJournalStore::new(
            self.client.clone(),
            self.keys.journal(&self.namespace, name),
            fence.clone(),
            self.timeout,
        );
        if let Some(leadership) = &leadership {
            journal = journal.under(leadership.session.clone());
        }
        let router = EtcdRouter::new(
            self.client.clone(),
            self.keys.clone(),
            &self.namespace,
            &current.desired,
            fence.clone(),
            self.timeout,
            self.ack_wait,
        );
        let may_act = leadership.as_ref().is_some_and(|l| l.may_act());
        let published = (fence.token, current.desired.virtual_names.clone());
        if may_act && self.shapes_published.as_ref() != Some(&published) {
            match router.publish_shapes().await {
                Ok(()) => self.shapes_published = Some(published),
                Err(error) => {
                    tracing::warn!(cluster = %name, %error, "cannot publish the virtual names' shapes")
                }
            }
        }
        let adapter = EtcdAdapter {
            input: current,
            client: &self.client,
            keys: &self.keys,
            fence: &fence,
            may_act,
            timeout: self.timeout,
            journal: &journal,
            router: &router,
        };
        self.reconciler.round(round_input(current), &adapter).await
    }

    async fn woken(&mut self) {
        if self.leadership.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// The etcd side of one round.
struct EtcdAdapter<'a> {
    input: &'a Input,
    client: &'a Client,
    keys: &'a Keys,
    fence: &'a Fence,
    may_act: bool,
    timeout: Duration,
    journal: &'a EtcdJournalStore,
    router: &'a EtcdRouter,
}

#[async_trait]
impl RuntimeAdapter for EtcdAdapter<'_> {
    fn may_act(&self) -> bool {
        self.may_act
    }

    async fn secrets(&self, spec: &ReplicationClusterSpec) -> Result<ClusterSecrets, SecretsError> {
        local_secrets(spec)
    }

    fn journal(&self) -> &dyn JournalStore {
        self.journal
    }

    fn router(&self) -> &dyn Router {
        self.router
    }

    fn volatile_refresh(&self) -> Duration {
        // Every status write is a write to etcd's log: positions alone go at most this often.
        Duration::from_secs(2)
    }

    async fn store_status(
        &self,
        status: &ReplicationClusterStatus,
        error: Option<&str>,
    ) -> Result<(), StatusStoreError> {
        let report = report(
            self.input,
            status.clone(),
            self.router,
            error.map(str::to_string),
        )
        .await;
        status::store(self.client, self.keys, self.fence, &report, self.timeout)
            .await
            .map_err(StatusStoreError::new)
    }

    async fn notify(&self, _notice: Notice<'_>) {
        // The reconciler's log lines are all there is to tell here.
    }
}
