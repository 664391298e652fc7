//! Operators' hardening of `sync-migrate` and the connection layer (issue 10,
//! items 6–10): bounded waits, a killed migrator, the operating-system user,
//! `up` leaving a database that `doctor` accepts, exit codes and JSON shapes.
//!
//! No timing is asserted: the deadlines below only turn a hang (the bug) into a
//! failure, and are far above what a loaded machine needs.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use sync_migrations::lock::MIGRATION_LOCK_KEY;
use sync_migrations::{Error, MigrateOptions};
use sync_tests::{sync_migrate_bin, TestDb};

/// Longest any single step may take before the test calls it a hang.
const HANG: Duration = Duration::from_secs(90);

fn sync_migrate(db: &TestDb, args: &[&str]) -> Output {
    let mut cmd = Command::new(sync_migrate_bin());
    cmd.args(args)
        .args(["--database-url", &db.url()])
        .env_remove("DATABASE_URL");
    run_bounded(cmd)
}

/// Runs `cmd` to completion, failing the test if it is still running after [`HANG`].
fn run_bounded(mut cmd: Command) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run sync-migrate");
    let started = Instant::now();
    while child.try_wait().expect("try_wait").is_none() {
        if started.elapsed() > HANG {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "sync-migrate still running after {HANG:?} (hangs):\n{}",
                text(&out)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().expect("output")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(o)))
}

/// A TCP listener that accepts connections and never answers (a silent server).
fn silent_listener() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming() {
            held.push(stream);
        }
    });
    port
}

// ---- item 7: every network wait is bounded ------------------------------------

#[test]
fn cli_status_against_a_silent_server_honours_connect_timeout() {
    let port = silent_listener();
    let mut cmd = Command::new(sync_migrate_bin());
    cmd.args([
        "--database-url",
        &format!("postgres://u@127.0.0.1:{port}/db?connect_timeout=2"),
        "status",
    ])
    .env_remove("DATABASE_URL");
    let out = run_bounded(cmd);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = stderr(&out);
    assert!(
        err.contains("no answer from 127.0.0.1") && err.contains("connect_timeout"),
        "{err}"
    );
}

#[tokio::test]
async fn library_connect_against_a_silent_server_honours_connect_timeout() {
    let port = silent_listener();
    let url = format!("postgres://u@127.0.0.1:{port}/db?connect_timeout=1");
    let config = sync_connect::resolve_config(Some(&url)).unwrap();
    let tls = sync_connect::TlsOptions::resolve(Some(&url), None).unwrap();
    let result = tokio::time::timeout(HANG, sync_connect::connect(&config, &tls))
        .await
        .expect("connect hangs on a silent server");
    match result {
        Err(sync_connect::Error::Unavailable { reason }) => {
            assert!(reason.contains("no answer"), "{reason}")
        }
        Err(e) => panic!("expected Unavailable, got {e:?}"),
        Ok(_) => panic!("connected to a silent server"),
    }
}

#[tokio::test]
async fn library_pool_against_a_silent_server_fails_without_connect_timeout_set() {
    // No connect_timeout in the URL: the default bound (10 s) applies.
    let port = silent_listener();
    let url = format!("postgres://u@127.0.0.1:{port}/db");
    let config = sync_connect::resolve_config(Some(&url)).unwrap();
    let tls = sync_connect::TlsOptions::resolve(Some(&url), None).unwrap();
    let pool = sync_connect::pool(&config, &tls, 2).unwrap();
    let got = tokio::time::timeout(HANG, pool.get())
        .await
        .expect("pool.get() hangs on a silent server");
    let Err(err) = got else {
        panic!("a connection from a silent server");
    };
    assert!(
        matches!(err, deadpool_postgres::PoolError::Timeout(_)),
        "{err:?}"
    );
}

// ---- item 6: a killed migrator does not keep the migration lock ---------------

/// A database with 0001 applied and 0024 pending, and a session holding an
/// ACCESS EXCLUSIVE lock on `organization` (0024's foreign keys need a lock on
/// it, so 0024's DDL waits behind this session).
async fn blocked_database() -> (TestDb, tokio_postgres::Client) {
    let db = TestDb::migrated().await;
    let mut c = db.client().await;
    sync_migrations::rollback_0024_dropping_data(&mut c, &MigrateOptions::default())
        .await
        .unwrap();
    let blocker = db.client().await;
    blocker
        .batch_execute("BEGIN; LOCK TABLE organization IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    (db, blocker)
}

async fn migration_lock_is_free(c: &tokio_postgres::Client) -> bool {
    let got: bool = c
        .query_one("SELECT pg_try_advisory_lock($1)", &[&MIGRATION_LOCK_KEY])
        .await
        .unwrap()
        .get(0);
    if got {
        c.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK_KEY])
            .await
            .unwrap();
    }
    got
}

#[tokio::test]
async fn killed_migrator_waiting_on_a_table_lock_releases_the_migration_lock() {
    let (db, blocker) = blocked_database().await;
    let observer = db.client().await;
    let mut child = Command::new(sync_migrate_bin())
        .args(["up", "--no-partitions", "--database-url", &db.url()])
        .env_remove("DATABASE_URL")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until its DDL waits on our table lock, holding the migration lock.
    let started = Instant::now();
    loop {
        let waiting: i64 = observer
            .query_one(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE datname = current_database() AND wait_event_type = 'Lock' \
                   AND pid <> pg_backend_pid()",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if waiting > 0 && !migration_lock_is_free(&observer).await {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "sync-migrate up ended before it waited on the lock"
        );
        assert!(
            started.elapsed() < HANG,
            "sync-migrate up never waited on the table lock"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    // The orphaned backend must let the migration lock go while the blocker
    // still holds its table lock.
    let killed_at = Instant::now();
    while !migration_lock_is_free(&observer).await {
        assert!(
            killed_at.elapsed() < HANG,
            "the killed migrator's backend still holds the migration lock"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    blocker.batch_execute("ROLLBACK").await.unwrap();
    let out = sync_migrate(&db, &["up", "--lock-wait-secs", "5", "--no-partitions"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("Applied V24__"),
        "{}",
        text(&out)
    );
}

#[tokio::test]
async fn ddl_lock_waits_are_bounded_and_leave_nothing_applied_or_locked() {
    let (db, blocker) = blocked_database().await;
    let mut c = db.client().await;
    let options = MigrateOptions {
        lock_wait: Duration::from_secs(3),
        ddl_lock_timeout: Duration::from_millis(500),
        ..MigrateOptions::default()
    };
    let result = tokio::time::timeout(HANG, sync_migrations::apply(&mut c, &options))
        .await
        .expect("apply waits without bound on a table lock");
    match &result {
        Err(e @ Error::DdlLockTimeout { attempts, .. }) => {
            assert!(*attempts >= 1);
            assert_eq!(e.code(), Some("55P03"));
            let msg = e.to_string();
            assert!(
                msg.contains("V24__") && msg.contains("pg_blocking_pids"),
                "{msg}"
            );
        }
        other => panic!("expected DdlLockTimeout, got {other:?}"),
    }
    // Nothing of 0024 applied, the migration lock free, the session's
    // lock_timeout back to what it was.
    let status = sync_migrations::status(&mut c).await.unwrap();
    assert!(status
        .iter()
        .any(|l| l.version == 24 && l.state == sync_migrations::MigrationState::Pending));
    assert!(migration_lock_is_free(&db.client().await).await);
    let lt: String = c.query_one("SHOW lock_timeout", &[]).await.unwrap().get(0);
    assert_eq!(lt, "0");
    // Once the blocker goes, the same call applies 0024 (and what follows it).
    blocker.batch_execute("ROLLBACK").await.unwrap();
    let report = sync_migrations::apply(&mut c, &options).await.unwrap();
    assert_eq!(
        report.applied.iter().map(|m| m.version).collect::<Vec<_>>(),
        sync_tests::versions_from(24)
    );
}

// ---- item 8: the operating-system user, and where a command acts --------------

fn os_user() -> String {
    let out = Command::new("id").arg("-un").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[tokio::test]
async fn without_user_env_the_os_user_is_used_and_shown() {
    let db = TestDb::empty().await;
    let config = db.config();
    let mut cmd = Command::new(sync_migrate_bin());
    cmd.args(["partitions", "list"])
        .env_remove("DATABASE_URL")
        .env_remove("USER")
        .env_remove("LOGNAME")
        .env_remove("PGUSER")
        .env_remove("PGDATABASE");
    match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => cmd.env("PGHOST", h),
        Some(tokio_postgres::config::Host::Unix(p)) => cmd.env("PGHOST", p),
        None => &mut cmd,
    };
    cmd.env(
        "PGPORT",
        config
            .get_ports()
            .first()
            .copied()
            .unwrap_or(5432)
            .to_string(),
    );
    let out = run_bounded(cmd);
    let me = os_user();
    assert_ne!(me, "", "id -un");
    let err = stderr(&out);
    assert!(
        err.contains(&format!("database \"{me}\"")) && err.contains(&format!("as user \"{me}\"")),
        "expected the OS user {me:?} as user and database:\n{err}"
    );
}

#[tokio::test]
async fn changing_commands_say_where_they_act() {
    let db = TestDb::migrated().await;
    for args in [
        &["up", "--no-partitions"][..],
        &["cleanup"],
        &["partitions", "list"],
    ] {
        let out = sync_migrate(&db, args);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", text(&out));
        let err = stderr(&out);
        assert!(
            err.contains(&format!("database \"{}\"", db.name())) && err.contains("as user \""),
            "{args:?}: {err}"
        );
    }
    // Read-only commands print only their result.
    let out = sync_migrate(&db, &["verify", "--json"]);
    assert!(!stderr(&out).contains("as user"), "{}", stderr(&out));
}

// ---- item 9: `up` leaves a database that doctor accepts -----------------------

fn finding(report: &serde_json::Value, check: &str) -> String {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["check"] == check)
        .unwrap_or_else(|| panic!("no finding {check}: {report}"))["verdict"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn up_creates_the_partitions_doctor_needs_unless_told_not_to() {
    let bare = TestDb::empty().await;
    let out = sync_migrate(&bare, &["up", "--no-partitions"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let doctor = json(&sync_migrate(&bare, &["doctor", "--json"]));
    assert_eq!(
        finding(&doctor, "current_month_partition"),
        "fail",
        "{doctor}"
    );

    let db = TestDb::empty().await;
    let out = sync_migrate(&db, &["up", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let report = json(&out);
    assert!(report["partitions"]["through"].is_string(), "{report}");
    let verify = sync_migrate(&db, &["verify"]);
    assert_eq!(verify.status.code(), Some(0), "{}", text(&verify));
    let doctor = json(&sync_migrate(&db, &["doctor", "--json"]));
    assert_eq!(
        finding(&doctor, "current_month_partition"),
        "pass",
        "{doctor}"
    );
}

// ---- item 10: exit codes, JSON shapes, our own remedies -----------------------

#[tokio::test]
async fn status_exits_1_for_a_changed_or_unknown_migration() {
    let db = TestDb::migrated().await;
    let ok = sync_migrate(&db, &["status"]);
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok));

    let c = db.client().await;
    c.batch_execute("UPDATE refinery_schema_history SET checksum = '42' WHERE version = 24")
        .await
        .unwrap();
    let changed = sync_migrate(&db, &["status"]);
    assert_eq!(changed.status.code(), Some(1), "{}", text(&changed));
    assert!(stderr(&changed).contains("changed after apply"));

    let db = TestDb::migrated().await;
    let c = db.client().await;
    c.batch_execute(
        "INSERT INTO refinery_schema_history (version, name, applied_on, checksum) \
         VALUES (99, 'from_a_newer_build', '2026-01-01T00:00:00Z', '7')",
    )
    .await
    .unwrap();
    let unknown = sync_migrate(&db, &["status", "--json"]);
    assert_eq!(unknown.status.code(), Some(1), "{}", text(&unknown));
    let lines = json(&unknown);
    assert!(
        lines
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["version"] == 99 && l["state"] == "unknown_to_this_build"),
        "{lines}"
    );
}

#[tokio::test]
async fn json_checksums_are_exact_strings() {
    let db = TestDb::empty().await;
    let up = sync_migrate(&db, &["up", "--json", "--no-partitions"]);
    assert_eq!(up.status.code(), Some(0), "{}", text(&up));
    for m in json(&up)["applied"].as_array().unwrap() {
        assert!(m["checksum"].is_string(), "{m}");
    }
    let status = json(&sync_migrate(&db, &["status", "--json"]));
    for line in status.as_array().unwrap() {
        let version = line["version"].as_i64().unwrap();
        let embedded = sync_migrations::embedded_migrations()
            .into_iter()
            .find(|e| i64::from(e.version) == version)
            .unwrap();
        assert_eq!(
            line["checksum"].as_str(),
            Some(embedded.checksum.to_string().as_str()),
            "{line}"
        );
    }
    // A checksum above 2^53 (as refinery's usually are) keeps every digit.
    let c = db.client().await;
    c.batch_execute(
        "UPDATE refinery_schema_history SET checksum = '18446744073709551557' WHERE version = 24",
    )
    .await
    .unwrap();
    let changed = json(&sync_migrate(&db, &["status", "--json"]));
    let v24 = changed
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["version"] == 24)
        .unwrap();
    assert_eq!(v24["applied_checksum"], "18446744073709551557", "{v24}");
}

#[tokio::test]
async fn doctor_stats_cleanup_on_an_unmigrated_database_say_apply_first() {
    let db = TestDb::empty().await;
    for args in [
        &["doctor"][..],
        &["stats"],
        &["cleanup"],
        &["doctor", "--json"],
    ] {
        let out = sync_migrate(&db, args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", text(&out));
        assert!(
            stderr(&out).contains("apply the migrations first (`sync-migrate up`)"),
            "{args:?}: {}",
            text(&out)
        );
    }
    let out = sync_migrate(&db, &["stats", "--json"]);
    let body = json(&out);
    assert!(body["error"]
        .as_str()
        .unwrap()
        .contains("apply the migrations first"));
}

#[test]
fn usage_errors_under_json_use_the_json_error_shape_and_exit_2() {
    for args in [
        &["--json", "frobnicate"][..],
        &["status", "--json", "--no-such-flag"],
        &["--json", "stats", "--since", "yesterday"],
    ] {
        let out = run_bounded({
            let mut c = Command::new(sync_migrate_bin());
            c.args(args).env_remove("DATABASE_URL");
            c
        });
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
        let body = json(&out);
        assert!(
            body["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{body}"
        );
        assert!(body.get("sqlstate").is_some(), "{body}");
    }
    // Without --json a usage error is clap's text, still exit 2.
    let out = run_bounded({
        let mut c = Command::new(sync_migrate_bin());
        c.arg("frobnicate").env_remove("DATABASE_URL");
        c
    });
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
}

#[tokio::test]
async fn down_blocked_by_an_archived_table_names_it_with_our_remedy() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    // What `partitions archive` leaves: a month detached and kept as a table,
    // whose columns use 0024's enum types.
    const FIRST_MONTH: &str = "SELECT min(c.relname)::text FROM pg_inherits i \
         JOIN pg_class c ON c.oid = i.inhrelid \
         WHERE i.inhparent = 'sync_activity_log'::regclass \
           AND c.relname <> 'sync_activity_log_future'";
    let month: String = c.query_one(FIRST_MONTH, &[]).await.unwrap().get(0);
    c.batch_execute(&format!(
        "DO $$ BEGIN EXECUTE format('ALTER TABLE sync_activity_log DETACH PARTITION %I', \
         ({FIRST_MONTH})); END $$"
    ))
    .await
    .unwrap();

    let out = sync_migrate(&db, &["down"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = stderr(&out);
    assert!(err.contains(&format!("table {month}")), "{err}");
    assert!(
        err.contains("ATTACH PARTITION") && err.contains("Drop them"),
        "{err}"
    );
    assert!(!err.contains("CASCADE"), "{err}");
    let out = sync_migrate(&db, &["down", "--json"]);
    assert_eq!(json(&out)["sqlstate"], "2BP01", "{}", text(&out));
    // Nothing changed.
    let n: i64 = c
        .query_one(
            "SELECT count(*) FROM refinery_schema_history WHERE version = 24",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
}
