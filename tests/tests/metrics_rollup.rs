//! The activity metrics from the rollups of migration 0026 equal a full scan of
//! the log, exactly, whatever happened to the log:
//!
//! * property test: random sequences of writes through the store (single rows,
//!   COPY batches, syncs started and finished by the database's triggers), plain
//!   SQL inserts (including a status label our enums do not know), rolled-back
//!   transactions, UPDATEs and DELETEs through the parent (status changes, rows
//!   moved to another month), compactions, archive (DETACH + recount) and
//!   restore (ATTACH + recount) of a month — after every step, for both orgs and
//!   all orgs, in service and tenant scope, over all time and over `since`
//!   windows (aligned and unaligned hours and days);
//! * the backfill counts rows older than the rollups, resumably, while writers
//!   write, and until it is done the metrics scan (and say so);
//! * writers never wait on each other or on a compaction because of the rollups.
mod store_common;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use store_common::Fixture;
use sync_store::{
    ActivitySource, NewActivity, StartSync, SyncAction, SyncEntityType, SyncMetrics, SyncStatus,
};
use time::{Duration, OffsetDateTime};
use tokio::runtime::Runtime;
use tokio_postgres::Client;
use uuid::Uuid;

const CASES: u32 = 16;

/// A status label the Rust enums do not know (an adopted database's own).
const FOREIGN_STATUS: &str = "sync_error";

/// The monthly partitions a case may archive and restore (0024's).
const MONTHS: [(&str, &str, &str); 4] = [
    ("sync_activity_log_2025_11", "2025-11-01", "2025-12-01"),
    ("sync_activity_log_2025_12", "2025-12-01", "2026-01-01"),
    ("sync_activity_log_2026_01", "2026-01-01", "2026-02-01"),
    ("sync_activity_log_2026_02", "2026-02-01", "2026-03-01"),
];

fn runner() -> TestRunner {
    let cases = std::env::var("SYNC_PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(CASES);
    TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    })
}

/// 2025-11-01 00:00 UTC plus `minutes`: rows fall from 2025-11 to 2026-04
/// (four monthly partitions and the catch-all).
fn at(minutes: u32) -> OffsetDateTime {
    time::macros::datetime!(2025-11-01 00:00 UTC) + Duration::minutes(minutes as i64)
}

const SPAN_MINUTES: u32 = 150 * 24 * 60;

/// One generated row: (org index, action, status, minute, second fraction).
#[derive(Debug, Clone)]
struct GenRow {
    org: usize,
    action: SyncAction,
    status: SyncStatus,
    minute: u32,
    second: u8,
}

impl GenRow {
    fn created_at(&self) -> OffsetDateTime {
        at(self.minute) + Duration::seconds(self.second as i64)
    }
}

#[derive(Debug, Clone)]
enum Op {
    /// `append_activity` (service scope), one row each.
    StoreSingle(Vec<GenRow>),
    /// `append_activity_many` (binary COPY through the parent).
    StoreCopy(Vec<GenRow>),
    /// A sync started and then completed, failed or cancelled through the store:
    /// the database's own triggers write its log rows (dated now).
    Sync { org: usize, end: u8 },
    /// `INSERT … SELECT` in plain SQL, optionally with the foreign status label.
    PlainInsert(Vec<GenRow>, bool),
    /// The same, in a transaction that is rolled back.
    RolledBack(Vec<GenRow>),
    /// `DELETE FROM sync_activity_log` (the parent) of one org in a time window.
    Delete { org: usize, from: u32, len: u32 },
    /// `UPDATE` through the parent: new status, and the rows moved by `shift`
    /// minutes (possibly into another partition).
    Update {
        org: usize,
        from: u32,
        len: u32,
        status: SyncStatus,
        shift: i32,
    },
    /// `append_activity` in tenant scope (RLS; dated now).
    TenantAppend { org: usize, n: u8 },
    /// `ensure_partitions` (moves the catch-all's rows of the months it creates).
    Ensure,
    /// `SELECT sync_activity_rollup_compact()`.
    Compact,
    /// DETACH a month + recount, in one transaction (what archive does).
    Archive(usize),
    /// ATTACH it back + recount (what restore does).
    Restore(usize),
}

fn gen_row() -> impl Strategy<Value = GenRow> {
    (
        0..2usize,
        prop::sample::select(SyncAction::ALL.to_vec()),
        prop::sample::select(SyncStatus::ALL.to_vec()),
        prop_oneof![
            4 => 0..SPAN_MINUTES,
            1 => (0..150u32).prop_map(|d| d * 24 * 60), // a day's first minute
        ],
        prop_oneof![Just(0u8), 0..60u8],
    )
        .prop_map(|(org, action, status, minute, second)| GenRow {
            org,
            action,
            status,
            minute,
            second,
        })
}

fn rows(max: usize) -> impl Strategy<Value = Vec<GenRow>> {
    proptest::collection::vec(gen_row(), 1..max)
}

fn op() -> impl Strategy<Value = Op> {
    let window = (0..2usize, 0..SPAN_MINUTES, 1..(40 * 24 * 60u32));
    prop_oneof![
        2 => rows(4).prop_map(Op::StoreSingle),
        3 => rows(40).prop_map(Op::StoreCopy),
        1 => (0..2usize, 0..3u8).prop_map(|(org, end)| Op::Sync { org, end }),
        3 => (rows(30), any::<bool>()).prop_map(|(r, f)| Op::PlainInsert(r, f)),
        1 => rows(10).prop_map(Op::RolledBack),
        1 => window.clone().prop_map(|(org, from, len)| Op::Delete { org, from, len }),
        1 => (window, prop::sample::select(SyncStatus::ALL.to_vec()), -(60 * 24 * 40)..(60 * 24 * 40))
            .prop_map(|((org, from, len), status, shift)| Op::Update { org, from, len, status, shift }),
        1 => Just(Op::Compact),
        1 => (0..2usize, 1..4u8).prop_map(|(org, n)| Op::TenantAppend { org, n }),
        1 => Just(Op::Ensure),
        1 => (0..MONTHS.len()).prop_map(Op::Archive),
        1 => (0..MONTHS.len()).prop_map(Op::Restore),
    ]
}

/// A `since` to check: none, unaligned, on an hour, on a day, before and after
/// every row.
fn sinces(seed: u32) -> Vec<Option<OffsetDateTime>> {
    let m = seed % SPAN_MINUTES;
    vec![
        None,
        Some(at(m) + Duration::seconds(17)),
        Some(at(m - m % 60)),
        Some(at(m - m % (24 * 60))),
        Some(at(0) - Duration::days(400)),
        Some(OffsetDateTime::now_utc() - Duration::minutes(30)),
        Some(OffsetDateTime::now_utc() + Duration::days(2)),
    ]
}

/// The counts a full scan of the log gives (the spec's formulas, as before 0026).
async fn scan(c: &Client, org: Option<Uuid>, since: Option<OffsetDateTime>) -> [i64; 8] {
    let r = c
        .query_one(
            "SELECT count(*), \
                    count(*) FILTER (WHERE status::text = 'completed'), \
                    count(*) FILTER (WHERE status::text IN ('failed', 'completed_with_errors')), \
                    count(*) FILTER (WHERE e), \
                    count(*) FILTER (WHERE e AND status::text = 'completed'), \
                    count(*) FILTER (WHERE e AND status::text = 'completed_with_errors'), \
                    count(*) FILTER (WHERE e AND status::text = 'failed'), \
                    count(*) FILTER (WHERE e AND status::text = 'cancelled') \
               FROM (SELECT status, action::text IN ('sync_complete', 'sync_fail', 'sync_cancel') AS e \
                       FROM sync_activity_log \
                      WHERE ($1::uuid IS NULL OR org_id = $1) \
                        AND ($2::timestamptz IS NULL OR created_at >= $2)) l",
            &[&org, &since],
        )
        .await
        .unwrap();
    std::array::from_fn(|i| r.get(i))
}

fn counts(m: &SyncMetrics) -> [i64; 8] {
    let o = &m.outcomes;
    [
        m.activity_total,
        m.activity_completed,
        m.activity_errors,
        o.ended,
        o.completed,
        o.completed_with_errors,
        o.failed,
        o.cancelled,
    ]
}

struct World {
    f: Fixture,
    detached: [bool; 4],
    seq: u32,
}

impl World {
    fn org(&self, i: usize) -> Uuid {
        [self.f.org_a, self.f.org_b][i]
    }

    /// Rows whose month is attached (a detached month has no partition).
    fn insertable<'r>(&self, rows: &'r [GenRow]) -> Vec<&'r GenRow> {
        rows.iter()
            .filter(|r| {
                let day = (r.created_at() - at(0)).whole_days();
                let month = match day {
                    0..=29 => Some(0),
                    30..=60 => Some(1),
                    61..=91 => Some(2),
                    92..=119 => Some(3),
                    _ => None,
                };
                month.is_none_or(|m| !self.detached[m])
            })
            .collect()
    }

    fn new_activity(r: &GenRow) -> NewActivity {
        let mut e = NewActivity::new(r.action, r.status);
        e.created_at = Some(r.created_at());
        e.entity_type = Some(SyncEntityType::Product);
        e
    }

    async fn plain_insert(&self, c: &Client, rows: &[&GenRow], foreign: bool) {
        let orgs: Vec<Uuid> = rows.iter().map(|r| self.org(r.org)).collect();
        let actions: Vec<&str> = rows.iter().map(|r| r.action.as_str()).collect();
        let statuses: Vec<&str> = rows
            .iter()
            .enumerate()
            .map(|(i, r)| {
                if foreign && i % 2 == 0 {
                    FOREIGN_STATUS
                } else {
                    r.status.as_str()
                }
            })
            .collect();
        let times: Vec<OffsetDateTime> = rows.iter().map(|r| r.created_at()).collect();
        c.execute(
            "INSERT INTO sync_activity_log (org_id, action, status, created_at) \
             SELECT o, a::sync_action, s::sync_status_type, t \
               FROM unnest($1::uuid[], $2::text[], $3::text[], $4::timestamptz[]) AS u(o, a, s, t)",
            &[&orgs, &actions, &statuses, &times],
        )
        .await
        .unwrap();
    }

    async fn apply(&mut self, op: &Op) {
        // (Only with every month attached: a detached month is a gap ensure
        // does not have to respect.)
        if matches!(op, Op::Ensure) && !self.detached.iter().any(|d| *d) {
            sync_migrations::partitions::ensure_partitions(
                &mut self.f.admin,
                1,
                &sync_migrations::partitions::PartitionOptions::default(),
                |_| {},
            )
            .await
            .unwrap();
            return;
        }
        let svc = self.f.store.service();
        let c = &self.f.admin;
        match op {
            Op::StoreSingle(rows) => {
                for r in self.insertable(rows) {
                    svc.append_activity(self.org(r.org), &Self::new_activity(r))
                        .await
                        .unwrap();
                }
            }
            Op::StoreCopy(rows) => {
                for org in 0..2 {
                    let batch: Vec<NewActivity> = self
                        .insertable(rows)
                        .into_iter()
                        .filter(|r| r.org == org)
                        .map(Self::new_activity)
                        .collect();
                    if !batch.is_empty() {
                        svc.append_activity_many(self.org(org), &batch)
                            .await
                            .unwrap();
                    }
                }
            }
            Op::Sync { org, end } => {
                self.seq += 1;
                let id = format!("prop-sync-{}", self.seq);
                let org = self.org(*org);
                svc.start_sync(org, &StartSync::new(&id, SyncEntityType::Order))
                    .await
                    .unwrap();
                match end {
                    0 => drop(svc.complete_sync(org, &id).await.unwrap()),
                    1 => drop(svc.fail_sync(org, &id, "boom").await.unwrap()),
                    _ => drop(svc.cancel_sync(org, &id, None).await.unwrap()),
                }
            }
            Op::PlainInsert(rows, foreign) => {
                let rows = self.insertable(rows);
                self.plain_insert(c, &rows, *foreign).await;
            }
            Op::RolledBack(rows) => {
                let rows = self.insertable(rows);
                c.batch_execute("BEGIN").await.unwrap();
                self.plain_insert(c, &rows, false).await;
                c.batch_execute("ROLLBACK").await.unwrap();
            }
            Op::Delete { org, from, len } => {
                c.execute(
                    "DELETE FROM sync_activity_log \
                      WHERE org_id = $1 AND created_at >= $2 AND created_at < $3",
                    &[&self.org(*org), &at(*from), &at(from + len)],
                )
                .await
                .unwrap();
            }
            Op::Update {
                org,
                from,
                len,
                status,
                shift,
            } => {
                // Rows moved into a detached month would have no partition:
                // only shift when every month is attached.
                let shift = if self.detached.iter().any(|d| *d) {
                    0
                } else {
                    *shift
                };
                c.execute(
                    "UPDATE sync_activity_log \
                        SET status = $4::text::sync_status_type, \
                            created_at = greatest(created_at + make_interval(mins => $5), $6) \
                      WHERE org_id = $1 AND created_at >= $2 AND created_at < $3",
                    &[
                        &self.org(*org),
                        &at(*from),
                        &at(from + len),
                        &status.as_str(),
                        &shift,
                        &at(0),
                    ],
                )
                .await
                .unwrap();
            }
            Op::TenantAppend { org, n } => {
                let user = [self.f.user_a, self.f.user_b][*org];
                for i in 0..*n {
                    let status = SyncStatus::ALL[i as usize % SyncStatus::ALL.len()];
                    let e = NewActivity::new(SyncAction::SyncProgress, status);
                    self.f.store.tenant(user).append_activity(&e).await.unwrap();
                }
            }
            Op::Ensure => {}
            Op::Compact => {
                c.execute("SELECT sync_activity_rollup_compact()", &[])
                    .await
                    .unwrap();
            }
            Op::Archive(m) if !self.detached[*m] => {
                let (name, lo, hi) = MONTHS[*m];
                c.batch_execute(&format!(
                    "BEGIN; ALTER TABLE sync_activity_log DETACH PARTITION {name}; \
                     SELECT sync_activity_rollup_recount('{lo}', '{hi}'); COMMIT"
                ))
                .await
                .unwrap();
                self.detached[*m] = true;
            }
            Op::Restore(m) if self.detached[*m] => {
                let (name, lo, hi) = MONTHS[*m];
                c.batch_execute(&format!(
                    "BEGIN; ALTER TABLE sync_activity_log ATTACH PARTITION {name} \
                       FOR VALUES FROM ('{lo}') TO ('{hi}'); \
                     SELECT sync_activity_rollup_recount('{lo}', '{hi}'); COMMIT"
                ))
                .await
                .unwrap();
                self.detached[*m] = false;
            }
            Op::Archive(_) | Op::Restore(_) => {}
        }
    }

    /// Rollup metrics == scan, every scope, every window.
    async fn check(&self, seed: u32) -> Result<(), TestCaseError> {
        let svc = self.f.store.service();
        let c = &self.f.admin;
        for since in sinces(seed) {
            let all = svc.metrics_all_orgs(since).await.unwrap();
            prop_assert_eq!(all.activity_source, ActivitySource::Rollup);
            prop_assert_eq!(
                counts(&all),
                scan(c, None, since).await,
                "all orgs, since {:?}",
                since
            );
            for (i, user) in [self.f.user_a, self.f.user_b].into_iter().enumerate() {
                let org = self.org(i);
                let expected = scan(c, Some(org), since).await;
                let m = svc.metrics(org, since).await.unwrap();
                prop_assert_eq!(m.activity_source, ActivitySource::Rollup);
                prop_assert_eq!(counts(&m), expected, "org {}, since {:?}", i, since);
                let t = self.f.store.tenant(user).metrics(since).await.unwrap();
                prop_assert_eq!(
                    counts(&t),
                    expected,
                    "tenant of org {}, since {:?}",
                    i,
                    since
                );
            }
        }
        Ok(())
    }
}

#[test]
fn rollup_metrics_equal_a_full_scan_after_any_history() {
    let rt = Runtime::new().unwrap();
    let mut world = rt.block_on(async {
        let f = Fixture::new().await;
        f.admin
            .batch_execute(&format!(
                "ALTER TYPE sync_status_type ADD VALUE '{FOREIGN_STATUS}'"
            ))
            .await
            .unwrap();
        World {
            f,
            detached: [false; 4],
            seq: 0,
        }
    });
    let world = tokio::sync::Mutex::new(&mut world);
    runner()
        .run(
            &(proptest::collection::vec(op(), 1..8), any::<u32>()),
            |(ops, seed)| {
                rt.block_on(async {
                    let mut w = world.lock().await;
                    for op in &ops {
                        w.apply(op).await;
                        w.check(seed).await?;
                    }
                    Ok(())
                })
            },
        )
        .unwrap();
    // The history touched every kind of row.
    let labels: i64 = rt.block_on(async {
        world
            .lock()
            .await
            .f
            .admin
            .query_one(
                "SELECT count(DISTINCT status) FROM sync_activity_rollup WHERE grain = 'all'",
                &[],
            )
            .await
            .unwrap()
            .get(0)
    });
    assert!(labels >= 5, "only {labels} status labels were exercised");
}

/// Makes the fixture look like a database that had log rows before 0026:
/// `n` rows written with the rollup triggers disabled, the rollups emptied and
/// the backfill owed.
async fn rows_older_than_the_rollups(f: &Fixture, n: i32) {
    f.admin
        .batch_execute(
            "ALTER TABLE sync_activity_log DISABLE TRIGGER trg_sync_activity_log_80_rollup_insert",
        )
        .await
        .unwrap();
    f.admin
        .execute(
            "INSERT INTO sync_activity_log (org_id, action, status, created_at) \
             SELECT CASE WHEN i % 3 = 0 THEN $2::uuid ELSE $1::uuid END, \
                    (CASE WHEN i % 4 = 0 THEN 'sync_complete' ELSE 'record_update' END)::sync_action, \
                    (CASE WHEN i % 5 = 0 THEN 'failed' ELSE 'completed' END)::sync_status_type, \
                    timestamptz '2025-11-03 00:00+00' + i * interval '47 minutes 13 seconds' \
               FROM generate_series(1, $3::int) i",
            &[&f.org_a, &f.org_b, &n],
        )
        .await
        .unwrap();
    f.admin
        .batch_execute(
            "ALTER TABLE sync_activity_log ENABLE TRIGGER trg_sync_activity_log_80_rollup_insert; \
             DELETE FROM sync_activity_rollup_delta; DELETE FROM sync_activity_rollup; \
             UPDATE sync_activity_rollup_state SET backfill_lo = NULL, backfill_hi = NULL, \
                    backfill_next = NULL, backfill_rows = 0, backfill_done_at = NULL",
        )
        .await
        .unwrap();
}

async fn assert_exact(f: &Fixture, source: ActivitySource) {
    let svc = f.store.service();
    for since in [None, Some(time::macros::datetime!(2026-01-17 05:31:10 UTC))] {
        let all = svc.metrics_all_orgs(since).await.unwrap();
        assert_eq!(all.activity_source, source);
        assert_eq!(counts(&all), scan(&f.admin, None, since).await);
        for org in [f.org_a, f.org_b] {
            let m = svc.metrics(org, since).await.unwrap();
            assert_eq!(m.activity_source, source);
            assert_eq!(counts(&m), scan(&f.admin, Some(org), since).await);
        }
    }
}

/// Rows older than the rollups: the metrics scan (and say so) until the
/// backfill is done; the backfill runs one month per transaction, stops and
/// resumes, and counts exactly while a writer keeps writing into the same months.
#[tokio::test]
async fn backfill_counts_older_rows_resumably_while_writers_write() {
    let f = Fixture::new().await;
    rows_older_than_the_rollups(&f, 6000).await;
    assert_exact(&f, ActivitySource::Scan).await;

    // One step (the budget is spent at once), then stop: still scanning.
    let mut c = f.db.client().await;
    let first = sync_migrations::backfill_rollups(&mut c, Some(std::time::Duration::ZERO), |_| {})
        .await
        .unwrap();
    assert!(first.installed && !first.done && !first.busy, "{first:?}");
    assert_eq!(first.steps, 1);
    assert_exact(&f, ActivitySource::Scan).await;

    // A writer appends into the months being counted while the rest runs.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (stop, store, org) = (stop.clone(), f.store.clone(), f.org_a);
        tokio::spawn(async move {
            let mut n = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) || n < 20 {
                let mut e = NewActivity::new(SyncAction::RecordCreate, SyncStatus::Failed);
                e.created_at = Some(at((n * 997) % (100 * 24 * 60)));
                store.service().append_activity(org, &e).await.unwrap();
                n += 1;
            }
            n
        })
    };
    let mut steps = Vec::new();
    let rest = sync_migrations::backfill_rollups(&mut c, None, |r| steps.push(r.rows_counted))
        .await
        .unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let written = writer.await.unwrap();
    assert!(rest.done && !rest.busy, "{rest:?}");
    assert!(steps.len() >= 3, "one step per month: {steps:?}");
    assert!(steps.windows(2).all(|w| w[0] <= w[1]), "{steps:?}");
    assert!(written >= 20);
    assert_exact(&f, ActivitySource::Rollup).await;

    // Done is done: nothing more to run.
    let again = sync_migrations::backfill_rollups(&mut c, None, |_| {})
        .await
        .unwrap();
    assert!(again.done && again.steps == 0, "{again:?}");
}

/// Writers of one org never wait for each other or for a compaction because of
/// the rollups: with one writer's transaction open (its rows and a compaction
/// uncommitted), another writer of the same org writes, compacts and reads
/// under a 200 ms lock_timeout.
#[tokio::test]
async fn writers_of_one_org_never_wait_on_the_rollups() {
    let f = Fixture::new().await;
    let t1 = f.db.client().await;
    t1.batch_execute("BEGIN").await.unwrap();
    for _ in 0..3 {
        t1.execute(
            "INSERT INTO sync_activity_log (org_id, action, status) \
             VALUES ($1, 'record_update', 'completed')",
            &[&f.org_a],
        )
        .await
        .unwrap();
    }
    t1.execute("SELECT sync_activity_rollup_compact()", &[])
        .await
        .unwrap();
    // (An insert's trigger may have compacted already: either way t1 now holds
    // the compaction lock until it commits.)
    let t2 = f.db.client().await;
    let free: i64 = t2
        .query_one(
            "SELECT count(*) FROM (SELECT 1 FROM sync_activity_rollup_state \
                                    FOR UPDATE SKIP LOCKED) l",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(free, 0, "t1 holds the compaction lock (the state row)");
    t2.batch_execute("SET lock_timeout = '200ms'; SET statement_timeout = '5s'")
        .await
        .unwrap();
    for i in 0..200 {
        t2.execute(
            "INSERT INTO sync_activity_log (org_id, action, status) \
             VALUES ($1, 'sync_complete', $2::text::sync_status_type)",
            &[&f.org_a, &if i % 2 == 0 { "completed" } else { "failed" }],
        )
        .await
        .unwrap();
    }
    let skipped: i64 = t2
        .query_one("SELECT sync_activity_rollup_compact()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(skipped, 0, "a busy compactor is skipped, not waited for");
    t1.batch_execute("COMMIT").await.unwrap();
    assert_exact(&f, ActivitySource::Rollup).await;
    let m = f.store.service().metrics(f.org_a, None).await.unwrap();
    assert_eq!((m.activity_total, m.outcomes.ended), (203, 200));
}

/// A backfill step waits for the state row's lock at most its lock_timeout; when
/// another session holds it longer, the step counts nothing and says `busy`.
#[tokio::test]
async fn a_backfill_step_behind_a_held_state_row_is_busy_not_stuck() {
    let f = Fixture::new().await;
    let t1 = f.db.client().await;
    t1.batch_execute("BEGIN; SELECT 1 FROM sync_activity_rollup_state FOR UPDATE")
        .await
        .unwrap();
    let t2 = f.db.client().await;
    t2.batch_execute("SET lock_timeout = '200ms'; SET statement_timeout = '5s'")
        .await
        .unwrap();
    let busy: bool = t2
        .query_one("SELECT busy FROM sync_activity_rollup_backfill_step()", &[])
        .await
        .unwrap()
        .get(0);
    assert!(busy, "the lock_timeout ran out: busy");
    t1.batch_execute("COMMIT").await.unwrap();
    let row = t2
        .query_one(
            "SELECT busy, done FROM sync_activity_rollup_backfill_step()",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        (row.get::<_, bool>(0), row.get::<_, bool>(1)),
        (false, true)
    );
}

/// Every way 0029's metrics read a `since` window, against a scan: rows every
/// 3 min 7 s over three days (both orgs, every status and action), half folded
/// into the rollups and half still pending deltas, then `since` stepped every
/// 5 min 53 s from an hour before the first row to an hour after the last. The
/// steps land in both halves of an hour (the partial hour read directly, or as
/// its whole hour minus the log rows before `since`) and at every distance
/// from the next day (the hours before it read directly, or as the day minus
/// its earlier hours), on and off hour and day boundaries.
#[tokio::test]
async fn every_since_reads_the_same_counts_as_a_scan() {
    let f = Fixture::new().await;
    let insert = "INSERT INTO sync_activity_log (org_id, action, status, created_at) \
         SELECT CASE WHEN i % 3 = 0 THEN $2::uuid ELSE $1::uuid END, \
                (enum_range(NULL::sync_action))[1 + i % 14], \
                (enum_range(NULL::sync_status_type))[1 + (i / 5) % 6], \
                timestamptz '2026-01-10 00:00+00' + i * interval '3 minutes 7 seconds' \
           FROM generate_series($3::int, $4::int) i";
    f.admin
        .execute(insert, &[&f.org_a, &f.org_b, &0i32, &700i32])
        .await
        .unwrap();
    f.admin
        .batch_execute("SELECT sync_activity_rollup_compact()")
        .await
        .unwrap();
    // Outside READ COMMITTED the insert trigger never compacts: these stay deltas.
    f.admin
        .batch_execute("SET default_transaction_isolation = 'repeatable read'")
        .await
        .unwrap();
    f.admin
        .execute(insert, &[&f.org_a, &f.org_b, &701i32, &1386i32])
        .await
        .unwrap();
    f.admin
        .batch_execute("RESET default_transaction_isolation")
        .await
        .unwrap();
    let pending: i64 = f
        .admin
        .query_one("SELECT count(*) FROM sync_activity_rollup_delta", &[])
        .await
        .unwrap()
        .get(0);
    assert!(pending > 0, "the later rows are pending deltas");
    let svc = f.store.service();
    let first = time::macros::datetime!(2026-01-10 00:00 UTC);
    let mut since = first - Duration::hours(1);
    let mut checked = 0;
    while since < first + Duration::days(3) + Duration::hours(1) {
        let all = svc.metrics_all_orgs(Some(since)).await.unwrap();
        assert_eq!(all.activity_source, ActivitySource::Rollup);
        assert_eq!(
            counts(&all),
            scan(&f.admin, None, Some(since)).await,
            "all orgs since {since}"
        );
        for org in [f.org_a, f.org_b] {
            let m = svc.metrics(org, Some(since)).await.unwrap();
            assert_eq!(
                counts(&m),
                scan(&f.admin, Some(org), Some(since)).await,
                "one org since {since}"
            );
        }
        checked += 1;
        since += Duration::minutes(5) + Duration::seconds(53);
    }
    assert!(checked > 700, "{checked}");
    // Infinite bounds (SQL callers only; the store sends finite times).
    for (since, expected) in [
        ("-infinity", scan(&f.admin, None, None).await[0]),
        ("infinity", 0),
    ] {
        let total: i64 = f
            .admin
            .query_one(
                "SELECT total FROM sync_activity_metrics(NULL, $1::text::timestamptz)",
                &[&since],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(total, expected, "since {since}");
    }
}
