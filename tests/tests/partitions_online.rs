//! The online split of the catch-all: writers (inserts into moved months,
//! updates, deletes, rows moved across partitions) keep writing while `ensure`
//! copies; interruptions at several points (terminated backend, held locks,
//! kill -9 of the CLI, server restart) and a re-run complete it. Every check
//! compares the log with a shadow table written in the same transactions as
//! the log: count and checksum equal means nothing lost, duplicated or stale.

mod partitions_common;

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use partitions_common::*;
use sync_migrations::partitions::{ensure_partitions, PartitionError, PartitionOptions};
use sync_tests::{connect, sync_migrate_bin, TestDb};
use tokio_postgres::{Client, Config};

/// The test clock, 16-block copy batches (many steps on small data), and a
/// lock timeout of `lock_timeout`.
fn batches_with(lock_timeout: Duration) -> PartitionOptions {
    let mut o = opts().with_copy_batch_blocks(16);
    o.lock_timeout = lock_timeout;
    o
}

fn small_batches() -> PartitionOptions {
    batches_with(Duration::from_secs(10))
}

async fn phase(c: &Client) -> String {
    c.query_one("SELECT phase FROM sync_activity_log_split_state", &[])
        .await
        .unwrap()
        .get(0)
}

/// Runs ensure on its own thread (its progress callback may block), calling
/// `on_progress(n)` on the n-th progress report.
fn ensure_on_thread(
    config: Config,
    options: PartitionOptions,
    on_progress: impl FnMut(u64) + Send + 'static,
) -> std::thread::JoinHandle<Result<sync_migrations::partitions::EnsureReport, PartitionError>> {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let mut client = connect(&config).await;
            let mut n = 0;
            let mut on_progress = on_progress;
            ensure_partitions(&mut client, 3, &options, move |_| {
                n += 1;
                on_progress(n);
            })
            .await
        })
    })
}

async fn join<T: Send + 'static>(h: std::thread::JoinHandle<T>) -> T {
    tokio::task::spawn_blocking(move || h.join().unwrap())
        .await
        .unwrap()
}

async fn assert_split_done(c: &Client) {
    assert_eq!(misplaced_rows(c, "2027-02").await, 0);
    let names = partition_names(c).await;
    assert!(
        names.contains(&"sync_activity_log_2027_02".to_owned()),
        "{names:?}"
    );
    assert!(
        names.contains(&"sync_activity_log_future".to_owned()),
        "{names:?}"
    );
    no_working_objects(c).await;
    verify_ok(c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writers_keep_writing_during_the_copy_and_nothing_is_lost_or_duplicated() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    let t = tenants(&c).await;
    seed_months(&c, &t, "2026-03-01", "2027-06-01", 600).await;
    make_shadow(&c).await;
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let writers = spawn_writers(&db.config(), t.org_a, 3, stop.clone(), done.clone());
    // Each progress report (after a committed copy batch, no lock held) waits
    // for the writers to get further: they are never blocked by the copy.
    let seen = done.clone();
    let ensure = ensure_on_thread(db.config(), small_batches(), move |n| {
        if n <= 6 {
            let start = seen.load(Ordering::Relaxed);
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            while seen.load(Ordering::Relaxed) < start + 10 {
                assert!(
                    std::time::Instant::now() < deadline,
                    "writers were blocked during the copy"
                );
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    });
    let report = join(ensure).await.expect("ensure");
    let writes = stop_writers(&stop, writers).await;
    assert!(writes >= 60, "{writes} writes");
    assert_eq!(report.created.len(), 12);
    assert_same_as_shadow(&c, "after ensure").await;
    assert_split_done(&c).await;
    // Rows after the new months stay in the catch-all.
    let beyond: i64 = c
        .query_one(
            "SELECT count(*) FROM sync_activity_log_future WHERE created_at >= '2027-03-01'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(beyond > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_terminated_backend_at_several_points_then_a_rerun_completes() {
    for kill_at in [1u64, 2, 5] {
        let db = TestDb::migrated().await;
        let c = db.client().await;
        let t = tenants(&c).await;
        seed_months(&c, &t, "2026-03-01", "2027-06-01", 400).await;
        make_shadow(&c).await;
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicU64::new(0));
        let writers = spawn_writers(&db.config(), t.org_b, 2, stop.clone(), done.clone());
        let app = format!("split-victim-{kill_at}");
        let mut config = db.config();
        config.application_name(&app);
        let killer = db.config();
        let ensure = ensure_on_thread(config, small_batches(), move |n| {
            if n == kill_at {
                // Terminate ensure's own backend from another session.
                let killer = killer.clone();
                let app = app.clone();
                std::thread::spawn(move || {
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .unwrap()
                        .block_on(async move {
                            let k = connect(&killer).await;
                            k.execute(
                                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                                  WHERE application_name = $1",
                                &[&app],
                            )
                            .await
                            .unwrap();
                        })
                })
                .join()
                .unwrap();
            }
        });
        let err = join(ensure).await.expect_err("the backend was terminated");
        assert!(
            matches!(
                err,
                PartitionError::ConnectionLost { .. } | PartitionError::Database { .. }
            ),
            "{err}"
        );
        // Writers went on; a new run resumes.
        let mut c2 = db.client().await;
        let report = ensure_partitions(&mut c2, 3, &small_batches(), |_| {})
            .await
            .expect("the re-run completes");
        assert_eq!(report.created.len(), 12, "kill at {kill_at}");
        stop_writers(&stop, writers).await;
        assert_same_as_shadow(&c, &format!("killed at progress {kill_at}")).await;
        assert_split_done(&c).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn held_locks_stop_the_split_in_later_phases_and_a_rerun_completes() {
    let db = TestDb::migrated().await;
    let mut c = db.client().await;
    let t = tenants(&c).await;
    seed_months(&c, &t, "2026-03-01", "2027-06-01", 300).await;
    make_shadow(&c).await;
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let writers = spawn_writers(&db.config(), t.org_a, 2, stop.clone(), done.clone());
    let short = batches_with(Duration::from_millis(600));

    // 1. ROW EXCLUSIVE on organization: the foreign keys cannot be added.
    let mut holder = db.client().await;
    let tx = holder.transaction().await.unwrap();
    tx.batch_execute("LOCK TABLE organization IN ROW EXCLUSIVE MODE")
        .await
        .unwrap();
    let err = ensure_partitions(&mut c, 3, &short, |_| {})
        .await
        .unwrap_err();
    assert!(err.is_lock_timeout(), "{err}");
    assert_eq!(phase(&c).await, "fk");
    tx.rollback().await.unwrap();

    // 2. A reader holding ACCESS SHARE on the log: the final step cannot lock.
    let tx = holder.transaction().await.unwrap();
    tx.batch_execute("SELECT 1 FROM sync_activity_log LIMIT 1")
        .await
        .unwrap();
    let err = ensure_partitions(&mut c, 3, &short, |_| {})
        .await
        .unwrap_err();
    assert!(err.is_lock_timeout(), "{err}");
    assert_eq!(phase(&c).await, "catchup");
    // Meanwhile the split is visible as unfinished; the table is unchanged.
    assert_eq!(partition_names(&c).await.len(), 5);
    tx.rollback().await.unwrap();

    let report = ensure_partitions(&mut c, 3, &short, |_| {})
        .await
        .expect("the re-run completes");
    assert_eq!(report.created.len(), 12);
    stop_writers(&stop, writers).await;
    assert_same_as_shadow(&c, "after held locks").await;
    assert_split_done(&c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_of_the_cli_at_several_points_then_a_rerun_completes() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    let t = tenants(&c).await;
    seed_months(&c, &t, "2026-03-01", "2027-06-01", 600).await;
    make_shadow(&c).await;
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let writers = spawn_writers(&db.config(), t.org_a, 2, stop.clone(), done.clone());
    let url = db.url();
    let cli = |url: &str| {
        let mut cmd = Command::new(sync_migrate_bin());
        cmd.args(["--json", "partitions", "ensure", "--months-ahead", "3"])
            .args(["--now", "2026-11-15T12:00:00Z", "--batch-blocks", "8"])
            .args(["--database-url", url])
            .env_remove("DATABASE_URL");
        cmd
    };
    // Kill after the 1st, 3rd and 6th progress line (each a committed batch),
    // and once at a time-based point.
    let mut kills = 0;
    for point in [1usize, 3, 6, 0] {
        let url = url.clone();
        let mut cmd = cli(&url);
        let killed = tokio::task::spawn_blocking(move || {
            use std::io::BufRead;
            let mut child = cmd
                .stderr(Stdio::piped())
                .stdout(Stdio::null())
                .spawn()
                .expect("run sync-migrate");
            let stderr = child.stderr.take().unwrap();
            if point == 0 {
                std::thread::sleep(Duration::from_millis(700));
            } else {
                let mut lines = std::io::BufReader::new(stderr).lines();
                let mut seen = 0;
                while seen < point {
                    match lines.next() {
                        Some(Ok(l)) if l.contains("copied") => seen += 1,
                        Some(Ok(_)) => {}
                        _ => break,
                    }
                }
            }
            let finished = child.try_wait().unwrap().is_some();
            child.kill().ok(); // SIGKILL
            child.wait().unwrap();
            !finished
        })
        .await
        .unwrap();
        if killed {
            kills += 1;
        }
    }
    assert!(
        kills >= 2,
        "the CLI was killed mid-run at least twice ({kills})"
    );
    let out = tokio::task::spawn_blocking(move || cli(&url).output().unwrap())
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stop_writers(&stop, writers).await;
    assert_same_as_shadow(&c, "after kill -9").await;
    assert_split_done(&c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_server_restart_mid_copy_then_a_rerun_completes() {
    let Ok(cluster) = sync_testdb::tempcluster::TempCluster::start(&[]) else {
        panic!("a throwaway cluster is needed for the restart test");
    };
    let cluster = Arc::new(cluster);
    let config = cluster.config();
    {
        let mut c = connect(&config).await;
        sync_migrations::apply(&mut c, &sync_migrations::MigrateOptions::default())
            .await
            .expect("migrate");
        let t = tenants(&c).await;
        seed_months(&c, &t, "2026-03-01", "2027-06-01", 400).await;
        make_shadow(&c).await;
    }
    let restarter = cluster.clone();
    let ensure = ensure_on_thread(config.clone(), small_batches(), move |n| {
        if n == 3 {
            restarter.restart(sync_testdb::tempcluster::StopMode::Immediate);
        }
    });
    let err = join(ensure).await.expect_err("the server restarted");
    assert!(
        matches!(
            err,
            PartitionError::ConnectionLost { .. } | PartitionError::Database { .. }
        ),
        "{err}"
    );
    let mut c = connect(&config).await;
    let report = ensure_partitions(&mut c, 3, &small_batches(), |_| {})
        .await
        .expect("the re-run completes");
    assert_eq!(report.created.len(), 12);
    assert_same_as_shadow(&c, "after a restart").await;
    assert_split_done(&c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tenant_cannot_touch_the_working_tables_of_an_unfinished_split() {
    let db = TestDb::migrated().await;
    let mut c = db.client().await;
    let t = tenants(&c).await;
    // Supabase-style default privileges: every new table granted to tenants.
    c.batch_execute(
        "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON TABLES TO sync_tenant, PUBLIC; \
         ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON FUNCTIONS TO sync_tenant",
    )
    .await
    .unwrap();
    seed_months(&c, &t, "2026-03-01", "2027-04-01", 100).await;
    make_shadow(&c).await;
    // Leave the split unfinished: a reader blocks the final step.
    let mut holder = db.client().await;
    let tx = holder.transaction().await.unwrap();
    tx.batch_execute("SELECT 1 FROM sync_activity_log LIMIT 1")
        .await
        .unwrap();
    let err = ensure_partitions(&mut c, 3, &batches_with(Duration::from_millis(400)), |_| {})
        .await
        .unwrap_err();
    assert!(err.is_lock_timeout(), "{err}");
    tx.rollback().await.unwrap();

    let (_, config) = db.login_role("splitattacker").await;
    let a = connect(&config).await;
    a.batch_execute("SET ROLE sync_tenant").await.unwrap();
    let org = t.org_b;
    let attempts = [
        format!(
            "INSERT INTO sync_activity_log_2026_05 (org_id, action, status, created_at) \
             VALUES ('{org}', 'sync_start', 'completed', '2026-05-02')"
        ),
        format!(
            "INSERT INTO sync_activity_log_split_staging (org_id, action, status, created_at) \
             VALUES ('{org}', 'sync_start', 'completed', '2026-05-02')"
        ),
        "SELECT count(*) FROM sync_activity_log_2026_05".to_owned(),
        "DELETE FROM sync_activity_log_split_delta".to_owned(),
        "TRUNCATE sync_activity_log_split_delta".to_owned(),
        "TRUNCATE sync_activity_log_2026_05".to_owned(),
        "UPDATE sync_activity_log_split_state SET next_block = 0".to_owned(),
        "INSERT INTO sync_activity_log_split_delta SELECT gen_random_uuid(), now()".to_owned(),
        "SELECT sync_activity_log_split_capture()".to_owned(),
    ];
    let mut refused = 0;
    for sql in &attempts {
        match a.batch_execute(sql).await {
            Ok(()) => panic!("a tenant could run: {sql}"),
            Err(_) => refused += 1,
        }
    }
    assert_eq!(refused, attempts.len());
    let report = ensure_partitions(&mut c, 3, &small_batches(), |_| {})
        .await
        .expect("the re-run completes");
    assert_eq!(report.created.len(), 12);
    assert_same_as_shadow(&c, "after the attacks").await;
    assert_split_done(&c).await;
}
