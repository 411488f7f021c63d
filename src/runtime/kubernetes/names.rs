//! The VirtualName controller: reports where each name points, read back from the EndpointSlices the cluster controller applied.
//!
//! Endpoints move in the cluster controller's round (a failover must not wait for another
//! controller); this one only publishes status. Reads ReplicationClusters and EndpointSlices,
//! writes VirtualName status with server-side apply.

use std::{sync::Arc, time::Duration};

use kube::{
    Resource, ResourceExt,
    api::{Api, Patch, PatchParams},
    runtime::controller::Action as ControllerAction,
};
use serde_json::json;

use super::{Context, FIELD_MANAGER, OperatorError, call::call, routing};
use crate::{
    api::{ReplicationCluster, VirtualName, VirtualNameStatus},
    core::{
        plan::{Finding, findings},
        status,
    },
};

pub async fn reconcile(
    vn: Arc<VirtualName>,
    ctx: Arc<Context>,
) -> Result<ControllerAction, OperatorError> {
    if vn.meta().deletion_timestamp.is_some() {
        return Ok(ControllerAction::await_change());
    }
    let namespace = vn.namespace().unwrap_or_else(|| "default".into());
    let name = vn.name_any();
    let clusters: Api<ReplicationCluster> = Api::namespaced(ctx.client.clone(), &namespace);
    let cluster = call(
        format!("get replicationcluster {}", vn.spec.cluster),
        clusters.get_opt(&vn.spec.cluster),
    )
    .await?;
    let slices = routing::list_slices(&ctx.client, &namespace, &ctx.slices, &name).await?;
    let endpoints = routing::members_of(&slices);

    let summary = endpoints.join(",");
    let (ready, reconciling, stalled) = match &cluster {
        None => (
            Finding::new(
                findings::READY,
                false,
                "ClusterNotFound",
                format!(
                    "ReplicationCluster {namespace}/{} does not exist",
                    vn.spec.cluster
                ),
            ),
            Finding::new(findings::RECONCILING, false, "ClusterNotFound", ""),
            Finding::new(
                findings::STALLED,
                true,
                "ClusterNotFound",
                format!(
                    "create ReplicationCluster {} in namespace {namespace}, or fix spec.cluster",
                    vn.spec.cluster
                ),
            ),
        ),
        Some(_) if slices.is_empty() => (
            Finding::new(
                findings::READY,
                false,
                "Pending",
                "waiting for the cluster's controller to publish endpoints",
            ),
            Finding::new(
                findings::RECONCILING,
                true,
                "Pending",
                "waiting for the cluster's controller to publish endpoints",
            ),
            Finding::new(findings::STALLED, false, "Pending", ""),
        ),
        Some(_) if endpoints.is_empty() => (
            Finding::new(
                findings::READY,
                false,
                "NoEndpoints",
                format!(
                    "no member qualifies for target {} (fallback {:?}); Service {name} refuses connections",
                    vn.spec.target, vn.spec.fallback
                ),
            ),
            Finding::new(
                findings::RECONCILING,
                true,
                "NoEndpoints",
                "waiting for a member to qualify",
            ),
            Finding::new(findings::STALLED, false, "NoEndpoints", ""),
        ),
        Some(_) => (
            Finding::new(
                findings::READY,
                true,
                "Ready",
                format!("Service {name} points at {summary}"),
            ),
            Finding::new(findings::RECONCILING, false, "Ready", ""),
            Finding::new(findings::STALLED, false, "Ready", ""),
        ),
    };
    let generation = vn.meta().generation;
    let previous = vn.status.clone().unwrap_or_default();
    let mut conditions = previous.conditions.clone();
    let now = jiff::Timestamp::now();
    for finding in [&ready, &reconciling, &stalled] {
        status::set_condition(&mut conditions, finding, generation, now);
    }
    super::fill_empty_messages(&mut conditions);
    let status = VirtualNameStatus {
        observed_generation: generation,
        endpoints: endpoints.clone(),
        endpoint_summary: (!summary.is_empty()).then_some(summary),
        service: (!slices.is_empty()).then(|| name.clone()),
        conditions,
    };
    let unchanged = status::same_conditions(&previous.conditions, &status.conditions) && {
        let (mut a, mut b) = (previous.clone(), status.clone());
        a.conditions.clear();
        b.conditions.clear();
        a == b
    };
    if !unchanged {
        let api: Api<VirtualName> = Api::namespaced(ctx.client.clone(), &namespace);
        let patch = json!({
            "apiVersion": VirtualName::api_version(&()),
            "kind": VirtualName::kind(&()),
            "status": status,
        });
        call(
            format!("apply status of virtualname {name}"),
            api.patch_status(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(patch),
            ),
        )
        .await?;
    }
    // Slice changes trigger a reconcile (owned objects); this is a safety net.
    Ok(ControllerAction::requeue(Duration::from_secs(60)))
}
