//! What `pg_controldata` says of a data directory: which data set, in which state, on which
//! timeline and where, readable while postgres is down. Parsing is pure; running the tool is
//! the caller's (the node agent's).

use std::{collections::HashMap, path::Path, process::Command};

use super::Lsn;

/// The fields replicant uses.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ControlData {
    pub system_identifier: u64,
    /// `in production`, `shut down`, `shut down in recovery`, `in archive recovery`,
    /// `in crash recovery`, `shutting down`...
    pub state: String,
    pub checkpoint: Lsn,
    pub checkpoint_timeline: u32,
    /// Where recovery must reach before the data is consistent (`0/0` when it need not).
    pub min_recovery_end: Lsn,
    pub min_recovery_end_timeline: u32,
    /// The server ran with `wal_log_hints` on (as of the control file's last update).
    pub wal_log_hints: bool,
    /// Data pages carry checksums (fixed at initdb).
    pub data_checksums: bool,
}

impl ControlData {
    /// Whether pg_rewind can find every page changed since a fork: only when hint-bit changes
    /// were WAL-logged too.
    pub fn rewindable(&self) -> bool {
        self.wal_log_hints || self.data_checksums
    }

    /// Shut down cleanly (as a primary or a standby): no recovery needed to start it.
    pub fn cleanly_shut_down(&self) -> bool {
        self.state == "shut down" || self.state == "shut down in recovery"
    }
}

/// Why a data directory's control file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ControlDataError {
    #[error("pg_controldata: {0}")]
    Run(#[source] std::io::Error),
    #[error("pg_controldata: {0}")]
    Failed(String),
    #[error("no {0:?} in pg_controldata's output")]
    Missing(String),
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
}

/// Parse the output of `LC_ALL=C pg_controldata`.
pub fn parse(output: &str) -> Result<ControlData, ControlDataError> {
    let fields: HashMap<&str, &str> = output
        .lines()
        .filter_map(|line| line.split_once(':'))
        .map(|(key, value)| (key.trim(), value.trim()))
        .collect();
    let field = |name: &str| {
        fields
            .get(name)
            .copied()
            .ok_or_else(|| ControlDataError::Missing(name.to_string()))
    };
    let invalid = |name: &str, reason: String| ControlDataError::Invalid {
        field: name.to_string(),
        reason,
    };
    let number = |name: &str| -> Result<u64, ControlDataError> {
        field(name)?
            .parse()
            .map_err(|_| invalid(name, "not a number".into()))
    };
    let lsn = |name: &str| -> Result<Lsn, ControlDataError> {
        field(name)?.parse().map_err(|reason| invalid(name, reason))
    };
    Ok(ControlData {
        system_identifier: number("Database system identifier")?,
        state: field("Database cluster state")?.to_string(),
        checkpoint: lsn("Latest checkpoint location")?,
        checkpoint_timeline: number("Latest checkpoint's TimeLineID")? as u32,
        min_recovery_end: lsn("Minimum recovery ending location")?,
        min_recovery_end_timeline: number("Min recovery ending loc's timeline")? as u32,
        wal_log_hints: field("wal_log_hints setting")? == "on",
        data_checksums: number("Data page checksum version")? != 0,
    })
}

/// Run `pg_controldata` from `bin` on `data`.
pub fn read(bin: &Path, data: &Path) -> Result<ControlData, ControlDataError> {
    let output = Command::new(bin.join("pg_controldata"))
        .arg(data)
        .env("LC_ALL", "C")
        .output()
        .map_err(ControlDataError::Run)?;
    if !output.status.success() {
        return Err(ControlDataError::Failed(
            crate::bounded::clip(String::from_utf8_lossy(&output.stderr).trim(), 512).into_owned(),
        ));
    }
    parse(&String::from_utf8_lossy(&output.stdout))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_pg_controldata_prints() {
        let data = parse(include_str!(
            "../../../tests/fixtures/postgres/controldata-shut-down.txt"
        ))
        .unwrap();
        assert_eq!(data.state, "shut down");
        assert!(data.cleanly_shut_down());
        assert_eq!(data.checkpoint_timeline, 1);
        assert_ne!(data.system_identifier, 0);
        assert_eq!(data.min_recovery_end, Lsn(0));
        assert!(!data.wal_log_hints && !data.data_checksums && !data.rewindable());
        assert!(
            parse("garbage")
                .unwrap_err()
                .to_string()
                .contains("Database system identifier")
        );
    }
}
