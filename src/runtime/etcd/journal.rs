//! A cluster's journal in etcd. Every save is one transaction that compares the leader key's
//! create revision (the fencing token of the process that leads) and the journal key's mod
//! revision (the revision it was read at), so neither a deposed leader nor a second writer can
//! take a step. Touches the journal key; reads the leader key.

use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{Client, Compare, CompareOp, Txn, TxnOp, TxnOpResponse};

use crate::core::{
    journal::Journal,
    reconcile::{JournalStore, Revision, StoreError},
};

/// The leadership a process acts under: the leader key, and the create revision at which this
/// process created it. A new leader creates the key anew, so its token is higher.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fence {
    pub leader_key: String,
    pub token: i64,
}

impl Fence {
    /// The comparison every write of this leader carries: the leader key is still the one it
    /// created.
    pub fn holds(&self) -> Compare {
        Compare::create_revision(self.leader_key.as_str(), CompareOp::Equal, self.token)
    }
}

pub struct EtcdJournalStore {
    client: Client,
    key: String,
    fence: Fence,
    /// For every request: a frozen etcd never stalls a round.
    timeout: Duration,
    /// The session the fence rests on: no write is even sent once it is not surely alive.
    session: Option<std::sync::Arc<super::Session>>,
}

impl EtcdJournalStore {
    pub fn new(client: Client, key: String, fence: Fence, timeout: Duration) -> Self {
        Self {
            client,
            key,
            fence,
            timeout,
            session: None,
        }
    }

    /// Refuse to write, locally, whenever `session` is not surely alive: the fence is checked
    /// by etcd too, but a process resumed after a freeze should not even try.
    pub fn under(mut self, session: std::sync::Arc<super::Session>) -> Self {
        self.session = Some(session);
        self
    }
}

#[async_trait]
impl JournalStore for EtcdJournalStore {
    async fn load(&self) -> Result<(Journal, Revision), StoreError> {
        let found = super::get(&self.client, &self.key, None, self.timeout)
            .await
            .map_err(|message| StoreError::failed("read", message))?;
        let Some(kv) = found.kvs().first() else {
            return Ok((Journal::default(), Revision::NONE));
        };
        let journal = serde_json::from_slice(kv.value()).map_err(|e| {
            // A damaged journal must stop the controller, never be silently reset.
            StoreError::failed("parse", format!("etcd key {}: {e}", self.key))
        })?;
        Ok((journal, Revision(Some(kv.mod_revision().to_string()))))
    }

    fn confirm(&self) -> Result<(), StoreError> {
        if self.session.as_ref().is_some_and(|s| !s.alive()) {
            return Err(StoreError::Lapsed);
        }
        Ok(())
    }

    async fn save(&self, journal: &Journal, expected: &Revision) -> Result<Revision, StoreError> {
        self.confirm()?;
        let bytes = serde_json::to_vec(journal).map_err(|e| StoreError::failed("encode", e))?;
        let unchanged = match &expected.0 {
            // Absent: version 0.
            None => Compare::version(self.key.as_str(), CompareOp::Equal, 0),
            Some(revision) => {
                let revision: i64 = revision.parse().map_err(|_| {
                    StoreError::failed("write", format!("not an etcd revision: {revision}"))
                })?;
                Compare::mod_revision(self.key.as_str(), CompareOp::Equal, revision)
            }
        };
        let txn = Txn::new()
            .when([self.fence.holds(), unchanged])
            .and_then([TxnOp::put(self.key.as_str(), bytes, None)])
            .or_else([TxnOp::get(self.fence.leader_key.as_str(), None)]);
        let response = super::txn(&self.client, txn, self.timeout)
            .await
            .map_err(|message| StoreError::failed("write", message))?;
        if response.succeeded() {
            let revision = response.header().map(|h| h.revision()).unwrap_or_default();
            return Ok(Revision(Some(revision.to_string())));
        }
        let leader_now = response.op_responses().into_iter().find_map(|r| match r {
            TxnOpResponse::Get(get) => Some(get.kvs().first().map(|kv| kv.create_revision())),
            _ => None,
        });
        match leader_now {
            Some(Some(token)) if token == self.fence.token => Err(StoreError::Conflict {
                expected: expected.clone(),
            }),
            _ => Err(StoreError::Deposed {
                token: self.fence.token,
            }),
        }
    }
}
