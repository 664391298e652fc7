//! `doctor` checks, each driven both ways on a real database.

use sync_migrations::{doctor, Finding, Verdict};
use sync_tests::TestDb;
use uuid::Uuid;

fn get<'a>(findings: &'a [Finding], check: &str) -> &'a Finding {
    findings
        .iter()
        .find(|f| f.check == check)
        .unwrap_or_else(|| panic!("no check {check}"))
}

#[tokio::test]
async fn doctor_reports_each_symptom_of_the_troubleshooting_section() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    let org = Uuid::new_v4();
    let user = Uuid::new_v4();
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

    let f = doctor(&c, None).await.unwrap();
    assert_eq!(get(&f, "rls_user").verdict, Verdict::Skip);
    assert_eq!(get(&f, "triggers").verdict, Verdict::Pass);
    assert_eq!(get(&f, "rls_enabled").verdict, Verdict::Pass);
    assert_eq!(get(&f, "future_partition_empty").verdict, Verdict::Pass);
    assert_eq!(get(&f, "partition_pruning").verdict, Verdict::Pass);
    assert_eq!(get(&f, "expired_cache_rows").verdict, Verdict::Pass);
    assert_eq!(get(&f, "stalled_syncs").verdict, Verdict::Pass);
    assert_eq!(get(&f, "progress_query_plan").verdict, Verdict::Pass);
    // The seed partitions end at 2026-02: 2026-02-15 is covered, 2026-03-15
    // falls into `future`.
    let at = |d: &str| {
        time::OffsetDateTime::parse(d, &time::format_description::well_known::Rfc3339).unwrap()
    };
    for (now, expected) in [
        ("2026-02-15T00:00:00Z", Verdict::Pass),
        ("2026-03-15T00:00:00Z", Verdict::Fail),
    ] {
        let options = sync_migrations::DoctorOptions::default().with_now(at(now));
        let f = sync_migrations::doctor_with(&c, None, &options)
            .await
            .unwrap();
        assert_eq!(
            get(&f, "current_month_partition").verdict,
            expected,
            "{now}"
        );
    }

    let f = doctor(&c, Some(user)).await.unwrap();
    assert_eq!(get(&f, "rls_user").verdict, Verdict::Pass);
    assert!(get(&f, "rls_user").found.contains(&org.to_string()));
    let f = doctor(&c, Some(Uuid::new_v4())).await.unwrap();
    assert_eq!(get(&f, "rls_user").verdict, Verdict::Fail);

    c.batch_execute(&format!(
        "INSERT INTO sync_activity_log (org_id, action, status, created_at) VALUES ('{org}', 'sync_start', 'pending', '2026-06-01 00:00+00');
         INSERT INTO sync_preview_cache (org_id, sync_type, sync_id, delta_json, cache_key, computed_at)
             VALUES ('{org}', 'odoo', 's', '{{}}', '{org}:k', now() - interval '2 hours');
         INSERT INTO sync_progress (org_id, sync_id, entity_type, heartbeat_at, stall_after)
             VALUES ('{org}', 'silent-worker', 'product', now() - interval '1 hour', interval '1 minute');
         ALTER TABLE sync_progress DISABLE TRIGGER trg_sync_progress_20_metrics;
         ALTER TABLE sync_activity_log_2025_12 DISABLE ROW LEVEL SECURITY;
         SET constraint_exclusion = off;"
    ))
    .await
    .unwrap();
    let f = doctor(&c, None).await.unwrap();
    let future = get(&f, "future_partition_empty");
    assert_eq!(future.verdict, Verdict::Fail);
    assert!(future.fix.contains("partitions ensure"));
    let expired = get(&f, "expired_cache_rows");
    assert_eq!(expired.verdict, Verdict::Warn);
    assert!(expired.found.starts_with("1 expired"));
    let stalled = get(&f, "stalled_syncs");
    assert_eq!(stalled.verdict, Verdict::Warn);
    assert!(
        stalled.found.contains(&format!("{org}/silent-worker")),
        "{}",
        stalled.found
    );
    let triggers = get(&f, "triggers");
    assert_eq!(triggers.verdict, Verdict::Fail);
    assert!(triggers.found.contains("trg_sync_progress_20_metrics"));
    let rls = get(&f, "rls_enabled");
    assert_eq!(rls.verdict, Verdict::Fail);
    assert!(rls.found.contains("sync_activity_log_2025_12"));
    assert_eq!(get(&f, "partition_pruning").verdict, Verdict::Fail);
    assert_eq!(get(&f, "unused_indexes").verdict, Verdict::Warn);
}

#[tokio::test]
async fn doctor_fails_on_catch_all_rows_a_month_should_hold_and_warns_on_later_ones() {
    use sync_migrations::partitions::{ensure_partitions, Month, PartitionOptions};
    use sync_migrations::{doctor_with, DoctorOptions};
    let db = TestDb::migrated().await;
    let mut c = db.client().await;
    let org = Uuid::new_v4();
    c.execute(
        "INSERT INTO organization (id, name) VALUES ($1, 'o')",
        &[&org],
    )
    .await
    .unwrap();
    let mid = |m: &str| m.parse::<Month>().unwrap().start() + time::Duration::days(14);
    // Partitions through 2027-02 (now = 2026-11-15, 3 months ahead); the
    // catch-all starts at 2027-03-01.
    ensure_partitions(
        &mut c,
        3,
        &PartitionOptions::default().with_now(mid("2026-11")),
        |_| {},
    )
    .await
    .unwrap();
    let options = DoctorOptions::default().with_now(mid("2026-11"));
    let f = doctor_with(&c, None, &options).await.unwrap();
    assert_eq!(get(&f, "future_partition_empty").verdict, Verdict::Pass);
    assert_eq!(get(&f, "current_month_partition").verdict, Verdict::Pass);

    // A row dated exactly at the horizon (2027-03-01, beyond 2026-11 + 3) and
    // one later: they belong in the catch-all for now — warn only.
    c.execute(
        "INSERT INTO sync_activity_log (org_id, action, status, created_at) \
         VALUES ($1, 'sync_start', 'pending', '2027-03-01 00:00+00'), \
                ($1, 'sync_start', 'pending', '2027-05-20 00:00+00')",
        &[&org],
    )
    .await
    .unwrap();
    let f = doctor_with(&c, None, &options).await.unwrap();
    let future = get(&f, "future_partition_empty");
    assert_eq!(future.verdict, Verdict::Warn, "{future:?}");
    assert!(future.found.starts_with("2 row(s)"), "{future:?}");
    assert!(future.found.contains("2027-03-01"), "{future:?}");

    // Three months later (now = 2027-02-15): 2027-03 … 2027-05 are due, so
    // both rows should be in monthly partitions: fail.
    let later = DoctorOptions::default().with_now(mid("2027-02"));
    let f = doctor_with(&c, None, &later).await.unwrap();
    let future = get(&f, "future_partition_empty");
    assert_eq!(future.verdict, Verdict::Fail, "{future:?}");
    assert!(future.found.starts_with("2 row(s)"), "{future:?}");
    assert!(future.fix.contains("partitions ensure"));
    assert_eq!(get(&f, "current_month_partition").verdict, Verdict::Pass);
    // One month later only the 2027-03 row is due; still a failure.
    let f = doctor_with(&c, None, &later.clone().with_months_ahead(1))
        .await
        .unwrap();
    let future = get(&f, "future_partition_empty");
    assert_eq!(future.verdict, Verdict::Fail, "{future:?}");
    assert!(future.found.starts_with("1 row(s)"), "{future:?}");
    assert!(future.found.contains("1 later row(s)"), "{future:?}");
    // A month without a partition (now = 2027-04): current_month_partition fails.
    let f = doctor_with(&c, None, &DoctorOptions::default().with_now(mid("2027-04")))
        .await
        .unwrap();
    assert_eq!(get(&f, "current_month_partition").verdict, Verdict::Fail);
}
