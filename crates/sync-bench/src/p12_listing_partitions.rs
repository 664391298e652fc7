//! P12: newest 100 activity rows of one org in tenant scope, with 53 partitions
//! (library side) vs 17 partitions (baseline side), same data in the newest
//! months, same run — once with unnamed statements (P12u) and once with
//! statements cached per connection (P12c).
//!
//! Data (untimed): two databases, each migrated and `ensure`d (monthly
//! partitions through the current month + 3 and the catch-all: 17 partitions
//! when run in 2026-11). Both get `recent_rows` rows from 2025-11-01 to now
//! over 50 orgs; the second also gets 36 older monthly partitions (3 more years
//! of log, 2022-11 … 2025-10) holding rows at the same density. Then `VACUUM
//! ANALYZE`. Each repetition times `ops` listings cycling through the orgs on
//! each database (alternating which goes first); reported as ms per listing.

use sync_migrations::partitions::{ensure_partitions, PartitionOptions};
use sync_store::{ActivityFilter, StatementMode};

use crate::data::{create_tenants, exec, Tenant};
use crate::measure::{alternate, Row, Side, Target};
use crate::BenchDb;

const ORGS: i32 = 50;
const PAGE: u32 = 100;
/// Older months added to the second database.
const OLD_MONTHS: i32 = 36;

/// One database of the comparison: its store's pools per mode and its tenants.
struct Side1 {
    db: BenchDb,
    tenants: Vec<Tenant>,
    partitions: i64,
}

async fn prepare(db: BenchDb, recent_rows: u64, old_months: i32) -> Side1 {
    let mut c = db.connect().await;
    sync_migrations::apply(&mut c, &sync_migrations::MigrateOptions::default())
        .await
        .expect("apply migrations");
    ensure_partitions(&mut c, 3, &PartitionOptions::default(), |_| {})
        .await
        .expect("ensure_partitions");
    for k in 1..=old_months {
        exec(
            &c,
            &format!(
                "DO $$ DECLARE lo timestamptz := '2025-11-01 00:00+00'::timestamptz - {k} * interval '1 month'; \
                 BEGIN EXECUTE format('CREATE TABLE %I PARTITION OF sync_activity_log \
                   FOR VALUES FROM (%L) TO (%L)', \
                   'sync_activity_log_' || to_char(lo AT TIME ZONE 'UTC', 'YYYY_MM'), \
                   lo, lo + interval '1 month'); END $$"
            ),
        )
        .await;
    }
    let tenants = create_tenants(&c, "p12", ORGS).await;
    let insert = |rows: u64, from: &str, to: &str| {
        format!(
            "SET session_replication_role = replica; \
             INSERT INTO sync_activity_log (org_id, sync_id, entity_type, action, status, \
                    record_count, duration_seconds, error_message, user_id, created_at) \
             SELECT t.org_id, 'sync-' || (i % 5000), \
                    (enum_range(NULL::sync_entity_type))[1 + i % 16], \
                    (enum_range(NULL::sync_action))[1 + i % 14], \
                    CASE WHEN i % 50 = 0 THEN 'failed' ELSE 'completed' END::sync_status_type, \
                    i % 100, (i % 1000) / 8.0, NULL, \
                    CASE WHEN i % 3 = 0 THEN t.user_id END, \
                    {from} + (i::float8 / {rows}) * ({to} - {from}) \
               FROM generate_series(0, {rows} - 1) i \
               JOIN (SELECT u.org_id, u.id AS user_id, \
                            row_number() OVER (ORDER BY u.org_id) - 1 AS k \
                       FROM auth.users_extended u JOIN organization o ON o.id = u.org_id \
                      WHERE starts_with(o.name, 'p12 ')) t ON t.k = i % {ORGS}; \
             RESET session_replication_role"
        )
    };
    exec(
        &c,
        &insert(
            recent_rows,
            "'2025-11-01 00:00+00'::timestamptz",
            "now() - interval '1 second'",
        ),
    )
    .await;
    if old_months > 0 {
        // The same rows per month as the recent ones (13 months or so).
        let old_rows = recent_rows * old_months as u64 / 13;
        exec(
            &c,
            &insert(
                old_rows,
                &format!(
                    "('2025-11-01 00:00+00'::timestamptz - {old_months} * interval '1 month')"
                ),
                "'2025-11-01 00:00+00'::timestamptz",
            ),
        )
        .await;
    }
    exec(&c, "VACUUM ANALYZE sync_activity_log").await;
    let partitions: i64 = c
        .query_one(
            "SELECT count(*) FROM pg_inherits WHERE inhparent = 'sync_activity_log'::regclass",
            &[],
        )
        .await
        .expect("partitions")
        .get(0);
    Side1 {
        db,
        tenants,
        partitions,
    }
}

fn store(db: &BenchDb, mode: StatementMode) -> sync_store::Store {
    let pool = sync_connect::pool(&db.config, &db.tls, 4).expect("pool");
    sync_store::Store::with_statement_mode(pool, mode)
}

/// Both rows (P12u, P12c).
pub(crate) async fn run(db: &BenchDb, reps: usize, recent_rows: u64, ops: usize) -> Vec<Row> {
    let few = prepare(db.sibling("p12few").await, recent_rows, 0).await;
    let many = prepare(db.sibling("p12many").await, recent_rows, OLD_MONTHS).await;
    let mut out = Vec::new();
    for (id, mode, label) in [
        ("P12u", StatementMode::Unnamed, "unnamed statements"),
        (
            "P12c",
            StatementMode::CachedPerConnection,
            "statements cached per connection",
        ),
    ] {
        let (s_few, s_many) = (store(&few.db, mode), store(&many.db, mode));
        let filter = ActivityFilter::default();
        // Same answers on both (the newest months hold the same rows), and warm.
        for (a, b) in few.tenants.iter().zip(&many.tenants) {
            for _ in 0..6 {
                let pa = s_few
                    .tenant(a.user)
                    .list_activity(&filter, None, PAGE)
                    .await
                    .expect("list (few partitions)");
                let pb = s_many
                    .tenant(b.user)
                    .list_activity(&filter, None, PAGE)
                    .await
                    .expect("list (many partitions)");
                assert_eq!(pa.entries.len(), PAGE as usize);
                assert_eq!(pb.entries.len(), PAGE as usize);
            }
        }
        let (s_few, s_many, filter) = (&s_few, &s_many, &filter);
        let (t_few, t_many) = (&few.tenants, &many.tenants);
        let (library_ms, baseline_ms) = alternate(
            reps,
            |_side: Side| async {},
            move || async move {
                for i in 0..ops {
                    let t = t_many[i % t_many.len()];
                    let page = s_many
                        .tenant(t.user)
                        .list_activity(filter, None, PAGE)
                        .await
                        .expect("list (many partitions)");
                    assert_eq!(page.entries.len(), PAGE as usize);
                }
            },
            move || async move {
                for i in 0..ops {
                    let t = t_few[i % t_few.len()];
                    let page = s_few
                        .tenant(t.user)
                        .list_activity(filter, None, PAGE)
                        .await
                        .expect("list (few partitions)");
                    assert_eq!(page.entries.len(), PAGE as usize);
                }
            },
        )
        .await;
        let per = ops as f64;
        out.push(Row {
            id,
            what: format!(
                "newest {PAGE} activity rows of one org, tenant scope, {label}: {} partitions \
                 (library) vs {} partitions (baseline); {recent_rows} rows since 2025-11 over \
                 {ORGS} orgs, plus {OLD_MONTHS} older months at the same density on the \
                 library side (ms per listing; {ops} listings per repetition)",
                many.partitions, few.partitions
            ),
            library_ms: library_ms / per,
            baseline_ms: baseline_ms / per,
            target: Target {
                max_ratio: 1.2,
                max_library_ms: Some(1.0),
            },
        });
    }
    out
}
