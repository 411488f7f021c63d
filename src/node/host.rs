//! Host operations on the agent's data directory: clone a standby from another member (into a
//! sibling directory, swapped in only when complete, never over another data set), and
//! configure the directory to start as a standby of a given member.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use tokio::process::Command;

use super::Options;
use crate::{
    core::engine::EngineError,
    engine::{
        Credentials, Secret,
        postgres::{
            actions::{UpstreamAuth, conninfo},
            agent::{HostFailure, PassfileAuth, Rejoined, Source},
            controldata::{self, ControlDataError},
            probe::{self, split_address},
        },
    },
};

/// Why a host operation failed. Its kind travels to the controller with the message
/// (`AgentStatus::last_failure`), so that what happens next is decided on a reason.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// The member to copy or rewind from could not be read.
    #[error("{doing}: {source}")]
    Source {
        doing: &'static str,
        #[source]
        source: EngineError,
    },
    #[error(
        "{data} holds data set {ours}, {source_address} holds {theirs}: not copied over; remove the directory by hand if its data is meant to go"
    )]
    ForeignData {
        data: String,
        ours: u64,
        source_address: String,
        theirs: u64,
    },
    #[error("{0}")]
    NotRewindable(&'static str),
    #[error(transparent)]
    ControlData(#[from] ControlDataError),
    /// A tool could not be started.
    #[error("{tool}: {source}")]
    Spawn {
        tool: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// A tool ran and failed; what it said.
    #[error("{tool}: {said}")]
    Tool { tool: &'static str, said: String },
    #[error("{doing} took longer than {limit:?}")]
    TimedOut {
        doing: &'static str,
        limit: Duration,
    },
    /// A file or directory of the host's.
    #[error("{doing}: {source}")]
    Files {
        doing: String,
        #[source]
        source: std::io::Error,
    },
    /// What the agent will not do as configured, or as asked.
    #[error("{0}")]
    Refused(String),
    #[error("postgres exited while starting; see its log")]
    Exited,
    #[error("postgres did not accept connections within {limit:?}")]
    NotReady { limit: Duration },
    #[error(transparent)]
    State(#[from] super::StateWriteError),
}

impl HostError {
    pub fn kind(&self) -> HostFailure {
        match self {
            Self::Source { .. } => HostFailure::SourceUnreachable,
            Self::ForeignData { .. } => HostFailure::ForeignData,
            Self::NotRewindable(_) => HostFailure::NotRewindable,
            Self::ControlData(_) | Self::Spawn { .. } | Self::Tool { .. } | Self::Exited => {
                HostFailure::ToolFailed
            }
            Self::TimedOut { .. } | Self::NotReady { .. } => HostFailure::TimedOut,
            Self::Files { .. } | Self::State(_) => HostFailure::Storage,
            Self::Refused(_) => HostFailure::Refused,
        }
    }

    fn files(doing: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let doing = doing.into();
        move |source| Self::Files { doing, source }
    }
}

/// How this host authenticates for replication: from the agent's own configuration, so no
/// password crosses the agent's API.
#[derive(Clone, Debug, Default)]
pub struct Replication {
    pub user: String,
    pub password: Option<Secret>,
}

impl Replication {
    /// For SQL to another member (its identity, its checkpoint) as the replication user.
    fn credentials(&self) -> Credentials {
        Credentials {
            username: Some(self.user.clone()),
            password: self.password.clone(),
        }
    }
}

/// The owner of a data set the agent creates: its password is written for initdb alone, and
/// never crosses the agent's API.
#[derive(Clone, Debug, Default)]
pub struct Superuser {
    pub name: String,
    pub password: Option<Secret>,
}

/// How long a copy may take before it is abandoned.
const CLONE_TIMEOUT: Duration = Duration::from_secs(3600);

/// What a finished tool wrote to its standard error, bounded, for an error message.
fn what_it_said(output: &std::process::Output) -> String {
    crate::bounded::clip(String::from_utf8_lossy(&output.stderr).trim(), 512).to_string()
}

/// Run `command` (a `tool`) to its end within `limit`: its output when it succeeded, else why
/// not, with what it said.
async fn run_tool(
    command: &mut Command,
    tool: &'static str,
    limit: Duration,
) -> Result<std::process::Output, HostError> {
    let output = tokio::time::timeout(limit, command.output())
        .await
        .map_err(|_| HostError::TimedOut { doing: tool, limit })?
        .map_err(|source| HostError::Spawn { tool, source })?;
    if !output.status.success() {
        return Err(HostError::Tool {
            tool,
            said: what_it_said(&output),
        });
    }
    Ok(output)
}

pub(super) fn sibling(data: &Path, suffix: &str) -> PathBuf {
    let mut name = data.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    data.with_file_name(name)
}

/// Whether `data` holds a cluster at all (an empty or missing directory does not).
pub fn holds_data(data: &Path) -> bool {
    data.join("PG_VERSION").exists()
}

/// The `.history` file of `timeline` in `data`, at most 1 MiB of it; `None` for the first
/// timeline, which has none.
pub fn timeline_history(data: &Path, timeline: u32) -> Option<String> {
    use std::io::Read;
    if timeline <= 1 {
        return None;
    }
    let path = data.join("pg_wal").join(format!("{timeline:08X}.history"));
    let mut text = String::new();
    std::fs::File::open(path)
        .ok()?
        .take(1 << 20)
        .read_to_string(&mut text)
        .ok()?;
    Some(text)
}

/// The source's data set, read from it; refused when this directory holds another.
pub(super) async fn same_data_set(options: &Options, source: &Source) -> Result<u64, HostError> {
    let replication = &options.replication;
    let theirs = probe::probe(
        &source.address,
        &replication.credentials(),
        Duration::from_secs(5),
    )
    .await
    .map_err(|source| HostError::Source {
        doing: "cannot read the source's identity",
        source,
    })?
    .system_identifier;
    if holds_data(&options.data) {
        let ours = controldata::read(&options.bin, &options.data)?.system_identifier;
        if ours != theirs {
            return Err(HostError::ForeignData {
                data: options.data.display().to_string(),
                ours,
                source_address: source.address.clone(),
                theirs,
            });
        }
    }
    Ok(theirs)
}

/// Where a copy is made before it is swapped in.
pub(super) fn copy_dir(options: &Options) -> PathBuf {
    sibling(&options.data, ".replicant-clone")
}

/// Copy `source` into the data directory, as a standby of it. Refused when the directory holds
/// another data set than the source's; a copy that fails leaves the directory as it was.
pub async fn clone(options: &Options, source: &Source) -> Result<(), HostError> {
    let replication = &options.replication;
    same_data_set(options, source).await?;
    let copy = copy_dir(options);
    let _ = std::fs::remove_dir_all(&copy);
    let (host, port) =
        split_address(&source.address).map_err(|e| HostError::Refused(e.to_string()))?;
    let mut command = Command::new(options.bin.join("pg_basebackup"));
    command
        .args(["-h", host, "-p", &port.to_string()])
        .args([
            "-U",
            &replication.user,
            "-X",
            "stream",
            "--checkpoint=fast",
            "-D",
        ])
        .arg(&copy)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(slot) = &source.slot {
        command.args(["-S", slot]);
    }
    if let Some(password) = &replication.password {
        // The environment, not the command line: other users can read a command line.
        command.env("PGPASSWORD", password.expose());
    }
    if let Err(error) = run_tool(&mut command, "pg_basebackup", CLONE_TIMEOUT).await {
        let _ = std::fs::remove_dir_all(&copy);
        return Err(error);
    }
    swap_in(options, &copy)?;
    configure_standby(options, source)
}

/// Put the complete directory `new` in place of the data directory; the old one goes only once
/// the new one is in place.
pub(super) fn swap_in(options: &Options, new: &Path) -> Result<(), HostError> {
    let old = sibling(&options.data, ".replicant-old");
    let _ = std::fs::remove_dir_all(&old);
    if options.data.exists() {
        std::fs::rename(&options.data, &old).map_err(HostError::files("set the old data aside"))?;
    }
    std::fs::rename(new, &options.data).map_err(HostError::files("put the new data in place"))?;
    let _ = std::fs::remove_dir_all(&old);
    Ok(())
}

/// Client authentication of a data set the agent creates: local sessions as the operating
/// system user of the same name, every network session and replication by SCRAM password.
pub(super) const CREATED_HBA: &str = "\
local all all peer
local replication all peer
host all all all scram-sha-256
host replication all all scram-sha-256
";

/// Whether `dir` is missing or holds nothing.
pub(super) fn vacant(dir: &Path) -> bool {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => entries.next().is_none(),
        Err(e) => e.kind() == std::io::ErrorKind::NotFound,
    }
}

/// Create a new data set in the vacant data directory: initdb into a sibling directory, with
/// data checksums (so it can always be rewound) and the superuser's password, then swapped in
/// complete. A replication user other than the superuser is created with its password.
pub async fn initialize(options: &Options) -> Result<(), HostError> {
    let superuser = &options.superuser;
    let password = superuser.password.as_ref().ok_or_else(|| {
        HostError::Refused(
            "this host has no superuser password (--superuser-password-file or --superuser-password-env), so it does not create data sets".into(),
        )
    })?;
    if !vacant(&options.data) {
        return Err(HostError::Refused(format!(
            "{} is not empty: a data set is only created in an empty directory",
            options.data.display()
        )));
    }
    let fresh = sibling(&options.data, ".replicant-init");
    let _ = std::fs::remove_dir_all(&fresh);
    let pwfile = sibling(&options.data, ".replicant-pw");
    write_private(&pwfile, password.expose())?;
    let mut command = Command::new(options.bin.join("initdb"));
    command
        .arg("-D")
        .arg(&fresh)
        .args(["-U", &superuser.name])
        .arg(format!("--pwfile={}", pwfile.display()))
        .args([
            "--auth-local=peer",
            "--auth-host=scram-sha-256",
            "--data-checksums",
            "-E",
            "UTF8",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let created = run_tool(&mut command, "initdb", CLONE_TIMEOUT).await;
    let _ = std::fs::remove_file(&pwfile);
    if let Err(error) = created {
        let _ = std::fs::remove_dir_all(&fresh);
        return Err(error);
    }
    let made = async {
        std::fs::write(fresh.join("pg_hba.conf"), CREATED_HBA)
            .map_err(HostError::files("write pg_hba.conf"))?;
        if options.replication.user != superuser.name {
            create_replication_user(options, &fresh).await?;
        }
        Ok::<(), HostError>(())
    };
    if let Err(e) = made.await {
        let _ = std::fs::remove_dir_all(&fresh);
        return Err(e);
    }
    swap_in(options, &fresh)
}

/// A quoted SQL literal (standard_conforming_strings is on in every supported version).
pub(super) fn sql_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// Create the replication user in the new, not yet started data set, in single-user mode:
/// its password goes through stdin, never a command line.
async fn create_replication_user(options: &Options, data: &Path) -> Result<(), HostError> {
    let replication = &options.replication;
    let password = match &replication.password {
        Some(p) => format!(" PASSWORD {}", sql_literal(p.expose())),
        None => String::new(),
    };
    let statement = format!(
        "CREATE ROLE {} WITH REPLICATION LOGIN{password};\n\n",
        sql_identifier(&replication.user)
    );
    single_user(options, data, &statement, "create the replication user").await
}

/// A quoted SQL identifier.
pub(super) fn sql_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Run `statements` (each ending in a semicolon and an empty line) against the stopped data
/// set `data` in single-user mode, through stdin: any error fails the whole as `what`.
pub(super) async fn single_user(
    options: &Options,
    data: &Path,
    statements: &str,
    what: &'static str,
) -> Result<(), HostError> {
    use tokio::io::AsyncWriteExt;
    let mut child = Command::new(options.bin.join("postgres"))
        .args(["--single", "-j", "-D"])
        .arg(data)
        .arg("postgres")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| HostError::Spawn {
            tool: "postgres --single",
            source,
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(statements.as_bytes())
            .await
            .map_err(|source| HostError::Spawn {
                tool: "postgres --single",
                source,
            })?;
    }
    let limit = Duration::from_secs(60);
    let output = tokio::time::timeout(limit, child.wait_with_output())
        .await
        .map_err(|_| HostError::TimedOut { doing: what, limit })?
        .map_err(|source| HostError::Spawn {
            tool: "postgres --single",
            source,
        })?;
    let errors = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() || errors.contains("ERROR") {
        return Err(HostError::Tool {
            tool: what,
            said: crate::bounded::clip(errors.trim(), 512).into_owned(),
        });
    }
    Ok(())
}

/// Write `text` to a new file only its owner may read.
fn write_private(path: &Path, text: &str) -> Result<(), HostError> {
    use std::{io::Write, os::unix::fs::OpenOptionsExt};
    let _ = std::fs::remove_file(path);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(HostError::files(format!("write {}", path.display())))
}

/// A postgresql.conf string value.
fn setting_value(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "''"))
}

/// Where the host keeps the replication password for its standby's connection upstream:
/// beside the agent's state file, readable by the server user alone.
fn passfile(options: &Options) -> PathBuf {
    std::path::absolute(&options.state)
        .unwrap_or_else(|_| options.state.clone())
        .with_file_name("replication.pgpass")
}

/// Write the replication password into the host's password file, when it has one: standbys
/// name the file in `primary_conninfo`, and no password is in their settings.
pub fn write_passfile(options: &Options) -> Result<Option<PassfileAuth>, HostError> {
    let replication = &options.replication;
    let Some(password) = &replication.password else {
        return Ok(None);
    };
    let path = passfile(options);
    write_private(&path, &passfile_line(&replication.user, password.expose())?)?;
    Ok(Some(PassfileAuth {
        user: replication.user.clone(),
        passfile: path.display().to_string(),
    }))
}

/// The password file's one line: any host, port and database, for `user`; `:` and `\` escaped.
fn passfile_line(user: &str, password: &str) -> Result<String, HostError> {
    if format!("{user}{password}").contains(['\n', '\r']) {
        return Err(HostError::Refused(
            "the replication user or password holds a line break, which a password file cannot"
                .into(),
        ));
    }
    let escape = |value: &str| value.replace('\\', "\\\\").replace(':', "\\:");
    Ok(format!("*:*:*:{}:{}\n", escape(user), escape(password)))
}

/// Make the data directory start as a standby of `source`: `standby.signal`, and
/// `primary_conninfo` and `primary_slot_name` in `postgresql.auto.conf` (earlier values of
/// those two removed, the rest kept). Takes effect at the next start.
pub fn configure_standby(options: &Options, source: &Source) -> Result<(), HostError> {
    let replication = &options.replication;
    let mut fields = vec![("application_name", source.application_name.as_str())];
    let written = write_passfile(options)?;
    let credentials = replication.credentials();
    let auth = match &written {
        Some(file) => UpstreamAuth::Passfile {
            user: &file.user,
            passfile: &file.passfile,
        },
        None => UpstreamAuth::Credentials(&credentials),
    };
    fields.extend(auth.fields());
    let conninfo =
        conninfo(&source.address, &fields).map_err(|e| HostError::Refused(e.to_string()))?;
    let auto = options.data.join("postgresql.auto.conf");
    let existing = std::fs::read_to_string(&auto).unwrap_or_default();
    let mut lines: Vec<String> = existing
        .lines()
        .filter(|line| {
            let key = line.split('=').next().unwrap_or_default().trim();
            key != "primary_conninfo" && key != "primary_slot_name"
        })
        .map(str::to_string)
        .collect();
    lines.push(format!("primary_conninfo = {}", setting_value(&conninfo)));
    if let Some(slot) = &source.slot {
        lines.push(format!("primary_slot_name = {}", setting_value(slot)));
    }
    let write = |path: &Path, text: String| {
        crate::durable::write_atomically(path, text.as_bytes(), crate::durable::Durability::Synced)
            .map_err(HostError::files(format!("write {}", path.display())))
    };
    write(&auto, lines.join("\n") + "\n")?;
    write(&options.data.join("standby.signal"), String::new())
}

/// How long crash recovery or a rewind may take.
const REWIND_TIMEOUT: Duration = Duration::from_secs(3600);

/// Bring the (stopped) data directory back onto `source`'s history, as its standby: rewind it,
/// or copy it again when rewinding fails. The old data is kept until a copy is complete.
pub async fn rewind(options: &Options, source: &Source) -> Result<Rejoined, HostError> {
    match try_rewind(options, source).await {
        Ok(()) => {
            configure_standby(options, source)?;
            Ok(Rejoined::Rewound)
        }
        Err(reason) => {
            tracing::warn!(%reason, "rewind failed; copying the data again");
            clone(options, source).await?;
            Ok(Rejoined::Copied {
                rewind_failed: reason.to_string(),
                because: Some(reason.kind()),
            })
        }
    }
}

async fn try_rewind(options: &Options, source: &Source) -> Result<(), HostError> {
    let replication = &options.replication;
    // Read before anything runs on the directory: recovery below records the settings it runs
    // with, and a directory that wrote WAL without hints must not be made to look rewindable.
    let control = controldata::read(&options.bin, &options.data)?;
    if !control.rewindable() {
        return Err(HostError::NotRewindable(
            "it ran without wal_log_hints or data checksums, so a rewind could miss changed pages",
        ));
    }
    // pg_rewind needs a target shut down cleanly: after a crash, recover it alone first.
    if !control.cleanly_shut_down() {
        recover_alone(options).await?;
    }
    ensure_checkpointed(replication, source).await?;
    // The password goes in the environment below, not on the command line.
    let server = conninfo(
        &source.address,
        &[("user", &replication.user), ("dbname", "postgres")],
    )
    .map_err(|e| HostError::Refused(e.to_string()))?;
    let mut command = Command::new(options.bin.join("pg_rewind"));
    command
        .arg("--target-pgdata")
        .arg(&options.data)
        .arg(format!("--source-server={server}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(password) = &replication.password {
        command.env("PGPASSWORD", password.expose());
    }
    let kept = sibling(&options.data, ".replicant-rewind-wal");
    keep_wal(&options.data, &kept)?;
    let rewound = async {
        run_tool(&mut command, "pg_rewind", REWIND_TIMEOUT).await?;
        restore_wal(&kept, &options.data)
    }
    .await;
    let _ = std::fs::remove_dir_all(&kept);
    rewound
}

/// Keep a link to every WAL segment in `data` under `kept` (a fresh directory beside it).
/// pg_rewind removes the target's segments that the source no longer has, among them those
/// from the last common checkpoint on, which recovery after the rewind replays first; the
/// source, once it has checkpointed as primary, may have recycled them, and the member would
/// then wait for them forever. Links cost no copy, and survive the removal.
fn keep_wal(data: &Path, kept: &Path) -> Result<(), HostError> {
    let _ = std::fs::remove_dir_all(kept);
    std::fs::create_dir(kept).map_err(HostError::files(format!("create {}", kept.display())))?;
    for (name, path) in wal_segments(&data.join("pg_wal"))? {
        let link = kept.join(&name);
        if std::fs::hard_link(&path, &link).is_err() {
            std::fs::copy(&path, &link)
                .map_err(HostError::files(format!("keep {}", path.display())))?;
        }
    }
    Ok(())
}

/// Put back the kept segments that the rewind removed. Those on the old branch past the fork
/// are never read (recovery follows the new branch's history from the fork on) and are
/// recycled at the next restartpoints.
fn restore_wal(kept: &Path, data: &Path) -> Result<(), HostError> {
    for (name, path) in wal_segments(kept)? {
        let target = data.join("pg_wal").join(&name);
        if !target.exists() {
            std::fs::rename(&path, &target)
                .map_err(HostError::files(format!("restore {}", target.display())))?;
        }
    }
    Ok(())
}

/// The WAL segment files directly in `dir`: 24 hexadecimal digits, nothing else (no history,
/// partial or status files).
fn wal_segments(dir: &Path) -> Result<Vec<(std::ffi::OsString, PathBuf)>, HostError> {
    let entries =
        std::fs::read_dir(dir).map_err(HostError::files(format!("read {}", dir.display())))?;
    Ok(entries
        .flatten()
        .filter(|entry| {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            name.len() == 24 && name.bytes().all(|b| b.is_ascii_hexdigit())
        })
        .map(|entry| (entry.file_name(), entry.path()))
        .collect())
}

/// Crash recovery in single-user mode, so that pg_rewind finds the directory shut down
/// cleanly. Not for a standby's directory: single-user mode refuses standby mode, and
/// recovered as a primary instead, it would end with a record of its own on the branch it
/// shares with the source, which pg_rewind cannot see past. Such a member is copied.
async fn recover_alone(options: &Options) -> Result<(), HostError> {
    if options.data.join("standby.signal").exists() {
        return Err(HostError::NotRewindable(
            "it was a standby and stopped without a clean shutdown, which only a copy repairs",
        ));
    }
    let mut command = Command::new(options.bin.join("postgres"));
    command
        .args(["--single", "-D"])
        .arg(&options.data)
        // As when it runs: recovery ends with a checkpoint that records the setting, and
        // pg_rewind refuses a target whose control file says it was off.
        .args(["-c", "archive_mode=off", "-c", "wal_log_hints=on"])
        // That checkpoint would also recycle the WAL from before the fork, which the rewind
        // reads: keep every segment the directory holds.
        .args(["-c", "wal_keep_size=2147483647", "postgres"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    run_tool(
        &mut command,
        "crash recovery in single-user mode",
        REWIND_TIMEOUT,
    )
    .await
    .map(drop)
}

/// A rewind reads the source's control file: until the source's first checkpoint on its new
/// timeline, it still names the old one, and pg_rewind would find nothing to do. Ask for the
/// checkpoint and wait for it.
async fn ensure_checkpointed(replication: &Replication, source: &Source) -> Result<(), HostError> {
    let credentials = replication.credentials();
    let target = crate::engine::postgres::Target {
        address: &source.address,
        credentials: &credentials,
        timeout: Duration::from_secs(60),
    };
    crate::engine::postgres::actions::checkpoint(target)
        .await
        .map_err(|source| HostError::Source {
            doing: "the source has not checkpointed on its timeline",
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::{keep_wal, passfile_line, restore_wal};

    #[test]
    fn wal_segments_a_rewind_removed_are_put_back_and_nothing_else_is_touched() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let wal = data.join("pg_wal");
        std::fs::create_dir_all(&wal).unwrap();
        let (before_fork, diverged, overwritten) = (
            "000000010000000000000003",
            "000000010000000000000005",
            "000000010000000000000004",
        );
        for name in [before_fork, diverged, overwritten, "00000002.history"] {
            std::fs::write(wal.join(name), format!("target's {name}")).unwrap();
        }
        let kept = dir.path().join("data.kept");
        std::fs::create_dir(&kept).unwrap();
        std::fs::write(kept.join("stale"), "from an earlier attempt").unwrap();
        keep_wal(&data, &kept).unwrap();
        assert!(!kept.join("stale").exists());
        assert!(!kept.join("00000002.history").exists(), "segments only");

        // What pg_rewind does: the target's segments the source lacks go, the others are
        // replaced by the source's, and the source's new ones arrive.
        std::fs::remove_file(wal.join(before_fork)).unwrap();
        std::fs::remove_file(wal.join(diverged)).unwrap();
        std::fs::remove_file(wal.join(overwritten)).unwrap();
        std::fs::write(wal.join(overwritten), "source's").unwrap();
        std::fs::write(wal.join("000000020000000000000005"), "source's").unwrap();

        restore_wal(&kept, &data).unwrap();
        let read = |name: &str| std::fs::read_to_string(wal.join(name)).unwrap();
        assert_eq!(read(before_fork), format!("target's {before_fork}"));
        assert_eq!(read(diverged), format!("target's {diverged}"));
        assert_eq!(read(overwritten), "source's", "the source's copy stands");
        assert_eq!(read("000000020000000000000005"), "source's");
    }

    #[test]
    fn a_password_file_line_escapes_what_the_format_reserves() {
        assert_eq!(
            passfile_line("replicator", r"p:a\ss").unwrap(),
            "*:*:*:replicator:p\\:a\\\\ss\n"
        );
        assert!(passfile_line("replicator", "two\nlines").is_err());
    }
}
