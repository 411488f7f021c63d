//! The rules of where data comes from that a schema cannot express: a recovery
//! (`spec.bootstrap.recovery`) names a repository of the spec and exactly one target, and never
//! reads from the place the cluster writes to; replicas copied from backups
//! (`spec.replication.copyFrom`) need the WAL archived.

use super::Out;
use crate::{
    api::{CopySource, EngineKind, ReplicationCluster},
    bounded::quoted,
};

pub fn check(cluster: &ReplicationCluster, out: &mut Out<'_>) {
    check_copy_source(&cluster.spec, out);
    check_recovery(cluster, out);
}

fn check_copy_source(spec: &crate::api::ReplicationClusterSpec, out: &mut Out<'_>) {
    if spec.replication.copy_from != CopySource::Backup {
        return;
    }
    let path = "spec.replication.copyFrom";
    if spec.engine != EngineKind::Postgres {
        out.fail(
            path,
            "only PostgreSQL replicas are copied from backups; Redis replicas copy from their master",
        );
    } else if spec.backup.as_ref().is_none_or(|b| b.archive.is_none()) {
        out.fail(
            path,
            "a copy from a backup replays the archived WAL: set spec.backup.archive",
        );
    }
}

fn check_recovery(cluster: &ReplicationCluster, out: &mut Out<'_>) {
    let spec = &cluster.spec;
    let Some(recovery) = spec.bootstrap.as_ref().and_then(|b| b.recovery.as_ref()) else {
        return;
    };
    let path = "spec.bootstrap.recovery";
    if spec.engine != EngineKind::Postgres {
        out.fail(
            path,
            "only PostgreSQL clusters are recovered from backups; for Redis, write a snapshot out with `replicant restore --to FILE` and start the new server on it",
        );
        return;
    }
    let repositories = spec.backup.as_ref().map(|b| &b.repositories[..]);
    if !repositories
        .unwrap_or_default()
        .iter()
        .any(|r| r.name == recovery.repository)
    {
        out.fail(
            format!("{path}.repository"),
            format!(
                "{} names no repository in spec.backup.repositories",
                quoted(&recovery.repository)
            ),
        );
    }
    if let Some(Err((field, why))) = recovery.target.as_ref().map(|t| t.point()) {
        out.fail(format!("{path}.target{field}"), why);
    }
    let own_namespace = cluster.metadata.namespace.as_deref().unwrap_or("default");
    let source_namespace = recovery
        .source
        .namespace
        .as_deref()
        .unwrap_or(own_namespace);
    let written = spec.backup.as_ref().is_some_and(|b| {
        [b.archive_repository(), b.base_repository()]
            .iter()
            .flatten()
            .any(|r| r.name == recovery.repository)
    });
    if written
        && source_namespace == own_namespace
        && Some(recovery.source.cluster.as_str()) == cluster.metadata.name.as_deref()
    {
        out.fail(
            format!("{path}.source"),
            "the source is this cluster, in the repository it archives to: the recovered data set would write its new history among the backups it was recovered from; give the new cluster another name, or recover from another repository",
        );
    }
}
