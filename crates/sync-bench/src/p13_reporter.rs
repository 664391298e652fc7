//! P13: live progress at item granularity.
//!
//! * **P13** — items recorded per second through one `ProgressReporter` (one
//!   worker counting every item with `inc(1, 0)`; timed until the last flush
//!   is committed, so every item is in `sync_progress`) vs Redis `HINCRBY` from
//!   one client (one round trip per item, what job systems built on Redis do),
//!   in the same run. Reported as ms per item; target: the reporter ≥ 10× the
//!   Redis rate (ratio ≤ 0.1). Skipped, with a note, when no Redis answers on
//!   `REDIS_URL` (default `redis://127.0.0.1:6379/`).
//! * **P13d** — p99 delay from `inc` to the count being visible in
//!   `sync_progress` (a second connection polls every 2 ms), for a worker
//!   counting at a steady pace with the default 250 ms interval; "baseline" is
//!   the interval; target ≤ 2× the interval.
//! * **P13w** — database writes per second of that sync (the reporter's
//!   flushes, heartbeat included) against the budget of 5/s: the "library"
//!   column holds writes/s, the "baseline" column the budget (not ms).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sync_store::{ReporterConfig, StartSync, SyncEntityType};

use crate::data::{create_tenants, store};
use crate::measure::{median, Row, Target};
use crate::BenchDb;

/// Sizes of one run of P13.
pub(crate) struct P13Sizes {
    /// Items per repetition through the reporter.
    pub(crate) items: u64,
    /// HINCRBY calls per repetition.
    pub(crate) redis_ops: u64,
    /// Length of the paced run (P13d, P13w).
    pub(crate) paced: Duration,
}

impl P13Sizes {
    pub(crate) fn new(quick: bool) -> P13Sizes {
        if quick {
            P13Sizes {
                items: 2_000_000,
                redis_ops: 20_000,
                paced: Duration::from_secs(2),
            }
        } else {
            P13Sizes {
                items: 20_000_000,
                redis_ops: 100_000,
                paced: Duration::from_secs(5),
            }
        }
    }
}

pub(crate) async fn run(db: &BenchDb, reps: usize, sizes: &P13Sizes) -> Vec<Row> {
    let c = db.connect().await;
    let org = create_tenants(&c, "bench-p13", 1).await[0].org;
    let store = store(db);
    let svc = store.service();
    let mut rows = Vec::new();

    let redis_url =
        std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".to_owned());
    let redis = redis::Client::open(redis_url.as_str())
        .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(2)));
    match redis {
        Err(e) => eprintln!("P13 skipped: no Redis at {redis_url} ({e}); set REDIS_URL"),
        Ok(con) => {
            let con = Arc::new(std::sync::Mutex::new(con));
            let (mut lib, mut base) = (Vec::new(), Vec::new());
            for rep in 0..reps {
                let sync_id = format!("bench-p13-{rep}");
                svc.start_sync(org, &StartSync::new(&sync_id, SyncEntityType::Product))
                    .await
                    .expect("start_sync");
                // Alternate which side runs first.
                for side in if rep % 2 == 0 { [0, 1] } else { [1, 0] } {
                    if side == 0 {
                        let r = svc
                            .reporter(org, &sync_id, ReporterConfig::default())
                            .await
                            .expect("reporter");
                        let start = Instant::now();
                        for i in 0..sizes.items {
                            r.inc(1, 0);
                            // A worker does other work between items: let the
                            // flusher run now and then on this thread too.
                            if i % 100_000 == 99_999 {
                                tokio::task::yield_now().await;
                            }
                        }
                        r.close().await.expect("last flush");
                        lib.push(start.elapsed());
                        let p = svc.get_sync(org, &sync_id).await.unwrap().unwrap();
                        assert_eq!(p.processed_count as u64, sizes.items);
                    } else {
                        let con = con.clone();
                        let ops = sizes.redis_ops;
                        let key = format!("bench-p13:{}", uuid::Uuid::new_v4().simple());
                        let took = tokio::task::spawn_blocking(move || {
                            let mut con = con.lock().unwrap();
                            let start = Instant::now();
                            for _ in 0..ops {
                                let _: i64 = redis::cmd("HINCRBY")
                                    .arg(&key)
                                    .arg("processed")
                                    .arg(1)
                                    .query(&mut *con)
                                    .expect("HINCRBY");
                            }
                            let took = start.elapsed();
                            let n: i64 = redis::cmd("HGET")
                                .arg(&key)
                                .arg("processed")
                                .query(&mut *con)
                                .expect("HGET");
                            assert_eq!(n as u64, ops);
                            let _: i64 = redis::cmd("DEL").arg(&key).query(&mut *con).expect("DEL");
                            took
                        })
                        .await
                        .expect("redis task");
                        base.push(took);
                    }
                }
            }
            let library_ms = median(lib) / sizes.items as f64;
            let baseline_ms = median(base) / sizes.redis_ops as f64;
            rows.push(Row {
                id: "P13",
                what: format!(
                    "items recorded through one ProgressReporter (inc per item, until the last \
                     flush committed; {} items): {:.0} items/s, vs Redis HINCRBY from one client \
                     ({} calls): {:.0} items/s; ms per item; target: reporter ≥ 10× Redis",
                    sizes.items,
                    1000.0 / library_ms,
                    sizes.redis_ops,
                    1000.0 / baseline_ms
                ),
                library_ms,
                baseline_ms,
                target: Target {
                    max_ratio: 0.1,
                    max_library_ms: None,
                },
            });
        }
    }

    // P13d / P13w: a paced worker, a poller on a second connection.
    let config = ReporterConfig::default();
    let (mut p99s, mut rates) = (Vec::new(), Vec::new());
    for rep in 0..reps {
        let sync_id = format!("bench-p13d-{rep}");
        svc.start_sync(org, &StartSync::new(&sync_id, SyncEntityType::Product))
            .await
            .expect("start_sync");
        let r = svc.reporter(org, &sync_id, config).await.expect("reporter");
        let origin = Instant::now();
        // inc time (µs since origin) of item i.
        let times: Arc<std::sync::Mutex<Vec<u64>>> = Arc::default();
        let done = Arc::new(AtomicU64::new(0));
        let poller = {
            let times = times.clone();
            let done = done.clone();
            let client = db.connect().await;
            let sync_id = sync_id.clone();
            tokio::spawn(async move {
                let stmt = client
                    .prepare("SELECT processed_count FROM sync_progress WHERE org_id = $1 AND sync_id = $2")
                    .await
                    .expect("prepare");
                let mut seen = 0usize;
                let mut delays = Vec::new();
                loop {
                    let n: i32 = client
                        .query_one(&stmt, &[&org, &sync_id])
                        .await
                        .expect("poll")
                        .get(0);
                    let now = origin.elapsed().as_micros() as u64;
                    let n = n as usize;
                    if n > seen {
                        let t = times.lock().unwrap();
                        for &at in &t[seen..n.min(t.len())] {
                            delays.push(now.saturating_sub(at));
                        }
                        seen = n;
                    }
                    let target = done.load(Ordering::Acquire) as usize;
                    if target > 0 && seen >= target {
                        return delays;
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            })
        };
        let (flushes_before, _) = r.flush_stats();
        let started = Instant::now();
        let mut n = 0u64;
        while started.elapsed() < sizes.paced {
            // 100 items every 10 ms (10,000 items/s), each timestamped.
            {
                let mut t = times.lock().unwrap();
                for _ in 0..100 {
                    t.push(origin.elapsed().as_micros() as u64);
                    r.inc(1, 0);
                }
            }
            n += 100;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let secs = started.elapsed().as_secs_f64();
        let (flushes_after, _) = r.flush_stats();
        // Writes of the sync while it ran: the flushes (plus the attach).
        rates.push((flushes_after - flushes_before + 1) as f64 / secs);
        done.store(n, Ordering::Release);
        let mut delays = poller.await.expect("poller");
        r.close().await.expect("close");
        delays.sort_unstable();
        let p99 = delays[(delays.len() * 99 / 100).min(delays.len() - 1)];
        p99s.push(Duration::from_micros(p99));
    }
    let interval_ms = config.interval.as_secs_f64() * 1000.0;
    rows.push(Row {
        id: "P13d",
        what: format!(
            "p99 delay from inc to visible in sync_progress (10,000 items/s for {:?}, polled every \
             2 ms) vs the flush interval; target ≤ 2× the interval",
            sizes.paced
        ),
        library_ms: median(p99s),
        baseline_ms: interval_ms,
        target: Target {
            max_ratio: 2.0,
            max_library_ms: None,
        },
    });
    rates.sort_by(f64::total_cmp);
    rows.push(Row {
        id: "P13w",
        what: "database writes per second of one reporting sync (library column: writes/s, \
               median; baseline column: the budget of 5 writes/s — not ms)"
            .to_owned(),
        library_ms: rates[rates.len() / 2],
        baseline_ms: 5.0,
        target: Target {
            max_ratio: 1.0,
            max_library_ms: None,
        },
    });
    rows
}
