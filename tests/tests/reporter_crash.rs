//! `kill -9` of a worker process that counts through a `ProgressReporter`, at
//! random points between (and during) flushes: the database never holds more
//! than the worker counted, the items it lacks were all counted within the
//! documented window (one interval plus the flush in flight) before the kill,
//! and a resumed reporter rewinds to the last checkpoint flushed.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sync_store::{ReporterConfig, StartSync, Store, SyncEntityType};
use sync_tests::{count_worker_bin, wait_for_other_sessions_to_settle, TestDb};
use uuid::Uuid;

const INTERVAL_MS: u64 = 100;
const ROUNDS: usize = 8;
/// Slack for a crowded machine on top of one interval: the flush in flight at
/// the kill (pool checkout, the statement, the commit's fsync).
const SLACK: Duration = Duration::from_secs(3);
const BOUND: Duration = Duration::from_secs(120);

struct Reap(Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn now_micros() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros()
}

#[tokio::test]
async fn kill_9_between_flushes_never_overcounts_and_lags_at_most_the_window() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    let org = Uuid::new_v4();
    c.execute(
        "INSERT INTO organization (id, name) VALUES ($1, 'crash')",
        &[&org],
    )
    .await
    .unwrap();
    let store = Store::new(db.pool());
    let svc = store.service();
    let bin = count_worker_bin();
    let (mut max_lag, mut lost_total, mut counted_total) = (Duration::ZERO, 0u64, 0u64);
    for round in 0..ROUNDS {
        let sync_id = format!("crash-{round}");
        svc.start_sync(org, &StartSync::new(&sync_id, SyncEntityType::Product))
            .await
            .unwrap();
        let mut child = Reap(
            Command::new(&bin)
                .env("DATABASE_URL", db.url())
                .env("ORG", org.to_string())
                .env("SYNC_ID", &sync_id)
                .env("INTERVAL_MS", INTERVAL_MS.to_string())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("spawn count_worker"),
        );
        let announced: Arc<Mutex<Vec<u128>>> = Arc::default();
        let reader = {
            let out = child.0.stdout.take().unwrap();
            let announced = announced.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines() {
                    let Ok(line) = line else { break };
                    let mut parts = line.split_whitespace();
                    let n: usize = parts.next().unwrap().parse().unwrap();
                    let t: u128 = parts.next().unwrap().parse().unwrap();
                    let mut a = announced.lock().unwrap();
                    assert_eq!(a.len() + 1, n, "items in order");
                    a.push(t);
                }
            })
        };
        // Wait for a first flush with counts, then kill at a random point.
        let started = Instant::now();
        loop {
            let p = svc.get_sync(org, &sync_id).await.unwrap().unwrap();
            if p.processed_count > 0 {
                break;
            }
            if let Some(s) = child.0.try_wait().unwrap() {
                panic!("count_worker exited: {s}");
            }
            assert!(started.elapsed() < BOUND, "no flush");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let wait = 20 + (Uuid::new_v4().as_u128() % 600) as u64;
        tokio::time::sleep(Duration::from_millis(wait)).await;
        let killed_at = now_micros();
        child.0.kill().unwrap(); // SIGKILL
        child.0.wait().unwrap();
        reader.join().unwrap();
        // A flush the worker sent just before it died may still be running on
        // its backend (the server finishes a statement it has received): wait
        // until no other session of this database is busy, so the reads below
        // see the last write that will ever land.
        wait_for_other_sessions_to_settle(&c, BOUND).await;
        let times = announced.lock().unwrap().clone();
        let row = c
            .query_one(
                "SELECT processed_count, checkpoint, checkpoint_processed \
                 FROM sync_progress WHERE org_id = $1 AND sync_id = $2",
                &[&org, &sync_id],
            )
            .await
            .unwrap();
        let in_db = row.get::<_, i32>(0) as usize;
        let counted = times.len();
        assert!(
            in_db <= counted,
            "round {round}: the database has {in_db}, the worker counted at most {counted}"
        );
        let lost = counted - in_db;
        if lost > 0 {
            // The oldest item missing was counted this long before the kill.
            let oldest_missing = times[in_db];
            let lag = Duration::from_micros(killed_at.saturating_sub(oldest_missing) as u64);
            assert!(
                lag <= Duration::from_millis(INTERVAL_MS) + SLACK,
                "round {round}: item {} counted {lag:?} before the kill is not in the database",
                in_db + 1
            );
            max_lag = max_lag.max(lag);
        }
        lost_total += lost as u64;
        counted_total += counted as u64;
        // The checkpoint was flushed with the counts made before it.
        let checkpoint: Option<serde_json::Value> = row.get(1);
        let cp_processed: Option<i32> = row.get(2);
        if let Some(cp) = &checkpoint {
            assert_eq!(cp["done"].as_i64(), cp_processed.map(i64::from), "{cp}");
            assert!(cp_processed.unwrap() as usize <= in_db);
        }

        // A restarted worker resumes at the checkpoint, counts rewound to it.
        let r = svc
            .resume_reporter(org, &sync_id, ReporterConfig::default())
            .await
            .unwrap();
        assert_eq!(r.attached().checkpoint, checkpoint);
        assert_eq!(
            r.attached().progress.processed_count,
            cp_processed.unwrap_or(0)
        );
        r.cancel(Some("test over")).await.unwrap();
    }
    eprintln!(
        "kill -9: {ROUNDS} kills, {counted_total} items counted, {lost_total} not flushed at the \
         kill (never more in the database than counted), max lag of a missing item {max_lag:?} \
         (interval {INTERVAL_MS} ms)"
    );
}
