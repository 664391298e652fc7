//! The `sync_worker` example under SIGINT/SIGTERM (the sync it started ends up
//! cancelled in the database, and it exits 130/143) and with bad arguments
//! (usage error, exit 2, before touching any database).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sync_tests::{sync_worker_bin, TestDb};

/// Generous upper bounds on waits (not assertions on speed: only a hang fails).
const BOUND: Duration = Duration::from_secs(300);

/// Kills the child if the test panics, so no worker outlives it.
struct Reap(Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the worker (fast mode, a long run in batches of 1) against `db`,
/// waits until it has reported progress, sends `signal`, and returns its exit
/// code and stderr.
async fn interrupt_mid_run(db: &TestDb, signal: &str) -> (Option<i32>, String) {
    let child = Command::new(sync_worker_bin())
        .args(["--fast", "--items", "1000000", "--batch", "1"])
        .env("DATABASE_URL", db.url())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the sync_worker example");
    let mut child = Reap(child);
    let c = db.client().await;
    let started = Instant::now();
    loop {
        // The tables appear once the example has migrated the database.
        let progressed = c
            .query_opt(
                "SELECT 1 FROM sync_progress WHERE processed_count + failed_count >= 3",
                &[],
            )
            .await
            .map(|r| r.is_some())
            .unwrap_or(false);
        if progressed {
            break;
        }
        if let Some(status) = child.0.try_wait().unwrap() {
            panic!("the worker exited early: {status}");
        }
        assert!(
            started.elapsed() < BOUND,
            "the worker never reported progress"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pid = child.0.id().to_string();
    let sent = Command::new("kill")
        .args([&format!("-{signal}"), &pid])
        .status()
        .unwrap();
    assert!(sent.success());
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < BOUND,
            "the worker did not stop after {signal}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut stderr = String::new();
    use std::io::Read;
    child
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    (status.code(), stderr)
}

/// The one sync is cancelled (completed_at set, outcome cancelled, one
/// `sync_cancel` entry naming the signal) and was stopped mid-run.
async fn assert_cancelled(db: &TestDb, signal: &str) {
    let c = db.client().await;
    let row = c
        .query_one(
            "SELECT sync_id, completed_at IS NOT NULL, metadata -> '_sync_outcome' ->> 'status', \
                    processed_count + failed_count, total_items FROM sync_progress",
            &[],
        )
        .await
        .unwrap();
    let sync_id: String = row.get(0);
    assert!(row.get::<_, bool>(1), "completed_at is set");
    assert_eq!(
        row.get::<_, Option<String>>(2).as_deref(),
        Some("cancelled")
    );
    let (handled, total): (i32, Option<i32>) = (row.get(3), row.get(4));
    assert_eq!(total, Some(1_000_000));
    assert!(
        (3..1_000_000).contains(&handled),
        "stopped mid-run at {handled}"
    );
    let cancels: Vec<(String, Option<String>)> = c
        .query(
            "SELECT status::text, error_message FROM sync_activity_log \
             WHERE sync_id = $1 AND action = 'sync_cancel'",
            &[&sync_id],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(cancels.len(), 1, "{cancels:?}");
    assert_eq!(cancels[0].0, "cancelled");
    let msg = cancels[0].1.clone().unwrap_or_default();
    assert!(
        msg.contains(&format!("interrupted by SIG{signal}")),
        "{msg}"
    );
    let open: i64 = c
        .query_one(
            "SELECT count(*) FROM sync_progress WHERE completed_at IS NULL",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(open, 0, "no sync left open");
}

#[tokio::test]
async fn sigint_mid_run_cancels_the_sync_and_exits_130() {
    let db = TestDb::empty().await;
    let (code, stderr) = interrupt_mid_run(&db, "INT").await;
    assert_eq!(code, Some(130), "{stderr}");
    assert!(stderr.contains("cancelled"), "{stderr}");
    assert_cancelled(&db, "INT").await;
}

#[tokio::test]
async fn sigterm_mid_run_cancels_the_sync_and_exits_143() {
    let db = TestDb::empty().await;
    let (code, stderr) = interrupt_mid_run(&db, "TERM").await;
    assert_eq!(code, Some(143), "{stderr}");
    assert_cancelled(&db, "TERM").await;
}

#[test]
fn bad_items_or_batch_is_a_usage_error() {
    for args in [
        vec!["--batch", "0"],
        vec!["--items", "0"],
        vec!["--items", "2000000000"],
        vec!["--items", "1000001"],
        vec!["--batch", "10001"],
        vec!["--batch=-1"],
        vec!["--items", "ten"],
    ] {
        let out = Command::new(sync_worker_bin())
            .args(&args)
            // Never reached: a usage error comes before any connection.
            .env(
                "DATABASE_URL",
                "postgres://nobody@127.0.0.1:1/none?connect_timeout=1",
            )
            .output()
            .expect("run the sync_worker example");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains(args[0].split('=').next().unwrap())
                && !stderr.contains("Using DATABASE_URL"),
            "{args:?}: {stderr}"
        );
        assert!(
            out.stdout.is_empty(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

/// A cancel request from outside the worker (here the SQL a second terminal
/// would run through psql) reaches it through its progress reporter: it stops
/// at the next batch, ends the sync cancelled and exits 0.
#[tokio::test]
async fn cancel_request_from_another_terminal_stops_the_worker() {
    let db = TestDb::migrated().await;
    let child = Command::new(sync_worker_bin())
        .args(["--items", "1000000", "--batch", "5"])
        .env("DATABASE_URL", db.url())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the sync_worker example");
    let mut child = Reap(child);
    let c = db.client().await;
    let started = Instant::now();
    // Wait for its reporter's first heartbeat.
    loop {
        let attached = c
            .query_opt(
                "SELECT 1 FROM sync_progress WHERE heartbeat_at IS NOT NULL",
                &[],
            )
            .await
            .map(|r| r.is_some())
            .unwrap_or(false);
        if attached {
            break;
        }
        if let Some(status) = child.0.try_wait().unwrap() {
            panic!("the worker exited early: {status}");
        }
        assert!(started.elapsed() < BOUND, "the worker never attached");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    c.execute(
        "UPDATE sync_progress SET cancel_requested_at = now() WHERE completed_at IS NULL",
        &[],
    )
    .await
    .unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(started.elapsed() < BOUND, "the worker did not stop");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut stderr = String::new();
    use std::io::Read;
    child
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert_eq!(status.code(), Some(0), "{stderr}");
    let row = c
        .query_one(
            "SELECT completed_at IS NOT NULL, metadata -> '_sync_outcome' ->> 'status', \
                    (SELECT error_message FROM sync_activity_log l \
                      WHERE l.sync_id = p.sync_id AND action = 'sync_cancel') \
               FROM sync_progress p",
            &[],
        )
        .await
        .unwrap();
    assert!(row.get::<_, bool>(0), "{stderr}");
    assert_eq!(
        row.get::<_, Option<String>>(1).as_deref(),
        Some("cancelled")
    );
    let msg: Option<String> = row.get(2);
    assert!(
        msg.as_deref()
            .unwrap_or_default()
            .contains("cancel requested"),
        "{msg:?}"
    );
}
