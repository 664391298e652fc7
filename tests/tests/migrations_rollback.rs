//! Rolling back 0024: exact inverse (schema dumps compared), standalone with psql,
//! refusals, and a failed rollback that changes nothing.

use std::path::PathBuf;
use std::process::Command;

use sync_migrations::{
    apply, rollback_0024_dropping_data, Error, MigrateOptions, MigrationState, RollbackOutcome,
};
use sync_tests::TestDb;

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// `pg_dump --schema-only` of the test database, without the history table
/// (its DDL and rows are refinery's, not 0024's) and with a fixed restrict key.
fn schema_dump(db: &TestDb) -> String {
    let out = Command::new("pg_dump")
        .args([
            "--schema-only",
            "--no-owner",
            "--restrict-key=sync",
            "--exclude-table=refinery_schema_history",
            "--dbname",
            &db.url(),
        ])
        .output()
        .expect("pg_dump must be installed (postgresql-client)");
    assert!(
        out.status.success(),
        "pg_dump failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn psql_file(db: &TestDb, file: &str) -> std::process::Output {
    Command::new("psql")
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", &db.url(), "-f"])
        .arg(repo_root().join(file))
        .output()
        .expect("psql must be installed (postgresql-client)")
}

fn psql_file_single_transaction(db: &TestDb, file: &str) -> std::process::Output {
    Command::new("psql")
        .args([
            "-X",
            "-q",
            "-1",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            &db.url(),
            "-f",
        ])
        .arg(repo_root().join(file))
        .output()
        .expect("psql must be installed (postgresql-client)")
}

/// The state "before 0024": only 0001, applied by psql on a fresh database.
async fn before_0024_dump() -> String {
    let db = TestDb::empty().await;
    let out = psql_file(&db, "migrations/V0001__prerequisites.sql");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    schema_dump(&db)
}

/// The embedded versions from 24 on, oldest first.
fn from_24() -> Vec<i32> {
    sync_migrations::embedded_migrations()
        .iter()
        .map(|m| m.version)
        .filter(|v| *v >= 24)
        .collect()
}

#[test]
fn every_migration_after_0024_has_its_rollback_newest_first() {
    let later: Vec<i32> = from_24().into_iter().filter(|v| *v > 24).rev().collect();
    let listed: Vec<i32> = sync_migrations::ROLLBACKS_AFTER_0024
        .iter()
        .map(|(v, _)| *v)
        .collect();
    assert_eq!(
        listed, later,
        "ROLLBACKS_AFTER_0024 must list every embedded migration after 0024, newest first"
    );
    for (v, sql) in sync_migrations::ROLLBACKS_AFTER_0024 {
        assert!(!sql.trim().is_empty(), "rollback of V{v} is empty");
    }
}

#[tokio::test]
async fn up_down_up_restores_the_exact_schema() {
    let pristine = before_0024_dump().await;
    let db = TestDb::empty().await;
    let mut c = db.client().await;
    let opts = MigrateOptions::default();
    apply(&mut c, &opts).await.unwrap();
    let with_0024 = schema_dump(&db);
    assert!(with_0024.contains("CREATE TABLE public.sync_progress"));
    assert!(with_0024.contains("CREATE TABLE public.sync_progress_tick_key"));

    // Data in every table must not stop the rollback.
    c.batch_execute(
        "INSERT INTO organization (id, name) VALUES ('00000000-0000-0000-0000-000000000001', 'o');
         INSERT INTO sync_progress (org_id, sync_id, entity_type, total_items)
             VALUES ('00000000-0000-0000-0000-000000000001', 's', 'order', 5);
         INSERT INTO sync_preview_cache (org_id, sync_type, sync_id, delta_json, cache_key)
             VALUES ('00000000-0000-0000-0000-000000000001', 'odoo', 's', '{}',
                     '00000000-0000-0000-0000-000000000001:k');
         INSERT INTO sync_progress_tick_key (org_id, sync_id, tick_key)
             VALUES ('00000000-0000-0000-0000-000000000001', 's', 7);
         INSERT INTO sync_activity_batch (org_id, batch_key, row_count)
             VALUES ('00000000-0000-0000-0000-000000000001',
                     '00000000-0000-0000-0000-0000000000b1', 3);",
    )
    .await
    .unwrap();

    assert_eq!(
        rollback_0024_dropping_data(&mut c, &opts).await.unwrap(),
        RollbackOutcome::RolledBack
    );
    let after_down = schema_dump(&db);
    assert_eq!(
        after_down, pristine,
        "rollback must leave exactly the pre-0024 schema"
    );
    let status = sync_migrations::status(&mut c).await.unwrap();
    assert!(matches!(status[1].state, MigrationState::Pending));

    let again = apply(&mut c, &opts).await.unwrap();
    assert_eq!(
        again.applied.iter().map(|m| m.version).collect::<Vec<_>>(),
        from_24(),
        "down rolls back every migration from 0024 on; up re-applies each"
    );
    assert_eq!(
        schema_dump(&db),
        with_0024,
        "re-applied 0024 must equal the first apply"
    );
    assert!(sync_migrations::verify(&c).await.unwrap().is_ok());

    // The data of 0001's tables survived.
    let orgs: i64 = c
        .query_one("SELECT count(*) FROM organization", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(orgs, 1);
}

#[tokio::test]
async fn standalone_psql_rollback_then_up_again() {
    let pristine = before_0024_dump().await;
    let db = TestDb::migrated().await;
    // Newest first: every rollback file after 0024 (one transaction each, -1),
    // then 0024's. The files are found in the folder, so a new migration's
    // rollback is covered without editing this test.
    let mut after_24: Vec<String> =
        std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../rollback"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".sql") && n.as_str() > "0025")
            .collect();
    after_24.sort();
    after_24.reverse();
    assert_eq!(
        after_24.len(),
        sync_migrations::ROLLBACKS_AFTER_0024.len(),
        "one rollback file per migration after 0024: {after_24:?}"
    );
    for file in &after_24 {
        let out = psql_file_single_transaction(&db, &format!("rollback/{file}"));
        assert!(
            out.status.success(),
            "psql rollback {file} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = psql_file(&db, "rollback/0024_sync_preview_progress_logs.sql");
    assert!(
        out.status.success(),
        "psql rollback failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(schema_dump(&db), pristine);
    let mut c = db.client().await;
    let rows: Vec<i32> = c
        .query(
            "SELECT version FROM refinery_schema_history ORDER BY version",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        rows,
        vec![1],
        "the rollbacks remove 0024's and 0025's history rows"
    );
    let report = apply(&mut c, &MigrateOptions::default()).await.unwrap();
    assert_eq!(
        report.applied.iter().map(|m| m.version).collect::<Vec<_>>(),
        sync_tests::versions_from(24)
    );
}

#[tokio::test]
async fn psql_rollback_on_a_database_without_refinery_history() {
    // Applied by hand with psql, no refinery table at all: the rollback still runs.
    let db = TestDb::empty().await;
    for f in [
        "migrations/V0001__prerequisites.sql",
        "migrations/V0024__sync_preview_progress_logs.sql",
    ] {
        let out = psql_file(&db, f);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = psql_file(&db, "rollback/0024_sync_preview_progress_logs.sql");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(schema_dump(&db), before_0024_dump().await);
}

#[tokio::test]
async fn down_refuses_when_a_later_migration_is_applied() {
    let db = TestDb::migrated().await;
    let mut c = db.client().await;
    c.batch_execute(
        "INSERT INTO refinery_schema_history (version, name, applied_on, checksum) \
         VALUES (99, 'later', '2026-11-01T00:00:00Z', '1')",
    )
    .await
    .unwrap();
    let err = rollback_0024_dropping_data(&mut c, &MigrateOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::LaterMigrationApplied { version: 99, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("V99__later"), "{err}");
    // 0025, which this build can roll back, was not rolled back either.
    let keys: Option<String> = c
        .query_one("SELECT to_regclass('sync_progress_tick_key')::text", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(keys.as_deref(), Some("sync_progress_tick_key"));
    // Nothing was dropped.
    assert!(sync_migrations::verify(&c).await.unwrap().is_ok());
}

/// Something outside 0024 depends on it: the rollback stops, names it, and
/// changes nothing (one transaction, no CASCADE).
#[tokio::test]
async fn failed_rollback_changes_nothing_and_names_the_dependent() {
    let db = TestDb::migrated().await;
    let mut c = db.client().await;
    c.batch_execute("CREATE VIEW my_report AS SELECT sync_id FROM sync_progress")
        .await
        .unwrap();
    let err = rollback_0024_dropping_data(&mut c, &MigrateOptions::default())
        .await
        .unwrap_err();
    match &err {
        Error::RollbackFailed { server } => {
            assert_eq!(server.code.as_deref(), Some("2BP01"));
            assert!(
                server.detail.as_deref().unwrap_or("").contains("my_report"),
                "{server}"
            );
        }
        other => panic!("expected RollbackFailed, got {other:?}"),
    }
    assert!(
        sync_migrations::verify(&c).await.unwrap().is_ok(),
        "a failed rollback changed something"
    );
    let status = sync_migrations::status(&mut c).await.unwrap();
    assert!(matches!(status[1].state, MigrationState::Applied { .. }));
    // 0025, rolled back first in the same transaction, is back too.
    assert!(
        matches!(status[2].state, MigrationState::Applied { .. }),
        "{:?}",
        status[2]
    );
    let keys: Option<String> = c
        .query_one("SELECT to_regclass('sync_progress_tick_key')::text", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(keys.as_deref(), Some("sync_progress_tick_key"));
    // The connection is usable and outside any transaction.
    c.batch_execute("DROP VIEW my_report").await.unwrap();
    assert_eq!(
        rollback_0024_dropping_data(&mut c, &MigrateOptions::default())
            .await
            .unwrap(),
        RollbackOutcome::RolledBack
    );
}

#[tokio::test]
async fn down_when_0024_is_not_applied_reports_so() {
    let db = TestDb::empty().await;
    let mut c = db.client().await;
    let out = rollback_0024_dropping_data(&mut c, &MigrateOptions::default())
        .await
        .unwrap();
    assert_eq!(out, RollbackOutcome::WasNotApplied);
}
