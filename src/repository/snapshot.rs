//! Redis snapshots in a repository: an RDB file, compressed (zstd or lz4) as it streams in,
//! under `<namespace>/<cluster>/redis/<id>/dump.rdb.zst` (`.lz4`), and its catalog entry
//! (`snapshot.json`), written only once the whole file arrived.

use std::io::{Read, Write};

use serde::{Deserialize, Serialize};

use super::{
    Repository,
    base::{BaseError, PartSender},
    codec::Codec,
};

/// One complete Redis snapshot, as the catalog records it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    /// When it started, as a name (`20261203T190000.000Z`): snapshots sort by it.
    pub id: String,
    /// The member it was read from.
    pub member: String,
    pub started_at: jiff::Timestamp,
    pub finished_at: jiff::Timestamp,
    /// The RDB file's size, and as stored.
    pub raw_bytes: u64,
    pub stored_bytes: u64,
    /// How it is compressed (snapshots from before the choice are zstd).
    #[serde(default)]
    pub compression: Codec,
    /// The on-demand request it answered (a `Backup` object's name), if one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
}

fn directory(namespace: &str, cluster: &str, id: &str) -> String {
    format!("{namespace}/{cluster}/redis/{id}")
}

fn rdb_object(namespace: &str, cluster: &str, id: &str, codec: Codec) -> String {
    format!(
        "{}/dump.rdb.{}",
        directory(namespace, cluster, id),
        codec.extension()
    )
}

impl Repository {
    /// Store the RDB file `source` yields as snapshot `id` of `namespace/cluster`,
    /// compressed with `codec` while it streams; the sizes read and stored. Not in the
    /// catalog until [`Repository::record_snapshot`].
    pub async fn upload_snapshot(
        &self,
        (namespace, cluster): (&str, &str),
        id: &str,
        codec: Codec,
        mut source: impl Read + Send + 'static,
    ) -> Result<(u64, u64), BaseError> {
        let object = rdb_object(namespace, cluster, id, codec);
        // One thread: the RDB stream arrives no faster than the network brings it.
        self.upload_with(&object, move |parts| {
            let mut encoder = codec
                .encoder(PartSender::new(parts), 1)
                .map_err(BaseError::Stream)?;
            let raw = std::io::copy(&mut source, &mut encoder).map_err(BaseError::Stream)?;
            let mut sender = encoder.finish().map_err(BaseError::Stream)?;
            sender.flush().map_err(BaseError::Stream)?;
            Ok((raw, sender.sent))
        })
        .await
    }

    /// Enter an uploaded snapshot in the catalog.
    pub async fn record_snapshot(
        &self,
        namespace: &str,
        cluster: &str,
        snapshot: &Snapshot,
    ) -> Result<(), BaseError> {
        let bytes = serde_json::to_vec_pretty(snapshot).map_err(|e| BaseError::Malformed {
            what: "snapshot entry",
            reason: e.to_string(),
        })?;
        let object = format!(
            "{}/snapshot.json",
            directory(namespace, cluster, &snapshot.id)
        );
        Ok(self.put(&object, bytes).await?)
    }

    /// Every complete snapshot of `namespace/cluster`, oldest first.
    pub async fn snapshots(
        &self,
        namespace: &str,
        cluster: &str,
    ) -> Result<Vec<Snapshot>, BaseError> {
        let listed = self.list(&format!("{namespace}/{cluster}/redis")).await?;
        let mut snapshots = Vec::new();
        for entry in listed.iter().filter(|l| l.path.ends_with("/snapshot.json")) {
            let bytes = self.get(&entry.path).await?;
            snapshots.push(serde_json::from_slice::<Snapshot>(&bytes).map_err(|e| {
                BaseError::Malformed {
                    what: "snapshot entry",
                    reason: format!("{}: {e}", entry.path),
                }
            })?);
        }
        snapshots.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(snapshots)
    }

    /// Let snapshot `id` go: its catalog entry first, so that it is never listed without its
    /// file.
    pub async fn remove_snapshot(
        &self,
        namespace: &str,
        cluster: &str,
        id: &str,
    ) -> Result<(), BaseError> {
        self.delete(&format!(
            "{}/snapshot.json",
            directory(namespace, cluster, id)
        ))
        .await?;
        for codec in [Codec::Zstd, Codec::Lz4] {
            self.delete_if_there(&rdb_object(namespace, cluster, id, codec))
                .await?;
        }
        Ok(())
    }

    /// Write `snapshot`'s RDB file to `target` (a new file), streaming it from the
    /// repository; its size.
    pub async fn restore_snapshot(
        &self,
        (namespace, cluster): (&str, &str),
        snapshot: &Snapshot,
        target: &std::path::Path,
    ) -> Result<u64, BaseError> {
        let object = rdb_object(namespace, cluster, &snapshot.id, snapshot.compression);
        let target = target.to_path_buf();
        self.download_with(
            &object,
            (&snapshot.id, snapshot.compression),
            move |decoder| {
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&target)?;
                let written = std::io::copy(decoder, &mut file)?;
                file.sync_all()?;
                Ok(written)
            },
        )
        .await
    }
}
