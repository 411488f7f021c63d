//! `replicant backup take|list` and `replicant restore` for Redis clusters: an RDB snapshot
//! read from a streaming replica (the primary when none streams) over the replication
//! protocol, into the cluster's repository; and one written back out as a `dump.rdb` for a
//! new server. Talks to the members' servers and the repository; writes the file it is given.

use std::{path::Path, process::ExitCode, time::Duration};

use super::{
    CliError,
    which::{Cluster, Which},
};
use crate::{
    api::{Role, human_bytes},
    engine::{AgentAccess, Credentials, redis_snapshots::take_snapshot},
    repository::snapshot::Snapshot,
};

fn credentials(cluster: &Cluster) -> Credentials {
    Credentials {
        username: cluster
            .spec
            .credentials
            .as_ref()
            .and_then(|c| c.username.clone()),
        password: cluster.secrets.password.clone(),
    }
}

fn describe(snapshot: &Snapshot) -> String {
    let took = snapshot.finished_at.duration_since(snapshot.started_at);
    format!(
        "{} from {}: {} ({} stored, {}) in {:.1}s",
        snapshot.id,
        snapshot.member,
        human_bytes(snapshot.raw_bytes),
        human_bytes(snapshot.stored_bytes),
        snapshot.compression.name(),
        took.as_secs_f64()
    )
}

/// Take a snapshot now, from `member` or the best one, within `timeout`.
pub(super) async fn take(
    which: &Which,
    cluster: &Cluster,
    member: Option<&str>,
    timeout: Duration,
) -> Result<ExitCode, CliError> {
    let repository = which.open(cluster)?;
    let credentials = credentials(cluster);
    let engine =
        crate::engine::for_cluster(&cluster.spec, credentials.clone(), AgentAccess::default())
            .map_err(|e| CliError::Invalid(e.to_string()))?;
    let mut candidates = Vec::new();
    for m in &cluster.spec.members {
        if member.is_some_and(|wanted| wanted != m.name) {
            continue;
        }
        match engine.observe(m, None).await.server {
            Ok(probe) => {
                let streaming = probe.role == Role::Replica && probe.link_up == Some(true);
                if probe.role == Role::Master || streaming {
                    candidates.push((streaming, m));
                }
            }
            Err(e) => eprintln!("{}: {e}", m.name),
        }
    }
    // A streaming replica first: the primary's clients never share it with a snapshot.
    candidates.sort_by_key(|(streaming, _)| !streaming);
    let Some((_, source)) = candidates.into_iter().next() else {
        return Err(CliError::Invalid(
            "no member answers as the primary or a streaming replica".into(),
        ));
    };
    eprintln!("taking a snapshot from {}", source.name);
    let codec = cluster
        .spec
        .backup
        .as_ref()
        .map(|b| b.compression.into())
        .unwrap_or_default();
    let taken = take_snapshot(
        (&repository, codec),
        (&cluster.namespace, &cluster.name),
        (&source.name, &source.address),
        &credentials,
        None,
    );
    let snapshot = tokio::time::timeout(timeout, taken)
        .await
        .map_err(|_| CliError::Invalid("the snapshot did not finish within the timeout".into()))?
        .map_err(|e| CliError::Invalid(e.to_string()))?;
    println!("{}", describe(&snapshot));
    Ok(ExitCode::SUCCESS)
}

/// List the repository's snapshots of the cluster, oldest first.
pub(super) async fn list(which: &Which, cluster: &Cluster) -> Result<ExitCode, CliError> {
    let repository = which.open(cluster)?;
    let snapshots = repository
        .snapshots(&cluster.namespace, &cluster.name)
        .await
        .map_err(|e| CliError::Invalid(e.to_string()))?;
    if snapshots.is_empty() {
        println!(
            "no snapshot of {}/{} in {}",
            cluster.namespace,
            cluster.name,
            repository.name()
        );
    }
    for snapshot in &snapshots {
        println!("{}", describe(snapshot));
    }
    Ok(ExitCode::SUCCESS)
}

/// Write the newest snapshot taken at or before `before` (the newest of all without it) to
/// `to`, a file that must not exist yet: a `dump.rdb` for a new server.
pub(super) async fn restore(
    which: &Which,
    cluster: &Cluster,
    to: &Path,
    before: Option<jiff::Timestamp>,
) -> Result<ExitCode, CliError> {
    let repository = which.open(cluster)?;
    let snapshots = repository
        .snapshots(&cluster.namespace, &cluster.name)
        .await
        .map_err(|e| CliError::Invalid(e.to_string()))?;
    let chosen = snapshots
        .iter()
        .rev()
        .find(|s| before.is_none_or(|t| s.finished_at <= t))
        .ok_or_else(|| {
            CliError::Invalid(match (before, snapshots.first()) {
                (Some(t), Some(oldest)) => format!(
                    "no snapshot finished by {t}: the oldest finished at {}",
                    oldest.finished_at
                ),
                _ => format!(
                    "no snapshot of {}/{} in {}",
                    cluster.namespace,
                    cluster.name,
                    repository.name()
                ),
            })
        })?;
    let written = repository
        .restore_snapshot((&cluster.namespace, &cluster.name), chosen, to)
        .await
        .map_err(|e| CliError::Invalid(e.to_string()))?;
    println!(
        "{}: written to {} ({}); start a new redis-server with --dir {} --dbfilename {}",
        describe(chosen),
        to.display(),
        human_bytes(written),
        to.parent().unwrap_or(Path::new(".")).display(),
        to.file_name().unwrap_or_default().to_string_lossy()
    );
    Ok(ExitCode::SUCCESS)
}
