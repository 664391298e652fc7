//! P6a / P6b: `ensure_partitions` moving `rows` rows out of the catch-all
//! while two writers append to the log (one row per statement, every 5 ms
//! each, `created_at = now()`, so into the catch-all being split) and one
//! ticks a sync's progress (every 50 ms; its triggers write the log on
//! completion only), against the same writers during an `INSERT … SELECT` of
//! those rows into a plain table with the same indexes (P5's baseline), which
//! takes no lock on the log.
//!
//! * P6a: the longest single write (any of the three writers) during the run,
//!   ensure vs no ensure. Target: ≤ 500 ms.
//! * P6b: the time of `ensure` with the writers vs the time of the `INSERT …
//!   SELECT` with the writers. Target: ≤ 1.5×.
//!
//! Data: P5's template (0024, 20 orgs, `rows` rows in `future` spread over
//! 2026-03-01 … 2027-06), copied fresh before every timed part.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sync_migrations::partitions::{ensure_partitions, PartitionOptions};
use tokio_postgres::Client;
use uuid::Uuid;

use crate::data::exec;
use crate::measure::{alternate, median, Row, Side, Target};
use crate::p5_ensure::template;
use crate::BenchDb;

/// Rounds P6 runs at most (each copies the template twice).
const P6_MAX_ROUNDS: usize = 3;

/// One writer: runs `sql` with `param` every `every` until `stop`; returns the
/// longest single statement.
fn writer(
    c: Client,
    sql: &'static str,
    param: Uuid,
    every: Duration,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Duration> {
    tokio::spawn(async move {
        let st = c.prepare(sql).await.expect("prepare writer statement");
        let mut longest = Duration::ZERO;
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while !stop.load(Ordering::Relaxed) {
            tick.tick().await;
            let t = Instant::now();
            c.execute(&st, &[&param]).await.expect("writer statement");
            longest = longest.max(t.elapsed());
        }
        longest
    })
}

/// Connections and ids the writers need, made before the timer starts.
struct Prepared {
    db: BenchDb,
    main: Client,
    writers: Vec<Client>,
    org: Uuid,
    sync: Uuid,
}

async fn prepare(tpl: &BenchDb, side: Side) -> Prepared {
    let db = tpl.copy("p6").await;
    let main = db.connect().await;
    let org: Uuid = main
        .query_one("SELECT id FROM organization ORDER BY id LIMIT 1", &[])
        .await
        .expect("an org")
        .get(0);
    let sync: Uuid = main
        .query_one(
            "INSERT INTO sync_progress (org_id, sync_id, entity_type, total_items) \
             VALUES ($1, 'p6-ticker', 'product', 1000000000) RETURNING id",
            &[&org],
        )
        .await
        .expect("a running sync")
        .get(0);
    if side == Side::Baseline {
        exec(
            &main,
            "CREATE TABLE plain (LIKE sync_activity_log INCLUDING ALL); ANALYZE plain",
        )
        .await;
    }
    let mut writers = Vec::new();
    for _ in 0..3 {
        writers.push(db.connect().await);
    }
    Prepared {
        db,
        main,
        writers,
        org,
        sync,
    }
}

/// Runs `op` with the three writers going; returns (the longest write, the
/// time `op` took).
async fn with_writers<F: std::future::Future<Output = ()>>(
    writers: Vec<Client>,
    org: Uuid,
    sync: Uuid,
    op: F,
) -> (Duration, Duration) {
    let stop = Arc::new(AtomicBool::new(false));
    let mut handles = Vec::new();
    for (i, c) in writers.into_iter().enumerate() {
        let (sql, param, every) = if i < 2 {
            (
                "INSERT INTO sync_activity_log (org_id, action, status, created_at) \
                 VALUES ($1, 'sync_progress', 'in_progress', now())",
                org,
                Duration::from_millis(5),
            )
        } else {
            (
                "UPDATE sync_progress SET processed_count = processed_count + 1 WHERE id = $1",
                sync,
                Duration::from_millis(50),
            )
        };
        handles.push(writer(c, sql, param, every, stop.clone()));
    }
    // Let the writers get going before the measured operation starts.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t = Instant::now();
    op.await;
    let took = t.elapsed();
    stop.store(true, Ordering::Relaxed);
    let mut longest = Duration::ZERO;
    for h in handles {
        longest = longest.max(h.await.expect("writer"));
    }
    (longest, took)
}

pub(crate) async fn run(db: &BenchDb, reps: usize, rows: u64) -> Vec<Row> {
    let template = template(db, "p6tpl", rows).await;
    let tpl = &template;
    let slot: RefCell<Option<Prepared>> = RefCell::new(None);
    let slot = &slot;
    // (longest write, operation time) per round: with ensure, with INSERT … SELECT.
    type Runs = (Vec<(Duration, Duration)>, Vec<(Duration, Duration)>);
    let runs: RefCell<Runs> = RefCell::new((Vec::new(), Vec::new()));
    let runs = &runs;
    // The timing of `alternate` includes starting the writers; the operation
    // itself is timed inside `with_writers`.
    let _ = alternate(
        reps.min(P6_MAX_ROUNDS),
        move |side: Side| async move {
            let old = slot.borrow_mut().take();
            if let Some(p) = old {
                drop(p.main);
                p.db.drop_database().await;
            }
            let p = prepare(tpl, side).await;
            *slot.borrow_mut() = Some(p);
        },
        move || async move {
            let mut p = slot.borrow_mut().take().expect("prepared");
            let writers = std::mem::take(&mut p.writers);
            let main = &mut p.main;
            let w = with_writers(writers, p.org, p.sync, async {
                let report = ensure_partitions(main, 3, &PartitionOptions::default(), |_| {})
                    .await
                    .expect("ensure_partitions");
                assert!(report.rows_moved >= rows);
            })
            .await;
            runs.borrow_mut().0.push(w);
            *slot.borrow_mut() = Some(p);
        },
        move || async move {
            let mut p = slot.borrow_mut().take().expect("prepared");
            let writers = std::mem::take(&mut p.writers);
            let main = &p.main;
            let w = with_writers(writers, p.org, p.sync, async {
                let n = main
                    .execute(
                        "INSERT INTO plain SELECT * FROM sync_activity_log_future",
                        &[],
                    )
                    .await
                    .expect("insert select");
                assert!(n >= rows);
            })
            .await;
            runs.borrow_mut().1.push(w);
            *slot.borrow_mut() = Some(p);
        },
    )
    .await;
    let last = slot.borrow_mut().take();
    if let Some(p) = last {
        drop(p.main);
        p.db.drop_database().await;
    }
    template.drop_database().await;
    let (with, without) = runs.borrow().clone();
    let max_ms = |v: &[(Duration, Duration)]| {
        v.iter()
            .map(|r| r.0)
            .max()
            .unwrap_or_default()
            .as_secs_f64()
            * 1000.0
    };
    let library_ms = median(with.iter().map(|r| r.1).collect());
    let baseline_ms = median(without.iter().map(|r| r.1).collect());
    vec![
        Row {
            id: "P6a",
            what: format!(
                "longest single write of 2 appenders + 1 progress ticker during ensure of {rows} \
                 rows vs during an INSERT … SELECT of them (ms, worst of all rounds)"
            ),
            library_ms: max_ms(&with),
            baseline_ms: max_ms(&without),
            target: Target {
                max_ratio: f64::INFINITY,
                max_library_ms: Some(500.0),
            },
        },
        Row {
            id: "P6b",
            what: format!(
                "ensure_partitions moving {rows} rows with those writers vs INSERT … SELECT of \
                 them into a plain table with the same indexes, same writers (ms per run)"
            ),
            library_ms,
            baseline_ms,
            target: Target {
                max_ratio: 1.5,
                max_library_ms: None,
            },
        },
    ]
}
