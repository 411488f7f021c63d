//! Where each file of a data set sits in a repository. The path says whose it is (the cluster
//! and the PostgreSQL system identifier) and which branch of history (the timeline is in each
//! WAL file's name), so a cluster restored from another never writes over its source.
//!
//! ```text
//! <namespace>/<cluster>/<system identifier>/wal/<timeline and log, 16 hex>/<WAL file>-<digest>.zst
//! <namespace>/<cluster>/<system identifier>/wal/history/<timeline>.history-<digest>.zst
//! ```

use sha2::{Digest, Sha256};

/// One data set in a repository: a cluster's, under one system identifier.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataSet {
    pub namespace: String,
    pub cluster: String,
    /// PostgreSQL's system identifier (`pg_controldata`), the same on every member.
    pub system_identifier: u64,
}

impl DataSet {
    pub fn root(&self) -> String {
        format!(
            "{}/{}/{}",
            self.namespace, self.cluster, self.system_identifier
        )
    }

    /// The directory a WAL file's objects sit in.
    pub fn wal_directory(&self, file: &WalFile) -> String {
        match file {
            WalFile::History { .. } => format!("{}/wal/history", self.root()),
            WalFile::Segment { name }
            | WalFile::Partial { name }
            | WalFile::BackupLabel { name } => {
                format!("{}/wal/{}", self.root(), &name[..16])
            }
        }
    }

    /// The object holding `content` as WAL file `file`.
    pub fn wal_object(&self, file: &WalFile, content: &[u8]) -> String {
        format!(
            "{}/{}-{}.zst",
            self.wal_directory(file),
            file.name(),
            digest(content)
        )
    }
}

/// A file PostgreSQL hands its archiver, told apart by name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WalFile {
    /// A finished 24-hex-digit segment.
    Segment { name: String },
    /// The last, unfinished segment of a timeline a promotion left (`<segment>.partial`).
    Partial { name: String },
    /// A base backup's label (`<segment>.<offset>.backup`).
    BackupLabel { name: String },
    /// A timeline's history (`<timeline>.history`).
    History { timeline: u32 },
}

fn is_hex(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
}

impl WalFile {
    /// What `name` (a file name, no directory) is, or `None` for anything PostgreSQL does not
    /// archive.
    pub fn parse(name: &str) -> Option<Self> {
        if let Some(timeline) = name.strip_suffix(".history") {
            if timeline.len() == 8 && is_hex(timeline) {
                let timeline = u32::from_str_radix(timeline, 16).ok()?;
                return Some(Self::History { timeline });
            }
            return None;
        }
        let segment = name.get(..24)?;
        if !is_hex(segment) {
            return None;
        }
        let rest = &name[24..];
        let name = name.to_string();
        match rest {
            "" => Some(Self::Segment { name }),
            ".partial" => Some(Self::Partial { name }),
            _ => {
                let offset = rest.strip_prefix('.')?.strip_suffix(".backup")?;
                (offset.len() == 8 && is_hex(offset)).then_some(Self::BackupLabel { name })
            }
        }
    }

    pub fn name(&self) -> String {
        match self {
            Self::Segment { name } | Self::Partial { name } | Self::BackupLabel { name } => {
                name.clone()
            }
            Self::History { timeline } => format!("{timeline:08X}.history"),
        }
    }

    /// The timeline the file belongs to.
    pub fn timeline(&self) -> u32 {
        match self {
            Self::Segment { name } | Self::Partial { name } | Self::BackupLabel { name } => {
                u32::from_str_radix(&name[..8], 16).unwrap_or(0)
            }
            Self::History { timeline } => *timeline,
        }
    }

    /// Whether an object's file name (`<name>-<digest>.zst`) holds this file.
    pub fn holds(&self, object_file_name: &str) -> bool {
        object_file_name
            .strip_prefix(&self.name())
            .and_then(|rest| rest.strip_prefix('-'))
            .and_then(|rest| rest.strip_suffix(".zst"))
            .is_some_and(|digest| digest.len() == DIGEST_HEX && is_lower_hex(digest))
    }
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Hex digits of the content digest in object names: 128 bits of SHA-256.
/// The name of a catalog entry begun at `at` (`20261203T190000.000Z`): base backups, drills
/// and snapshots sort by it.
pub fn entry_id(at: jiff::Timestamp) -> String {
    at.strftime("%Y%m%dT%H%M%S%.3fZ").to_string()
}

pub const DIGEST_HEX: usize = 32;

/// The digest an object's name carries for `content`.
pub fn digest(content: &[u8]) -> String {
    let full = Sha256::digest(content);
    full.iter()
        .take(DIGEST_HEX / 2)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The system identifier a WAL segment's first page names (its long header), if the file
/// starts with one.
pub fn segment_system_identifier(content: &[u8]) -> Option<u64> {
    const XLP_LONG_HEADER: u16 = 0x0002;
    let info = u16::from_le_bytes(content.get(2..4)?.try_into().ok()?);
    if info & XLP_LONG_HEADER == 0 {
        return None;
    }
    Some(u64::from_le_bytes(content.get(24..32)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_id_is_the_start_to_the_millisecond_and_sorts_by_time() {
        let at: jiff::Timestamp = "2026-12-03T22:17:07.898765Z".parse().unwrap();
        assert_eq!(entry_id(at), "20261203T221707.898Z");
        let later: jiff::Timestamp = "2026-12-03T22:17:10.001Z".parse().unwrap();
        assert!(entry_id(at) < entry_id(later));
    }

    #[test]
    fn names_postgres_archives_are_told_apart_and_nothing_else_is_taken() {
        assert_eq!(
            WalFile::parse("000000010000000000000003"),
            Some(WalFile::Segment {
                name: "000000010000000000000003".into()
            })
        );
        assert_eq!(
            WalFile::parse("00000002.history"),
            Some(WalFile::History { timeline: 2 })
        );
        assert!(matches!(
            WalFile::parse("000000010000000000000003.partial"),
            Some(WalFile::Partial { .. })
        ));
        assert!(matches!(
            WalFile::parse("000000010000000000000003.00000028.backup"),
            Some(WalFile::BackupLabel { .. })
        ));
        for other in [
            "",
            "00000001000000000000000",
            "000000010000000000000003.tmp",
            "00000001000000000000000g",
            "0000001.history",
            "../../etc/passwd",
            "000000010000000000000003.0000002.backup",
        ] {
            assert_eq!(WalFile::parse(other), None, "{other:?}");
        }
        assert_eq!(WalFile::parse("0000000A.history").unwrap().timeline(), 10);
    }

    #[test]
    fn an_object_name_carries_whose_file_it_is_and_a_digest_of_its_content() {
        let set = DataSet {
            namespace: "default".into(),
            cluster: "orders".into(),
            system_identifier: 7_311_000_000_000_000_001,
        };
        let segment = WalFile::parse("000000020000000100000003").unwrap();
        let object = set.wal_object(&segment, b"one");
        assert!(
            object.starts_with(
                "default/orders/7311000000000000001/wal/0000000200000001/000000020000000100000003-"
            ),
            "{object}"
        );
        let file_name = object.rsplit('/').next().unwrap();
        assert!(segment.holds(file_name));
        assert_ne!(object, set.wal_object(&segment, b"two"));
        // A segment's name is a prefix of its label's: neither holds the other's objects.
        let label = WalFile::parse("000000020000000100000003.00000028.backup").unwrap();
        assert!(!label.holds(file_name));
        assert!(!segment.holds(set.wal_object(&label, b"one").rsplit('/').next().unwrap()));
        let history = WalFile::History { timeline: 3 };
        assert!(
            set.wal_object(&history, b"1\t0/3000000\tno recovery target specified\n")
                .starts_with("default/orders/7311000000000000001/wal/history/00000003.history-")
        );
    }
}
