//! Planning the replication topology around the primary: fence stray masters, re-point replicas, fix read-only flags. Pure.

use super::{Action, Planner, candidate::observation};
use crate::{api::human_bytes, observed::Role};

impl Planner<'_> {
    /// Bring every reachable member in line with the primary, in a safe order: first fence every
    /// other writable master, then make sure the primary is a writable master, then re-point.
    pub(super) fn converge_members(&mut self) {
        if self.hold {
            return;
        }
        let Some(primary) = self.primary.clone() else {
            return;
        };
        let members: Vec<String> = self
            .desired
            .spec
            .members
            .iter()
            .map(|m| m.name.clone())
            .collect();
        let others = || members.iter().filter(|m| **m != primary);

        for member in others() {
            let o = observation(self.observed, member);
            if o.is_writable_master() {
                self.push(
                    Action::Fence { member: member.clone() },
                    false,
                    format!("{member} is a writable master beside {primary}; fenced before it is demoted"),
                );
            }
        }
        self.assert_primary(&primary);
        for member in others() {
            self.repoint(member, &primary);
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
                super::findings::reason::NO_CANDIDATE,
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
                Action::SetReadOnly {
                    member: primary.to_string(),
                    read_only: false,
                },
                true,
                format!("{primary} is primary but was left fenced; accepting writes again"),
            ),
            Some(Role::Master) if o.guarded == Some(false) => self.push(
                Action::SetReadOnly {
                    member: primary.to_string(),
                    read_only: false,
                },
                false,
                format!("{primary} lacks the guard that makes a cut-off primary refuse writes; configuring it"),
            ),
            _ => {}
        }
    }

    fn repoint(&mut self, member: &str, primary: &str) {
        let o = observation(self.observed, member);
        if !o.reachable {
            return;
        }
        let from = self.upstream_for(member, primary);
        match o.role {
            Some(Role::Master) => {
                let diverged = self
                    .journal
                    .promoted_at_offset
                    .filter(|&at| o.offset.is_some_and(|offset| offset > at));
                match diverged {
                    Some(at) => {
                        let extra = o.offset.unwrap_or(at) - at;
                        self.push(
                            Action::FullResync {
                                member: member.to_string(),
                                from: from.clone(),
                            },
                            false,
                            format!(
                                "{member} holds {} of writes made after {primary} took over at offset {at}; \
                                 they exist nowhere else and are discarded by a full copy from {from}",
                                human_bytes(extra)
                            ),
                        );
                    }
                    None => self.push(
                        Action::Replicate {
                            member: member.to_string(),
                            from: from.clone(),
                        },
                        false,
                        format!("{member} is a master; it should replicate from {from}"),
                    ),
                }
            }
            Some(Role::Replica) if o.upstream.as_deref() != Some(from.as_str()) => self.push(
                Action::Replicate {
                    member: member.to_string(),
                    from: from.clone(),
                },
                false,
                format!(
                    "{member} replicates from {}; it should replicate from {from}",
                    o.upstream.as_deref().unwrap_or("nothing")
                ),
            ),
            Some(Role::Replica) if o.read_only == Some(false) => self.push(
                Action::SetReadOnly {
                    member: member.to_string(),
                    read_only: true,
                },
                false,
                format!("{member} is a replica that accepts writes; those writes would be lost on resync"),
            ),
            Some(Role::Replica) if o.syncing || o.link_up == Some(false) => self.note_progress(
                super::findings::reason::SYNCING,
                format!(
                    "{member} is {} from {from}",
                    if o.syncing { "loading a full copy" } else { "not yet streaming" }
                ),
            ),
            _ => {}
        }
    }

    /// The member `member` should replicate from: its spec upstream while that one is healthy,
    /// otherwise the primary. Acyclic because spec upstreams are, and every chain ends at the primary.
    fn upstream_for(&self, member: &str, primary: &str) -> String {
        let spec_upstream = self
            .desired
            .member(member)
            .and_then(|m| m.upstream.as_deref());
        match spec_upstream {
            Some(up) if up != member && up != primary => {
                let o = observation(self.observed, up);
                if o.reachable && !o.syncing {
                    up.to_string()
                } else {
                    primary.to_string()
                }
            }
            _ => primary.to_string(),
        }
    }
}
