//! Error mapping: what a caller sees, with SQLSTATE, server message and operation.
mod store_common;

use store_common::Fixture;
use sync_store::{Error, StartSync, Store, SyncEntityType};

#[tokio::test]
async fn server_errors_keep_sqlstate_message_and_operation() {
    let f = Fixture::new().await;
    let svc = f.store.service();
    svc.start_sync(f.org_a, &StartSync::new("s", SyncEntityType::Refund))
        .await
        .unwrap();
    let err = svc
        .start_sync(f.org_a, &StartSync::new("s", SyncEntityType::Refund))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Conflict { .. }));
    assert_eq!(err.code(), Some("23505"));
    assert_eq!(err.operation(), "start_sync");
    let server = err.server().unwrap();
    assert_eq!(
        server.constraint.as_deref(),
        Some("sync_progress_org_id_sync_id_key")
    );
    assert!(server
        .detail
        .as_deref()
        .unwrap_or("")
        .contains("(org_id, sync_id)"));
    let text = err.to_string();
    assert!(
        text.contains("start_sync")
            && text.contains("SQLSTATE 23505")
            && text.contains("duplicate key"),
        "{text}"
    );
    assert!(!err.is_retryable());

    let err = svc.get_sync(f.org_a, "nope").await.unwrap();
    assert!(err.is_none());
    let err = svc.complete_sync(f.org_a, "nope").await.unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }));
    assert_eq!((err.code(), err.operation()), (None, "complete_sync"));
}

#[tokio::test]
async fn unreachable_server_is_unavailable() {
    let f = Fixture::new().await;
    let mut config = f.db.config();
    config
        .host("127.0.0.1")
        .port(1)
        .connect_timeout(std::time::Duration::from_secs(2));
    let store = Store::new(sync_tests::pool_for(&config));
    let err = store.service().get_sync(f.org_a, "s").await.unwrap_err();
    assert!(matches!(err, Error::Unavailable { .. }), "{err}");
    assert!(err.is_retryable());
    let err = store.tenant(f.user_a).get_sync("s").await.unwrap_err();
    assert!(matches!(err, Error::Unavailable { .. }), "{err}");
}

/// When the pool's role may not switch to sync_tenant, the tenant set-up fails,
/// the transaction is aborted, and the statement never runs outside RLS.
#[tokio::test]
async fn tenant_setup_failure_is_forbidden_and_runs_nothing() {
    let f = Fixture::new().await;
    let (role, config) = f.db.login_role("norole").await;
    f.admin
        .batch_execute(&format!(
            "REVOKE sync_tenant FROM {role}; GRANT SELECT, INSERT, UPDATE ON sync_progress TO {role}; \
             GRANT USAGE ON SCHEMA auth TO {role}; GRANT SELECT ON auth.users_extended TO {role}; \
             GRANT EXECUTE ON FUNCTION auth.uid() TO {role}"
        ))
        .await
        .unwrap();
    let store = Store::new(sync_tests::pool_for(&config));
    let err = store
        .tenant(f.user_a)
        .start_sync(&StartSync::new("s", SyncEntityType::Refund))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Forbidden { .. }), "{err}");
    assert_eq!(err.code(), Some("42501"));
    assert_eq!(f.count("sync_progress").await, 0);
}

/// A user without an auth.users_extended row belongs to no org: every tenant
/// function answers Forbidden and writes nothing, even where the statement
/// would return a row (counts, metrics) or only fail on NOT NULL.
#[tokio::test]
async fn user_without_org_is_forbidden_in_every_tenant_function() {
    use sync_store::{
        ActivityFilter, NewActivity, ProgressDelta, PutPreview, SyncAction, SyncStatus, SyncType,
    };
    let f = Fixture::new().await;
    // Rows exist (org A), so emptiness is not what the answer rests on.
    f.store
        .service()
        .start_sync(f.org_a, &StartSync::new("s", SyncEntityType::Refund))
        .await
        .unwrap();
    f.store
        .service()
        .put_preview(
            f.org_a,
            &PutPreview::new(SyncType::Odoo, "s", "k", serde_json::json!({})),
        )
        .await
        .unwrap();
    let before = store_common::snapshot(&f.admin).await;
    let t = f.store.tenant(uuid::Uuid::new_v4());
    fn forbidden<T: std::fmt::Debug>(r: sync_store::Result<T>, what: &str) {
        match r {
            Err(Error::Forbidden { .. }) => {}
            other => panic!("{what}: expected Forbidden, got {other:?}"),
        }
    }
    forbidden(
        t.put_preview(&PutPreview::new(
            SyncType::Odoo,
            "s",
            "k",
            serde_json::json!({}),
        ))
        .await,
        "put_preview",
    );
    forbidden(t.get_preview_by_key("k").await, "get_preview_by_key");
    forbidden(
        t.get_preview_by_sync_id("s").await,
        "get_preview_by_sync_id",
    );
    forbidden(t.invalidate_preview("k").await, "invalidate_preview");
    forbidden(
        t.invalidate_previews_for_sync("s").await,
        "invalidate_previews_for_sync",
    );
    forbidden(
        t.cleanup_expired_previews().await,
        "cleanup_expired_previews",
    );
    forbidden(
        t.start_sync(&StartSync::new("s2", SyncEntityType::Refund))
            .await,
        "start_sync",
    );
    forbidden(
        t.report_progress("s", &ProgressDelta::default()).await,
        "report_progress",
    );
    forbidden(t.set_total("s", Some(1)).await, "set_total");
    forbidden(t.complete_sync("s").await, "complete_sync");
    forbidden(t.fail_sync("s", "x").await, "fail_sync");
    forbidden(t.cancel_sync("s", None).await, "cancel_sync");
    forbidden(t.get_sync("s").await, "get_sync");
    forbidden(t.list_active_syncs().await, "list_active_syncs");
    forbidden(t.list_recent_syncs(10).await, "list_recent_syncs");
    forbidden(t.find_syncs_by_job("j").await, "find_syncs_by_job");
    forbidden(
        t.append_activity(&NewActivity::new(
            SyncAction::SyncRetry,
            SyncStatus::Pending,
        ))
        .await,
        "append_activity",
    );
    forbidden(
        t.list_activity(&ActivityFilter::default(), None, 10).await,
        "list_activity",
    );
    forbidden(t.metrics(None).await, "metrics");
    assert_eq!(store_common::snapshot(&f.admin).await, before);
    // A user with an org but no data gets empty answers, not Forbidden.
    let tb = f.store.tenant(f.user_b);
    assert!(tb.get_sync("s").await.unwrap().is_none());
    assert!(!tb.invalidate_preview("k").await.unwrap());
    assert_eq!(tb.cleanup_expired_previews().await.unwrap(), 0);
    let m = tb.metrics(None).await.unwrap();
    assert_eq!(
        (
            m.activity_total,
            m.cache_live,
            m.cache_expired,
            m.active_syncs
        ),
        (0, 0, 0, 0)
    );
    assert_eq!(
        (m.success_rate, m.error_rate),
        (None, None),
        "no division by zero"
    );
    assert_eq!(
        (m.avg_speed_items_per_min, m.avg_duration_seconds),
        (None, None)
    );
    assert!(tb
        .list_activity(&ActivityFilter::default(), None, 10)
        .await
        .unwrap()
        .entries
        .is_empty());
}

/// Scopes and their futures are Send + 'static-able: handlers and workers can
/// spawn them.
#[tokio::test]
async fn futures_are_send() {
    use sync_store::{ActivityFilter, NewActivity, SyncAction, SyncStatus};
    let f = Fixture::new().await;
    let (svc, ta, org) = (f.store.service(), f.store.tenant(f.user_a), f.org_a);
    let entries = vec![NewActivity::new(SyncAction::RecordCreate, SyncStatus::Completed); 3];
    let bulk = tokio::spawn(async move { svc.append_activity_many(org, &entries).await });
    assert_eq!(bulk.await.unwrap().unwrap(), 3);
    let list =
        tokio::spawn(async move { ta.list_activity(&ActivityFilter::default(), None, 10).await });
    assert_eq!(list.await.unwrap().unwrap().entries.len(), 3);
}
