//! Condition types, reasons and the findings the planner reports; strings people read live here.

use serde::{Deserialize, Serialize};

/// kstatus: the cluster is as desired.
pub const READY: &str = "Ready";
/// kstatus: the controller is working towards the desired state.
pub const RECONCILING: &str = "Reconciling";
/// kstatus: the controller cannot progress without a person.
pub const STALLED: &str = "Stalled";
/// A failover or switchover is wanted but refused; the message says why and what to do.
pub const PROMOTION_BLOCKED: &str = "PromotionBlocked";
/// `spec.primary` names a member other than the current primary after a failover.
pub const PRIMARY_MISMATCH: &str = "PrimaryMismatch";
/// `spec.suspend` is set.
pub const SUSPENDED: &str = "Suspended";

pub mod reason {
    pub const READY: &str = "Ready";
    pub const CONVERGING: &str = "Converging";
    pub const FAILOVER: &str = "FailoverInProgress";
    pub const SWITCHOVER: &str = "SwitchoverInProgress";
    pub const MASTER_UNREACHABLE: &str = "MasterUnreachable";
    pub const MEMBERS_UNAVAILABLE: &str = "MembersUnavailable";
    pub const WAITING: &str = "WaitingForMembers";
    pub const SYNCING: &str = "ReplicasSyncing";
    pub const NO_CANDIDATE: &str = "NoCandidate";
    pub const COOLDOWN: &str = "CooldownActive";
    pub const MANUAL_MODE: &str = "ManualMode";
    /// The controller lost the primary, but other members' hosts still reach it.
    pub const REACHED_BY_PEERS: &str = "PrimaryReachedByPeers";
    pub const SWITCHOVER_BLOCKED: &str = "SwitchoverBlocked";
    pub const SWITCHOVER_ABORTED: &str = "SwitchoverAborted";
    pub const ADOPTION_REFUSED: &str = "AdoptionRefused";
    /// A member holds another data set; it is left alone.
    pub const FOREIGN_DATA: &str = "ForeignData";
    /// A host operation is needed on a member that has no node agent.
    pub const HOST_OPERATION_NEEDED: &str = "HostOperationNeeded";
    pub const SPEC_OUT_OF_DATE: &str = "SpecOutOfDate";
    pub const SPEC_MATCHES: &str = "SpecMatches";
    pub const NOT_BLOCKED: &str = "NotBlocked";
    pub const SUSPENDED: &str = "Suspended";
    pub const IDLE: &str = "Idle";
}

/// One condition as the planner sees it; the status stage adds timestamps.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: bool,
    pub reason: String,
    pub message: String,
}

impl Finding {
    pub fn new(type_: &str, status: bool, reason: &str, message: impl Into<String>) -> Self {
        Self {
            type_: type_.to_string(),
            status,
            reason: reason.to_string(),
            message: message.into(),
        }
    }
}

/// A refusal to act that a person must resolve.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blocker {
    pub reason: &'static str,
    pub message: String,
}

/// Renders a duration for people: "1.2s", "350ms", "2m5s".
pub fn human_duration(d: std::time::Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        let tenths = (ms % 1000) / 100;
        if tenths == 0 {
            format!("{}s", ms / 1000)
        } else {
            format!("{}.{}s", ms / 1000, tenths)
        }
    } else if ms < 3_600_000 {
        let secs = d.as_secs();
        match (secs / 60, secs % 60) {
            (m, 0) => format!("{m}m"),
            (m, s) => format!("{m}m{s}s"),
        }
    } else if ms < 86_400_000 {
        let mins = d.as_secs() / 60;
        match (mins / 60, mins % 60) {
            (h, 0) => format!("{h}h"),
            (h, m) => format!("{h}h{m}m"),
        }
    } else {
        let hours = d.as_secs() / 3600;
        match (hours / 24, hours % 24) {
            (days, 0) => format!("{days}d"),
            (days, h) => format!("{days}d{h}h"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::human_duration;

    #[test]
    fn durations_read_naturally() {
        assert_eq!(human_duration(Duration::from_millis(350)), "350ms");
        assert_eq!(human_duration(Duration::from_millis(1200)), "1.2s");
        assert_eq!(human_duration(Duration::from_secs(40)), "40s");
        assert_eq!(human_duration(Duration::from_secs(125)), "2m5s");
        assert_eq!(human_duration(Duration::from_secs(60)), "1m");
        assert_eq!(human_duration(Duration::from_secs(2 * 3600 + 120)), "2h2m");
        assert_eq!(
            human_duration(Duration::from_secs(3 * 86400 + 3600)),
            "3d1h"
        );
    }
}
