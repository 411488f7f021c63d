//! A new cluster's first data set recovered from another cluster's backups: the base backup
//! the target needs, restored into a work directory beside the data directory, checked against
//! its manifest, replayed by a postgres of the agent's own to the target and promoted, made
//! this cluster's (its users' passwords and client authentication), and swapped into the empty
//! data directory only when complete. Touches the repository, the work directory, and the data
//! directory only at the end.

use std::path::Path;

use super::{
    Options,
    host::{self, HostError},
    replay::{self, ReplayServer},
    restore,
};
use crate::{engine::postgres::archive::RecoveryRequest, repository::Repository};

/// Recover into the vacant data directory as `request` asks. A target outside what the
/// repository can reach is refused before anything is written.
pub async fn recover(options: &Options, request: &RecoveryRequest) -> Result<(), HostError> {
    let superuser = options.superuser.password.as_ref().ok_or_else(|| {
        HostError::Refused(
            "this host has no superuser password (--superuser-password-file or --superuser-password-env), so it does not create data sets".into(),
        )
    })?;
    if !host::vacant(&options.data) {
        return Err(HostError::Refused(format!(
            "{} is not empty: a data set is only recovered into an empty directory",
            options.data.display()
        )));
    }
    let settings = &request.settings;
    let source = format!("{}/{}", settings.namespace, settings.cluster);
    let repository = Repository::open(&settings.repository, settings.key.as_ref())
        .map_err(|e| HostError::Refused(format!("repository {}: {e}", settings.repository.name)))?;
    if let Some(refused) = unplaced::recent(request) {
        return Err(HostError::Refused(refused));
    }
    let planned = restore::plan(
        &repository,
        &settings.namespace,
        &settings.cluster,
        &request.target,
    )
    .await;
    let (set, backup, _) = match planned {
        Ok(planned) => planned,
        Err(e) => {
            let refused = format!("recovering {source}: {e}");
            if matches!(
                e,
                restore::RestoreError::NotArchived { .. }
                    | restore::RestoreError::BeforeConsistent { .. }
            ) {
                unplaced::remember(request, &refused);
            }
            return Err(HostError::Refused(refused));
        }
    };
    let work = host::sibling(&options.data, ".replicant-recovery");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).map_err(files("make the recovery's work directory"))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&work, std::fs::Permissions::from_mode(0o700))
            .map_err(files("make the recovery's work directory private"))?;
    }
    let outcome = recover_in(options, request, &repository, &set, &backup, &work).await;
    let outcome = match outcome {
        Ok(()) => {
            let data = work.join("data");
            let made = async {
                std::fs::write(data.join("pg_hba.conf"), host::CREATED_HBA)
                    .map_err(files("write pg_hba.conf"))?;
                take_over_users(options, &data, superuser.expose()).await?;
                host::swap_in(options, &data)
            };
            made.await
        }
        Err(e) => Err(e),
    };
    let _ = std::fs::remove_dir_all(&work);
    if outcome.is_ok() {
        tracing::info!(source, backup = %backup.id, target = %request.target, "recovered");
    }
    outcome
}

/// Targets the archived WAL was read for and did not hold. The controller asks again every
/// few seconds while the spec stays as it is; reading a large archive that often would cost
/// more than the answer is worth, so the same request hears the same refusal for a while. A
/// changed spec is a new request, read at once.
mod unplaced {
    use std::{
        sync::Mutex,
        time::{Duration, Instant},
    };

    use crate::engine::postgres::archive::RecoveryRequest;

    /// How long a refusal stands before the archive is read again.
    const STANDS: Duration = Duration::from_secs(300);

    /// The request, when its archive was read (twice: for the clock and for messages), and
    /// the refusal.
    type Read = (RecoveryRequest, Instant, jiff::Timestamp, String);

    static LAST: Mutex<Option<Read>> = Mutex::new(None);

    /// The refusal of `request`, when the archive was read for it within [`STANDS`].
    pub fn recent(request: &RecoveryRequest) -> Option<String> {
        let last = LAST.lock().unwrap_or_else(|p| p.into_inner());
        let (asked, at, when, refused) = last.as_ref()?;
        (asked == request && at.elapsed() < STANDS).then(|| {
            let again = *when + STANDS;
            format!(
                "{refused}; read at {}, again from {} (at once if the spec changes)",
                crate::api::status_time(*when),
                crate::api::status_time(again)
            )
        })
    }

    pub fn remember(request: &RecoveryRequest, refused: &str) {
        *LAST.lock().unwrap_or_else(|p| p.into_inner()) = Some((
            request.clone(),
            Instant::now(),
            jiff::Timestamp::now(),
            refused.to_string(),
        ));
    }
}

fn files(doing: &'static str) -> impl FnOnce(std::io::Error) -> HostError {
    move |source| HostError::Files {
        doing: doing.into(),
        source,
    }
}

/// Restore, check, replay to the target and promote, in `work/data`.
async fn recover_in(
    options: &Options,
    request: &RecoveryRequest,
    repository: &Repository,
    set: &crate::repository::layout::DataSet,
    backup: &crate::repository::base::BaseBackup,
    work: &Path,
) -> Result<(), HostError> {
    let failed = |what: &'static str| move |said: String| HostError::Tool { tool: what, said };
    let data = work.join("data");
    let exe = std::env::current_exe().map_err(files("find this binary"))?;
    restore::restore(
        repository,
        &request.settings,
        set,
        backup,
        &request.target,
        &data,
        &exe,
    )
    .await
    .map_err(|e| failed("restore")(e.to_string()))?;
    super::backup::verify_data(&options.bin, &data)
        .await
        .map_err(|e| failed("pg_verifybackup")(e.to_string()))?;
    // The member's own settings, but reachable by nobody while it replays. Archiving on with
    // no command: the new timeline's history file and the last segment of the old one wait,
    // marked ready, for the member's own archiver once it starts.
    let mut settings: Vec<(&str, &str)> = options
        .settings
        .iter()
        .filter(|(name, _)| {
            !matches!(
                name.as_str(),
                "listen_addresses" | "port" | "unix_socket_directories" | "hba_file"
            )
        })
        .map(|(name, value)| (name.as_str(), value.as_str()))
        .collect();
    settings.extend([
        ("archive_mode", "on"),
        ("archive_command", ""),
        ("hot_standby", "off"),
    ]);
    let mut server =
        ReplayServer::start(options, work, &data, &settings).map_err(failed("postgres"))?;
    let promoted = server.wait_promoted(options, &data).await;
    let stopped = server.stop().await;
    promoted.map_err(failed("recovery"))?;
    let said = stopped.map_err(failed("recovery"))?;
    let (lsn, at) = replay::reached(&said);
    tracing::info!(
        reached = lsn.as_deref().unwrap_or("?"),
        last_commit = ?at,
        "replay ended"
    );
    restore::forget_recovery(&data).map_err(|e| failed("recovery")(e.to_string()))
}

/// Make the recovered data set this cluster's: the agent's superuser and replication user
/// exist with the passwords this host was given (the source's may differ), set in single-user
/// mode so that no password crosses a command line.
async fn take_over_users(options: &Options, data: &Path, password: &str) -> Result<(), HostError> {
    let mut statements = ensure_role(&options.superuser.name, "SUPERUSER LOGIN", Some(password));
    let replication = &options.replication;
    if replication.user != options.superuser.name {
        statements.push_str(&ensure_role(
            &replication.user,
            "REPLICATION LOGIN",
            replication.password.as_ref().map(|p| p.expose()),
        ));
    }
    host::single_user(
        options,
        data,
        &statements,
        "set the users of the recovered data set",
    )
    .await
}

/// A statement that creates role `name` with `attributes` and `password`, or alters it to
/// have them.
fn ensure_role(name: &str, attributes: &str, password: Option<&str>) -> String {
    let password = password
        .map(|p| format!(" PASSWORD {}", host::sql_literal(p)))
        .unwrap_or_default();
    let role = host::sql_identifier(name);
    let body = format!(
        "BEGIN IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = {}) THEN ALTER ROLE {role} WITH {attributes}{password}; ELSE CREATE ROLE {role} WITH {attributes}{password}; END IF; END",
        host::sql_literal(name)
    );
    // A dollar quote the body cannot end early.
    let tag = (0..)
        .map(|n| format!("$r{n}$"))
        .find(|tag| !body.contains(tag))
        .expect("a free tag");
    format!("DO {tag}{body}{tag};\n\n")
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_role_statement_quotes_names_and_passwords_and_survives_a_dollar_quote() {
        let statement = super::ensure_role("o\"k", "LOGIN", Some("p'$r0$"));
        assert!(statement.starts_with("DO $r1$"), "{statement}");
        assert!(statement.ends_with("$r1$;\n\n"), "{statement}");
        assert!(statement.contains("ALTER ROLE \"o\"\"k\" WITH LOGIN PASSWORD 'p''$r0$'"));
        assert!(statement.contains("rolname = 'o\"k'"));
    }

    #[test]
    fn a_target_the_archive_lacks_is_refused_from_memory_until_the_spec_changes() {
        use crate::engine::postgres::archive::{ArchiveSettings, RecoveryRequest, RecoveryTarget};
        let request = |name: &str| RecoveryRequest {
            settings: ArchiveSettings {
                namespace: "default".into(),
                cluster: "orders".into(),
                repository: crate::api::Repository {
                    name: "local".into(),
                    directory: Some(crate::api::DirectoryRepository {
                        path: "/nowhere".into(),
                    }),
                    s3: None,
                    azure: None,
                    gcs: None,
                },
                key: None,
                pending_limit: 1 << 30,
                compression: Default::default(),
            },
            target: RecoveryTarget::Name(name.into()),
        };
        assert_eq!(super::unplaced::recent(&request("a")), None);
        super::unplaced::remember(&request("a"), "not there");
        let again = super::unplaced::recent(&request("a")).expect("remembered");
        assert!(
            again.starts_with("not there; read at ")
                && again.contains("at once if the spec changes"),
            "{again}"
        );
        assert_eq!(
            super::unplaced::recent(&request("b")),
            None,
            "another target is read"
        );
    }
}
