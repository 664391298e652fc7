//! `ensure_partitions` under concurrency: inserts during the move, held locks.

mod partitions_common;

use std::sync::mpsc;
use std::time::Duration;

use partitions_common::*;
use sync_migrations::partitions::{
    archive_partitions, ensure_partitions, PartitionError, PartitionOptions, PARTITION_LOCK_KEY,
};
use sync_tests::{connect, TestDb};
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn inserts_during_the_copy_do_not_wait_and_are_neither_lost_nor_duplicated() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    let t = tenants(&c).await;
    let seeded = seed_months(&c, &t, "2026-03-01", "2027-04-01", 300).await;
    let rows_before = all_rows(&c).await;

    // ensure runs on its own thread and runtime; its progress callback (called
    // once the split is prepared, before the first rows are copied, with no
    // lock held) tells us so and then waits until the inserts have finished.
    let (locked_tx, locked_rx) = mpsc::channel::<()>();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let config = db.config();
    let ensure = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let mut client = connect(&config).await;
            let mut first = true;
            ensure_partitions(
                &mut client,
                3,
                &PartitionOptions::with_lock_timeout(Duration::from_secs(30)).with_now(test_now()),
                move |_| {
                    if std::mem::take(&mut first) {
                        locked_tx.send(()).unwrap();
                        go_rx
                            .recv_timeout(Duration::from_secs(60))
                            .expect("inserts were never seen waiting");
                    }
                },
            )
            .await
        })
    });
    tokio::task::spawn_blocking(move || locked_rx.recv_timeout(Duration::from_secs(60)))
        .await
        .unwrap()
        .expect("ensure never reached the move");

    // Inserters: current month, a month in the old catch-all, an old month and
    // beyond the horizon.
    let mut inserters = Vec::new();
    for k in 0..4 {
        let config = db.config();
        let org = if k % 2 == 0 { t.org_a } else { t.org_b };
        inserters.push(tokio::spawn(async move {
            let client = connect(&config).await;
            let mut ids = Vec::new();
            for i in 0..20 {
                let at = match i % 4 {
                    0 => "'2026-11-20 09:30:00+00'::timestamptz",
                    1 => "'2026-04-15 12:00:00+00'::timestamptz",
                    2 => "'2026-01-10 08:00:00+00'::timestamptz",
                    _ => "'2027-09-01 00:00:00+00'::timestamptz",
                };
                let id: Uuid = client
                    .query_one(
                        &format!(
                            "INSERT INTO sync_activity_log (org_id, action, status, created_at) \
                             VALUES ($1, 'sync_progress', 'in_progress', {at}) RETURNING id"
                        ),
                        &[&org],
                    )
                    .await
                    .map_err(|e| format!("insert {k}/{i} failed: {e:?}"))?
                    .get(0);
                ids.push(id);
            }
            Ok::<_, String>(ids)
        }));
    }
    // All inserts finish while ensure sits in its copy phase: nothing waits
    // for it (bounded: 60 s, far above any insert).
    let mut inserted = Vec::new();
    for h in inserters {
        inserted.extend(
            tokio::time::timeout(Duration::from_secs(60), h)
                .await
                .expect("an insert waited for ensure")
                .unwrap()
                .unwrap(),
        );
    }
    // While rows move, writes to the tables the foreign keys reference are not blocked.
    c.batch_execute(
        "BEGIN; SET LOCAL lock_timeout = '5s'; \
         INSERT INTO organization (name) VALUES ('during ensure'); COMMIT",
    )
    .await
    .expect("organization is writable while rows move");
    go_tx.send(()).unwrap();
    let report = tokio::task::spawn_blocking(move || ensure.join().unwrap())
        .await
        .unwrap()
        .unwrap();
    // The seeded rows and the 60 inserted into the old catch-all's range
    // (2026-11, 2026-04 and 2027-09) during the copy.
    assert_eq!(report.rows_moved, seeded + 60);
    assert_eq!(inserted.len(), 80);
    let after = all_rows(&c).await;
    assert_eq!(after.len(), rows_before.len() + inserted.len());
    for id in &inserted {
        assert_eq!(after.iter().filter(|r| r.0 == *id).count(), 1, "row {id}");
    }
    assert_eq!(misplaced_rows(&c, &report.through.to_string()).await, 0);
}

#[tokio::test]
async fn a_held_advisory_lock_gives_a_prompt_lock_timeout() {
    let db = TestDb::migrated().await;
    let mut c = db.client().await;
    let holder = db.client().await;
    holder
        .execute("SELECT pg_advisory_lock($1)", &[&PARTITION_LOCK_KEY])
        .await
        .unwrap();
    let before = partition_names(&c).await;
    let opts = PartitionOptions::with_lock_timeout(Duration::from_millis(300)).with_now(test_now());
    let err = ensure_partitions(&mut c, 3, &opts, |_| {})
        .await
        .unwrap_err();
    match &err {
        PartitionError::LockTimeout { step, server, .. } => {
            assert!(step.contains("advisory"), "{err}");
            assert_eq!(server.code.as_deref(), Some("55P03"));
        }
        other => panic!("expected LockTimeout, got {other}"),
    }
    assert!(err.to_string().contains("55P03"), "{err}");
    let err = archive_partitions(&mut c, "2026-01".parse().unwrap(), &opts)
        .await
        .unwrap_err();
    assert!(err.is_lock_timeout(), "{err}");
    assert_eq!(partition_names(&c).await, before, "nothing changed");
    // Once released, ensure works on the same connection.
    holder
        .execute("SELECT pg_advisory_unlock($1)", &[&PARTITION_LOCK_KEY])
        .await
        .unwrap();
    assert!(ensure_partitions(&mut c, 3, &opts, |_| {})
        .await
        .unwrap()
        .changed());
}

#[tokio::test]
async fn a_held_table_lock_gives_a_prompt_lock_timeout() {
    let db = TestDb::migrated().await;
    let mut c = db.client().await;
    let t = tenants(&c).await;
    let opts = PartitionOptions::with_lock_timeout(Duration::from_millis(300)).with_now(test_now());

    // An ACCESS EXCLUSIVE lock held by another transaction.
    let mut holder = db.client().await;
    let tx = holder.transaction().await.unwrap();
    tx.batch_execute("LOCK TABLE sync_activity_log IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let err = ensure_partitions(&mut c, 3, &opts, |_| {})
        .await
        .unwrap_err();
    assert!(err.is_lock_timeout(), "{err}");
    tx.rollback().await.unwrap();

    // An open transaction that inserted a row (ROW EXCLUSIVE): ensure's table lock
    // cannot be had.
    let tx = holder.transaction().await.unwrap();
    tx.execute(
        "INSERT INTO sync_activity_log (org_id, action, status) VALUES ($1, 'sync_start', 'pending')",
        &[&t.org_a],
    )
    .await
    .unwrap();
    let err = ensure_partitions(&mut c, 3, &opts, |_| {})
        .await
        .unwrap_err();
    match &err {
        // The online split's first lock, the capture trigger on the catch-all.
        PartitionError::LockTimeout { step, .. } => {
            assert!(step.contains("capture trigger"), "{err}")
        }
        other => panic!("expected LockTimeout, got {other}"),
    }
    let before = partition_names(&c).await;
    assert_eq!(before.len(), 5, "nothing changed");
    let state: bool = c
        .query_one(
            "SELECT to_regclass('sync_activity_log_split_state') IS NOT NULL",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(!state, "no split was started");
    tx.commit().await.unwrap();
    let report = ensure_partitions(&mut c, 3, &opts, |_| {}).await.unwrap();
    assert_eq!(report.rows_moved, 1);
}
