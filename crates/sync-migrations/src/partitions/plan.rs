//! What `ensure` has to do, worked out from the current partitions (pure).

use time::OffsetDateTime;

use super::error::PartitionError;
use super::list::{PartitionInfo, PartitionKind};
use super::month::Month;

/// Name of the catch-all partition ensure creates.
pub const CATCH_ALL_NAME: &str = "sync_activity_log_future";

/// The changes one `ensure` makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Plan {
    /// Months to create, in order (may be empty when only the catch-all is missing).
    pub(crate) months: Vec<Month>,
    /// Where the new catch-all starts (the month after the last of `months`).
    pub(crate) catch_all_from: Month,
    /// The current catch-all partition, to be split and dropped.
    pub(crate) old_catch_all: Option<String>,
    /// Where the current catch-all starts.
    pub(crate) old_catch_all_from: Option<OffsetDateTime>,
    /// The partition whose owner, grants and FORCE RLS the new ones copy.
    pub(crate) reference: Option<String>,
}

/// The plan to have monthly partitions through `current + months_ahead` followed by
/// a catch-all, or `None` when that already holds.
///
/// Months start right after the last monthly partition; with none, at the
/// catch-all's lower bound (which must then be a month start); with neither, at
/// `current`. A partition that is neither a month nor the catch-all is refused.
pub(crate) fn plan(
    partitions: &[PartitionInfo],
    current: Month,
    months_ahead: u32,
) -> Result<Option<Plan>, PartitionError> {
    if let Some(p) = partitions.iter().find(|p| p.kind == PartitionKind::Other) {
        return Err(PartitionError::UnexpectedLayout {
            partition: p.name.clone(),
            bounds: p.bounds.clone(),
        });
    }
    let last_month = partitions
        .iter()
        .filter(|p| p.kind == PartitionKind::Month)
        .max_by_key(|p| p.month);
    let catch_all = partitions
        .iter()
        .find(|p| p.kind == PartitionKind::CatchAll);
    let start =
        match (last_month, catch_all) {
            (Some(m), _) => m.month.expect("monthly partition has a month").next(),
            (None, Some(c)) => c.from.and_then(Month::starting_at).ok_or_else(|| {
                PartitionError::UnexpectedLayout {
                    partition: c.name.clone(),
                    bounds: c.bounds.clone(),
                }
            })?,
            (None, None) => current,
        };
    let through = current.plus(months_ahead);
    if through.next() == through {
        // 9999-12 (or saturated): the catch-all could not start after it, and
        // stepping month by month would never pass it.
        return Err(PartitionError::InvalidMonth {
            input: format!("{current} + {months_ahead} months"),
        });
    }
    if catch_all.is_some() && start > through {
        return Ok(None);
    }
    let mut months = Vec::new();
    let mut m = start;
    while m <= through {
        months.push(m);
        m = m.next();
    }
    let catch_all_from = months.last().map_or(start, |m| m.next());
    Ok(Some(Plan {
        months,
        catch_all_from,
        old_catch_all: catch_all.map(|c| c.name.clone()),
        old_catch_all_from: catch_all.and_then(|c| c.from),
        reference: catch_all.or(last_month).map(|p| p.name.clone()),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn month_part(m: &str) -> PartitionInfo {
        let m: Month = m.parse().unwrap();
        PartitionInfo {
            name: m.partition_name(),
            kind: PartitionKind::Month,
            month: Some(m),
            from: Some(m.start()),
            to: Some(m.next().start()),
            bounds: String::new(),
            row_estimate: None,
            total_bytes: 0,
            rls_enabled: true,
        }
    }

    fn catch_all(m: &str) -> PartitionInfo {
        let m: Month = m.parse().unwrap();
        PartitionInfo {
            name: CATCH_ALL_NAME.into(),
            kind: PartitionKind::CatchAll,
            month: None,
            from: Some(m.start()),
            to: None,
            bounds: String::new(),
            row_estimate: None,
            total_bytes: 0,
            rls_enabled: true,
        }
    }

    #[test]
    fn migration_layout_gets_months_through_current_plus_n() {
        let parts = vec![
            month_part("2026-01"),
            month_part("2026-02"),
            catch_all("2026-03"),
        ];
        let p = plan(&parts, "2026-11".parse().unwrap(), 3)
            .unwrap()
            .unwrap();
        assert_eq!(p.months.first().unwrap().to_string(), "2026-03");
        assert_eq!(p.months.last().unwrap().to_string(), "2027-02");
        assert_eq!(p.months.len(), 12);
        assert_eq!(p.catch_all_from.to_string(), "2027-03");
        assert_eq!(p.old_catch_all.as_deref(), Some(CATCH_ALL_NAME));
    }

    #[test]
    fn nothing_to_do_when_far_enough_ahead() {
        let parts = vec![month_part("2027-02"), catch_all("2027-03")];
        assert_eq!(plan(&parts, "2026-11".parse().unwrap(), 3).unwrap(), None);
        // A smaller horizon never removes anything.
        assert_eq!(plan(&parts, "2026-11".parse().unwrap(), 0).unwrap(), None);
        // Without a catch-all, one is created even when the months are there.
        let p = plan(&parts[..1], "2026-11".parse().unwrap(), 3)
            .unwrap()
            .unwrap();
        assert!(p.months.is_empty());
        assert_eq!(p.catch_all_from.to_string(), "2027-03");
    }

    #[test]
    fn a_horizon_at_the_last_representable_month_is_refused_not_looped_on() {
        let parts = vec![catch_all("2026-03")];
        for (now, ahead) in [("9999-10", 3), ("9999-12", 0), ("9995-01", 120)] {
            assert!(
                matches!(
                    plan(&parts, now.parse().unwrap(), ahead),
                    Err(PartitionError::InvalidMonth { .. })
                ),
                "{now} + {ahead}"
            );
        }
        let p = plan(&[catch_all("9999-09")], "9999-09".parse().unwrap(), 2)
            .unwrap()
            .unwrap();
        assert_eq!(p.catch_all_from.to_string(), "9999-12");
    }

    #[test]
    fn other_partitions_are_refused() {
        let mut odd = catch_all("2026-03");
        odd.kind = PartitionKind::Other;
        assert!(matches!(
            plan(&[odd], "2026-11".parse().unwrap(), 3),
            Err(PartitionError::UnexpectedLayout { .. })
        ));
    }
}
