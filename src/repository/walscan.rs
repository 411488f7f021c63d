//! Reading archived WAL for the records a recovery target names, without replaying it: the
//! commit or abort of a transaction, and restore points (`pg_create_restore_point`). PostgreSQL
//! finds these only by replaying, so a target that is not there shows only when replay ends
//! short, hours later; reading the archive's records first refuses it before anything is
//! restored, and says which backup reaches it soonest. A pure parser of PostgreSQL 15's WAL
//! format (pages, records across pages and segments, block references, commit records).

/// What a scan looks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Sought {
    /// The commit or abort of this transaction (its low 32 bits, as `recovery_target_xid`).
    Xid(u32),
    /// The first restore point of this name.
    RestorePoint(String),
}

/// Where the sought record was found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    /// The record's own position.
    pub lsn: u64,
    /// The time it carries (the commit's, or the restore point's).
    pub time: jiff::Timestamp,
    /// For a transaction: whether it committed (else it aborted).
    pub committed: bool,
}

/// Why a segment could not be read as WAL.
#[derive(Debug, thiserror::Error)]
#[error("{segment}: {reason}")]
pub struct ScanError {
    pub segment: String,
    pub reason: String,
}

const XLP_FIRST_IS_CONTRECORD: u16 = 0x0001;
const XLP_LONG_HEADER: u16 = 0x0002;
const SHORT_PAGE_HEADER: usize = 24;
const LONG_PAGE_HEADER: usize = 40;
const RECORD_HEADER: usize = 24;
/// A record longer than this is not a record: a scan reading garbage stops there.
const MAX_RECORD: usize = 1 << 30;

const RM_XLOG_ID: u8 = 0;
const RM_XACT_ID: u8 = 1;
const XLOG_SWITCH: u8 = 0x40;
const XLOG_RESTORE_POINT: u8 = 0x70;
const XLOG_XACT_OPMASK: u8 = 0x70;
const XLOG_XACT_COMMIT: u8 = 0x00;
const XLOG_XACT_ABORT: u8 = 0x20;
const XLOG_XACT_COMMIT_PREPARED: u8 = 0x30;
const XLOG_XACT_ABORT_PREPARED: u8 = 0x40;
const XLOG_XACT_HAS_INFO: u8 = 0x80;
const XACT_XINFO_HAS_DBINFO: u32 = 1 << 0;
const XACT_XINFO_HAS_SUBXACTS: u32 = 1 << 1;
const XACT_XINFO_HAS_RELFILENODES: u32 = 1 << 2;
const XACT_XINFO_HAS_INVALS: u32 = 1 << 3;
const XACT_XINFO_HAS_TWOPHASE: u32 = 1 << 4;
const XACT_XINFO_HAS_DROPPED_STATS: u32 = 1 << 8;

/// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01).
const POSTGRES_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// Reads consecutive segments of one history, records that cross from one into the next
/// included.
#[derive(Default)]
pub struct Scanner {
    /// A record begun in an earlier page: its bytes so far, and how long it is.
    partial: Option<(u64, Vec<u8>, usize)>,
    /// The position of the last whole record, which the next one names as its predecessor.
    previous: Option<u64>,
    /// Where the next record starts, when known.
    next_record: Option<u64>,
}

impl Scanner {
    /// Read segment `name`, which starts at `start` (its position in the WAL): the records
    /// `sought` names in it, in order.
    pub fn segment(
        &mut self,
        name: &str,
        start: u64,
        bytes: &[u8],
        sought: &Sought,
    ) -> Result<Vec<Found>, ScanError> {
        let mut found = Vec::new();
        self.read(name, start, bytes, sought, &mut found)?;
        Ok(found)
    }

    fn read(
        &mut self,
        name: &str,
        start: u64,
        bytes: &[u8],
        sought: &Sought,
        found: &mut Vec<Found>,
    ) -> Result<(), ScanError> {
        let fail = |reason: String| ScanError {
            segment: name.to_string(),
            reason,
        };
        let page_size =
            page_size(bytes).ok_or_else(|| fail("no long page header at its start".into()))?;
        if self.next_record.is_some_and(|next| next < start) && self.partial.is_none() {
            // A gap between segments (never in a stretch): begin afresh.
            self.previous = None;
        }
        let mut page_start = 0usize;
        while page_start + page_size <= bytes.len() {
            let page = &bytes[page_start..page_start + page_size];
            let page_lsn = start + page_start as u64;
            let info = u16::from_le_bytes([page[2], page[3]]);
            let address = u64::from_le_bytes(page[8..16].try_into().expect("8 bytes"));
            if u16::from_le_bytes([page[0], page[1]]) == 0 || address != page_lsn {
                // The end of what was written: a recycled or zeroed page.
                self.forget();
                return Ok(());
            }
            let header = if info & XLP_LONG_HEADER != 0 {
                LONG_PAGE_HEADER
            } else {
                SHORT_PAGE_HEADER
            };
            let remaining = u32::from_le_bytes(page[16..20].try_into().expect("4 bytes")) as usize;
            let mut at = header;
            if info & XLP_FIRST_IS_CONTRECORD != 0 {
                match self.partial.take() {
                    Some((lsn, mut record, length)) => {
                        if length - record.len() != remaining {
                            return Err(fail(format!(
                                "page {} continues a record by {remaining} bytes, {} expected",
                                crate::repository::window::lsn_text(page_lsn),
                                length - record.len()
                            )));
                        }
                        let take = remaining.min(page_size - header);
                        record.extend_from_slice(&page[header..header + take]);
                        at = header + take;
                        if record.len() == length {
                            found.extend(self.record(lsn, &record, sought)?);
                            if switched(&record) {
                                self.forget();
                                return Ok(());
                            }
                        } else {
                            self.partial = Some((lsn, record, length));
                        }
                    }
                    // The scan began in the middle of a record: pass over its tail.
                    None => at = header + remaining.min(page_size - header),
                }
                at = align(at);
            } else if let Some((lsn, ..)) = self.partial.take() {
                return Err(fail(format!(
                    "the record at {} does not continue on the next page",
                    crate::repository::window::lsn_text(lsn)
                )));
            }
            while self.partial.is_none() && at + 4 <= page_size {
                let length =
                    u32::from_le_bytes(page[at..at + 4].try_into().expect("4 bytes")) as usize;
                if length == 0 {
                    // Nothing more was written.
                    self.forget();
                    return Ok(());
                }
                if !(RECORD_HEADER..=MAX_RECORD).contains(&length) {
                    return Err(fail(format!("a record {length} bytes long")));
                }
                let lsn = page_lsn + at as u64;
                let here = (page_size - at).min(length);
                let record = page[at..at + here].to_vec();
                if here < length {
                    self.partial = Some((lsn, record, length));
                    break;
                }
                found.extend(self.record(lsn, &record, sought)?);
                if switched(&record) {
                    // The rest of the segment is empty by design.
                    self.forget();
                    return Ok(());
                }
                at = align(at + length);
            }
            page_start += page_size;
        }
        self.next_record = Some(start + bytes.len() as u64);
        Ok(())
    }

    /// The WAL ended (or switched): the next segment starts with a record of its own.
    fn forget(&mut self) {
        self.partial = None;
        self.previous = None;
        self.next_record = None;
    }

    fn record(
        &mut self,
        lsn: u64,
        record: &[u8],
        sought: &Sought,
    ) -> Result<Option<Found>, ScanError> {
        let fail = |reason: String| ScanError {
            segment: crate::repository::window::lsn_text(lsn),
            reason,
        };
        let prev = u64::from_le_bytes(record[8..16].try_into().expect("8 bytes"));
        if let Some(previous) = self.previous
            && prev != previous
        {
            return Err(fail(format!(
                "the record names {} as its predecessor, not {}",
                crate::repository::window::lsn_text(prev),
                crate::repository::window::lsn_text(previous)
            )));
        }
        self.previous = Some(lsn);
        let (xid, info, rmid) = (
            u32::from_le_bytes(record[4..8].try_into().expect("4 bytes")),
            record[16],
            record[17],
        );
        let main = main_data(record).ok_or_else(|| fail("malformed block references".into()))?;
        Ok(match (rmid, sought) {
            (RM_XACT_ID, Sought::Xid(wanted)) => {
                let op = info & XLOG_XACT_OPMASK;
                let committed = matches!(op, XLOG_XACT_COMMIT | XLOG_XACT_COMMIT_PREPARED);
                let ended = committed || matches!(op, XLOG_XACT_ABORT | XLOG_XACT_ABORT_PREPARED);
                if !ended {
                    return Ok(None);
                }
                let prepared = matches!(op, XLOG_XACT_COMMIT_PREPARED | XLOG_XACT_ABORT_PREPARED);
                let whose = if prepared {
                    twophase_xid(main, info)
                } else {
                    Some(xid)
                };
                (whose == Some(*wanted))
                    .then(|| time_at(main))
                    .flatten()
                    .map(|time| Found {
                        lsn,
                        time,
                        committed,
                    })
            }
            (RM_XLOG_ID, Sought::RestorePoint(wanted)) if info & 0xF0 == XLOG_RESTORE_POINT => {
                let name = main.get(8..8 + 64).map(|raw| {
                    let end = raw.iter().position(|b| *b == 0).unwrap_or(raw.len());
                    String::from_utf8_lossy(&raw[..end]).into_owned()
                });
                (name.as_deref() == Some(wanted.as_str()))
                    .then(|| time_at(main))
                    .flatten()
                    .map(|time| Found {
                        lsn,
                        time,
                        committed: true,
                    })
            }
            _ => None,
        })
    }
}

/// The page size a segment's first page declares.
fn page_size(bytes: &[u8]) -> Option<usize> {
    let info = u16::from_le_bytes(bytes.get(2..4)?.try_into().ok()?);
    if info & XLP_LONG_HEADER == 0 {
        return None;
    }
    let page = u32::from_le_bytes(bytes.get(36..40)?.try_into().ok()?) as usize;
    (page >= 1024 && page.is_power_of_two()).then_some(page)
}

fn align(at: usize) -> usize {
    (at + 7) & !7
}

fn switched(record: &[u8]) -> bool {
    record[17] == RM_XLOG_ID && record[16] & 0xF0 == XLOG_SWITCH
}

/// A record's main data: what follows its block references and their data.
fn main_data(record: &[u8]) -> Option<&[u8]> {
    let mut at = RECORD_HEADER;
    let mut data = 0usize;
    let u16_at = |at: usize| -> Option<usize> {
        Some(u16::from_le_bytes(record.get(at..at + 2)?.try_into().ok()?) as usize)
    };
    loop {
        // Block references go on while more bytes are left than their data takes.
        if record.len().checked_sub(at)? <= data {
            return Some(&[]);
        }
        let id = *record.get(at)?;
        at += 1;
        match id {
            255 => {
                let length = *record.get(at)? as usize;
                return record.len().checked_sub(length).map(|from| &record[from..]);
            }
            254 => {
                let length = u32::from_le_bytes(record.get(at..at + 4)?.try_into().ok()?) as usize;
                return record.len().checked_sub(length).map(|from| &record[from..]);
            }
            253 => at += 2,
            252 => at += 4,
            0..=32 => {
                let fork_flags = *record.get(at)?;
                data += u16_at(at + 1)?;
                at += 3;
                if fork_flags & 0x10 != 0 {
                    // A full-page image: its length, where its hole is, how it is stored.
                    data += u16_at(at)?;
                    let image_info = *record.get(at + 4)?;
                    at += 5;
                    if image_info & 0x01 != 0 && image_info & (0x04 | 0x08 | 0x10) != 0 {
                        at += 2;
                    }
                }
                if fork_flags & 0x80 == 0 {
                    at += 12;
                }
                at += 4;
            }
            _ => return None,
        }
    }
}

/// The time at the start of a commit, abort or restore point record's main data.
fn time_at(main: &[u8]) -> Option<jiff::Timestamp> {
    let micros = i64::from_le_bytes(main.get(..8)?.try_into().ok()?);
    jiff::Timestamp::from_microsecond(micros.checked_add(POSTGRES_EPOCH_MICROS)?).ok()
}

/// The prepared transaction a commit or abort of one names.
fn twophase_xid(main: &[u8], info: u8) -> Option<u32> {
    if info & XLOG_XACT_HAS_INFO == 0 {
        return None;
    }
    let read_u32 = |at: usize| -> Option<u32> {
        Some(u32::from_le_bytes(main.get(at..at + 4)?.try_into().ok()?))
    };
    let xinfo = read_u32(8)?;
    let mut at = 12;
    if xinfo & XACT_XINFO_HAS_DBINFO != 0 {
        at += 8;
    }
    if xinfo & XACT_XINFO_HAS_SUBXACTS != 0 {
        at += 4 + 4 * read_u32(at)? as usize;
    }
    if xinfo & XACT_XINFO_HAS_RELFILENODES != 0 {
        at += 4 + 12 * read_u32(at)? as usize;
    }
    if xinfo & XACT_XINFO_HAS_DROPPED_STATS != 0 {
        at += 4 + 12 * read_u32(at)? as usize;
    }
    if xinfo & XACT_XINFO_HAS_INVALS != 0 {
        at += 4 + 16 * read_u32(at)? as usize;
    }
    if xinfo & XACT_XINFO_HAS_TWOPHASE == 0 {
        return None;
    }
    read_u32(at)
}

/// Why the archive could not be read for a target.
#[derive(Debug, thiserror::Error)]
pub enum PlaceError {
    #[error(transparent)]
    Fetch(#[from] super::wal::FetchError),
    #[error("reading the archived WAL at {0}")]
    Scan(#[from] ScanError),
    #[error("{0} is listed in the repository but could not be fetched")]
    Missing(String),
}

/// Segments fetched ahead of the one being read.
const FETCH_AHEAD: usize = 4;

/// Where a target lies in a stretch of the archive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Placed {
    /// A backup reaches it: restore that one.
    Reached {
        backup: super::base::BaseBackup,
        found: Found,
    },
    /// The archive holds it, but no backup ends before it (after any earlier record of the
    /// same name): no restore is consistent by then.
    Unreachable(Found),
    /// The archive holds no record of it.
    Absent,
}

impl super::Repository {
    /// Where `sought` lies in the archived WAL of `set` (`segments`: names, and when each was
    /// archived), read from the start of `backups` (one stretch's, oldest first) for as long
    /// as the archive has no hole: the first record of it that a backup reaches (one that
    /// ends at or before it and began after any earlier record of it), with the newest such
    /// backup.
    pub async fn place(
        &self,
        set: &super::layout::DataSet,
        backups: &[super::base::BaseBackup],
        segments: &[(String, jiff::Timestamp)],
        sought: &Sought,
    ) -> Result<Placed, PlaceError> {
        use super::window::{SEGMENT_BYTES, segment_number};
        use futures::StreamExt;
        let Some(first) = backups.first().and_then(|b| segment_number(&b.start_wal)) else {
            return Ok(Placed::Absent);
        };
        // Per segment number, the copy on the latest timeline (names sort by timeline first).
        let mut by_number = std::collections::BTreeMap::<u64, &str>::new();
        for (name, _) in segments {
            if let Some(number) = segment_number(name) {
                let entry = by_number.entry(number).or_insert(name);
                *entry = (*entry).max(name.as_str());
            }
        }
        let run: Vec<(u64, String)> = (first..)
            .map_while(|n| by_number.get(&n).map(|name| (n, name.to_string())))
            .collect();
        let mut fetched = futures::stream::iter(run.into_iter().map(|(number, name)| async move {
            let file = super::layout::WalFile::Segment { name: name.clone() };
            (number, name, self.fetch_wal(set, &file).await)
        }))
        .buffered(FETCH_AHEAD);
        let mut scanner = Scanner::default();
        let mut earlier: Option<Found> = None;
        while let Some((number, name, content)) = fetched.next().await {
            let content = content?.ok_or_else(|| PlaceError::Missing(name.clone()))?;
            for found in scanner.segment(&name, number * SEGMENT_BYTES, &content, sought)? {
                let reaching = backups.iter().rfind(|b| {
                    b.end_lsn <= found.lsn && earlier.as_ref().is_none_or(|e| b.start_lsn > e.lsn)
                });
                if let Some(backup) = reaching {
                    return Ok(Placed::Reached {
                        backup: backup.clone(),
                        found,
                    });
                }
                earlier = Some(found);
            }
        }
        Ok(earlier.map_or(Placed::Absent, Placed::Unreachable))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: usize = 1024;
    /// Pages in one segment of these tests.
    const SEGMENT_PAGES: usize = 2;

    /// WAL laid out as PostgreSQL writes it: pages with headers (a long one first in each
    /// segment), records aligned to 8 bytes and continued across pages and segments.
    struct Wal {
        page: usize,
        segment_pages: usize,
        /// The system identifier the long headers carry.
        system: u64,
        start: u64,
        bytes: Vec<u8>,
        at: usize,
        prev: u64,
    }

    impl Wal {
        /// Small pages and segments, for the parser's own tests.
        fn new(start: u64, segments: usize) -> Self {
            Self::sized(PAGE, SEGMENT_PAGES, start, segments)
        }

        fn sized(page: usize, segment_pages: usize, start: u64, segments: usize) -> Self {
            let mut wal = Self {
                page,
                segment_pages,
                system: 7,
                start,
                bytes: vec![0; page * segment_pages * segments],
                at: 0,
                prev: 0,
            };
            wal.at = wal.page_header(0, 0);
            wal
        }

        /// Write page `page`'s header; where its data begins.
        fn page_header(&mut self, page: usize, continued: usize) -> usize {
            let at = page * self.page;
            let long = page.is_multiple_of(self.segment_pages);
            let mut info = if continued > 0 {
                XLP_FIRST_IS_CONTRECORD
            } else {
                0
            };
            if long {
                info |= XLP_LONG_HEADER;
            }
            let (segment, page_size, system) = (
                (self.page * self.segment_pages) as u32,
                self.page as u32,
                self.system,
            );
            let b = &mut self.bytes[at..at + LONG_PAGE_HEADER];
            b[0..2].copy_from_slice(&0xD110u16.to_le_bytes());
            b[2..4].copy_from_slice(&info.to_le_bytes());
            b[4..8].copy_from_slice(&1u32.to_le_bytes());
            b[8..16].copy_from_slice(&(self.start + at as u64).to_le_bytes());
            b[16..20].copy_from_slice(&(continued as u32).to_le_bytes());
            if long {
                b[24..32].copy_from_slice(&system.to_le_bytes());
                b[32..36].copy_from_slice(&segment.to_le_bytes());
                b[36..40].copy_from_slice(&page_size.to_le_bytes());
                at + LONG_PAGE_HEADER
            } else {
                at + SHORT_PAGE_HEADER
            }
        }

        /// Append a record of resource manager `rmid` with `info` and `main` data; its LSN.
        fn record(&mut self, xid: u32, rmid: u8, info: u8, main: &[u8]) -> u64 {
            let mut record = vec![0u8; RECORD_HEADER];
            record.extend_from_slice(&[255, main.len() as u8]);
            record.extend_from_slice(main);
            let length = record.len() as u32;
            record[0..4].copy_from_slice(&length.to_le_bytes());
            record[4..8].copy_from_slice(&xid.to_le_bytes());
            record[8..16].copy_from_slice(&self.prev.to_le_bytes());
            record[16] = info;
            record[17] = rmid;
            self.at = align(self.at);
            if self.at.is_multiple_of(self.page) {
                self.at = self.page_header(self.at / self.page, 0);
            }
            let lsn = self.start + self.at as u64;
            let mut left = record.as_slice();
            loop {
                let take = (self.page - self.at % self.page).min(left.len());
                self.bytes[self.at..self.at + take].copy_from_slice(&left[..take]);
                self.at += take;
                left = &left[take..];
                if left.is_empty() {
                    break;
                }
                self.at = self.page_header(self.at / self.page, left.len());
            }
            self.prev = lsn;
            lsn
        }

        /// Segment `i`: where it starts, and its bytes.
        fn segment(&self, i: usize) -> (u64, &[u8]) {
            let size = self.page * self.segment_pages;
            (
                self.start + (i * size) as u64,
                &self.bytes[i * size..(i + 1) * size],
            )
        }
    }

    fn at(seconds: i64) -> [u8; 8] {
        (seconds * 1_000_000 - POSTGRES_EPOCH_MICROS).to_le_bytes()
    }

    fn restore_point(seconds: i64, name: &str) -> Vec<u8> {
        let mut main = at(seconds).to_vec();
        let mut raw = [0u8; 64];
        raw[..name.len()].copy_from_slice(name.as_bytes());
        main.extend_from_slice(&raw);
        main
    }

    fn scan(wal: &Wal, i: usize, sought: &Sought) -> Result<Vec<Found>, ScanError> {
        let (start, bytes) = wal.segment(i);
        Scanner::default().segment("segment", start, bytes, sought)
    }

    #[test]
    fn finds_commits_aborts_and_restore_points_across_pages() {
        let mut wal = Wal::new(16 << 20, 1);
        for i in 0..20 {
            wal.record(
                700 + i,
                RM_XACT_ID,
                XLOG_XACT_COMMIT,
                &at(1_800_000_000 + i as i64),
            );
        }
        // Pushes the restore point across the first page's end.
        wal.record(0, 9, 0, &[7u8; 94]);
        let point = wal.record(
            0,
            RM_XLOG_ID,
            XLOG_RESTORE_POINT,
            &restore_point(1_800_000_100, "before"),
        );
        let aborted = wal.record(900, RM_XACT_ID, XLOG_XACT_ABORT, &at(1_800_000_200));
        assert!(
            (point as usize % PAGE) + RECORD_HEADER + 2 + 72 > PAGE,
            "the restore point crosses a page"
        );

        let found = scan(&wal, 0, &Sought::RestorePoint("before".into())).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].lsn, point);
        assert_eq!(
            found[0].time,
            jiff::Timestamp::from_second(1_800_000_100).unwrap()
        );
        assert!(
            scan(&wal, 0, &Sought::RestorePoint("befor".into()))
                .unwrap()
                .is_empty()
        );

        let found = scan(&wal, 0, &Sought::Xid(712)).unwrap();
        assert_eq!(found.len(), 1);
        assert!(found[0].committed);
        assert_eq!(
            found[0].time,
            jiff::Timestamp::from_second(1_800_000_012).unwrap()
        );
        let found = scan(&wal, 0, &Sought::Xid(900)).unwrap();
        assert_eq!((found[0].lsn, found[0].committed), (aborted, false));
        assert!(scan(&wal, 0, &Sought::Xid(901)).unwrap().is_empty());
    }

    #[test]
    fn a_record_continues_into_the_next_segment_and_a_broken_chain_is_an_error() {
        let mut wal = Wal::new(16 << 20, 2);
        while wal.at < SEGMENT_PAGES * PAGE - 60 {
            wal.record(1, RM_XACT_ID, XLOG_XACT_COMMIT, &at(1_800_000_000));
        }
        let crossing = wal.record(
            0,
            RM_XLOG_ID,
            XLOG_RESTORE_POINT,
            &restore_point(1_800_000_001, "x"),
        );
        let after = wal.record(5, RM_XACT_ID, XLOG_XACT_COMMIT, &at(1_800_000_002));
        assert!(
            after >= wal.segment(1).0,
            "the restore point ends in the second segment"
        );

        // Read in order, the record is whole.
        let sought = Sought::RestorePoint("x".into());
        let mut scanner = Scanner::default();
        let (start, first) = wal.segment(0);
        assert!(
            scanner
                .segment("1", start, first, &sought)
                .unwrap()
                .is_empty()
        );
        let (start, second) = wal.segment(1);
        let found = scanner.segment("2", start, second, &sought).unwrap();
        assert_eq!(
            found.iter().map(|f| f.lsn).collect::<Vec<_>>(),
            vec![crossing]
        );
        // Read alone, the second segment passes over the tail it begins with.
        assert_eq!(scan(&wal, 1, &Sought::Xid(5)).unwrap()[0].lsn, after);

        // A record naming another predecessor: the chain is broken, and the scan says so.
        let mut broken = Wal::new(16 << 20, 2);
        broken.bytes.copy_from_slice(&wal.bytes);
        let prev_at = (after - broken.start) as usize + 8;
        broken.bytes[prev_at..prev_at + 8].copy_from_slice(&12345u64.to_le_bytes());
        let mut scanner = Scanner::default();
        let (start, first) = broken.segment(0);
        scanner.segment("1", start, first, &sought).unwrap();
        let (start, second) = broken.segment(1);
        let error = scanner.segment("2", start, second, &sought).unwrap_err();
        assert!(error.reason.contains("predecessor"), "{error}");
    }

    #[test]
    fn the_scan_ends_where_nothing_more_was_written() {
        let mut wal = Wal::new(16 << 20, 1);
        wal.record(3, RM_XACT_ID, XLOG_XACT_COMMIT, &at(1_800_000_000));
        // A recycled page further on: an old address, a commit of the sought transaction.
        let stale = PAGE;
        wal.bytes[stale..stale + 2].copy_from_slice(&0xD110u16.to_le_bytes());
        wal.bytes[stale + 8..stale + 16].copy_from_slice(&7u64.to_le_bytes());
        assert!(scan(&wal, 0, &Sought::Xid(4)).unwrap().is_empty());
        assert_eq!(scan(&wal, 0, &Sought::Xid(3)).unwrap().len(), 1);
        let mut not_wal = wal.bytes.clone();
        not_wal[2] = 0;
        assert!(
            Scanner::default()
                .segment("s", wal.start, &not_wal, &Sought::Xid(3))
                .is_err()
        );
    }

    #[test]
    fn block_references_come_before_the_main_data() {
        // A block reference with 10 bytes of data and a 30-byte full-page image (with a hole,
        // compressed), a second one on the same relation with 2 bytes, then 4 of main data.
        let mut record = vec![0u8; RECORD_HEADER];
        record.extend_from_slice(&[0, 0x10 | 0x20, 10, 0]);
        record.extend_from_slice(&[30, 0, 0, 0, 0x01 | 0x04, 5, 0]);
        record.extend_from_slice(&[0; 12]);
        record.extend_from_slice(&[0; 4]);
        record.extend_from_slice(&[1, 0x80 | 0x20, 2, 0]);
        record.extend_from_slice(&[0; 4]);
        record.extend_from_slice(&[255, 4]);
        record.extend_from_slice(&[0xAA; 10 + 30 + 2]);
        record.extend_from_slice(&[1, 2, 3, 4]);
        assert_eq!(main_data(&record), Some(&[1u8, 2, 3, 4][..]));
        // Without main data, the block data ends the record.
        let mut record = vec![0u8; RECORD_HEADER];
        record.extend_from_slice(&[0, 0x20, 3, 0]);
        record.extend_from_slice(&[0; 16]);
        record.extend_from_slice(&[9, 9, 9]);
        assert_eq!(main_data(&record), Some(&[][..]));
    }

    /// A base backup of the test data set, from `start` to `end`.
    fn backup(id: &str, start: u64, end: u64) -> super::super::base::BaseBackup {
        super::super::base::BaseBackup {
            id: id.into(),
            member: "b".into(),
            started_at: jiff::Timestamp::from_second(1_800_000_000).unwrap(),
            finished_at: jiff::Timestamp::from_second(1_800_000_001).unwrap(),
            timeline: 1,
            start_lsn: start,
            end_lsn: end,
            start_wal: "000000010000000000000001".into(),
            raw_bytes: 0,
            stored_bytes: 0,
            compression: Default::default(),
            request: None,
        }
    }

    #[tokio::test]
    async fn a_target_is_placed_by_the_newest_backup_ending_before_it_or_refused() {
        use super::super::{Repository, layout::DataSet, layout::WalFile};
        const SEGMENT: u64 = super::super::window::SEGMENT_BYTES;
        // One real-sized segment (8 KiB pages, 16 MiB) in a directory repository.
        let mut wal = Wal::sized(8192, (SEGMENT / 8192) as usize, SEGMENT, 1);
        let early = wal.record(
            0,
            RM_XLOG_ID,
            XLOG_RESTORE_POINT,
            &restore_point(1_800_000_010, "early"),
        );
        for i in 0..50 {
            wal.record(100 + i, RM_XACT_ID, XLOG_XACT_COMMIT, &at(1_800_000_020));
        }
        let late = wal.record(
            0,
            RM_XLOG_ID,
            XLOG_RESTORE_POINT,
            &restore_point(1_800_000_030, "late"),
        );
        let dir = tempfile::tempdir().unwrap();
        let repository = Repository::open(
            &crate::api::Repository {
                name: "local".into(),
                directory: Some(crate::api::DirectoryRepository {
                    path: dir.path().display().to_string(),
                }),
                s3: None,
                azure: None,
                gcs: None,
            },
            None,
        )
        .unwrap();
        let set = DataSet {
            namespace: "default".into(),
            cluster: "orders".into(),
            system_identifier: 7,
        };
        let name = "000000010000000000000001".to_string();
        let file = WalFile::Segment { name: name.clone() };
        repository.push_wal(&set, &file, &wal.bytes).await.unwrap();
        let segments = vec![(name, jiff::Timestamp::now())];

        // Two backups: the first ends just after the early restore point begins, the second
        // just before the late one.
        let first = backup("first", SEGMENT, early + 8);
        let second = backup("second", early + 16, late - 8);
        let backups = [first.clone(), second];
        let placed = |sought: Sought| {
            let (repository, set, segments, backups) = (&repository, &set, &segments, &backups);
            async move {
                repository
                    .place(set, backups, segments, &sought)
                    .await
                    .unwrap()
            }
        };
        match placed(Sought::RestorePoint("late".into())).await {
            Placed::Reached { backup, found } => {
                assert_eq!((backup.id.as_str(), found.lsn), ("second", late));
            }
            other => panic!("{other:?}"),
        }
        match placed(Sought::Xid(120)).await {
            Placed::Reached { backup, .. } => assert_eq!(backup.id, "first"),
            other => panic!("{other:?}"),
        }
        // Before the first backup's end: in the archive, but no restore is consistent there.
        assert!(matches!(
            placed(Sought::RestorePoint("early".into())).await,
            Placed::Unreachable(Found { lsn, .. }) if lsn == early
        ));
        assert_eq!(placed(Sought::Xid(999)).await, Placed::Absent);
    }
}
