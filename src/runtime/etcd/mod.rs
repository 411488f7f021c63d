//! The etcd runtime: several `replicant run` processes on plain hosts coordinated through etcd.
//! One leads and reconciles; every one serves the virtual names' proxies, following the routes
//! the leader publishes.
//!
//! Keys, under a prefix (`/replicant` by default):
//! - `leader`: the leader's identity, on its session lease; its create revision fences writes;
//! - `hosts/HOST`: each process's presence, on its session lease;
//! - `clusters/NS/NAME/journal` and `clusters/NS/NAME/status`;
//! - `routes/NS/NAME`: where a virtual name points, with an epoch;
//! - `acks/NS/NAME/HOST`: the epoch a host's proxy has applied, on its session lease.

pub mod connect;
pub mod journal;
pub mod leader;
pub mod routes;
pub mod run;
pub mod session;
pub mod status;

use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, Txn, TxnOp};

pub use self::{
    connect::{Coordinator, CoordinatorError},
    journal::{EtcdJournalStore, Fence},
    leader::{ElectionOptions, Leadership, campaign},
    session::{EtcdError, Session},
};

/// One etcd request, bounded by `timeout` so that a frozen etcd never stalls a round; the
/// error as text.
async fn call<T>(
    timeout: Duration,
    request: impl Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, String> {
    match tokio::time::timeout(timeout, request).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(format!("etcd: {e}")),
        Err(_) => Err(format!("etcd did not answer within {timeout:?}")),
    }
}

/// Where everything lives, under one prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.trim_end_matches('/').to_string(),
        }
    }

    pub fn leader(&self) -> String {
        format!("{}/leader", self.prefix)
    }

    pub fn hosts(&self) -> String {
        format!("{}/hosts/", self.prefix)
    }

    pub fn host(&self, identity: &str) -> String {
        format!("{}{identity}", self.hosts())
    }

    pub fn journal(&self, namespace: &str, name: &str) -> String {
        format!("{}/clusters/{namespace}/{name}/journal", self.prefix)
    }

    pub fn statuses(&self) -> String {
        format!("{}/status/", self.prefix)
    }

    pub fn status(&self, namespace: &str, name: &str) -> String {
        format!("{}{namespace}/{name}", self.statuses())
    }

    pub fn routes(&self) -> String {
        format!("{}/routes/", self.prefix)
    }

    /// `proxy_key` is `NS/NAME`, as the proxies key their names.
    pub fn route(&self, proxy_key: &str) -> String {
        format!("{}{proxy_key}", self.routes())
    }

    pub fn acks(&self, proxy_key: &str) -> String {
        format!("{}/acks/{proxy_key}/", self.prefix)
    }

    pub fn ack(&self, proxy_key: &str, identity: &str) -> String {
        format!("{}{identity}", self.acks(proxy_key))
    }
}

/// `PREFIX/clusters/NAMESPACE/NAME/journal`
pub fn journal_key(prefix: &str, namespace: &str, name: &str) -> String {
    Keys::new(prefix).journal(namespace, name)
}

/// Put `value` at `key` only while `fence` holds the leader key; `Ok(false)` when it does not.
async fn fenced_put(
    client: &Client,
    fence: &Fence,
    key: &str,
    value: Vec<u8>,
    timeout: Duration,
) -> Result<bool, String> {
    let txn = Txn::new()
        .when([Compare::create_revision(
            fence.leader_key.as_str(),
            CompareOp::Equal,
            fence.token,
        )])
        .and_then([TxnOp::put(key, value, None)]);
    let response = call(timeout, client.clone().txn(txn)).await?;
    Ok(response.succeeded())
}

/// Delete `key` only while `fence` holds the leader key.
async fn fenced_delete(
    client: &Client,
    fence: &Fence,
    key: &str,
    timeout: Duration,
) -> Result<bool, String> {
    let txn = Txn::new()
        .when([Compare::create_revision(
            fence.leader_key.as_str(),
            CompareOp::Equal,
            fence.token,
        )])
        .and_then([TxnOp::delete(key, None)]);
    let response = call(timeout, client.clone().txn(txn)).await?;
    Ok(response.succeeded())
}
