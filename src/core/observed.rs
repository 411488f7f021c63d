//! What the controller saw: per-member observations, current virtual-name endpoints and the journal read back. Types only.
//!
//! Every field is a fact both engines can give: positions in a replication stream, the branch
//! of history the data is on, which data set it is, and whether the member accepts writes.

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::{
    api::Role,
    core::{history::History, journal::Journal},
};

/// Everything `plan` may know about the world, gathered by `observe`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Observed {
    /// Keyed by member name. A member missing here has never been probed.
    #[serde(default)]
    pub members: BTreeMap<String, MemberObservation>,
    /// Member names each virtual name points at now, keyed by virtual name.
    #[serde(default)]
    pub virtual_names: BTreeMap<String, Vec<String>>,
    /// Base backups: the repository's catalog as last read, and what the hosts report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backups: Option<BackupsObserved>,
    /// The controller's durable memory of this cluster, as last written.
    #[serde(default)]
    pub journal: Journal,
    /// When this was observed, for a snapshot kept in a file: `replicant plan` plans at this
    /// time unless given `--now`, so that the durations it prints are the snapshot's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_at: Option<Timestamp>,
}

/// Why a probe failed, in the few classes people act on differently.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub enum ProbeErrorKind {
    /// Nothing listens on the port: the server process is not running.
    Refused,
    /// No answer in time: a frozen server, a dropped network path, or an overloaded host.
    Timeout,
    /// The server rejected the credentials.
    Auth,
    /// The server answered, but not as expected (a wrong reply, a failed command).
    Protocol,
    /// The process runs but does not take connections yet (starting, shutting down).
    Starting,
    /// Any other failure to connect (no route, name not resolved, reset).
    Unreachable,
}

impl ProbeErrorKind {
    pub const ALL: [ProbeErrorKind; 6] = [
        Self::Refused,
        Self::Timeout,
        Self::Auth,
        Self::Protocol,
        Self::Starting,
        Self::Unreachable,
    ];

    /// The label value metrics carry.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Refused => "refused",
            Self::Timeout => "timeout",
            Self::Auth => "auth",
            Self::Protocol => "protocol",
            Self::Starting => "starting",
            Self::Unreachable => "unreachable",
        }
    }
}

/// Who can carry out host operations on a member: copy it from nothing, rewind it, restart it
/// as a replica, stop it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase", tag = "by", deny_unknown_fields)]
pub enum HostAccess {
    /// The engine does them over the database's own protocol; no host is involved.
    #[default]
    Engine,
    /// The member's node agent does them; what it last reported.
    Agent(HostObservation),
    /// Nobody: the member has no agent, and a person must run them.
    Person,
}

/// What a member's node agent reports of its host.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HostObservation {
    /// The agent answered.
    pub reachable: bool,
    /// The database server process runs.
    #[serde(default)]
    pub running: bool,
    /// A host operation is under way (a copy, a rewind...): wait for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub busy: Option<String>,
    /// No data set is there: the member can only be copied from nothing.
    #[serde(default)]
    pub empty: bool,
    /// Its data is a replica's: started as it is, the server accepts no writes.
    #[serde(default)]
    pub replica: bool,
    /// The server was last stopped cleanly: its data ends at `position`, with nothing after.
    #[serde(default)]
    pub stopped_cleanly: bool,
    /// While stopped: where its data is known to reach (at least), and on which branch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// The data set it holds, while stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// The host stopped the server on its own (its lease lapsed) and keeps it down.
    #[serde(default)]
    pub fenced: bool,
    /// Whether its data can be rewound, from its control file: `false` when it ran without
    /// `wal_log_hints` and has no data checksums, so that a rewind could miss changed pages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewindable: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One member as last probed. For an unreachable member the data fields keep their last known values.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MemberObservation {
    /// The database server answered.
    pub reachable: bool,
    /// When the member stopped answering; `None` while reachable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unreachable_since: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    /// Name of the member it replicates from (replicas only), or the raw address when it is not a member.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    /// Durable position: how far into the replication stream the member holds data it keeps
    /// across a crash. The RPO gate and the candidate choice use it.
    #[serde(default, alias = "offset", skip_serializing_if = "Option::is_none")]
    pub durable: Option<u64>,
    /// Applied position: how far readers see. Read names judge lag by it; the durable
    /// position stands in when the engine does not tell them apart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied: Option<u64>,
    /// The branch of history its data is on; `None` when the engine could not tell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history: Option<History>,
    /// Which data set it holds. Members of one cluster share it; `None` when the engine has
    /// no such notion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// Replicas only: whether the link to its upstream is up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_up: Option<bool>,
    /// Whether the member rejects writes (a replica, or a fenced master).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_only: Option<bool>,
    /// A full copy is loading: the member's data is partial.
    #[serde(default)]
    pub syncing: bool,
    /// Masters only: `Some(false)` when the guard the engine runs a primary with (so that a
    /// cut-off primary stops acknowledging writes) is not in place.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guarded: Option<bool>,
    /// Members that can no longer catch up from this one (what they need is gone from it):
    /// only a full copy brings them back.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub copy_needed_by: Vec<String>,
    /// Unreachable because its port refuses connections: no process is listening.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub refused: bool,
    /// Its host's WAL archiver, when the cluster archives.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive: Option<crate::api::MemberArchive>,
    /// While the controller does not reach it: the other members whose hosts do. A primary
    /// they reach is reported, not failed over.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reached_by: Vec<String>,
    /// Who can copy, rewind, restart or stop it.
    #[serde(default, skip_serializing_if = "HostAccess::is_engine")]
    pub host: HostAccess,
    /// Last probe error, for status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The class of the last probe error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_kind: Option<ProbeErrorKind>,
    /// Replicas only, where the engine can tell: milliseconds since the last transaction it
    /// applied was committed on the primary. Lag in time while it is behind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay_age_ms: Option<u64>,
}

impl HostAccess {
    fn is_engine(&self) -> bool {
        *self == HostAccess::Engine
    }

    /// The agent's report, when the member has an agent that answered.
    pub fn agent(&self) -> Option<&HostObservation> {
        match self {
            HostAccess::Agent(host) if host.reachable => Some(host),
            _ => None,
        }
    }
}

impl MemberObservation {
    pub fn is_master(&self) -> bool {
        self.reachable && self.role == Some(Role::Master)
    }

    pub fn is_replica(&self) -> bool {
        self.reachable && self.role == Some(Role::Replica)
    }

    /// A reachable master that has not been fenced: it accepts writes.
    pub fn is_writable_master(&self) -> bool {
        self.is_master() && self.read_only != Some(true)
    }

    /// How far readers see: the applied position, else the durable one.
    pub fn applied_position(&self) -> Option<u64> {
        self.applied.or(self.durable)
    }
}

/// A cluster's base backups as the engine last read its repository's catalog and heard its
/// hosts.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BackupsObserved {
    /// The repository base backups go to.
    pub repository: String,
    /// When the last reading of the catalog began, what it held, or why it could not be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catalog: Option<Catalog>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_error: Option<String>,
    /// The newest restore drill (the repository's record, or a host's fresher word), and one
    /// under way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_drill: Option<ObservedDrill>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drill_running: Option<DrillRunning>,
    /// What each member's host last said of the backups it runs.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub hosts: BTreeMap<String, HostBackups>,
    /// Expired backups are being let go now; how the last letting go went.
    #[serde(default)]
    pub pruning: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_prune: Option<PruneOutcome>,
}

/// The complete base backups of the cluster's current data set, oldest first, and what they
/// make recoverable.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Catalog {
    pub backups: Vec<CatalogEntry>,
    pub windows: Vec<Stretch>,
    /// The backups retention (`spec.backup.retention`) lets go as of the reading, by id.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expired: Vec<String>,
}

/// How the controller's last letting go of expired backups went.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PruneOutcome {
    pub at: Timestamp,
    /// The backups let go, and how many WAL files only they needed.
    pub backups: Vec<String>,
    pub wal_files: u64,
    /// Why it stopped short, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CatalogEntry {
    pub id: String,
    pub member: String,
    pub started_at: Timestamp,
    pub finished_at: Timestamp,
    pub raw_bytes: u64,
    pub stored_bytes: u64,
    /// The on-demand request it answered, if one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
}

/// Points a restore can reach, inclusive.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Stretch {
    pub earliest: Timestamp,
    pub earliest_lsn: String,
    pub latest: Timestamp,
    pub latest_lsn: String,
}

/// What one host said of its base backups.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HostBackups {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running_since: Option<Timestamp>,
    /// The on-demand request the backup under way answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running_request: Option<String>,
    /// Its last backup's end, the error it ended with, and the request it answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_finished_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_request: Option<String>,
}

impl BackupsObserved {
    /// The newest complete backup.
    pub fn newest(&self) -> Option<&CatalogEntry> {
        self.catalog.as_ref()?.backups.last()
    }

    /// The newest failure that came after the newest backup: (member, when, message).
    pub fn failure(&self) -> Option<(&str, Timestamp, &str)> {
        let newest = self.newest().map(|b| b.finished_at);
        self.hosts
            .iter()
            .filter_map(|(member, h)| {
                Some((
                    member.as_str(),
                    h.last_finished_at?,
                    h.last_error.as_deref()?,
                ))
            })
            .filter(|(_, at, _)| newest.is_none_or(|n| *at > n))
            .max_by_key(|(_, at, _)| *at)
    }

    /// A backup succeeded after the catalog was last read: what the catalog says is old.
    pub fn stale(&self) -> bool {
        self.hosts.values().any(|h| {
            h.last_error.is_none()
                && h.last_finished_at
                    .is_some_and(|at| self.read_at.is_none_or(|read| at >= read))
        })
    }

    /// An on-demand request neither in the catalog nor failed on a host.
    pub fn request_open(&self, name: &str) -> bool {
        let in_catalog = self
            .catalog
            .as_ref()
            .is_some_and(|c| c.backups.iter().any(|b| b.request.as_deref() == Some(name)));
        let failed = self
            .hosts
            .values()
            .any(|h| h.last_request.as_deref() == Some(name) && h.last_error.is_some());
        !in_catalog && !failed
    }

    /// A backup under way: the member, and since when.
    pub fn running(&self) -> Option<(&str, Timestamp)> {
        self.hosts
            .iter()
            .find_map(|(member, h)| Some((member.as_str(), h.running_since?)))
    }
}

/// How a restore drill went.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ObservedDrill {
    pub id: String,
    pub member: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_id: Option<String>,
    pub started_at: Timestamp,
    pub finished_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_millis: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reached_lsn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reached_at: Option<Timestamp>,
    pub passed: bool,
    pub message: String,
}

/// A restore drill under way.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DrillRunning {
    pub member: String,
    pub since: Timestamp,
}
