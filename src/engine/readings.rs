//! What the controller's background readings of a repository's catalog share, for base backups
//! and Redis snapshots alike: when the next reading is due, what the last one found, and the
//! state of letting go what expired. Pure bookkeeping: the keepers do the reading.

use std::time::{Duration, Instant};

use crate::core::observed::{BackupsObserved, Catalog, PruneOutcome};

/// How often the catalog is read again while nothing changes.
pub const CATALOG_READ: Duration = Duration::from_secs(60);

pub struct Readings {
    /// What the core is shown.
    pub seen: BackupsObserved,
    read_began: Option<Instant>,
    reading: bool,
    /// Something ended since the last reading began (a backup, a letting go): what it found is
    /// old, so the next is due at once.
    pub stale: bool,
}

impl Readings {
    pub fn new(repository: &str) -> Self {
        Self {
            seen: BackupsObserved {
                repository: repository.to_string(),
                ..Default::default()
            },
            read_began: None,
            reading: false,
            stale: false,
        }
    }

    /// Whether a reading should begin now; if so, it counts as begun.
    pub fn begin_if_due(&mut self) -> bool {
        let due = self
            .read_began
            .is_none_or(|at| at.elapsed() >= CATALOG_READ || self.stale);
        if !due || self.reading {
            return false;
        }
        self.reading = true;
        self.stale = false;
        self.read_began = Some(Instant::now());
        true
    }

    /// A reading begun at `began` ended with `read`.
    pub fn finish(&mut self, began: jiff::Timestamp, read: Result<Catalog, String>) {
        self.reading = false;
        self.seen.read_at = Some(began);
        match read {
            Ok(catalog) => {
                self.seen.catalog = Some(catalog);
                self.seen.read_error = None;
            }
            Err(error) => self.seen.read_error = Some(error),
        }
    }

    /// Whether letting go may begin now (none runs); if so, it counts as begun.
    pub fn begin_prune(&mut self) -> bool {
        !std::mem::replace(&mut self.seen.pruning, true)
    }

    /// Letting go ended, with `outcome` (none when the catalog had moved and nothing went).
    pub fn finish_prune(&mut self, outcome: Option<PruneOutcome>) {
        self.seen.pruning = false;
        let repository = &self.seen.repository;
        match &outcome {
            Some(PruneOutcome {
                error: Some(error), ..
            }) => tracing::warn!(%repository, %error, "expired backups not let go"),
            Some(done) => {
                tracing::info!(%repository, backups = ?done.backups, wal_files = done.wal_files, "expired backups let go")
            }
            None => {}
        }
        if let Some(outcome) = outcome {
            self.seen.last_prune = Some(outcome);
        }
        // What the catalog said is old now: not asked for again before it is read again.
        if let Some(catalog) = &mut self.seen.catalog {
            catalog.expired.clear();
        }
        self.stale = true;
    }
}

/// How a letting go ended: `Ok(None)` when nothing went because the catalog had moved; the
/// ids gone and how many WAL files otherwise; or what went before it stopped short, and why.
pub type Pruned = Result<Option<(Vec<String>, u64)>, (Vec<String>, u64, String)>;

/// Let go with `prune`, given at most `limit`; how it went, as status shows it.
pub async fn prune_within(
    limit: Duration,
    prune: impl Future<Output = Pruned>,
) -> Option<PruneOutcome> {
    let pruned = tokio::time::timeout(limit, prune)
        .await
        .unwrap_or_else(|_| {
            Err((
                Vec::new(),
                0,
                format!("not done within {}s", limit.as_secs()),
            ))
        });
    prune_outcome(pruned)
}

/// How a letting go went, as status shows it.
fn prune_outcome(pruned: Pruned) -> Option<PruneOutcome> {
    let at = jiff::Timestamp::now();
    match pruned {
        Ok(None) => None,
        Ok(Some((backups, wal_files))) => Some(PruneOutcome {
            at,
            backups,
            wal_files,
            error: None,
        }),
        Err((backups, wal_files, error)) => Some(PruneOutcome {
            at,
            backups,
            wal_files,
            error: Some(error),
        }),
    }
}
