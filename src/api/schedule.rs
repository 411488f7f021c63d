//! Cron schedules as specs write them ("0 3 * * *", in UTC): parsed once, checked to fire at
//! all, and asked when they next fire.

use std::str::FromStr;

use jiff::{Timestamp, tz::TimeZone};

/// A parsed cron expression: five fields, or six with seconds first.
#[derive(Clone, Debug)]
pub struct Schedule(croner::Cron);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScheduleError {
    #[error("not a cron expression (minute hour day-of-month month day-of-week): {0}")]
    Syntax(String),
    #[error("never fires (no such date within the years searched)")]
    Never,
}

impl FromStr for Schedule {
    type Err = ScheduleError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let cron = croner::parser::CronParser::builder()
            .seconds(croner::parser::Seconds::Optional)
            .build()
            .parse(text)
            .map_err(|e| ScheduleError::Syntax(e.to_string()))?;
        let schedule = Schedule(cron);
        // A day that never comes ("0 0 31 2 *") is refused here, not found out later.
        schedule
            .next_after(Timestamp::UNIX_EPOCH)
            .ok_or(ScheduleError::Never)?;
        Ok(schedule)
    }
}

impl Schedule {
    /// The first time strictly after `after` that the schedule fires.
    pub fn next_after(&self, after: Timestamp) -> Option<Timestamp> {
        let zoned = after.to_zoned(TimeZone::UTC);
        self.0
            .find_next_occurrence(&zoned, false)
            .ok()
            .map(|z| z.timestamp())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    #[test]
    fn a_daily_schedule_fires_next_at_its_hour_in_utc() {
        let daily: Schedule = "0 3 * * *".parse().unwrap();
        assert_eq!(
            daily.next_after(at("2026-12-03T02:59:59Z")),
            Some(at("2026-12-03T03:00:00Z"))
        );
        assert_eq!(
            daily.next_after(at("2026-12-03T03:00:00Z")),
            Some(at("2026-12-04T03:00:00Z"))
        );
        let seconds: Schedule = "30 * * * * *".parse().unwrap();
        assert_eq!(
            seconds.next_after(at("2026-12-03T03:00:00Z")),
            Some(at("2026-12-03T03:00:30Z"))
        );
    }

    #[test]
    fn nonsense_and_days_that_never_come_are_refused() {
        assert!(matches!(
            "every day".parse::<Schedule>(),
            Err(ScheduleError::Syntax(_))
        ));
        assert!(matches!(
            "0 0 30 2 *".parse::<Schedule>(),
            Err(ScheduleError::Never)
        ));
    }
}
