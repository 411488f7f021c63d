//! Repositories: where previous versions of a data set are kept (a directory, an S3 bucket,
//! an Azure Blob Storage container, a Google Cloud Storage bucket), opened through
//! `object_store`, and the self-describing layout inside them. Touches only the
//! store it is given; every request has a time limit.
//!
//! Nothing here overwrites: an object's name carries a digest of its content, so the same name
//! always means the same bytes, whatever the store promises about conditional writes (Garage,
//! for one, ignores `If-None-Match`). Two different contents for one WAL file therefore sit
//! side by side under two names, where a reader sees both and refuses to choose.

pub mod base;
pub mod codec;
pub mod drill;
pub mod layout;
pub mod retention;
pub mod snapshot;
pub mod wal;
pub mod walscan;
pub mod window;

use std::{sync::Arc, time::Duration};

use futures::TryStreamExt;
use object_store::{
    ClientOptions, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig, aws::AmazonS3Builder,
    azure::MicrosoftAzureBuilder, gcp::GoogleCloudStorageBuilder, local::LocalFileSystem,
    path::Path as StorePath,
};
use serde::{Deserialize, Serialize};

use crate::api::Repository as RepositorySpec;

/// How long one request to a store may take, connection included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long connecting to a store may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A store's key, read from where a repository's `credentials` point. Sent to the agents
/// and kept in their settings file; never in text.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum StoreKey {
    /// An S3 access key.
    #[serde(rename_all = "camelCase")]
    S3 {
        access_key_id: String,
        secret_access_key: String,
    },
    /// An Azure storage account's access key.
    #[serde(rename_all = "camelCase")]
    Azure { account_key: String },
    /// A Google service account's key, as its JSON.
    #[serde(rename_all = "camelCase")]
    Gcs { service_account_key: String },
}

impl std::fmt::Debug for StoreKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            // The id names the key; the secret never leaves this value in text.
            Self::S3 { access_key_id, .. } => f
                .debug_struct("S3")
                .field("access_key_id", access_key_id)
                .finish_non_exhaustive(),
            Self::Azure { .. } => f.debug_struct("Azure").finish_non_exhaustive(),
            Self::Gcs { .. } => f.debug_struct("Gcs").finish_non_exhaustive(),
        }
    }
}

/// Why a repository could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(
        "repository {name}: none of a directory, an S3 bucket, an Azure container, a GCS bucket is set"
    )]
    NoKind { name: String },
    #[error("repository {name}: directory {path}: {source}")]
    Directory {
        name: String,
        path: String,
        source: std::io::Error,
    },
    #[error("repository {name}: {source}")]
    Store {
        name: String,
        source: object_store::Error,
    },
}

/// What went wrong talking to a store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{what} {object}: no answer within {}s", REQUEST_TIMEOUT.as_secs())]
    Timeout { what: &'static str, object: String },
    #[error("{what} {object}: {source}")]
    Failed {
        what: &'static str,
        object: String,
        source: object_store::Error,
    },
}

/// Every request's time limits; plain HTTP allowed, for stores on a private network.
fn client_options() -> ClientOptions {
    ClientOptions::new()
        .with_timeout(REQUEST_TIMEOUT)
        .with_connect_timeout(CONNECT_TIMEOUT)
        .with_allow_http(true)
}

/// Two retries, each within the request's time limit.
fn retry_config() -> RetryConfig {
    RetryConfig {
        max_retries: 2,
        retry_timeout: REQUEST_TIMEOUT,
        ..RetryConfig::default()
    }
}

/// One opened repository: a store, and where in it this repository starts.
#[derive(Clone, Debug)]
pub struct Repository {
    name: String,
    store: Arc<dyn ObjectStore>,
    root: StorePath,
}

/// One object listed in a repository, its path relative to the repository's root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    pub path: String,
    pub size: u64,
    pub modified: jiff::Timestamp,
}

impl Repository {
    /// Open what `spec` describes, with the key its credentials resolved to.
    pub fn open(spec: &RepositorySpec, key: Option<&StoreKey>) -> Result<Self, OpenError> {
        let name = spec.name.clone();
        if let Some(directory) = &spec.directory {
            std::fs::create_dir_all(&directory.path).map_err(|source| OpenError::Directory {
                name: name.clone(),
                path: directory.path.clone(),
                source,
            })?;
            let store = LocalFileSystem::new_with_prefix(&directory.path)
                .map_err(|source| OpenError::Store {
                    name: name.clone(),
                    source,
                })?
                // What the archive acknowledges must survive a power loss, as on a remote store.
                .with_fsync(true)
                .with_automatic_cleanup(true);
            return Ok(Self {
                name,
                store: Arc::new(store),
                root: StorePath::default(),
            });
        }
        if let Some(azure) = &spec.azure {
            let mut builder = MicrosoftAzureBuilder::from_env()
                .with_account(&azure.account)
                .with_container_name(&azure.container)
                .with_client_options(client_options())
                .with_retry(retry_config());
            if let Some(endpoint) = &azure.endpoint {
                builder = builder.with_endpoint(endpoint.clone());
            }
            if let Some(StoreKey::Azure { account_key }) = key {
                builder = builder.with_access_key(account_key);
            }
            return Self::built(name, builder.build(), azure.prefix.as_deref());
        }
        if let Some(gcs) = &spec.gcs {
            let mut builder = GoogleCloudStorageBuilder::from_env()
                .with_bucket_name(&gcs.bucket)
                .with_client_options(client_options())
                .with_retry(retry_config());
            if let Some(endpoint) = &gcs.endpoint {
                builder = builder.with_base_url(endpoint);
            }
            if let Some(StoreKey::Gcs {
                service_account_key,
            }) = key
            {
                builder = builder.with_service_account_key(service_account_key);
            }
            return Self::built(name, builder.build(), gcs.prefix.as_deref());
        }
        let Some(s3) = &spec.s3 else {
            return Err(OpenError::NoKind { name });
        };
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(&s3.bucket)
            .with_region(s3.region.as_deref().unwrap_or("us-east-1"))
            .with_client_options(client_options())
            .with_retry(retry_config());
        if let Some(endpoint) = &s3.endpoint {
            builder = builder
                .with_endpoint(endpoint)
                .with_virtual_hosted_style_request(false);
        }
        if let Some(StoreKey::S3 {
            access_key_id,
            secret_access_key,
        }) = key
        {
            builder = builder
                .with_access_key_id(access_key_id)
                .with_secret_access_key(secret_access_key);
        }
        Self::built(name, builder.build(), s3.prefix.as_deref())
    }

    /// The repository `name` on the store a builder `built`, starting at `prefix`.
    fn built(
        name: String,
        built: object_store::Result<impl ObjectStore>,
        prefix: Option<&str>,
    ) -> Result<Self, OpenError> {
        match built {
            Ok(store) => Ok(Self {
                name,
                store: Arc::new(store),
                root: StorePath::from(prefix.unwrap_or("")),
            }),
            Err(source) => Err(OpenError::Store { name, source }),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn full(&self, path: &str) -> StorePath {
        StorePath::from_iter(
            self.root
                .parts()
                .chain(StorePath::from(path).parts().collect::<Vec<_>>()),
        )
    }

    fn relative(&self, full: &StorePath) -> Option<String> {
        full.prefix_match(&self.root).map(|parts| {
            parts
                .map(|p| p.as_ref().to_string())
                .collect::<Vec<_>>()
                .join("/")
        })
    }

    /// Store `bytes` at `path`. Whatever was there is replaced, so callers name objects by
    /// their content (see the module's note).
    pub async fn put(&self, path: &str, bytes: Vec<u8>) -> Result<(), StoreError> {
        let full = self.full(path);
        limited("put", path, self.store.put(&full, PutPayload::from(bytes))).await?;
        Ok(())
    }

    pub async fn get(&self, path: &str) -> Result<Vec<u8>, StoreError> {
        let full = self.full(path);
        let got = limited("get", path, self.store.get(&full)).await?;
        let bytes = limited("read", path, got.bytes()).await?;
        Ok(bytes.to_vec())
    }

    /// Every object whose path starts with the directory `prefix`.
    pub async fn list(&self, prefix: &str) -> Result<Vec<Listed>, StoreError> {
        let full = self.full(prefix);
        let listing = self.store.list(Some(&full)).try_collect::<Vec<_>>();
        let metas = limited("list", prefix, listing).await?;
        Ok(metas
            .into_iter()
            .filter_map(|meta| {
                Some(Listed {
                    path: self.relative(&meta.location)?,
                    size: meta.size,
                    modified: jiff::Timestamp::from_millisecond(
                        meta.last_modified.timestamp_millis(),
                    )
                    .ok()?,
                })
            })
            .collect())
    }

    pub async fn delete(&self, path: &str) -> Result<(), StoreError> {
        let full = self.full(path);
        limited("delete", path, self.store.delete(&full)).await
    }
}

/// `request`, failing after `REQUEST_TIMEOUT` however the store behaves.
async fn limited<T>(
    what: &'static str,
    object: &str,
    request: impl std::future::Future<Output = object_store::Result<T>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(REQUEST_TIMEOUT, request).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(source)) => Err(StoreError::Failed {
            what,
            object: object.to_string(),
            source,
        }),
        Err(_) => Err(StoreError::Timeout {
            what,
            object: object.to_string(),
        }),
    }
}
