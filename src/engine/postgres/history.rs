//! Timeline history: which branch a member's data is on and where each branch forked from its
//! parent, read from a timeline's `.history` file; and whether a member has diverged from the
//! primary's history. Pure.

use std::fmt;

use super::Lsn;

/// Most lines read from a history file: one per promotion the data set has seen.
const MAX_SWITCHES: usize = 10_000;

/// One line of a `.history` file: timeline `parent` ended at `switch`, where its child began.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TimelineSwitch {
    pub parent: u32,
    pub switch: Lsn,
}

/// Parse `NNNNNNNN.history`: lines of `parent-timeline <tab> switch-LSN <tab> reason`, blank
/// lines and `#` comments allowed.
pub fn parse(text: &str) -> Result<Vec<TimelineSwitch>, String> {
    let mut switches = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if switches.len() == MAX_SWITCHES {
            return Err(format!("more than {MAX_SWITCHES} timeline switches"));
        }
        let mut fields = line.split_whitespace();
        let bad = || format!("line {}: not `timeline LSN reason`", number + 1);
        let parent: u32 = fields.next().and_then(|f| f.parse().ok()).ok_or_else(bad)?;
        let switch: Lsn = fields.next().and_then(|f| f.parse().ok()).ok_or_else(bad)?;
        if switches
            .last()
            .is_some_and(|last: &TimelineSwitch| last.parent >= parent || last.switch > switch)
        {
            return Err(format!("line {}: timelines out of order", number + 1));
        }
        switches.push(TimelineSwitch { parent, switch });
    }
    Ok(switches)
}

/// Why a member's data cannot simply stream on from the primary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Divergence {
    /// Its timeline is not in the primary's history: another branch altogether.
    OtherBranch { timeline: u32 },
    /// It is on an ancestor timeline, but holds WAL past the point where the primary's history
    /// left that timeline: the primary never had those changes.
    PastFork {
        timeline: u32,
        fork: Lsn,
        holds: Lsn,
    },
}

impl fmt::Display for Divergence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Divergence::OtherBranch { timeline } => {
                write!(f, "its timeline {timeline} is not in the primary's history")
            }
            Divergence::PastFork {
                timeline,
                fork,
                holds,
            } => write!(
                f,
                "it holds WAL to {holds} on timeline {timeline}, past where the primary left that timeline at {fork}"
            ),
        }
    }
}

/// Whether data at `position` on `timeline` lies on the primary's history: the primary is on
/// `primary_timeline`, reached through `history` (its `.history` file).
pub fn divergence(
    timeline: u32,
    position: Lsn,
    primary_timeline: u32,
    history: &[TimelineSwitch],
) -> Option<Divergence> {
    if timeline == primary_timeline {
        return None;
    }
    match history.iter().find(|s| s.parent == timeline) {
        None => Some(Divergence::OtherBranch { timeline }),
        Some(s) if position > s.switch => Some(Divergence::PastFork {
            timeline,
            fork: s.switch,
            holds: position,
        }),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lsn(s: &str) -> Lsn {
        s.parse().unwrap()
    }

    #[test]
    fn history_files_are_read_as_postgres_writes_them() {
        let text = "1\t0/3000158\tno recovery target specified\n\n2\t0/5000060\tno recovery target specified\n";
        assert_eq!(
            parse(text).unwrap(),
            [
                TimelineSwitch {
                    parent: 1,
                    switch: lsn("0/3000158")
                },
                TimelineSwitch {
                    parent: 2,
                    switch: lsn("0/5000060")
                },
            ]
        );
        assert!(parse("x y").unwrap_err().contains("line 1"));
        assert!(
            parse("2\t0/2\tz\n1\t0/3\tz")
                .unwrap_err()
                .contains("out of order")
        );
        assert_eq!(parse("").unwrap(), []);
    }

    /// The primary is on timeline 3: 1 forked at 0/3000158, 2 at 0/5000060.
    #[test]
    fn divergence_is_decided_from_history_not_from_positions_alone() {
        let history = parse("1\t0/3000158\tx\n2\t0/5000060\tx\n").unwrap();
        let cases = [
            // (timeline, position, diverged?)
            (3, "9/0", None),
            (2, "0/5000060", None),
            (2, "0/4000000", None),
            (1, "0/3000158", None),
            (
                1,
                "0/3000160",
                Some(Divergence::PastFork {
                    timeline: 1,
                    fork: lsn("0/3000158"),
                    holds: lsn("0/3000160"),
                }),
            ),
            (
                2,
                "0/6000000",
                Some(Divergence::PastFork {
                    timeline: 2,
                    fork: lsn("0/5000060"),
                    holds: lsn("0/6000000"),
                }),
            ),
            // A timeline the primary never had, even one behind it in position.
            (4, "0/1", Some(Divergence::OtherBranch { timeline: 4 })),
        ];
        for (timeline, position, expected) in cases {
            assert_eq!(
                divergence(timeline, lsn(position), 3, &history),
                expected,
                "timeline {timeline} at {position}"
            );
        }
        assert!(
            Divergence::PastFork {
                timeline: 1,
                fork: lsn("0/3000158"),
                holds: lsn("0/3000160")
            }
            .to_string()
            .contains("past where the primary left that timeline at 0/3000158")
        );
    }
}
