//! The etcd runtime: several `replicant run` processes, *instances*, usually one per host,
//! coordinated through etcd. One leads and reconciles; every one serves the virtual names' proxies, following the routes
//! the leader publishes.
//!
//! Keys, under a prefix (`/replicant` by default):
//! - `leader`: the leader's identity, on its session lease; its create revision fences writes;
//! - `hosts/IDENTITY`: each instance's presence, on its session lease (the key keeps its first
//!   name, so that instances of different versions see each other during a rolling upgrade);
//! - `clusters/NS/NAME/journal` and `clusters/NS/NAME/status`;
//! - `routes/NS/NAME`: where a virtual name points, with an epoch;
//! - `acks/NS/NAME/IDENTITY`: the route an instance's proxy has applied, on its session lease.

pub mod connect;
pub mod journal;
pub mod leader;
pub mod routes;
pub mod run;
pub mod session;
pub mod status;

use std::time::Duration;

use etcd_client::{Client, GetOptions, GetResponse, Txn, TxnOp, TxnResponse};

pub use self::{
    connect::{Coordinator, CoordinatorError},
    journal::{EtcdJournalStore, Fence},
    leader::{ElectionOptions, Leadership, campaign},
    session::{EtcdError, Session},
};

/// An etcd request that failed: etcd's answer, or none in time.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("etcd: {0}")]
    Etcd(#[from] etcd_client::Error),
    #[error("etcd did not answer within {0:?}")]
    Unanswered(Duration),
}

impl RequestError {
    /// Whether etcd says the lease the request used no longer exists.
    pub fn lease_gone(&self) -> bool {
        matches!(self, Self::Etcd(e) if session::lease_gone(e))
    }
}

/// One etcd request, bounded by `timeout` so that a frozen etcd never stalls a round. Not
/// retried: for streams and for requests that must not be repeated.
async fn call<T>(
    timeout: Duration,
    request: impl Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, RequestError> {
    match tokio::time::timeout(timeout, request).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(e.into()),
        Err(_) => Err(RequestError::Unanswered(timeout)),
    }
}

/// Whether a request failed on its way (a dead member's connection), not by etcd's answer:
/// another member may answer it.
fn transient(error: &etcd_client::Error) -> bool {
    use etcd_client::Error;
    match error {
        Error::TransportError(_) | Error::IoError(_) => true,
        Error::GRpcStatus(status) => matches!(
            status.code(),
            tonic::Code::Unavailable | tonic::Code::Cancelled | tonic::Code::Unknown
        ),
        _ => false,
    }
}

/// One etcd request, made again while it fails on its way, all within `timeout`: the client
/// spreads requests over the members, and one that went to a member just lost should not fail
/// a round, a renewal or an acknowledgement. Every request made this way is safe to repeat:
/// reads, and writes that compare revisions or put the same value again.
async fn retried<T, F: Future<Output = Result<T, etcd_client::Error>>>(
    timeout: Duration,
    mut request: impl FnMut() -> F,
) -> Result<T, RequestError> {
    let deadline = tokio::time::Instant::now() + timeout;
    // A request stuck on a member that went away is given up early, leaving time for others.
    let attempt = attempt_timeout(timeout);
    loop {
        let now = tokio::time::Instant::now();
        match tokio::time::timeout_at((now + attempt).min(deadline), request()).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(e)) if transient(&e) && tokio::time::Instant::now() < deadline => {
                tracing::debug!(error = %e, "etcd request failed on its way; trying again");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Ok(Err(e)) => return Err(e.into()),
            Err(_) if tokio::time::Instant::now() < deadline => {
                tracing::debug!("etcd request unanswered; trying again");
            }
            Err(_) => return Err(RequestError::Unanswered(timeout)),
        }
    }
}

/// How long one try of a request may take: a third of the request's budget, at least 200ms.
fn attempt_timeout(timeout: Duration) -> Duration {
    (timeout / 3).max(Duration::from_millis(200)).min(timeout)
}

/// A range read, retried while it fails on its way.
async fn get(
    client: &Client,
    key: &str,
    options: Option<GetOptions>,
    timeout: Duration,
) -> Result<GetResponse, RequestError> {
    retried(timeout, || {
        let (mut client, key, options) = (client.clone(), key.to_string(), options.clone());
        async move { client.get(key, options).await }
    })
    .await
}

/// A transaction, retried while it fails on its way. A transaction that took effect but whose
/// answer was lost fails its comparison when repeated, which callers handle as a conflict.
async fn txn(client: &Client, txn: Txn, timeout: Duration) -> Result<TxnResponse, RequestError> {
    retried(timeout, || {
        let (mut client, txn) = (client.clone(), txn.clone());
        async move { client.txn(txn).await }
    })
    .await
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

    /// Where instances register; `hosts/` for every version, so that old and new see each other.
    pub fn instances(&self) -> String {
        format!("{}/hosts/", self.prefix)
    }

    pub fn instance(&self, identity: &str) -> String {
        format!("{}{identity}", self.instances())
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

/// Take `op` only while `fence` holds the leader key: the revision it took effect at, or
/// `None` when this process no longer leads.
async fn fenced(
    client: &Client,
    fence: &Fence,
    op: TxnOp,
    timeout: Duration,
) -> Result<Option<i64>, RequestError> {
    let request = Txn::new().when([fence.holds()]).and_then([op]);
    let response = self::txn(client, request, timeout).await?;
    Ok(response
        .succeeded()
        .then(|| response.header().map(|h| h.revision()).unwrap_or_default()))
}
