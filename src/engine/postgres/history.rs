//! Timeline history: which branch a member's data is on and where each branch forked from its
//! parent, read from a timeline's `.history` file and named for the engine-neutral core. Pure.

use super::Lsn;
use crate::{api::Fork, core::history::History};

/// Most lines read from a history file: one per promotion the data set has seen.
const MAX_SWITCHES: usize = 10_000;

/// One line of a `.history` file: timeline `parent` ended at `switch`, where its child began.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TimelineSwitch {
    pub parent: u32,
    pub switch: Lsn,
}

/// Why a `.history` file could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HistoryError {
    #[error("more than {MAX_SWITCHES} timeline switches")]
    TooLong,
    #[error("line {0}: not `timeline LSN reason`")]
    Malformed(usize),
    #[error("line {0}: timelines out of order")]
    OutOfOrder(usize),
}

/// Parse `NNNNNNNN.history`: lines of `parent-timeline <tab> switch-LSN <tab> reason`, blank
/// lines and `#` comments allowed.
pub fn parse(text: &str) -> Result<Vec<TimelineSwitch>, HistoryError> {
    let mut switches = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if switches.len() == MAX_SWITCHES {
            return Err(HistoryError::TooLong);
        }
        let mut fields = line.split_whitespace();
        let bad = || HistoryError::Malformed(number + 1);
        let parent: u32 = fields.next().and_then(|f| f.parse().ok()).ok_or_else(bad)?;
        let switch: Lsn = fields.next().and_then(|f| f.parse().ok()).ok_or_else(bad)?;
        if switches
            .last()
            .is_some_and(|last: &TimelineSwitch| last.parent >= parent || last.switch > switch)
        {
            return Err(HistoryError::OutOfOrder(number + 1));
        }
        switches.push(TimelineSwitch { parent, switch });
    }
    Ok(switches)
}

/// Timeline IDs are not unique across a data set's life: two members promoted from the same
/// timeline at different points both start the next number (patroni#1251). A branch is
/// therefore named by its timeline and where it began, `2@0/3000158`; the first timeline is
/// plain `1`. `switches` is the `.history` file of `timeline`.
pub fn branches(timeline: u32, switches: &[TimelineSwitch]) -> History {
    let name = |timeline: u32, began: Option<Lsn>| match began {
        Some(at) => format!("{timeline}@{at}"),
        None => timeline.to_string(),
    };
    let mut forks = Vec::with_capacity(switches.len());
    let mut began = None;
    for switch in switches {
        forks.push(Fork {
            branch: name(switch.parent, began),
            at: switch.switch.0,
        });
        // The next timeline begins where this one was left.
        began = Some(switch.switch);
    }
    History {
        branch: name(timeline, began),
        forks,
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
        assert!(parse("x y").unwrap_err().to_string().contains("line 1"));
        assert!(
            parse("2\t0/2\tz\n1\t0/3\tz")
                .unwrap_err()
                .to_string()
                .contains("out of order")
        );
        assert_eq!(parse("").unwrap(), []);
    }

    /// The primary is on timeline 3: 1 was left at 0/3000158, 2 at 0/5000060.
    #[test]
    fn branches_are_named_by_timeline_and_where_they_began() {
        let history = branches(3, &parse("1\t0/3000158\tx\n2\t0/5000060\tx\n").unwrap());
        assert_eq!(history.branch, "3@0/5000060");
        assert_eq!(
            history.forks,
            [
                Fork {
                    branch: "1".into(),
                    at: lsn("0/3000158").0
                },
                Fork {
                    branch: "2@0/3000158".into(),
                    at: lsn("0/5000060").0
                },
            ]
        );
        // Timeline 2 begun elsewhere (another member promoted from timeline 1 at another
        // point) is another branch, though its number is the same.
        let other = branches(2, &parse("1\t0/3000200\tx\n").unwrap());
        assert_eq!(other.branch, "2@0/3000200");
        assert!(history.divergence(&other.branch, 0).is_some());
        assert!(
            history
                .divergence("2@0/3000158", lsn("0/5000060").0)
                .is_none()
        );
        assert!(history.divergence("1", lsn("0/3000160").0).is_some());
        assert_eq!(branches(1, &[]).branch, "1");
    }
}
