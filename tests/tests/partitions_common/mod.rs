//! Shared seeding and checks for the partition tests.
#![allow(dead_code)]

use tokio_postgres::Client;
use uuid::Uuid;

/// Two orgs with one user each.
pub struct Tenants {
    pub org_a: Uuid,
    pub org_b: Uuid,
    pub user_a: Uuid,
    pub user_b: Uuid,
}

pub async fn tenants(c: &Client) -> Tenants {
    let t = Tenants {
        org_a: Uuid::new_v4(),
        org_b: Uuid::new_v4(),
        user_a: Uuid::new_v4(),
        user_b: Uuid::new_v4(),
    };
    c.execute(
        "INSERT INTO organization (id, name) VALUES ($1, 'a'), ($2, 'b')",
        &[&t.org_a, &t.org_b],
    )
    .await
    .unwrap();
    c.execute(
        "INSERT INTO auth.users_extended (id, org_id) VALUES ($1, $2), ($3, $4)",
        &[&t.user_a, &t.org_a, &t.user_b, &t.org_b],
    )
    .await
    .unwrap();
    t
}

/// Rows in every month from `from` to `to` (inclusive, 'YYYY-MM-01'), `per_month`
/// rows each plus one exactly at the month's first instant and one at its last
/// microsecond; orgs alternate. Returns how many rows were inserted.
pub async fn seed_months(c: &Client, t: &Tenants, from: &str, to: &str, per_month: i32) -> u64 {
    c.execute(
        "INSERT INTO sync_activity_log (org_id, sync_id, entity_type, action, status, \
                                        record_count, user_id, created_at) \
         SELECT CASE WHEN g % 2 = 0 THEN $1::uuid ELSE $2::uuid END, 's' || g, 'product', \
                'record_update', CASE WHEN g % 7 = 0 THEN 'failed' ELSE 'completed' END::sync_status_type, \
                g, CASE WHEN g % 2 = 0 THEN $3::uuid END, \
                CASE g WHEN 0 THEN m \
                       WHEN 1 THEN m + interval '1 month' - interval '1 microsecond' \
                       ELSE m + (g % 27) * interval '1 day' + g * interval '1 minute' END \
           FROM generate_series($4::text::timestamptz, $5::text::timestamptz, interval '1 month') m, \
                generate_series(0, $6 + 1) g",
        &[
            &t.org_a,
            &t.org_b,
            &t.user_a,
            &format!("{from} 00:00:00+00"),
            &format!("{to} 00:00:00+00"),
            &per_month,
        ],
    )
    .await
    .unwrap()
}

/// (UTC month 'YYYY-MM', count) through the parent, in order.
pub async fn per_month_counts(c: &Client) -> Vec<(String, i64)> {
    c.query(
        "SELECT to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM') m, count(*) \
           FROM sync_activity_log GROUP BY 1 ORDER BY 1",
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect()
}

/// Every row's (id, created_at, org_id) through the parent, sorted.
pub async fn all_rows(c: &Client) -> Vec<(Uuid, time::OffsetDateTime, Uuid)> {
    c.query(
        "SELECT id, created_at, org_id FROM sync_activity_log ORDER BY id, created_at",
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2)))
    .collect()
}

/// Names of the attached partitions, in bound order.
pub async fn partition_names(c: &Client) -> Vec<String> {
    c.query(
        "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
          WHERE i.inhparent = 'sync_activity_log'::regclass ORDER BY c.relname",
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

/// Rows whose partition (tableoid) is not the one of their UTC month — or the
/// catch-all for months after `through` ('YYYY-MM').
pub async fn misplaced_rows(c: &Client, through: &str) -> i64 {
    c.query_one(
        "SELECT count(*) FROM sync_activity_log \
          WHERE tableoid::regclass::text <> \
                CASE WHEN to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM') <= $1 \
                     THEN 'sync_activity_log_' || to_char(created_at AT TIME ZONE 'UTC', 'YYYY_MM') \
                     ELSE 'sync_activity_log_future' END",
        &[&through],
    )
    .await
    .unwrap()
    .get(0)
}

pub async fn verify_ok(c: &Client) {
    let report = sync_migrations::verify(c).await.unwrap();
    assert!(report.is_ok(), "verify failed:\n{}", report.to_table());
}

/// The instant the partition tests treat as "now": 2026-11-15 12:00 UTC (so
/// the current month is 2026-11 whatever today's date is).
pub fn test_now() -> time::OffsetDateTime {
    at("2026-11")
}

/// Mid-month (the 15th, 12:00 UTC) of `month` ('YYYY-MM').
pub fn at(month: &str) -> time::OffsetDateTime {
    let m: sync_migrations::partitions::Month = month.parse().unwrap();
    m.start() + time::Duration::days(14) + time::Duration::hours(12)
}

/// The default partition options going by [`test_now`].
pub fn opts() -> sync_migrations::partitions::PartitionOptions {
    sync_migrations::partitions::PartitionOptions::default().with_now(test_now())
}
