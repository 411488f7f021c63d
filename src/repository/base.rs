//! Base backups in a repository: the tar stream `pg_basebackup` writes, compressed (zstd on
//! several threads, or lz4) and uploaded in parts while it is taken, then a catalog entry
//! written last, so a backup without one is incomplete and never restored. Restores stream it
//! back.
//!
//! ```text
//! <data set>/base/<id>/data.tar.zst    the backup, its manifest inside (data.tar.lz4 in lz4)
//! <data set>/base/<id>/backup.json     the catalog entry: when, from whom, which WAL it needs
//! ```

use std::io::{Read, Write};

use bytes::Bytes;
use futures::StreamExt;
use object_store::{ObjectStoreExt, WriteMultipart};
use serde::{Deserialize, Serialize};

use super::{
    Repository, StoreError,
    codec::{Codec, Encoder},
    layout::DataSet,
};

/// Parts uploaded at once.
const UPLOAD_CONCURRENCY: usize = 4;
/// The size of each uploaded part.
pub(super) const PART_BYTES: usize = 16 << 20;

/// One complete base backup, as the catalog records it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BaseBackup {
    /// When it started, as a name (`20261203T190000.000Z`): backups sort by it.
    pub id: String,
    /// The member it was taken from.
    pub member: String,
    pub started_at: jiff::Timestamp,
    pub finished_at: jiff::Timestamp,
    /// Where WAL replay must start, and the least it must reach to be consistent.
    pub timeline: u32,
    pub start_lsn: u64,
    pub end_lsn: u64,
    /// The WAL file replay starts in.
    pub start_wal: String,
    /// The size of the data as PostgreSQL sent it, and as stored.
    pub raw_bytes: u64,
    pub stored_bytes: u64,
    pub compression: Codec,
    /// The on-demand request it answered (a `Backup` object's name), if one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
}

/// Why a base backup could not be stored, listed or restored.
#[derive(Debug, thiserror::Error)]
pub enum BaseError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("reading the backup stream: {0}")]
    Stream(std::io::Error),
    #[error("the backup stream holds no {0}: it is not a complete pg_basebackup tar")]
    Missing(&'static str),
    #[error("{what}: {reason}")]
    Malformed { what: &'static str, reason: String },
    #[error("no base backup {0} in the repository")]
    NotFound(String),
    #[error("restoring into {path}: {source}")]
    Restore {
        path: String,
        source: std::io::Error,
    },
}

/// What the stream held, once uploaded.
#[derive(Debug)]
pub struct Uploaded {
    pub raw_bytes: u64,
    pub stored_bytes: u64,
    /// `backup_label` and `backup_manifest`, read from the stream on the way.
    pub label: String,
    pub manifest: Vec<u8>,
}

impl DataSet {
    fn base_directory(&self, id: &str) -> String {
        format!("{}/base/{id}", self.root())
    }

    fn base_object(&self, id: &str, codec: Codec) -> String {
        format!("{}/data.tar.{}", self.base_directory(id), codec.extension())
    }
}

/// Hands compressed bytes to the uploader in parts.
pub(super) struct PartSender {
    buffer: Vec<u8>,
    pub(super) sent: u64,
    parts: tokio::sync::mpsc::Sender<Bytes>,
}

impl PartSender {
    pub(super) fn new(parts: tokio::sync::mpsc::Sender<Bytes>) -> Self {
        Self {
            buffer: Vec::with_capacity(PART_BYTES),
            sent: 0,
            parts,
        }
    }
}

impl Write for PartSender {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(data);
        if self.buffer.len() >= PART_BYTES {
            self.flush()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let part = Bytes::from(std::mem::take(&mut self.buffer));
        self.sent += part.len() as u64;
        self.parts
            .blocking_send(part)
            .map_err(|_| std::io::Error::other("the upload stopped"))
    }
}

/// Reads the backup stream, and passes every byte read to the compressor too.
struct Tee<R, W: Write> {
    source: R,
    copy: Encoder<W>,
    read: u64,
}

impl<R: Read, W: Write> Read for Tee<R, W> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let n = self.source.read(out)?;
        self.copy.write_all(&out[..n])?;
        self.read += n as u64;
        Ok(n)
    }
}

/// Compress `source` (a tar stream) into `parts`, keeping its label and manifest.
fn compress(
    source: impl Read,
    parts: tokio::sync::mpsc::Sender<Bytes>,
    (codec, threads): (Codec, u32),
) -> Result<(u64, u64, String, Vec<u8>), BaseError> {
    let encoder = codec
        .encoder(PartSender::new(parts), threads)
        .map_err(BaseError::Stream)?;
    let mut tee = Tee {
        source,
        copy: encoder,
        read: 0,
    };
    let (mut label, mut manifest) = (None, None);
    {
        let mut archive = tar::Archive::new(&mut tee);
        for entry in archive.entries().map_err(BaseError::Stream)? {
            let mut entry = entry.map_err(BaseError::Stream)?;
            let path = entry.path().map_err(BaseError::Stream)?.into_owned();
            let mut keep = |into: &mut Option<Vec<u8>>| -> Result<(), BaseError> {
                let mut bytes = Vec::new();
                entry.read_to_end(&mut bytes).map_err(BaseError::Stream)?;
                *into = Some(bytes);
                Ok(())
            };
            if path.as_os_str() == "backup_label" {
                keep(&mut label)?;
            } else if path.as_os_str() == "backup_manifest" {
                keep(&mut manifest)?;
            }
        }
    }
    // What follows the archive's end (its padding) belongs to the stream too.
    std::io::copy(&mut tee, &mut std::io::sink()).map_err(BaseError::Stream)?;
    let raw = tee.read;
    let mut sender = tee.copy.finish().map_err(BaseError::Stream)?;
    sender.flush().map_err(BaseError::Stream)?;
    let label =
        String::from_utf8(label.ok_or(BaseError::Missing("backup_label"))?).map_err(|e| {
            BaseError::Malformed {
                what: "backup_label",
                reason: e.to_string(),
            }
        })?;
    Ok((
        raw,
        sender.sent,
        label,
        manifest.ok_or(BaseError::Missing("backup_manifest"))?,
    ))
}

impl Repository {
    /// Upload the tar stream `source` as base backup `id` of `set`, compressed with `codec`
    /// (zstd on `threads` threads) while it is read. Not yet in the catalog:
    /// [`Repository::record_base`] makes it count, once whoever produced the stream says it
    /// is complete.
    pub async fn upload_base(
        &self,
        set: &DataSet,
        id: &str,
        source: impl Read + Send + 'static,
        (codec, threads): (Codec, u32),
    ) -> Result<Uploaded, BaseError> {
        let object = set.base_object(id, codec);
        let (raw_bytes, stored_bytes, label, manifest) = self
            .upload_with(&object, move |parts| {
                compress(source, parts, (codec, threads))
            })
            .await?;
        Ok(Uploaded {
            raw_bytes,
            stored_bytes,
            label,
            manifest,
        })
    }

    /// Upload to `object` the parts `produce` sends (on a blocking thread), as they come; the
    /// upload is abandoned when either side fails.
    pub(super) async fn upload_with<T: Send + 'static>(
        &self,
        object: &str,
        produce: impl FnOnce(tokio::sync::mpsc::Sender<Bytes>) -> Result<T, BaseError> + Send + 'static,
    ) -> Result<T, BaseError> {
        let full = self.full(object);
        let upload =
            super::limited("start uploading", object, self.store.put_multipart(&full)).await?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
        let (parts, mut received) = tokio::sync::mpsc::channel::<Bytes>(UPLOAD_CONCURRENCY);
        let producing = tokio::task::spawn_blocking(move || produce(parts));
        let mut failed = None;
        while let Some(part) = received.recv().await {
            if let Err(e) = super::limited(
                "upload a part of",
                object,
                writer.wait_for_capacity(UPLOAD_CONCURRENCY),
            )
            .await
            {
                failed = Some(e);
                break;
            }
            writer.put(part);
        }
        drop(received);
        let produced = producing
            .await
            .map_err(|e| BaseError::Stream(std::io::Error::other(e)))?;
        if let Some(e) = failed {
            let _ = writer.abort().await;
            return Err(e.into());
        }
        let produced = match produced {
            Ok(done) => done,
            Err(e) => {
                let _ = writer.abort().await;
                return Err(e);
            }
        };
        super::limited("finish uploading", object, writer.finish()).await?;
        Ok(produced)
    }

    /// Enter an uploaded backup in the catalog: from now on it is listed and restored.
    pub async fn record_base(&self, set: &DataSet, backup: &BaseBackup) -> Result<(), BaseError> {
        let bytes = serde_json::to_vec_pretty(backup).map_err(|e| BaseError::Malformed {
            what: "catalog entry",
            reason: e.to_string(),
        })?;
        let object = format!("{}/backup.json", set.base_directory(&backup.id));
        Ok(self.put(&object, bytes).await?)
    }

    /// Remove backup `id`'s objects (an incomplete upload, or one retention lets go): its
    /// catalog entry first, so it is never listed without its data.
    pub async fn remove_base(&self, set: &DataSet, id: &str) -> Result<(), BaseError> {
        let mut objects = vec![format!("{}/backup.json", set.base_directory(id))];
        objects.extend([Codec::Zstd, Codec::Lz4].map(|codec| set.base_object(id, codec)));
        for object in objects {
            self.delete_if_there(&object).await?;
        }
        Ok(())
    }

    /// Delete `object`; one that is not there is as good as deleted.
    pub(super) async fn delete_if_there(&self, object: &str) -> Result<(), StoreError> {
        match self.delete(object).await {
            Err(StoreError::Failed {
                source: object_store::Error::NotFound { .. },
                ..
            }) => Ok(()),
            other => other,
        }
    }

    /// Every complete base backup of cluster `namespace/cluster`, under whichever system
    /// identifiers it had, oldest first.
    pub async fn catalog(
        &self,
        namespace: &str,
        cluster: &str,
    ) -> Result<Vec<(DataSet, BaseBackup)>, BaseError> {
        let listed = self.list(&format!("{namespace}/{cluster}")).await?;
        let mut backups = Vec::new();
        for entry in &listed {
            // <namespace>/<cluster>/<system identifier>/base/<id>/backup.json
            let parts: Vec<&str> = entry.path.split('/').collect();
            let [_, _, system, "base", _, "backup.json"] = parts.as_slice() else {
                continue;
            };
            let Ok(system_identifier) = system.parse() else {
                continue;
            };
            let bytes = self.get(&entry.path).await?;
            let backup: BaseBackup =
                serde_json::from_slice(&bytes).map_err(|e| BaseError::Malformed {
                    what: "catalog entry",
                    reason: format!("{}: {e}", entry.path),
                })?;
            let set = DataSet {
                namespace: namespace.to_string(),
                cluster: cluster.to_string(),
                system_identifier,
            };
            backups.push((set, backup));
        }
        backups.sort_by(|a, b| a.1.id.cmp(&b.1.id));
        Ok(backups)
    }

    /// Unpack `backup` of `set` into the empty directory `target`, streaming it from the
    /// repository.
    pub async fn restore_base(
        &self,
        set: &DataSet,
        backup: &BaseBackup,
        target: &std::path::Path,
    ) -> Result<(), BaseError> {
        let object = set.base_object(&backup.id, backup.compression);
        let target = target.to_path_buf();
        self.download_with(&object, (&backup.id, backup.compression), move |decoder| {
            let mut archive = tar::Archive::new(decoder);
            archive.set_preserve_permissions(true);
            // Run as root, the files go back to the user that owned them (the database's).
            archive.set_preserve_ownerships(nix::unistd::Uid::effective().is_root());
            archive.unpack(&target)
        })
        .await
    }

    /// Stream `object`, compressed with `codec`, from the repository into `consume` (on a
    /// blocking thread), decompressed as it arrives; `id` names it when it is not there.
    pub(super) async fn download_with<T: Send + 'static>(
        &self,
        object: &str,
        (id, codec): (&str, Codec),
        consume: impl FnOnce(&mut dyn Read) -> std::io::Result<T> + Send + 'static,
    ) -> Result<T, BaseError> {
        let full = self.full(object);
        let got = match super::limited("get", object, self.store.get(&full)).await {
            Err(StoreError::Failed {
                source: object_store::Error::NotFound { .. },
                ..
            }) => return Err(BaseError::NotFound(id.to_string())),
            other => other?,
        };
        let (chunks, receiver) = std::sync::mpsc::sync_channel::<std::io::Result<Bytes>>(4);
        let consuming = tokio::task::spawn_blocking(move || {
            let reader = ChunkReader {
                chunks: receiver,
                current: Bytes::new(),
            };
            let mut decoder = codec.decoder(reader)?;
            consume(&mut decoder)
        });
        let mut stream = got.into_stream();
        loop {
            let next = tokio::time::timeout(super::REQUEST_TIMEOUT, stream.next()).await;
            let chunk = match next {
                Ok(Some(Ok(chunk))) => Ok(chunk),
                Ok(Some(Err(e))) => Err(std::io::Error::other(e)),
                Ok(None) => break,
                Err(_) => Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!(
                        "{object}: no data for {}s",
                        super::REQUEST_TIMEOUT.as_secs()
                    ),
                )),
            };
            let stop = chunk.is_err();
            if chunks.send(chunk).is_err() || stop {
                break;
            }
        }
        drop(chunks);
        consuming
            .await
            .map_err(|e| BaseError::Stream(std::io::Error::other(e)))?
            .map_err(|source| BaseError::Restore {
                path: object.to_string(),
                source,
            })
    }
}

/// The newest data set in `catalog` (a [`Repository::catalog`]) and its backups, oldest first:
/// a cluster restored in place keeps its name under a new system identifier, and what
/// restores, windows and retention work on is its newest life.
pub fn newest_data_set(catalog: &[(DataSet, BaseBackup)]) -> Option<(DataSet, Vec<BaseBackup>)> {
    let (set, _) = catalog.last()?;
    let backups = catalog
        .iter()
        .filter(|(s, _)| s == set)
        .map(|(_, b)| b.clone())
        .collect();
    Some((set.clone(), backups))
}

/// Reads the chunks a download hands over, in order.
struct ChunkReader {
    chunks: std::sync::mpsc::Receiver<std::io::Result<Bytes>>,
    current: Bytes,
}

impl Read for ChunkReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.chunks.recv() {
                Ok(chunk) => self.current = chunk?,
                Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.current.len());
        out[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

pub use crate::api::bootstrap::parse_lsn;

/// What a `backup_label` and a `backup_manifest` say of the WAL a backup needs: its timeline,
/// where replay starts (and in which file), and where it ends at the least.
pub fn wal_range(label: &str, manifest: &[u8]) -> Result<(u32, u64, String, u64), BaseError> {
    let malformed = |reason: &str| BaseError::Malformed {
        what: "backup_label",
        reason: reason.to_string(),
    };
    let start_line = label
        .lines()
        .find_map(|l| l.strip_prefix("START WAL LOCATION: "))
        .ok_or_else(|| malformed("no START WAL LOCATION"))?;
    let (lsn, file) = start_line
        .split_once(" (file ")
        .ok_or_else(|| malformed("START WAL LOCATION without its file"))?;
    let start_lsn = parse_lsn(lsn).ok_or_else(|| malformed("START WAL LOCATION is no position"))?;
    let start_wal = file.trim_end_matches(')').to_string();
    let timeline = label
        .lines()
        .find_map(|l| l.strip_prefix("START TIMELINE: "))
        .and_then(|t| t.trim().parse().ok())
        .ok_or_else(|| malformed("no START TIMELINE"))?;
    let manifest: serde_json::Value =
        serde_json::from_slice(manifest).map_err(|e| BaseError::Malformed {
            what: "backup_manifest",
            reason: e.to_string(),
        })?;
    let end_lsn = manifest["WAL-Ranges"]
        .as_array()
        .and_then(|ranges| ranges.last())
        .and_then(|range| parse_lsn(range["End-LSN"].as_str()?))
        .ok_or_else(|| BaseError::Malformed {
            what: "backup_manifest",
            reason: "no WAL-Ranges with an End-LSN".into(),
        })?;
    Ok((timeline, start_lsn, start_wal, end_lsn))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_label_and_a_manifest_say_which_wal_a_backup_needs() {
        let label = "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\nCHECKPOINT LOCATION: 0/2000060\nBACKUP METHOD: streamed\nBACKUP FROM: standby\nSTART TIME: 2026-12-03 19:00:00 UTC\nLABEL: replicant\nSTART TIMELINE: 1\n";
        let manifest = br#"{"PostgreSQL-Backup-Manifest-Version": 1, "Files": [], "WAL-Ranges": [{ "Timeline": 1, "Start-LSN": "0/2000028", "End-LSN": "1/A0000100" }], "Manifest-Checksum": "x"}"#;
        assert_eq!(
            wal_range(label, manifest).unwrap(),
            (
                1,
                0x2000028,
                "000000010000000000000002".into(),
                (1 << 32) | 0xA0000100
            )
        );
        assert!(wal_range("LABEL: x\n", manifest).is_err());
        assert!(wal_range(label, b"{}").is_err());
    }
}
