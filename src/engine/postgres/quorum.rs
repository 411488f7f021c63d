//! The rules by which a primary keeps its lease through its peers, who outlast any controller:
//! how many agents must confirm a renewal, how many a promotion must first raise to its epoch,
//! when an agent confirms, and what it owes a promotion that raises it. Pure and generic over
//! the clock, so the agent and the protocol's model (`tests/lease_protocol.rs`) run the same
//! rules. Touches nothing.
//!
//! The argument: a renewal needs `renewal_quorum(n)` of the cluster's `n` agents, a promotion
//! first raises `raise_quorum(n)` of them, and the two add up to more than `n`, so every
//! renewal's quorum holds an agent the promotion raised. A raised agent confirms nothing older
//! than its new epoch, so no renewal completes after the raise; and it reports the end of every
//! confirmation it gave before, which the promotion waits out. Each renewal runs from the
//! moment the primary asked, which is earlier than any confirmation of it began, and each
//! confirmation is counted on the confirming agent's monotonic clock: the primary's lease ends
//! before the confirmations that carried it.

use std::collections::BTreeMap;

/// How many of a cluster's `agents` (the primary's own counted) must confirm a renewal: a
/// majority, and never fewer than two, so that no agent renews on its own word. `None` when
/// the cluster has too few agents for renewals through peers.
pub fn renewal_quorum(agents: usize) -> Option<usize> {
    (agents >= 2).then_some((agents / 2 + 1).max(2))
}

/// How many agents a promotion must raise to its epoch before it may promote: enough that
/// every renewal quorum holds one of them.
pub fn raise_quorum(agents: usize) -> usize {
    renewal_quorum(agents).map_or(0, |renewal| agents - renewal + 1)
}

/// Why an agent does not confirm a renewal.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error(
        "this agent has seen epoch {seen}, newer than the lease's {asked}: a promotion may be under way"
    )]
    NewerEpoch { seen: u64, asked: u64 },
    #[error("this agent holds a lease of its own: its member is a primary, or is being made one")]
    Leaseholder,
    #[error(
        "the member gave this lease up a moment ago (its postgres stopped): a renewal asked before is too late"
    )]
    GivenUp,
}

/// What one agent has promised: for each epoch and member, until when (on its own clock) it
/// confirmed that member's lease at that epoch.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Promises<T> {
    given: BTreeMap<(u64, String), T>,
    /// What a restarted agent owes for the promises it forgot: given below an epoch, lasting
    /// until a time.
    forgotten: Option<(u64, T)>,
    /// Leases given up, by epoch and member, and until when a confirmation of them is
    /// refused: one asked before it was given up may arrive after.
    given_up: BTreeMap<(u64, String), T>,
}

impl<T> Default for Promises<T> {
    fn default() -> Self {
        Self {
            given: BTreeMap::new(),
            forgotten: None,
            given_up: BTreeMap::new(),
        }
    }
}

impl<T: Ord + Copy> Promises<T> {
    /// A fresh start of an agent that has seen epoch `seen` and may, before it restarted, have
    /// confirmed leases lasting until `until` at most: it cannot know which it gave, so it
    /// owes them all to the next promotion.
    pub fn restarted(seen: u64, until: T) -> Self {
        // Kept below `seen`: they were given at `seen` or earlier, and a promotion to `seen`
        // itself may be the one they must not overlap. No release lifts them: whose they were
        // is forgotten too.
        Self {
            forgotten: Some((seen.saturating_sub(1), until)),
            ..Self::default()
        }
    }

    /// Confirm `member`'s lease at epoch `asked` until `until`. `seen` is the highest epoch
    /// this agent has seen (already raised to `asked` when that was newer); `holds_lease`
    /// whether it holds a lease of its own. A confirmation is a promise: it is recorded before
    /// it is given.
    pub fn confirm(
        &mut self,
        seen: u64,
        asked: u64,
        member: &str,
        holds_lease: bool,
        until: T,
    ) -> Result<(), Refusal> {
        if seen > asked {
            return Err(Refusal::NewerEpoch { seen, asked });
        }
        if holds_lease {
            return Err(Refusal::Leaseholder);
        }
        let key = (asked, member.to_string());
        if self.given_up.contains_key(&key) {
            return Err(Refusal::GivenUp);
        }
        let promised = self.given.entry(key).or_insert(until);
        *promised = (*promised).max(until);
        Ok(())
    }

    /// `member` gave up its lease at `epoch`: its postgres stopped, and the lease can never be
    /// extended again. What was promised to it guards nothing any more, and a confirmation of
    /// it arriving late is refused until `refuse_until` (a lease's length from now).
    pub fn release(&mut self, epoch: u64, member: &str, refuse_until: T) {
        let key = (epoch, member.to_string());
        self.given.remove(&key);
        self.given_up.insert(key, refuse_until);
    }

    /// The latest end of a confirmation given at an epoch older than `epoch`: a promotion to
    /// `epoch` waits until then.
    pub fn outstanding_before(&self, epoch: u64) -> Option<T> {
        let forgotten = self
            .forgotten
            .filter(|(below, _)| *below < epoch)
            .map(|(_, until)| until);
        self.given
            .range(..(epoch, String::new()))
            .map(|(_, until)| *until)
            .chain(forgotten)
            .max()
    }

    /// Forget promises that have ended by `now`.
    pub fn prune(&mut self, now: T) {
        self.given.retain(|_, until| *until > now);
        self.forgotten = self.forgotten.filter(|(_, until)| *until > now);
        self.given_up.retain(|_, until| *until > now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_and_raise_quorums_always_meet() {
        for agents in 0..=9 {
            match renewal_quorum(agents) {
                None => assert!(agents < 2),
                Some(renewal) => {
                    assert!(renewal >= 2 && renewal <= agents, "{agents}");
                    assert!(renewal > agents / 2, "a majority of {agents}");
                    assert!(renewal + raise_quorum(agents) > agents, "{agents}");
                }
            }
        }
        assert_eq!((renewal_quorum(3), raise_quorum(3)), (Some(2), 2));
        assert_eq!((renewal_quorum(2), raise_quorum(2)), (Some(2), 1));
        assert_eq!((renewal_quorum(5), raise_quorum(5)), (Some(3), 3));
        assert_eq!(raise_quorum(1), 0);
    }

    #[test]
    fn a_raised_agent_confirms_nothing_older_and_reports_what_it_gave() {
        let mut promises = Promises::default();
        promises.confirm(3, 3, "a", false, 10u32).unwrap();
        promises.confirm(3, 3, "a", false, 7).unwrap();
        assert_eq!(promises.outstanding_before(4), Some(10));
        assert_eq!(promises.outstanding_before(3), None, "not owed to itself");
        assert_eq!(
            promises.confirm(4, 3, "a", false, 12),
            Err(Refusal::NewerEpoch { seen: 4, asked: 3 })
        );
        assert_eq!(
            promises.confirm(4, 4, "a", true, 12),
            Err(Refusal::Leaseholder)
        );
        promises.prune(10);
        assert_eq!(promises.outstanding_before(4), None);
    }

    #[test]
    fn a_release_lifts_the_promises_to_that_member_at_that_epoch_alone() {
        let mut promises = Promises::default();
        promises.confirm(2, 2, "a", false, 10u32).unwrap();
        promises.confirm(3, 3, "a", false, 8).unwrap();
        promises.confirm(3, 3, "b", false, 9).unwrap();
        promises.release(3, "a", 11);
        assert_eq!(promises.outstanding_before(4), Some(10));
        promises.release(2, "a", 11);
        assert_eq!(promises.outstanding_before(4), Some(9), "b's stands");
        assert_eq!(
            promises.confirm(3, 3, "a", false, 12),
            Err(Refusal::GivenUp),
            "a renewal asked before the release, arriving after"
        );
        promises.prune(11);
        promises.confirm(3, 3, "a", false, 12).unwrap();
        assert_eq!(
            promises.outstanding_before(4),
            Some(12),
            "a lease granted anew"
        );
        let mut restarted = Promises::restarted(3, 12u32);
        restarted.release(2, "a", 11);
        assert_eq!(
            restarted.outstanding_before(3),
            Some(12),
            "a restarted agent forgot whose its promises were"
        );
    }

    #[test]
    fn a_restarted_agent_owes_its_unknown_promises_to_any_promotion() {
        let promises = Promises::restarted(5, 9u32);
        assert_eq!(promises.outstanding_before(5), Some(9));
        assert_eq!(promises.outstanding_before(6), Some(9));
        assert_eq!(Promises::restarted(0, 9u32).outstanding_before(1), Some(9));
    }
}
