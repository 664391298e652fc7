//! Sync progress: lifecycle, trigger-written activity, finished/not-found errors,
//! concurrent increments, in both scopes.
mod store_common;

use serde_json::json;
use store_common::Fixture;
use sync_store::{
    ActivityFilter, Error, ProgressDelta, StartSync, SyncAction, SyncEntityType, SyncStatus,
};

fn delta(processed: i32, failed: i32) -> ProgressDelta {
    ProgressDelta {
        processed,
        failed,
        ..ProgressDelta::default()
    }
}

async fn log_of(f: &Fixture, sync_id: &str) -> Vec<(SyncAction, SyncStatus, Option<String>, i32)> {
    let filter = ActivityFilter {
        sync_id: Some(sync_id.to_owned()),
        ..ActivityFilter::default()
    };
    let mut entries = f
        .store
        .service()
        .list_activity(f.org_a, &filter, None, 100)
        .await
        .unwrap()
        .entries;
    entries.reverse();
    entries
        .into_iter()
        .map(|e| (e.action, e.status, e.error_message, e.record_count))
        .collect()
}

#[tokio::test]
async fn service_lifecycle_complete_by_total() {
    let f = Fixture::new().await;
    let svc = f.store.service();
    let mut start = StartSync::new("s1", SyncEntityType::Product);
    start.total_items = Some(10);
    start.source_system = Some("shopify".into());
    start.job_id = Some("job-7".into());
    start.metadata = Some(json!({"shop": "x"}));
    start.initiated_by = Some(f.user_a);
    let p = svc.start_sync(f.org_a, &start).await.unwrap();
    assert_eq!(
        (p.org_id, p.sync_id.as_str(), p.entity_type),
        (f.org_a, "s1", SyncEntityType::Product)
    );
    assert_eq!(
        (p.total_items, p.processed_count, p.failed_count),
        (Some(10), 0, 0)
    );
    assert_eq!(p.job_id.as_deref(), Some("job-7"));
    assert_eq!(p.source_system.as_deref(), Some("shopify"));
    assert_eq!(p.metadata, json!({"shop": "x"}));
    assert_eq!(p.initiated_by, Some(f.user_a));
    assert_eq!(p.status(), SyncStatus::InProgress);
    let by_job = svc.find_syncs_by_job(f.org_a, "job-7").await.unwrap();
    assert_eq!(by_job.len(), 1);
    assert_eq!(by_job[0].id, p.id);
    assert!(svc
        .find_syncs_by_job(f.org_b, "job-7")
        .await
        .unwrap()
        .is_empty());
    assert!(svc
        .find_syncs_by_job(f.org_a, "job-8")
        .await
        .unwrap()
        .is_empty());

    let err = svc.start_sync(f.org_a, &start).await.unwrap_err();
    assert!(matches!(err, Error::Conflict { .. }), "{err}");
    assert_eq!(err.code(), Some("23505"));

    let c = svc
        .report_progress(
            f.org_a,
            "s1",
            &ProgressDelta {
                processed: 3,
                failed: 1,
                current_item: Some(4),
                batch_number: Some(1),
            },
        )
        .await
        .unwrap();
    assert_eq!(
        (
            c.processed_count,
            c.failed_count,
            c.total_items,
            c.completed_at
        ),
        (3, 1, Some(10), None)
    );
    let p = svc.get_sync(f.org_a, "s1").await.unwrap().unwrap();
    assert_eq!((p.current_item, p.batch_number), (4, Some(1)));
    assert!(p.eta_seconds.is_some() || p.speed_items_per_min.is_none());
    // current_item / batch_number kept when not given.
    svc.report_progress(f.org_a, "s1", &delta(1, 0))
        .await
        .unwrap();
    let p = svc.get_sync(f.org_a, "s1").await.unwrap().unwrap();
    assert_eq!(
        (p.current_item, p.batch_number, p.processed_count),
        (4, Some(1), 4)
    );

    assert_eq!(svc.list_active_syncs(f.org_a).await.unwrap().len(), 1);
    let c = svc
        .report_progress(f.org_a, "s1", &delta(5, 0))
        .await
        .unwrap();
    assert!(
        c.completed_at.is_some(),
        "handled reached total: completed by the trigger"
    );
    let p = svc.get_sync(f.org_a, "s1").await.unwrap().unwrap();
    assert_eq!(p.status(), SyncStatus::CompletedWithErrors);
    assert_eq!(p.eta_seconds, Some(0));
    assert!(svc.list_active_syncs(f.org_a).await.unwrap().is_empty());

    let err = svc
        .report_progress(f.org_a, "s1", &delta(0, 0))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::SyncFinished { .. }), "{err}");
    let err = svc.complete_sync(f.org_a, "s1").await.unwrap_err();
    assert!(matches!(err, Error::SyncFinished { .. }), "{err}");
    let err = svc.set_total(f.org_a, "s1", Some(20)).await.unwrap_err();
    assert!(matches!(err, Error::SyncFinished { .. }), "{err}");
    let err = svc.fail_sync(f.org_a, "s1", "late").await.unwrap_err();
    assert!(matches!(err, Error::SyncFinished { .. }), "{err}");
    let err = svc
        .report_progress(f.org_a, "nope", &delta(1, 0))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
    // Another org's sync with the same id is not found either.
    let err = svc
        .report_progress(f.org_b, "s1", &delta(1, 0))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err}");

    assert_eq!(
        log_of(&f, "s1").await,
        vec![
            (SyncAction::SyncStart, SyncStatus::InProgress, None, 10),
            (
                SyncAction::SyncComplete,
                SyncStatus::CompletedWithErrors,
                Some("1 of 10 items failed".into()),
                9
            ),
        ]
    );
}

#[tokio::test]
async fn service_set_total_complete_fail_cancel_and_lists() {
    let f = Fixture::new().await;
    let svc = f.store.service();
    for id in ["t", "c", "x", "k"] {
        svc.start_sync(f.org_a, &StartSync::new(id, SyncEntityType::Order))
            .await
            .unwrap();
    }
    svc.start_sync(f.org_b, &StartSync::new("t", SyncEntityType::Order))
        .await
        .unwrap();

    // Unknown total: no completion however many are handled.
    svc.report_progress(f.org_a, "t", &delta(7, 0))
        .await
        .unwrap();
    let p = svc.set_total(f.org_a, "t", Some(9)).await.unwrap();
    assert_eq!((p.total_items, p.completed_at), (Some(9), None));
    let err = svc.set_total(f.org_a, "t", Some(6)).await.unwrap_err();
    assert!(matches!(err, Error::InvalidInput { .. }), "{err}");
    assert_eq!(err.code(), Some("23514"));
    let p = svc.set_total(f.org_a, "t", None).await.unwrap();
    assert_eq!(p.total_items, None);
    let p = svc.set_total(f.org_a, "t", Some(7)).await.unwrap();
    assert!(p.completed_at.is_some(), "total = handled completes");
    assert_eq!(p.status(), SyncStatus::Completed);

    let p = svc.complete_sync(f.org_a, "c").await.unwrap();
    assert_eq!(p.status(), SyncStatus::Completed);
    let p = svc
        .fail_sync(f.org_a, "x", "source API returned 500")
        .await
        .unwrap();
    assert_eq!(p.status(), SyncStatus::Failed);
    assert_eq!(p.outcome_error_message(), Some("source API returned 500"));
    let p = svc
        .cancel_sync(f.org_a, "k", Some("user asked"))
        .await
        .unwrap();
    assert_eq!(p.status(), SyncStatus::Cancelled);
    assert_eq!(
        log_of(&f, "x").await.last().unwrap(),
        &(
            SyncAction::SyncFail,
            SyncStatus::Failed,
            Some("source API returned 500".into()),
            0
        )
    );
    assert_eq!(
        log_of(&f, "k").await.last().unwrap(),
        &(
            SyncAction::SyncCancel,
            SyncStatus::Cancelled,
            Some("user asked".into()),
            0
        )
    );
    assert_eq!(
        log_of(&f, "c").await.last().unwrap(),
        &(SyncAction::SyncComplete, SyncStatus::Completed, None, 0)
    );

    let recent = svc.list_recent_syncs(f.org_a, 3).await.unwrap();
    assert_eq!(recent.len(), 3);
    assert!(recent.iter().all(|p| p.org_id == f.org_a));
    assert_eq!(svc.list_recent_syncs(f.org_a, 100).await.unwrap().len(), 4);
    assert!(svc.list_active_syncs(f.org_a).await.unwrap().is_empty());
    let active_b = svc.list_active_syncs(f.org_b).await.unwrap();
    assert_eq!(active_b.len(), 1);
    assert_eq!(active_b[0].org_id, f.org_b);
    assert!(svc.get_sync(f.org_a, "nope").await.unwrap().is_none());

    let m = svc.metrics(f.org_a, None).await.unwrap();
    assert_eq!(m.active_syncs, 0);
    assert!(m.avg_duration_seconds.is_some());
    // 4 sync_start (in_progress) + completed t, c + failed x + cancelled k.
    assert_eq!(
        (m.activity_total, m.activity_completed, m.activity_errors),
        (8, 2, 1)
    );
    assert_eq!(m.success_rate, Some(2.0 / 8.0));
    assert_eq!(m.error_rate, Some(1.0 / 8.0));
}

#[tokio::test]
async fn tenant_progress_functions() {
    let f = Fixture::new().await;
    let ta = f.store.tenant(f.user_a);
    let mut start = StartSync::new("s1", SyncEntityType::Customer);
    start.total_items = Some(4);
    start.job_id = Some("j".into());
    let p = ta.start_sync(&start).await.unwrap();
    assert_eq!((p.org_id, p.initiated_by), (f.org_a, Some(f.user_a)));
    let c = ta.report_progress("s1", &delta(1, 0)).await.unwrap();
    assert_eq!(c.processed_count, 1);
    // A second tick adds to the first (1 + 2 = 3; a tick that overwrote would leave 2).
    let c = ta.report_progress("s1", &delta(2, 0)).await.unwrap();
    assert_eq!((c.processed_count, c.failed_count), (3, 0));
    assert_eq!(
        ta.set_total("s1", Some(5)).await.unwrap().total_items,
        Some(5)
    );
    // Read back independently: the total changed, the counts did not, and the
    // sync is not complete (3 of 5).
    let p = ta.get_sync("s1").await.unwrap().unwrap();
    assert_eq!(
        (
            p.total_items,
            p.processed_count,
            p.failed_count,
            p.completed_at
        ),
        (Some(5), 3, 0, None)
    );
    assert_eq!(ta.list_active_syncs().await.unwrap().len(), 1);
    assert_eq!(ta.list_recent_syncs(10).await.unwrap().len(), 1);
    assert_eq!(ta.find_syncs_by_job("j").await.unwrap()[0].id, p.id);
    assert!(f
        .store
        .tenant(f.user_b)
        .find_syncs_by_job("j")
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        ta.complete_sync("s1").await.unwrap().status(),
        SyncStatus::Completed
    );
    ta.start_sync(&StartSync::new("s2", SyncEntityType::Customer))
        .await
        .unwrap();
    assert_eq!(
        ta.fail_sync("s2", "boom").await.unwrap().status(),
        SyncStatus::Failed
    );
    ta.start_sync(&StartSync::new("s3", SyncEntityType::Customer))
        .await
        .unwrap();
    assert_eq!(
        ta.cancel_sync("s3", None).await.unwrap().status(),
        SyncStatus::Cancelled
    );
    let err = ta.report_progress("s3", &delta(1, 0)).await.unwrap_err();
    assert!(matches!(err, Error::SyncFinished { .. }), "{err}");
    // The trigger-written activity rows were inserted under the tenant role.
    assert_eq!(
        log_of(&f, "s2").await.last().unwrap().0,
        SyncAction::SyncFail
    );
    let m = ta.metrics(None).await.unwrap();
    assert_eq!(m.activity_total, 6);

    // User B cannot see or touch A's syncs, even with the same sync_id.
    let tb = f.store.tenant(f.user_b);
    assert!(tb.get_sync("s1").await.unwrap().is_none());
    let err = tb.report_progress("s1", &delta(1, 0)).await.unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
    assert!(tb.list_recent_syncs(10).await.unwrap().is_empty());
    let b = tb
        .start_sync(&StartSync::new("s1", SyncEntityType::Customer))
        .await
        .unwrap();
    assert_eq!(b.org_id, f.org_b);
    let mb = tb.metrics(None).await.unwrap();
    assert_eq!((mb.active_syncs, mb.activity_total), (1, 1));
}

/// 8 workers × 1000 increment calls on one sync (n varies per call): exact totals.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_increments_lose_nothing() {
    let f = Fixture::new().await;
    let svc = f.store.service();
    let mut start = StartSync::new("hot", SyncEntityType::Product);
    start.total_items = Some(1_000_000);
    svc.start_sync(f.org_a, &start).await.unwrap();
    let mut tasks = Vec::new();
    for w in 0..8i32 {
        let svc = svc.clone();
        let org = f.org_a;
        tasks.push(tokio::spawn(async move {
            let (mut p, mut x) = (0i64, 0i64);
            for i in 0..1000i32 {
                let d = ProgressDelta {
                    processed: (i + w) % 3 + 1,
                    failed: i32::from(i % 10 == 0),
                    current_item: Some(i),
                    batch_number: Some(w),
                };
                svc.report_progress(org, "hot", &d).await.unwrap();
                p += i64::from(d.processed);
                x += i64::from(d.failed);
            }
            (p, x)
        }));
    }
    let (mut processed, mut failed) = (0i64, 0i64);
    for t in tasks {
        let (p, x) = t.await.unwrap();
        processed += p;
        failed += x;
    }
    // Hand-computed: worker w sends (i + w) % 3 + 1 for i in 0..1000, i.e. 333
    // full cycles (333 × 6 = 1998) plus i = 999 → w % 3 + 1; over w = 0..8 the
    // tails are 1+2+3+1+2+3+1+2 = 15, so 8 × 1998 + 15 = 15999. Failed: one in
    // ten calls per worker, 8 × 100 = 800.
    assert_eq!(
        (processed, failed),
        (15_999, 800),
        "the workers sent what was planned"
    );
    let got = svc.get_sync(f.org_a, "hot").await.unwrap().unwrap();
    assert_eq!(
        (got.processed_count, got.failed_count),
        (15_999, 800),
        "the database holds every increment"
    );
}
