//! The controller's side of the primary's lease: a task renews it at a third of its length,
//! whatever the reconcile rounds are doing, for as long as the observations say the server is
//! alive; and for every renewal that may have reached the host, the receipt of the nonce it
//! ran from is kept, since the server may accept writes until a lease's length after that.
//! Each renewal tells the leaseholder its peers, through whom it renews while the controller
//! is away; so before a promotion, [`raise`] takes a quorum of the agents to the new epoch and
//! waits out what they confirmed before. Touches the members' agents.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Instant,
};

use futures::StreamExt;

use super::agent::{AgentApi, AgentClient, AgentStatus, Peer, PeerView};
use crate::core::engine::{EngineError, Lease};

/// Silent observations (the server neither answered nor was being started) after which a
/// member's lease is no longer renewed: a server that froze or died while its agent still
/// answers must be failed over, not kept writable by that agent. One is forgiven, so a single
/// slow probe stops nothing; it costs such a failover one round at most, never its safety
/// (every renewal that may have arrived counts towards the failure's detection). A host that
/// answers nothing returns no nonce, so renewals into it move nothing forward.
const SILENT_BEFORE_WITHHOLDING: u32 = 2;

#[derive(Clone, Copy, Debug, Default)]
struct LeaseState {
    /// The nonce receipt of the last renewal that may have reached the host.
    sent: Option<Instant>,
    /// A renewal under way, from a nonce received at this time: until its answer it may yet
    /// arrive.
    in_flight: Option<Instant>,
    /// Observations in a row that found the server silent.
    silent: u32,
}

impl LeaseState {
    /// The latest renewal that may have reached the host.
    fn latest(&self) -> Option<Instant> {
        self.sent.max(self.in_flight)
    }
}

struct Renewer {
    member: String,
    lease: Lease,
    task: tokio::task::JoinHandle<()>,
}

/// Renews one member's lease at a time (the primary's), and remembers every member's.
pub struct Leases {
    states: Arc<Mutex<HashMap<String, LeaseState>>>,
    renewer: Mutex<Option<Renewer>>,
    /// Every member's agent, and the CA bundle they chain to: each renewal tells the
    /// leaseholder its peers, so that it can renew through them while no controller does.
    agents: Vec<Peer>,
    /// Where each member's postgres is reached (`host:port`): its peers confirm its lease
    /// only while they find they reach it there.
    addresses: HashMap<String, String>,
    ca_pem: Option<String>,
}

impl Leases {
    pub fn new(
        agents: Vec<Peer>,
        addresses: HashMap<String, String>,
        ca_pem: Option<String>,
    ) -> Self {
        Self {
            states: Arc::default(),
            renewer: Mutex::default(),
            agents,
            addresses,
            ca_pem,
        }
    }

    /// What `member`'s agent is told of its peers.
    fn view_for(&self, member: &str) -> PeerView {
        PeerView {
            member: member.to_string(),
            address: self.addresses.get(member).cloned(),
            peers: self
                .agents
                .iter()
                .filter(|peer| peer.name != member)
                .cloned()
                .collect(),
            ca_pem: self.ca_pem.clone(),
        }
    }

    /// Whether `member`'s server has been alive enough of late for its lease to be renewed.
    pub fn renewable(&self, member: &str) -> bool {
        self.state(member).silent < SILENT_BEFORE_WITHHOLDING
    }

    /// Whether the last observation of `member` found its server silent.
    pub fn was_silent(&self, member: &str) -> bool {
        self.state(member).silent > 0
    }

    fn state(&self, member: &str) -> LeaseState {
        self.states
            .lock()
            .expect("lock")
            .get(member)
            .copied()
            .unwrap_or_default()
    }

    /// Keep renewing `lease` on `member` through `agent`, from now on, at a third of its
    /// length: started unless it already runs for this member and lease.
    pub fn keep(&self, member: &str, agent: &AgentClient, lease: Lease) {
        let mut renewer = self.renewer.lock().expect("lock");
        if let Some(r) = renewer.as_ref()
            && r.member == member
            && r.lease == lease
            && !r.task.is_finished()
        {
            return;
        }
        if let Some(r) = renewer.take() {
            self.halt(r);
        }
        let (states, agent, name) = (self.states.clone(), agent.clone(), member.to_string());
        let view = self.view_for(member);
        let period = lease.ttl / 3;
        let task = tokio::spawn(async move {
            loop {
                let began = Instant::now();
                let _ = renew(&states, &name, &agent, lease, &view).await;
                tokio::time::sleep_until((began + period).into()).await;
            }
        });
        *renewer = Some(Renewer {
            member: member.to_string(),
            lease,
            task,
        });
    }

    /// Stop renewing `member`'s lease, if it is renewed.
    pub fn stop(&self, member: &str) {
        let mut renewer = self.renewer.lock().expect("lock");
        if renewer.as_ref().is_some_and(|r| r.member == member)
            && let Some(r) = renewer.take()
        {
            self.halt(r);
        }
    }

    /// Abort a renewer. A renewal it had under way may still arrive: it counts as sent.
    fn halt(&self, renewer: Renewer) {
        renewer.task.abort();
        let mut states = self.states.lock().expect("lock");
        if let Some(state) = states.get_mut(&renewer.member) {
            state.sent = state.latest();
            state.in_flight = None;
        }
    }

    /// Make `member` the leaseholder now (before a start or a promotion): one renewal, awaited,
    /// then renewals in the background, so that a long round after a promotion does not let
    /// the new primary's lease run out. The next observations decide whether they go on.
    pub async fn grant(
        &self,
        member: &str,
        agent: &AgentClient,
        lease: Lease,
    ) -> Result<AgentStatus, EngineError> {
        let status = renew(&self.states, member, agent, lease, &self.view_for(member)).await?;
        // Brought up on purpose: its silence so far is not held against it.
        if let Some(state) = self.states.lock().expect("lock").get_mut(member) {
            state.silent = 0;
        }
        self.keep(member, agent, lease);
        Ok(status)
    }

    /// Record what an observation found (`alive`: the server answered, or is being brought
    /// up); renewals stop once it has been silent too long. Returns when the last renewal
    /// that may have reached `member`'s host was sent.
    pub fn observed(&self, member: &str, alive: bool) -> Option<Instant> {
        let silent = {
            let mut states = self.states.lock().expect("lock");
            let state = states.entry(member.to_string()).or_default();
            state.silent = if alive { 0 } else { state.silent + 1 };
            state.silent
        };
        if silent >= SILENT_BEFORE_WITHHOLDING {
            self.stop(member);
        }
        self.state(member).latest()
    }
}

impl Drop for Leases {
    fn drop(&mut self) {
        if let Some(r) = self.renewer.lock().expect("lock").take() {
            r.task.abort();
        }
    }
}

/// One renewal: a nonce from the host, then the renewal that runs from the nonce's issue. The
/// nonce's receipt is kept as the time from which the host may accept writes for a lease's
/// length, unless nothing listened (then the renewal certainly never arrived). It is later than
/// the nonce's issue, so the host's lease ends no later than the controller counts, however
/// late the renewal reaches it; and a renewal into a frozen host moves nothing forward, since
/// no nonce comes back.
async fn renew(
    states: &Mutex<HashMap<String, LeaseState>>,
    member: &str,
    agent: &AgentClient,
    lease: Lease,
    view: &PeerView,
) -> Result<AgentStatus, EngineError> {
    let nonce = agent.lease_nonce().await?;
    let anchor = Instant::now();
    states
        .lock()
        .expect("lock")
        .entry(member.to_string())
        .or_default()
        .in_flight = Some(anchor);
    let result = agent
        .renew_lease(lease.epoch, lease.ttl, nonce, Some(view))
        .await;
    let mut states = states.lock().expect("lock");
    let state = states.entry(member.to_string()).or_default();
    state.in_flight = None;
    if !matches!(result, Err(EngineError::Refused { .. })) {
        state.sent = state.sent.max(Some(anchor));
    }
    result
}

/// Before a promotion to `epoch`: raise a quorum of `agents` (every member's) to it, so that the
/// old primary can no longer renew its lease through its peers, then wait out every
/// confirmation they gave at an older epoch, and `margin` more for the clocks' rates. A wait
/// longer than `longest` is not slept through: the promotion is refused, to be tried again.
pub async fn raise(
    agents: &[(&str, &AgentClient)],
    epoch: u64,
    margin: std::time::Duration,
    longest: std::time::Duration,
) -> Result<std::time::Duration, EngineError> {
    use super::quorum::raise_quorum;
    let needed = raise_quorum(agents.len());
    if needed == 0 {
        return Ok(std::time::Duration::ZERO);
    }
    // Every agent is asked at once, and the answers are taken as they come: once a quorum is
    // raised, what the others would report is not needed (any raise quorum meets every renewal
    // quorum), so a frozen or cut-off agent, the old primary's most often, delays nothing.
    let mut answers: futures::stream::FuturesUnordered<_> = agents
        .iter()
        .map(|(name, agent)| async move { (*name, agent.raise(epoch).await) })
        .collect();
    let mut raised = 0;
    let mut outstanding = std::time::Duration::ZERO;
    let mut missing = Vec::new();
    while raised < needed {
        let Some((name, answer)) = answers.next().await else {
            break;
        };
        match answer {
            Ok(r) if r.epoch == epoch => {
                raised += 1;
                outstanding = outstanding.max(std::time::Duration::from_millis(r.outstanding_ms));
            }
            Ok(r) => missing.push(format!("{name} holds epoch {}", r.epoch)),
            // An agent of an earlier version knows no raise, and confirms no peer's lease
            // either: it is as good as raised.
            Err(EngineError::Command { message, .. }) if message.starts_with("404") => raised += 1,
            Err(error) => missing.push(format!("{name}: {error}")),
        }
    }
    let address = || {
        agents
            .first()
            .map(|(name, _)| name.to_string())
            .unwrap_or_default()
    };
    if raised < needed {
        missing.sort();
        return Err(EngineError::NotApplied {
            address: address(),
            during: "raise the agents to the new epoch",
            detail: format!(
                "{raised} of {} agents took epoch {epoch} and a promotion needs {needed}, so that the old primary can no longer renew its lease through its peers ({})",
                agents.len(),
                missing.join("; ")
            ),
        });
    }
    if outstanding.is_zero() {
        return Ok(outstanding);
    }
    let wait = outstanding + margin;
    if wait > longest {
        return Err(EngineError::NotApplied {
            address: address(),
            during: "raise the agents to the new epoch",
            detail: format!(
                "the agents confirmed the old primary's lease for {}ms more; the promotion waits that out",
                outstanding.as_millis()
            ),
        });
    }
    tokio::time::sleep(wait).await;
    Ok(wait)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use axum::{Json, routing::post};

    use super::raise;
    use crate::engine::{Secret, postgres::agent::AgentClient};

    /// A stand-in for an agent (a mock: the real one runs in `tests/node_agent.rs`) that takes
    /// any raise and reports confirmations running `outstanding_ms` more.
    async fn answering(outstanding_ms: u64) -> String {
        let app = axum::Router::new().route(
            "/v1/raise",
            post(move |Json(body): Json<serde_json::Value>| async move {
                Json(serde_json::json!({ "epoch": body["epoch"], "outstandingMs": outstanding_ms }))
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move { axum::serve(listener, app).await });
        address
    }

    fn client(address: &str) -> AgentClient {
        AgentClient::new(
            address,
            Secret::new("a-token-of-16-chars"),
            None,
            Duration::from_secs(3),
        )
    }

    /// A frozen agent (connections accepted by the kernel, never answered), the old primary's
    /// most often, does not hold up a raise that a quorum of the others has answered; what
    /// they report is waited out.
    #[tokio::test]
    async fn a_raise_goes_ahead_once_a_quorum_has_answered() {
        let frozen = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let frozen_address = frozen.local_addr().unwrap().to_string();
        let (b, c) = (answering(0).await, answering(120).await);
        let agents = [client(&frozen_address), client(&b), client(&c)];
        let named: Vec<(&str, &AgentClient)> = ["a", "b", "c"].into_iter().zip(&agents).collect();
        let started = Instant::now();
        let waited = raise(&named, 1, Duration::from_millis(10), Duration::from_secs(1))
            .await
            .unwrap();
        assert_eq!(
            waited,
            Duration::from_millis(130),
            "c's confirmation, and the margin"
        );
        assert!(
            started.elapsed() < Duration::from_millis(1500),
            "the raise waited for the frozen agent: {:?}",
            started.elapsed()
        );

        // Without a quorum it is refused, and says who was missing.
        let lost = client(&{
            let gone = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            gone.local_addr().unwrap().to_string()
        });
        let named = [("a", &agents[0]), ("b", &agents[1]), ("d", &lost)];
        let refused = raise(&named, 1, Duration::ZERO, Duration::from_secs(1))
            .await
            .unwrap_err()
            .to_string();
        assert!(refused.contains("1 of 3 agents took epoch 1"), "{refused}");
        assert!(refused.contains("d: "), "{refused}");
        drop(frozen);
    }
}
