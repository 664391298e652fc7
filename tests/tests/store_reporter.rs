//! The progress reporter (migration 0027): background flushes, batch-boundary
//! flushes, heartbeat and stalled, cancel reaching the worker (both scopes),
//! checkpoint and resume, retried flushes over a lossy connection counting
//! once, refused inputs.
mod store_common;

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use serde_json::json;
use store_common::Fixture;
use sync_store::{
    ActivityFilter, Error, ReporterConfig, StartSync, StopReason, Store, SyncAction,
    SyncEntityType, SyncStatus,
};
use sync_tests::cut_proxy::CutProxy;
use tokio_postgres::NoTls;

/// Fast flushes for tests; never a timing assertion, only bounded waits.
fn fast() -> ReporterConfig {
    ReporterConfig::default()
        .with_interval(Duration::from_millis(30))
        .with_min_gap(Duration::from_millis(5))
}

async fn start(f: &Fixture, sync_id: &str, total: Option<i32>) {
    let mut s = StartSync::new(sync_id, SyncEntityType::Product);
    s.total_items = total;
    f.store.service().start_sync(f.org_a, &s).await.unwrap();
}

/// Polls `sync_progress` (as the superuser) until `pred` holds; panics after 20 s.
async fn wait_for(f: &Fixture, sync_id: &str, what: &str, pred: impl Fn(i32, i32) -> bool) {
    for _ in 0..2000 {
        let row = f
            .admin
            .query_one(
                "SELECT processed_count, failed_count FROM sync_progress WHERE sync_id = $1",
                &[&sync_id],
            )
            .await
            .unwrap();
        if pred(row.get(0), row.get(1)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{what}: not reached in 20 s");
}

#[tokio::test]
async fn counts_reach_the_database_without_finish_and_finish_completes() {
    let f = Fixture::new().await;
    let svc = f.store.service();
    start(&f, "r1", None).await;
    let r = svc.reporter(f.org_a, "r1", fast()).await.unwrap();
    assert_eq!(r.attached().progress.processed_count, 0);
    assert!(r.attached().progress.heartbeat_at.is_some());
    for i in 0..1000 {
        r.inc(1, u32::from(i % 10 == 0));
        r.set_current(i);
    }
    // Flushed by the background task alone (no batch boundary, no finish).
    wait_for(&f, "r1", "background flush", |p, fl| p == 1000 && fl == 100).await;
    let p = svc.get_sync(f.org_a, "r1").await.unwrap().unwrap();
    assert_eq!(p.current_item, 999);
    assert!(!p.stalled);
    assert!(r.flush_stats().0 >= 1);
    r.inc(5, 0);
    let done = r.finish().await.unwrap();
    assert_eq!(
        (done.processed_count, done.failed_count, done.status()),
        (1005, 100, SyncStatus::CompletedWithErrors)
    );
    // One sync_complete row, counting what was incremented.
    let log = svc
        .list_activity(
            f.org_a,
            &ActivityFilter {
                sync_id: Some("r1".into()),
                ..ActivityFilter::default()
            },
            None,
            10,
        )
        .await
        .unwrap();
    let end: Vec<_> = log
        .entries
        .iter()
        .filter(|e| e.action == SyncAction::SyncComplete)
        .collect();
    assert_eq!(end.len(), 1);
    assert_eq!(end[0].record_count, 1005);
    // The tick keys went with the finish (trigger of 0025).
    assert_eq!(f.count("sync_progress_tick_key").await, 0);
}

#[tokio::test]
async fn batch_done_flushes_before_the_interval() {
    let f = Fixture::new().await;
    start(&f, "b1", None).await;
    // An interval far beyond the test's wait: only batch_done can flush.
    let cfg = ReporterConfig::default()
        .with_interval(Duration::from_secs(3600))
        .with_min_gap(Duration::from_millis(1));
    let r = f
        .store
        .service()
        .reporter(f.org_a, "b1", cfg)
        .await
        .unwrap();
    r.inc(7, 0);
    r.batch_done(Some(3));
    wait_for(&f, "b1", "batch-boundary flush", |p, _| p == 7).await;
    let p = f
        .store
        .service()
        .get_sync(f.org_a, "b1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(p.batch_number, Some(3));
    r.close().await.unwrap();
    // Closing leaves it running.
    let p = f
        .store
        .service()
        .get_sync(f.org_a, "b1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(p.completed_at, None);
}

#[tokio::test]
async fn total_reached_by_a_flush_completes_and_finish_answers_the_row() {
    let f = Fixture::new().await;
    start(&f, "t1", Some(10)).await;
    let r = f
        .store
        .service()
        .reporter(f.org_a, "t1", fast())
        .await
        .unwrap();
    r.inc(10, 0);
    tokio::time::timeout(Duration::from_secs(20), r.stopped())
        .await
        .expect("completion seen by the reporter");
    assert_eq!(r.stop_reason(), Some(StopReason::SyncEnded));
    assert!(!r.is_cancelled());
    let p = r.finish().await.unwrap();
    assert_eq!(p.status(), SyncStatus::Completed);
    assert_eq!(p.processed_count, 10);
}

#[tokio::test]
async fn stalled_is_computed_from_the_heartbeat_and_counted() {
    let f = Fixture::new().await;
    let svc = f.store.service();
    start(&f, "s1", None).await;
    start(&f, "s2", None).await;
    let cfg = fast().with_stall_after(Duration::from_secs(60));
    let r1 = svc.reporter(f.org_a, "s1", cfg).await.unwrap();
    r1.close().await.unwrap();
    let r2 = svc.reporter(f.org_a, "s2", cfg).await.unwrap();
    r2.close().await.unwrap();
    assert!(!svc.get_sync(f.org_a, "s1").await.unwrap().unwrap().stalled);
    // The worker of s1 went silent an hour ago (no sleeping in the test).
    f.admin
        .execute(
            "UPDATE sync_progress SET heartbeat_at = now() - interval '1 hour' WHERE sync_id = 's1'",
            &[],
        )
        .await
        .unwrap();
    let p = svc.get_sync(f.org_a, "s1").await.unwrap().unwrap();
    assert!(p.stalled);
    let active = svc.list_active_syncs(f.org_a).await.unwrap();
    let stalled: Vec<_> = active
        .iter()
        .filter(|p| p.stalled)
        .map(|p| p.sync_id.as_str())
        .collect();
    assert_eq!(stalled, ["s1"]);
    // The tenant sees the same; the other org sees nothing.
    let t = f
        .store
        .tenant(f.user_a)
        .get_sync("s1")
        .await
        .unwrap()
        .unwrap();
    assert!(t.stalled);
    assert_eq!(f.store.tenant(f.user_b).get_sync("s1").await.unwrap(), None);
    assert_eq!(svc.metrics(f.org_a, None).await.unwrap().stalled_syncs, 1);
    assert_eq!(svc.metrics(f.org_b, None).await.unwrap().stalled_syncs, 0);
    assert_eq!(svc.metrics_all_orgs(None).await.unwrap().stalled_syncs, 1);
    assert_eq!(
        f.store
            .tenant(f.user_a)
            .metrics(None)
            .await
            .unwrap()
            .stalled_syncs,
        1
    );
    // A finished sync is never stalled.
    svc.cancel_sync(f.org_a, "s1", None).await.unwrap();
    assert!(!svc.get_sync(f.org_a, "s1").await.unwrap().unwrap().stalled);
    assert_eq!(svc.metrics(f.org_a, None).await.unwrap().stalled_syncs, 0);
    // A sync without a reporter (no stall_after) is never stalled.
    start(&f, "s3", None).await;
    f.admin
        .execute(
            "UPDATE sync_progress SET heartbeat_at = now() - interval '1 day' WHERE sync_id = 's3'",
            &[],
        )
        .await
        .unwrap();
    assert!(!svc.get_sync(f.org_a, "s3").await.unwrap().unwrap().stalled);
}

async fn cancel_reaches_the_worker(tenant_cancels: bool) {
    let f = Fixture::new().await;
    let svc = f.store.service();
    let id = "c1";
    start(&f, id, None).await;
    let r = svc.reporter(f.org_a, id, fast()).await.unwrap();
    r.inc(3, 0);
    assert!(!r.is_cancelled());
    let asked = if tenant_cancels {
        // Another org's user cannot, and learns nothing.
        let err = f
            .store
            .tenant(f.user_b)
            .request_cancel(id)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::NotFound { .. }), "{err}");
        f.store.tenant(f.user_a).request_cancel(id).await.unwrap()
    } else {
        let err = svc.request_cancel(f.org_b, id).await.unwrap_err();
        assert!(matches!(err, Error::NotFound { .. }), "{err}");
        svc.request_cancel(f.org_a, id).await.unwrap()
    };
    let first = asked.cancel_requested_at.expect("marked");
    assert_eq!(asked.completed_at, None, "a request does not end the sync");
    // A repeat keeps the first time.
    let again = svc.request_cancel(f.org_a, id).await.unwrap();
    assert_eq!(again.cancel_requested_at, Some(first));
    tokio::time::timeout(Duration::from_secs(20), r.stopped())
        .await
        .expect("the reporter learns the cancel at its next flush");
    assert!(r.is_cancelled());
    assert_eq!(r.stop_reason(), Some(StopReason::CancelRequested));
    r.inc(2, 0);
    let p = r.cancel(Some("asked by the user")).await.unwrap();
    assert_eq!(p.status(), SyncStatus::Cancelled);
    assert_eq!(
        p.processed_count, 5,
        "the last counts were flushed before ending"
    );
    let log = svc
        .list_activity(
            f.org_a,
            &ActivityFilter {
                sync_id: Some(id.into()),
                ..ActivityFilter::default()
            },
            None,
            10,
        )
        .await
        .unwrap();
    let cancel: Vec<_> = log
        .entries
        .iter()
        .filter(|e| e.action == SyncAction::SyncCancel)
        .collect();
    assert_eq!(cancel.len(), 1);
    assert_eq!(cancel[0].status, SyncStatus::Cancelled);
    assert_eq!(
        cancel[0].error_message.as_deref(),
        Some("asked by the user")
    );
    // A finished sync takes no request.
    let err = svc.request_cancel(f.org_a, id).await.unwrap_err();
    assert!(matches!(err, Error::SyncFinished { .. }), "{err}");
}

#[tokio::test]
async fn service_cancel_reaches_the_worker() {
    cancel_reaches_the_worker(false).await;
}

#[tokio::test]
async fn tenant_cancel_reaches_the_worker() {
    cancel_reaches_the_worker(true).await;
}

#[tokio::test]
async fn sync_ended_elsewhere_stops_the_worker() {
    let f = Fixture::new().await;
    let svc = f.store.service();
    start(&f, "e1", None).await;
    let r = svc.reporter(f.org_a, "e1", fast()).await.unwrap();
    svc.cancel_sync(f.org_a, "e1", Some("operator"))
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(20), r.stopped())
        .await
        .expect("stop seen");
    assert_eq!(r.stop_reason(), Some(StopReason::SyncEnded));
    let err = r.finish().await.unwrap_err();
    assert!(matches!(err, Error::SyncFinished { .. }), "{err}");
}

#[tokio::test]
async fn checkpoint_resume_rewinds_to_the_checkpoint_counts() {
    let f = Fixture::new().await;
    let svc = f.store.service();
    start(&f, "k1", Some(100)).await;
    let r = svc.reporter(f.org_a, "k1", fast()).await.unwrap();
    assert_eq!(r.attached().checkpoint, None);
    r.inc(8, 2);
    r.checkpoint(json!({"cursor": "page-2", "n": [1, 2.5, null]}))
        .unwrap();
    // Processed after the checkpoint, flushed, then the worker dies.
    r.inc(4, 1);
    r.close().await.unwrap();
    let p = svc.get_sync(f.org_a, "k1").await.unwrap().unwrap();
    assert_eq!((p.processed_count, p.failed_count), (12, 3));

    let r2 = svc.resume_reporter(f.org_a, "k1", fast()).await.unwrap();
    assert_eq!(
        r2.attached().checkpoint,
        Some(json!({"cursor": "page-2", "n": [1, 2.5, null]}))
    );
    let at = &r2.attached().progress;
    assert_eq!(
        (at.processed_count, at.failed_count),
        (8, 2),
        "rewound to the checkpoint"
    );
    // The items after the checkpoint are done again, and counted once.
    r2.inc(90, 0);
    let p = r2.finish().await.unwrap();
    assert_eq!((p.processed_count, p.failed_count), (98, 2));
    assert_eq!(p.status(), SyncStatus::CompletedWithErrors);
}

#[tokio::test]
async fn resume_without_checkpoint_starts_over() {
    let f = Fixture::new().await;
    let svc = f.store.service();
    start(&f, "k2", None).await;
    let r = svc.reporter(f.org_a, "k2", fast()).await.unwrap();
    r.inc(5, 0);
    r.close().await.unwrap();
    let r2 = svc.resume_reporter(f.org_a, "k2", fast()).await.unwrap();
    assert_eq!(r2.attached().checkpoint, None);
    assert_eq!(r2.attached().progress.processed_count, 0);
    // Attaching (not resuming) keeps the counts.
    r2.inc(3, 0);
    r2.close().await.unwrap();
    let r3 = svc.reporter(f.org_a, "k2", fast()).await.unwrap();
    assert_eq!(r3.attached().progress.processed_count, 3);
}

#[tokio::test]
async fn refused_inputs_write_nothing() {
    let f = Fixture::new().await;
    let svc = f.store.service();
    start(&f, "v1", None).await;
    let err = svc
        .reporter(
            f.org_a,
            "v1",
            ReporterConfig::default().with_interval(Duration::ZERO),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidInput { .. }), "{err}");
    let err = svc
        .reporter(
            f.org_a,
            "v1",
            ReporterConfig::default().with_stall_after(Duration::ZERO),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidInput { .. }), "{err}");
    let p = svc.get_sync(f.org_a, "v1").await.unwrap().unwrap();
    assert_eq!(p.heartbeat_at, None, "nothing written");
    let err = svc.reporter(f.org_a, "nope", fast()).await.unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
    let err = svc.reporter(f.org_b, "v1", fast()).await.unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
    let r = svc.reporter(f.org_a, "v1", fast()).await.unwrap();
    let big = json!({"blob": "x".repeat(sync_store::validate::MAX_CHECKPOINT_BYTES)});
    let err = r.checkpoint(big).unwrap_err();
    assert!(matches!(err, Error::InvalidInput { .. }), "{err}");
    let err = r.checkpoint(json!({"nul": "a\u{0}b"})).unwrap_err();
    assert!(matches!(err, Error::InvalidInput { .. }), "{err}");
    r.close().await.unwrap();
    let c: Option<serde_json::Value> = f
        .admin
        .query_one(
            "SELECT checkpoint FROM sync_progress WHERE sync_id = 'v1'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(c, None);
    // The database's own bound stops another writer.
    let err = f
        .admin
        .execute(
            "UPDATE sync_progress SET checkpoint = to_jsonb(repeat('x', 70000)), \
             checkpoint_processed = 0, checkpoint_failed = 0 WHERE sync_id = 'v1'",
            &[],
        )
        .await
        .unwrap_err();
    assert_eq!(err.code().map(|c| c.code()), Some("23514"));
}

#[tokio::test]
async fn a_failed_flush_is_reported_and_stops_the_worker() {
    let f = Fixture::new().await;
    let svc = f.store.service();
    start(&f, "x1", Some(5)).await;
    let r = svc.reporter(f.org_a, "x1", fast()).await.unwrap();
    // More than the total: the CHECK refuses the flush for good.
    r.inc(6, 0);
    tokio::time::timeout(Duration::from_secs(20), r.stopped())
        .await
        .expect("stop seen");
    assert_eq!(r.stop_reason(), Some(StopReason::Failed));
    assert!(r.last_error().is_some());
    assert_eq!(
        r.unflushed(),
        (6, 0),
        "counts given back, not lost silently"
    );
    let err = r.finish().await.unwrap_err();
    assert!(matches!(err, Error::InvalidInput { .. }), "{err}");
    let p = svc.get_sync(f.org_a, "x1").await.unwrap().unwrap();
    assert_eq!((p.processed_count, p.completed_at), (0, None));
}

fn proxied_pool(config: &tokio_postgres::Config) -> Pool {
    let manager = Manager::from_config(
        config.clone(),
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(2)
        .wait_timeout(Some(Duration::from_secs(5)))
        .create_timeout(Some(Duration::from_secs(5)))
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .build()
        .unwrap()
}

#[tokio::test]
async fn lost_replies_are_retried_and_count_once() {
    let f = Fixture::new().await;
    start(&f, "l1", None).await;
    let proxy = CutProxy::start(&f.db.config()).await;
    let store = Store::new(proxied_pool(&proxy.config()));
    let svc = store.service();
    let cfg = fast().with_final_flush_timeout(Duration::from_secs(60));
    let r = svc.reporter(f.org_a, "l1", cfg).await.unwrap();
    proxy.lose_every(5);
    let mut sent = 0u64;
    for round in 0..40 {
        for _ in 0..50 {
            r.inc(1, 0);
            sent += 1;
        }
        if round % 4 == 0 {
            r.checkpoint(json!({ "round": round })).unwrap();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Let a few more flushes meet the lossy link before the final one.
    tokio::time::sleep(Duration::from_millis(200)).await;
    proxy.lose_every(0);
    let (flushes, retries) = r.flush_stats();
    let p = r.finish().await.unwrap();
    eprintln!(
        "lossy link: {} replies lost, {flushes} flushes, {retries} retries",
        proxy.lost()
    );
    assert!(
        proxy.lost() > 0,
        "the proxy lost no reply: nothing was tested"
    );
    assert!(retries > 0);
    assert_eq!(
        p.processed_count as u64, sent,
        "every increment counted exactly once"
    );
}

#[tokio::test]
async fn terminated_backends_mid_flush_lose_and_double_nothing() {
    let f = Fixture::new().await;
    start(&f, "term1", None).await;
    let svc = f.store.service();
    let cfg = ReporterConfig::default()
        .with_interval(Duration::from_millis(10))
        .with_min_gap(Duration::from_millis(1))
        .with_final_flush_timeout(Duration::from_secs(60));
    let r = svc.reporter(f.org_a, "term1", cfg).await.unwrap();
    let admin_pid: i32 = f
        .admin
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    let (mut sent, mut killed) = (0u64, 0i64);
    for _ in 0..100 {
        for _ in 0..20 {
            r.inc(1, 0);
            sent += 1;
        }
        r.batch_done(None);
        tokio::time::sleep(Duration::from_millis(3)).await;
        // Every other backend of this database: the pool's, mid-flush or idle.
        let n: i64 = f
            .admin
            .query_one(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity \
                 WHERE datname = current_database() AND pid <> $1 AND backend_type = 'client backend'",
                &[&admin_pid],
            )
            .await
            .unwrap()
            .get(0);
        killed += n;
    }
    let (flushes, retries) = r.flush_stats();
    let p = r.finish().await.unwrap();
    eprintln!("terminate: {killed} backends terminated, {flushes} flushes, {retries} retries");
    assert!(killed > 0, "no backend was terminated: nothing was tested");
    assert_eq!(
        p.processed_count as u64, sent,
        "every increment counted exactly once"
    );
}

/// A session of a fresh login role (neither superuser nor owner) acting as
/// `sync_tenant` with the claims of org A's user, as plain SQL.
async fn tenant_sql(f: &Fixture, label: &str) -> tokio_postgres::Client {
    let (_, config) = f.db.login_role(label).await;
    let c = sync_tests::connect(&config).await;
    c.batch_execute("SET ROLE sync_tenant").await.unwrap();
    c.execute(
        "SELECT set_config('request.jwt.claims', $1, false), \
                set_config('request.jwt.claim.sub', $2, false)",
        &[
            &format!("{{\"sub\":\"{}\"}}", f.user_a),
            &f.user_a.to_string(),
        ],
    )
    .await
    .unwrap();
    c
}

/// Runs `sql` (one statement, `$1` = the sync id) as the tenant and returns
/// the SQLSTATE it failed with ("ok" when it succeeded and changed one row).
async fn tenant_state(c: &tokio_postgres::Client, sql: &str, sync_id: &str) -> String {
    match c.execute(sql, &[&sync_id]).await {
        Ok(1) => "ok".into(),
        Ok(n) => format!("{n} rows"),
        Err(e) => e.code().map_or_else(|| e.to_string(), |c| c.code().into()),
    }
}

/// Attack 6: the size bound measured `pg_column_size`, the stored (compressed)
/// size. A 1 MB checkpoint copied from an lz4-compressed jsonb value (a tenant's
/// temporary table) is about 4 KB compressed and passed. The bound is on the
/// text now: refused with 23514, nothing written.
#[tokio::test]
async fn a_compressed_huge_checkpoint_is_refused() {
    let f = Fixture::new().await;
    start(&f, "z1", None).await;
    let mut c = tenant_sql(&f, "lz4").await;
    let before = store_common::snapshot(&f.admin).await;
    let tx = c.transaction().await.unwrap();
    tx.batch_execute(
        "SET LOCAL default_toast_compression = 'lz4'; \
         CREATE TEMP TABLE big AS SELECT jsonb_build_object('x', repeat('a', 1000000)) AS v",
    )
    .await
    .unwrap();
    let stored: i32 = tx
        .query_one("SELECT pg_column_size(v) FROM big", &[])
        .await
        .unwrap()
        .get(0);
    assert!(stored < 65536, "the copy is compressed ({stored} bytes)");
    let err = tx
        .execute(
            "UPDATE sync_progress SET checkpoint = (SELECT v FROM big), \
             checkpoint_processed = 0, checkpoint_failed = 0 WHERE sync_id = $1",
            &[&"z1"],
        )
        .await
        .unwrap_err();
    assert_eq!(err.code().map(|c| c.code()), Some("23514"), "{err}");
    drop(tx);
    // A checkpoint within the bound still goes through the same way.
    let tx = c.transaction().await.unwrap();
    let n = tx
        .execute(
            "UPDATE sync_progress SET checkpoint = jsonb_build_object('x', repeat('a', 60000)), \
             checkpoint_processed = 0, checkpoint_failed = 0 WHERE sync_id = $1",
            &[&"z1"],
        )
        .await
        .unwrap();
    assert_eq!(n, 1);
    drop(tx);
    assert_eq!(store_common::snapshot(&f.admin).await, before);
}

/// Attack 7: a checkpoint without its counts (NULL made the CHECK pass) or a
/// JSON null checkpoint: refused by the database (23514) and, for JSON null, by
/// the store before sending.
#[tokio::test]
async fn a_checkpoint_without_counts_or_json_null_is_refused() {
    let f = Fixture::new().await;
    start(&f, "k1", None).await;
    let c = tenant_sql(&f, "counts").await;
    let before = store_common::snapshot(&f.admin).await;
    for set in [
        "checkpoint = '{}', checkpoint_processed = NULL, checkpoint_failed = 0",
        "checkpoint = '{}', checkpoint_processed = 0, checkpoint_failed = NULL",
        "checkpoint = '{}', checkpoint_processed = NULL, checkpoint_failed = NULL",
        "checkpoint = 'null', checkpoint_processed = 0, checkpoint_failed = 0",
        "checkpoint = NULL, checkpoint_processed = 3, checkpoint_failed = NULL",
        "checkpoint = '{}', checkpoint_processed = -1, checkpoint_failed = 0",
    ] {
        let sql = format!("UPDATE sync_progress SET {set} WHERE sync_id = $1");
        assert_eq!(tenant_state(&c, &sql, "k1").await, "23514", "{set}");
    }
    assert_eq!(store_common::snapshot(&f.admin).await, before);
    // With its counts, a checkpoint is accepted (the CHECK is not a wall).
    let sql = "UPDATE sync_progress SET checkpoint = '{}', checkpoint_processed = 0, \
               checkpoint_failed = 0 WHERE sync_id = $1";
    assert_eq!(tenant_state(&c, sql, "k1").await, "ok");
    // The store refuses JSON null before sending.
    let r = f
        .store
        .service()
        .reporter(f.org_a, "k1", fast())
        .await
        .unwrap();
    let err = r.checkpoint(serde_json::Value::Null).unwrap_err();
    assert!(matches!(err, Error::InvalidInput { .. }), "{err}");
    r.close().await.unwrap();
}

/// Attack 8: a huge `stall_after` (or an infinite heartbeat / cancel time)
/// made every all-orgs stalled query fail with "timestamp out of range".
/// Refused by the database (23514) and by the store's config check.
#[tokio::test]
async fn out_of_range_stall_after_and_infinite_times_are_refused() {
    let f = Fixture::new().await;
    start(&f, "s1", None).await;
    let c = tenant_sql(&f, "stall").await;
    let before = store_common::snapshot(&f.admin).await;
    for set in [
        "stall_after = interval '178000000 years'",
        "stall_after = interval '7 days 1 millisecond'",
        "stall_after = interval '1 month'",
        "stall_after = interval '0'",
        "stall_after = interval '-1 second'",
        "heartbeat_at = 'infinity'",
        "heartbeat_at = '-infinity'",
        "cancel_requested_at = 'infinity'",
        "cancel_requested_at = '-infinity'",
    ] {
        let sql = format!("UPDATE sync_progress SET {set} WHERE sync_id = $1");
        assert_eq!(tenant_state(&c, &sql, "s1").await, "23514", "{set}");
    }
    assert_eq!(store_common::snapshot(&f.admin).await, before);
    let sql = "UPDATE sync_progress SET stall_after = interval '7 days', \
               heartbeat_at = now() - interval '8 days' WHERE sync_id = $1";
    assert_eq!(tenant_state(&c, sql, "s1").await, "ok");
    // The all-orgs stalled reads still answer.
    let n: i64 = f
        .admin
        .query_one(
            "SELECT count(*) FROM sync_progress p WHERE sync_progress_stalled(p)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
    // The store's check matches: typed error before sending, nothing written.
    let svc = f.store.service();
    start(&f, "s2", None).await;
    for too_long in [
        sync_store::validate::MAX_STALL_AFTER + Duration::from_millis(1),
        Duration::from_secs(178_000_000 * 365 * 24 * 3600),
    ] {
        let err = svc
            .reporter(f.org_a, "s2", fast().with_stall_after(too_long))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::InvalidInput { .. }), "{err}");
    }
    let p = svc.get_sync(f.org_a, "s2").await.unwrap().unwrap();
    assert_eq!(p.heartbeat_at, None, "nothing written");
    let r = svc
        .reporter(
            f.org_a,
            "s2",
            fast().with_stall_after(sync_store::validate::MAX_STALL_AFTER),
        )
        .await
        .unwrap();
    r.close().await.unwrap();
}

/// Attack 5: with Supabase-style default privileges (ALL on new functions to an
/// API role) set before the migrations, the functions 0027 creates keep no
/// grant but the owner's and the intended EXECUTE to PUBLIC.
#[tokio::test]
async fn default_privileges_leave_no_grant_on_the_0027_function() {
    let db = sync_tests::TestDb::empty().await;
    let (role, _) = db.login_role("authenticated").await;
    let admin = db.client().await;
    admin
        .batch_execute(&format!(
            "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON FUNCTIONS TO \"{role}\""
        ))
        .await
        .unwrap();
    let mut client = db.client().await;
    sync_migrations::apply(&mut client, &sync_migrations::MigrateOptions::default())
        .await
        .unwrap();
    let rows = admin
        .query(
            "SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' \
                         WHEN a.grantee = p.proowner THEN 'owner' \
                         ELSE a.grantee::regrole::text END, a.privilege_type \
               FROM pg_proc p CROSS JOIN LATERAL aclexplode(p.proacl) a \
              WHERE p.oid = 'sync_progress_stalled(sync_progress)'::regprocedure \
              ORDER BY 1",
            &[],
        )
        .await
        .unwrap();
    let grants: Vec<(String, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(
        grants,
        vec![
            ("PUBLIC".to_string(), "EXECUTE".to_string()),
            ("owner".to_string(), "EXECUTE".to_string()),
        ],
        "{role}"
    );
    admin
        .batch_execute(&format!(
            "ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE ALL ON FUNCTIONS FROM \"{role}\""
        ))
        .await
        .unwrap();
}
