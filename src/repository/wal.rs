//! WAL files in a repository: stored once (an identical copy already there counts as done, a
//! different one is refused and reported, never overwritten), and fetched back checked.

use super::{
    Repository, StoreError,
    layout::{DataSet, WalFile, digest, segment_system_identifier},
};

/// zstd level for WAL: fast enough to keep up with a busy primary on one core.
const WAL_COMPRESSION_LEVEL: i32 = 3;

/// How a WAL file reached the repository.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pushed {
    Stored,
    /// The same content was already there (another member of the cluster sent it).
    AlreadyThere,
}

/// Why a WAL file was not stored, or not stored alone.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// Another content is stored under the same WAL file name: two servers wrote the same
    /// timeline, which only a second primary does.
    #[error(
        "{file} is already archived with other content ({existing}): another server wrote this timeline; archiving from this member stops"
    )]
    Conflict { file: String, existing: String },
    /// The segment belongs to another database (another system identifier).
    #[error("{file} belongs to database system {found}, not {expected}: refusing to mix them")]
    OtherDataSet {
        file: String,
        found: u64,
        expected: u64,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why a WAL file could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error(
        "{file} is archived twice with different content ({objects}): the archive holds two histories; pick one by hand"
    )]
    Ambiguous { file: String, objects: String },
    #[error("{object} is damaged: {reason}")]
    Damaged { object: String, reason: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Repository {
    /// The objects already holding `file`, by file name.
    async fn wal_objects(&self, set: &DataSet, file: &WalFile) -> Result<Vec<String>, StoreError> {
        let directory = set.wal_directory(file);
        let listed = self.list(&directory).await?;
        Ok(listed
            .into_iter()
            .filter_map(|l| {
                let name = l.path.rsplit('/').next()?.to_string();
                (l.path.len() == directory.len() + 1 + name.len() && file.holds(&name))
                    .then_some(name)
            })
            .collect())
    }

    /// Store WAL file `file` with `content`, once.
    pub async fn push_wal(
        &self,
        set: &DataSet,
        file: &WalFile,
        content: &[u8],
    ) -> Result<Pushed, PushError> {
        if matches!(file, WalFile::Segment { .. } | WalFile::Partial { .. })
            && let Some(found) = segment_system_identifier(content)
            && found != set.system_identifier
        {
            return Err(PushError::OtherDataSet {
                file: file.name(),
                found,
                expected: set.system_identifier,
            });
        }
        let object = set.wal_object(file, content);
        let ours = object.rsplit('/').next().unwrap_or_default().to_string();
        let conflict = |names: Vec<String>| {
            let others: Vec<String> = names.into_iter().filter(|n| *n != ours).collect();
            (!others.is_empty()).then(|| PushError::Conflict {
                file: file.name(),
                existing: others.join(", "),
            })
        };
        let before = self.wal_objects(set, file).await?;
        if before.contains(&ours) {
            return Ok(Pushed::AlreadyThere);
        }
        if let Some(refused) = conflict(before) {
            return Err(refused);
        }
        let compressed = zstd::bulk::compress(content, WAL_COMPRESSION_LEVEL).map_err(|e| {
            StoreError::Failed {
                what: "compress",
                object: object.clone(),
                source: object_store::Error::Generic {
                    store: "zstd",
                    source: Box::new(e),
                },
            }
        })?;
        self.put(&object, compressed).await?;
        // Two writers can pass the first look together: whoever looks second sees both.
        match conflict(self.wal_objects(set, file).await?) {
            Some(raced) => Err(raced),
            None => Ok(Pushed::Stored),
        }
    }

    /// WAL file `file`, checked against the digest its object's name carries; `None` when it
    /// was never archived.
    pub async fn fetch_wal(
        &self,
        set: &DataSet,
        file: &WalFile,
    ) -> Result<Option<Vec<u8>>, FetchError> {
        let objects = self.wal_objects(set, file).await?;
        let name = match objects.as_slice() {
            [] => return Ok(None),
            [one] => one.clone(),
            _ => {
                return Err(FetchError::Ambiguous {
                    file: file.name(),
                    objects: objects.join(", "),
                });
            }
        };
        let object = format!("{}/{name}", set.wal_directory(file));
        let compressed = self.get(&object).await?;
        let content =
            zstd::stream::decode_all(compressed.as_slice()).map_err(|e| FetchError::Damaged {
                object: object.clone(),
                reason: format!("cannot decompress: {e}"),
            })?;
        if set.wal_object(file, &content) != object {
            return Err(FetchError::Damaged {
                object,
                reason: format!(
                    "its content's digest is {}, not the one its name carries",
                    digest(&content)
                ),
            });
        }
        Ok(Some(content))
    }
}
