//! P4: newest 100 activity rows of one org — `TenantScope::list_activity` (RLS,
//! `SET LOCAL ROLE sync_tenant` + claims, pipelined in one round trip) vs the same
//! listing in service scope (`ServiceScope::list_activity`).
//!
//! Data (untimed, set-based): monthly partitions through 2026-11 (made by
//! `ensure_partitions`), `rows` rows spread evenly over the 12 months
//! 2025-12 … 2026-11 and 50 orgs, then `VACUUM ANALYZE`. Each repetition times
//! `ops` listings cycling through the orgs; reported as ms per listing.

use sync_migrations::partitions::{ensure_partitions, PartitionOptions};
use sync_store::ActivityFilter;

use crate::data::{create_tenants, exec, store};
use crate::measure::{alternate, Row, Side, Target};
use crate::BenchDb;

const ORGS: i32 = 50;
const PAGE: u32 = 100;

pub(crate) async fn run(db: &BenchDb, reps: usize, rows: u64, ops: usize) -> Row {
    let mut c = db.connect().await;
    ensure_partitions(&mut c, 0, &PartitionOptions::default(), |_| {})
        .await
        .expect("ensure_partitions");
    let tenants = create_tenants(&c, "p4", ORGS).await;
    // Foreign-key triggers are skipped while loading (the generated rows only
    // reference existing orgs and users).
    exec(
        &c,
        &format!(
            "SET session_replication_role = replica; \
             INSERT INTO sync_activity_log (org_id, sync_id, entity_type, action, status, \
                    record_count, duration_seconds, error_message, user_id, created_at) \
             SELECT t.org_id, 'sync-' || (i % 5000), \
                    (enum_range(NULL::sync_entity_type))[1 + i % 16], \
                    (enum_range(NULL::sync_action))[1 + i % 14], \
                    CASE WHEN i % 50 = 0 THEN 'failed' ELSE 'completed' END::sync_status_type, \
                    i % 100, (i % 1000) / 8.0, \
                    CASE WHEN i % 50 = 0 THEN 'record ' || i || ' rejected' END, \
                    CASE WHEN i % 3 = 0 THEN t.user_id END, \
                    '2025-12-01 00:00+00'::timestamptz \
                      + (i::float8 / {rows}) * ('2026-12-01 00:00+00'::timestamptz \
                                                - '2025-12-01 00:00+00'::timestamptz) \
               FROM generate_series(0, {rows} - 1) i \
               JOIN (SELECT u.org_id, u.id AS user_id, \
                            row_number() OVER (ORDER BY u.org_id) - 1 AS k \
                       FROM auth.users_extended u JOIN organization o ON o.id = u.org_id \
                      WHERE starts_with(o.name, 'p4 ')) t ON t.k = i % {ORGS}; \
             RESET session_replication_role"
        ),
    )
    .await;
    exec(&c, "VACUUM ANALYZE sync_activity_log").await;
    let months: i64 = c
        .query_one(
            // This row's orgs only: earlier rows (P2, P3) log at now().
            "SELECT count(DISTINCT date_trunc('month', l.created_at AT TIME ZONE 'UTC')) \
               FROM sync_activity_log l JOIN organization o ON o.id = l.org_id \
              WHERE starts_with(o.name, 'p4 ')",
            &[],
        )
        .await
        .expect("months")
        .get(0);
    assert_eq!(months, 12, "rows should span 12 months");
    let store = store(db);
    let service = store.service();
    let filter = ActivityFilter::default();
    // Same answer in both scopes (untimed), and warm both paths.
    for t in &tenants {
        let a = store
            .tenant(t.user)
            .list_activity(&filter, None, PAGE)
            .await
            .expect("tenant list");
        let b = service
            .list_activity(t.org, &filter, None, PAGE)
            .await
            .expect("service list");
        assert_eq!(a.entries.len(), PAGE as usize);
        assert_eq!(a, b, "tenant and service listings differ");
    }
    let (store, service, filter, tenants) = (&store, &service, &filter, &tenants);
    let (library_ms, baseline_ms) = alternate(
        reps,
        |_side: Side| async {},
        move || async move {
            for i in 0..ops {
                let t = tenants[i % tenants.len()];
                let page = store
                    .tenant(t.user)
                    .list_activity(filter, None, PAGE)
                    .await
                    .expect("tenant list");
                assert_eq!(page.entries.len(), PAGE as usize);
            }
        },
        move || async move {
            for i in 0..ops {
                let t = tenants[i % tenants.len()];
                let page = service
                    .list_activity(t.org, filter, None, PAGE)
                    .await
                    .expect("service list");
                assert_eq!(page.entries.len(), PAGE as usize);
            }
        },
    )
    .await;
    exec(&c, "TRUNCATE sync_activity_log").await;
    let per = ops as f64;
    Row {
        id: "P4",
        what: format!(
            "newest {PAGE} activity rows of one org: tenant scope (RLS) vs service scope; \
             {rows} rows, 12 monthly partitions, {ORGS} orgs (ms per listing; {ops} listings \
             per repetition)"
        ),
        library_ms: library_ms / per,
        baseline_ms: baseline_ms / per,
        target: Target {
            max_ratio: 1.5,
            max_library_ms: Some(2.0),
        },
    }
}
