//! The etcd runtime: several `replicant run` processes on plain hosts coordinated through etcd.
//! So far leadership and the journal store; routes, status and the runtime itself follow.

pub mod journal;
pub mod leader;

use std::time::Duration;

pub use self::{
    journal::{EtcdJournalStore, Fence, journal_key},
    leader::{ElectionOptions, Leadership, campaign},
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
