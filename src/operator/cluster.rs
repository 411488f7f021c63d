//! The ReplicationCluster controller: one reconcile is one round of the shared core, then status and Events.
//!
//! Per cluster it keeps, in memory, what the core needs between rounds (probe memory, the last
//! status, the last valid spec, the engine). Reads the cluster's VirtualNames from the shared
//! store and its password from a Secret; writes status with server-side apply.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures::FutureExt;
use k8s_openapi::api::core::v1::{ConfigMap, Secret as KubeSecret};
use kube::{
    Resource, ResourceExt,
    api::{Api, Patch, PatchParams},
    runtime::controller::Action,
};
use serde_json::json;

use super::{
    Context, FIELD_MANAGER, OperatorError, events, journal::ConfigMapJournalStore,
    routing::ServiceRouter,
};
use crate::{
    api::{ReplicationCluster, ReplicationClusterSpec, ReplicationClusterStatus, VirtualName},
    desired::{Desired, NamedVirtualName},
    engine::{AgentAccess, Credentials, Engine, Secret},
    plan::{Finding, findings},
    reconcile::{self, Deps, Memory},
    status,
    validate::{Document, Resource as SpecResource, rules},
};

/// Condition: whether the spec as stored passes every rule (the API server may not check them all).
pub const SPEC_VALID: &str = "SpecValid";
/// Offsets and lag change every round; they are republished at most this often.
const VOLATILE_REFRESH: Duration = Duration::from_secs(30);
/// How often a Secret-backed password is re-read (picks up rotation).
const SECRET_REFRESH: Duration = Duration::from_secs(30);

/// `(name, metadata.generation)` of a cluster and its VirtualNames: a change to any spec
/// changes it.
type Generations = Vec<(String, Option<i64>)>;

/// What the operator remembers about one cluster between rounds (in memory only).
#[derive(Default)]
pub struct ClusterState {
    memory: Memory,
    published: Option<ReplicationClusterStatus>,
    published_at: Option<Instant>,
    last_good: Option<Desired>,
    reported_problems: Vec<String>,
    /// The generations last checked (the cluster's, then each name's) and what was found, so
    /// an unchanged spec is not checked again every round.
    checked: Option<(Generations, Vec<String>)>,
    /// Why the cluster has no engine, as last reported (one Event per new reason).
    cannot_manage: Option<String>,
    engine: Option<EngineSlot>,
    store: Option<Arc<ConfigMapJournalStore>>,
    routes: Arc<Mutex<HashMap<String, Vec<String>>>>,
}

struct EngineSlot {
    spec: ReplicationClusterSpec,
    /// The database password, the agents' token and their CA bundle, as read from their
    /// Secrets.
    password: (Option<String>, Option<String>, Option<String>),
    read_at: Instant,
    engine: Arc<dyn Engine>,
}

pub async fn reconcile(
    cluster: Arc<ReplicationCluster>,
    ctx: Arc<Context>,
) -> Result<Action, OperatorError> {
    let namespace = cluster.namespace().unwrap_or_else(|| "default".into());
    let name = cluster.name_any();
    let key = (namespace.clone(), name.clone());
    if cluster.meta().deletion_timestamp.is_some() {
        // The journal ConfigMap and the names' Services go with it (owner references).
        ctx.clusters.lock().expect("not poisoned").remove(&key);
        return Ok(Action::await_change());
    }
    if !ctx.may_act() {
        // The lease lapsed (this process was frozen, or cannot reach the API server): someone
        // else may be leading now. Act on nothing; the elector exits the process if it is lost.
        tracing::warn!(cluster = %name, "not acting: leadership is not confirmed");
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    if ctx.names.wait_until_ready().now_or_never().is_none() {
        // The VirtualName cache is still filling: a round now would see no names.
        return Ok(Action::requeue(Duration::from_millis(100)));
    }
    let mut state = ctx
        .clusters
        .lock()
        .expect("not poisoned")
        .remove(&key)
        .unwrap_or_default();
    let result = round(&cluster, &namespace, &mut state, &ctx).await;
    ctx.clusters
        .lock()
        .expect("not poisoned")
        .insert(key, state);
    result
}

async fn round(
    cluster: &ReplicationCluster,
    namespace: &str,
    state: &mut ClusterState,
    ctx: &Context,
) -> Result<Action, OperatorError> {
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
    if problems != state.reported_problems {
        if !problems.is_empty() {
            tracing::warn!(cluster = %name, problems = ?problems, "spec rejected; the last good version keeps running");
            ctx.publish_event(cluster, events::invalid_spec(&problems))
                .await;
        }
        state.reported_problems = problems.clone();
    }
    if problems.is_empty() {
        state.last_good = Some(Desired {
            name: name.clone(),
            spec: cluster.spec.clone(),
            virtual_names: names
                .iter()
                .map(|vn| NamedVirtualName {
                    name: vn.name_any(),
                    spec: vn.spec.clone(),
                })
                .collect(),
        });
    }
    let Some(desired) = state.last_good.clone() else {
        let status = with_spec_problems(state.published.clone().unwrap_or_default(), &problems);
        publish(cluster, state, status, ctx).await?;
        return Ok(Action::await_change());
    };
    let engine = match engine(cluster, &desired.spec, namespace, state, ctx).await {
        Ok(engine) => engine,
        Err(message) => {
            tracing::error!(cluster = %name, %message, "cannot manage cluster");
            if state.cannot_manage.as_ref() != Some(&message) {
                ctx.publish_event(cluster, events::cannot_manage(&message))
                    .await;
                state.cannot_manage = Some(message.clone());
            }
            let status = with_stall(
                state.published.clone().unwrap_or_default(),
                "CannotManage",
                &message,
            );
            publish(cluster, state, status, ctx).await?;
            return Ok(Action::requeue(Duration::from_secs(10)));
        }
    };
    state.cannot_manage = None;
    let owner = cluster
        .controller_owner_ref(&())
        .expect("a stored object has a name and uid");
    let store = state
        .store
        .get_or_insert_with(|| {
            Arc::new(ConfigMapJournalStore::new(
                Api::<ConfigMap>::namespaced(ctx.client.clone(), namespace),
                &name,
                owner,
            ))
        })
        .clone();
    let router = ServiceRouter {
        client: ctx.client.clone(),
        namespace: namespace.to_string(),
        slices: ctx.slices.clone(),
        owners: names
            .iter()
            .filter_map(|vn| Some((vn.name_any(), vn.controller_owner_ref(&())?)))
            .collect(),
        default_port: default_port(&desired.spec),
        known: state.routes.clone(),
    };
    let deps = Deps {
        engine: engine.as_ref(),
        store: store.as_ref(),
        router: &router,
    };
    let generation = cluster.meta().generation;
    let round = reconcile::reconcile(
        &desired,
        &mut state.memory,
        state.published.as_ref().or(cluster.status.as_ref()),
        generation,
        &deps,
    )
    .await?;
    // Names repeat across namespaces; metrics label clusters as namespace/name.
    ctx.metrics
        .record_round(&format!("{namespace}/{name}"), &round);
    let before = state.published.as_ref().or(cluster.status.as_ref());
    for event in events::for_round(&round, before) {
        ctx.publish_event(cluster, event).await;
    }
    let status = with_spec_problems(round.status.clone(), &problems);
    publish(cluster, state, status, ctx).await?;
    Ok(Action::requeue(round.plan.requeue_after))
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

/// The cluster's engine, rebuilt when the spec or the Secret's password changes.
async fn engine(
    cluster: &ReplicationCluster,
    spec: &ReplicationClusterSpec,
    namespace: &str,
    state: &mut ClusterState,
    ctx: &Context,
) -> Result<Arc<dyn Engine>, String> {
    if let Some(slot) = &state.engine
        && slot.spec == *spec
        && slot.read_at.elapsed() < SECRET_REFRESH
    {
        return Ok(slot.engine.clone());
    }
    let reference = spec.credentials.as_ref();
    let name = cluster.name_any();
    let password = referenced_secret(
        ctx,
        namespace,
        Field {
            cluster: &name,
            path: "spec.credentials",
            secret_field: "secretRef",
            standalone: "passwordFile and passwordEnv are",
        },
        reference.map(|r| r.secret_ref.as_ref().map(|s| (&*s.name, &*s.key))),
    )
    .await?;
    let token = referenced_secret(
        ctx,
        namespace,
        Field {
            cluster: &name,
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
            cluster: &name,
            path: "spec.agentTls",
            secret_field: "caSecretRef",
            standalone: "caFile is",
        },
        spec.agent_tls
            .as_ref()
            .map(|r| r.ca_secret_ref.as_ref().map(|s| (&*s.name, &*s.key))),
    )
    .await?;
    let password = (password, token, ca_pem);
    if let Some(slot) = &mut state.engine
        && slot.spec == *spec
        && slot.password == password
    {
        slot.read_at = Instant::now();
        return Ok(slot.engine.clone());
    }
    let credentials = Credentials {
        username: reference.and_then(|r| r.username.clone()),
        password: password.0.clone().map(Secret::new),
    };
    let agents = AgentAccess {
        token: password.1.clone().map(Secret::new),
        ca_pem: password.2.clone(),
    };
    let engine = crate::engine::for_cluster(spec, credentials, agents)?;
    state.engine = Some(EngineSlot {
        spec: spec.clone(),
        password,
        read_at: Instant::now(),
        engine: engine.clone(),
    });
    Ok(engine)
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
) -> Result<Option<String>, String> {
    match reference {
        None => Ok(None),
        Some(Some((name, key))) => {
            let path = format!("{}.{}", field.path, field.secret_field);
            read_secret(ctx, namespace, &path, name, key)
                .await
                .map(Some)
        }
        Some(None) => Err(format!(
            "{}: {}: the operator reads it from a Secret; set {} ({} for standalone mode)",
            field.cluster, field.path, field.secret_field, field.standalone
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
) -> Result<String, String> {
    let api: Api<KubeSecret> = Api::namespaced(ctx.client.clone(), namespace);
    let secret = super::call::call(format!("get secret {name}"), api.get_opt(name))
        .await
        .map_err(|e| format!("{field}: {e}"))?
        .ok_or_else(|| format!("{field}: Secret {namespace}/{name} not found"))?;
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
        .ok_or_else(|| format!("{field}: Secret {namespace}/{name} has no key {key:?}"))?;
    Ok(value.trim_end_matches(['\n', '\r']).to_string())
}

fn set_condition(
    status: &mut ReplicationClusterStatus,
    type_: &str,
    value: bool,
    reason: &str,
    message: &str,
) {
    let finding = Finding::new(type_, value, reason, message.to_string());
    let generation = status.observed_generation;
    status::set_condition(
        &mut status.conditions,
        &finding,
        generation,
        jiff::Timestamp::now(),
    );
}

/// Mark the status as stuck on something only a person can fix.
fn with_stall(
    mut status: ReplicationClusterStatus,
    reason: &str,
    message: &str,
) -> ReplicationClusterStatus {
    set_condition(&mut status, findings::READY, false, reason, message);
    set_condition(&mut status, findings::RECONCILING, false, reason, "");
    set_condition(&mut status, findings::STALLED, true, reason, message);
    status
}

/// Add the `SpecValid` condition; an invalid spec also stalls the cluster.
fn with_spec_problems(
    mut status: ReplicationClusterStatus,
    problems: &[String],
) -> ReplicationClusterStatus {
    if problems.is_empty() {
        set_condition(&mut status, SPEC_VALID, true, "Valid", "");
        return status;
    }
    // Each problem is short already; a spec breaking many rules lists the first few.
    let message = crate::bounded::message(format!(
        "the last valid spec keeps running; fix: {}",
        crate::bounded::list(problems, 8, "; ")
    ));
    set_condition(&mut status, SPEC_VALID, false, "InvalidSpec", &message);
    with_stall(status, "InvalidSpec", &message)
}

/// The status without what changes every round, for deciding whether to write.
fn settled(status: &ReplicationClusterStatus) -> ReplicationClusterStatus {
    let mut s = status.clone();
    s.conditions.clear();
    s.position = None;
    for m in &mut s.members {
        m.offset = None;
        m.applied = None;
        m.lag_bytes = None;
    }
    s
}

/// Whether `status` says something `previous` did not: anything but positions and lag at once,
/// those only once the last write is no longer `fresh`. Conditions compare without timestamps.
fn worth_writing(
    previous: Option<&ReplicationClusterStatus>,
    status: &ReplicationClusterStatus,
    fresh: bool,
) -> bool {
    let Some(previous) = previous else {
        return true;
    };
    let same = status::same_conditions(&previous.conditions, &status.conditions)
        && settled(previous) == settled(status);
    !(same && (fresh || previous == status))
}

/// Write status with server-side apply when it says something new.
async fn publish(
    cluster: &ReplicationCluster,
    state: &mut ClusterState,
    mut status: ReplicationClusterStatus,
    ctx: &Context,
) -> Result<(), OperatorError> {
    status.observed_generation = cluster.meta().generation;
    super::fill_empty_messages(&mut status.conditions);
    let previous = state.published.as_ref().or(cluster.status.as_ref());
    let fresh = state
        .published_at
        .is_some_and(|at| at.elapsed() < VOLATILE_REFRESH);
    if !worth_writing(previous, &status, fresh) {
        return Ok(());
    }
    let api: Api<ReplicationCluster> =
        Api::namespaced(ctx.client.clone(), &cluster.namespace().unwrap_or_default());
    let patch = json!({
        "apiVersion": ReplicationCluster::api_version(&()),
        "kind": ReplicationCluster::kind(&()),
        "status": status,
    });
    super::call::call(
        format!("apply status of {}", cluster.name_any()),
        api.patch_status(
            &cluster.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(patch),
        ),
    )
    .await?;
    state.published = Some(status);
    state.published_at = Some(Instant::now());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::MemberStatus;

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
    fn an_invalid_spec_stalls_with_the_problems_and_a_valid_one_clears_it() {
        let problems =
            vec!["ReplicationCluster/orders: spec.primary: unknown member \"z\"".to_string()];
        let stalled = with_spec_problems(ReplicationClusterStatus::default(), &problems);
        let get = |s: &ReplicationClusterStatus, t: &str| {
            s.conditions.iter().find(|c| c.type_ == t).cloned().unwrap()
        };
        assert_eq!(get(&stalled, SPEC_VALID).status, "False");
        assert!(get(&stalled, SPEC_VALID).message.contains("spec.primary"));
        assert_eq!(get(&stalled, findings::STALLED).status, "True");
        assert_eq!(get(&stalled, findings::READY).status, "False");
        let fixed = with_spec_problems(stalled, &[]);
        assert_eq!(get(&fixed, SPEC_VALID).status, "True");
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
        let status = with_spec_problems(ReplicationClusterStatus::default(), &found);
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
    fn offsets_alone_are_written_only_when_the_last_write_is_stale() {
        let member = |offset| MemberStatus {
            name: "a".into(),
            reachable: true,
            offset: Some(offset),
            ..Default::default()
        };
        let before = ReplicationClusterStatus {
            epoch: 1,
            members: vec![member(100)],
            ..Default::default()
        };
        let moved = ReplicationClusterStatus {
            members: vec![member(200)],
            ..before.clone()
        };
        assert!(worth_writing(None, &before, true));
        assert!(!worth_writing(Some(&before), &before, false));
        assert!(!worth_writing(Some(&before), &moved, true));
        assert!(worth_writing(Some(&before), &moved, false));
        let promoted = ReplicationClusterStatus {
            epoch: 2,
            ..before.clone()
        };
        assert!(worth_writing(Some(&before), &promoted, true));
    }

    #[test]
    fn the_service_port_comes_from_the_primary() {
        assert_eq!(default_port(&cluster(ORDERS).spec), 6380);
        let other = cluster(&ORDERS.replace("primary: a", "primary: b"));
        assert_eq!(default_port(&other.spec), 6379);
    }
}
