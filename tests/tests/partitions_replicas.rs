//! Replicas (and CLI runs) doing partition maintenance at the same time: the
//! ones that find the partition lock taken wait for it, then find nothing left
//! to do; a starting service never fails because a sibling is moving rows.

mod partitions_common;

use std::process::{Command, Output};
use std::time::Duration;

use partitions_common::*;
use sync_migrations::partitions::{ensure_partitions, PARTITION_LOCK_KEY};
use sync_tests::{connect, sync_migrate_bin, TestDb};

/// Sessions waiting for the partition advisory lock.
async fn waiting_for_partition_lock(c: &tokio_postgres::Client) -> i64 {
    c.query_one(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted \
            AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
            AND ((classid::int8 << 32) | objid::int8) = $1",
        &[&PARTITION_LOCK_KEY],
    )
    .await
    .unwrap()
    .get(0)
}

/// Polls until `n` sessions wait for the partition lock (bounded: 120 s).
async fn until_waiting(c: &tokio_postgres::Client, n: i64) {
    for _ in 0..2400 {
        if waiting_for_partition_lock(c).await >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{n} sessions never queued on the partition lock");
}

/// A database with a backlog in the catch-all and the partition lock held by
/// another session ("the other replica").
async fn backlog(db: &TestDb) -> (tokio_postgres::Client, u64) {
    let c = db.client().await;
    let t = tenants(&c).await;
    let seeded = seed_months(&c, &t, "2026-03-01", "2027-05-01", 200).await;
    let holder = db.client().await;
    holder
        .execute("SELECT pg_advisory_lock($1)", &[&PARTITION_LOCK_KEY])
        .await
        .unwrap();
    (holder, seeded)
}

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_cli_runs_wait_for_each_other_and_all_succeed() {
    for n in [3usize, 8] {
        let db = TestDb::migrated().await;
        let (holder, seeded) = backlog(&db).await;
        let c = db.client().await;
        let rows_before = all_rows(&c).await;
        let url = db.url();
        let runs: Vec<_> = (0..n)
            .map(|_| {
                let url = url.clone();
                tokio::task::spawn_blocking(move || {
                    Command::new(sync_migrate_bin())
                        .args(["--json", "partitions", "ensure", "--months-ahead", "3"])
                        .args(["--now", "2026-11-15T12:00:00Z", "--database-url", &url])
                        .env_remove("DATABASE_URL")
                        .output()
                        .expect("run sync-migrate")
                })
            })
            .collect();
        until_waiting(&c, n as i64).await;
        // The other replica keeps moving rows for longer than the old 5 s
        // limit (this sleep is a lower bound on the others' wait, not a timing
        // assertion: with the fix they would wait up to --wait-secs).
        tokio::time::sleep(Duration::from_secs(6)).await;
        holder
            .execute("SELECT pg_advisory_unlock($1)", &[&PARTITION_LOCK_KEY])
            .await
            .unwrap();
        let mut changed = 0;
        let mut moved = 0;
        for r in runs {
            let out = r.await.unwrap();
            assert!(
                out.status.success(),
                "n={n}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            // Each run said what it waits for, and for how long at most.
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                err.contains("holds the partition lock; waiting up to 1800 s"),
                "n={n}: {err}"
            );
            let report = json(&out);
            assert_eq!(report["through"], "2027-02");
            assert_eq!(report["other_run_busy"], false);
            if !report["created"].as_array().unwrap().is_empty() {
                changed += 1;
            }
            moved += report["rows_moved"].as_u64().unwrap();
        }
        assert_eq!(changed, 1, "n={n}: exactly one run did the work");
        let in_future_before = seeded
            - rows_before
                .iter()
                .filter(|r| {
                    r.1 < "2026-03"
                        .parse::<sync_migrations::partitions::Month>()
                        .unwrap()
                        .start()
                })
                .count() as u64;
        assert_eq!(moved, in_future_before, "n={n}");
        assert_eq!(all_rows(&c).await, rows_before, "n={n}");
        assert_eq!(misplaced_rows(&c, "2027-02").await, 0, "n={n}");
        verify_ok(&c).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_library_runs_with_a_long_wait_find_nothing_left_to_do() {
    for n in [3usize, 8] {
        let db = TestDb::migrated().await;
        let (holder, _) = backlog(&db).await;
        let c = db.client().await;
        let rows_before = all_rows(&c).await;
        let runs: Vec<_> = (0..n)
            .map(|_| {
                let config = db.config();
                tokio::spawn(async move {
                    let mut client = connect(&config).await;
                    let o = opts().with_wait_for_other_run(Duration::from_secs(600));
                    ensure_partitions(&mut client, 3, &o, |_| {}).await
                })
            })
            .collect();
        until_waiting(&c, n as i64).await;
        holder
            .execute("SELECT pg_advisory_unlock($1)", &[&PARTITION_LOCK_KEY])
            .await
            .unwrap();
        let mut changed = 0;
        for r in runs {
            let report = r.await.unwrap().expect("every run succeeds");
            assert!(!report.other_run_busy);
            changed += usize::from(report.changed());
        }
        assert_eq!(changed, 1, "n={n}");
        assert_eq!(all_rows(&c).await, rows_before);
        assert_eq!(misplaced_rows(&c, "2027-02").await, 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn startup_serves_while_another_replica_holds_the_partition_lock() {
    let db = TestDb::migrated().await;
    let (holder, _) = backlog(&db).await;
    let c = db.client().await;
    let parts = partition_names(&c).await;
    let rows_before = all_rows(&c).await;
    // 8 replicas start at once with the defaults while "another replica" moves
    // rows (holds the lock past their wait).
    let starts: Vec<_> = (0..8)
        .map(|_| {
            let pool = db.pool();
            tokio::spawn(async move {
                sync_migrations::startup(&pool, &sync_migrations::MigrateOptions::default(), 3)
                    .await
            })
        })
        .collect();
    for s in starts {
        let report = s
            .await
            .unwrap()
            .expect("start-up succeeds while another replica does the maintenance");
        assert!(report.partitions.other_run_busy);
        assert!(!report.partitions.changed());
        assert!(report.migrations.applied.is_empty());
    }
    assert_eq!(partition_names(&c).await, parts, "nothing changed");
    assert_eq!(all_rows(&c).await, rows_before);
    holder
        .execute("SELECT pg_advisory_unlock($1)", &[&PARTITION_LOCK_KEY])
        .await
        .unwrap();

    // Lock free: 8 replicas at once, one does the work, none fails.
    let popts = sync_migrations::startup_partition_options().with_now(test_now());
    let starts: Vec<_> = (0..8)
        .map(|_| {
            let pool = db.pool();
            let popts = popts.clone();
            tokio::spawn(async move {
                sync_migrations::startup_with(
                    &pool,
                    &sync_migrations::MigrateOptions::default(),
                    3,
                    &popts,
                )
                .await
            })
        })
        .collect();
    let mut changed = 0;
    for s in starts {
        let report = s.await.unwrap().expect("start-up succeeds");
        changed += usize::from(report.partitions.changed());
    }
    // A replica may in principle give up waiting under heavy load (then it
    // reports other_run_busy and starts anyway); exactly one changes the layout.
    assert_eq!(changed, 1);
    assert_eq!(all_rows(&c).await, rows_before);
    assert_eq!(misplaced_rows(&c, "2027-02").await, 0);
    verify_ok(&c).await;
}
