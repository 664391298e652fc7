//! Every bad-input class gets a typed error and writes nothing.
mod store_common;

use std::future::Future;

use serde_json::json;
use store_common::{snapshot, Fixture};
use sync_store::{
    validate, ActivityFilter, Error, NewActivity, ProgressDelta, PutPreview, StartSync, SyncAction,
    SyncEntityType, SyncStatus, SyncType,
};
use time::Duration;
use uuid::Uuid;

/// Runs `call`, expects `InvalidInput` naming `field`, and that no table changed.
async fn refused<T: std::fmt::Debug>(
    f: &Fixture,
    field: &str,
    call: impl Future<Output = sync_store::Result<T>>,
) -> Error {
    let before = snapshot(&f.admin).await;
    let err = call.await.expect_err("must be refused");
    match &err {
        Error::InvalidInput { field: got, .. } => {
            assert!(
                got.contains(field),
                "field {got:?} should name {field:?}: {err}"
            )
        }
        other => panic!("expected InvalidInput for {field}, got {other:?}"),
    }
    assert_eq!(
        snapshot(&f.admin).await,
        before,
        "nothing written for {field}"
    );
    err
}

fn preview(sync_id: &str, key: &str) -> PutPreview {
    PutPreview::new(SyncType::Shopify, sync_id, key, json!({"a": 1}))
}

#[tokio::test]
async fn preview_inputs() {
    let f = Fixture::new().await;
    let svc = f.store.service();
    let ta = f.store.tenant(f.user_a);
    svc.put_preview(f.org_a, &preview("s", "existing"))
        .await
        .unwrap();
    let long_id = "x".repeat(validate::MAX_ID_CHARS + 1);
    refused(&f, "sync_id", svc.put_preview(f.org_a, &preview("", "k"))).await;
    refused(
        &f,
        "sync_id",
        svc.put_preview(f.org_a, &preview(&long_id, "k")),
    )
    .await;
    refused(
        &f,
        "sync_id",
        svc.put_preview(f.org_a, &preview("a\0b", "k")),
    )
    .await;
    refused(&f, "cache_key", svc.put_preview(f.org_a, &preview("s", ""))).await;
    let max_key = "é".repeat(validate::MAX_CACHE_KEY_CHARS);
    let too_long_key = "é".repeat(validate::MAX_CACHE_KEY_CHARS + 1);
    refused(
        &f,
        "cache_key",
        svc.put_preview(f.org_a, &preview("s", &too_long_key)),
    )
    .await;
    refused(
        &f,
        "cache_key",
        ta.put_preview(&preview("s", &too_long_key)),
    )
    .await;
    // Lookups also find keys written by plain SQL, up to the column's 255.
    refused(
        &f,
        "cache_key",
        svc.get_preview_by_key(f.org_a, &"é".repeat(256)),
    )
    .await;
    refused(&f, "cache_key", svc.invalidate_preview(f.org_a, "")).await;
    // The longest key fits varchar(255) with its org prefix (characters, not bytes).
    assert_eq!(
        svc.put_preview(f.org_a, &preview("s", &max_key))
            .await
            .unwrap()
            .cache_key,
        max_key
    );

    let mut big = preview("s", "big");
    big.delta_json = json!({ "blob": "x".repeat(validate::MAX_DELTA_JSON_BYTES) });
    refused(&f, "delta_json", svc.put_preview(f.org_a, &big)).await;
    let mut nul = preview("s", "nul");
    nul.delta_json = json!({ "text": "a\u{0}b" });
    // Refused before anything is sent (jsonb cannot hold NUL): no server code.
    let err = refused(&f, "delta_json", svc.put_preview(f.org_a, &nul)).await;
    assert_eq!(err.code(), None);
    for ttl in [
        Duration::ZERO,
        Duration::seconds(-5),
        validate::MAX_PREVIEW_TTL + Duration::SECOND,
    ] {
        let mut p = preview("s", "ttl");
        p.ttl = Some(ttl);
        refused(&f, "ttl", svc.put_preview(f.org_a, &p)).await;
    }
    // A tenant acts only as itself.
    let mut as_b = preview("s", "k");
    as_b.computed_by = Some(f.user_b);
    refused(&f, "computed_by", ta.put_preview(&as_b)).await;
    as_b.computed_by = Some(f.user_a);
    assert_eq!(
        ta.put_preview(&as_b).await.unwrap().computed_by,
        Some(f.user_a)
    );
    // Unknown org / user: foreign keys.
    let err = refused(
        &f,
        "fkey",
        svc.put_preview(Uuid::new_v4(), &preview("s", "k")),
    )
    .await;
    assert_eq!(err.code(), Some("23503"));
    let mut ghost = preview("s", "k");
    ghost.computed_by = Some(Uuid::new_v4());
    refused(&f, "computed_by_fkey", svc.put_preview(f.org_a, &ghost)).await;
}

#[tokio::test]
async fn progress_inputs() {
    let f = Fixture::new().await;
    let svc = f.store.service();
    let ta = f.store.tenant(f.user_a);
    let mut ok = StartSync::new("s", SyncEntityType::Coupon);
    ok.total_items = Some(10);
    svc.start_sync(f.org_a, &ok).await.unwrap();

    let start = |edit: fn(&mut StartSync)| {
        let mut s = StartSync::new("new", SyncEntityType::Coupon);
        edit(&mut s);
        s
    };
    refused(
        &f,
        "sync_id",
        svc.start_sync(f.org_a, &start(|s| s.sync_id.clear())),
    )
    .await;
    refused(
        &f,
        "sync_id",
        svc.start_sync(f.org_a, &start(|s| s.sync_id = "y".repeat(256))),
    )
    .await;
    refused(
        &f,
        "total_items",
        svc.start_sync(f.org_a, &start(|s| s.total_items = Some(-1))),
    )
    .await;
    refused(
        &f,
        "source_system",
        svc.start_sync(f.org_a, &start(|s| s.source_system = Some("s".repeat(51)))),
    )
    .await;
    refused(
        &f,
        "job_id",
        svc.start_sync(f.org_a, &start(|s| s.job_id = Some("j".repeat(256)))),
    )
    .await;
    refused(
        &f,
        "metadata",
        svc.start_sync(f.org_a, &start(|s| s.metadata = Some(json!([1, 2])))),
    )
    .await;
    refused(
        &f,
        "metadata",
        svc.start_sync(
            f.org_a,
            &start(|s| s.metadata = Some(json!({"_sync_outcome": {"status": "failed"}}))),
        ),
    )
    .await;
    refused(
        &f,
        "metadata",
        ta.start_sync(&start(|s| s.metadata = Some(json!({"_sync_outcome": 1})))),
    )
    .await;
    refused(
        &f,
        "metadata",
        svc.start_sync(
            f.org_a,
            &start(|s| s.metadata = Some(json!({"x": "m".repeat(validate::MAX_METADATA_BYTES)}))),
        ),
    )
    .await;
    refused(
        &f,
        "initiated_by_fkey",
        svc.start_sync(f.org_a, &start(|s| s.initiated_by = Some(Uuid::new_v4()))),
    )
    .await;
    refused(
        &f,
        "org_id_fkey",
        svc.start_sync(Uuid::new_v4(), &start(|_| ())),
    )
    .await;

    let d = |processed, failed, current_item, batch_number| ProgressDelta {
        processed,
        failed,
        current_item,
        batch_number,
    };
    refused(
        &f,
        "processed",
        svc.report_progress(f.org_a, "s", &d(-1, 0, None, None)),
    )
    .await;
    refused(
        &f,
        "failed",
        svc.report_progress(f.org_a, "s", &d(0, -1, None, None)),
    )
    .await;
    refused(
        &f,
        "current_item",
        svc.report_progress(f.org_a, "s", &d(0, 0, Some(-1), None)),
    )
    .await;
    refused(
        &f,
        "batch_number",
        svc.report_progress(f.org_a, "s", &d(0, 0, None, Some(-3))),
    )
    .await;
    refused(
        &f,
        "sync_id",
        svc.report_progress(f.org_a, "", &d(1, 0, None, None)),
    )
    .await;
    // processed + failed above total: the database CHECK refuses it.
    let err = refused(
        &f,
        "sync_progress_handled_within_total",
        svc.report_progress(f.org_a, "s", &d(8, 3, None, None)),
    )
    .await;
    assert_eq!(err.code(), Some("23514"));
    refused(
        &f,
        "sync_progress_handled_within_total",
        ta.report_progress("s", &d(11, 0, None, None)),
    )
    .await;
    refused(&f, "total_items", svc.set_total(f.org_a, "s", Some(-2))).await;
    svc.report_progress(f.org_a, "s", &d(4, 0, None, None))
        .await
        .unwrap();
    refused(
        &f,
        "sync_progress_handled_within_total",
        svc.set_total(f.org_a, "s", Some(3)),
    )
    .await;
    // Integer overflow of a count (no total).
    svc.start_sync(f.org_a, &StartSync::new("big", SyncEntityType::Coupon))
        .await
        .unwrap();
    svc.report_progress(f.org_a, "big", &d(i32::MAX, 0, None, None))
        .await
        .unwrap();
    let err = refused(
        &f,
        "value",
        svc.report_progress(f.org_a, "big", &d(1, 0, None, None)),
    )
    .await;
    assert_eq!(err.code(), Some("22003"));

    let huge = "e".repeat(validate::MAX_ERROR_MESSAGE_BYTES + 1);
    refused(&f, "error_message", svc.fail_sync(f.org_a, "s", &huge)).await;
    refused(
        &f,
        "error_message",
        svc.cancel_sync(f.org_a, "s", Some("a\0b")),
    )
    .await;
    refused(&f, "limit", svc.list_recent_syncs(f.org_a, 0)).await;
    refused(
        &f,
        "limit",
        ta.list_recent_syncs(validate::MAX_PAGE_SIZE + 1),
    )
    .await;
}

#[tokio::test]
async fn activity_inputs() {
    let f = Fixture::new().await;
    let svc = f.store.service();
    let ta = f.store.tenant(f.user_a);
    let e = |edit: fn(&mut NewActivity)| {
        let mut n = NewActivity::new(SyncAction::RecordUpdate, SyncStatus::Completed);
        edit(&mut n);
        n
    };
    for (field, bad) in [
        ("record_count", e(|n| n.record_count = -1)),
        (
            "duration_seconds",
            e(|n| n.duration_seconds = Some(f64::NAN)),
        ),
        (
            "duration_seconds",
            e(|n| n.duration_seconds = Some(f64::INFINITY)),
        ),
        ("duration_seconds", e(|n| n.duration_seconds = Some(-0.5))),
        ("sync_id", e(|n| n.sync_id = Some(String::new()))),
        ("sync_id", e(|n| n.sync_id = Some("z".repeat(256)))),
        ("error_message", e(|n| n.error_message = Some("\0".into()))),
        ("user_id_fkey", e(|n| n.user_id = Some(Uuid::new_v4()))),
    ] {
        refused(&f, field, svc.append_activity(f.org_a, &bad)).await;
        // One bad entry refuses the whole batch.
        let batch = vec![e(|_| ()), bad.clone(), e(|_| ())];
        refused(&f, field, svc.append_activity_many(f.org_a, &batch)).await;
        if !field.ends_with("fkey") {
            refused(&f, field, ta.append_activity(&bad)).await;
        }
    }
    refused(
        &f,
        "org_id_fkey",
        svc.append_activity(Uuid::new_v4(), &e(|_| ())),
    )
    .await;
    refused(
        &f,
        "limit",
        svc.list_activity(f.org_a, &ActivityFilter::default(), None, 0),
    )
    .await;
    refused(
        &f,
        "limit",
        ta.list_activity(&ActivityFilter::default(), None, 1001),
    )
    .await;
    let filter = ActivityFilter {
        sync_id: Some("q".repeat(300)),
        ..Default::default()
    };
    refused(&f, "sync_id", svc.list_activity(f.org_a, &filter, None, 10)).await;
    assert_eq!(f.count("sync_activity_log").await, 0);
}
