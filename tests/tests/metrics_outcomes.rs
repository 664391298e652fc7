//! The spec's success/error rates next to the outcome breakdown of ended syncs,
//! over hand-written activity rows with hand-computed expectations, through the
//! library and through `sync-migrate stats` (text and `--json`).

use std::process::Command;

use sync_store::Store;
use sync_tests::{sync_migrate_bin, TestDb};
use uuid::Uuid;

/// Org A's rows (action, status, how many). All dated 2026-01-10; org B gets
/// noise that must never be counted for A.
const ROWS_A: &[(&str, &str, i64)] = &[
    ("sync_start", "in_progress", 3),
    ("sync_progress", "in_progress", 1),
    ("sync_complete", "completed", 2),
    ("sync_complete", "completed_with_errors", 1),
    ("sync_fail", "failed", 1),
    ("sync_cancel", "cancelled", 1),
    ("sync_complete", "pending", 1), // written by some other client: "other"
    ("record_create", "completed", 4),
    ("record_update", "failed", 2),
];
// Hand-computed for org A:
//   all entries          3+1+2+1+1+1+1+4+2 = 16
//   spec completed       2 (sync_complete) + 4 (record_create) = 6  -> 6/16 = 0.375
//   spec errors          1 (cwe) + 1 (sync_fail) + 2 (record_update failed) = 4 -> 0.25
//   ended (sync_complete | sync_fail | sync_cancel) = 2+1+1+1+1 = 6
//     completed 2, completed_with_errors 1, failed 1, cancelled 1, other 1

async fn seed(db: &TestDb) -> (Uuid, Uuid) {
    let c = db.client().await;
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    c.execute(
        "INSERT INTO organization (id, name) VALUES ($1, 'a'), ($2, 'b')",
        &[&a, &b],
    )
    .await
    .unwrap();
    for (action, status, n) in ROWS_A {
        c.execute(
            "INSERT INTO sync_activity_log (org_id, action, status, created_at) \
             SELECT $1, $2::text::sync_action, $3::text::sync_status_type, \
                    timestamptz '2026-01-10 12:00+00' \
             FROM generate_series(1, $4::bigint)",
            &[&a, action, status, n],
        )
        .await
        .unwrap();
    }
    // Org B: 5 ended syncs, all failed, on another day.
    c.execute(
        "INSERT INTO sync_activity_log (org_id, action, status, created_at) \
         SELECT $1, 'sync_fail', 'failed', timestamptz '2026-01-20 12:00+00' \
         FROM generate_series(1, 5)",
        &[&b],
    )
    .await
    .unwrap();
    (a, b)
}

#[tokio::test]
async fn spec_rates_and_outcome_breakdown_are_distinct_and_exact() {
    let db = TestDb::migrated().await;
    let (a, _b) = seed(&db).await;
    let store = Store::new(db.pool());
    let m = store.service().metrics(a, None).await.unwrap();
    assert_eq!(
        (m.activity_total, m.activity_completed, m.activity_errors),
        (16, 6, 4)
    );
    assert_eq!(m.success_rate, Some(6.0 / 16.0), "the spec's formula");
    assert_eq!(m.error_rate, Some(4.0 / 16.0), "the spec's formula");
    let o = m.outcomes;
    assert_eq!(
        (
            o.ended,
            o.completed,
            o.completed_with_errors,
            o.failed,
            o.cancelled,
            o.other
        ),
        (6, 2, 1, 1, 1, 1)
    );
    assert_eq!(o.share(o.completed), Some(2.0 / 6.0));
    let sum: f64 = [
        o.completed,
        o.completed_with_errors,
        o.failed,
        o.cancelled,
        o.other,
    ]
    .iter()
    .map(|&n| o.share(n).unwrap())
    .sum();
    assert!((sum - 1.0).abs() < 1e-12, "shares sum to 100 %: {sum}");

    // All orgs: org B's 5 failed ends join (16 + 5 entries, 6 + 5 ended).
    let all = store.service().metrics_all_orgs(None).await.unwrap();
    assert_eq!((all.activity_total, all.activity_errors), (21, 9));
    assert_eq!(
        (
            all.outcomes.ended,
            all.outcomes.failed,
            all.outcomes.completed
        ),
        (11, 6, 2)
    );
    // A window after org A's day: only org B's rows.
    let since = time::macros::datetime!(2026-01-15 00:00 UTC);
    let w = store.service().metrics_all_orgs(Some(since)).await.unwrap();
    assert_eq!((w.outcomes.ended, w.outcomes.failed), (5, 5));
    assert_eq!(w.outcomes.share(w.outcomes.failed), Some(1.0));
    // Nothing ended: shares undefined, not a division by zero.
    let none = store
        .service()
        .metrics_all_orgs(Some(time::macros::datetime!(2026-02-01 00:00 UTC)))
        .await
        .unwrap();
    assert_eq!(none.outcomes.ended, 0);
    assert_eq!(none.outcomes.share(0), None);
}

#[tokio::test]
async fn stats_prints_spec_rates_and_outcomes_with_their_definitions() {
    let db = TestDb::migrated().await;
    let (a, _b) = seed(&db).await;
    let run = |args: &[&str]| {
        Command::new(sync_migrate_bin())
            .args(args)
            .args(["--database-url", &db.url()])
            .env_remove("DATABASE_URL")
            .output()
            .expect("run sync-migrate")
    };
    let org = a.to_string();
    let out = run(&["stats", "--json", "--org", &org]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["success_rate"], 0.375);
    assert_eq!(j["error_rate"], 0.25);
    let o = &j["outcomes"];
    assert_eq!(o["ended"], 6);
    for (k, n) in [
        ("completed", 2),
        ("completed_with_errors", 1),
        ("failed", 1),
        ("cancelled", 1),
        ("other", 1),
    ] {
        assert_eq!(o[k]["count"], n, "{k}");
        assert_eq!(o[k]["share"], n as f64 / 6.0, "{k}");
    }
    let defs = &j["definitions"];
    assert!(defs["success_rate"]
        .as_str()
        .unwrap()
        .contains("the spec's formula"));
    assert!(defs["outcomes"]
        .as_str()
        .unwrap()
        .contains("sync_complete, sync_fail or sync_cancel"));

    let out = run(&["stats", "--org", &org]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let line = |label: &str| {
        text.lines()
            .find(|l| l.trim_start().starts_with(label))
            .unwrap_or_else(|| panic!("no line {label}: {text}"))
            .to_owned()
    };
    assert!(
        line("activity: spec success rate").ends_with("37.5 % (6)"),
        "{text}"
    );
    assert!(
        line("activity: spec error rate").ends_with("25.0 % (4)"),
        "{text}"
    );
    assert!(line("syncs ended").ends_with(" 6"), "{text}");
    assert!(
        line("completed (sync success rate)").ends_with("33.3 % (2)"),
        "{text}"
    );
    assert!(
        line("completed_with_errors").ends_with("16.7 % (1)"),
        "{text}"
    );
    assert!(line("failed").ends_with("16.7 % (1)"), "{text}");
    assert!(line("cancelled").ends_with("16.7 % (1)"), "{text}");
    assert!(line("other").ends_with("16.7 % (1)"), "{text}");
    assert!(
        text.contains("Sync outcomes: only the entries that end a sync"),
        "{text}"
    );
}
