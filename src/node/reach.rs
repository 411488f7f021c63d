//! Whether this host reaches the postgres of a peer whose lease it is asked to confirm: a
//! primary that its peers cannot reach is let lapse, to be failed over, even while its agent
//! still reaches theirs (a one-way cut). Pings the postgres of every peer that asked of late,
//! a quarter of its lease apart, with a ping that needs no credentials.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use super::Agent;
use crate::engine::postgres::ping::ping;

/// How often the peers' pings are looked at.
const CHECK: Duration = Duration::from_millis(20);

/// At most this many leaseholders are pinged at once: they are the peers that asked of late,
/// which a healthy cluster keeps to one.
const MOST_PINGED: usize = 16;

/// What this host knows of reaching one leaseholder's postgres.
#[derive(Debug)]
pub(super) struct Reach {
    /// When its agent last asked for a confirmation, and for how long a lease.
    asked: Instant,
    ttl: Duration,
    /// When the newest ping was sent, and the newest that was answered.
    sent: Option<Instant>,
    answered: Option<Instant>,
    /// The newest failed ping: when it was sent, and why it failed.
    failed: Option<(Instant, String)>,
}

/// Every leaseholder's postgres this host pings, by `host:port`.
pub(super) type Leaseholders = HashMap<String, Reach>;

impl Reach {
    /// The answer to "reached with a ping sent at `since` or later?", once there is one.
    fn outcome(&self, since: Instant) -> Option<Result<(), String>> {
        if self.answered.is_some_and(|at| at >= since) {
            return Some(Ok(()));
        }
        match &self.failed {
            // Only when no later ping is still on its way.
            Some((at, error)) if *at >= since && self.sent <= Some(*at) => Some(Err(error.clone())),
            _ => None,
        }
    }
}

impl Agent {
    /// Whether this host reaches the postgres at `address`, of a peer holding a lease of
    /// `ttl`, with a ping sent within the last quarter of that lease. A ping sent then that is
    /// still on its way counts when it answers, within half a lease; if none was sent, one is
    /// now. So a leaseholder cut off from here is vouched for at most a quarter of a lease,
    /// and a ping's time on its way, after the cut.
    pub(super) async fn reaches(
        self: &Arc<Self>,
        address: &str,
        ttl: Duration,
    ) -> Result<(), String> {
        let asked = Instant::now();
        let since = asked.checked_sub(ttl / 4).unwrap_or(asked);
        let deadline = asked + ttl / 2;
        let ping_now = {
            let mut leaseholders = self.leaseholders.lock().expect("lock");
            if !leaseholders.contains_key(address) && leaseholders.len() >= MOST_PINGED {
                forget_the_longest_silent(&mut leaseholders);
            }
            let reach = leaseholders.entry(address.to_string()).or_insert(Reach {
                asked,
                ttl,
                sent: None,
                answered: None,
                failed: None,
            });
            reach.asked = asked;
            reach.ttl = ttl;
            let ping_now = reach.sent.is_none_or(|sent| sent < since);
            if ping_now {
                reach.sent = Some(asked);
            }
            ping_now
        };
        if ping_now {
            self.ping_leaseholder(address.to_string(), asked, deadline - asked);
        }
        loop {
            let outcome = self
                .leaseholders
                .lock()
                .expect("lock")
                .get(address)
                .and_then(|reach| reach.outcome(since));
            if let Some(outcome) = outcome {
                return outcome;
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "no ping sent since {}ms ago has answered",
                    (ttl / 4).as_millis()
                ));
            }
            tokio::time::sleep(CHECK).await;
        }
    }

    /// Ping the postgres at `address`, and record when a ping sent at `sent` answered.
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
                Err(error) => {
                    if reach.failed.as_ref().is_none_or(|(at, _)| *at < sent) {
                        reach.failed = Some((sent, error.to_string()));
                    }
                }
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

/// Keep a ping no older than a quarter of a lease for every leaseholder that asked within the
/// last two of its leases, so that a confirmation rarely waits for one; forget the others.
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
            // A loaded host answers late, not never: a whole lease for each.
            agent.ping_leaseholder(address, now, ttl);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::Reach;

    fn reach(sent: Option<Instant>, answered: Option<Instant>, failed: Option<Instant>) -> Reach {
        Reach {
            asked: Instant::now(),
            ttl: Duration::from_secs(1),
            sent,
            answered,
            failed: failed.map(|at| (at, "refused".to_string())),
        }
    }

    #[test]
    fn only_a_ping_sent_since_counts_and_a_failure_waits_for_later_pings() {
        let t0 = Instant::now();
        let [t1, t2, t3] = [1, 2, 3].map(|ms| t0 + Duration::from_millis(ms));
        // Answered before `since`: not yet an answer either way.
        assert_eq!(reach(Some(t1), Some(t1), None).outcome(t2), None);
        assert_eq!(reach(Some(t2), Some(t2), None).outcome(t2), Some(Ok(())));
        // A ping that failed is the answer only if none sent later is still on its way.
        assert_eq!(
            reach(Some(t2), None, Some(t2)).outcome(t1),
            Some(Err("refused".into()))
        );
        assert_eq!(reach(Some(t3), None, Some(t2)).outcome(t1), None);
        // An answer since outweighs a failure since.
        assert_eq!(
            reach(Some(t3), Some(t3), Some(t2)).outcome(t1),
            Some(Ok(()))
        );
        assert_eq!(reach(Some(t2), None, Some(t1)).outcome(t2), None);
    }
}
