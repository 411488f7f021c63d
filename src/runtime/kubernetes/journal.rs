//! The failover journal in a ConfigMap owned by its ReplicationCluster, so a restarted or newly elected operator resumes.
//!
//! Writes are compare-and-swap on `resourceVersion`: if anyone else wrote the journal since this
//! process read it (a deposed leader, a second operator), the save fails, no step is taken, and
//! the next round reads the journal afresh. Touches only that ConfigMap.

use std::collections::BTreeMap;

use async_trait::async_trait;
use k8s_openapi::{api::core::v1::ConfigMap, apimachinery::pkg::apis::meta::v1::OwnerReference};
use kube::api::{Api, ObjectMeta, PostParams};
use tokio::sync::Mutex;

use super::call::call;
use crate::core::{
    journal::Journal,
    reconcile::{JournalStore, Revision, StoreError},
};

const KEY: &str = "journal.json";

/// The ConfigMap holding a cluster's journal.
pub fn config_map_name(cluster: &str) -> String {
    format!("{cluster}-journal")
}

pub struct ConfigMapJournalStore {
    api: Api<ConfigMap>,
    name: String,
    owner: OwnerReference,
    /// The journal as last read or written, with the resourceVersion it was at.
    cached: Mutex<Option<(Journal, Revision)>>,
    /// Whether this process still holds its Lease, checked before every step.
    leading: Option<std::sync::Arc<dyn Fn() -> bool + Send + Sync>>,
}

impl ConfigMapJournalStore {
    pub fn new(api: Api<ConfigMap>, cluster: &str, owner: OwnerReference) -> Self {
        ConfigMapJournalStore {
            api,
            name: config_map_name(cluster),
            owner,
            cached: Mutex::new(None),
            leading: None,
        }
    }

    /// Take no step once `leading` says this process's Lease is no longer surely held: a
    /// round in flight when it lapsed stops at its next step.
    pub fn confirming(mut self, leading: std::sync::Arc<dyn Fn() -> bool + Send + Sync>) -> Self {
        self.leading = Some(leading);
        self
    }
}

fn store_error(what: &'static str, message: impl ToString) -> StoreError {
    StoreError::failed(what, message)
}

#[async_trait]
impl JournalStore for ConfigMapJournalStore {
    async fn load(&self) -> Result<(Journal, Revision), StoreError> {
        let mut cached = self.cached.lock().await;
        if let Some((journal, revision)) = &*cached {
            return Ok((journal.clone(), revision.clone()));
        }
        let found = call(
            format!("get configmap {}", self.name),
            self.api.get_opt(&self.name),
        )
        .await
        .map_err(|e| store_error("read", e))?;
        let (journal, revision) = match found {
            None => (Journal::default(), Revision::NONE),
            Some(cm) => {
                let text = cm
                    .data
                    .as_ref()
                    .and_then(|d| d.get(KEY))
                    .cloned()
                    .unwrap_or_default();
                let journal = if text.trim().is_empty() {
                    Journal::default()
                } else {
                    serde_json::from_str(&text).map_err(|e| {
                        store_error(
                            "read",
                            format!("configmap {} key {KEY} is not a journal: {e}", self.name),
                        )
                    })?
                };
                (journal, Revision(cm.metadata.resource_version))
            }
        };
        *cached = Some((journal.clone(), revision.clone()));
        Ok((journal, revision))
    }

    fn confirm(&self) -> Result<(), StoreError> {
        match &self.leading {
            Some(leading) if !leading() => Err(StoreError::Lapsed),
            _ => Ok(()),
        }
    }

    async fn save(&self, journal: &Journal, expected: &Revision) -> Result<Revision, StoreError> {
        self.confirm()?;
        let mut cached = self.cached.lock().await;
        let text = serde_json::to_string_pretty(journal).map_err(|e| store_error("write", e))?;
        let cm = ConfigMap {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                resource_version: expected.0.clone(),
                owner_references: Some(vec![self.owner.clone()]),
                labels: Some(BTreeMap::from([(
                    "app.kubernetes.io/managed-by".to_string(),
                    "replicant".to_string(),
                )])),
                ..Default::default()
            },
            data: Some(BTreeMap::from([(KEY.to_string(), text)])),
            ..Default::default()
        };
        let pp = PostParams::default();
        let what = format!("write configmap {}", self.name);
        // Creating fails if it exists, replacing fails unless it is at `expected`: either way
        // the API server compares and swaps.
        let written = match &expected.0 {
            None => call(what, self.api.create(&pp, &cm)).await,
            Some(_) => call(what, self.api.replace(&self.name, &pp, &cm)).await,
        };
        match written {
            Ok(cm) => {
                let revision = Revision(cm.metadata.resource_version);
                *cached = Some((journal.clone(), revision.clone()));
                Ok(revision)
            }
            Err(e) => {
                // Whatever happened, read it afresh next time rather than trust this copy.
                *cached = None;
                if e.is_conflict() {
                    Err(StoreError::Conflict {
                        expected: expected.clone(),
                    })
                } else {
                    Err(store_error("write", e))
                }
            }
        }
    }
}
