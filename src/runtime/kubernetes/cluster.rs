//! The ReplicationCluster controller: one reconcile is one round of the shared cluster reconciler.
//!
//! What is the operator's own: the cluster's VirtualNames from the shared store, the rules
//! the API server may not check, Secrets, the ConfigMap journal, Services, status with
//! server-side apply, and Events.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use futures::FutureExt;
use k8s_openapi::api::core::v1::{ConfigMap, Secret as KubeSecret};
use kube::{
    Resource, ResourceExt,
    api::{Api, Patch, PatchParams},
    runtime::controller::Action as ControllerAction,
};
use serde_json::json;

use super::{
    Context, FIELD_MANAGER, OperatorError, events,
    journal::ConfigMapJournalStore,
    routing::{KnownRoutes, Locality, ServiceRouter},
};
use crate::{
    api::{
        Backup, BackupPhase, OnDemandBackupStatus, ReplicationCluster, ReplicationClusterSpec,
        ReplicationClusterStatus, VirtualName,
    },
    core::{
        desired::{Desired, RequestedBackup},
        reconcile::JournalStore,
        routes::Router,
    },
    engine::Secret,
    runtime::reconciler::{
        ClusterReconciler, ClusterSecrets, Notice, RoundInput, RuntimeAdapter, SecretsError,
        StatusStoreError,
    },
    validate::{Document, Resource as SpecResource, rules},
};

/// Offsets and lag change every round; they are republished at most this often.
const VOLATILE_REFRESH: Duration = Duration::from_secs(30);

/// `(name, metadata.generation)` of a cluster and its VirtualNames: a change to any spec
/// changes it.
type Generations = Vec<(String, Option<i64>)>;

/// What the operator keeps about one cluster between rounds (in memory only): the shared
/// reconciler, and what is the operator's own.
pub struct ClusterState {
    reconciler: ClusterReconciler,
    /// The generations last checked (the cluster's, then each name's) and what was found, so
    /// an unchanged spec is not checked again every round.
    checked: Option<(Generations, Vec<String>)>,
    store: Option<Arc<ConfigMapJournalStore>>,
    routes: KnownRoutes,
}

impl ClusterState {
    fn new(namespace: &str, name: &str, metrics: Arc<crate::metrics::Metrics>) -> Self {
        Self {
            reconciler: ClusterReconciler::new(namespace, name, Some(metrics)),
            checked: None,
            store: None,
            routes: Arc::default(),
        }
    }
}

pub async fn reconcile(
    cluster: Arc<ReplicationCluster>,
    ctx: Arc<Context>,
) -> Result<ControllerAction, OperatorError> {
    let namespace = cluster.namespace().unwrap_or_else(|| "default".into());
    let name = cluster.name_any();
    let key = (namespace.clone(), name.clone());
    if cluster.meta().deletion_timestamp.is_some() {
        // The journal ConfigMap and the names' Services go with it (owner references).
        ctx.clusters.lock().expect("not poisoned").remove(&key);
        return Ok(ControllerAction::await_change());
    }
    if ctx.names.wait_until_ready().now_or_never().is_none() {
        // The VirtualName cache is still filling: a round now would see no names.
        return Ok(ControllerAction::requeue(Duration::from_millis(100)));
    }
    let mut state = ctx
        .clusters
        .lock()
        .expect("not poisoned")
        .remove(&key)
        .unwrap_or_else(|| ClusterState::new(&namespace, &name, ctx.metrics.clone()));
    let wait = round(&cluster, &namespace, &mut state, &ctx).await;
    ctx.clusters
        .lock()
        .expect("not poisoned")
        .insert(key, state);
    Ok(wait.map_or_else(ControllerAction::await_change, ControllerAction::requeue))
}

async fn round(
    cluster: &ReplicationCluster,
    namespace: &str,
    state: &mut ClusterState,
    ctx: &Context,
) -> Option<Duration> {
    let name = cluster.name_any();
    let names = virtual_names(ctx, namespace, &name);
    let generations: Generations = std::iter::once((name.clone(), cluster.meta().generation))
        .chain(names.iter().map(|vn| (vn.name_any(), vn.meta().generation)))
        .collect();
    let problems = match &state.checked {
        Some((checked, found)) if *checked == generations => found.clone(),
        _ => {
            let found = problems(cluster, &names);
            state.checked = Some((generations, found.clone()));
            found
        }
    };
    let backups = backups(ctx, namespace, &name);
    let mut desired = Desired::new(
        name.clone(),
        cluster.spec.clone(),
        names.iter().map(|vn| (vn.name_any(), vn.spec.clone())),
    );
    desired.backup_requests = backups
        .iter()
        .filter(|b| !b.status.as_ref().is_some_and(|s| s.phase.is_final()))
        .map(|b| RequestedBackup {
            name: b.name_any(),
            member: b.spec.member.clone(),
        })
        .collect();
    let owner = cluster
        .controller_owner_ref(&())
        .expect("a stored object has a name and uid");
    let store = state
        .store
        .get_or_insert_with(|| {
            let store = ConfigMapJournalStore::new(
                Api::<ConfigMap>::namespaced(ctx.client.clone(), namespace),
                &name,
                owner,
            );
            Arc::new(match ctx.elector.clone() {
                Some(elector) => store.confirming(Arc::new(move || elector.is_leading())),
                None => store,
            })
        })
        .clone();
    let cluster_spec = state
        .reconciler
        .last_good()
        .map_or(&cluster.spec, |d| &d.spec);
    let router = ServiceRouter {
        client: ctx.client.clone(),
        namespace: namespace.to_string(),
        slices: ctx.slices.clone(),
        owners: names
            .iter()
            .filter_map(|vn| Some((vn.name_any(), vn.controller_owner_ref(&())?)))
            .collect(),
        localities: names
            .iter()
            .map(|vn| (vn.name_any(), Locality::of(cluster_spec, &vn.spec)))
            .collect(),
        default_port: default_port(cluster_spec),
        known: state.routes.clone(),
    };
    let adapter = KubernetesAdapter {
        cluster,
        namespace,
        ctx,
        store: store.as_ref(),
        router: &router,
        backups: &backups,
    };
    let input = RoundInput {
        desired,
        problems,
        generation: cluster.meta().generation,
        stored: cluster.status.clone(),
    };
    state.reconciler.round(input, &adapter).await
}

/// The Kubernetes side of one round: Secrets, the ConfigMap journal, Services, status with
/// server-side apply, and Events.
struct KubernetesAdapter<'a> {
    cluster: &'a ReplicationCluster,
    namespace: &'a str,
    ctx: &'a Context,
    store: &'a ConfigMapJournalStore,
    router: &'a ServiceRouter,
    /// The cluster's `Backup` objects, oldest first.
    backups: &'a [Arc<Backup>],
}

#[async_trait]
impl RuntimeAdapter for KubernetesAdapter<'_> {
    fn may_act(&self) -> bool {
        self.ctx.may_act()
    }

    async fn secrets(&self, spec: &ReplicationClusterSpec) -> Result<ClusterSecrets, SecretsError> {
        secrets(self.ctx, self.namespace, &self.cluster.name_any(), spec).await
    }

    fn journal(&self) -> &dyn JournalStore {
        self.store
    }

    fn router(&self) -> &dyn Router {
        self.router
    }

    fn volatile_refresh(&self) -> Duration {
        VOLATILE_REFRESH
    }

    async fn store_status(
        &self,
        status: &ReplicationClusterStatus,
        _error: Option<&str>,
    ) -> Result<(), StatusStoreError> {
        // The error is in the log already; status says what a person can act on.
        let mut status = status.clone();
        super::fill_empty_messages(&mut status.conditions);
        let api: Api<ReplicationCluster> = Api::namespaced(self.ctx.client.clone(), self.namespace);
        let patch = json!({
            "apiVersion": ReplicationCluster::api_version(&()),
            "kind": ReplicationCluster::kind(&()),
            "status": status,
        });
        super::call::call(
            format!("apply status of {}", self.cluster.name_any()),
            api.patch_status(
                &self.cluster.name_any(),
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(patch),
            ),
        )
        .await
        .map(|_| ())
        .map_err(StatusStoreError::new)?;
        self.store_backups(&status).await
    }

    async fn notify(&self, notice: Notice<'_>) {
        match notice {
            Notice::InvalidSpec(problems) => {
                self.ctx
                    .publish_event(self.cluster, events::invalid_spec(problems))
                    .await
            }
            Notice::CannotManage(message) => {
                self.ctx
                    .publish_event(self.cluster, events::cannot_manage(message))
                    .await
            }
            Notice::Round { round, before } => {
                for event in events::for_round(round, before) {
                    self.ctx.publish_event(self.cluster, event).await;
                }
            }
        }
    }
}

impl KubernetesAdapter<'_> {
    /// Each of the cluster's `Backup` objects gets the outcome the round computed for it, when
    /// it differs from what the object shows. A cluster that cannot take base backups ends
    /// them at once, saying why.
    async fn store_backups(
        &self,
        status: &ReplicationClusterStatus,
    ) -> Result<(), StatusStoreError> {
        let api: Api<Backup> = Api::namespaced(self.ctx.client.clone(), self.namespace);
        for backup in self.backups {
            if backup.status.as_ref().is_some_and(|s| s.phase.is_final()) {
                continue;
            }
            let name = backup.name_any();
            let outcome = match &status.backup {
                Some(b) => match b.requests.iter().find(|r| r.name == name) {
                    Some(r) => r.outcome.clone(),
                    None => continue,
                },
                None => match cannot_back_up(&self.cluster.spec) {
                    Some(message) => OnDemandBackupStatus {
                        phase: BackupPhase::Failed,
                        message,
                        ..Default::default()
                    },
                    // This round read no catalog (its spec not taken, its engine not set up):
                    // the request waits.
                    None => continue,
                },
            };
            if backup.status.as_ref() == Some(&outcome) {
                continue;
            }
            let patch = json!({
                "apiVersion": Backup::api_version(&()),
                "kind": Backup::kind(&()),
                "status": outcome,
            });
            super::call::call(
                format!("apply status of Backup {name}"),
                api.patch_status(
                    &name,
                    &PatchParams::apply(FIELD_MANAGER).force(),
                    &Patch::Apply(patch),
                ),
            )
            .await
            .map_err(StatusStoreError::new)?;
        }
        Ok(())
    }
}

/// Why a cluster can never take a backup (a base backup, a Redis snapshot) as its spec stands.
fn cannot_back_up(spec: &ReplicationClusterSpec) -> Option<String> {
    spec.backup
        .is_none()
        .then(|| "the cluster has no repository (spec.backup.repositories)".into())
}

/// The cluster's `Backup` objects, oldest first.
fn backups(ctx: &Context, namespace: &str, cluster: &str) -> Vec<Arc<Backup>> {
    let mut backups: Vec<Arc<Backup>> = ctx
        .backups
        .state()
        .into_iter()
        .filter(|b| b.namespace().as_deref() == Some(namespace) && b.spec.cluster == cluster)
        .filter(|b| b.meta().deletion_timestamp.is_none())
        .collect();
    backups.sort_by(|a, b| {
        (
            a.meta().creation_timestamp.as_ref().map(|t| t.0),
            a.name_any(),
        )
            .cmp(&(
                b.meta().creation_timestamp.as_ref().map(|t| t.0),
                b.name_any(),
            ))
    });
    backups
}

/// The cluster's VirtualNames, by name.
fn virtual_names(ctx: &Context, namespace: &str, cluster: &str) -> Vec<Arc<VirtualName>> {
    let mut names: Vec<Arc<VirtualName>> = ctx
        .names
        .state()
        .into_iter()
        .filter(|vn| vn.namespace().as_deref() == Some(namespace) && vn.spec.cluster == cluster)
        .filter(|vn| vn.meta().deletion_timestamp.is_none())
        .collect();
    names.sort_by_key(|vn| vn.name_any());
    names
}

/// What the schema cannot catch (and what a server without CEL lets through), as `field: reason`.
fn problems(cluster: &ReplicationCluster, names: &[Arc<VirtualName>]) -> Vec<String> {
    let mut documents = vec![Document {
        file: "api".into(),
        index: 1,
        resource: SpecResource::Cluster(Box::new(cluster.clone())),
    }];
    documents.extend(names.iter().enumerate().map(|(i, vn)| Document {
        file: "api".into(),
        index: i + 2,
        resource: SpecResource::VirtualName(Box::new((**vn).clone())),
    }));
    rules::check(&documents)
        .into_iter()
        .map(|p| {
            let object = p.object.unwrap_or_default();
            match p.path {
                Some(path) => format!("{object}: {path}: {}", p.message),
                None => format!("{object}: {}", p.message),
            }
        })
        .collect()
}

fn default_port(spec: &ReplicationClusterSpec) -> u16 {
    spec.members
        .iter()
        .find(|m| m.name == spec.primary)
        .or(spec.members.first())
        .and_then(|m| m.address.rsplit(':').next()?.parse().ok())
        .unwrap_or(6379)
}

/// The secrets `spec` refers to, read from their Secrets.
async fn secrets(
    ctx: &Context,
    namespace: &str,
    name: &str,
    spec: &ReplicationClusterSpec,
) -> Result<ClusterSecrets, SecretsError> {
    let password = referenced_secret(
        ctx,
        namespace,
        Field {
            cluster: name,
            path: "spec.credentials",
            secret_field: "secretRef",
            standalone: "passwordFile and passwordEnv are",
        },
        spec.credentials
            .as_ref()
            .map(|r| r.secret_ref.as_ref().map(|s| (&*s.name, &*s.key))),
    )
    .await?;
    let token = referenced_secret(
        ctx,
        namespace,
        Field {
            cluster: name,
            path: "spec.agentToken",
            secret_field: "secretRef",
            standalone: "tokenFile and tokenEnv are",
        },
        spec.agent_token
            .as_ref()
            .map(|r| r.secret_ref.as_ref().map(|s| (&*s.name, &*s.key))),
    )
    .await?;
    let ca_pem = referenced_secret(
        ctx,
        namespace,
        Field {
            cluster: name,
            path: "spec.agentTls",
            secret_field: "caSecretRef",
            standalone: "caFile is",
        },
        spec.agent_tls
            .as_ref()
            .map(|r| r.ca_secret_ref.as_ref().map(|s| (&*s.name, &*s.key))),
    )
    .await?;
    let mut repository_keys = std::collections::BTreeMap::new();
    for (path, repository, credentials) in spec.s3_credentials() {
        let Some(secret) = &credentials.secret_ref else {
            return Err(SecretsError::unresolved(
                format!("{name}: {path}"),
                "the operator reads the key from a Secret; set secretRef (the files and environment variables are for standalone mode)",
            ));
        };
        let field = format!("{path}.secretRef");
        let read = async |key: &str| read_secret(ctx, namespace, &field, &secret.name, key).await;
        let access_key_id = read("accessKeyId").await?;
        let secret_access_key = read("secretAccessKey").await?;
        repository_keys.insert(
            repository.name.clone(),
            crate::repository::StoreKey::S3 {
                access_key_id,
                secret_access_key,
            },
        );
    }
    for (path, repository, credentials) in spec.azure_credentials() {
        let Some(secret) = &credentials.secret_ref else {
            return Err(SecretsError::unresolved(
                format!("{name}: {path}"),
                "the operator reads the key from a Secret; set secretRef (the file and environment variable are for standalone mode)",
            ));
        };
        let field = format!("{path}.secretRef");
        let account_key = read_secret(ctx, namespace, &field, &secret.name, "accountKey").await?;
        repository_keys.insert(
            repository.name.clone(),
            crate::repository::StoreKey::Azure { account_key },
        );
    }
    for (path, repository, credentials) in spec.gcs_credentials() {
        let Some(secret) = &credentials.secret_ref else {
            return Err(SecretsError::unresolved(
                format!("{name}: {path}"),
                "the operator reads the key from a Secret; set secretRef (the file and environment variable are for standalone mode)",
            ));
        };
        let field = format!("{path}.secretRef");
        let service_account_key =
            read_secret(ctx, namespace, &field, &secret.name, "serviceAccountKey").await?;
        repository_keys.insert(
            repository.name.clone(),
            crate::repository::StoreKey::Gcs {
                service_account_key,
            },
        );
    }
    Ok(ClusterSecrets {
        password: password.map(Secret::new),
        agent_token: token.map(Secret::new),
        agent_ca: ca_pem,
        repository_keys,
    })
}

/// A spec field that refers to a Secret, for messages.
struct Field<'a> {
    cluster: &'a str,
    path: &'a str,
    secret_field: &'a str,
    /// Its standalone-mode alternatives, which the operator does not read.
    standalone: &'a str,
}

/// What a spec field's Secret reference (`reference`: `None` when the field is unset, then
/// the Secret's name and key if it names one) points at.
async fn referenced_secret(
    ctx: &Context,
    namespace: &str,
    field: Field<'_>,
    reference: Option<Option<(&str, &str)>>,
) -> Result<Option<String>, SecretsError> {
    match reference {
        None => Ok(None),
        Some(Some((name, key))) => {
            let path = format!("{}.{}", field.path, field.secret_field);
            read_secret(ctx, namespace, &path, name, key)
                .await
                .map(Some)
        }
        Some(None) => Err(SecretsError::unresolved(
            format!("{}: {}", field.cluster, field.path),
            format!(
                "the operator reads it from a Secret; set {} ({} for standalone mode)",
                field.secret_field, field.standalone
            ),
        )),
    }
}

/// Key `key` of Secret `name`, for the spec field `field` that names it.
async fn read_secret(
    ctx: &Context,
    namespace: &str,
    field: &str,
    name: &str,
    key: &str,
) -> Result<String, SecretsError> {
    let api: Api<KubeSecret> = Api::namespaced(ctx.client.clone(), namespace);
    let secret = super::call::call(format!("get secret {name}"), api.get_opt(name))
        .await
        .map_err(|e| SecretsError::unresolved(field, e))?
        .ok_or_else(|| {
            SecretsError::unresolved(field, format!("Secret {namespace}/{name} not found"))
        })?;
    let value = secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|v| String::from_utf8_lossy(&v.0).into_owned())
        .or_else(|| {
            secret
                .string_data
                .as_ref()
                .and_then(|d| d.get(key))
                .cloned()
        })
        .ok_or_else(|| {
            SecretsError::unresolved(
                field,
                format!("Secret {namespace}/{name} has no key {key:?}"),
            )
        })?;
    Ok(value.trim_end_matches(['\n', '\r']).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(yaml: &str) -> ReplicationCluster {
        serde_yaml::from_str(yaml).unwrap()
    }

    const ORDERS: &str = r#"
apiVersion: replicant.dev/v1alpha1
kind: ReplicationCluster
metadata: {name: orders, namespace: shop}
spec:
  engine: redis
  primary: a
  members:
    - {name: a, address: "10.0.0.1:6380"}
    - {name: b, address: "10.0.0.2:6379"}
"#;

    #[test]
    fn a_rule_the_schema_cannot_express_is_reported_with_its_field_path() {
        assert!(problems(&cluster(ORDERS), &[]).is_empty());
        let bad = cluster(&ORDERS.replace("primary: a", "primary: z"));
        let found = problems(&bad, &[]);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].starts_with("ReplicationCluster/orders: spec.primary:")
                && found[0].contains("\"z\""),
            "{}",
            found[0]
        );
    }

    #[test]
    fn a_virtual_name_naming_a_missing_member_is_a_problem_of_its_cluster() {
        let vn: VirtualName = serde_yaml::from_str(
            "apiVersion: replicant.dev/v1alpha1\nkind: VirtualName\nmetadata: {name: pinned, namespace: shop}\nspec: {cluster: orders, target: nobody}\n",
        )
        .unwrap();
        let found = problems(&cluster(ORDERS), &[Arc::new(vn)]);
        assert!(
            found
                .iter()
                .any(|p| p.starts_with("VirtualName/pinned: spec.target")),
            "{found:?}"
        );
    }

    #[test]
    fn a_huge_value_in_a_stored_spec_is_cut_in_status_and_events() {
        // A server without CEL stores what the schema lets through: long strings included.
        let mut bad = cluster(ORDERS);
        bad.spec.primary = "p".repeat(1_000_000);
        for m in bad.spec.members.iter_mut() {
            m.upstream = Some(format!("{}{}", m.name, "u".repeat(100_000)));
        }
        let found = problems(&bad, &[]);
        assert_eq!(found.len(), 3, "{found:?}");
        assert!(
            found
                .iter()
                .all(|p| p.len() < 2 * crate::bounded::MESSAGE_BYTES)
        );
        assert!(
            found.iter().any(|p| p.contains("…\" (1000000 bytes)")),
            "{found:?}"
        );
        let status = crate::runtime::reconciler::with_spec_problems(
            ReplicationClusterStatus::default(),
            &found,
        );
        for c in &status.conditions {
            assert!(
                c.message.len() <= 1100,
                "{}: {} bytes",
                c.type_,
                c.message.len()
            );
        }
        let event = events::invalid_spec(&found);
        let note = event.note.unwrap();
        assert!(note.len() <= 1024, "{} bytes", note.len());
        assert!(note.ends_with("bytes in all)"), "{note}");
    }

    #[test]
    fn the_service_port_comes_from_the_primary() {
        assert_eq!(default_port(&cluster(ORDERS).spec), 6380);
        let other = cluster(&ORDERS.replace("primary: a", "primary: b"));
        assert_eq!(default_port(&other.spec), 6379);
    }
}
