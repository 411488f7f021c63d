//! The Kubernetes runtime: kube-rs controllers for ReplicationCluster, VirtualName and Backup over the shared reconcile core.
//!
//! A thin adapter, like the standalone runtime: the journal lives in a ConfigMap per cluster,
//! virtual names are Services with operator-owned EndpointSlices, status goes out with
//! server-side apply under one field manager, and only the holder of a Lease acts.

mod backups;
mod call;
mod cluster;
mod events;
mod journal;
pub mod leader;
mod names;
pub mod overview;
pub mod routing;

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use futures::StreamExt;
use kube::{
    Api, Client, Resource, ResourceExt,
    core::ApiResource,
    runtime::{
        Controller,
        controller::Action as ControllerAction,
        events::{Event, Recorder, Reporter},
        reflector::{ObjectRef, Store},
        watcher,
    },
};

pub use self::{
    call::ApiError,
    journal::config_map_name,
    leader::{Elector, LeaseOptions},
};
pub use crate::runtime::reconciler::SPEC_VALID;
use crate::{
    api::{Backup, ReplicationCluster, VirtualName},
    metrics::{self, Metrics},
};

/// The one field manager for everything the operator applies.
pub const FIELD_MANAGER: &str = "replicant";

/// How `replicant operator` was asked to work.
#[derive(Clone, Debug)]
pub struct Options {
    /// Watch only this namespace; all namespaces when unset.
    pub namespace: Option<String>,
    /// `/metrics` and `/healthz`; none when unset.
    pub admin: Option<SocketAddr>,
    /// Leader election; none means this replica acts alone (run only one).
    pub lease: Option<LeaseOptions>,
    /// Identity in the Lease and in Events (the pod name in a Deployment).
    pub identity: String,
}

#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    #[error("cannot configure a Kubernetes client: {0}")]
    Client(#[source] kube::Error),
    #[error("admin address {0}: {1}")]
    Admin(SocketAddr, std::io::Error),
    #[error("the API server serves no EndpointSlice API (discovery.k8s.io v1 or v1beta1)")]
    NoEndpointSlices,
    #[error("leadership lost; exiting so that only the new leader acts")]
    LostLeadership,
    #[error(transparent)]
    Api(#[from] ApiError),
}

/// Shared by every reconcile.
pub struct Context {
    client: Client,
    metrics: Arc<Metrics>,
    recorder: Recorder,
    names: Store<VirtualName>,
    /// On-demand backups, each asked of its cluster's rounds.
    backups: Store<Backup>,
    slices: ApiResource,
    clusters: Mutex<HashMap<(String, String), cluster::ClusterState>>,
    /// The lease this process acts under; none when election is off.
    elector: Option<Arc<Elector>>,
    /// Consecutive failed reconciles per object, for backoff.
    failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    /// Whether this process may act now: it leads (or runs without election).
    fn may_act(&self) -> bool {
        self.elector.as_ref().is_none_or(|e| e.is_leading())
    }

    /// Events are best effort: a failure is logged, never fails the reconcile.
    async fn publish_event<K: Resource<DynamicType = ()>>(&self, object: &K, event: Event) {
        let reference = object.object_ref(&());
        let publish = self.recorder.publish(&event, &reference);
        match tokio::time::timeout(call::API_TIMEOUT, publish).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, reason = %event.reason, "cannot record event"),
            Err(_) => tracing::warn!(reason = %event.reason, "recording an event timed out"),
        }
    }
}

/// Give every condition a message: server-side apply on older API servers (1.20) turns an empty
/// string into null, which the CRD schema then rejects.
fn fill_empty_messages(
    conditions: &mut [k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
) {
    for c in conditions.iter_mut().filter(|c| c.message.is_empty()) {
        c.message = c.reason.clone();
    }
}

/// Run until `shutdown` completes or leadership is lost.
pub async fn run(
    options: Options,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), OperatorError> {
    crate::accept::raise_descriptor_limit();
    super::install_tls_provider();
    let client = Client::try_default().await.map_err(OperatorError::Client)?;
    let metrics = Arc::new(Metrics::default());
    if let Some(addr) = options.admin {
        metrics::start_admin(addr, metrics.clone())
            .await
            .map_err(|e| OperatorError::Admin(addr, e))?;
    }
    tokio::pin!(shutdown);
    let elector = options.lease.clone().map(|lease| {
        Arc::new(Elector::new(
            client.clone(),
            lease,
            options.identity.clone(),
        ))
    });
    let leading = elector.clone();
    metrics.lead_when(move || leading.as_ref().is_none_or(|e| e.is_leading()));
    if let Some(elector) = &elector {
        tracing::info!(identity = %elector.identity(), "waiting to become leader");
        tokio::select! {
            _ = elector.acquire() => {}
            _ = &mut shutdown => return Ok(()),
        }
    }
    let slices = routing::slice_resource(&client)
        .await?
        .ok_or(OperatorError::NoEndpointSlices)?;
    tracing::info!(endpointslices = %slices.api_version, "serving virtual names as Services");

    let (clusters_api, names_api): (Api<ReplicationCluster>, Api<VirtualName>) =
        match &options.namespace {
            Some(ns) => (
                Api::namespaced(client.clone(), ns),
                Api::namespaced(client.clone(), ns),
            ),
            None => (Api::all(client.clone()), Api::all(client.clone())),
        };
    let names_controller = Controller::new(names_api.clone(), watcher::Config::default());
    let names_store = names_controller.store();
    let backups_api: Api<Backup> = match &options.namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let backups_controller = Controller::new(backups_api.clone(), watcher::Config::default());
    let backups_store = backups_controller.store();
    let ctx = Arc::new(Context {
        client: client.clone(),
        metrics,
        recorder: Recorder::new(
            client.clone(),
            Reporter {
                controller: "replicant".into(),
                instance: Some(options.identity.clone()),
            },
        ),
        names: names_store.clone(),
        backups: backups_store,
        slices: slices.clone(),
        clusters: Mutex::new(HashMap::new()),
        elector: elector.clone(),
        failures: Mutex::new(HashMap::new()),
    });

    let slice_api: Api<kube::core::DynamicObject> = match &options.namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &slices),
        None => Api::all_with(client.clone(), &slices),
    };
    let store_for_clusters = names_store.clone();
    let names_run = names_controller
        .owns_with(slice_api, slices.clone(), watcher::Config::default())
        .watches(
            clusters_api.clone(),
            watcher::Config::default(),
            move |cluster: ReplicationCluster| {
                let ns = cluster.namespace();
                let name = cluster.name_any();
                store_for_clusters
                    .state()
                    .into_iter()
                    .filter(|vn| vn.namespace() == ns && vn.spec.cluster == name)
                    .map(|vn| ObjectRef::from_obj(&*vn))
                    .collect::<Vec<_>>()
            },
        )
        .run(
            |vn, ctx| tracked(vn.clone(), ctx.clone(), names::reconcile(vn, ctx)),
            error_policy,
            ctx.clone(),
        )
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "virtual name reconcile");
            }
        });
    let clusters_run = Controller::new(clusters_api, watcher::Config::default())
        .watches(names_api, watcher::Config::default(), |vn: VirtualName| {
            Some(cluster_ref(vn.namespace(), &vn.spec.cluster))
        })
        .watches(backups_api, watcher::Config::default(), |backup: Backup| {
            Some(cluster_ref(backup.namespace(), &backup.spec.cluster))
        })
        .run(
            |cluster, ctx| {
                tracked(
                    cluster.clone(),
                    ctx.clone(),
                    cluster::reconcile(cluster, ctx),
                )
            },
            error_policy,
            ctx.clone(),
        )
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "cluster reconcile");
            }
        });

    let backups_run = backups_controller
        .run(
            |backup, ctx| tracked(backup.clone(), ctx.clone(), backups::reconcile(backup, ctx)),
            error_policy,
            ctx.clone(),
        )
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "backup reconcile");
            }
        });
    let held = async {
        match &elector {
            Some(elector) => elector.hold().await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = names_run => Ok(()),
        _ = backups_run => Ok(()),
        _ = clusters_run => Ok(()),
        _ = held => Err(OperatorError::LostLeadership),
        _ = &mut shutdown => {
            if let Some(elector) = &elector {
                elector.release().await;
            }
            Ok(())
        }
    }
}

/// The cluster `name` in `namespace`.
fn cluster_ref(namespace: Option<String>, name: &str) -> ObjectRef<ReplicationCluster> {
    let cluster = ObjectRef::<ReplicationCluster>::new(name);
    match namespace {
        Some(ns) => cluster.within(&ns),
        None => cluster,
    }
}

/// `Kind/namespace/name`, the key of an object's run of failures.
fn failure_key<K: Resource<DynamicType = ()>>(object: &K) -> String {
    format!(
        "{}/{}/{}",
        K::kind(&()),
        object.meta().namespace.as_deref().unwrap_or(""),
        object.meta().name.as_deref().unwrap_or("")
    )
}

/// Run a reconcile and forget the object's failures once it succeeds.
async fn tracked<K, F>(
    object: Arc<K>,
    ctx: Arc<Context>,
    reconcile: F,
) -> Result<ControllerAction, OperatorError>
where
    K: Resource<DynamicType = ()>,
    F: std::future::Future<Output = Result<ControllerAction, OperatorError>>,
{
    let result = reconcile.await;
    if result.is_ok() {
        ctx.failures
            .lock()
            .expect("not poisoned")
            .remove(&failure_key(&*object));
    }
    result
}

/// Transient errors (the API server) back off per object. A cluster's rounds never get here:
/// the shared reconciler retries them by error class; invalid specs are reported in status and
/// wait for a change.
fn error_policy<K>(object: Arc<K>, error: &OperatorError, ctx: Arc<Context>) -> ControllerAction
where
    K: Resource<DynamicType = ()>,
{
    let failures = {
        let mut all = ctx.failures.lock().expect("not poisoned");
        let count = all.entry(failure_key(&*object)).or_insert(0);
        *count += 1;
        *count
    };
    let wait = crate::runtime::reconciler::backoff(failures);
    tracing::warn!(
        kind = %K::kind(&()),
        name = %object.meta().name.as_deref().unwrap_or(""),
        error = %error,
        retry_in = ?wait,
        "reconcile failed"
    );
    ControllerAction::requeue(wait)
}
