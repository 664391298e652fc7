//! Retryable means safe to retry: a write that lost its connection after it
//! was sent is `OutcomeUnknown` (retryable only when keyed), one the server
//! aborted is `Unavailable`; keyed writes apply at most once per key.

mod store_common;

use std::future::Future;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use store_common::Fixture;
use sync_store::{
    Error, NewActivity, ProgressDelta, StartSync, StatementMode, Store, SyncAction, SyncEntityType,
    SyncStatus,
};
use sync_tests::cut_proxy::CutProxy;
use time::OffsetDateTime;
use tokio_postgres::{Client, Config, NoTls};
use uuid::Uuid;

/// 2026-01-15T10:00:00Z: a stated date inside 0024's 2026_01 partition.
fn jan_15() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_768_471_200).unwrap()
}

const MODES: [StatementMode; 2] = [StatementMode::Unnamed, StatementMode::CachedPerConnection];

fn one_connection_pool(config: &Config) -> Pool {
    let manager = Manager::from_config(
        config.clone(),
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager).max_size(1).build().unwrap()
}

fn delta(processed: i32) -> ProgressDelta {
    ProgressDelta {
        processed,
        ..Default::default()
    }
}

/// Polls `probe` until it is true; a bounded wait (30 s), not a timing check.
async fn wait_until<F, Fut>(what: &str, mut probe: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    for _ in 0..1500 {
        if probe().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("gave up waiting for: {what}");
}

async fn processed(admin: &Client, org: Uuid, sync_id: &str) -> i32 {
    admin
        .query_one(
            "SELECT processed_count FROM sync_progress WHERE org_id = $1 AND sync_id = $2",
            &[&org, &sync_id],
        )
        .await
        .unwrap()
        .get(0)
}

async fn key_rows(admin: &Client, org: Uuid, sync_id: &str) -> i64 {
    admin
        .query_one(
            "SELECT count(*) FROM sync_progress_tick_key WHERE org_id = $1 AND sync_id = $2",
            &[&org, &sync_id],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn keyed_ticks_apply_each_key_once_in_any_order_in_both_scopes_and_modes() {
    let f = Fixture::new().await;
    for mode in MODES {
        let store = Store::with_statement_mode(f.db.pool(), mode);
        let svc = store.service();
        let sync_id = format!("svc-{mode:?}");
        svc.start_sync(f.org_a, &StartSync::new(&sync_id, SyncEntityType::Product))
            .await
            .unwrap();
        let mut applied = Vec::new();
        for key in [5, 3, 9, 3, 5, 9] {
            let out = svc
                .report_progress_keyed(f.org_a, &sync_id, key, &delta(key as i32))
                .await
                .unwrap();
            applied.push(out.applied);
            assert_eq!(
                out.counts.processed_count,
                processed(&f.admin, f.org_a, &sync_id).await
            );
        }
        assert_eq!(applied, [true, true, true, false, false, false], "{mode:?}");
        assert_eq!(
            processed(&f.admin, f.org_a, &sync_id).await,
            5 + 3 + 9,
            "{mode:?}"
        );
        // The same key on another sync (or another org) is another key.
        let other = format!("other-{mode:?}");
        svc.start_sync(f.org_b, &StartSync::new(&other, SyncEntityType::Order))
            .await
            .unwrap();
        assert!(
            svc.report_progress_keyed(f.org_b, &other, 5, &delta(1))
                .await
                .unwrap()
                .applied
        );

        // Tenant scope, through RLS.
        let tenant = store.tenant(f.user_a);
        let t_sync = format!("tenant-{mode:?}");
        tenant
            .start_sync(&StartSync::new(&t_sync, SyncEntityType::Order))
            .await
            .unwrap();
        let flags: Vec<bool> = {
            let mut v = Vec::new();
            for key in [2, 1, 2, 1, 4] {
                v.push(
                    tenant
                        .report_progress_keyed(&t_sync, key, &delta(10))
                        .await
                        .unwrap()
                        .applied,
                );
            }
            v
        };
        assert_eq!(flags, [true, true, false, false, true], "{mode:?}");
        assert_eq!(processed(&f.admin, f.org_a, &t_sync).await, 30);
        // Another org's tenant does not see (or tick) this sync.
        let err = store
            .tenant(f.user_b)
            .report_progress_keyed(&t_sync, 99, &delta(1))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
        assert_eq!(processed(&f.admin, f.org_a, &t_sync).await, 30);

        // Finishing prunes the keys; a repeat afterwards applies nothing.
        assert_eq!(key_rows(&f.admin, f.org_a, &t_sync).await, 3);
        tenant.complete_sync(&t_sync).await.unwrap();
        assert_eq!(key_rows(&f.admin, f.org_a, &t_sync).await, 0);
        let err = tenant
            .report_progress_keyed(&t_sync, 2, &delta(10))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::SyncFinished { .. }), "{err:?}");
        assert_eq!(processed(&f.admin, f.org_a, &t_sync).await, 30);
    }
}

/// A keyed tick that completes the sync (handled reaches the total): its key
/// goes with the others in the same statement; the repeat applies nothing.
#[tokio::test]
async fn keyed_tick_that_completes_the_sync_prunes_the_keys() {
    let f = Fixture::new().await;
    let svc = f.store.service();
    let mut start = StartSync::new("done", SyncEntityType::Product);
    start.total_items = Some(10);
    svc.start_sync(f.org_a, &start).await.unwrap();
    svc.report_progress_keyed(f.org_a, "done", 1, &delta(4))
        .await
        .unwrap();
    assert_eq!(key_rows(&f.admin, f.org_a, "done").await, 1);
    let out = svc
        .report_progress_keyed(f.org_a, "done", 2, &delta(6))
        .await
        .unwrap();
    assert!(out.applied);
    assert!(out.counts.completed_at.is_some());
    assert_eq!(key_rows(&f.admin, f.org_a, "done").await, 0);
    let err = svc
        .report_progress_keyed(f.org_a, "done", 2, &delta(6))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::SyncFinished { .. }), "{err:?}");
    assert_eq!(processed(&f.admin, f.org_a, "done").await, 10);
}

#[tokio::test]
async fn tick_keys_stay_closed_to_other_orgs_tenants() {
    let f = Fixture::new().await;
    let svc = f.store.service();
    svc.start_sync(f.org_a, &StartSync::new("s", SyncEntityType::Product))
        .await
        .unwrap();
    svc.report_progress_keyed(f.org_a, "s", 1, &delta(1))
        .await
        .unwrap();
    let b = f.store.tenant(f.user_b);
    assert!(b.get_sync("s").await.unwrap().is_none());
    // A tenant of org B planting org A's key by hand: RLS refuses it.
    let (_, config) = f.db.login_role("planter").await;
    let c = sync_tests::connect(&config).await;
    let claims = format!("{{\"sub\":\"{}\"}}", f.user_b);
    c.batch_execute("BEGIN; SET LOCAL ROLE sync_tenant")
        .await
        .unwrap();
    c.execute(
        "SELECT set_config('request.jwt.claims', $1, true)",
        &[&claims],
    )
    .await
    .unwrap();
    let err = c
        .execute(
            "INSERT INTO sync_progress_tick_key (org_id, sync_id, tick_key) VALUES ($1, 's', 2)",
            &[&f.org_a],
        )
        .await
        .unwrap_err();
    assert_eq!(err.code().map(|c| c.code()), Some("42501"), "{err:?}");
    c.batch_execute("ROLLBACK").await.unwrap();
    assert!(
        svc.report_progress_keyed(f.org_a, "s", 2, &delta(1))
            .await
            .unwrap()
            .applied
    );
}

#[tokio::test]
async fn keyed_append_writes_one_row_per_id_and_created_at() {
    let f = Fixture::new().await;
    for mode in MODES {
        let svc = Store::with_statement_mode(f.db.pool(), mode).service();
        let id = Uuid::new_v4();
        let mut e = NewActivity::new(SyncAction::RecordCreate, SyncStatus::Completed);
        e.id = Some(id);
        e.created_at = Some(jan_15());
        e.record_count = 1;
        let first = svc.append_activity(f.org_a, &e).await.unwrap();
        assert_eq!(first.id, id);
        assert_eq!(first.created_at, jan_15());
        // A repeat (even with other fields) writes nothing, returns the stored row.
        e.record_count = 2;
        let again = svc.append_activity(f.org_a, &e).await.unwrap();
        assert_eq!(again, first, "{mode:?}");
        let n: i64 = f
            .admin
            .query_one(
                "SELECT count(*) FROM sync_activity_log WHERE id = $1",
                &[&id],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 1, "{mode:?}");
        // Another org cannot read it back through the key.
        let err = svc.append_activity(f.org_b, &e).await.unwrap_err();
        assert!(
            matches!(&err, Error::InvalidInput { field, .. } if field == "id"),
            "{err:?}"
        );
    }
    // An id without created_at is no key: refused, nothing written.
    let before = f.count("sync_activity_log").await;
    let mut e = NewActivity::new(SyncAction::RecordCreate, SyncStatus::Completed);
    e.id = Some(Uuid::new_v4());
    let err = f
        .store
        .service()
        .append_activity(f.org_a, &e)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidInput { field, .. } if field == "id"),
        "{err:?}"
    );
    let err = f
        .store
        .tenant(f.user_a)
        .append_activity(&e)
        .await
        .unwrap_err();
    assert!(matches!(&err, Error::InvalidInput { .. }), "{err:?}");
    assert_eq!(f.count("sync_activity_log").await, before);
}

#[tokio::test]
async fn keyed_batch_is_written_once() {
    let f = Fixture::new().await;
    let svc = f.store.service();
    let key = Uuid::new_v4();
    let rows: Vec<NewActivity> = (0..3)
        .map(|i| {
            let mut e = NewActivity::new(SyncAction::RecordUpdate, SyncStatus::Completed);
            e.record_count = i;
            e
        })
        .collect();
    let before = f.count("sync_activity_log").await;
    let first = svc
        .append_activity_batch(f.org_a, key, &rows)
        .await
        .unwrap();
    assert!(first.applied);
    assert_eq!(first.rows, 3);
    let again = svc
        .append_activity_batch(f.org_a, key, &rows[..1])
        .await
        .unwrap();
    assert!(!again.applied);
    assert_eq!(
        again.rows, 3,
        "a repeat answers the size of the batch that applied"
    );
    assert_eq!(f.count("sync_activity_log").await, before + 3);
    // The same key for another org is another key.
    assert!(
        svc.append_activity_batch(f.org_b, key, &rows)
            .await
            .unwrap()
            .applied
    );
    assert_eq!(f.count("sync_activity_log").await, before + 6);
    // A failed batch records no key: its retry applies.
    let key2 = Uuid::new_v4();
    let mut bad = rows.clone();
    bad[1].user_id = Some(Uuid::new_v4()); // unknown user: foreign key
    let err = svc
        .append_activity_batch(f.org_a, key2, &bad)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidInput { .. }), "{err:?}");
    assert!(
        svc.append_activity_batch(f.org_a, key2, &rows)
            .await
            .unwrap()
            .applied
    );
    assert_eq!(f.count("sync_activity_log").await, before + 9);
}

/// The connection is lost after the server committed the write and before the
/// client heard: `OutcomeUnknown`. Not retryable for a plain tick or append
/// (a repeat would count twice); retryable, and a no-op on repeat, when keyed.
#[tokio::test]
async fn lost_connection_after_commit_is_outcome_unknown() {
    let f = Fixture::new().await;
    for mode in MODES {
        let proxy = CutProxy::start(&f.db.config()).await;
        let store = Store::with_statement_mode(one_connection_pool(&proxy.config()), mode);
        let svc = store.service();
        let sync_id = format!("cut-{mode:?}");
        svc.start_sync(f.org_a, &StartSync::new(&sync_id, SyncEntityType::Product))
            .await
            .unwrap();
        // Warm the connection (and its statement cache) with each statement.
        svc.report_progress(f.org_a, &sync_id, &delta(1))
            .await
            .unwrap();
        svc.report_progress_keyed(f.org_a, &sync_id, 0, &delta(0))
            .await
            .unwrap();
        let base = processed(&f.admin, f.org_a, &sync_id).await;

        // A plain tick: applied, but the caller must not repeat it blindly.
        proxy.arm();
        let call = {
            let svc = svc.clone();
            let s = sync_id.clone();
            let org = f.org_a;
            tokio::spawn(async move { svc.report_progress(org, &s, &delta(10)).await })
        };
        wait_until("the plain tick committed", || async {
            processed(&f.admin, f.org_a, &sync_id).await == base + 10
        })
        .await;
        assert!(proxy.has_victim());
        proxy.cut();
        let err = call.await.unwrap().unwrap_err();
        assert!(
            matches!(
                &err,
                Error::OutcomeUnknown {
                    retry_safe: false,
                    ..
                }
            ),
            "{mode:?}: {err:?}"
        );
        assert!(!err.is_retryable(), "{mode:?}: {err}");
        assert!(err.is_outcome_unknown());
        assert!(err.to_string().contains("read the state back"), "{err}");

        // A keyed tick: applied; the retry is a no-op.
        let svc = store.service();
        svc.report_progress_keyed(f.org_a, &sync_id, 1, &delta(0))
            .await
            .unwrap(); // new connection warmed
        proxy.arm();
        let call = {
            let svc = svc.clone();
            let s = sync_id.clone();
            let org = f.org_a;
            tokio::spawn(async move { svc.report_progress_keyed(org, &s, 7, &delta(100)).await })
        };
        wait_until("the keyed tick committed", || async {
            processed(&f.admin, f.org_a, &sync_id).await == base + 110
        })
        .await;
        proxy.cut();
        let err = call.await.unwrap().unwrap_err();
        assert!(
            matches!(
                &err,
                Error::OutcomeUnknown {
                    retry_safe: true,
                    ..
                }
            ),
            "{mode:?}: {err:?}"
        );
        assert!(err.is_retryable());
        let retry = svc
            .report_progress_keyed(f.org_a, &sync_id, 7, &delta(100))
            .await
            .unwrap();
        assert!(!retry.applied);
        assert_eq!(retry.counts.processed_count, base + 110);
        assert_eq!(processed(&f.admin, f.org_a, &sync_id).await, base + 110);

        // The same through the tenant scope (set-up, tick, COMMIT pipelined).
        let tenant = store.tenant(f.user_a);
        tenant
            .report_progress_keyed(&sync_id, 2, &delta(0))
            .await
            .unwrap();
        proxy.arm();
        let call = {
            let tenant = tenant.clone();
            let s = sync_id.clone();
            tokio::spawn(async move { tenant.report_progress_keyed(&s, 8, &delta(1000)).await })
        };
        wait_until("the tenant's keyed tick committed", || async {
            processed(&f.admin, f.org_a, &sync_id).await == base + 1110
        })
        .await;
        proxy.cut();
        let err = call.await.unwrap().unwrap_err();
        assert!(
            matches!(
                &err,
                Error::OutcomeUnknown {
                    retry_safe: true,
                    ..
                }
            ),
            "{mode:?}: {err:?}"
        );
        let retry = tenant
            .report_progress_keyed(&sync_id, 8, &delta(1000))
            .await
            .unwrap();
        assert!(!retry.applied);
        assert_eq!(processed(&f.admin, f.org_a, &sync_id).await, base + 1110);

        // A keyed append: applied; the retry returns the row, writes nothing.
        let id = Uuid::new_v4();
        let mut e = NewActivity::new(SyncAction::RecordCreate, SyncStatus::Completed);
        e.id = Some(id);
        e.created_at = Some(jan_15());
        let mut warm = e.clone();
        warm.id = Some(Uuid::new_v4());
        svc.append_activity(f.org_a, &warm).await.unwrap();
        let rows_with_id = || async {
            f.admin
                .query_one(
                    "SELECT count(*) FROM sync_activity_log WHERE id = $1",
                    &[&id],
                )
                .await
                .unwrap()
                .get::<_, i64>(0)
        };
        proxy.arm();
        let call = {
            let svc = svc.clone();
            let e = e.clone();
            let org = f.org_a;
            tokio::spawn(async move { svc.append_activity(org, &e).await })
        };
        wait_until("the keyed append committed", || async {
            rows_with_id().await == 1
        })
        .await;
        proxy.cut();
        let err = call.await.unwrap().unwrap_err();
        assert!(
            matches!(
                &err,
                Error::OutcomeUnknown {
                    retry_safe: true,
                    ..
                }
            ),
            "{mode:?}: {err:?}"
        );
        let entry = svc.append_activity(f.org_a, &e).await.unwrap();
        assert_eq!(entry.id, id);
        assert_eq!(rows_with_id().await, 1);
    }
}

/// The server aborts the statement (the backend is terminated while the tick
/// waits on a row lock): certainly not applied, `Unavailable`, retryable.
#[tokio::test]
async fn statement_aborted_by_the_server_is_unavailable_and_not_applied() {
    let f = Fixture::new().await;
    let svc = Store::new(one_connection_pool(&f.db.config())).service();
    svc.start_sync(f.org_a, &StartSync::new("locked", SyncEntityType::Product))
        .await
        .unwrap();
    let locker = f.db.client().await;
    locker
        .batch_execute("BEGIN; SELECT 1 FROM sync_progress WHERE sync_id = 'locked' FOR UPDATE")
        .await
        .unwrap();
    let call = {
        let svc = svc.clone();
        let org = f.org_a;
        tokio::spawn(async move { svc.report_progress(org, "locked", &delta(5)).await })
    };
    let db_name = f.db.name().to_owned();
    let waiting = "SELECT pid FROM pg_stat_activity WHERE datname = $1 \
                   AND wait_event_type = 'Lock' AND query LIKE 'UPDATE sync_progress%'";
    wait_until("the tick waits on the row lock", || async {
        !f.admin
            .query(waiting, &[&db_name])
            .await
            .unwrap()
            .is_empty()
    })
    .await;
    f.admin
        .execute(
            &format!("SELECT pg_terminate_backend(pid) FROM ({waiting}) w"),
            &[&db_name],
        )
        .await
        .unwrap();
    let err = call.await.unwrap().unwrap_err();
    assert!(
        matches!(&err, Error::Unavailable { code: Some(c), .. } if c == "57P01"),
        "{err:?}"
    );
    assert!(err.is_retryable());
    locker.batch_execute("COMMIT").await.unwrap();
    assert_eq!(processed(&f.admin, f.org_a, "locked").await, 0);
    // Retried per the contract, it applies once. The pool may first hand out
    // the dead connection before its driver noticed: then the call was sent
    // on a closed socket and is reported as OutcomeUnknown (never wrongly as
    // "not applied"); a plain tick is then read back before it is repeated.
    let mut tries = 0;
    loop {
        assert!(tries < 50, "gave up after {tries} tries");
        tries += 1;
        match svc.report_progress(f.org_a, "locked", &delta(5)).await {
            Ok(_) => break,
            Err(e) if e.is_retryable() => {}
            Err(e) if e.is_outcome_unknown() => {
                if processed(&f.admin, f.org_a, "locked").await == 5 {
                    break;
                }
            }
            Err(e) => panic!("retry {tries}: {e:?}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(processed(&f.admin, f.org_a, "locked").await, 5);
}

/// Attack: the same key sent by 16 callers at once (a retry racing the
/// original, still running on a half-dead connection) applies exactly once.
#[tokio::test]
async fn concurrent_repeats_of_one_key_apply_once() {
    let f = Fixture::new().await;
    let svc = f.store.service();
    svc.start_sync(f.org_a, &StartSync::new("race", SyncEntityType::Product))
        .await
        .unwrap();
    let ticks: Vec<_> = (0..16)
        .map(|_| {
            let svc = svc.clone();
            let org = f.org_a;
            tokio::spawn(async move {
                svc.report_progress_keyed(org, "race", 42, &delta(3))
                    .await
                    .unwrap()
                    .applied
            })
        })
        .collect();
    let id = Uuid::new_v4();
    let appends: Vec<_> = (0..16)
        .map(|_| {
            let svc = svc.clone();
            let org = f.org_a;
            tokio::spawn(async move {
                let mut e = NewActivity::new(SyncAction::RecordSkip, SyncStatus::Completed);
                e.id = Some(id);
                e.created_at = Some(jan_15());
                svc.append_activity(org, &e).await.unwrap().id
            })
        })
        .collect();
    let key = Uuid::new_v4();
    let batches: Vec<_> = (0..8)
        .map(|_| {
            let svc = svc.clone();
            let org = f.org_a;
            tokio::spawn(async move {
                let mut e = NewActivity::new(SyncAction::RecordSkip, SyncStatus::Completed);
                e.sync_id = Some("race-bulk".into());
                let out = svc
                    .append_activity_batch(org, key, &[e.clone(), e])
                    .await
                    .unwrap();
                assert_eq!(out.rows, 2);
                out.applied
            })
        })
        .collect();
    let mut applied = 0;
    for t in ticks {
        applied += usize::from(t.await.unwrap());
    }
    assert_eq!(applied, 1);
    assert_eq!(processed(&f.admin, f.org_a, "race").await, 3);
    for a in appends {
        assert_eq!(a.await.unwrap(), id);
    }
    let n: i64 = f
        .admin
        .query_one(
            "SELECT count(*) FROM sync_activity_log WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
    let mut applied = 0;
    for b in batches {
        applied += usize::from(b.await.unwrap());
    }
    assert_eq!(applied, 1);
    let n: i64 = f
        .admin
        .query_one(
            "SELECT count(*) FROM sync_activity_log WHERE sync_id = 'race-bulk'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 2);
}
