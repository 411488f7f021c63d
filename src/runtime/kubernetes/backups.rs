//! The Backup controller's own part: a `Backup` naming a cluster that does not exist ends
//! Failed, saying so. Every other `Backup` is taken and reported by its cluster's rounds.
//! Reads ReplicationClusters; writes Backup status with server-side apply.

use std::{sync::Arc, time::Duration};

use kube::{
    Resource, ResourceExt,
    api::{Api, Patch, PatchParams},
    runtime::controller::Action as ControllerAction,
};
use serde_json::json;

use super::{Context, FIELD_MANAGER, OperatorError, call::call};
use crate::api::{Backup, BackupPhase, OnDemandBackupStatus, ReplicationCluster};

/// How long a `Backup` waits for its cluster to appear (applied in the same breath) before it
/// is failed.
const CLUSTER_GRACE: Duration = Duration::from_secs(10);

pub async fn reconcile(
    backup: Arc<Backup>,
    ctx: Arc<Context>,
) -> Result<ControllerAction, OperatorError> {
    if backup.meta().deletion_timestamp.is_some()
        || backup.status.as_ref().is_some_and(|s| s.phase.is_final())
        || !ctx.may_act()
    {
        return Ok(ControllerAction::await_change());
    }
    let namespace = backup.namespace().unwrap_or_else(|| "default".into());
    let clusters: Api<ReplicationCluster> = Api::namespaced(ctx.client.clone(), &namespace);
    let cluster = call(
        format!("get replicationcluster {}", backup.spec.cluster),
        clusters.get_opt(&backup.spec.cluster),
    )
    .await?;
    if cluster.is_some() {
        return Ok(ControllerAction::await_change());
    }
    let age = backup
        .meta()
        .creation_timestamp
        .as_ref()
        .map(|t| jiff::Timestamp::now().duration_since(t.0).unsigned_abs())
        .unwrap_or_default();
    if age < CLUSTER_GRACE {
        return Ok(ControllerAction::requeue(CLUSTER_GRACE - age));
    }
    let status = OnDemandBackupStatus {
        phase: BackupPhase::Failed,
        message: format!(
            "no ReplicationCluster {} in namespace {namespace}",
            backup.spec.cluster
        ),
        ..Default::default()
    };
    let api: Api<Backup> = Api::namespaced(ctx.client.clone(), &namespace);
    let patch = json!({
        "apiVersion": Backup::api_version(&()),
        "kind": Backup::kind(&()),
        "status": status,
    });
    call(
        format!("apply status of Backup {}", backup.name_any()),
        api.patch_status(
            &backup.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(patch),
        ),
    )
    .await?;
    Ok(ControllerAction::await_change())
}
