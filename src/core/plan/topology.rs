//! Planning the replication topology around the primary: fence stray masters, re-point replicas, rejoin diverged members, copy empty ones. Pure.

use super::{
    Action, Planner,
    candidate::{cluster_identity, foreign, observation, same_data_set},
    findings::reason,
    zones::Placement,
};
use crate::{
    api::Role,
    core::{
        history::Divergence,
        observed::{HostAccess, MemberObservation},
    },
};

impl Planner<'_> {
    /// Bring every member in line with the primary, in a safe order: first fence every other
    /// writable master, then make sure the primary is a writable master, then re-point.
    pub(super) fn converge_members(&mut self) {
        if self.hold {
            return;
        }
        let Some(primary) = self.primary.clone() else {
            return;
        };
        self.remember_identity(&primary);
        let members: Vec<String> = self
            .desired
            .spec
            .members
            .iter()
            .map(|m| m.name.clone())
            .collect();
        let others = || members.iter().filter(|m| **m != primary);

        let identity = cluster_identity(self.observed, &primary).map(str::to_string);
        for member in others() {
            let o = observation(self.observed, member);
            if o.is_writable_master() && same_data_set(o, identity.as_deref()) {
                self.push(
                    Action::Fence { member: member.clone() },
                    false,
                    format!("{member} is a writable master beside {primary}; fenced before it is demoted"),
                );
            }
        }
        self.assert_primary(&primary);
        for placement in self.layout(&primary) {
            if let Some(from) = &placement.upstream {
                self.repoint(&placement, from, &primary, identity.as_deref());
            }
        }
    }

    /// Clusters adopted before identities were recorded learn theirs from the primary.
    fn remember_identity(&mut self, primary: &str) {
        let o = observation(self.observed, primary);
        if self.journal.identity.is_none() && o.is_master() {
            self.journal.identity = o.identity.clone();
        }
    }

    /// The primary must be a writable master, unless an operation is still moving it there.
    fn assert_primary(&mut self, primary: &str) {
        if self.journal.operation.is_some()
            || self
                .actions
                .iter()
                .any(|a| matches!(&a.action, Action::Promote { member, .. } if member == primary))
        {
            return;
        }
        let o = observation(self.observed, primary);
        if !o.reachable {
            return;
        }
        match o.role {
            Some(Role::Replica) if self.desired.member(primary).is_some_and(|m| m.priority == 0) => self.block(
                reason::NO_CANDIDATE,
                format!("{primary} is the recorded primary but reports role replica, and its priority is now 0: set spec.primary to the member that should take over"),
            ),
            Some(Role::Replica) => {
                let epoch = self.journal.epoch + 1;
                self.push(
                    Action::Promote {
                        member: primary.to_string(),
                        epoch,
                    },
                    true,
                    format!("{primary} is the recorded primary but reports role replica (changed outside replicant); promoted again"),
                );
            }
            Some(Role::Master) if o.read_only == Some(true) => self.push(
                Action::Unfence {
                    member: primary.to_string(),
                },
                true,
                format!("{primary} is primary but was left fenced; accepting writes again"),
            ),
            Some(Role::Master) if o.guarded == Some(false) => self.push(
                Action::Unfence {
                    member: primary.to_string(),
                },
                false,
                format!("{primary} lacks the guard that makes a cut-off primary refuse writes; configuring it"),
            ),
            _ => {}
        }
    }

    /// How `o`'s data stands against the primary's history, when both are known. Data at
    /// position 0 holds nothing that could be lost.
    fn divergence(&self, primary: &str, branch: &str, position: u64) -> Option<Divergence> {
        if position == 0 {
            return None;
        }
        let probed = observation(self.observed, primary).history.as_ref();
        let recorded = self.journal.primary_history.as_ref();
        let history = match (probed, recorded) {
            // The engine may keep less history than it reported at promotion (or could not
            // read it this time): the journal's record of the same branch then knows more.
            (Some(p), Some(r)) if p.forks.is_empty() && p.branch == r.branch => r,
            (Some(p), _) => p,
            (None, Some(r)) => r,
            (None, None) => return None,
        };
        history.divergence(branch, position)
    }

    fn member_divergence(&self, primary: &str, o: &MemberObservation) -> Option<Divergence> {
        let branch = &o.history.as_ref()?.branch;
        self.divergence(primary, branch, o.durable?)
    }

    fn repoint(
        &mut self,
        placement: &Placement,
        from: &str,
        primary: &str,
        identity: Option<&str>,
    ) {
        let member = placement.member.as_str();
        let from = from.to_string();
        let o = observation(self.observed, member);
        if !same_data_set(o, identity) {
            return self.block(
                reason::FOREIGN_DATA,
                format!(
                    "{member} {}: replicant never copies over it. Empty its data directory to have it copied from {primary}, or remove it from spec.members",
                    foreign(o, identity)
                ),
            );
        }
        if observation(self.observed, &from)
            .copy_needed_by
            .iter()
            .any(|m| m == member)
        {
            return self.copy_again(member, &from);
        }
        if !o.reachable {
            return self.restore(member, &from, primary);
        }
        let diverged = self.member_divergence(primary, o);
        match o.role {
            Some(Role::Master) => match (diverged, &o.history) {
                (Some(d), _) => self.rejoin_diverged(member, &from, primary, &d.to_string()),
                (None, None) if o.durable != Some(0) => self.rejoin(
                    member,
                    &from,
                    format!("{member} is a master whose history the engine cannot tell; it rejoins {from}, discarding anything {primary} does not have"),
                ),
                (None, _) => self.push(
                    Action::Restart {
                        member: member.to_string(),
                        from: from.clone(),
                    },
                    false,
                    format!("{member} is a master holding nothing {primary} lacks; it restarts as a replica of {from}"),
                ),
            },
            Some(Role::Replica) if diverged.is_some() => {
                let why = diverged.map(|d| d.to_string()).unwrap_or_default();
                self.rejoin_diverged(member, &from, primary, &why)
            }
            Some(Role::Replica)
                if o.upstream.as_deref() != Some(from.as_str())
                    && !observation(self.observed, &from).reachable =>
            {
                self.note_progress(
                    reason::SYNCING,
                    format!("{member} is to replicate from {from}, which does not answer"),
                )
            }
            Some(Role::Replica) if o.upstream.as_deref() != Some(from.as_str()) => self.push(
                Action::Replicate {
                    member: member.to_string(),
                    from: from.clone(),
                },
                false,
                format!(
                    "{member} replicates from {}; it should follow {from}: {}",
                    o.upstream.as_deref().unwrap_or("nothing"),
                    placement.why
                ),
            ),
            Some(Role::Replica) if o.read_only == Some(false) => self.push(
                Action::Replicate {
                    member: member.to_string(),
                    from: from.clone(),
                },
                false,
                format!("{member} is a replica that accepts writes; those writes would be lost on resync"),
            ),
            Some(Role::Replica) if o.syncing || o.link_up == Some(false) => self.note_progress(
                reason::SYNCING,
                format!(
                    "{member} is {} from {from}",
                    if o.syncing { "loading a full copy" } else { "not yet streaming" }
                ),
            ),
            _ => {}
        }
    }

    /// `from` no longer keeps what `member` needs to catch up: a full copy replaces its data,
    /// once its host can take the order.
    fn copy_again(&mut self, member: &str, from: &str) {
        let host = &observation(self.observed, member).host;
        if let Some(busy) = host.agent().and_then(|h| h.busy.as_ref()) {
            return self.note_progress(
                reason::SYNCING,
                format!("{member}'s host is busy: {busy} under way"),
            );
        }
        if matches!(host, HostAccess::Agent(h) if !h.reachable) {
            return self.note_progress(
                reason::SYNCING,
                format!("{member} needs a full copy from {from}, and its host does not answer"),
            );
        }
        self.push(
            Action::Clone {
                member: member.to_string(),
                from: from.to_string(),
            },
            false,
            format!(
                "{member} can no longer catch up: {from} no longer keeps what it still needs; a full copy from {from} replaces its data"
            ),
        );
    }

    fn rejoin(&mut self, member: &str, from: &str, why: String) {
        // What the host reports, not what a message says, decides a copy over a rewind.
        let unrewindable = observation(self.observed, member)
            .host
            .agent()
            .is_some_and(|host| host.rewindable == Some(false));
        if unrewindable {
            return self.push(
                Action::Clone {
                    member: member.to_string(),
                    from: from.to_string(),
                },
                false,
                format!(
                    "{why}; a rewind cannot bring it back (its data ran without wal_log_hints or data checksums), so a full copy from {from} replaces its data"
                ),
            );
        }
        self.push(
            Action::Rejoin {
                member: member.to_string(),
                from: from.to_string(),
            },
            false,
            why,
        );
    }

    fn rejoin_diverged(&mut self, member: &str, from: &str, primary: &str, why: &str) {
        self.rejoin(
            member,
            from,
            format!(
                "{member} has diverged from {primary}: {why}. Those changes exist nowhere else; they are discarded and {member} rejoins {from}"
            ),
        );
    }

    /// A member whose server is down but whose host answers: copy it, rejoin it or restart
    /// it as a replica, as its data allows.
    fn restore(&mut self, member: &str, from: &str, primary: &str) {
        let o = observation(self.observed, member);
        let Some(host) = o.host.agent() else {
            return;
        };
        if let Some(busy) = &host.busy {
            return self.note_progress(
                reason::SYNCING,
                format!("{member}'s host is busy: {busy} under way"),
            );
        }
        if host.running {
            return self.note_progress(
                reason::SYNCING,
                format!("{member} is starting or not yet accepting connections"),
            );
        }
        if !observation(self.observed, from).reachable {
            // Nothing can be copied, rewound or followed from a member that does not answer.
            // A replica's data started as it is accepts no writes, and its position then
            // counts in the choice of a new primary.
            if host.replica && !host.empty {
                return self.push(
                    Action::Start {
                        member: member.to_string(),
                    },
                    false,
                    format!("{member} is a stopped replica and {from} does not answer: it starts as it is, so that what it holds counts when a new primary is chosen"),
                );
            }
            return self.note_progress(
                reason::SYNCING,
                format!("{member} is stopped; it rejoins once {from} answers"),
            );
        }
        if host.empty {
            return self.push(
                Action::Clone {
                    member: member.to_string(),
                    from: from.to_string(),
                },
                false,
                format!("{member} holds no data; it is copied from {from}"),
            );
        }
        let on_history = match (&host.branch, host.position) {
            (Some(branch), Some(position)) if host.stopped_cleanly => {
                match self.divergence(primary, branch, position) {
                    Some(d) => return self.rejoin_diverged(member, from, primary, &d.to_string()),
                    None => true,
                }
            }
            _ => false,
        };
        if on_history {
            self.push(
                Action::Restart {
                    member: member.to_string(),
                    from: from.to_string(),
                },
                false,
                format!("{member} is stopped with data on {primary}'s history; it starts as a replica of {from}"),
            );
        } else {
            self.rejoin(
                member,
                from,
                format!(
                    "{member} is stopped without a clean shutdown: it may hold changes past where {primary} took over, so it is rewound onto {primary}'s history (copied if that fails) and rejoins {from}"
                ),
            );
        }
    }
}
