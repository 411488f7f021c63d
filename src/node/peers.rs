//! The primary's lease kept through its peers: alongside the controller's renewals, and on
//! their own while no controller renews, the agent asks every other member's agent to confirm
//! it, and extends it when a quorum has (its own vote counted), from the moment it asked,
//! while its own postgres proved alive within the last lease. The peers confirm only while
//! they reach its postgres (`reach`). The rules are `engine::postgres::quorum`'s. Touches the
//! peers' agents, over the same token and TLS as the controller's calls, and pings the local
//! postgres.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use futures::{StreamExt, future::join_all, stream::FuturesUnordered};

use super::{Agent, HeldLease};
use crate::engine::postgres::{
    agent::{AgentApi, AgentClient, PeerView, trusting},
    ping::ping,
    quorum::renewal_quorum,
};

/// The longest lease, or confirmation, an agent takes: a bound on what a promotion may have
/// to wait out.
pub const MAX_TTL_MS: u64 = 60_000;

/// A call to a peer that no lease's remainder bounds (telling it a lease was given up).
const PEER_CALL_TIMEOUT: Duration = Duration::from_millis(500);

/// How often the lease's remaining time is looked at.
const CHECK: Duration = Duration::from_millis(20);

/// One renewal through the peers: who asks, where its postgres is reached, whom it asks, and
/// how many votes it needs (its own counted).
struct RenewalRound {
    member: String,
    address: Option<String>,
    clients: Vec<AgentClient>,
    quorum: usize,
}

/// What the controller last told of this host's peers, and a client for each.
pub struct Peers {
    view: PeerView,
    clients: Vec<(String, AgentClient)>,
}

impl Agent {
    /// Take `view` as this host's peers; the clients are made again only when it changed.
    pub(super) fn learn_peers(&self, view: PeerView) {
        let mut peers = self.peers.lock().expect("lock");
        if peers.as_ref().is_some_and(|p| p.view == view) {
            return;
        }
        let tls = match view.ca_pem.as_deref().map(trusting).transpose() {
            Ok(tls) => tls,
            Err(error) => {
                tracing::error!(%error, "the peers' CA bundle is unusable: the lease is renewed by the controller alone");
                *peers = None;
                return;
            }
        };
        // Each round bounds its calls by what is left of the lease (`renewal_round`).
        let clients = view
            .peers
            .iter()
            .map(|peer| {
                let client = AgentClient::new(
                    peer.agent.clone(),
                    self.options.token.clone(),
                    tls.clone(),
                    PEER_CALL_TIMEOUT,
                );
                (peer.name.clone(), client)
            })
            .collect();
        tracing::info!(member = %view.member, peers = view.peers.len(), "peers learned from the controller");
        *peers = Some(Peers { view, clients });
    }

    /// The peers to ask, bounded by `timeout` each, and the quorum a renewal needs.
    fn renewal_round(&self, timeout: Duration) -> Option<RenewalRound> {
        let peers = self.peers.lock().expect("lock");
        let peers = peers.as_ref()?;
        let quorum = renewal_quorum(peers.clients.len() + 1)?;
        let clients = peers
            .clients
            .iter()
            .map(|(_, client)| client.with_timeout(timeout))
            .collect();
        Some(RenewalRound {
            member: peers.view.member.clone(),
            address: peers.view.address.clone(),
            clients,
            quorum,
        })
    }

    /// This agent's own vote for `member`'s lease, its own: given, and recorded as a promise
    /// like a peer's, while it has seen no epoch newer than the lease's.
    fn vote_for_own(&self, member: &str, lease: HeldLease, until: Instant) -> bool {
        let mut promises = self.promises.lock().expect("lock");
        promises
            .confirm(self.durable().epoch, lease.epoch, member, false, until)
            .is_ok()
    }

    /// `lease` was given up, its postgres stopped: lift this agent's own promise and ask every
    /// peer to lift theirs, so that a promotion (a switchover's, most often) need not wait them
    /// out. A peer that does not answer in time keeps its promise, and the promotion waits for
    /// it as before.
    pub(super) async fn release_lease(&self, lease: HeldLease) {
        // The same peers a renewal asks; an agent without peers never voted for its own
        // lease, so it has nothing to release.
        let Some(RenewalRound {
            member, clients, ..
        }) = self.renewal_round(PEER_CALL_TIMEOUT)
        else {
            return;
        };
        self.promises.lock().expect("lock").release(
            lease.epoch,
            &member,
            Instant::now() + lease.ttl,
        );
        let answers = join_all(
            clients
                .iter()
                .map(|client| client.release(lease.epoch, &member, lease.ttl)),
        )
        .await;
        let failed = answers.iter().filter(|answer| answer.is_err()).count();
        if failed > 0 {
            tracing::info!(
                failed,
                "not every peer heard that the lease was given up: a promotion waits out what they confirmed"
            );
        }
    }

    /// Extend the lease to `until` if it still holds at `epoch`: a lapsed lease is never
    /// revived (postgres has been stopped), and one given at another epoch is not this one.
    fn extend_lease(&self, epoch: u64, until: Instant) -> bool {
        let mut lease = self.lease.lock().expect("lock");
        match lease.as_mut() {
            Some(held) if held.epoch == epoch && held.until > Instant::now() => {
                held.until = held.until.max(until);
                true
            }
            _ => false,
        }
    }
}

/// Renew the lease through the peers from two thirds of it left on, as the controller does,
/// whether or not it does: the two are independent, so nothing has to take the lease over
/// when the controller goes away. A round begins every sixth of a lease until one has
/// extended it, each on its own, so a slow peer or a stalled round delays that round alone.
pub(super) async fn renew_through_peers(agent: Arc<Agent>) {
    let failing = Arc::new(AtomicBool::new(false));
    let mut last_begun: Option<Instant> = None;
    loop {
        tokio::time::sleep(CHECK).await;
        let Some(lease) = agent.held_lease() else {
            continue;
        };
        let now = Instant::now();
        let due = lease.until.saturating_duration_since(now) <= lease.ttl * 2 / 3
            && last_begun.is_none_or(|at| now - at >= lease.ttl / 6);
        if due {
            last_begun = Some(now);
            tokio::spawn(renewal_round(agent.clone(), lease, now, failing.clone()));
        }
    }
}

/// One renewal asked at `asked`: its own vote, then the peers' confirmations as they come,
/// extending the lease by its length from `asked` once a quorum has confirmed. `failing`
/// says whether the last round that mattered failed, so each change is logged once.
async fn renewal_round(
    agent: Arc<Agent>,
    lease: HeldLease,
    asked: Instant,
    failing: Arc<AtomicBool>,
) {
    // Every answer must come while the lease still holds to be worth anything.
    let timeout = lease.until.saturating_duration_since(asked);
    let Some(RenewalRound {
        member,
        address,
        clients,
        quorum,
    }) = agent.renewal_round(timeout)
    else {
        return;
    };
    if !agent.vote_for_own(&member, lease, asked + lease.ttl) {
        return;
    }
    // Peers vouch for the host, not for its postgres: a server that has not proved alive
    // within the last lease is let lapse, to be failed over. A ping sent in time may still be
    // on its way on a loaded host: its answer counts while the lease holds. Once a quorum has
    // confirmed, a slow peer's answer must not hold the extension past the lease's end.
    let mut confirmations: FuturesUnordered<_> = clients
        .iter()
        .map(|client| client.confirm(lease.epoch, &member, address.as_deref(), lease.ttl))
        .collect();
    let (alive, (votes, refusals)) = tokio::join!(
        agent.postgres_alive_by(asked.checked_sub(lease.ttl), lease.until),
        async {
            let (mut votes, mut refusals) = (1, Vec::new());
            while votes < quorum {
                match confirmations.next().await {
                    Some(Ok(_)) => votes += 1,
                    Some(Err(error)) => refusals.push(error.to_string()),
                    None => break,
                }
            }
            (votes, refusals)
        }
    );
    // The lease runs from the moment it was asked for: earlier than any confirmation.
    if alive.is_ok() && votes >= quorum && agent.extend_lease(lease.epoch, asked + lease.ttl) {
        if failing.swap(false, Ordering::Relaxed) {
            tracing::info!(
                votes,
                quorum,
                "the lease is renewed through the peers again"
            );
        }
        return;
    }
    // A later round that has already carried the lease past this one's end makes this
    // failure moot.
    let covered = agent
        .held_lease()
        .is_some_and(|held| held.until >= asked + lease.ttl);
    if covered || failing.swap(true, Ordering::Relaxed) {
        return;
    }
    match alive {
        Err(error) => {
            tracing::warn!(%error, "postgres does not answer here: the lease is not renewed through the peers")
        }
        Ok(()) => {
            tracing::warn!(votes, quorum, refusals = ?refusals, "the peers did not renew the lease")
        }
    }
}

/// Keep a proof that the local postgres is alive no older than half a lease: when the last
/// proof is older, ping it, a quarter of a lease apart, each ping running on its own and
/// allowed a whole lease (a loaded host answers late, not never; one slow answer must not hold
/// back the next ping). While the controller renews (a third of a lease apart), its renewals are
/// the proof and nothing is pinged. What they prove is what [`renew_through_peers`] asks.
pub(super) async fn watch_own_postgres(agent: Arc<Agent>) {
    let own = Arc::new(format!("127.0.0.1:{}", agent.options.port));
    let mut last_ping: Option<Instant> = None;
    loop {
        tokio::time::sleep(CHECK).await;
        let Some(lease) = agent.held_lease() else {
            continue;
        };
        let now = Instant::now();
        let fresh = agent
            .postgres_alive_since(now.checked_sub(lease.ttl / 2))
            .is_ok();
        if fresh || last_ping.is_some_and(|at| now - at < lease.ttl / 4) {
            continue;
        }
        last_ping = Some(now);
        let (agent, own) = (agent.clone(), own.clone());
        tokio::spawn(async move {
            match ping(&own, lease.ttl).await {
                Ok(()) => agent.postgres_answered(now),
                Err(error) => {
                    *agent.last_ping_error.lock().expect("lock") = Some(error.to_string())
                }
            }
        });
    }
}

impl Agent {
    /// The local postgres proved alive at `at`: it answered a ping sent then, or the
    /// controller, which renews only a server that answers its probes, renewed the lease.
    pub(super) fn postgres_answered(&self, at: Instant) {
        let mut answered = self.postgres_answered.lock().expect("lock");
        *answered = (*answered).max(Some(at));
        *self.last_ping_error.lock().expect("lock") = None;
    }

    /// Whether the local postgres proves alive at `since` or later by `deadline` (a ping
    /// already sent may answer meanwhile); if not, why.
    async fn postgres_alive_by(
        &self,
        since: Option<Instant>,
        deadline: Instant,
    ) -> Result<(), String> {
        loop {
            let alive = self.postgres_alive_since(since);
            if alive.is_ok() || Instant::now() + CHECK >= deadline {
                return alive;
            }
            tokio::time::sleep(CHECK).await;
        }
    }

    /// Whether the local postgres proved alive at `since` or later; if not, why.
    fn postgres_alive_since(&self, since: Option<Instant>) -> Result<(), String> {
        let answered = *self.postgres_answered.lock().expect("lock");
        match (answered, since) {
            (Some(at), Some(since)) if at >= since => Ok(()),
            (Some(_), None) => Ok(()),
            _ => Err(self
                .last_ping_error
                .lock()
                .expect("lock")
                .clone()
                .unwrap_or_else(|| "it has not answered within the last lease".into())),
        }
    }
}
