//! Leadership among replicant processes through etcd: one leader key attached to the leader's
//! session lease, whose create revision is the fencing token every journal, route and status
//! write compares. The leader acts only while its session is provably alive (see
//! [`Session`]). Touches the leader key.

use std::{sync::Arc, time::Duration};

use etcd_client::{Client, Compare, CompareOp, EventType, PutOptions, Txn, TxnOp, WatchOptions};

use super::{
    journal::Fence,
    session::{EtcdError, Session},
};

/// How a process campaigns.
#[derive(Clone, Debug)]
pub struct ElectionOptions {
    /// The leader key.
    pub key: String,
    /// The key's value, for people: which host leads.
    pub identity: String,
    /// For every request.
    pub timeout: Duration,
}

/// This process leads: its fence, for as long as its session is alive.
pub struct Leadership {
    pub fence: Fence,
    pub session: Arc<Session>,
}

impl Leadership {
    /// Whether this process may act now: its lease is surely alive on etcd.
    pub fn may_act(&self) -> bool {
        self.session.alive()
    }

    /// Until when it may act, as things stand.
    pub fn until(&self) -> std::time::Instant {
        self.session.until()
    }

    /// Stop renewing (a crash, for tests): the lease runs out on etcd, and `may_act` turns
    /// false a margin before.
    pub fn abandon(&self) {
        self.session.abandon();
    }

    /// Whether the leader key is still this process's: someone may have deleted it by hand.
    pub async fn confirmed(&self, client: &Client, timeout: Duration) -> Result<bool, EtcdError> {
        let found = super::get(client, &self.fence.leader_key, None, timeout)
            .await
            .map_err(|e| EtcdError {
                what: "read the leader key",
                message: e.to_string(),
            })?;
        Ok(found
            .kvs()
            .first()
            .is_some_and(|kv| kv.create_revision() == self.fence.token))
    }
}

/// Campaign until this process leads: take the leader key, on the session's lease, if nobody
/// holds it; otherwise wait for it to go (watched, and looked at again every third of a TTL in
/// case the watch misses it). Fails if the session is lost meanwhile.
pub async fn campaign(
    client: &Client,
    session: &Arc<Session>,
    options: &ElectionOptions,
) -> Result<Leadership, EtcdError> {
    let mut client = client.clone();
    loop {
        if session.lost() {
            return Err(EtcdError {
                what: "campaign",
                message: "this process's etcd lease is gone".into(),
            });
        }
        let take = Txn::new()
            .when([Compare::version(options.key.as_str(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                options.key.as_str(),
                options.identity.as_str(),
                Some(PutOptions::new().with_lease(session.lease)),
            )])
            .or_else([TxnOp::get(options.key.as_str(), None)]);
        let taken = match super::txn(&client, take, options.timeout).await {
            Err(e) if e.lease_gone() => {
                return Err(EtcdError {
                    what: "campaign",
                    message: e.to_string(),
                });
            }
            taken => taken.map_err(|e| EtcdError {
                what: "take the leader key",
                message: e.to_string(),
            }),
        };
        let revision = match taken {
            Ok(taken)
                if session.alive()
                    && let Some(token) = won(&taken, session.lease) =>
            {
                return Ok(Leadership {
                    fence: Fence {
                        leader_key: options.key.clone(),
                        token,
                    },
                    session: session.clone(),
                });
            }
            Ok(taken) => taken.header().map(|h| h.revision()),
            Err(error) => {
                tracing::debug!(%error, "campaign");
                None
            }
        };
        wait_for_vacancy(&mut client, options, revision, session.ttl / 3).await;
    }
}

/// The fencing token, if the campaign's transaction shows this session holds the key: it took
/// it now, or already held it (a campaign after stepping down while the lease lived on).
fn won(taken: &etcd_client::TxnResponse, lease: i64) -> Option<i64> {
    if taken.succeeded() {
        return taken.header().map(|h| h.revision());
    }
    taken.op_responses().into_iter().find_map(|r| match r {
        etcd_client::TxnOpResponse::Get(get) => get
            .kvs()
            .first()
            .filter(|kv| kv.lease() == lease)
            .map(|kv| kv.create_revision()),
        _ => None,
    })
}

/// Wait until the leader key is deleted after `revision`, for at most `wait`.
async fn wait_for_vacancy(
    client: &mut Client,
    options: &ElectionOptions,
    revision: Option<i64>,
    wait: Duration,
) {
    let watch = async {
        let mut watch_options = WatchOptions::new();
        if let Some(revision) = revision {
            watch_options = watch_options.with_start_revision(revision + 1);
        }
        let Ok(mut stream) = client
            .watch(options.key.as_str(), Some(watch_options))
            .await
        else {
            return std::future::pending().await;
        };
        while let Ok(Some(response)) = stream.message().await {
            if response
                .events()
                .iter()
                .any(|e| e.event_type() == EventType::Delete)
            {
                return;
            }
        }
        std::future::pending().await
    };
    let _ = tokio::time::timeout(wait, watch).await;
}
