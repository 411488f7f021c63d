//! Branches of history: which branch a member's data is on, where earlier branches were left,
//! and whether data lies on a primary's history. Pure.

use serde::{Deserialize, Serialize};

use crate::api::Fork;

/// Which branch of history a member's data is on, and how that branch was reached.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct History {
    /// The branch the data is on now.
    pub branch: String,
    /// Where earlier branches were left, oldest first: the data holds each one up to its
    /// `at`, and nothing of it beyond.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub forks: Vec<Fork>,
}

/// Why a member's data cannot simply replicate on from a primary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Divergence {
    /// Its branch is not in the primary's history at all.
    OtherBranch { branch: String },
    /// It is on a branch the primary's history left at `fork`, and holds data to `holds`,
    /// past that point: changes the primary never had.
    PastFork {
        branch: String,
        fork: u64,
        holds: u64,
    },
}

impl std::fmt::Display for Divergence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Divergence::OtherBranch { branch } => {
                write!(f, "its branch {branch} is not in the primary's history")
            }
            Divergence::PastFork {
                branch,
                fork,
                holds,
            } => write!(
                f,
                "it holds {} on branch {branch} past where the primary's history left that branch at {fork}",
                crate::api::human_bytes(holds - fork)
            ),
        }
    }
}

impl History {
    /// Whether data at `position` on `branch` lies on this history.
    pub fn divergence(&self, branch: &str, position: u64) -> Option<Divergence> {
        if branch == self.branch {
            return None;
        }
        match self.forks.iter().rev().find(|f| f.branch == branch) {
            None => Some(Divergence::OtherBranch {
                branch: branch.to_string(),
            }),
            Some(f) if position > f.at => Some(Divergence::PastFork {
                branch: branch.to_string(),
                fork: f.at,
                holds: position,
            }),
            Some(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The primary is on branch "3": "1" was left at 100, "2" at 200.
    #[test]
    fn divergence_is_decided_from_history_not_from_positions_alone() {
        let history = History {
            branch: "3".into(),
            forks: vec![
                Fork {
                    branch: "1".into(),
                    at: 100,
                },
                Fork {
                    branch: "2".into(),
                    at: 200,
                },
            ],
        };
        assert_eq!(history.divergence("3", 9_999), None);
        assert_eq!(history.divergence("2", 200), None);
        assert_eq!(history.divergence("1", 50), None);
        assert_eq!(
            history.divergence("1", 101),
            Some(Divergence::PastFork {
                branch: "1".into(),
                fork: 100,
                holds: 101
            })
        );
        // Behind the primary in position, but on a branch it never had.
        assert_eq!(
            history.divergence("4", 1),
            Some(Divergence::OtherBranch { branch: "4".into() })
        );
    }
}
