//! `replicant backup take|list|verify|drill|prune`: base backups and restore drills of a
//! cluster described in spec files, through its members' node agents and straight from its
//! repository. Reads the spec files and the secrets they name; talks to the agents and the
//! repository; verifying unpacks a backup into a scratch directory it removes.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use super::{CliError, which::Which};
use crate::{
    api::human_bytes,
    engine::postgres::{
        agent::{self, AgentApi, AgentClient},
        archive::{ArchiveSettings, BackupRequest, DrillRequest},
    },
    node::restore::{self, RecoveryTarget},
    repository::{
        base::{BaseBackup, newest_data_set},
        retention::Retention,
    },
};

#[derive(clap::Args, Debug)]
pub(super) struct BackupArgs {
    #[command(subcommand)]
    command: BackupCommand,
}

#[derive(clap::Subcommand, Debug)]
enum BackupCommand {
    /// Take a base backup now: from a standby (the primary when none runs), through its node
    /// agent, into the repository; wait for it and print it. For a Redis cluster, an RDB
    /// snapshot read from a streaming replica (the primary when none streams) over the
    /// replication protocol, no agent needed.
    Take(TakeArgs),
    /// List the complete base backups (Redis: snapshots) in the repository, oldest first.
    List(Which),
    /// Restore a base backup into a scratch directory and check it against its own manifest
    /// with `pg_verifybackup` (checksums of every file, and the WAL it needs).
    Verify(VerifyArgs),
    /// Run a restore drill now on a member's host (a running standby first): the newest base
    /// backup restored into a scratch directory beside its agent's state, checked against its
    /// manifest, replayed to the newest archived WAL, and checked with `pg_amcheck`; wait for it
    /// and print how long the restore took and the point it reached. Exits 1 when it fails.
    Drill(TakeArgs),
    /// Let go the base backups and WAL that `spec.backup.retention` no longer keeps; with
    /// `--dry-run`, only list them.
    Prune(PruneArgs),
}

#[derive(clap::Args, Debug)]
struct PruneArgs {
    #[command(flatten)]
    which: Which,
    /// List what would go, and let nothing go.
    #[arg(long)]
    dry_run: bool,
}

#[derive(clap::Args, Debug)]
struct TakeArgs {
    #[command(flatten)]
    which: Which,
    /// The member whose agent does it; default: a running standby with a node agent, else the
    /// primary.
    #[arg(long)]
    member: Option<String>,
    /// How long to wait for it ("30m"); it goes on on the host past this.
    #[arg(long, default_value = "6h", value_parser = parse_duration)]
    timeout: Duration,
}

#[derive(clap::Args, Debug)]
struct VerifyArgs {
    #[command(flatten)]
    which: Which,
    /// The backup's id; default: the newest.
    #[arg(long)]
    backup: Option<String>,
    /// Where to unpack it (a fresh directory under it is made and removed); default: the
    /// system's temporary directory.
    #[arg(long)]
    scratch: Option<PathBuf>,
    /// Where `pg_verifybackup` is; default: as the node agent finds PostgreSQL's binaries.
    #[arg(long)]
    pg_bin: Option<PathBuf>,
}

/// A duration as specs write them ("30m").
fn parse_duration(text: &str) -> Result<Duration, String> {
    text.parse::<crate::api::Duration>()
        .map(Into::into)
        .map_err(|e| e.to_string())
}

/// Refuse `command` for a Redis cluster, saying what it has instead.
fn postgres_only(which: &Which, command: &str) -> Result<(), CliError> {
    match which.cluster()?.spec.engine {
        crate::api::EngineKind::Postgres => Ok(()),
        crate::api::EngineKind::Redis => Err(CliError::Invalid(format!(
            "backup {command} is for PostgreSQL clusters; a Redis cluster has snapshots: backup take, backup list, and replicant restore"
        ))),
    }
}

pub(super) fn run(args: BackupArgs) -> Result<ExitCode, CliError> {
    let runtime = super::runtime()?;
    match args.command {
        BackupCommand::Take(args) => runtime.block_on(take(args)),
        BackupCommand::Drill(args) => {
            postgres_only(&args.which, "drill")?;
            runtime.block_on(drill(args))
        }
        BackupCommand::List(which) => runtime.block_on(list(which)),
        BackupCommand::Verify(args) => {
            postgres_only(&args.which, "verify")?;
            runtime.block_on(verify(args))
        }
        BackupCommand::Prune(args) => {
            postgres_only(&args.which, "prune")?;
            runtime.block_on(prune(args))
        }
    }
}

fn describe(backup: &BaseBackup) -> String {
    let took = backup.finished_at.duration_since(backup.started_at);
    format!(
        "{}  from {}, timeline {}, WAL from {}: {} ({} stored, {}) in {:.1}s",
        backup.id,
        backup.member,
        backup.timeline,
        backup.start_wal,
        human_bytes(backup.raw_bytes),
        human_bytes(backup.stored_bytes),
        backup.compression.name(),
        took.as_secs_f64()
    )
}

async fn list(which: Which) -> Result<ExitCode, CliError> {
    let cluster = which.cluster()?;
    if cluster.spec.engine == crate::api::EngineKind::Redis {
        return super::snapshot::list(&which, &cluster).await;
    }
    let repository = which.open(&cluster)?;
    let catalog = repository
        .catalog(&cluster.namespace, &cluster.name)
        .await
        .map_err(|e| CliError::Invalid(e.to_string()))?;
    if catalog.is_empty() {
        println!(
            "no base backup of {}/{} in {}",
            cluster.namespace,
            cluster.name,
            repository.name()
        );
    }
    for (_, backup) in &catalog {
        println!("{}", describe(backup));
    }
    // The newest data set's window: what `replicant restore` accepts as a target.
    if let Some((set, backups)) = newest_data_set(&catalog) {
        let segments = repository
            .archived_segments(&set)
            .await
            .map_err(|e| CliError::Invalid(e.to_string()))?;
        for window in crate::repository::window::windows(&backups, &segments) {
            println!("recoverable {window}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The repository's settings, and the member (a running standby first, or `member`) whose
/// agent is asked, with a client for it.
async fn chosen_host(
    which: &Which,
    member: Option<&str>,
) -> Result<(ArchiveSettings, String, AgentClient), CliError> {
    let cluster = which.cluster()?;
    let repository = which.repository(&cluster)?;
    let settings = ArchiveSettings::for_repository(
        &cluster.namespace,
        &cluster.name,
        &cluster.spec,
        repository,
        &cluster.secrets.repository_keys,
    );
    let token = cluster
        .secrets
        .agent_token
        .clone()
        .ok_or_else(|| CliError::Invalid("the cluster names no agentToken".into()))?;
    let tls = cluster
        .secrets
        .agent_ca
        .as_deref()
        .map(agent::trusting)
        .transpose()
        .map_err(|e| CliError::Invalid(format!("spec.agentTls: {e}")))?;
    let mut candidates = Vec::new();
    for m in &cluster.spec.members {
        let Some(address) = &m.agent else {
            continue;
        };
        if member.is_some_and(|wanted| wanted != m.name) {
            continue;
        }
        let client = AgentClient::new(
            address.clone(),
            token.clone(),
            tls.clone(),
            Duration::from_secs(5),
        );
        match client.status().await {
            Ok(status) if status.running => {
                candidates.push((status.standby, m.name.clone(), client))
            }
            Ok(_) => eprintln!("{}: postgres is not running there", m.name),
            Err(e) => eprintln!("{}: {e}", m.name),
        }
    }
    // A standby first: the primary's clients never share it with a backup or a drill.
    candidates.sort_by_key(|(standby, _, _)| !standby);
    let Some((_, name, client)) = candidates.into_iter().next() else {
        return Err(CliError::Invalid(
            "no member with a node agent runs postgres now".into(),
        ));
    };
    Ok((settings, name, client))
}

/// Poll `client`'s status every half second until `ended` finds what it waits for, or
/// `timeout` passes.
async fn wait_on<T>(
    client: &AgentClient,
    member: &str,
    what: &str,
    timeout: Duration,
    ended: impl Fn(crate::engine::postgres::agent::AgentStatus) -> Option<T>,
) -> Result<T, CliError> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        if tokio::time::Instant::now() > deadline {
            return Err(CliError::Invalid(format!(
                "the {what} on {member} has not finished within the timeout; it goes on there"
            )));
        }
        if let Some(found) = client.status().await.ok().and_then(&ended) {
            return Ok(found);
        }
    }
}

async fn take(args: TakeArgs) -> Result<ExitCode, CliError> {
    let cluster = args.which.cluster()?;
    if cluster.spec.engine == crate::api::EngineKind::Redis {
        return super::snapshot::take(&args.which, &cluster, args.member.as_deref(), args.timeout)
            .await;
    }
    let (settings, member, client) = chosen_host(&args.which, args.member.as_deref()).await?;
    let asked = jiff::Timestamp::now();
    client
        .backup(&BackupRequest {
            settings,
            member: member.clone(),
            request: None,
        })
        .await
        .map_err(|e| CliError::Invalid(format!("{member}: {e}")))?;
    eprintln!("taking a base backup from {member}");
    let last = wait_on(&client, &member, "backup", args.timeout, |status| {
        status
            .backup
            .and_then(|b| b.last)
            .filter(|last| last.finished_at >= asked)
    })
    .await?;
    match (last.backup, last.error) {
        (Some(backup), _) => {
            println!("{}", describe(&backup));
            Ok(ExitCode::SUCCESS)
        }
        (None, error) => Err(CliError::Invalid(format!(
            "the base backup on {member} failed: {}",
            error.unwrap_or_default()
        ))),
    }
}

async fn drill(args: TakeArgs) -> Result<ExitCode, CliError> {
    let (settings, member, client) = chosen_host(&args.which, args.member.as_deref()).await?;
    let asked = jiff::Timestamp::now();
    let begun = client
        .drill(&DrillRequest {
            settings,
            member: member.clone(),
        })
        .await
        .map_err(|e| CliError::Invalid(format!("{member}: {e}")))?;
    // A drill already under way there is the one waited for.
    let since = begun.running_since.unwrap_or(asked).min(asked);
    eprintln!("running a restore drill on {member}'s host");
    let record = wait_on(&client, &member, "drill", args.timeout, |status| {
        status
            .drill
            .and_then(|d| d.last)
            .filter(|last| last.started_at >= since)
    })
    .await?;
    let took = record
        .restore_millis
        .map(|ms| format!(" in {:.1}s", ms as f64 / 1000.0))
        .unwrap_or_default();
    let reached = match (&record.reached_lsn, record.reached_at) {
        (Some(lsn), Some(at)) => format!(", reached {lsn} ({at})"),
        (Some(lsn), None) => format!(", reached {lsn}"),
        _ => String::new(),
    };
    println!(
        "{} on {}: base backup {} restored{took}{reached}: {}",
        if record.passed { "passed" } else { "FAILED" },
        record.member,
        record.backup_id.as_deref().unwrap_or("none"),
        record.message
    );
    Ok(match record.passed {
        true => ExitCode::SUCCESS,
        false => ExitCode::FAILURE,
    })
}

async fn verify(args: VerifyArgs) -> Result<ExitCode, CliError> {
    let cluster = args.which.cluster()?;
    let repository = args.which.open(&cluster)?;
    let catalog = repository
        .catalog(&cluster.namespace, &cluster.name)
        .await
        .map_err(|e| CliError::Invalid(e.to_string()))?;
    let chosen = match &args.backup {
        Some(id) => catalog.iter().find(|(_, b)| &b.id == id),
        None => catalog.last(),
    };
    let Some((set, backup)) = chosen else {
        return Err(CliError::Invalid(match &args.backup {
            Some(id) => format!("no base backup {id} in {}", repository.name()),
            None => format!("no base backup in {}", repository.name()),
        }));
    };
    let bin = args
        .pg_bin
        .or_else(crate::node::default_bin_dir)
        .ok_or_else(|| {
            CliError::Invalid("PostgreSQL's binaries not found: give --pg-bin".into())
        })?;
    let scratch = match &args.scratch {
        Some(dir) => tempfile::tempdir_in(dir),
        None => tempfile::tempdir(),
    }
    .map_err(|source| CliError::Io {
        path: "the scratch directory".into(),
        source,
    })?;
    let began = std::time::Instant::now();
    let verdict = crate::node::verify_backup(&repository, set, backup, &bin, scratch.path()).await;
    match verdict {
        Ok(()) => {
            println!(
                "{}: restored and verified against its manifest in {:.1}s",
                describe(backup),
                began.elapsed().as_secs_f64()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            println!("{}: {e}", backup.id);
            Ok(ExitCode::FAILURE)
        }
    }
}

async fn prune(args: PruneArgs) -> Result<ExitCode, CliError> {
    let cluster = args.which.cluster()?;
    let policy = cluster
        .spec
        .backup
        .as_ref()
        .and_then(|b| b.retention.as_ref())
        .ok_or_else(|| {
            CliError::Invalid("the cluster sets no spec.backup.retention: nothing expires".into())
        })?;
    let retention = Retention::from(policy);
    let repository = args.which.open(&cluster)?;
    let catalog = repository
        .catalog(&cluster.namespace, &cluster.name)
        .await
        .map_err(|e| CliError::Invalid(e.to_string()))?;
    let Some((set, backups)) = newest_data_set(&catalog) else {
        println!("no base backup in {}: nothing to let go", repository.name());
        return Ok(ExitCode::SUCCESS);
    };
    let plan = repository
        .plan_prune(&set, &backups, retention, jiff::Timestamp::now())
        .await
        .map_err(|e| CliError::Invalid(e.to_string()))?;
    let verb = if args.dry_run {
        "would remove"
    } else {
        "removes"
    };
    for backup in &plan.backups {
        println!("{verb} backup {}", describe(backup));
    }
    for object in &plan.wal {
        println!("{verb} WAL {object}");
    }
    println!(
        "{} backup(s) and {} WAL file(s) {}; {} backup(s) kept",
        plan.backups.len(),
        plan.wal.len(),
        if args.dry_run { "would go" } else { "gone" },
        backups.len() - plan.backups.len()
    );
    if !args.dry_run {
        repository
            .prune(&set, &plan)
            .await
            .map_err(|e| CliError::Invalid(e.to_string()))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `replicant restore`: point-in-time recovery of a cluster's data from its repository into an
/// empty data directory.
#[derive(clap::Args, Debug)]
pub(super) struct RestoreArgs {
    #[command(flatten)]
    which: Which,
    /// The empty data directory to restore into; for a Redis cluster, the RDB file to write
    /// (it must not exist), for a new server's `--dir` and `--dbfilename`.
    #[arg(long)]
    to: PathBuf,
    /// Recover to this time (RFC 3339, "2026-12-03T19:00:00Z"); Redis: the newest snapshot
    /// finished by then.
    #[arg(long, group = "target")]
    time: Option<jiff::Timestamp>,
    /// Recover to this WAL position ("0/3000060").
    #[arg(long, group = "target")]
    lsn: Option<String>,
    /// Recover to just after this transaction commits.
    #[arg(long, group = "target")]
    xid: Option<u64>,
    /// Recover to this restore point (`pg_create_restore_point`).
    #[arg(long, group = "target")]
    name: Option<String>,
}

impl RestoreArgs {
    fn target(&self) -> Result<RecoveryTarget, CliError> {
        Ok(match (&self.time, &self.lsn, self.xid, &self.name) {
            (Some(time), ..) => RecoveryTarget::Time(*time),
            (_, Some(lsn), ..) => RecoveryTarget::lsn(lsn).ok_or_else(|| {
                CliError::Invalid(format!("--lsn {lsn}: not a WAL position like 0/3000060"))
            })?,
            (_, _, Some(xid), _) => RecoveryTarget::Xid(xid),
            (_, _, _, Some(name)) => RecoveryTarget::Name(name.clone()),
            _ => RecoveryTarget::Latest,
        })
    }
}

/// Refused before anything is written when the target lies outside what the repository can
/// recover; then the newest backup that ends before the target is unpacked, and the directory
/// set to replay archived WAL to the target and promote when started.
pub(super) fn restore(args: RestoreArgs) -> Result<ExitCode, CliError> {
    super::runtime()?.block_on(async {
        let target = args.target()?;
        let cluster = args.which.cluster()?;
        if cluster.spec.engine == crate::api::EngineKind::Redis {
            let before = match target {
                RecoveryTarget::Latest => None,
                RecoveryTarget::Time(t) => Some(t),
                _ => {
                    return Err(CliError::Invalid(
                        "a Redis snapshot is restored whole: give --time (the newest snapshot by then) or nothing (the newest)".into(),
                    ));
                }
            };
            return super::snapshot::restore(&args.which, &cluster, &args.to, before).await;
        }
        let spec = args.which.repository(&cluster)?;
        let repository = args.which.open(&cluster)?;
        let (set, backup, window) =
            restore::plan(&repository, &cluster.namespace, &cluster.name, &target)
                .await
                .map_err(|e| CliError::Invalid(e.to_string()))?;
        eprintln!(
            "recoverable {window}; restoring {} to {target}",
            describe(&backup)
        );
        let settings = ArchiveSettings::for_repository(
            &cluster.namespace,
            &cluster.name,
            &cluster.spec,
            spec,
            &cluster.secrets.repository_keys,
        );
        let exe = std::env::current_exe().map_err(|source| CliError::Io {
            path: "this program".into(),
            source,
        })?;
        restore::restore(
            &repository,
            &settings,
            &set,
            &backup,
            &target,
            &args.to,
            &exe,
        )
        .await
        .map_err(|e| CliError::Invalid(e.to_string()))?;
        println!(
            "{} holds {}; start postgres on it to replay archived WAL to {target} and promote",
            args.to.display(),
            backup.id
        );
        Ok(ExitCode::SUCCESS)
    })
}

/// `replicant restore-wal`: PostgreSQL's `restore_command` in a restored data directory.
#[derive(clap::Args, Debug)]
pub(super) struct RestoreWalArgs {
    /// The repository's settings, beside the data directory (`replicant restore` writes them).
    #[arg(long)]
    settings: PathBuf,
    /// For a standby: every failure (the repository away, no settings) exits 1, "not there",
    /// so that the standby streams from its upstream instead; a standby never ends recovery
    /// on a missing file, so nothing ends early.
    #[arg(long)]
    standby: bool,
    /// The WAL file PostgreSQL asks for (`%f`).
    file: String,
    /// Where to write it (`%p`), relative to the data directory, the working directory.
    destination: PathBuf,
}

/// Exit 0 once written, 1 when it was never archived (recovery's end of the archive), and 126
/// when the repository fails, so that recovery stops instead of ending early (1 for a
/// standby, which streams instead).
pub(super) fn restore_wal(args: RestoreWalArgs) -> Result<ExitCode, CliError> {
    let (runtime, data) = super::in_data_directory()?;
    let fetched = runtime.block_on(restore::fetch(
        &args.settings,
        &data,
        &args.file,
        &args.destination,
    ));
    match fetched {
        restore::Fetched::Restored => Ok(ExitCode::SUCCESS),
        restore::Fetched::NotArchived => Ok(ExitCode::FAILURE),
        restore::Fetched::Failed(why) => {
            eprintln!("replicant restore-wal: {}: {why}", args.file);
            Ok(match args.standby {
                true => ExitCode::FAILURE,
                false => ExitCode::from(126),
            })
        }
    }
}
