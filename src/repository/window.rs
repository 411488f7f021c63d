//! What a repository can recover a data set to: from the end of its oldest base backup (the
//! first consistent point) to the end of the WAL archived without a hole after it. Computed
//! from the repository's own catalog and WAL listing, so a target outside it is refused before
//! anything is restored.

use super::{
    Repository, StoreError,
    base::BaseBackup,
    layout::{DataSet, WalFile},
};

/// WAL segments are 16 MiB (PostgreSQL's default, and what replicant's agents run with).
pub const SEGMENT_BYTES: u64 = 16 << 20;

/// The points a repository can recover a data set to, inclusive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Window {
    /// The oldest base backup's end: the earliest consistent point.
    pub earliest_lsn: u64,
    pub earliest_time: jiff::Timestamp,
    /// The end of the last WAL segment archived without a hole since that backup began, and
    /// when it was archived (every change in it happened before).
    pub latest_lsn: u64,
    pub latest_time: jiff::Timestamp,
}

impl std::fmt::Display for Window {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "from {} ({}) to {} ({})",
            self.earliest_time.strftime("%Y-%m-%dT%H:%M:%SZ"),
            lsn_text(self.earliest_lsn),
            self.latest_time.strftime("%Y-%m-%dT%H:%M:%SZ"),
            lsn_text(self.latest_lsn)
        )
    }
}

/// A WAL position as PostgreSQL prints it.
pub fn lsn_text(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF)
}

/// A segment's number across timelines (log * 256 + segment), from its name.
pub(super) fn segment_number(name: &str) -> Option<u64> {
    let log = u64::from_str_radix(name.get(8..16)?, 16).ok()?;
    let segment = u64::from_str_radix(name.get(16..24)?, 16).ok()?;
    Some(log * (0x1_0000_0000 / SEGMENT_BYTES) + segment)
}

/// The window `backups` (oldest first) and the archived `segments` (names, and when each was
/// archived) give; none without a backup.
pub fn window(backups: &[BaseBackup], segments: &[(String, jiff::Timestamp)]) -> Option<Window> {
    let oldest = backups.first()?;
    let start = segment_number(&oldest.start_wal)?;
    let mut archived: std::collections::BTreeMap<u64, jiff::Timestamp> = Default::default();
    for (name, at) in segments {
        if let Some(number) = segment_number(name) {
            // A segment number may sit on two timelines (the fork's): the later copy counts.
            let entry = archived.entry(number).or_insert(*at);
            *entry = (*entry).max(*at);
        }
    }
    let mut last = None;
    let mut next = start;
    while let Some(at) = archived.get(&next) {
        last = Some((next, *at));
        next += 1;
    }
    // The backup carries the WAL it needs itself: it reaches its end without the archive.
    let (latest_lsn, latest_time) = match last {
        Some((number, at)) => (((number + 1) * SEGMENT_BYTES).max(oldest.end_lsn), at),
        None => (oldest.end_lsn, oldest.finished_at),
    };
    Some(Window {
        earliest_lsn: oldest.end_lsn,
        earliest_time: oldest.finished_at,
        latest_lsn,
        latest_time: latest_time.max(oldest.finished_at),
    })
}

impl Repository {
    /// Every WAL segment archived for `set`, with when it was archived.
    pub async fn archived_segments(
        &self,
        set: &DataSet,
    ) -> Result<Vec<(String, jiff::Timestamp)>, StoreError> {
        let listed = self.list(&format!("{}/wal", set.root())).await?;
        Ok(listed
            .into_iter()
            .filter_map(|l| {
                let file = l.path.rsplit('/').next()?;
                let name = file.split('-').next()?;
                match WalFile::parse(name)? {
                    WalFile::Segment { name } => Some((name, l.modified)),
                    _ => None,
                }
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backup(start_wal: &str, end_lsn: u64, at: i64) -> BaseBackup {
        BaseBackup {
            id: "b".into(),
            member: "b".into(),
            started_at: jiff::Timestamp::from_second(at - 1).unwrap(),
            finished_at: jiff::Timestamp::from_second(at).unwrap(),
            timeline: 1,
            start_lsn: 0,
            end_lsn,
            start_wal: start_wal.into(),
            raw_bytes: 0,
            stored_bytes: 0,
            compression: "zstd".into(),
        }
    }

    fn at(second: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(second).unwrap()
    }

    #[test]
    fn the_window_runs_from_the_oldest_backup_to_the_first_hole_across_timelines() {
        let backups = [backup("000000010000000000000002", 0x2000100, 100)];
        let segments = [
            ("000000010000000000000002".to_string(), at(110)),
            ("000000010000000000000003".to_string(), at(120)),
            // The fork: timeline 2 goes on from segment 4.
            ("000000020000000000000004".to_string(), at(130)),
            // A hole at 5: 6 is out of reach.
            ("000000020000000000000006".to_string(), at(150)),
        ];
        let window = window(&backups, &segments).unwrap();
        assert_eq!(window.earliest_lsn, 0x2000100);
        assert_eq!(window.earliest_time, at(100));
        assert_eq!(window.latest_lsn, 5 * SEGMENT_BYTES);
        assert_eq!(window.latest_time, at(130));
        assert_eq!(
            window.to_string(),
            "from 1970-01-01T00:01:40Z (0/2000100) to 1970-01-01T00:02:10Z (0/5000000)"
        );
    }

    #[test]
    fn a_backup_alone_reaches_its_own_end_and_no_backup_reaches_nothing() {
        let backups = [backup("000000010000000000000002", 0x2000100, 100)];
        let window = window(&backups, &[]).unwrap();
        assert_eq!(
            (window.latest_lsn, window.latest_time),
            (0x2000100, at(100))
        );
        assert_eq!(super::window(&[], &[]), None);
    }
}
