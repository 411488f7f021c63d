//! Whether this host still reaches the postgres of a peer whose lease it confirms: it pings
//! that server, a quarter of the lease apart, for as long as the peer keeps asking, and refuses
//! only on evidence (the newest ping that has finished failed), never for want of an answer,
//! so a loaded host goes on vouching. A primary cut off one way (its agent still reaches its
//! peers', nobody reaches its postgres) is let lapse within about a lease, instead of being
//! kept until a promotion raises the peers. Touches the peers' postgres, with a ping that needs
//! no credentials.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use super::Agent;
use crate::engine::postgres::ping::ping;

/// How often the pings due are looked for.
const CHECK: Duration = Duration::from_millis(20);

/// At most this many leaseholders are pinged: the peers that asked of late, which a healthy
/// cluster keeps to one.
const MOST_PINGED: usize = 16;

/// What this host knows of reaching one leaseholder's postgres.
#[derive(Debug)]
pub(super) struct Reach {
    /// When its agent last asked for a confirmation, and of how long a lease.
    asked: Instant,
    ttl: Duration,
    /// When the newest ping was sent.
    sent: Option<Instant>,
    /// When the newest ping that answered was sent.
    answered: Option<Instant>,
    /// The newest ping that failed: when it was sent, and why it failed.
    failed: Option<(Instant, String)>,
}

/// Every leaseholder's postgres this host pings, by `host:port`.
pub(super) type Leaseholders = HashMap<String, Reach>;

impl Reach {
    fn new(asked: Instant, ttl: Duration) -> Self {
        Self {
            asked,
            ttl,
            sent: None,
            answered: None,
            failed: None,
        }
    }

    /// Why this host no longer reaches it, when the newest ping that finished failed: it was
    /// sent within the last lease, and no ping sent after it has answered.
    fn refusal(&self, now: Instant) -> Option<&str> {
        let (sent, why) = self.failed.as_ref()?;
        let answered_since = self.answered.is_some_and(|answered| answered > *sent);
        (!answered_since && now.duration_since(*sent) < self.ttl).then_some(why.as_str())
    }
}

impl Agent {
    /// The leaseholder whose postgres is at `address` asks for a confirmation of a lease of
    /// `ttl`: it is pinged from now on, and why this host no longer reaches it, if it does not.
    /// Never waits: with no ping finished yet, it is vouched for.
    pub(super) fn unreached(&self, address: &str, ttl: Duration) -> Option<String> {
        let now = Instant::now();
        let mut leaseholders = self.leaseholders.lock().expect("lock");
        if !leaseholders.contains_key(address) && leaseholders.len() >= MOST_PINGED {
            forget_the_longest_silent(&mut leaseholders);
        }
        let reach = leaseholders
            .entry(address.to_string())
            .or_insert_with(|| Reach::new(now, ttl));
        reach.asked = now;
        reach.ttl = ttl;
        reach.refusal(now).map(str::to_string)
    }

    /// Ping the postgres at `address`, sent at `sent`, and record how it ended.
    fn ping_leaseholder(self: &Arc<Self>, address: String, sent: Instant, timeout: Duration) {
        let agent = self.clone();
        tokio::spawn(async move {
            let outcome = ping(&address, timeout).await;
            let mut leaseholders = agent.leaseholders.lock().expect("lock");
            let Some(reach) = leaseholders.get_mut(&address) else {
                return;
            };
            match outcome {
                Ok(()) => reach.answered = reach.answered.max(Some(sent)),
                Err(error) if reach.failed.as_ref().is_none_or(|(at, _)| *at < sent) => {
                    reach.failed = Some((sent, error.to_string()))
                }
                Err(_) => {}
            }
        });
    }
}

/// Make room for one more leaseholder: forget the one that asked longest ago.
fn forget_the_longest_silent(leaseholders: &mut Leaseholders) {
    if let Some(oldest) = leaseholders
        .iter()
        .min_by_key(|(_, reach)| reach.asked)
        .map(|(address, _)| address.clone())
    {
        leaseholders.remove(&oldest);
    }
}

/// Ping every leaseholder that asked within the last two of its leases, a quarter of its lease
/// apart, each ping allowed half a lease; forget the others.
pub(super) async fn watch_leaseholders(agent: Arc<Agent>) {
    loop {
        tokio::time::sleep(CHECK).await;
        let now = Instant::now();
        let due: Vec<(String, Duration)> = {
            let mut leaseholders = agent.leaseholders.lock().expect("lock");
            leaseholders.retain(|_, reach| now.duration_since(reach.asked) < reach.ttl * 2);
            leaseholders
                .iter_mut()
                .filter(|(_, reach)| {
                    reach
                        .sent
                        .is_none_or(|sent| now.duration_since(sent) >= reach.ttl / 4)
                })
                .map(|(address, reach)| {
                    reach.sent = Some(now);
                    (address.clone(), reach.ttl)
                })
                .collect()
        };
        for (address, ttl) in due {
            agent.ping_leaseholder(address, now, ttl / 2);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::Reach;

    #[test]
    fn only_a_failure_newer_than_every_answer_and_within_a_lease_refuses() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut reach = Reach::new(t0, Duration::from_millis(100));
        assert_eq!(reach.refusal(at(0)), None, "no ping finished: vouched for");
        reach.failed = Some((at(10), "timed out".into()));
        assert_eq!(reach.refusal(at(20)), Some("timed out"));
        reach.answered = Some(at(5));
        assert_eq!(reach.refusal(at(20)), Some("timed out"), "an older answer");
        reach.answered = Some(at(15));
        assert_eq!(reach.refusal(at(20)), None, "a ping sent later answered");
        reach.answered = Some(at(5));
        assert_eq!(reach.refusal(at(110)), None, "the failure is a lease old");
    }
}
