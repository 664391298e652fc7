//! [`Month`]: one UTC calendar month, the unit of partitioning.

use std::fmt;
use std::str::FromStr;

use time::{Date, OffsetDateTime, Time, UtcOffset};

use super::error::PartitionError;

/// Prefix of every partition's name: `sync_activity_log_YYYY_MM`.
pub const PARTITION_PREFIX: &str = "sync_activity_log_";

/// One UTC calendar month, years 1000–9999 (so names and literals keep their width).
///
/// Parsed from and shown as `YYYY-MM`; ordered chronologically.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Month {
    year: i32,
    month: u8,
}

impl Month {
    /// The month `year`-`month` (1–12); [`PartitionError::InvalidMonth`] when out of range.
    pub fn new(year: i32, month: u8) -> Result<Month, PartitionError> {
        if (1000..=9999).contains(&year) && (1..=12).contains(&month) {
            Ok(Month { year, month })
        } else {
            Err(PartitionError::InvalidMonth {
                input: format!("{year:04}-{month:02}"),
            })
        }
    }

    /// The year.
    pub fn year(self) -> i32 {
        self.year
    }

    /// The month of the year, 1–12.
    pub fn month(self) -> u8 {
        self.month
    }

    /// The month after this one (saturating at 9999-12).
    pub fn next(self) -> Month {
        self.plus(1)
    }

    /// The month `n` months later (saturating at 9999-12).
    pub fn plus(self, n: u32) -> Month {
        let index = self.year as i64 * 12 + (self.month as i64 - 1) + n as i64;
        let index = index.min(9999 * 12 + 11);
        Month {
            year: (index / 12) as i32,
            month: (index % 12 + 1) as u8,
        }
    }

    /// The month `n` months earlier (saturating at 1000-01).
    pub fn minus(self, n: u32) -> Month {
        let index = self.year as i64 * 12 + (self.month as i64 - 1) - n as i64;
        let index = index.max(1000 * 12);
        Month {
            year: (index / 12) as i32,
            month: (index % 12 + 1) as u8,
        }
    }

    /// The name of this month's partition, `sync_activity_log_YYYY_MM`.
    pub fn partition_name(self) -> String {
        format!("{PARTITION_PREFIX}{:04}_{:02}", self.year, self.month)
    }

    /// The first instant of the month in UTC.
    pub fn start(self) -> OffsetDateTime {
        let month = time::Month::try_from(self.month).expect("validated month");
        Date::from_calendar_date(self.year, month, 1)
            .expect("validated date")
            .with_time(Time::MIDNIGHT)
            .assume_utc()
    }

    /// The first instant of the month as a SQL literal in the migration's style,
    /// `'2026-03-01 00:00:00+00'`.
    pub fn start_literal(self) -> String {
        format!("'{:04}-{:02}-01 00:00:00+00'", self.year, self.month)
    }

    /// The month starting exactly at `instant` (midnight UTC on the 1st), else `None`.
    pub fn starting_at(instant: OffsetDateTime) -> Option<Month> {
        let utc = instant.to_offset(UtcOffset::UTC);
        if utc.day() != 1 || utc.time() != Time::MIDNIGHT {
            return None;
        }
        Month::new(utc.year(), utc.month() as u8).ok()
    }

    /// The month containing `instant` (in UTC).
    pub fn containing(instant: OffsetDateTime) -> Result<Month, PartitionError> {
        let utc = instant.to_offset(UtcOffset::UTC);
        Month::new(utc.year(), utc.month() as u8)
    }
}

impl fmt::Display for Month {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

impl FromStr for Month {
    type Err = PartitionError;

    /// Parses `YYYY-MM` exactly (four digits, dash, two digits).
    fn from_str(s: &str) -> Result<Month, PartitionError> {
        let invalid = || PartitionError::InvalidMonth {
            input: s.to_owned(),
        };
        let b = s.as_bytes();
        if b.len() != 7
            || b[4] != b'-'
            || !b
                .iter()
                .enumerate()
                .all(|(i, c)| i == 4 || c.is_ascii_digit())
        {
            return Err(invalid());
        }
        let year: i32 = s[..4].parse().map_err(|_| invalid())?;
        let month: u8 = s[5..].parse().map_err(|_| invalid())?;
        Month::new(year, month).map_err(|_| invalid())
    }
}

impl serde::Serialize for Month {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_show_and_step() {
        let m: Month = "2026-11".parse().unwrap();
        assert_eq!(m.to_string(), "2026-11");
        assert_eq!(m.plus(3).to_string(), "2027-02");
        assert_eq!(m.minus(13).to_string(), "2025-10");
        assert_eq!(m.minus(11).to_string(), "2025-12");
        assert_eq!(m.minus(10).to_string(), "2026-01");
        assert_eq!(m.minus(0), m);
        assert_eq!(
            "1000-02".parse::<Month>().unwrap().minus(5).to_string(),
            "1000-01"
        );
        assert_eq!(m.next().partition_name(), "sync_activity_log_2026_12");
        assert_eq!(m.start_literal(), "'2026-11-01 00:00:00+00'");
        assert_eq!(Month::starting_at(m.start()), Some(m));
        assert_eq!(Month::starting_at(m.start() + time::Duration::SECOND), None);
        for bad in [
            "2026-13", "2026-00", "26-11", "2026/11", "2026-1", "0999-01", "2026-11x", "+026-11",
        ] {
            assert!(bad.parse::<Month>().is_err(), "{bad}");
        }
    }
}
