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
    assert_eq!(get(&f, "progress_query_plan").verdict, Verdict::Pass);
    // The seed partitions end at 2026-02: today falls into `future`.
    let month_covered: bool = c
        .query_one("SELECT now() < '2026-03-01 00:00+00'", &[])
        .await
        .unwrap()
        .get(0);
    let expected = if month_covered {
        Verdict::Pass
    } else {
        Verdict::Fail
    };
    assert_eq!(get(&f, "current_month_partition").verdict, expected);

    let f = doctor(&c, Some(user)).await.unwrap();
    assert_eq!(get(&f, "rls_user").verdict, Verdict::Pass);
    assert!(get(&f, "rls_user").found.contains(&org.to_string()));
    let f = doctor(&c, Some(Uuid::new_v4())).await.unwrap();
    assert_eq!(get(&f, "rls_user").verdict, Verdict::Fail);

    c.batch_execute(&format!(
        "INSERT INTO sync_activity_log (org_id, action, status, created_at) VALUES ('{org}', 'sync_start', 'pending', '2026-06-01 00:00+00');
         INSERT INTO sync_preview_cache (org_id, sync_type, sync_id, delta_json, cache_key, computed_at)
             VALUES ('{org}', 'odoo', 's', '{{}}', '{org}:k', now() - interval '2 hours');
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
    let triggers = get(&f, "triggers");
    assert_eq!(triggers.verdict, Verdict::Fail);
    assert!(triggers.found.contains("trg_sync_progress_20_metrics"));
    let rls = get(&f, "rls_enabled");
    assert_eq!(rls.verdict, Verdict::Fail);
    assert!(rls.found.contains("sync_activity_log_2025_12"));
    assert_eq!(get(&f, "partition_pruning").verdict, Verdict::Fail);
    assert_eq!(get(&f, "unused_indexes").verdict, Verdict::Warn);
}
