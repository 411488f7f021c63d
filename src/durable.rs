//! Files written so that a crash leaves either the old content or the new, never a mix; synced
//! to the disk where a write must survive a power loss. Touches only the files it is given.

use std::{fs, io::Write, path::Path};

/// Whether a write must reach the disk before it counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// fsync the file and the rename: the journal, written before each failover step.
    Synced,
    /// Atomic but not synced: status, rewritten every round and recomputed after a crash.
    Atomic,
}

/// Write `bytes` to `path` so that a crash leaves either the old or the new content, never a mix.
pub fn write_atomically(path: &Path, bytes: &[u8], durability: Durability) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let tmp = path.with_extension("tmp");
    {
        let mut file = fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        if durability == Durability::Synced {
            file.sync_all()?;
        }
    }
    fs::rename(&tmp, path)?;
    if durability == Durability::Synced {
        // The rename itself must reach the disk too.
        fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Write `bytes` to `path` atomically and synced, readable by this user alone (the file holds
/// a secret): the permissions are set before the first byte is written.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let tmp = path.with_extension("tmp");
    // A leftover from a crash keeps its permissions when opened again: start afresh.
    let _ = fs::remove_file(&tmp);
    {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    fs::File::open(dir)?.sync_all()
}
