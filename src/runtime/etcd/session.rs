//! This process's etcd session: one lease, kept alive at a third of its TTL, that carries the
//! instance's key, its proxies' acknowledgements and, while it leads, the leader key.
//!
//! The session is trusted only while its lease is provably alive, judged on this process's
//! monotonic clock: etcd handles a keep-alive no earlier than it was sent, so the lease cannot
//! expire before that send time plus the TTL; the session counts itself alive until a margin
//! before. Touches only its own lease.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use etcd_client::Client;
use tokio::sync::watch;

/// Why etcd could not be used.
#[derive(Debug, thiserror::Error)]
#[error("cannot {what}: {message}")]
pub struct EtcdError {
    pub what: &'static str,
    pub message: String,
}

/// One etcd request bounded by `timeout`, its error naming what it was for.
pub(super) async fn bounded<T>(
    timeout: Duration,
    what: &'static str,
    request: impl Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, EtcdError> {
    super::call(timeout, request).await.map_err(|e| EtcdError {
        what,
        message: e.to_string(),
    })
}

/// The lease's time to live as etcd counts it: whole seconds, at least 2 (etcd's minimum with
/// its default timings).
pub fn lease_seconds(ttl: Duration) -> i64 {
    ttl.as_secs().max(2) as i64
}

/// Whether etcd says the lease no longer exists (it expired, or was revoked).
pub fn lease_gone(error: &etcd_client::Error) -> bool {
    error.to_string().contains("lease not found")
}

/// How long before the lease could expire the session stops trusting it: covers clock rates,
/// a busy machine, and the time to stop acting and to close the proxies' connections. A fifth
/// of the TTL, at least 500ms.
pub fn margin(ttl: Duration) -> Duration {
    (ttl / 5).max(Duration::from_millis(500))
}

pub struct Session {
    pub lease: i64,
    pub ttl: Duration,
    until: Arc<Mutex<Instant>>,
    /// Turns true once etcd says the lease is gone, or renewal stopped for good.
    lost: watch::Receiver<bool>,
    keeper: tokio::task::JoinHandle<()>,
}

impl Session {
    /// Grant a lease of `ttl` (rounded to whole seconds, at least 2) and keep it alive.
    pub async fn open(
        client: &Client,
        ttl: Duration,
        timeout: Duration,
    ) -> Result<Self, EtcdError> {
        let ttl = Duration::from_secs(lease_seconds(ttl) as u64);
        let mut granting = client.clone();
        let sent = Instant::now();
        let lease = bounded(
            timeout,
            "grant a lease",
            granting.lease_grant(lease_seconds(ttl), None),
        )
        .await?
        .id();
        let until = Arc::new(Mutex::new(sent + ttl - margin(ttl)));
        let (lost_tx, lost) = watch::channel(false);
        let keeper = tokio::spawn(keep(
            client.clone(),
            lease,
            ttl,
            timeout,
            until.clone(),
            lost_tx,
        ));
        Ok(Self {
            lease,
            ttl,
            until,
            lost,
            keeper,
        })
    }

    /// Whether the lease is surely alive on etcd now.
    pub fn alive(&self) -> bool {
        !*self.lost.borrow() && Instant::now() < self.until()
    }

    /// Until when the lease is surely alive, as things stand.
    pub fn until(&self) -> Instant {
        *self.until.lock().expect("lock")
    }

    /// Whether the lease is gone for good: a new session is needed.
    pub fn lost(&self) -> bool {
        *self.lost.borrow()
    }

    /// Resolves once the lease is gone for good.
    pub async fn ended(&self) {
        let mut lost = self.lost.clone();
        let _ = lost.wait_for(|lost| *lost).await;
    }

    /// Stop renewing, as a crashed or frozen process would: the lease runs out on etcd, and
    /// `alive` turns false a margin before.
    pub fn abandon(&self) {
        self.keeper.abort();
    }

    /// Give the lease back at once (a clean shutdown), so others need not wait for its TTL.
    pub async fn close(&self, client: &Client, timeout: Duration) {
        self.keeper.abort();
        let _ = bounded(
            timeout,
            "revoke the lease",
            client.clone().lease_revoke(self.lease),
        )
        .await;
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.keeper.abort();
    }
}

/// Keep the lease alive at a third of its TTL. Each confirmed keep-alive moves `until` to its
/// send time plus the TTL, less the margin. After an outage, a confirmed keep-alive proves the
/// lease outlived it (nothing held under it was taken over), so it is trusted again. Ends,
/// setting `lost`, when etcd says the lease is gone.
async fn keep(
    mut client: Client,
    lease: i64,
    ttl: Duration,
    timeout: Duration,
    until: Arc<Mutex<Instant>>,
    lost: watch::Sender<bool>,
) {
    let period = ttl / 3;
    loop {
        // Short tries: a stream stuck on a member that went away is given up well before the
        // lease is in doubt, and the next try goes to another.
        let attempt = super::attempt_timeout(timeout.min(period));
        let opened = tokio::time::timeout(attempt, client.lease_keep_alive(lease)).await;
        let (mut keeper, mut stream) = match opened {
            Ok(Ok(opened)) => opened,
            Ok(Err(error)) if lease_gone(&error) => {
                tracing::warn!(lease, "this process's etcd lease expired");
                lost.send_replace(true);
                return;
            }
            failed => {
                tracing::debug!(lease, ?failed, "cannot open a keep-alive stream");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        loop {
            let sent = Instant::now();
            let confirmed = match tokio::time::timeout(attempt, async {
                keeper.keep_alive().await?;
                stream.message().await
            })
            .await
            {
                Ok(Ok(Some(response))) => Some(response.ttl()),
                // etcd refuses to renew a lease it has let go.
                Ok(Err(error)) if lease_gone(&error) => Some(0),
                // The stream broke or etcd is silent: open a new one.
                _ => None,
            };
            match confirmed {
                Some(left) if left > 0 => {
                    let mut held = until.lock().expect("lock");
                    *held = (*held).max(sent + ttl - margin(ttl));
                }
                Some(_) => {
                    tracing::warn!(lease, "this process's etcd lease expired");
                    lost.send_replace(true);
                    return;
                }
                None => break,
            }
            tokio::time::sleep_until((sent + period).into()).await;
        }
    }
}
