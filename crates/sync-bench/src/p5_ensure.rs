//! P5: `ensure_partitions` moving `rows` rows out of the catch-all
//! `sync_activity_log_future` (into the new months 2026-03 … 2027-02 and a new
//! catch-all) vs `INSERT INTO plain SELECT * FROM sync_activity_log_future`,
//! where `plain` is a plain table with the same indexes (`LIKE … INCLUDING ALL`).
//!
//! Data (untimed): a template database holding 0024, 20 orgs and `rows` rows in
//! `future`, spread evenly over 2026-03-01 … 2027-06 (the last months stay in
//! the catch-all), then `VACUUM ANALYZE`. Before every timed part a fresh copy of
//! the template is made (`CREATE DATABASE … TEMPLATE … STRATEGY FILE_COPY`,
//! which checkpoints first), so both sides start from the same files; the
//! baseline's empty `plain` table is created before its timer starts.

use std::cell::RefCell;

use sync_migrations::partitions::{ensure_partitions, PartitionOptions};
use tokio_postgres::Client;

use crate::data::{create_tenants, exec};
use crate::measure::{alternate, Row, Side, Target};
use crate::BenchDb;

/// The template database of P5 and P6 (see the module docs), named after `tag`.
pub(crate) async fn template(db: &BenchDb, tag: &str, rows: u64) -> BenchDb {
    let template = db.sibling(tag).await;
    {
        let mut c = template.connect().await;
        sync_migrations::apply(&mut c, &sync_migrations::MigrateOptions::default())
            .await
            .expect("apply migrations");
        create_tenants(&c, "p5", 20).await;
        exec(
            &c,
            &format!(
                "SET session_replication_role = replica; \
                 INSERT INTO sync_activity_log (org_id, sync_id, entity_type, action, status, \
                        record_count, user_id, created_at) \
                 SELECT t.org_id, 'sync-' || (i % 5000), \
                        (enum_range(NULL::sync_entity_type))[1 + i % 16], 'record_update', \
                        CASE WHEN i % 50 = 0 THEN 'failed' ELSE 'completed' END::sync_status_type, \
                        i % 100, CASE WHEN i % 3 = 0 THEN t.user_id END, \
                        '2026-03-01 00:00+00'::timestamptz + (i::float8 / {rows}) * interval '487 days' \
                   FROM generate_series(0, {rows} - 1) i \
                   JOIN (SELECT u.org_id, u.id AS user_id, \
                                row_number() OVER (ORDER BY u.org_id) - 1 AS k \
                           FROM auth.users_extended u) t ON t.k = i % 20; \
                 RESET session_replication_role"
            ),
        )
        .await;
        exec(&c, "VACUUM ANALYZE sync_activity_log").await;
        let n: i64 = c
            .query_one("SELECT count(*) FROM sync_activity_log_future", &[])
            .await
            .expect("count")
            .get(0);
        assert_eq!(n as u64, rows);
    }
    template
}

pub(crate) async fn run(db: &BenchDb, reps: usize, rows: u64) -> Row {
    let template = template(db, "p5tpl", rows).await;
    let copy: RefCell<Option<(BenchDb, Client)>> = RefCell::new(None);
    let copy = &copy;
    let tpl = &template;
    let (library_ms, baseline_ms) = alternate(
        reps,
        move |side: Side| async move {
            let old = copy.borrow_mut().take();
            if let Some((d, c)) = old {
                drop(c);
                d.drop_database().await;
            }
            let d = tpl.copy("p5").await;
            let c = d.connect().await;
            if side == Side::Baseline {
                exec(
                    &c,
                    "CREATE TABLE plain (LIKE sync_activity_log INCLUDING ALL); ANALYZE plain",
                )
                .await;
            }
            *copy.borrow_mut() = Some((d, c));
        },
        move || async move {
            let (d, mut c) = copy.borrow_mut().take().expect("copy");
            let report = ensure_partitions(&mut c, 3, &PartitionOptions::default(), |_| {})
                .await
                .expect("ensure_partitions");
            assert_eq!(report.rows_moved, rows);
            *copy.borrow_mut() = Some((d, c));
        },
        move || async move {
            let (d, c) = copy.borrow_mut().take().expect("copy");
            let n = c
                .execute(
                    "INSERT INTO plain SELECT * FROM sync_activity_log_future",
                    &[],
                )
                .await
                .expect("insert select");
            assert_eq!(n, rows);
            *copy.borrow_mut() = Some((d, c));
        },
    )
    .await;
    let last = copy.borrow_mut().take();
    if let Some((d, c)) = last {
        drop(c);
        d.drop_database().await;
    }
    template.drop_database().await;
    Row {
        id: "P5",
        what: format!(
            "ensure_partitions moving {rows} rows out of future vs INSERT … SELECT of them into \
             a plain table with the same indexes (ms per run)"
        ),
        library_ms,
        baseline_ms,
        target: Target {
            max_ratio: 1.5,
            max_library_ms: None,
        },
    }
}
