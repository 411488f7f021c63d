//! Continuous WAL archiving, as the controller and a node agent speak of it: the settings the
//! controller gives each agent (`PUT /v1/archive`), and what an agent reports of its archiver
//! in `/v1/status`. The archiving itself runs on the host, without the controller.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{api::Repository, repository::S3Key};

/// Where and how a host archives its WAL. Holds a secret (the store's key): the agent keeps it
/// in a file only its user reads, and reports only its fingerprint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArchiveSettings {
    /// The cluster's namespace and name: the repository's top directories.
    pub namespace: String,
    pub cluster: String,
    pub repository: Repository,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<S3Key>,
    /// Finished WAL the host keeps waiting for the repository, in bytes, before it lets the
    /// oldest go and declares the gap.
    pub pending_limit: u64,
}

impl ArchiveSettings {
    /// A digest of the settings, key included, so that a changed key is sent again: what the
    /// agent reports, and the controller compares with its own.
    pub fn fingerprint(&self) -> String {
        let text = serde_json::to_vec(self).unwrap_or_default();
        Sha256::digest(&text)
            .iter()
            .take(8)
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

/// The last WAL file a host archived.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArchivedFile {
    pub file: String,
    pub at: jiff::Timestamp,
}

/// Why a host's archiver failed last.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArchiveFailure {
    pub file: String,
    pub at: jiff::Timestamp,
    pub message: String,
}

/// WAL a host let go unarchived, because the repository could not take it before the host's
/// bound was reached: recovery cannot cross it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArchiveGap {
    /// The first and last WAL files let go, inclusive.
    pub first: String,
    pub last: String,
    pub declared_at: jiff::Timestamp,
}

/// At most this many gaps are kept; older ones are counted, not listed.
pub const MAX_GAPS_KEPT: usize = 16;

/// What the archiver on a host has done: written by each run of `archive_command`, read by the
/// agent for its status.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArchiveRecord {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_archived: Option<ArchivedFile>,
    /// Files stored since the record began.
    #[serde(default)]
    pub archived_count: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<ArchiveFailure>,
    /// When the current run of failures began; none while archiving succeeds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failing_since: Option<jiff::Timestamp>,
    /// Another content was found under a file's name: archiving from this host stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conflict: Option<ArchiveFailure>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gaps: Vec<ArchiveGap>,
    /// Gaps declared in all, listed or not.
    #[serde(default)]
    pub gap_count: u64,
}

/// An agent's report of its archiver.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArchiveReport {
    /// The fingerprint of the settings the host archives with; none when it has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settings: Option<String>,
    /// Finished WAL waiting to be archived, in bytes.
    #[serde(default)]
    pub pending_bytes: u64,
    /// When the oldest waiting file was finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oldest_pending: Option<jiff::Timestamp>,
    #[serde(default)]
    pub record: ArchiveRecord,
}

/// How often the controller asks each host how its archiver goes, and sends it the settings
/// when the host's differ from the spec's. In the background: a round never waits for it.
pub const ARCHIVE_CARE: std::time::Duration = std::time::Duration::from_secs(5);

/// The controller's side: keeps every host's archive settings as the spec says, and the last
/// report of each.
pub struct ArchiveKeeper {
    settings: Option<ArchiveSettings>,
    members: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, Cared>>>,
}

#[derive(Default)]
struct Cared {
    asked: Option<std::time::Instant>,
    report: Option<crate::api::MemberArchive>,
}

impl ArchiveKeeper {
    pub fn new(settings: Option<ArchiveSettings>) -> Self {
        Self {
            settings,
            members: Default::default(),
        }
    }

    /// The last report of `member`'s archiver, when the cluster archives; and, when due, a
    /// background look at its host (which sends the settings if they differ).
    pub fn care(
        &self,
        member: &str,
        agent: &super::agent::AgentClient,
    ) -> Option<crate::api::MemberArchive> {
        let mut members = self.members.lock().expect("lock");
        let cared = members.entry(member.to_string()).or_default();
        if cared.asked.is_none_or(|at| at.elapsed() >= ARCHIVE_CARE) {
            cared.asked = Some(std::time::Instant::now());
            let (agent, settings, members) =
                (agent.clone(), self.settings.clone(), self.members.clone());
            let member = member.to_string();
            tokio::spawn(async move {
                let report = keep(&agent, settings.as_ref()).await;
                match report {
                    Ok(report) => {
                        let archive = settings
                            .as_ref()
                            .map(|s| member_archive(&member, s, &report));
                        if let Some(cared) = members.lock().expect("lock").get_mut(&member) {
                            cared.report = archive;
                        }
                    }
                    Err(error) => {
                        tracing::debug!(%member, %error, "the host's archiver could not be asked")
                    }
                }
            });
        }
        self.settings.as_ref()?;
        cared.report.clone()
    }
}

/// Ask the host how its archiver goes; send `settings` when its own differ.
async fn keep(
    agent: &super::agent::AgentClient,
    settings: Option<&ArchiveSettings>,
) -> Result<ArchiveReport, crate::core::engine::EngineError> {
    use super::agent::AgentApi;
    let report = agent.status().await?.archive.unwrap_or_default();
    let wanted = settings.map(ArchiveSettings::fingerprint);
    if report.settings == wanted {
        return Ok(report);
    }
    agent.configure_archive(settings).await
}

fn rfc3339(t: jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// A host's report as status shows it.
fn member_archive(
    member: &str,
    settings: &ArchiveSettings,
    report: &ArchiveReport,
) -> crate::api::MemberArchive {
    let record = &report.record;
    crate::api::MemberArchive {
        member: member.to_string(),
        configured: report.settings.as_deref() == Some(settings.fingerprint().as_str()),
        last_archived: record.last_archived.as_ref().map(|a| a.file.clone()),
        last_archived_at: record.last_archived.as_ref().map(|a| rfc3339(a.at)),
        archived_through: record
            .last_archived
            .as_ref()
            .and_then(|a| segment_end(&a.file)),
        pending_bytes: report.pending_bytes,
        oldest_pending_at: report.oldest_pending.map(rfc3339),
        failing_since: record.failing_since.map(rfc3339),
        last_failure: record.last_failure.as_ref().map(|f| f.message.clone()),
        conflict: record.conflict.as_ref().map(|f| f.message.clone()),
        gaps: record
            .gaps
            .iter()
            .map(|g| crate::api::ArchiveGap {
                first: g.first.clone(),
                last: g.last.clone(),
                declared_at: rfc3339(g.declared_at),
            })
            .collect(),
        gap_count: record.gap_count,
    }
}

/// The WAL position a finished 16 MiB segment ends at, from its name.
pub fn segment_end(name: &str) -> Option<u64> {
    if name.len() != 24 {
        return None;
    }
    let log = u64::from_str_radix(&name[8..16], 16).ok()?;
    let segment = u64::from_str_radix(&name[16..24], 16).ok()?;
    Some((log << 32) + (segment + 1) * (16 << 20))
}
