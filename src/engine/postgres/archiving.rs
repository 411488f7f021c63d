//! The controller's side of WAL archiving: keeps every host's archive settings as the spec
//! says (sending them when a host's differ), in the background of the rounds, and turns each
//! host's report into what status shows. The same look hears what the host says of its base
//! backups.

use super::{
    agent::{AgentApi, AgentClient},
    archive::{ArchiveReport, ArchiveSettings, BackupReport, DrillReport},
};
use crate::{
    api::{ArchiveGap, MemberArchive, status_time},
    core::engine::EngineError,
};

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
    report: Option<MemberArchive>,
    backups: Option<BackupReport>,
    drills: Option<DrillReport>,
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
    pub fn care(&self, member: &str, agent: &AgentClient) -> Option<MemberArchive> {
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
                    Ok((report, backups, drills)) => {
                        let archive = settings
                            .as_ref()
                            .map(|s| member_archive(&member, s, &report));
                        if let Some(cared) = members.lock().expect("lock").get_mut(&member) {
                            cared.report = archive;
                            cared.backups = backups;
                            cared.drills = drills;
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

    /// What each host last said of its base backups and restore drills.
    pub fn host_reports(&self) -> Vec<(String, Option<BackupReport>, Option<DrillReport>)> {
        self.members
            .lock()
            .expect("lock")
            .iter()
            .map(|(member, cared)| (member.clone(), cared.backups.clone(), cared.drills.clone()))
            .collect()
    }
}

/// Ask the host how its archiver and its base backups go; send `settings` when its own
/// differ.
async fn keep(
    agent: &AgentClient,
    settings: Option<&ArchiveSettings>,
) -> Result<(ArchiveReport, Option<BackupReport>, Option<DrillReport>), EngineError> {
    let status = agent.status().await?;
    let report = status.archive.unwrap_or_default();
    let wanted = settings.map(ArchiveSettings::fingerprint);
    if report.settings == wanted {
        return Ok((report, status.backup, status.drill));
    }
    Ok((
        agent.configure_archive(settings).await?,
        status.backup,
        status.drill,
    ))
}

/// A host's report as status shows it.
fn member_archive(
    member: &str,
    settings: &ArchiveSettings,
    report: &ArchiveReport,
) -> MemberArchive {
    let record = &report.record;
    MemberArchive {
        member: member.to_string(),
        configured: report.settings.as_deref() == Some(settings.fingerprint().as_str()),
        last_archived: record.last_archived.as_ref().map(|a| a.file.clone()),
        last_archived_at: record.last_archived.as_ref().map(|a| status_time(a.at)),
        archived_through: record
            .last_archived
            .as_ref()
            .and_then(|a| segment_end(&a.file)),
        pending_bytes: report.pending_bytes,
        oldest_pending_at: report.oldest_pending.map(status_time),
        failing_since: record.failing_since.map(status_time),
        last_failure: record.last_failure.as_ref().map(|f| f.message.clone()),
        conflict: record.conflict.as_ref().map(|f| f.message.clone()),
        gaps: record
            .gaps
            .iter()
            .map(|g| ArchiveGap {
                first: g.first.clone(),
                last: g.last.clone(),
                declared_at: status_time(g.declared_at),
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
