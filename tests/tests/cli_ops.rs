//! `sync-migrate doctor | cleanup | stats` run as a binary against a real database.

use std::process::{Command, Output};

use sync_store::{ProgressDelta, StartSync, Store, SyncEntityType};
use sync_tests::{sync_migrate_bin, TestDb};
use uuid::Uuid;

fn sync_migrate(db: &TestDb, args: &[&str]) -> Output {
    Command::new(sync_migrate_bin())
        .args(args)
        .args(["--database-url", &db.url()])
        .env_remove("DATABASE_URL")
        .output()
        .expect("run sync-migrate")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", stdout(o)))
}

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

fn finding<'a>(report: &'a serde_json::Value, check: &str) -> &'a serde_json::Value {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["check"] == check)
        .unwrap_or_else(|| panic!("no finding {check}: {report}"))
}

#[tokio::test]
async fn doctor_prints_a_line_per_check_and_exits_1_on_a_failure() {
    let db = TestDb::migrated().await;
    let (_, user) = org_with_user(&db).await;
    // The migration's partitions end at 2026-02; make the current month a
    // partition so that every check can pass.
    let ensure = sync_migrate(&db, &["partitions", "ensure"]);
    assert!(ensure.status.success(), "{}", stderr(&ensure));

    let ok = sync_migrate(&db, &["doctor", "--user-id", &user.to_string()]);
    let text = stdout(&ok);
    assert_eq!(ok.status.code(), Some(0), "{text}{}", stderr(&ok));
    // On this healthy, freshly migrated database every check has one right
    // verdict: PASS, except unused_indexes, which warns on a new database (no
    // index has been scanned yet, e.g. sync_preview_cache_computed_by_idx).
    for (check, verdict) in [
        ("rls_user", "PASS"),
        ("triggers", "PASS"),
        ("rls_enabled", "PASS"),
        ("current_month_partition", "PASS"),
        ("future_partition_empty", "PASS"),
        ("partition_pruning", "PASS"),
        ("expired_cache_rows", "PASS"),
        ("stalled_syncs", "PASS"),
        ("progress_query_plan", "PASS"),
        ("unused_indexes", "WARN"),
        ("table_privileges", "PASS"),
        ("foreign_triggers", "PASS"),
    ] {
        let line = text
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(check))
            .unwrap_or_else(|| panic!("no line for {check}:\n{text}"));
        assert_eq!(
            line.split_whitespace().next(),
            Some(verdict),
            "{check}: {line}\n{text}"
        );
    }
    assert!(
        text.contains("sync_preview_cache_computed_by_idx"),
        "the unused index is named: {text}"
    );
    let report = json(&sync_migrate(
        &db,
        &["doctor", "--json", "--user-id", &user.to_string()],
    ));
    assert_eq!(report["ok"], true, "{report}");
    let verdicts: Vec<(String, String)> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["check"].as_str().unwrap().to_owned(),
                f["verdict"].as_str().unwrap().to_owned(),
            )
        })
        .filter(|(_, v)| v != "pass")
        .collect();
    assert_eq!(
        verdicts,
        vec![("unused_indexes".to_owned(), "warn".to_owned())],
        "{report}"
    );
    assert!(
        text.contains(&format!("user {user} belongs to org")),
        "{text}"
    );

    // An unknown user: FAIL with what to do, exit 1; JSON says the same.
    let stranger = Uuid::new_v4().to_string();
    let bad = sync_migrate(&db, &["doctor", "--user-id", &stranger]);
    assert_eq!(bad.status.code(), Some(1), "{}", stdout(&bad));
    let text = stdout(&bad);
    let line = text.lines().find(|l| l.contains("rls_user")).unwrap();
    assert!(line.starts_with("FAIL"), "{text}");
    assert!(
        text.contains("insert the user into auth.users_extended"),
        "{text}"
    );
    assert!(stderr(&bad).contains("1 failing check"), "{}", stderr(&bad));

    let bad = sync_migrate(&db, &["doctor", "--user-id", &stranger, "--json"]);
    assert_eq!(bad.status.code(), Some(1));
    let report = json(&bad);
    assert_eq!(report["ok"], false);
    assert_eq!(finding(&report, "rls_user")["verdict"], "fail");
    assert_eq!(finding(&report, "triggers")["verdict"], "pass");

    // Without --user-id the user check is skipped; a disabled trigger fails.
    db.client()
        .await
        .batch_execute("ALTER TABLE sync_progress DISABLE TRIGGER trg_sync_progress_20_metrics")
        .await
        .unwrap();
    let out = sync_migrate(&db, &["doctor", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let report = json(&out);
    assert_eq!(finding(&report, "rls_user")["verdict"], "skip");
    let triggers = finding(&report, "triggers");
    assert_eq!(triggers["verdict"], "fail");
    assert!(triggers["found"]
        .as_str()
        .unwrap()
        .contains("trg_sync_progress_20_metrics"));
    assert!(!triggers["fix"].as_str().unwrap().is_empty());
}

#[tokio::test]
async fn cleanup_deletes_the_expired_previews_of_every_org_and_nothing_else() {
    let db = TestDb::migrated().await;
    let (a, _) = org_with_user(&db).await;
    let (b, _) = org_with_user(&db).await;
    let c = db.client().await;
    c.batch_execute(&format!(
        "INSERT INTO sync_preview_cache (org_id, sync_type, sync_id, delta_json, cache_key, computed_at) VALUES
           ('{a}', 'odoo', 's', '{{}}', '{a}:old', now() - interval '2 hours'),
           ('{b}', 'shopify', 's', '{{}}', '{b}:old', now() - interval '3 hours'),
           ('{b}', 'shopify', 's', '{{}}', '{b}:live', now())"
    ))
    .await
    .unwrap();

    let out = sync_migrate(&db, &["cleanup", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(json(&out)["deleted"], 2);
    let left: Vec<String> = c
        .query("SELECT cache_key FROM sync_preview_cache", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(left, vec![format!("{b}:live")]);

    let out = sync_migrate(&db, &["cleanup"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "deleted 0 expired preview(s)");
}

#[tokio::test]
async fn stats_reports_the_monitoring_metrics_for_all_orgs_or_one() {
    let db = TestDb::migrated().await;
    let (a, _) = org_with_user(&db).await;
    let (b, _) = org_with_user(&db).await;
    let store = Store::new(db.pool());
    let svc = store.service();
    let mut start = StartSync::new("a-1", SyncEntityType::Product);
    start.total_items = Some(4);
    svc.start_sync(a, &start).await.unwrap();
    svc.report_progress(
        a,
        "a-1",
        &ProgressDelta {
            processed: 4,
            ..ProgressDelta::default()
        },
    )
    .await
    .unwrap(); // completes: sync_start (in_progress) + sync_complete (completed)
    svc.start_sync(b, &StartSync::new("b-1", SyncEntityType::Order))
        .await
        .unwrap();
    svc.fail_sync(b, "b-1", "upstream 500").await.unwrap(); // sync_start + sync_fail (failed)
    svc.start_sync(b, &StartSync::new("b-2", SyncEntityType::Order))
        .await
        .unwrap(); // still running: sync_start
                   // Its worker's reporter went silent an hour ago: stalled (migration 0027).
    db.client()
        .await
        .execute(
            "UPDATE sync_progress SET heartbeat_at = now() - interval '1 hour', \
             stall_after = interval '1 minute' WHERE sync_id = 'b-2'",
            &[],
        )
        .await
        .unwrap();

    let all = sync_migrate(&db, &["stats", "--json"]);
    assert!(all.status.success(), "{}", stderr(&all));
    let all = json(&all);
    assert_eq!(all["org"], serde_json::Value::Null);
    assert_eq!(all["active_syncs"], 1);
    assert_eq!(all["stalled_syncs"], 1);
    assert_eq!(all["activity_total"], 5);
    assert_eq!(all["activity_completed"], 1);
    assert_eq!(all["activity_errors"], 1);
    assert_eq!(all["success_rate"], 0.2);
    assert_eq!(all["error_rate"], 0.2);

    let one = sync_migrate(&db, &["stats", "--json", "--org", &a.to_string()]);
    assert!(one.status.success(), "{}", stderr(&one));
    let one = json(&one);
    assert_eq!(one["org"], a.to_string());
    assert_eq!(one["active_syncs"], 0);
    assert_eq!(one["stalled_syncs"], 0);
    assert_eq!(one["activity_total"], 2);
    assert_eq!(one["success_rate"], 0.5);
    assert_eq!(one["error_rate"], 0.0);

    // A window after everything: no activity counted, rates undefined (no
    // division by zero).
    let later = sync_migrate(&db, &["stats", "--json", "--since", "2999-01-01T00:00:00Z"]);
    assert!(later.status.success(), "{}", stderr(&later));
    let later = json(&later);
    assert_eq!(later["activity_total"], 0);
    assert_eq!(later["success_rate"], serde_json::Value::Null);
    assert_eq!(later["since"], "2999-01-01T00:00:00Z");
    assert_eq!(later["active_syncs"], 1, "the window limits activity only");

    let text = sync_migrate(&db, &["stats"]);
    assert!(text.status.success());
    let text = stdout(&text);
    assert!(text.contains("all orgs, all activity"), "{text}");
    assert!(
        text.contains("spec success rate (completed / all entries)"),
        "{text}"
    );
    assert!(text.contains("20.0 %"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.contains("stalled syncs") && l.trim_end().ends_with(" 1")),
        "{text}"
    );

    let bad = sync_migrate(&db, &["stats", "--since", "yesterday"]);
    assert_eq!(bad.status.code(), Some(2), "{}", stderr(&bad));
    assert!(stderr(&bad).contains("RFC 3339"), "{}", stderr(&bad));
}
