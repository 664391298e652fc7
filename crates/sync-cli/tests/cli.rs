//! The `sync-migrate` binary against a real database.

use std::process::{Command, Output};

use sync_tests::TestDb;

fn sync_migrate(db: &TestDb, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sync-migrate"))
        .args(args)
        .args(["--database-url", &db.url()])
        .env_remove("DATABASE_URL")
        .output()
        .expect("run sync-migrate")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", stdout(o)))
}

#[tokio::test]
async fn up_status_verify_down_with_text_and_json() {
    let db = TestDb::empty().await;

    let st = sync_migrate(&db, &["status", "--json"]);
    assert!(st.status.success());
    let st = json(&st);
    assert_eq!(st[0]["state"], "pending");
    assert_eq!(st[1]["version"], 24);

    let up = sync_migrate(&db, &["up"]);
    assert!(
        up.status.success(),
        "{}",
        String::from_utf8_lossy(&up.stderr)
    );
    assert!(stdout(&up).contains("Applied V24__sync_preview_progress_logs"));

    let up = sync_migrate(&db, &["up", "--json"]);
    assert!(up.status.success());
    assert_eq!(json(&up)["applied"].as_array().unwrap().len(), 0);
    assert_eq!(
        json(&up)["already_applied"],
        sync_migrations::embedded_migrations().len()
    );

    let v = sync_migrate(&db, &["verify"]);
    assert!(v.status.success());
    assert!(
        stdout(&v).contains("| Security Policies | 12       | 12     | ✓      |"),
        "{}",
        stdout(&v)
    );

    let v = sync_migrate(&db, &["verify", "--json"]);
    assert_eq!(json(&v)["ok"], true);

    let down = sync_migrate(&db, &["down", "--json"]);
    assert!(down.status.success());
    assert_eq!(json(&down)["outcome"], "rolled_back");

    // A shortfall exits non-zero.
    let v = sync_migrate(&db, &["verify", "--json"]);
    assert_eq!(v.status.code(), Some(1));
    assert_eq!(json(&v)["ok"], false);
    let st = json(&sync_migrate(&db, &["status", "--json"]));
    assert_eq!(st[1]["state"], "pending");
}

#[tokio::test]
async fn down_refuses_a_later_migration_and_errors_carry_sqlstate() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    c.batch_execute(
        "INSERT INTO refinery_schema_history (version, name, applied_on, checksum) \
         VALUES (30, 'later', '2026-11-01T00:00:00Z', '1')",
    )
    .await
    .unwrap();
    let down = sync_migrate(&db, &["down"]);
    assert_eq!(down.status.code(), Some(1));
    let err = String::from_utf8_lossy(&down.stderr);
    assert!(
        err.contains("refusing to roll back 0024") && err.contains("V30__later"),
        "{err}"
    );

    c.batch_execute("DELETE FROM refinery_schema_history WHERE version = 30; CREATE VIEW v AS SELECT * FROM sync_progress")
        .await
        .unwrap();
    let down = sync_migrate(&db, &["down", "--json"]);
    assert_eq!(down.status.code(), Some(1));
    let body = json(&down);
    assert_eq!(body["sqlstate"], "2BP01");
    assert!(body["error"].as_str().unwrap().contains("changed nothing"));
}

#[test]
fn unreachable_server_is_a_clear_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_sync-migrate"))
        .args([
            "status",
            "--database-url",
            "postgresql://postgres@127.0.0.1:1/nothing",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot connect to the database") && err.contains("DATABASE_URL"),
        "{err}"
    );
}

#[test]
fn neon_pooled_endpoint_is_refused_before_connecting() {
    let out = Command::new(env!("CARGO_BIN_EXE_sync-migrate"))
        .args([
            "up",
            "--database-url",
            "postgresql://u:p@ep-cool-darkness-123456-pooler.us-east-2.aws.neon.tech/db",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("ep-cool-darkness-123456.us-east-2.aws.neon.tech"),
        "{err}"
    );
}

#[test]
fn bad_usage_exits_2() {
    let out = Command::new(env!("CARGO_BIN_EXE_sync-migrate"))
        .arg("sideways")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
