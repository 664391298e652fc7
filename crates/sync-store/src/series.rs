//! A small time series of the activity log: per fixed-width bucket, how many
//! entries were logged, how many of them were errors, and how many items the
//! syncs that ended in the bucket processed (the dashboard's chart).
//!
//! Definitions (written down because the spec only says "throughput and errors"):
//! * `entries`: every activity row of the bucket;
//! * `errors`: rows with `status IN ('failed', 'completed_with_errors')`, the
//!   spec's MONITORING error formula, per bucket;
//! * `items`: `sum(record_count)` of the rows that **end a sync**
//!   (`sync_complete`, `sync_fail`, `sync_cancel`): the database writes the
//!   sync's `processed_count` there, so this is the items processed by the
//!   syncs that ended in the bucket (throughput), never counted twice however
//!   many checkpoint or record rows a worker logs.

use postgres_types::Type;
use time::OffsetDateTime;

use crate::error::{Error, Result};
use crate::sql::ScopedSql;
use crate::store::{col, Scope, ServiceScope, Store, TenantScope};
use crate::trace::{op_span, traced, RowCount};

/// Most buckets one series may have.
pub const MAX_SERIES_BUCKETS: i64 = 500;
/// Narrowest bucket, in seconds.
pub const MIN_BUCKET_SECONDS: i64 = 60;

/// One bucket of an [`ActivitySeries`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct SeriesPoint {
    /// Start of the bucket (a multiple of the bucket width since the Unix epoch).
    #[serde(with = "time::serde::rfc3339")]
    pub start: OffsetDateTime,
    /// Activity rows logged in the bucket.
    pub entries: i64,
    /// Of which `status IN ('failed', 'completed_with_errors')`.
    pub errors: i64,
    /// Items processed by the syncs that ended in the bucket.
    pub items: i64,
}

/// Buckets of `bucket_seconds` from the one holding `since` up to the one
/// holding `now()`, oldest first, empty buckets included (zeros).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct ActivitySeries {
    /// Width of every bucket, in seconds.
    pub bucket_seconds: i64,
    /// The buckets, oldest first.
    pub points: Vec<SeriesPoint>,
}

impl RowCount for ActivitySeries {
    fn row_count(&self) -> u64 {
        self.points.len() as u64
    }
}

/// `$2` = since, `$3` = bucket width in seconds. The bins are aligned on the
/// Unix epoch; the log is read through `(org_id, created_at)` from the first
/// bin's start. `{has_org}` on the outer query: a user without an org gets no
/// row (then `Store::rows` answers `Forbidden`).
static SERIES: ScopedSql = ScopedSql::new(
    "WITH p AS (SELECT make_interval(secs => $3::int8) AS w, \
                       timestamptz 'epoch' AS origin), \
          b AS (SELECT date_bin(p.w, $2::timestamptz, p.origin) AS lo, p.w, p.origin FROM p) \
     SELECT s.start, coalesce(a.entries, 0), coalesce(a.errors, 0), coalesce(a.items, 0) \
     FROM b CROSS JOIN LATERAL generate_series(b.lo, now(), b.w) AS s(start) \
     LEFT JOIN (SELECT date_bin(b.w, l.created_at, b.origin) AS start, \
                       count(*) AS entries, \
                       count(*) FILTER (WHERE l.status IN ('failed', 'completed_with_errors')) \
                         AS errors, \
                       (coalesce(sum(l.record_count) FILTER (WHERE l.action IN \
                         ('sync_complete', 'sync_fail', 'sync_cancel')), 0))::int8 AS items \
                FROM b, sync_activity_log l \
                WHERE l.org_id = {org} AND l.created_at >= b.lo \
                GROUP BY 1) a ON a.start = s.start \
     WHERE {has_org} \
     ORDER BY s.start",
);

async fn series(
    store: &Store,
    scope: Scope,
    since: OffsetDateTime,
    bucket_seconds: i64,
) -> Result<ActivitySeries> {
    const OP: &str = "activity_series";
    traced(op_span(OP, scope, None), async {
        check(since, bucket_seconds)?;
        let rows = store
            .rows(
                scope,
                OP,
                &SERIES,
                &[(&since, Type::TIMESTAMPTZ), (&bucket_seconds, Type::INT8)],
            )
            .await?;
        let points = rows
            .iter()
            .map(|row| {
                Ok(SeriesPoint {
                    start: col(OP, row, 0)?,
                    entries: col(OP, row, 1)?,
                    errors: col(OP, row, 2)?,
                    items: col(OP, row, 3)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(ActivitySeries {
            bucket_seconds,
            points,
        })
    })
    .await
}

/// Refuses a bucket narrower than [`MIN_BUCKET_SECONDS`] and a window of more
/// than [`MAX_SERIES_BUCKETS`] buckets up to now (judged by this host's clock,
/// with one bucket of slack for clock skew).
fn check(since: OffsetDateTime, bucket_seconds: i64) -> Result<()> {
    const OP: &str = "activity_series";
    if bucket_seconds < MIN_BUCKET_SECONDS {
        return Err(Error::invalid(
            OP,
            "bucket_seconds",
            format!("is {bucket_seconds}, must be at least {MIN_BUCKET_SECONDS}"),
        ));
    }
    let window = (OffsetDateTime::now_utc() - since).whole_seconds();
    if window < 0 || window / bucket_seconds >= MAX_SERIES_BUCKETS {
        return Err(Error::invalid(
            OP,
            "since",
            format!(
                "must be in the past and at most {} buckets of {bucket_seconds} s ago",
                MAX_SERIES_BUCKETS - 1
            ),
        ));
    }
    Ok(())
}

impl ServiceScope {
    /// The activity series of `org` since `since`, in buckets of
    /// `bucket_seconds` (see the module docs for what each count is).
    ///
    /// SQL: one statement: `generate_series` of the `date_bin` buckets from
    /// `since` to `now()`, left-joined with `count(*)`, `count(*) FILTER
    /// (WHERE status IN ('failed', 'completed_with_errors'))` and
    /// `sum(record_count) FILTER (WHERE action IN ('sync_complete', 'sync_fail',
    /// 'sync_cancel'))` of `sync_activity_log WHERE org_id = $1 AND created_at
    /// >= <first bucket>` grouped by bucket (index `(org_id, created_at)`).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when `bucket_seconds` < [`MIN_BUCKET_SECONDS`], or
    /// `since` is in the future or more than [`MAX_SERIES_BUCKETS`] buckets ago.
    pub async fn activity_series(
        &self,
        org: uuid::Uuid,
        since: OffsetDateTime,
        bucket_seconds: i64,
    ) -> Result<ActivitySeries> {
        series(
            &self.store,
            Scope::Service(Some(org)),
            since,
            bucket_seconds,
        )
        .await
    }
}

impl TenantScope {
    /// [`ServiceScope::activity_series`] for the user's org, through RLS.
    ///
    /// # Errors
    /// As [`ServiceScope::activity_series`]; [`Error::Forbidden`] for a user
    /// without an org.
    pub async fn activity_series(
        &self,
        since: OffsetDateTime,
        bucket_seconds: i64,
    ) -> Result<ActivitySeries> {
        series(
            &self.store,
            Scope::Tenant(self.user_id),
            since,
            bucket_seconds,
        )
        .await
    }
}
