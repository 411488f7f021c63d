//! Restore drills as the repository keeps them: one record per drill beside the data set's
//! backups (`<data set>/drills/<id>.json`), so when the last one ran and how it went is the
//! repository's word, whoever ran it.

use serde::{Deserialize, Serialize};

use super::{Repository, base::BaseError, layout::DataSet};

/// How one restore drill went.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DrillRecord {
    /// When it began, as a name (`20261203T190000.000Z`): drills sort by it.
    pub id: String,
    /// The member whose host ran it.
    pub member: String,
    /// The base backup restored, when one was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_id: Option<String>,
    pub started_at: jiff::Timestamp,
    pub finished_at: jiff::Timestamp,
    /// From the first byte fetched to the restored server accepting writes, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_millis: Option<u64>,
    /// Where replay ended (a WAL position), and the commit time of the last transaction it
    /// replayed: the point the restore reached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reached_lsn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reached_at: Option<jiff::Timestamp>,
    /// The restore came up and its check found nothing wrong.
    pub passed: bool,
    /// What the check said, or what failed.
    pub message: String,
}

impl Repository {
    /// Keep `drill`'s record beside `set`'s backups.
    pub async fn record_drill(&self, set: &DataSet, drill: &DrillRecord) -> Result<(), BaseError> {
        let bytes = serde_json::to_vec_pretty(drill).map_err(|e| BaseError::Malformed {
            what: "drill record",
            reason: e.to_string(),
        })?;
        Ok(self
            .put(&format!("{}/drills/{}.json", set.root(), drill.id), bytes)
            .await?)
    }

    /// The newest drill record of `set`, if any.
    pub async fn newest_drill(&self, set: &DataSet) -> Result<Option<DrillRecord>, BaseError> {
        let listed = self.list(&format!("{}/drills", set.root())).await?;
        let Some(newest) = listed
            .iter()
            .filter(|l| l.path.ends_with(".json"))
            .max_by(|a, b| a.path.cmp(&b.path))
        else {
            return Ok(None);
        };
        let bytes = self.get(&newest.path).await?;
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| BaseError::Malformed {
                what: "drill record",
                reason: format!("{}: {e}", newest.path),
            })
    }
}
