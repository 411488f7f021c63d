//! Host operations on the agent's data directory: clone a standby from another member (into a
//! sibling directory, swapped in only when complete, never over another data set), and
//! configure the directory to start as a standby of a given member.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use serde::Deserialize;
use tokio::process::Command;

use super::Options;
use crate::engine::{
    Credentials, Secret,
    postgres::{actions::conninfo_value, controldata, probe},
};

/// The member to stream or copy from, as the controller names it.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Source {
    /// `host:port` of its postgres.
    pub address: String,
    /// The name this standby reports upstream (`synchronous_standby_names` lists these).
    pub application_name: String,
    /// The replication slot kept for this standby there, if any.
    #[serde(default)]
    pub slot: Option<String>,
}

/// How this host authenticates for replication: from the agent's own configuration, so no
/// password crosses the agent's API.
#[derive(Clone, Debug, Default)]
pub struct Replication {
    pub user: String,
    pub password: Option<Secret>,
}

/// How long a copy may take before it is abandoned.
const CLONE_TIMEOUT: Duration = Duration::from_secs(3600);

fn sibling(data: &Path, suffix: &str) -> PathBuf {
    let mut name = data.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    data.with_file_name(name)
}

/// Whether `data` holds a cluster at all (an empty or missing directory does not).
fn holds_data(data: &Path) -> bool {
    data.join("PG_VERSION").exists()
}

/// Copy `source` into the data directory, as a standby of it. Refused when the directory holds
/// another data set than the source's; a copy that fails leaves the directory as it was.
pub async fn clone(
    options: &Options,
    replication: &Replication,
    source: &Source,
) -> Result<(), String> {
    let credentials = Credentials {
        username: Some(replication.user.clone()),
        password: replication.password.clone(),
    };
    let theirs = probe::probe(&source.address, &credentials, Duration::from_secs(5))
        .await
        .map_err(|e| format!("cannot read the source's identity: {e}"))?
        .system_identifier;
    if holds_data(&options.data) {
        let ours = controldata::read(&options.bin, &options.data)?.system_identifier;
        if ours != theirs {
            return Err(format!(
                "{} holds data set {ours}, {} holds {theirs}: not copied over; remove the directory by hand if its data is meant to go",
                options.data.display(),
                source.address
            ));
        }
    }
    let copy = sibling(&options.data, ".replicant-clone");
    let _ = std::fs::remove_dir_all(&copy);
    let (host, port) = source
        .address
        .rsplit_once(':')
        .ok_or_else(|| format!("{} is not host:port", source.address))?;
    let mut command = Command::new(options.bin.join("pg_basebackup"));
    command
        .args([
            "-h",
            host.trim_start_matches('[').trim_end_matches(']'),
            "-p",
            port,
        ])
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
    let output = tokio::time::timeout(CLONE_TIMEOUT, command.output())
        .await
        .map_err(|_| format!("the copy took longer than {CLONE_TIMEOUT:?}"))?
        .map_err(|e| format!("pg_basebackup: {e}"))?;
    if !output.status.success() {
        let _ = std::fs::remove_dir_all(&copy);
        return Err(format!(
            "pg_basebackup: {}",
            crate::bounded::clip(String::from_utf8_lossy(&output.stderr).trim(), 512)
        ));
    }
    // Swapped in only now, complete: the old directory goes once the new one is in place.
    let old = sibling(&options.data, ".replicant-old");
    let _ = std::fs::remove_dir_all(&old);
    if options.data.exists() {
        std::fs::rename(&options.data, &old).map_err(|e| format!("set the old data aside: {e}"))?;
    }
    std::fs::rename(&copy, &options.data).map_err(|e| format!("put the copy in place: {e}"))?;
    let _ = std::fs::remove_dir_all(&old);
    configure_standby(options, replication, source)
}

/// A postgresql.conf string value.
fn setting_value(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "''"))
}

/// Make the data directory start as a standby of `source`: `standby.signal`, and
/// `primary_conninfo` and `primary_slot_name` in `postgresql.auto.conf` (earlier values of
/// those two removed, the rest kept). Takes effect at the next start.
pub fn configure_standby(
    options: &Options,
    replication: &Replication,
    source: &Source,
) -> Result<(), String> {
    let (host, port) = source
        .address
        .rsplit_once(':')
        .ok_or_else(|| format!("{} is not host:port", source.address))?;
    let mut conninfo = format!(
        "host={} port={} user={} application_name={}",
        conninfo_value(host.trim_start_matches('[').trim_end_matches(']')),
        conninfo_value(port),
        conninfo_value(&replication.user),
        conninfo_value(&source.application_name)
    );
    if let Some(password) = &replication.password {
        conninfo.push_str(&format!(" password={}", conninfo_value(password.expose())));
    }
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
        crate::standalone::state::write_atomically(
            path,
            text.as_bytes(),
            crate::standalone::state::Durability::Synced,
        )
        .map_err(|e| format!("write {}: {e}", path.display()))
    };
    write(&auto, lines.join("\n") + "\n")?;
    write(&options.data.join("standby.signal"), String::new())
}
