//! P3: one progress update — `ServiceScope::report_progress` (increment; the
//! BEFORE UPDATE triggers compute elapsed, speed, ETA, updated_at) vs a bare
//! prepared single-statement UPDATE of the same columns on a trigger-free copy of
//! `sync_progress` (`LIKE … INCLUDING ALL`, same fillfactor, same row).
//!
//! Each repetition times a batch of `ops` sequential autocommit updates of one
//! running sync (total unknown, so it never completes); reported as ms per update.
//!
//! P3k: the same with `report_progress_keyed` (the retry-safe tick: its key is
//! inserted into `sync_progress_tick_key` in the same statement), against the
//! same baseline: the cost of idempotency.

use sync_store::{ProgressDelta, StartSync, SyncEntityType};
use tokio_postgres::Client;

use crate::data::{create_tenants, exec, store};
use crate::measure::{alternate, Row, Side, Target};
use crate::BenchDb;

pub(crate) async fn run(db: &BenchDb, reps: usize, ops: usize, keyed: bool) -> Row {
    let sync_id = if keyed { "bench-p3k" } else { "bench-p3" };
    let next_key = std::sync::atomic::AtomicI64::new(0);
    let next_key = &next_key;
    let c = db.connect().await;
    let org = create_tenants(&c, sync_id, 1).await[0].org;
    let store = store(db);
    let service = store.service();
    service
        .start_sync(org, &StartSync::new(sync_id, SyncEntityType::Product))
        .await
        .expect("start_sync");
    let fillfactor: Option<String> = c
        .query_one(
            "SELECT (SELECT option_value FROM pg_options_to_table(reloptions) \
                      WHERE option_name = 'fillfactor') \
               FROM pg_class WHERE oid = 'sync_progress'::regclass",
            &[],
        )
        .await
        .expect("fillfactor")
        .get(0);
    let with = fillfactor
        .map(|f| format!(" WITH (fillfactor = {f})"))
        .unwrap_or_default();
    exec(
        &c,
        &format!(
            "CREATE TABLE bench_progress_plain (LIKE sync_progress INCLUDING ALL){with}; \
             INSERT INTO bench_progress_plain SELECT * FROM sync_progress"
        ),
    )
    .await;
    exec(&c, "VACUUM ANALYZE bench_progress_plain, sync_progress").await;
    let stmt = c
        .prepare(
            "UPDATE bench_progress_plain SET processed_count = processed_count + $1, \
               failed_count = failed_count + $2, current_item = $3, batch_number = $4 \
             WHERE org_id = $5 AND sync_id = $6",
        )
        .await
        .expect("prepare");
    let (c, service, stmt): (&Client, _, _) = (&c, &service, &stmt);
    let (library_ms, baseline_ms) = alternate(
        reps,
        |_side: Side| async {},
        move || async move {
            for i in 0..ops as i32 {
                let delta = ProgressDelta {
                    processed: 1,
                    failed: 0,
                    current_item: Some(i),
                    batch_number: Some(i / 100),
                };
                if keyed {
                    let key = next_key.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let out = service
                        .report_progress_keyed(org, sync_id, key, &delta)
                        .await
                        .expect("report_progress_keyed");
                    assert!(out.applied);
                } else {
                    service
                        .report_progress(org, sync_id, &delta)
                        .await
                        .expect("report_progress");
                }
            }
        },
        move || async move {
            for i in 0..ops as i32 {
                let n = c
                    .execute(stmt, &[&1i32, &0i32, &i, &(i / 100), &org, &sync_id])
                    .await
                    .expect("update");
                assert_eq!(n, 1);
            }
        },
    )
    .await;
    // Both tables saw the same increments.
    let counts: Vec<i32> = c
        .query(
            "SELECT processed_count FROM sync_progress WHERE sync_id = $1 \
             UNION ALL SELECT processed_count FROM bench_progress_plain WHERE sync_id = $1",
            &[&sync_id],
        )
        .await
        .expect("counts")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(counts, vec![(reps * ops) as i32; 2]);
    exec(c, "DROP TABLE bench_progress_plain").await;
    let per = ops as f64;
    if keyed {
        return Row {
            id: "P3k",
            what: format!(
                "one retry-safe progress update (report_progress_keyed: key row + update in one \
                 statement) vs the same bare prepared UPDATE (ms per update; {ops} per repetition; \
                 informational target)"
            ),
            library_ms: library_ms / per,
            baseline_ms: baseline_ms / per,
            target: Target {
                max_ratio: 2.0,
                max_library_ms: None,
            },
        };
    }
    Row {
        id: "P3",
        what: format!(
            "one progress update (report_progress, service scope, triggers) vs bare prepared \
             UPDATE on a trigger-free copy (ms per update; {ops} sequential autocommit updates \
             per repetition)"
        ),
        library_ms: library_ms / per,
        baseline_ms: baseline_ms / per,
        target: Target {
            max_ratio: 1.25,
            max_library_ms: None,
        },
    }
}
