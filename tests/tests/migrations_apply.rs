//! Applying migrations: empty database, existing prerequisites, twice, concurrently,
//! after a failure, and with a changed or unknown migration.

use std::time::Duration;

use sync_migrations::{apply, apply_pool, Error, MigrateOptions, MigrationState};
use sync_tests::TestDb;

fn versions(report: &sync_migrations::ApplyReport) -> Vec<i32> {
    report.applied.iter().map(|m| m.version).collect()
}

/// Advisory locks held anywhere on this database, as seen from a separate connection.
async fn advisory_locks(db: &TestDb) -> i64 {
    db.client()
        .await
        .query_one(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' \
             AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn up_on_empty_database_applies_both_and_verifies() {
    let db = TestDb::empty().await;
    let mut c = db.client().await;
    let report = apply(&mut c, &MigrateOptions::default()).await.unwrap();
    assert_eq!(versions(&report), sync_tests::all_versions());
    assert_eq!(report.already_applied, 0);
    let verify = sync_migrations::verify(&c).await.unwrap();
    assert!(verify.is_ok(), "{}", verify.to_table());
    assert_eq!(advisory_locks(&db).await, 0);
}

#[tokio::test]
async fn up_twice_is_a_no_op() {
    let db = TestDb::empty().await;
    let mut c = db.client().await;
    apply(&mut c, &MigrateOptions::default()).await.unwrap();
    let second = apply(&mut c, &MigrateOptions::default()).await.unwrap();
    assert!(second.applied.is_empty());
    assert_eq!(second.already_applied, sync_tests::all_versions().len());
    let rows: i64 = c
        .query_one("SELECT count(*) FROM refinery_schema_history", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, sync_migrations::embedded_migrations().len() as i64);
}

/// A Supabase-style database that already has organization, auth.users_extended
/// (with extra columns) and its own auth.uid(): 0001 must change nothing of
/// theirs, and 0024 must work on top.
#[tokio::test]
async fn up_on_database_with_existing_prerequisites_keeps_theirs() {
    let db = TestDb::empty().await;
    let mut c = db.client().await;
    c.batch_execute(
        "CREATE TABLE organization (id uuid PRIMARY KEY, name text NOT NULL, plan text NOT NULL DEFAULT 'free');
         CREATE SCHEMA auth;
         CREATE TABLE auth.users_extended (id uuid PRIMARY KEY, org_id uuid NOT NULL REFERENCES organization,
                                           role text NOT NULL DEFAULT 'member', avatar_url text);
         CREATE FUNCTION auth.uid() RETURNS uuid LANGUAGE sql STABLE
             AS $$ SELECT nullif(current_setting('request.jwt.claim.sub', true), '')::uuid $$;
         COMMENT ON FUNCTION auth.uid() IS 'theirs';
         INSERT INTO organization (id, name) VALUES ('00000000-0000-0000-0000-0000000000a1', 'Theirs');
         INSERT INTO auth.users_extended (id, org_id) VALUES
             ('00000000-0000-0000-0000-0000000000b1', '00000000-0000-0000-0000-0000000000a1');",
    )
    .await
    .unwrap();
    let before: Vec<String> = columns(&c).await;
    let uid_src_before = uid_source(&c).await;

    let report = apply(&mut c, &MigrateOptions::default()).await.unwrap();
    assert_eq!(versions(&report), sync_tests::all_versions());

    assert_eq!(columns(&c).await, before, "0001 altered existing tables");
    assert_eq!(
        uid_source(&c).await,
        uid_src_before,
        "0001 replaced auth.uid()"
    );
    let comment: Option<String> = c
        .query_one("SELECT obj_description('auth.uid()'::regprocedure)", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(comment.as_deref(), Some("theirs"));
    let rls_on_theirs: bool = c
        .query_one(
            "SELECT relrowsecurity FROM pg_class WHERE oid = 'auth.users_extended'::regclass",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        !rls_on_theirs,
        "0001 must not enable RLS on a users table it did not create"
    );
    assert!(sync_migrations::verify(&c).await.unwrap().is_ok());
    // Their data is usable by 0024.
    c.execute(
        "INSERT INTO sync_progress (org_id, sync_id, entity_type, total_items, initiated_by) \
         VALUES ('00000000-0000-0000-0000-0000000000a1', 's', 'product', 10, '00000000-0000-0000-0000-0000000000b1')",
        &[],
    )
    .await
    .unwrap();
}

async fn columns(c: &tokio_postgres::Client) -> Vec<String> {
    c.query(
        "SELECT table_schema || '.' || table_name || '.' || column_name || ':' || data_type \
         FROM information_schema.columns WHERE table_name IN ('organization', 'users_extended') \
         ORDER BY 1",
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

async fn uid_source(c: &tokio_postgres::Client) -> String {
    c.query_one(
        "SELECT prosrc FROM pg_proc WHERE oid = 'auth.uid()'::regprocedure",
        &[],
    )
    .await
    .unwrap()
    .get(0)
}

/// Eight replicas start at once: all succeed, exactly one applies, no lock is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_concurrent_migrators_all_succeed_and_one_applies() {
    let db = TestDb::empty().await;
    let mut clients = Vec::new();
    for _ in 0..8 {
        clients.push(db.client().await);
    }
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(8));
    let mut tasks = Vec::new();
    for mut client in clients {
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let report = apply(&mut client, &MigrateOptions::default()).await;
            (report, client)
        }));
    }
    let mut applied_by = Vec::new();
    let mut keep = Vec::new();
    for t in tasks {
        let (report, client) = t.await.unwrap();
        let report = report.unwrap_or_else(|e| panic!("a concurrent migrator failed: {e}"));
        applied_by.push(versions(&report));
        keep.push(client);
    }
    let appliers: Vec<_> = applied_by.iter().filter(|v| !v.is_empty()).collect();
    assert_eq!(
        appliers,
        vec![&sync_tests::all_versions()],
        "exactly one migrator applies: {applied_by:?}"
    );
    // The eight sessions are still open: none of them may still hold the lock.
    assert_eq!(advisory_locks(&db).await, 0);
    let c = db.client().await;
    let rows: i64 = c
        .query_one("SELECT count(*) FROM refinery_schema_history", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, sync_migrations::embedded_migrations().len() as i64);
    drop(keep);
}

/// Through a pool, the migrating connection never goes back into the pool, so a
/// session lock cannot ride along with it — on success or on error.
#[tokio::test]
async fn apply_pool_never_returns_a_locked_connection_to_the_pool() {
    let db = TestDb::empty().await;
    let pool = db.pool();
    // Make the second run fail: a conflicting table before 0024.
    let report = apply_pool(&pool, &MigrateOptions::default()).await.unwrap();
    assert_eq!(versions(&report), sync_tests::all_versions());
    let c = db.client().await;
    c.batch_execute("DELETE FROM refinery_schema_history WHERE version >= 24")
        .await
        .unwrap();
    let err = apply_pool(&pool, &MigrateOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::MigrationFailed { version: 24, .. }),
        "{err}"
    );
    // Every connection the pool hands out holds no advisory lock.
    let mut held = Vec::new();
    for _ in 0..sync_tests::POOL_SIZE {
        held.push(pool.get().await.unwrap());
    }
    for obj in &held {
        let locks: i64 = obj
            .query_one(
                "SELECT count(*) FROM pg_locks WHERE pid = pg_backend_pid() AND locktype = 'advisory'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(locks, 0);
    }
    drop(held);
    assert_eq!(advisory_locks(&db).await, 0);
}

/// A failing migration is reported with its SQLSTATE and name, releases the lock,
/// and a later run (after fixing the cause) succeeds without hanging.
#[tokio::test]
async fn failing_migration_then_successful_run() {
    let db = TestDb::empty().await;
    let mut c = db.client().await;
    c.batch_execute("CREATE TABLE sync_progress (squatter int)")
        .await
        .unwrap();
    let err = apply(&mut c, &MigrateOptions::default()).await.unwrap_err();
    match &err {
        Error::MigrationFailed {
            version,
            name,
            server,
        } => {
            assert_eq!(*version, 24);
            assert_eq!(name, "sync_preview_progress_logs");
            assert_eq!(server.code.as_deref(), Some("42P07"));
            assert!(
                server.message.contains("sync_progress"),
                "{}",
                server.message
            );
        }
        other => panic!("expected MigrationFailed, got {other:?}"),
    }
    let text = err.to_string();
    assert!(
        text.contains("V24__sync_preview_progress_logs") && text.contains("42P07"),
        "{text}"
    );
    assert_eq!(err.code(), Some("42P07"));
    // 0001 stayed applied, 0024 left nothing behind (its transaction rolled back).
    let status = sync_migrations::status(&mut c).await.unwrap();
    assert!(matches!(status[0].state, MigrationState::Applied { .. }));
    assert!(matches!(status[1].state, MigrationState::Pending));
    let leftovers: i64 = c
        .query_one(
            "SELECT count(*) FROM pg_type WHERE typname = 'sync_action'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(leftovers, 0);
    // The failed session (still open) holds no lock.
    assert_eq!(advisory_locks(&db).await, 0);

    c.batch_execute("DROP TABLE sync_progress").await.unwrap();
    let mut other = db.client().await;
    let report = tokio::time::timeout(
        Duration::from_secs(60),
        apply(&mut other, &MigrateOptions::default()),
    )
    .await
    .expect("the second run must not hang on a leftover lock")
    .unwrap();
    assert_eq!(versions(&report), sync_tests::versions_from(24));
}

#[tokio::test]
async fn changed_migration_is_refused_with_a_message_that_says_so() {
    let db = TestDb::migrated().await;
    let mut c = db.client().await;
    c.batch_execute("UPDATE refinery_schema_history SET checksum = '12345' WHERE version = 24")
        .await
        .unwrap();
    let err = apply(&mut c, &MigrateOptions::default()).await.unwrap_err();
    match &err {
        Error::ChangedAfterApply {
            version,
            applied_checksum,
            ..
        } => {
            assert_eq!(*version, 24);
            assert_eq!(*applied_checksum, 12345);
        }
        other => panic!("expected ChangedAfterApply, got {other:?}"),
    }
    assert!(
        err.to_string().contains("changed after it was applied"),
        "{err}"
    );
    let status = sync_migrations::status(&mut c).await.unwrap();
    assert!(matches!(
        status[1].state,
        MigrationState::ChangedAfterApply {
            applied_checksum: 12345,
            ..
        }
    ));
    assert_eq!(advisory_locks(&db).await, 0);
}

#[tokio::test]
async fn migration_unknown_to_this_build_is_refused() {
    let db = TestDb::migrated().await;
    let mut c = db.client().await;
    c.batch_execute(
        "INSERT INTO refinery_schema_history (version, name, applied_on, checksum) \
         VALUES (99, 'from_a_newer_build', '2026-11-01T00:00:00Z', '1')",
    )
    .await
    .unwrap();
    let err = apply(&mut c, &MigrateOptions::default()).await.unwrap_err();
    assert!(
        matches!(&err, Error::UnknownApplied { version: 99, name } if name == "from_a_newer_build"),
        "{err:?}"
    );
    let status = sync_migrations::status(&mut c).await.unwrap();
    assert!(matches!(
        status.last().unwrap().state,
        MigrationState::UnknownToThisBuild
    ));
}

/// While one migrator holds the lock, another gives up after its lock wait with a
/// clear error naming the holder.
#[tokio::test]
async fn lock_wait_is_bounded() {
    let db = TestDb::empty().await;
    let holder = db.client().await;
    sync_migrations::lock::acquire(
        &holder,
        sync_migrations::lock::MIGRATION_LOCK_KEY,
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    let holder_pid: i32 = holder
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    let mut c = db.client().await;
    let options = MigrateOptions {
        lock_wait: Duration::from_millis(300),
        ..MigrateOptions::default()
    };
    let err = apply(&mut c, &options).await.unwrap_err();
    match &err {
        Error::LockTimeout { holder, .. } => {
            assert!(holder.contains(&holder_pid.to_string()), "{holder}")
        }
        other => panic!("expected LockTimeout, got {other:?}"),
    }
    // Nothing was applied, and the waiter's session is clean.
    let history: bool = c
        .query_one("SELECT to_regclass('refinery_schema_history') IS NULL", &[])
        .await
        .unwrap()
        .get(0);
    assert!(history);
    let timeout: String = c.query_one("SHOW lock_timeout", &[]).await.unwrap().get(0);
    assert_eq!(timeout, "0");
    sync_migrations::lock::release(&holder, sync_migrations::lock::MIGRATION_LOCK_KEY)
        .await
        .unwrap();
    apply(&mut c, &options).await.unwrap();
}
