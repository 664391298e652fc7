//! Shared seeding and checks for the partition tests.
#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use sync_tests::connect;
use tokio_postgres::{Client, Config};
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

/// Copies the log into `shadow` (plain table, same columns).
pub async fn make_shadow(c: &Client) {
    c.batch_execute("CREATE TABLE shadow AS SELECT * FROM sync_activity_log")
        .await
        .unwrap();
}

/// (count, md5 of every row's text in key order) of `table`.
pub async fn checksum(c: &Client, table: &str) -> (i64, String) {
    let r = c
        .query_one(
            &format!(
                "SELECT count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY t.id, t.created_at), '')) \
                   FROM {table} t"
            ),
            &[],
        )
        .await
        .unwrap();
    (r.get(0), r.get(1))
}

pub async fn assert_same_as_shadow(c: &Client, what: &str) {
    let log = checksum(c, "sync_activity_log").await;
    let shadow = checksum(c, "shadow").await;
    assert_eq!(log, shadow, "{what}: log and shadow differ");
}

pub async fn no_working_objects(c: &Client) {
    let left: i64 = c
        .query_one(
            "SELECT count(*) FROM pg_class WHERE relname LIKE 'sync_activity_log_split%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0, "working tables of the split are gone");
}

/// Writers until `stop`: each statement changes the log and the shadow in one
/// transaction. Kinds: inserts into the current month, a moved month, an old
/// month and beyond the horizon; updates; deletes; a created_at change that
/// moves a row between months. Returns the number of statements; any error
/// is returned (a writer must never fail).
pub fn spawn_writers(
    config: &Config,
    org: uuid::Uuid,
    n: usize,
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
) -> Vec<tokio::task::JoinHandle<Result<u64, String>>> {
    (0..n)
        .map(|k| {
            let config = config.clone();
            let stop = stop.clone();
            let done = done.clone();
            tokio::spawn(async move {
                let c = connect(&config).await;
                let mut i: u64 = 0;
                while !stop.load(Ordering::Relaxed) {
                    let sql = match (i + k as u64) % 8 {
                        0 | 1 => {
                            let at = ["2026-11-20 09:30+00", "2026-05-15 12:00+00", "2026-01-10 08:00+00", "2027-09-01 00:00+00"]
                                [(i as usize / 2) % 4];
                            format!(
                                "WITH r AS (INSERT INTO sync_activity_log (org_id, action, status, record_count, created_at) \
                                 VALUES ('{org}', 'sync_progress', 'in_progress', {i}, '{at}') RETURNING *) \
                                 INSERT INTO shadow SELECT * FROM r"
                            )
                        }
                        2 | 3 => "WITH v AS (SELECT id, created_at FROM shadow WHERE created_at >= '2026-03-01' \
                                   ORDER BY md5(id::text || random()::text) LIMIT 1), \
                                 u AS (UPDATE sync_activity_log l SET record_count = l.record_count + 1 \
                                   FROM v WHERE l.id = v.id AND l.created_at = v.created_at RETURNING l.*) \
                                 UPDATE shadow s SET record_count = u.record_count FROM u \
                                  WHERE s.id = u.id AND s.created_at = u.created_at"
                            .to_owned(),
                        4 => "WITH v AS (SELECT id, created_at FROM shadow WHERE created_at >= '2026-03-01' \
                                   ORDER BY md5(id::text || random()::text) LIMIT 1), \
                                 d AS (DELETE FROM sync_activity_log l USING v \
                                   WHERE l.id = v.id AND l.created_at = v.created_at RETURNING l.id, l.created_at) \
                                 DELETE FROM shadow s USING d WHERE s.id = d.id AND s.created_at = d.created_at"
                            .to_owned(),
                        5 => "WITH v AS (SELECT id, created_at FROM shadow WHERE created_at >= '2026-03-01' \
                                   ORDER BY md5(id::text || random()::text) LIMIT 1), \
                                 u AS (UPDATE sync_activity_log l SET created_at = l.created_at + interval '20 days' \
                                   FROM v WHERE l.id = v.id AND l.created_at = v.created_at \
                                   RETURNING l.id, l.created_at, v.created_at AS was) \
                                 UPDATE shadow s SET created_at = u.created_at FROM u \
                                  WHERE s.id = u.id AND s.created_at = u.was"
                            .to_owned(),
                        _ => format!(
                            "WITH r AS (INSERT INTO sync_activity_log (org_id, action, status, created_at) \
                             VALUES ('{org}', 'record_create', 'completed', now()) RETURNING *) \
                             INSERT INTO shadow SELECT * FROM r"
                        ),
                    };
                    c.batch_execute(&format!("BEGIN; {sql}; COMMIT"))
                        .await
                        .map_err(|e| format!("writer {k} statement {i}: {e:?}"))?;
                    i += 1;
                    done.fetch_add(1, Ordering::Relaxed);
                }
                Ok(i)
            })
        })
        .collect()
}

pub async fn stop_writers(
    stop: &AtomicBool,
    writers: Vec<tokio::task::JoinHandle<Result<u64, String>>>,
) -> u64 {
    stop.store(true, Ordering::Relaxed);
    let mut n = 0;
    for w in writers {
        n += w.await.unwrap().expect("no writer saw an error");
    }
    n
}
