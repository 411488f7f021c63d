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
            crate::api::status_time(self.earliest_time),
            lsn_text(self.earliest_lsn),
            crate::api::status_time(self.latest_time),
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

/// The stretches `backups` (oldest first) and the archived `segments` (names, and when each
/// was archived) make recoverable, oldest first; none without a backup. One stretch unless WAL
/// was let go unarchived: each backup reaches from its end to the first hole after its start,
/// and a backup taken after a hole begins a new stretch.
pub fn windows(backups: &[BaseBackup], segments: &[(String, jiff::Timestamp)]) -> Vec<Window> {
    let mut archived: std::collections::BTreeMap<u64, jiff::Timestamp> = Default::default();
    for (name, at) in segments {
        if let Some(number) = segment_number(name) {
            // A segment number may sit on two timelines (the fork's): the later copy counts.
            let entry = archived.entry(number).or_insert(*at);
            *entry = (*entry).max(*at);
        }
    }
    let mut stretches: Vec<Window> = Vec::new();
    for backup in backups {
        let Some(reach) = reach(backup, &archived) else {
            continue;
        };
        match stretches.last_mut() {
            Some(last) if reach.earliest_lsn <= last.latest_lsn => {
                if reach.latest_lsn > last.latest_lsn {
                    last.latest_lsn = reach.latest_lsn;
                    last.latest_time = last.latest_time.max(reach.latest_time);
                }
            }
            _ => stretches.push(reach),
        }
    }
    stretches
}

/// What one backup reaches: from its end to the end of the WAL archived without a hole from
/// its start.
fn reach(
    backup: &BaseBackup,
    archived: &std::collections::BTreeMap<u64, jiff::Timestamp>,
) -> Option<Window> {
    let start = segment_number(&backup.start_wal)?;
    let mut last = None;
    let mut next = start;
    while let Some(at) = archived.get(&next) {
        last = Some((next, *at));
        next += 1;
    }
    // The backup carries the WAL it needs itself: it reaches its end without the archive.
    let (latest_lsn, latest_time) = match last {
        Some((number, at)) => (((number + 1) * SEGMENT_BYTES).max(backup.end_lsn), at),
        None => (backup.end_lsn, backup.finished_at),
    };
    Some(Window {
        earliest_lsn: backup.end_lsn,
        earliest_time: backup.finished_at,
        latest_lsn,
        latest_time: latest_time.max(backup.finished_at),
    })
}

/// Stretches as messages show them.
pub fn describe(windows: &[Window]) -> String {
    match windows {
        [] => "nothing (no base backup)".to_string(),
        _ => windows
            .iter()
            .map(Window::to_string)
            .collect::<Vec<_>>()
            .join("; "),
    }
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
            compression: crate::repository::codec::Codec::Zstd,
            request: None,
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
        let [window] = windows(&backups, &segments).try_into().unwrap();
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
        let [window] = windows(&backups, &[]).try_into().unwrap();
        assert_eq!(
            (window.latest_lsn, window.latest_time),
            (0x2000100, at(100))
        );
        assert_eq!(windows(&[], &[]), vec![]);
    }

    #[test]
    fn a_backup_after_a_hole_begins_a_new_stretch_and_one_inside_extends_it() {
        let backups = [
            backup("000000010000000000000002", 0x2000100, 100),
            backup("000000010000000000000003", 0x3000100, 115),
            // Taken after the hole at 5.
            backup("000000010000000000000007", 0x7000100, 200),
        ];
        let segments = [
            ("000000010000000000000002".to_string(), at(110)),
            ("000000010000000000000003".to_string(), at(120)),
            ("000000010000000000000004".to_string(), at(130)),
            ("000000010000000000000007".to_string(), at(210)),
            ("000000010000000000000008".to_string(), at(220)),
        ];
        let stretches = windows(&backups, &segments);
        assert_eq!(stretches.len(), 2, "{stretches:?}");
        assert_eq!(
            (stretches[0].earliest_lsn, stretches[0].latest_lsn),
            (0x2000100, 5 * SEGMENT_BYTES)
        );
        assert_eq!(stretches[0].latest_time, at(130));
        assert_eq!(
            (stretches[1].earliest_lsn, stretches[1].latest_lsn),
            (0x7000100, 9 * SEGMENT_BYTES)
        );
        assert_eq!(
            (stretches[1].earliest_time, stretches[1].latest_time),
            (at(200), at(220))
        );
        assert!(describe(&stretches).contains("; from 1970-01-01T00:03:20Z"));
    }
}
