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
