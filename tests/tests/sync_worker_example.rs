//! `cargo run --example sync_worker` (README's first command), run in its fast
//! mode: against a test database named by `DATABASE_URL`, and without one (a
//! throwaway PostgreSQL started from the installed binaries).

use std::process::{Command, Output};

use sync_tests::{sync_worker_bin, TestDb};

/// The verification table's rows: each must be ✓, and all of the spec's are there.
fn assert_verification_all_ok(out: &Output) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    let table: Vec<&str> = stdout
        .lines()
        .skip_while(|l| *l != "VERIFICATION RESULTS")
        .skip(3) // title, header, rule
        .filter(|l| l.starts_with('|'))
        .collect();
    for component in [
        "Tables",
        "RLS Enabled",
        "Security Policies",
        "Indexes",
        "Triggers",
        "Enums",
    ] {
        assert!(
            table
                .iter()
                .any(|l| l.starts_with(&format!("| {component} "))),
            "no {component} row:\n{stdout}"
        );
    }
    for row in &table {
        assert!(row.contains('✓') && !row.contains('✗'), "{row}\n{stdout}");
    }
}

#[tokio::test]
async fn sync_worker_runs_against_database_url() {
    let db = TestDb::empty().await;
    let out = Command::new(sync_worker_bin())
        .env("DATABASE_URL", db.url())
        .env("SYNC_WORKER_FAST", "1")
        .output()
        .expect("run the sync_worker example");
    assert_verification_all_ok(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("Using DATABASE_URL"), "{stdout}");
    assert!(stdout.contains("Migrations: applied V24__"), "{stdout}");
    assert!(stdout.contains("(from the database)"), "{stdout}");

    // What it reported is what the database holds.
    let c = db.client().await;
    let row = c
        .query_one(
            "SELECT sync_id, processed_count, failed_count, total_items, completed_at IS NOT NULL, \
                    speed_items_per_min IS NOT NULL, source_system \
             FROM sync_progress",
            &[],
        )
        .await
        .unwrap();
    let sync_id: String = row.get(0);
    let (processed, failed, total): (i32, i32, Option<i32>) = (row.get(1), row.get(2), row.get(3));
    assert_eq!(total, Some(40));
    assert_eq!(processed + failed, 40);
    assert!(failed > 0, "the simulation includes failures");
    assert!(row.get::<_, bool>(4), "completed");
    assert!(row.get::<_, bool>(5), "speed computed by the database");
    assert_eq!(
        row.get::<_, Option<String>>(6).as_deref(),
        Some("woocommerce")
    );
    assert!(stdout.contains(&format!("Sync {sync_id} finished: completed_with_errors")));
    let per_record: i64 = c
        .query_one(
            "SELECT count(*) FROM sync_activity_log WHERE sync_id = $1 \
             AND action IN ('record_create', 'record_update') AND entity_type = 'product'",
            &[&sync_id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(per_record, 40);
    let failed_records: i64 = c
        .query_one(
            "SELECT count(*) FROM sync_activity_log WHERE sync_id = $1 AND status = 'failed' \
             AND error_message IS NOT NULL",
            &[&sync_id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(failed_records, i64::from(failed));
    // The partitions were kept ahead: today's rows are not in the catch-all.
    let in_future: i64 = c
        .query_one("SELECT count(*) FROM sync_activity_log_future", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(in_future, 0);
}

#[test]
fn sync_worker_starts_a_throwaway_postgres_without_database_url() {
    let out = Command::new(sync_worker_bin())
        .env_remove("DATABASE_URL")
        .env("SYNC_WORKER_FAST", "1")
        .output()
        .expect("run the sync_worker example");
    assert_verification_all_ok(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("No DATABASE_URL: starting a throwaway PostgreSQL"),
        "{stdout}"
    );
}
