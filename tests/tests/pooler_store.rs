//! The store through a real PgBouncer (Debian's `pgbouncer`) in transaction
//! mode, as on Neon's pooled endpoints: every service and tenant call works
//! from many concurrent tasks, because no named prepared statement outlives a
//! transaction. (PgBouncer 1.18 in transaction mode does not track named
//! statements: using one in a later transaction fails with "prepared statement
//! … does not exist" — the control test below shows this set-up catches that.)

use sync_store::{
    ActivityFilter, NewActivity, ProgressDelta, PutPreview, StartSync, Store, SyncAction,
    SyncEntityType, SyncStatus, SyncType,
};
use sync_tests::{connect, pool_for, PgBouncer, PoolMode, TestDb};
use uuid::Uuid;

const TASKS: usize = 8;
const PER_RECORD_ENTRIES: i32 = 10;

/// Round robin spreads consecutive transactions of one client over the server
/// connections, so a statement named in one transaction is missing in the next.
const ROUND_ROBIN: &str = "server_round_robin = 1\n";

async fn org_with_user(db: &TestDb) -> (Uuid, Uuid) {
    let (org, user) = (Uuid::new_v4(), Uuid::new_v4());
    let c = db.client().await;
    c.execute(
        "INSERT INTO organization (id, name) VALUES ($1, 'o')",
        &[&org],
    )
    .await
    .unwrap();
    c.execute(
        "INSERT INTO auth.users_extended (id, org_id) VALUES ($1, $2)",
        &[&user, &org],
    )
    .await
    .unwrap();
    (org, user)
}

/// One worker's and one API user's calls, service and tenant scope interleaved.
async fn one_task(store: Store, org: Uuid, user: Uuid, i: usize) {
    let svc = store.service();
    let tenant = store.tenant(user);
    let sync = format!("svc-{i}");

    let delta = serde_json::json!({"create": i, "update": 2});
    let put = svc
        .put_preview(
            org,
            &PutPreview::new(SyncType::Woocommerce, &sync, format!("k{i}"), delta.clone()),
        )
        .await
        .unwrap();
    assert_eq!(put.delta_json, delta);
    let got = svc.get_preview_by_key(org, &format!("k{i}")).await.unwrap();
    assert_eq!(got.map(|p| p.id), Some(put.id));
    let seen = tenant.get_preview_by_sync_id(&sync).await.unwrap();
    assert_eq!(seen.map(|p| p.id), Some(put.id));

    let mut start = StartSync::new(&sync, SyncEntityType::Product);
    start.total_items = Some(20);
    svc.start_sync(org, &start).await.unwrap();
    for batch in 0..4 {
        let counts = svc
            .report_progress(
                org,
                &sync,
                &ProgressDelta {
                    processed: 4,
                    failed: 1,
                    current_item: Some((batch + 1) * 5),
                    batch_number: Some(batch),
                },
            )
            .await
            .unwrap();
        assert_eq!(counts.processed_count, 4 * (batch + 1));
    }
    let p = tenant
        .get_sync(&sync)
        .await
        .unwrap()
        .expect("visible to the tenant");
    assert!(
        p.completed_at.is_some(),
        "20 of 20 handled completes the sync"
    );

    let entries: Vec<NewActivity> = (0..PER_RECORD_ENTRIES)
        .map(|n| {
            let mut e = NewActivity::new(SyncAction::RecordCreate, SyncStatus::Completed);
            e.sync_id = Some(sync.clone());
            e.entity_type = Some(SyncEntityType::Product);
            e.record_count = n;
            e
        })
        .collect();
    assert_eq!(
        svc.append_activity_many(org, &entries).await.unwrap(),
        PER_RECORD_ENTRIES as u64
    );
    let filter = ActivityFilter {
        sync_id: Some(sync.clone()),
        ..ActivityFilter::default()
    };
    let page = svc.list_activity(org, &filter, None, 100).await.unwrap();
    assert_eq!(page.entries.len(), PER_RECORD_ENTRIES as usize + 2);

    // The API user runs its own sync through RLS.
    let mine = format!("tenant-{i}");
    let mut start = StartSync::new(&mine, SyncEntityType::Order);
    start.total_items = Some(10);
    tenant.start_sync(&start).await.unwrap();
    tenant
        .report_progress(
            &mine,
            &ProgressDelta {
                processed: 3,
                ..ProgressDelta::default()
            },
        )
        .await
        .unwrap();
    let done = tenant.complete_sync(&mine).await.unwrap();
    assert_eq!(done.processed_count, 3);
    let page = tenant.list_activity(&filter, None, 100).await.unwrap();
    assert_eq!(page.entries.len(), PER_RECORD_ENTRIES as usize + 2);
    tenant.metrics(None).await.unwrap();
    svc.metrics(org, None).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_and_tenant_calls_work_concurrently_through_transaction_mode_pgbouncer() {
    sync_tests::skip_without_pgbouncer!();
    let db = TestDb::migrated().await;
    let (org, user) = org_with_user(&db).await;
    let bouncer = PgBouncer::start_with(&db, PoolMode::Transaction, &[], ROUND_ROBIN).await;
    let store = Store::new(pool_for(&bouncer.config()));

    let tasks: Vec<_> = (0..TASKS)
        .map(|i| tokio::spawn(one_task(store.clone(), org, user, i)))
        .collect();
    for t in tasks {
        if let Err(e) = t.await {
            panic!("a task failed: {e}\npgbouncer log:\n{}", bouncer.log());
        }
    }

    // Everything landed, checked on a direct connection.
    let c = db.client().await;
    let row = c
        .query_one(
            "SELECT (SELECT count(*) FROM sync_progress WHERE completed_at IS NOT NULL), \
                    (SELECT count(*) FROM sync_preview_cache), \
                    (SELECT count(*) FROM sync_activity_log)",
            &[],
        )
        .await
        .unwrap();
    let per_task = PER_RECORD_ENTRIES as i64 + 2 + 2; // per-record + two syncs' start and end
    assert_eq!(row.get::<_, i64>(0), 2 * TASKS as i64);
    assert_eq!(row.get::<_, i64>(1), TASKS as i64);
    assert_eq!(row.get::<_, i64>(2), per_task * TASKS as i64);
    let m = store.service().metrics(org, None).await.unwrap();
    assert_eq!(m.activity_total, per_task * TASKS as i64);
    assert_eq!(m.active_syncs, 0);
    assert!(
        !bouncer.log().contains("prepared statement"),
        "{}",
        bouncer.log()
    );
}

#[tokio::test]
async fn control_a_named_prepared_statement_fails_in_a_later_transaction_there() {
    sync_tests::skip_without_pgbouncer!();
    let db = TestDb::migrated().await;
    let bouncer = PgBouncer::start_with(&db, PoolMode::Transaction, &[], ROUND_ROBIN).await;
    // Two server connections in PgBouncer's pool: hold two transactions at once.
    let (w1, w2) = (
        connect(&bouncer.config()).await,
        connect(&bouncer.config()).await,
    );
    w1.batch_execute("BEGIN; SELECT 1").await.unwrap();
    w2.batch_execute("BEGIN; SELECT 1").await.unwrap();
    w1.batch_execute("COMMIT").await.unwrap();
    w2.batch_execute("COMMIT").await.unwrap();

    let c = connect(&bouncer.config()).await;
    let mut failures = Vec::new();
    for _ in 0..4 {
        let stmt = c.prepare("SELECT 1").await.unwrap(); // a named statement
        if let Err(e) = c.query(&stmt, &[]).await {
            failures.push(format!("{e:?}"));
        }
    }
    assert!(
        failures.iter().any(|e| e.contains("does not exist")),
        "a named statement survived across transactions: the set-up does not test what it claims \
         (failures: {failures:?})"
    );
}
