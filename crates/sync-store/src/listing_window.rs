//! The `created_at` windows an activity listing reads, newest first, so that
//! the planner prunes to a few partitions however many months the log holds.
//!
//! A listing wants the newest rows below a top (the cursor, `until`, or
//! nothing). Reading the whole log with `ORDER BY created_at DESC LIMIT n`
//! makes PostgreSQL plan (unnamed statements) or lock (generic plans) every
//! partition on each call, a cost that grows with every month. Instead the
//! listing reads disjoint windows, newest first, each a `created_at` range the
//! planner prunes on, and stops as soon as the page is full:
//!
//! 1. `[start of the month before the top's month, top]` — with no cursor and
//!    no `until`, also everything later (future-dated rows, the catch-all);
//! 2. the 2 months before that; 3. the 9 months before that (a year back in
//!    all); 4. everything older (the one read whose cost still grows with the
//!    partition count — only for orgs with no row in the last year).
//!
//! The windows cover `(-inf, top]` exactly once and in order, so the rows
//! collected are the same, in the same order, as one read of the whole range:
//! the keyset cursor's guarantees do not change. A `since` filter ends the
//! sequence at the window that reaches it.

use time::{Date, Month, OffsetDateTime, Time, UtcOffset};

/// Months each window after the first reaches further back (the first covers
/// the top's month and the one before it).
const STEPS: [u32; 2] = [2, 9];

/// One window: `created_at >= lo` (when `Some`) and `created_at < hi` (when `Some`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Window {
    pub(crate) lo: Option<OffsetDateTime>,
    pub(crate) hi: Option<OffsetDateTime>,
}

/// The windows for a listing whose rows lie at or below `top` (`None`: no
/// upper bound; `now` then stands for the top) and at or above `since`.
pub(crate) fn windows(
    top: Option<OffsetDateTime>,
    since: Option<OffsetDateTime>,
    now: OffsetDateTime,
) -> Vec<Window> {
    let anchor = top.unwrap_or(now);
    let mut out = Vec::with_capacity(STEPS.len() + 2);
    let mut hi: Option<OffsetDateTime> = None;
    let mut lo = month_start_minus(anchor, 1);
    for step in std::iter::once(0).chain(STEPS) {
        if step > 0 {
            lo = lo.and_then(|l| month_start_minus(l, step));
        }
        match (lo, since) {
            // Past `since` (or no representable bound): the last window.
            (None, _) => break,
            (Some(l), Some(s)) if l <= s => break,
            (Some(l), _) => {
                out.push(Window { lo: Some(l), hi });
                hi = Some(l);
            }
        }
    }
    out.push(Window { lo: None, hi });
    out
}

/// The first instant (UTC) of the month `n` months before the month of `t`;
/// `None` when that is before 0001-01 (PostgreSQL and `time` share that range).
fn month_start_minus(t: OffsetDateTime, n: u32) -> Option<OffsetDateTime> {
    let utc = t.checked_to_offset(UtcOffset::UTC)?;
    let index = i64::from(utc.year()) * 12 + i64::from(u8::from(utc.month()) - 1) - i64::from(n);
    let (year, month) = (index.div_euclid(12), index.rem_euclid(12) + 1);
    if year < 1 {
        return None;
    }
    let date = Date::from_calendar_date(
        i32::try_from(year).ok()?,
        Month::try_from(month as u8).ok()?,
        1,
    )
    .ok()?;
    Some(date.with_time(Time::MIDNIGHT).assume_utc())
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn windows_step_back_and_end_unbounded() {
        let now = datetime!(2026-11-15 12:00 UTC);
        let w = windows(None, None, now);
        assert_eq!(
            w,
            [
                Window {
                    lo: Some(datetime!(2026-10-01 0:00 UTC)),
                    hi: None
                },
                Window {
                    lo: Some(datetime!(2026-08-01 0:00 UTC)),
                    hi: Some(datetime!(2026-10-01 0:00 UTC))
                },
                Window {
                    lo: Some(datetime!(2025-11-01 0:00 UTC)),
                    hi: Some(datetime!(2026-08-01 0:00 UTC))
                },
                Window {
                    lo: None,
                    hi: Some(datetime!(2025-11-01 0:00 UTC))
                },
            ]
        );
        // The top decides, not the clock; other offsets count in UTC.
        let w = windows(Some(datetime!(2020-01-01 0:30 +01:00)), None, now);
        assert_eq!(w[0].lo, Some(datetime!(2019-11-01 0:00 UTC)));
        // `since` ends the sequence at the window that reaches it.
        let w = windows(None, Some(datetime!(2026-09-03 0:00 UTC)), now);
        assert_eq!(w.len(), 2);
        assert_eq!(
            w[1],
            Window {
                lo: None,
                hi: Some(datetime!(2026-10-01 0:00 UTC))
            }
        );
        // Near the start of the calendar: no bound below year 1.
        let w = windows(Some(datetime!(0001-02-10 0:00 UTC)), None, now);
        assert_eq!(
            w,
            [
                Window {
                    lo: Some(datetime!(0001-01-01 0:00 UTC)),
                    hi: None
                },
                Window {
                    lo: None,
                    hi: Some(datetime!(0001-01-01 0:00 UTC))
                }
            ]
        );
    }
}
