//! `ensure_partitions`: rows split out of the catch-all into their months, on a
//! real server.

mod partitions_common;

use std::sync::{Arc, Mutex};

use partitions_common::*;
use sync_migrations::partitions::{
    ensure_partitions, list_partitions, Month, PartitionError, PartitionKind,
};
use sync_tests::{connect, TestDb};

#[tokio::test]
async fn ensure_splits_future_into_months_keeping_rows_rls_and_grants() {
    let db = TestDb::migrated().await;
    let mut c = db.client().await;
    let t = tenants(&c).await;
    // Rows in an existing month, in the catch-all's months up to the new horizon,
    // and beyond it (those must stay in the new catch-all).
    let mut seeded = seed_months(&c, &t, "2026-01-01", "2026-01-01", 10).await;
    seeded += seed_months(&c, &t, "2026-03-01", "2027-06-01", 25).await;
    // A grant on the catch-all that the new partitions must copy.
    c.batch_execute("GRANT SELECT ON sync_activity_log_future TO sync_tenant")
        .await
        .unwrap();
    let counts_before = per_month_counts(&c).await;
    let rows_before = all_rows(&c).await;
    assert_eq!(rows_before.len() as u64, seeded);
    let in_future_before: i64 = c
        .query_one("SELECT count(*) FROM sync_activity_log_future", &[])
        .await
        .unwrap()
        .get(0);

    // The placement check below can fail: before ensure, rows sit in the catch-all.
    assert!(misplaced_rows(&c, "2027-02").await > 0);

    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    let report = ensure_partitions(&mut c, 3, &opts(), move |p| {
        seen2.lock().unwrap().push(p.rows_moved)
    })
    .await
    .unwrap();

    // The options' clock, not the server's: current month 2026-11, through 2027-02.
    assert_eq!(report.current_month, "2026-11".parse().unwrap());
    assert_eq!(report.through, "2027-02".parse().unwrap());
    let first: Month = "2026-03".parse().unwrap();
    let mut expected_created = Vec::new();
    let mut m = first;
    while m <= report.through {
        expected_created.push(m.partition_name());
        m = m.next();
    }
    assert_eq!(report.created, expected_created);
    assert_eq!(report.catch_all_from, Some(report.through.next().start()));
    assert_eq!(report.rows_moved, in_future_before as u64);
    assert!(report.changed());
    assert!(report.referenced_tables_locked <= report.exclusive_lock_held);
    let progress = seen.lock().unwrap().clone();
    assert_eq!(progress.first(), Some(&0));
    assert_eq!(progress.last(), Some(&(in_future_before as u64)));

    // Same rows, same per-month counts, each in its month's partition.
    assert_eq!(per_month_counts(&c).await, counts_before);
    assert_eq!(all_rows(&c).await, rows_before);
    assert_eq!(misplaced_rows(&c, &report.through.to_string()).await, 0);
    let beyond: i64 = c
        .query_one("SELECT count(*) FROM sync_activity_log_future", &[])
        .await
        .unwrap()
        .get(0);
    let expected_beyond: i64 = counts_before
        .iter()
        .filter(|(m, _)| m.as_str() > report.through.to_string().as_str())
        .map(|(_, n)| n)
        .sum();
    assert!(expected_beyond > 0, "the seed must reach past the horizon");
    assert_eq!(beyond, expected_beyond);

    // Catalog: every partition has RLS, the partitioned indexes and the copied grant.
    let row = c
        .query_one(
            "SELECT count(*) FILTER (WHERE NOT c.relrowsecurity), \
                    count(*) FILTER (WHERE NOT has_table_privilege('sync_tenant', c.oid, 'SELECT')), \
                    count(*) FILTER (WHERE (SELECT count(*) FROM pg_index x WHERE x.indrelid = c.oid) <> 6), \
                    count(*) FILTER (WHERE (SELECT count(*) FROM pg_constraint k \
                                             WHERE k.conrelid = c.oid AND k.contype = 'f') <> 2), \
                    count(*) FILTER (WHERE EXISTS (SELECT 1 FROM pg_constraint k \
                                                    WHERE k.conrelid = c.oid \
                                                      AND k.conname = 'sync_activity_log_ensure_bounds')) \
               FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
              WHERE i.inhparent = 'sync_activity_log'::regclass \
                AND c.relname >= 'sync_activity_log_2026_03'",
            &[],
        )
        .await
        .unwrap();
    let (no_rls, no_grant, wrong_indexes, wrong_fks, leftover_checks): (i64, i64, i64, i64, i64) =
        (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
    assert_eq!(
        (no_rls, no_grant, wrong_indexes, wrong_fks, leftover_checks),
        (0, 0, 0, 0, 0)
    );
    // Every partitioned index has exactly one attached child index per partition.
    let unattached: i64 = c
        .query_one(
            "SELECT count(*) FROM pg_index x JOIN pg_inherits i ON i.inhrelid = x.indrelid \
              WHERE i.inhparent = 'sync_activity_log'::regclass \
                AND NOT EXISTS (SELECT 1 FROM pg_inherits ii WHERE ii.inhrelid = x.indexrelid)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(unattached, 0);
    // Index names are the ones CREATE TABLE … PARTITION OF gives: <table>_<cols>_idx / _pkey.
    let odd_names: Vec<String> = c
        .query(
            "SELECT ic.relname::text FROM pg_index x \
               JOIN pg_class ic ON ic.oid = x.indexrelid \
               JOIN pg_class c ON c.oid = x.indrelid \
               JOIN pg_inherits i ON i.inhrelid = c.oid \
              WHERE i.inhparent = 'sync_activity_log'::regclass \
                AND (left(ic.relname, length(c.relname) + 1) <> c.relname || '_' \
                     OR ic.relname !~ '(_idx|_pkey)$')",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(odd_names.is_empty(), "{odd_names:?}");
    let leftovers: i64 = c
        .query_one(
            "SELECT count(*) FROM pg_class WHERE relname LIKE 'sync_activity_log_ensure%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(leftovers, 0);

    // RLS through the parent for a tenant login, and on a new partition directly.
    let (_role, cfg) = db.login_role("tenant").await;
    let mut tenant = connect(&cfg).await;
    let rows_of_a = rows_before.iter().filter(|r| r.2 == t.org_a).count() as i64;
    let tx = tenant.transaction().await.unwrap();
    tx.batch_execute("SET LOCAL ROLE sync_tenant")
        .await
        .unwrap();
    tx.execute(
        "SELECT set_config('request.jwt.claims', $1, true)",
        &[&format!("{{\"sub\":\"{}\"}}", t.user_a)],
    )
    .await
    .unwrap();
    let visible: i64 = tx
        .query_one("SELECT count(*) FROM sync_activity_log", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(visible, rows_of_a);
    let other: i64 = tx
        .query_one(
            "SELECT count(*) FROM sync_activity_log WHERE org_id = $1",
            &[&t.org_b],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(other, 0);
    let direct: i64 = tx
        .query_one(
            &format!(
                "SELECT count(*) FROM {}",
                "2026-05".parse::<Month>().unwrap().partition_name()
            ),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(direct, 0, "a partition queried directly shows nothing");
    tx.rollback().await.unwrap();

    // The user of org B sees B's rows only.
    let tx = tenant.transaction().await.unwrap();
    tx.batch_execute("SET LOCAL ROLE sync_tenant")
        .await
        .unwrap();
    tx.execute(
        "SELECT set_config('request.jwt.claims', $1, true)",
        &[&format!("{{\"sub\":\"{}\"}}", t.user_b)],
    )
    .await
    .unwrap();
    let of_a: i64 = tx
        .query_one(
            "SELECT count(*) FROM sync_activity_log WHERE org_id = $1",
            &[&t.org_a],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(of_a, 0);
    tx.rollback().await.unwrap();

    verify_ok(&c).await;

    // A second run changes nothing.
    let parts = partition_names(&c).await;
    let again = ensure_partitions(&mut c, 3, &opts(), |_| {}).await.unwrap();
    assert!(!again.changed());
    assert!(again.created.is_empty());
    assert_eq!(again.rows_moved, 0);
    assert_eq!(again.catch_all_from, report.catch_all_from);
    assert_eq!(partition_names(&c).await, parts);
    assert_eq!(all_rows(&c).await, rows_before);
    // A smaller horizon removes nothing either.
    let smaller = ensure_partitions(&mut c, 0, &opts(), |_| {}).await.unwrap();
    assert!(!smaller.changed());

    // list: the months and the catch-all, in order.
    let listed = list_partitions(&c).await.unwrap();
    assert_eq!(listed.len(), parts.len());
    assert_eq!(listed.last().unwrap().kind, PartitionKind::CatchAll);
    assert_eq!(listed.last().unwrap().name, "sync_activity_log_future");
    assert!(listed[..listed.len() - 1]
        .iter()
        .all(|p| p.kind == PartitionKind::Month && p.rls_enabled));
    assert_eq!(
        listed[listed.len() - 2].month,
        Some(report.through),
        "last month partition is current + 3"
    );
}

#[tokio::test]
async fn ensure_on_empty_catch_all_and_horizon_growth() {
    let db = TestDb::migrated().await;
    let mut c = db.client().await;
    let r = ensure_partitions(&mut c, 1, &opts(), |_| {}).await.unwrap();
    assert_eq!(r.rows_moved, 0);
    assert_eq!(r.through, "2026-12".parse().unwrap());
    // Growing the horizon adds exactly the missing months.
    let r2 = ensure_partitions(&mut c, 4, &opts(), |_| {}).await.unwrap();
    assert_eq!(
        r2.created,
        (2..=4)
            .map(|k| r.current_month.plus(k).partition_name())
            .collect::<Vec<_>>()
    );
    verify_ok(&c).await;
    // Too far ahead is refused before anything happens.
    let err = ensure_partitions(&mut c, 1000, &opts(), |_| {})
        .await
        .unwrap_err();
    assert!(
        matches!(err, PartitionError::TooManyMonthsAhead { .. }),
        "{err}"
    );
}

#[tokio::test]
async fn ensure_refuses_a_default_partition_and_a_taken_name() {
    let db = TestDb::migrated().await;
    let mut c = db.client().await;
    // A standalone table with the name of a month ensure must create.
    c.batch_execute("CREATE TABLE sync_activity_log_2026_07 (x int)")
        .await
        .unwrap();
    let before = partition_names(&c).await;
    let err = ensure_partitions(&mut c, 3, &opts(), |_| {})
        .await
        .unwrap_err();
    assert!(
        matches!(&err, PartitionError::NameTaken { name } if name.contains("sync_activity_log_2026_07")),
        "{err}"
    );
    assert_eq!(partition_names(&c).await, before, "nothing changed");
    c.batch_execute(
        "DROP TABLE sync_activity_log_2026_07; \
         CREATE TABLE sync_activity_log_odd PARTITION OF sync_activity_log \
             FOR VALUES FROM ('2025-10-15 00:00:00+00') TO ('2025-11-01 00:00:00+00')",
    )
    .await
    .unwrap();
    let err = ensure_partitions(&mut c, 3, &opts(), |_| {})
        .await
        .unwrap_err();
    assert!(
        matches!(&err, PartitionError::UnexpectedLayout { partition, .. } if partition == "sync_activity_log_odd"),
        "{err}"
    );
}

#[tokio::test]
async fn rollback_of_0024_after_ensure_drops_every_partition() {
    let db = TestDb::migrated().await;
    let mut c = db.client().await;
    let t = tenants(&c).await;
    seed_months(&c, &t, "2026-04-01", "2026-06-01", 5).await;
    ensure_partitions(&mut c, 3, &opts(), |_| {}).await.unwrap();
    let out = sync_migrations::rollback_0024_dropping_data(
        &mut c,
        &sync_migrations::MigrateOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(out, sync_migrations::RollbackOutcome::RolledBack);
    let left: i64 = c
        .query_one(
            "SELECT count(*) FROM pg_class WHERE relname LIKE 'sync_activity_log%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0);
    // And 0024 applies again.
    sync_migrations::apply(&mut c, &sync_migrations::MigrateOptions::default())
        .await
        .unwrap();
    verify_ok(&c).await;
}

#[tokio::test]
async fn startup_migrates_then_ensures_and_is_idempotent() {
    let db = TestDb::empty().await;
    let pool = db.pool();
    let opts = sync_migrations::MigrateOptions::default();
    let popts = sync_migrations::startup_partition_options().with_now(test_now());
    let first = sync_migrations::startup_with(&pool, &opts, 2, &popts)
        .await
        .unwrap();
    assert_eq!(
        first
            .migrations
            .applied
            .iter()
            .map(|m| m.version)
            .collect::<Vec<_>>(),
        sync_tests::all_versions()
    );
    assert!(first.partitions.changed());
    assert_eq!(
        first.partitions.created.last(),
        Some(&"sync_activity_log_2027_01".to_owned())
    );
    assert!(!first.partitions.other_run_busy);
    let second = sync_migrations::startup_with(&pool, &opts, 2, &popts)
        .await
        .unwrap();
    assert!(second.migrations.applied.is_empty());
    assert!(!second.partitions.changed());
    verify_ok(&db.client().await).await;
}

#[tokio::test]
async fn ensure_and_archive_go_by_the_injected_clock_not_the_servers() {
    let db = TestDb::migrated().await;
    let mut c = db.client().await;
    // Two instants far from any real "today" of this test suite.
    let late = sync_migrations::partitions::PartitionOptions::default().with_now(at("2031-04"));
    let r = ensure_partitions(&mut c, 2, &late, |_| {}).await.unwrap();
    assert_eq!(r.current_month, "2031-04".parse().unwrap());
    assert_eq!(r.through, "2031-06".parse().unwrap());
    assert_eq!(r.created.first().unwrap(), "sync_activity_log_2026_03");
    assert_eq!(r.created.last().unwrap(), "sync_activity_log_2031_06");
    assert_eq!(r.created.len(), 64);
    // Archive: a cut-off is "not in the past" relative to the options' month.
    let early = sync_migrations::partitions::PartitionOptions::default().with_now(at("2025-12"));
    let err =
        sync_migrations::partitions::archive_partitions(&mut c, "2026-01".parse().unwrap(), &early)
            .await
            .unwrap_err();
    assert!(
        matches!(err, PartitionError::CutoffNotInPast { current, .. } if current == "2025-12".parse().unwrap()),
        "{err}"
    );
    let ok =
        sync_migrations::partitions::archive_partitions(&mut c, "2025-12".parse().unwrap(), &early)
            .await
            .unwrap();
    assert_eq!(ok.current_month, "2025-12".parse().unwrap());
    assert_eq!(
        ok.archived
            .iter()
            .map(|a| a.name.as_str())
            .collect::<Vec<_>>(),
        ["sync_activity_log_2025_11"]
    );
}
