//! Archiving old months: detached and kept, or dropped.

mod partitions_common;

use partitions_common::*;
use sync_migrations::partitions::{
    archive_partitions, archive_partitions_dropping_data, ensure_partitions, Month, PartitionError,
};
use sync_tests::TestDb;

async fn count(c: &tokio_postgres::Client, sql: &str) -> i64 {
    c.query_one(sql, &[]).await.unwrap().get(0)
}

#[tokio::test]
async fn archive_keeps_or_drops_old_months_and_never_the_current_one() {
    let db = TestDb::migrated().await;
    let mut c = db.client().await;
    let t = tenants(&c).await;
    seed_months(&c, &t, "2025-11-01", "2026-02-01", 6).await;
    seed_months(&c, &t, "2026-03-01", "2027-01-01", 6).await;
    let opts = opts();
    let ensured = ensure_partitions(&mut c, 3, &opts, |_| {}).await.unwrap();
    let current = ensured.current_month;
    assert_eq!(current, "2026-11".parse().unwrap(), "the options' clock");
    let counts = per_month_counts(&c).await;
    let count_of = |m: &str| counts.iter().find(|(k, _)| k == m).map_or(0, |(_, n)| *n);

    // Keep: 2025-11 and 2025-12 leave the table but stay as tables with RLS.
    let kept = archive_partitions(&mut c, "2026-01".parse().unwrap(), &opts)
        .await
        .unwrap();
    let names: Vec<_> = kept.archived.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(
        names,
        ["sync_activity_log_2025_11", "sync_activity_log_2025_12"]
    );
    assert!(kept.archived.iter().all(|a| !a.dropped));
    assert_eq!(
        count(&c, "SELECT count(*) FROM sync_activity_log_2025_12").await,
        count_of("2025-12")
    );
    assert_eq!(
        count(
            &c,
            "SELECT count(*) FROM sync_activity_log WHERE created_at < '2026-01-01 00:00:00+00'"
        )
        .await,
        0
    );
    assert_eq!(
        count(
            &c,
            "SELECT count(*) FROM pg_class c WHERE c.relname IN \
             ('sync_activity_log_2025_11', 'sync_activity_log_2025_12') AND c.relrowsecurity \
             AND NOT c.relispartition AND c.relkind = 'r'"
        )
        .await,
        2
    );
    verify_ok(&c).await;
    // Idempotent.
    let again = archive_partitions(&mut c, "2026-01".parse().unwrap(), &opts)
        .await
        .unwrap();
    assert!(again.archived.is_empty());

    // Drop: everything before the current month goes, the current month, later
    // months and the catch-all stay.
    let total_before = count(&c, "SELECT count(*) FROM sync_activity_log").await;
    let dropped = archive_partitions_dropping_data(&mut c, current, &opts)
        .await
        .unwrap();
    let first_dropped: Month = "2026-01".parse().unwrap();
    let mut expected = Vec::new();
    let mut m = first_dropped;
    while m < current {
        expected.push(m.partition_name());
        m = m.next();
    }
    assert_eq!(
        dropped
            .archived
            .iter()
            .map(|a| a.name.clone())
            .collect::<Vec<_>>(),
        expected
    );
    assert!(dropped.archived.iter().all(|a| a.dropped));
    let gone: i64 = expected
        .iter()
        .map(|n| count_of(&format!("{}-{}", &n[18..22], &n[23..25])))
        .sum();
    assert_eq!(
        count(&c, "SELECT count(*) FROM sync_activity_log").await,
        total_before - gone
    );
    let mut names = partition_names(&c).await;
    names.sort();
    let mut want: Vec<String> = (0..=3).map(|k| current.plus(k).partition_name()).collect();
    want.push("sync_activity_log_future".into());
    assert_eq!(names, want);
    assert_eq!(
        count(
            &c,
            &format!(
                "SELECT count(*) FROM pg_class WHERE relname IN ({})",
                expected
                    .iter()
                    .map(|n| format!("'{n}'"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        )
        .await,
        0,
        "dropped tables are gone"
    );
    verify_ok(&c).await;

    // A cut-off after the current month is refused.
    let err = archive_partitions(&mut c, current.next(), &opts)
        .await
        .unwrap_err();
    assert!(
        matches!(err, PartitionError::CutoffNotInPast { .. }),
        "{err}"
    );

    // Rolling 0024 back now fails, naming a kept archive table (it uses 0024's
    // enum types), and changes nothing; once they are dropped it works.
    let migrate = sync_migrations::MigrateOptions::default();
    let err = sync_migrations::rollback_0024_dropping_data(&mut c, &migrate)
        .await
        .unwrap_err();
    assert!(
        matches!(err, sync_migrations::Error::RollbackFailed { .. }),
        "{err}"
    );
    assert!(
        err.to_string().contains("sync_activity_log_2025_1"),
        "message names the archive table: {err}"
    );
    verify_ok(&c).await;
    c.batch_execute("DROP TABLE sync_activity_log_2025_11, sync_activity_log_2025_12")
        .await
        .unwrap();
    assert_eq!(
        sync_migrations::rollback_0024_dropping_data(&mut c, &migrate)
            .await
            .unwrap(),
        sync_migrations::RollbackOutcome::RolledBack
    );
}

#[tokio::test]
async fn archive_with_nothing_old_changes_nothing() {
    let db = TestDb::migrated().await;
    let mut c = db.client().await;
    let r = archive_partitions(&mut c, "2025-11".parse().unwrap(), &opts())
        .await
        .unwrap();
    assert!(r.archived.is_empty());
    assert_eq!(partition_names(&c).await.len(), 5);
}
