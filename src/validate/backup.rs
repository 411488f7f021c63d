//! The rules of `spec.backup` a schema cannot express: one kind per repository, unique names,
//! references that resolve, credentials from one source, bounds that make sense.

use super::Out;
use crate::{
    api::{EngineKind, ReplicationClusterSpec},
    bounded::quoted,
};

/// The least `pendingLimit` accepted: a few WAL segments.
pub const MIN_PENDING_LIMIT: u64 = 64 << 20;

/// A store's `endpoint` at `path`, if set, is an http(s) URL.
fn check_endpoint(endpoint: Option<&String>, path: String, out: &mut Out<'_>) {
    if let Some(endpoint) = endpoint
        && !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
    {
        out.fail(
            path,
            format!("{} is not an http:// or https:// URL", quoted(endpoint)),
        );
    }
}

/// Exactly one of a key's sources (`set`: which are) is set, else `path` fails with `reason`.
fn one_source(set: [bool; 3], path: String, reason: &str, out: &mut Out<'_>) {
    if set.iter().filter(|s| **s).count() != 1 {
        out.fail(path, reason);
    }
}

fn check_azure(azure: &crate::api::AzureRepository, path: &str, out: &mut Out<'_>) {
    check_endpoint(azure.endpoint.as_ref(), format!("{path}.endpoint"), out);
    if let Some(credentials) = &azure.credentials {
        one_source(
            [
                credentials.secret_ref.is_some(),
                credentials.account_key_file.is_some(),
                credentials.account_key_env.is_some(),
            ],
            format!("{path}.credentials"),
            "set exactly one of secretRef, accountKeyFile, accountKeyEnv",
            out,
        );
    }
}

fn check_gcs(gcs: &crate::api::GcsRepository, path: &str, out: &mut Out<'_>) {
    check_endpoint(gcs.endpoint.as_ref(), format!("{path}.endpoint"), out);
    if let Some(credentials) = &gcs.credentials {
        one_source(
            [
                credentials.secret_ref.is_some(),
                credentials.service_account_key_file.is_some(),
                credentials.service_account_key_env.is_some(),
            ],
            format!("{path}.credentials"),
            "set exactly one of secretRef, serviceAccountKeyFile, serviceAccountKeyEnv",
            out,
        );
    }
}

pub fn check(spec: &ReplicationClusterSpec, out: &mut Out<'_>) {
    let Some(backup) = &spec.backup else {
        return;
    };
    if backup.repositories.is_empty() {
        out.fail("spec.backup.repositories", "name at least one repository");
    }
    for (i, repository) in backup.repositories.iter().enumerate() {
        let path = format!("spec.backup.repositories[{i}]");
        if backup.repositories[..i]
            .iter()
            .any(|r| r.name == repository.name)
        {
            out.fail(
                format!("{path}.name"),
                format!("{} is named twice", quoted(&repository.name)),
            );
        }
        let kinds = [
            repository.directory.is_some(),
            repository.s3.is_some(),
            repository.azure.is_some(),
            repository.gcs.is_some(),
        ];
        if kinds.iter().filter(|k| **k).count() != 1 {
            out.fail(&path, "set exactly one of directory, s3, azure, gcs");
        }
        if let Some(azure) = &repository.azure {
            check_azure(azure, &format!("{path}.azure"), out);
        }
        if let Some(gcs) = &repository.gcs {
            check_gcs(gcs, &format!("{path}.gcs"), out);
        }
        if let Some(directory) = &repository.directory
            && !directory.path.starts_with('/')
        {
            out.fail(
                format!("{path}.directory.path"),
                format!(
                    "{} is not absolute: each host's agent resolves it on its own",
                    quoted(&directory.path)
                ),
            );
        }
        let Some(s3) = &repository.s3 else {
            continue;
        };
        check_endpoint(s3.endpoint.as_ref(), format!("{path}.s3.endpoint"), out);
        if let Some(credentials) = &s3.credentials {
            let files = [
                &credentials.access_key_id_file,
                &credentials.secret_access_key_file,
            ];
            let envs = [
                &credentials.access_key_id_env,
                &credentials.secret_access_key_env,
            ];
            let both = |pair: [&Option<String>; 2]| pair.iter().all(|f| f.is_some());
            let any = |pair: [&Option<String>; 2]| pair.iter().any(|f| f.is_some());
            let sources = [credentials.secret_ref.is_some(), any(files), any(envs)];
            if sources.iter().filter(|s| **s).count() != 1
                || (any(files) && !both(files))
                || (any(envs) && !both(envs))
            {
                out.fail(
                    format!("{path}.s3.credentials"),
                    "set exactly one of secretRef, both accessKeyIdFile and secretAccessKeyFile, or both accessKeyIdEnv and secretAccessKeyEnv",
                );
            }
        }
    }
    if let Some(retention) = &backup.retention
        && retention.min_full_backups == 0
    {
        out.fail(
            "spec.backup.retention.minFullBackups",
            "must be at least 1: a repository without a base backup recovers nothing",
        );
    }
    if let Some(base) = &backup.base {
        if let Err(e) = base.schedule.parse::<crate::api::schedule::Schedule>() {
            out.fail(
                "spec.backup.base.schedule",
                format!("{}: {e}", quoted(&base.schedule)),
            );
        }
        // Redis snapshots are read over the replication protocol, by the controller.
        if spec.engine == EngineKind::Postgres && spec.members.iter().all(|m| m.agent.is_none()) {
            out.fail(
                "spec.backup.base",
                "base backups are taken by the members' node agents, and no member names one (spec.members[].agent)",
            );
        }
        named_repository(backup, "spec.backup.base.repository", &base.repository, out);
    }
    if let Some(drill) = &backup.drill {
        if spec.engine != EngineKind::Postgres {
            out.fail(
                "spec.backup.drill",
                "restore drills are for PostgreSQL clusters",
            );
        }
        if let Err(e) = drill.schedule.parse::<crate::api::schedule::Schedule>() {
            out.fail(
                "spec.backup.drill.schedule",
                format!("{}: {e}", quoted(&drill.schedule)),
            );
        }
        if backup.archive.is_none() {
            out.fail(
                "spec.backup.drill",
                "a drill replays archived WAL: set spec.backup.archive too",
            );
        }
    }
    let Some(archive) = &backup.archive else {
        return;
    };
    if spec.engine != EngineKind::Postgres {
        out.fail(
            "spec.backup.archive",
            "WAL archiving is for PostgreSQL clusters",
        );
    }
    named_repository(
        backup,
        "spec.backup.archive.repository",
        &archive.repository,
        out,
    );
    if archive.pending_limit.bytes() < MIN_PENDING_LIMIT {
        out.fail(
            "spec.backup.archive.pendingLimit",
            format!(
                "{} is below 64Mi: a host could not even hold a few WAL segments while the repository is away",
                archive.pending_limit
            ),
        );
    }
    if archive.pending_warning() >= archive.pending_limit.bytes() {
        out.fail(
            "spec.backup.archive.pendingWarning",
            "must be below pendingLimit, or the warning comes only when WAL is already let go",
        );
    }
    if spec.members.iter().all(|m| m.agent.is_none()) {
        out.fail(
            "spec.backup.archive",
            "archiving runs in the members' node agents, and no member names one (spec.members[].agent)",
        );
    }
}

/// A reference to a repository (at `path`) names one of `spec.backup.repositories`.
fn named_repository(
    backup: &crate::api::BackupPolicy,
    path: &str,
    name: &Option<String>,
    out: &mut Out<'_>,
) {
    if let Some(name) = name
        && !backup.repositories.iter().any(|r| &r.name == name)
    {
        out.fail(
            path,
            format!(
                "{} names no repository in spec.backup.repositories",
                quoted(name)
            ),
        );
    }
}
