//! Issue 12, item 2: the year-old database. 0024's layout as deployed
//! (monthly partitions through 2026-02, the catch-all `sync_activity_log_future`
//! from 2026-03 — our V0024 creates exactly that layout, checked below), the
//! catch-all filled with every month since, then three replicas call
//! `startup()` at once (server clock) while writers run: every replica starts
//! serving, none fails, no writer sees an error, and once done there are
//! monthly partitions through now + 3, the catch-all holds only rows after
//! that, every row is in its month, and no row was lost, duplicated or changed.

mod partitions_common;

use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;

use partitions_common::*;
use sync_migrations::partitions::{list_partitions, Month, PartitionKind};
use sync_tests::TestDb;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_replicas_start_on_a_year_old_database_while_writers_run() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    // The deployed layout.
    assert_eq!(
        partition_names(&c).await,
        [
            "sync_activity_log_2025_11",
            "sync_activity_log_2025_12",
            "sync_activity_log_2026_01",
            "sync_activity_log_2026_02",
            "sync_activity_log_future",
        ]
    );
    let now: time::OffsetDateTime = c.query_one("SELECT now()", &[]).await.unwrap().get(0);
    let current = Month::containing(now).unwrap();
    let t = tenants(&c).await;
    // Every month from 2025-11 to now, and some rows far beyond now + 3.
    seed_months(&c, &t, "2025-11-01", &format!("{}-01", current), 250).await;
    let far = current.plus(7);
    seed_months(&c, &t, &format!("{far}-01"), &format!("{far}-01"), 50).await;
    let in_future: i64 = c
        .query_one("SELECT count(*) FROM sync_activity_log_future", &[])
        .await
        .unwrap()
        .get(0);
    assert!(
        in_future > 2000,
        "months of rows in the catch-all ({in_future})"
    );
    make_shadow(&c).await;

    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let writers = spawn_writers(&db.config(), t.org_b, 2, stop.clone(), done.clone());
    let starts: Vec<_> = (0..3)
        .map(|_| {
            let pool = db.pool();
            tokio::spawn(async move {
                sync_migrations::startup(&pool, &sync_migrations::MigrateOptions::default(), 3)
                    .await
            })
        })
        .collect();
    let mut changed = 0;
    for s in starts {
        let report = s.await.unwrap().expect("every replica starts serving");
        changed += usize::from(report.partitions.changed());
    }
    assert_eq!(changed, 1, "one replica did the maintenance");
    let writes = stop_writers(&stop, writers).await;
    assert!(writes > 0);

    // Monthly partitions through now + 3, then the catch-all.
    let through = current.plus(3);
    let parts = list_partitions(&c).await.unwrap();
    let months: Vec<Month> = parts.iter().filter_map(|p| p.month).collect();
    let mut want = Vec::new();
    let mut m: Month = "2025-11".parse().unwrap();
    while m <= through {
        want.push(m);
        m = m.next();
    }
    assert_eq!(months, want);
    let catch_all = parts
        .iter()
        .find(|p| p.kind == PartitionKind::CatchAll)
        .expect("a catch-all");
    assert_eq!(catch_all.name, "sync_activity_log_future");
    assert_eq!(catch_all.from, Some(through.next().start()));
    let early: i64 = c
        .query_one(
            "SELECT count(*) FROM sync_activity_log_future WHERE created_at < $1",
            &[&through.next().start()],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(early, 0, "the catch-all holds only rows after now + 3");
    assert_eq!(misplaced_rows(&c, &through.to_string()).await, 0);
    assert_same_as_shadow(&c, "after three start-ups").await;
    let left: i64 = c
        .query_one(
            "SELECT count(*) FROM pg_class WHERE relname LIKE 'sync_activity_log_split%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0);
    verify_ok(&c).await;
}
