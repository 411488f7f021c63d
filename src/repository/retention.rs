//! Retention: which base backups and WAL a repository may let go, computed from its own
//! catalog. Every point of the recovery window (now minus `window`, to now) stays recoverable,
//! and the newest `min_full_backups` backups stay whatever their age; everything older than the
//! oldest backup kept goes, its WAL with it.

use super::{
    Repository, StoreError,
    base::{BaseBackup, BaseError},
    layout::{DataSet, WalFile},
    window::segment_number,
};

/// What retention keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    pub window: std::time::Duration,
    pub min_full_backups: usize,
}

impl From<&crate::api::RetentionPolicy> for Retention {
    fn from(policy: &crate::api::RetentionPolicy) -> Self {
        Self {
            window: policy.window.into(),
            min_full_backups: policy.min_full_backups as usize,
        }
    }
}

/// What retention lets go, before it goes: the dry run shows exactly this.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Prune {
    pub backups: Vec<BaseBackup>,
    /// WAL objects (paths in the repository) older than the oldest backup kept.
    pub wal: Vec<String>,
}

/// The backups (oldest first) to let go at `now`.
pub fn expired(
    backups: &[BaseBackup],
    retention: Retention,
    now: jiff::Timestamp,
) -> Vec<BaseBackup> {
    expired_by(backups, |b| b.finished_at, retention, now)
}

/// Of `entries` (oldest first, each ending at `finished`), those to let go at `now`: base
/// backups, and Redis snapshots alike.
pub fn expired_by<T: Clone>(
    backups: &[T],
    finished: impl Fn(&T) -> jiff::Timestamp,
    retention: Retention,
    now: jiff::Timestamp,
) -> Vec<T> {
    let window =
        jiff::SignedDuration::try_from(retention.window).unwrap_or(jiff::SignedDuration::MAX);
    let horizon = now.checked_sub(window).unwrap_or(jiff::Timestamp::MIN);
    // The newest backup that ends before the horizon is the base for the window's first
    // points: it stays, with everything after it.
    let base_of_window = backups
        .iter()
        .rposition(|b| finished(b) <= horizon)
        .unwrap_or(0);
    let keep_newest = backups.len().saturating_sub(retention.min_full_backups);
    let first_kept = base_of_window.min(keep_newest);
    backups[..first_kept].to_vec()
}

impl Repository {
    /// What retention lets go from `set` at `now`, without letting anything go.
    pub async fn plan_prune(
        &self,
        set: &DataSet,
        backups: &[BaseBackup],
        retention: Retention,
        now: jiff::Timestamp,
    ) -> Result<Prune, StoreError> {
        let gone = expired(backups, retention, now);
        let Some(oldest_kept) = backups.get(gone.len()) else {
            return Ok(Prune::default());
        };
        let Some(start) = segment_number(&oldest_kept.start_wal) else {
            return Ok(Prune::default());
        };
        let listed = self.list(&format!("{}/wal", set.root())).await?;
        let wal = listed
            .into_iter()
            .filter(|l| {
                let name = l.path.rsplit('/').next().unwrap_or_default();
                let file = name.split('-').next().unwrap_or_default();
                // History files stay: they are small, and every later timeline needs them.
                match WalFile::parse(file) {
                    Some(WalFile::History { .. }) | None => false,
                    Some(_) => segment_number(file).is_some_and(|n| n < start),
                }
            })
            .map(|l| l.path)
            .collect();
        Ok(Prune { backups: gone, wal })
    }

    /// Let go what `prune` lists: backups first (catalog entry before data), then the WAL only
    /// they needed.
    pub async fn prune(&self, set: &DataSet, prune: &Prune) -> Result<(), BaseError> {
        for backup in &prune.backups {
            self.remove_base(set, &backup.id).await?;
        }
        for object in &prune.wal {
            self.delete(object).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backup(id: &str, finished: i64) -> BaseBackup {
        BaseBackup {
            id: id.into(),
            member: "b".into(),
            started_at: jiff::Timestamp::from_second(finished - 1).unwrap(),
            finished_at: jiff::Timestamp::from_second(finished).unwrap(),
            timeline: 1,
            start_lsn: 0,
            end_lsn: 0,
            start_wal: "000000010000000000000002".into(),
            raw_bytes: 0,
            stored_bytes: 0,
            compression: crate::repository::codec::Codec::Zstd,
            request: None,
        }
    }

    fn ids(backups: &[BaseBackup]) -> Vec<&str> {
        backups.iter().map(|b| b.id.as_str()).collect()
    }

    #[test]
    fn the_window_keeps_its_base_and_the_minimum_keeps_the_newest() {
        let backups = [
            backup("a", 100),
            backup("b", 200),
            backup("c", 300),
            backup("d", 400),
        ];
        let now = jiff::Timestamp::from_second(450).unwrap();
        let keep = |window: u64, min: usize| {
            let retention = Retention {
                window: std::time::Duration::from_secs(window),
                min_full_backups: min,
            };
            expired(&backups, retention, now)
        };
        // Horizon 250: b (ended 200) is the base of the window's first points.
        assert_eq!(ids(&keep(200, 1)), ["a"]);
        // Horizon 50: nothing ends before it, so everything is needed.
        assert_eq!(ids(&keep(400, 1)), Vec::<&str>::new());
        // Horizon 449: d is the base; the minimum keeps c too.
        assert_eq!(ids(&keep(1, 2)), ["a", "b"]);
        assert_eq!(ids(&keep(1, 1)), ["a", "b", "c"]);
        // The minimum never lets the only backups go.
        assert_eq!(ids(&keep(1, 10)), Vec::<&str>::new());
    }
}
