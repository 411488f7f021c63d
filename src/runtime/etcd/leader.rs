//! Leadership among replicant processes through etcd: one leader key attached to an etcd lease,
//! whose create revision is the fencing token every journal write compares.
//!
//! The leader acts only while its lease is provably alive, judged on its own monotonic clock:
//! etcd handles a keep-alive no earlier than it was sent, so the lease cannot expire before the
//! send time plus its TTL, and the leader stops a margin before that. Touches the leader key and
//! this process's lease.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use etcd_client::{Client, Compare, CompareOp, PutOptions, Txn, TxnOp};

use super::journal::Fence;

/// How a process campaigns.
#[derive(Clone, Debug)]
pub struct ElectionOptions {
    /// The leader key.
    pub key: String,
    /// The key's value, for people: which host leads.
    pub identity: String,
    /// The lease's time to live; etcd counts whole seconds, at least 2.
    pub ttl: Duration,
    /// For every request.
    pub timeout: Duration,
}

impl ElectionOptions {
    fn ttl_secs(&self) -> i64 {
        self.ttl.as_secs().max(2) as i64
    }

    fn ttl(&self) -> Duration {
        Duration::from_secs(self.ttl_secs() as u64)
    }

    /// Covers clock rates and the time to stop acting: a tenth of the TTL, at least 200ms.
    fn margin(&self) -> Duration {
        (self.ttl() / 10).max(Duration::from_millis(200))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ElectionError {
    #[error("cannot {what}: {message}")]
    Etcd { what: &'static str, message: String },
}

/// This process leads: its fence, and until when it may act.
pub struct Leadership {
    pub fence: Fence,
    until: Arc<Mutex<Instant>>,
    keeper: tokio::task::JoinHandle<()>,
}

impl Leadership {
    /// Whether this process may act now: its lease is surely alive on etcd.
    pub fn may_act(&self) -> bool {
        Instant::now() < *self.until.lock().expect("lock")
    }

    /// Until when it may act, as things stand.
    pub fn until(&self) -> Instant {
        *self.until.lock().expect("lock")
    }

    /// Stop renewing (a crash, for tests): the lease runs out on etcd, and `may_act` turns
    /// false a margin before.
    pub fn abandon(&self) {
        self.keeper.abort();
    }
}

impl Drop for Leadership {
    fn drop(&mut self) {
        self.keeper.abort();
    }
}

async fn bounded<T>(
    timeout: Duration,
    what: &'static str,
    request: impl Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, ElectionError> {
    super::call(timeout, request)
        .await
        .map_err(|message| ElectionError::Etcd { what, message })
}

/// Campaign until this process leads: take the leader key if nobody holds it, on a lease of
/// this process's; otherwise look again a third of a TTL later.
pub async fn campaign(
    client: &Client,
    options: &ElectionOptions,
) -> Result<Leadership, ElectionError> {
    let mut client = client.clone();
    loop {
        let sent = Instant::now();
        let lease = bounded(
            options.timeout,
            "grant a lease",
            client.lease_grant(options.ttl_secs(), None),
        )
        .await?
        .id();
        let take = Txn::new()
            .when([Compare::version(options.key.as_str(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                options.key.as_str(),
                options.identity.as_str(),
                Some(PutOptions::new().with_lease(lease)),
            )]);
        let taken = bounded(options.timeout, "take the leader key", client.txn(take)).await?;
        if taken.succeeded() {
            let token = taken.header().map(|h| h.revision()).unwrap_or_default();
            let until = Arc::new(Mutex::new(sent + options.ttl() - options.margin()));
            let keeper = tokio::spawn(keep(client.clone(), options.clone(), lease, until.clone()));
            return Ok(Leadership {
                fence: Fence {
                    leader_key: options.key.clone(),
                    token,
                },
                until,
                keeper,
            });
        }
        let _ = bounded(
            options.timeout,
            "revoke a lease",
            client.lease_revoke(lease),
        )
        .await;
        tokio::time::sleep(options.ttl() / 3).await;
    }
}

/// Keep the lease alive at a third of its TTL. Each confirmed keep-alive moves `until` to its
/// send time plus the TTL, less the margin. Ends when etcd says the lease is gone.
async fn keep(
    mut client: Client,
    options: ElectionOptions,
    lease: i64,
    until: Arc<Mutex<Instant>>,
) {
    let period = options.ttl() / 3;
    loop {
        let opened = bounded(
            options.timeout,
            "keep the lease alive",
            client.lease_keep_alive(lease),
        )
        .await;
        let Ok((mut keeper, mut stream)) = opened else {
            tokio::time::sleep(period / 2).await;
            continue;
        };
        loop {
            let sent = Instant::now();
            let confirmed = match tokio::time::timeout(options.timeout, async {
                keeper.keep_alive().await?;
                stream.message().await
            })
            .await
            {
                Ok(Ok(Some(response))) => Some(response.ttl()),
                // The stream broke or etcd is silent: open a new one.
                _ => None,
            };
            match confirmed {
                Some(ttl) if ttl > 0 => {
                    let mut held = until.lock().expect("lock");
                    *held = (*held).max(sent + options.ttl() - options.margin());
                }
                Some(_) => {
                    tracing::warn!(lease, "the leader's lease expired on etcd");
                    return;
                }
                None => break,
            }
            tokio::time::sleep_until((sent + period).into()).await;
        }
    }
}
