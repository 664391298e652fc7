//! Tenant role and claims never survive on a pooled connection: after tenant
//! calls that succeed, fail in many ways, or are cancelled mid-flight, 1200 pool
//! checkouts show the session user, no claims and no open transaction.
mod store_common;

use std::time::Duration;

use serde_json::json;
use store_common::Fixture;
use sync_store::{Error, ProgressDelta, PutPreview, StartSync, Store, SyncEntityType, SyncType};
use uuid::Uuid;

/// Checks every pooled connection 100 times over. Coverage is measured, not
/// assumed: each round must see `POOL_SIZE` distinct backends, and afterwards
/// every live backend of `role` in this database (every connection the store
/// opened and did not close) must be among the backends checked, so a
/// connection that escaped the pool with tenant state on it fails here. That
/// last check needs a role only the pool uses (`dedicated_role`); with the
/// superuser, other sessions (the test's own) are live too.
async fn assert_pool_clean(store: &Store, role: &str, dedicated_role: bool) {
    let pool = store.pool();
    let mut checked = std::collections::BTreeSet::new();
    for round in 0..100 {
        let mut this_round = std::collections::BTreeSet::new();
        // Hold all 12 connections at once, so every pooled connection is checked each round.
        let objs =
            futures_util::future::try_join_all((0..sync_tests::POOL_SIZE).map(|_| pool.get()))
                .await
                .unwrap();
        for obj in &objs {
            // Simple protocol (one message): in a fresh implicit transaction
            // now() equals statement_timestamp(); inside an older one it does not.
            let msgs = obj
                .simple_query(
                    "SELECT current_user::text, session_user::text, \
                            coalesce(current_setting('request.jwt.claims', true), ''), \
                            coalesce(current_setting('request.jwt.claim.sub', true), ''), \
                            (now() = statement_timestamp())::text, \
                            pg_backend_pid()::text",
                )
                .await
                .unwrap();
            let row = msgs
                .iter()
                .find_map(|m| match m {
                    tokio_postgres::SimpleQueryMessage::Row(r) => Some(r),
                    _ => None,
                })
                .unwrap();
            let get = |i: usize| row.get(i).unwrap().to_owned();
            let (cur, sess, claims, sub, fresh_tx) =
                (get(0), get(1), get(2), get(3), get(4) == "true");
            assert_eq!(cur, role, "current_user is the login role, not sync_tenant");
            assert_eq!(sess, role);
            assert_eq!(claims, "", "no claims left");
            assert_eq!(sub, "", "no claim.sub left");
            assert!(
                fresh_tx,
                "not inside a transaction left open by an earlier call"
            );
            this_round.insert(get(5));
        }
        assert_eq!(
            this_round.len(),
            sync_tests::POOL_SIZE,
            "round {round}: every pooled connection checked"
        );
        checked.extend(this_round);
    }
    if !dedicated_role {
        return;
    }
    let obj = pool.get().await.unwrap();
    let live: std::collections::BTreeSet<String> = obj
        .query(
            "SELECT pid::text FROM pg_stat_activity \
             WHERE usename = $1 AND datname = current_database()",
            &[&role],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let unchecked: Vec<&String> = live.difference(&checked).collect();
    assert!(
        unchecked.is_empty(),
        "backends of {role} that no checkout reached (connections outside the pool): \
         {unchecked:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_survives_on_pooled_connections() {
    let f = Fixture::new().await;
    let (role, config) = f.db.login_role("pool").await;
    let store = Store::new(sync_tests::pool_for(&config));
    let ta = store.tenant(f.user_a);
    let mut start = StartSync::new("s1", SyncEntityType::Product);
    start.total_items = Some(1_000);
    ta.start_sync(&start).await.unwrap();

    for i in 0..40 {
        // Successful reads and writes.
        ta.report_progress(
            "s1",
            &ProgressDelta {
                processed: 1,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        ta.put_preview(&PutPreview::new(
            SyncType::Custom,
            "s1",
            format!("k{i}"),
            json!({"i": i}),
        ))
        .await
        .unwrap();
        ta.list_activity(&Default::default(), None, 100)
            .await
            .unwrap();
        ta.metrics(None).await.unwrap();
        // Failing calls of every kind.
        let err = ta
            .report_progress(
                "s1",
                &ProgressDelta {
                    processed: 5_000,
                    ..Default::default()
                },
            )
            .await
            .unwrap_err();
        assert!(matches!(err, Error::InvalidInput { .. }), "{err}");
        let err = ta.start_sync(&start).await.unwrap_err();
        assert!(matches!(err, Error::Conflict { .. }), "{err}");
        let err = ta
            .report_progress("missing", &ProgressDelta::default())
            .await
            .unwrap_err();
        assert!(matches!(err, Error::NotFound { .. }), "{err}");
        let err = store
            .tenant(Uuid::new_v4())
            .get_sync("s1")
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Forbidden { .. }), "{err}");
        let err = store.service().get_sync(f.org_a, "s1").await.unwrap_err();
        assert!(matches!(err, Error::Forbidden { .. }), "{err}");
    }

    // Cancelled mid-flight: hold the row lock from another session so the
    // tenant's UPDATE waits inside its transaction (role and claims set), then
    // drop the call's future.
    for _ in 0..3 {
        let mut locker = f.db.client().await;
        let tx = locker.transaction().await.unwrap();
        tx.execute(
            "SELECT 1 FROM sync_progress WHERE sync_id = 's1' FOR UPDATE",
            &[],
        )
        .await
        .unwrap();
        let one = ProgressDelta {
            processed: 1,
            ..Default::default()
        };
        let call = ta.report_progress("s1", &one);
        let outcome = tokio::time::timeout(Duration::from_millis(300), call).await;
        assert!(
            outcome.is_err(),
            "the call must still be waiting for the row lock"
        );
        // A cancelled read as well (waits behind nothing, so it may finish: either way is fine).
        let _ = tokio::time::timeout(
            Duration::from_micros(1),
            ta.list_activity(&Default::default(), None, 10),
        )
        .await;
        tx.rollback().await.unwrap();
    }

    assert_pool_clean(&store, &role, true).await;

    // No backend of this database is left idle in a transaction.
    let stuck: i64 = f
        .admin
        .query_one(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND state LIKE 'idle in transaction%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(stuck, 0);

    // The store still works after all that.
    let p = ta.get_sync("s1").await.unwrap().unwrap();
    assert!(p.processed_count >= 40);
}

/// The bulk path holds a transaction across several round trips: cancelled
/// while COPY waits for a table lock, its connection must not return to the pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_bulk_append_leaves_no_open_transaction() {
    let f = Fixture::new().await;
    let svc = f.store.service();
    let me: String = f
        .admin
        .query_one("SELECT session_user::text", &[])
        .await
        .unwrap()
        .get(0);
    let entries = vec![
        sync_store::NewActivity::new(
            sync_store::SyncAction::RecordCreate,
            sync_store::SyncStatus::Completed
        );
        50
    ];
    // Warm up: the enum OIDs are cached and the pool has connections.
    assert_eq!(
        svc.append_activity_many(f.org_a, &entries).await.unwrap(),
        50
    );
    for _ in 0..3 {
        let mut locker = f.db.client().await;
        let tx = locker.transaction().await.unwrap();
        tx.batch_execute("LOCK TABLE sync_activity_log IN ACCESS EXCLUSIVE MODE")
            .await
            .unwrap();
        let outcome = tokio::time::timeout(
            Duration::from_millis(300),
            svc.append_activity_many(f.org_a, &entries),
        )
        .await;
        assert!(
            outcome.is_err(),
            "the COPY must still be waiting for the table lock"
        );
        tx.rollback().await.unwrap();
    }
    assert_pool_clean(&f.store, &me, false).await;
    assert_eq!(
        svc.append_activity_many(f.org_a, &entries).await.unwrap(),
        50
    );
    assert_eq!(
        f.count("sync_activity_log").await,
        100,
        "cancelled batches wrote nothing"
    );
}
