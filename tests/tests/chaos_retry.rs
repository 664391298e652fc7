//! Chaos on a throwaway cluster of this test's own (never the shared server):
//! eight workers tick one sync and append to the log, each retrying per the
//! contract (`is_retryable()`, same key), while the server's backends are
//! terminated, the server is restarted (fast and immediate), and a proxy
//! between workers and server loses every 37th reply (the server did the
//! work, the worker never hears: outcome unknown). The totals at the end are
//! exact and no audit row is duplicated.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use sync_migrations::MigrateOptions;
use sync_store::{
    Error, NewActivity, ProgressDelta, StartSync, StatementMode, Store, SyncAction, SyncEntityType,
    SyncStatus,
};
use sync_tests::cut_proxy::CutProxy;
use sync_tests::tempcluster::{StopMode, TempCluster};
use time::OffsetDateTime;
use tokio_postgres::{Config, NoTls};
use uuid::Uuid;

const WORKERS: i64 = 8;
/// Most batches per worker (workers stop earlier when the chaos is over).
const MAX_BATCHES: i64 = 300;
/// Chaos events: terminations of every backend, and restarts.
const EVENTS: usize = 9;
const SYNC: &str = "chaos";

/// 2026-01-15T10:00:00Z: stated dates inside 0024's 2026_01 partition.
fn jan_15() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_768_471_200).unwrap()
}

fn pool(config: &Config) -> Pool {
    let manager = Manager::from_config(
        config.clone(),
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(6)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(Duration::from_secs(10)))
        .create_timeout(Some(Duration::from_secs(10)))
        .build()
        .unwrap()
}

#[derive(Default)]
struct Seen {
    unknown: AtomicUsize,
    unavailable: AtomicUsize,
    repeats: AtomicUsize,
}

/// Repeats `call` while it fails with a retryable error (bounded: 600 tries,
/// 50 ms apart, i.e. ~30 s without the server); any other error fails the test.
async fn retry<T, F, Fut>(what: &str, seen: &Seen, mut call: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Error>>,
{
    let mut last = None;
    for _ in 0..600 {
        match call().await {
            Ok(v) => return v,
            Err(e) if e.is_retryable() => {
                if e.is_outcome_unknown() {
                    seen.unknown.fetch_add(1, Ordering::Relaxed);
                } else {
                    seen.unavailable.fetch_add(1, Ordering::Relaxed);
                }
                last = Some(e);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("{what}: not retryable: {e} ({e:?})"),
        }
    }
    panic!("{what}: still failing after 600 tries: {last:?}");
}

struct Done {
    processed: i64,
    failed: i64,
    appends: i64,
    bulk_rows: i64,
}

async fn worker(
    w: i64,
    store: Store,
    org: Uuid,
    user: Uuid,
    stop: Arc<AtomicBool>,
    seen: Arc<Seen>,
) -> Done {
    let svc = store.service();
    let tenant = store.tenant(user);
    let mut done = Done {
        processed: 0,
        failed: 0,
        appends: 0,
        bulk_rows: 0,
    };
    for b in 0..MAX_BATCHES {
        if stop.load(Ordering::Relaxed) && b > 0 {
            break;
        }
        // One tick per batch; the key names the worker and the batch.
        let key = w * 1_000_000 + b;
        let d = ProgressDelta {
            processed: 1 + (b % 3) as i32,
            failed: (b % 2) as i32,
            batch_number: Some(b as i32),
            ..Default::default()
        };
        let out = if w >= 6 {
            retry("tenant tick", &seen, || {
                tenant.report_progress_keyed(SYNC, key, &d)
            })
            .await
        } else {
            retry("tick", &seen, || {
                svc.report_progress_keyed(org, SYNC, key, &d)
            })
            .await
        };
        if !out.applied {
            seen.repeats.fetch_add(1, Ordering::Relaxed);
        }
        done.processed += i64::from(d.processed);
        done.failed += i64::from(d.failed);

        // One audit row per batch, keyed by (id, created_at).
        let mut e = NewActivity::new(SyncAction::SyncProgress, SyncStatus::InProgress);
        e.sync_id = Some(format!("{SYNC}-w"));
        e.id = Some(Uuid::new_v4());
        e.created_at = Some(jan_15() + Duration::from_micros((key) as u64));
        e.record_count = d.processed;
        let entry = retry("append", &seen, || svc.append_activity(org, &e)).await;
        assert_eq!(entry.id, e.id.unwrap());
        done.appends += 1;

        // Every 5th batch, a bulk batch of 4 rows with its batch key.
        if b % 5 == 4 {
            let batch_key = Uuid::new_v4();
            let rows: Vec<NewActivity> = (0..4)
                .map(|i| {
                    let mut e = NewActivity::new(SyncAction::RecordUpdate, SyncStatus::Completed);
                    e.sync_id = Some(format!("{SYNC}-bulk"));
                    e.record_count = i;
                    e.created_at = Some(jan_15());
                    e
                })
                .collect();
            let out = retry("bulk", &seen, || {
                svc.append_activity_batch(org, batch_key, &rows)
            })
            .await;
            assert_eq!(out.rows, 4);
            done.bulk_rows += 4;
        }
    }
    done
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_workers_under_terminations_and_restarts_end_with_exact_totals() {
    // Acknowledged commits must survive an immediate restart: synchronous_commit
    // back on (the throwaway default is off, for speed).
    let cluster =
        Arc::new(TempCluster::start(&[("synchronous_commit", "on")]).expect("a throwaway cluster"));
    let admin = sync_tests::connect(&cluster.config()).await;
    admin.batch_execute("CREATE DATABASE chaos").await.unwrap();
    drop(admin);
    let config = cluster.config_for("chaos");
    let mut c = sync_tests::connect(&config).await;
    sync_migrations::apply(&mut c, &MigrateOptions::default())
        .await
        .unwrap();
    let (org, user) = (Uuid::new_v4(), Uuid::new_v4());
    c.execute(
        "INSERT INTO organization (id, name) VALUES ($1, 'chaos')",
        &[&org],
    )
    .await
    .unwrap();
    c.execute(
        "INSERT INTO auth.users_extended (id, org_id, email) VALUES ($1, $2, 'c@example.com')",
        &[&user, &org],
    )
    .await
    .unwrap();
    drop(c);
    // Workers go through the proxy. Both statement modes: even workers
    // unnamed, odd ones cached.
    let proxy = CutProxy::start(&config).await;
    let unnamed = Store::with_statement_mode(pool(&proxy.config()), StatementMode::Unnamed);
    let cached =
        Store::with_statement_mode(pool(&proxy.config()), StatementMode::CachedPerConnection);
    unnamed
        .service()
        .start_sync(org, &StartSync::new(SYNC, SyncEntityType::Product))
        .await
        .unwrap();

    proxy.lose_every(37);
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Seen::default());
    let workers: Vec<_> = (0..WORKERS)
        .map(|w| {
            let store = if w % 2 == 0 { &unnamed } else { &cached }.clone();
            tokio::spawn(worker(w, store, org, user, stop.clone(), seen.clone()))
        })
        .collect();

    // The chaos: every 3rd event a restart (fast, then immediate), else every
    // backend of the database terminated.
    let chaos = {
        let cluster = cluster.clone();
        let config = config.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut restarts = 0;
            let mut terminated = 0u64;
            for event in 0..EVENTS {
                tokio::time::sleep(Duration::from_millis(300)).await;
                if event % 3 == 2 {
                    let mode = if restarts % 2 == 0 {
                        StopMode::Fast
                    } else {
                        StopMode::Immediate
                    };
                    let cl = cluster.clone();
                    tokio::task::spawn_blocking(move || cl.restart(mode))
                        .await
                        .unwrap();
                    restarts += 1;
                } else if let Ok((c, conn)) = config.connect(NoTls).await {
                    tokio::spawn(conn);
                    if let Ok(row) = c
                        .query_one(
                            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                             WHERE datname = current_database() AND pid <> pg_backend_pid()",
                            &[],
                        )
                        .await
                    {
                        terminated += row.get::<_, i64>(0) as u64;
                    }
                }
            }
            stop.store(true, Ordering::Relaxed);
            (restarts, terminated)
        })
    };

    let run = async {
        let (restarts, terminated) = chaos.await.unwrap();
        let mut totals = Done {
            processed: 0,
            failed: 0,
            appends: 0,
            bulk_rows: 0,
        };
        for w in workers {
            let d = w.await.unwrap();
            totals.processed += d.processed;
            totals.failed += d.failed;
            totals.appends += d.appends;
            totals.bulk_rows += d.bulk_rows;
        }
        (restarts, terminated, totals)
    };
    let (restarts, terminated, totals) = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .unwrap_or_else(|_| panic!("the chaos test did not finish in 120 s\n{}", cluster.log()));
    proxy.lose_every(0);
    assert_eq!(restarts, 3);
    assert!(
        proxy.lost() > 0,
        "the proxy lost no reply: the test tested nothing"
    );
    eprintln!(
        "chaos: {restarts} restarts, {terminated} backends terminated, {} replies lost; retried after \
         {} unknown outcomes and {} unavailable; {} repeated keys; {} ticks, {} appends, {} bulk rows",
        proxy.lost(),
        seen.unknown.load(Ordering::Relaxed),
        seen.unavailable.load(Ordering::Relaxed),
        seen.repeats.load(Ordering::Relaxed),
        totals.appends,
        totals.appends,
        totals.bulk_rows
    );

    let c = sync_tests::connect(&config).await;
    let row = c
        .query_one(
            "SELECT processed_count::int8, failed_count::int8 FROM sync_progress \
             WHERE org_id = $1 AND sync_id = $2",
            &[&org, &SYNC],
        )
        .await
        .unwrap();
    assert_eq!(
        (row.get::<_, i64>(0), row.get::<_, i64>(1)),
        (totals.processed, totals.failed),
        "progress counts must be exact"
    );
    let keys: i64 = c
        .query_one("SELECT count(*) FROM sync_progress_tick_key", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(keys, totals.appends, "one key per tick");
    let row = c
        .query_one(
            "SELECT count(*), count(DISTINCT id) FROM sync_activity_log WHERE sync_id = $1",
            &[&format!("{SYNC}-w")],
        )
        .await
        .unwrap();
    assert_eq!(
        row.get::<_, i64>(0),
        totals.appends,
        "one audit row per append"
    );
    assert_eq!(
        row.get::<_, i64>(1),
        totals.appends,
        "no duplicate audit rows"
    );
    let bulk: i64 = c
        .query_one(
            "SELECT count(*) FROM sync_activity_log WHERE sync_id = $1",
            &[&format!("{SYNC}-bulk")],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(bulk, totals.bulk_rows, "bulk batches written once");
    let starts: i64 = c
        .query_one(
            "SELECT count(*) FROM sync_activity_log WHERE sync_id = $1 AND action = 'sync_start'",
            &[&SYNC],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(starts, 1);
    // Finishing prunes the keys.
    unnamed.service().complete_sync(org, SYNC).await.unwrap();
    let keys: i64 = c
        .query_one("SELECT count(*) FROM sync_progress_tick_key", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(keys, 0);
}
