//! The transaction-mode pooler probe against a direct connection and a real
//! PgBouncer (Debian's `pgbouncer`) in session and transaction mode.

use sync_migrations::{Error, MigrateOptions};
use sync_tests::{connect, pool_for, sync_migrate_bin, PgBouncer, PoolMode, TestDb};

fn is_pooler_refusal(result: Result<impl std::fmt::Debug, Error>) -> String {
    match result {
        Err(e @ Error::PoolerDetected { .. }) => e.to_string(),
        other => panic!("expected a pooler refusal, got {other:?}"),
    }
}

/// The message says what was found and what to do, and names the direct
/// endpoint: the server's own port and the database, as a URL (TCP) or as
/// "port P, database D" (the pooler reaches the server over a unix socket).
/// Every part is required whichever way the server is reached.
fn assert_names_direct_endpoint(message: &str, db: &TestDb) {
    let port = db.config().get_ports().first().copied().unwrap_or(5432);
    let endpoint = message.contains(&format!(":{port}/{}", db.name()))
        || message.contains(&format!("port {port}, database {}", db.name()));
    assert!(
        message.contains("transaction-mode pooler"),
        "message does not say what was found: {message}"
    );
    assert!(
        message.contains("Use the direct endpoint"),
        "message does not say what to do: {message}"
    );
    assert!(
        endpoint,
        "message does not name the direct endpoint: {message}"
    );
}

async fn history_table_exists(db: &TestDb) -> bool {
    db.client()
        .await
        .query_one(
            "SELECT to_regclass('refinery_schema_history') IS NOT NULL",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn direct_connection_is_allowed() {
    let db = TestDb::empty().await;
    let (c1, c2) = (db.client().await, db.client().await);
    let probe = sync_connect::pooler::probe_transaction_pooler(&c1, Some(&c2))
        .await
        .unwrap();
    assert_eq!(probe.transaction_pooler, None);
    assert!(probe.used_second_connection);
    sync_connect::pooler::refuse_transaction_pooler_two_connections(&c1, &c2)
        .await
        .unwrap();
    sync_connect::pooler::refuse_transaction_pooler(&c1)
        .await
        .unwrap();
    // The probe leaves nothing behind on the session.
    let left: String = c1
        .query_one(
            "SELECT coalesce(current_setting('sync_migrations.pooler_probe', true), '')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, "");
}

#[tokio::test]
async fn session_mode_pgbouncer_is_allowed_and_migrates() {
    sync_tests::skip_without_pgbouncer!();
    let db = TestDb::empty().await;
    let bouncer = PgBouncer::start(&db, PoolMode::Session).await;
    let (c1, c2) = (
        connect(&bouncer.config()).await,
        connect(&bouncer.config()).await,
    );
    let probe = sync_connect::pooler::probe_transaction_pooler(&c1, Some(&c2))
        .await
        .unwrap();
    assert_eq!(probe.transaction_pooler, None, "{}", bouncer.log());
    drop((c1, c2));
    let pool = pool_for(&bouncer.config());
    let report = sync_migrations::apply_pool(&pool, &MigrateOptions::default())
        .await
        .unwrap();
    assert_eq!(
        report.applied.iter().map(|m| m.version).collect::<Vec<_>>(),
        sync_tests::all_versions()
    );
    assert!(sync_migrations::verify(&db.client().await)
        .await
        .unwrap()
        .is_ok());
}

#[tokio::test]
async fn transaction_mode_pgbouncer_is_refused_naming_the_direct_endpoint() {
    sync_tests::skip_without_pgbouncer!();
    let db = TestDb::empty().await;
    let bouncer = PgBouncer::start(&db, PoolMode::Transaction).await;
    let (c1, c2) = (
        connect(&bouncer.config()).await,
        connect(&bouncer.config()).await,
    );
    let probe = sync_connect::pooler::probe_transaction_pooler(&c1, Some(&c2))
        .await
        .unwrap();
    let seen = probe.transaction_pooler.expect("transaction pooler seen");
    println!("probe saw: {seen}");
    let message = is_pooler_refusal(
        sync_connect::pooler::refuse_transaction_pooler_two_connections(&c1, &c2)
            .await
            .map_err(Error::from),
    );
    println!("{message}");
    assert_names_direct_endpoint(&message, &db);
}

#[tokio::test]
async fn single_connection_probe_cannot_see_an_idle_transaction_pooler() {
    sync_tests::skip_without_pgbouncer!();
    // Why the CLI and the pool entry points use two connections: an idle
    // PgBouncer gives one client the same server session back every time.
    let db = TestDb::empty().await;
    let bouncer = PgBouncer::start(&db, PoolMode::Transaction).await;
    let c1 = connect(&bouncer.config()).await;
    let probe = sync_connect::pooler::probe_transaction_pooler(&c1, None)
        .await
        .unwrap();
    assert_eq!(probe.transaction_pooler, None);
    assert!(!probe.used_second_connection);
}

#[tokio::test]
async fn round_robin_transaction_pooler_is_seen_by_one_connection_and_apply_refuses() {
    sync_tests::skip_without_pgbouncer!();
    let db = TestDb::empty().await;
    let bouncer =
        PgBouncer::start_with(&db, PoolMode::Transaction, &[], "server_round_robin = 1\n").await;
    // Two server sessions in the pool: hold two transactions at once.
    let (w1, w2) = (
        connect(&bouncer.config()).await,
        connect(&bouncer.config()).await,
    );
    w1.batch_execute("BEGIN; SELECT 1").await.unwrap();
    w2.batch_execute("BEGIN; SELECT 1").await.unwrap();
    w1.batch_execute("COMMIT").await.unwrap();
    w2.batch_execute("COMMIT").await.unwrap();
    let mut c1 = connect(&bouncer.config()).await;
    let message =
        is_pooler_refusal(sync_migrations::apply(&mut c1, &MigrateOptions::default()).await);
    println!("{message}");
    assert!(
        message.contains("was gone in a later transaction"),
        "{message}"
    );
    assert_names_direct_endpoint(&message, &db);
    assert!(!history_table_exists(&db).await, "nothing may be applied");
}

#[tokio::test]
async fn apply_pool_through_transaction_pgbouncer_is_refused_and_changes_nothing() {
    sync_tests::skip_without_pgbouncer!();
    let db = TestDb::empty().await;
    let bouncer = PgBouncer::start(&db, PoolMode::Transaction).await;
    let pool = pool_for(&bouncer.config());
    let message =
        is_pooler_refusal(sync_migrations::apply_pool(&pool, &MigrateOptions::default()).await);
    assert_names_direct_endpoint(&message, &db);
    assert!(!history_table_exists(&db).await, "nothing may be applied");
}

#[tokio::test]
async fn rollback_pool_through_transaction_pgbouncer_is_refused() {
    sync_tests::skip_without_pgbouncer!();
    let db = TestDb::migrated().await;
    let bouncer = PgBouncer::start(&db, PoolMode::Transaction).await;
    let pool = pool_for(&bouncer.config());
    let message = is_pooler_refusal(
        sync_migrations::rollback_0024_dropping_data_pool(&pool, &MigrateOptions::default()).await,
    );
    assert_names_direct_endpoint(&message, &db);
    assert!(sync_migrations::verify(&db.client().await)
        .await
        .unwrap()
        .is_ok());
}

#[tokio::test]
async fn cli_up_refuses_transaction_pgbouncer_and_works_through_session_pgbouncer() {
    sync_tests::skip_without_pgbouncer!();
    let db = TestDb::empty().await;
    let bin = sync_migrate_bin();
    let tx = PgBouncer::start(&db, PoolMode::Transaction).await;
    let out = std::process::Command::new(&bin)
        .args(["up", "--database-url", &tx.url()])
        .env_remove("DATABASE_URL")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_names_direct_endpoint(&stderr, &db);
    assert!(!history_table_exists(&db).await, "nothing may be applied");

    let session = PgBouncer::start(&db, PoolMode::Session).await;
    let out = std::process::Command::new(&bin)
        .args(["up", "--database-url", &session.url()])
        .env_remove("DATABASE_URL")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("Applied V24__"));
}

#[tokio::test]
async fn refuse_pooler_false_skips_the_probe() {
    sync_tests::skip_without_pgbouncer!();
    // The escape hatch: with `refuse_pooler: false` nothing is probed, so even a
    // transaction-mode pooler is used (here an idle one, which happens to work).
    let db = TestDb::empty().await;
    let bouncer = PgBouncer::start(&db, PoolMode::Transaction).await;
    let pool = pool_for(&bouncer.config());
    let options = MigrateOptions {
        refuse_pooler: false,
        ..MigrateOptions::default()
    };
    let report = sync_migrations::apply_pool(&pool, &options).await.unwrap();
    assert_eq!(
        report.applied.len(),
        sync_migrations::embedded_migrations().len()
    );
    assert!(history_table_exists(&db).await);
}

#[tokio::test]
async fn session_pgbouncer_without_a_free_server_session_is_allowed() {
    sync_tests::skip_without_pgbouncer!();
    // One server session per database/user: the probe's second connection gets
    // none while the first holds it; the probe must go on without it, not hang
    // or refuse, and the pool must not get the stuck connection back.
    let db = TestDb::empty().await;
    let bouncer =
        PgBouncer::start_with(&db, PoolMode::Session, &[], "default_pool_size = 1\n").await;
    let (c1, c2) = (
        connect(&bouncer.config()).await,
        connect(&bouncer.config()).await,
    );
    let probe = sync_connect::pooler::probe_transaction_pooler(&c1, Some(&c2))
        .await
        .unwrap();
    assert_eq!(probe.transaction_pooler, None);
    assert!(!probe.used_second_connection, "{}", bouncer.log());
    drop((c1, c2));

    let pool = pool_for(&bouncer.config());
    let report = sync_migrations::apply_pool(&pool, &MigrateOptions::default())
        .await
        .unwrap();
    assert_eq!(
        report.applied.len(),
        sync_migrations::embedded_migrations().len()
    );
    drop(report);
    // The pool still works: its connections are healthy.
    let c = pool.get().await.unwrap();
    c.simple_query("SELECT 1").await.unwrap();
}
