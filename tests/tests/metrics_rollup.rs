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

const CASES: u32 = 24;

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
            prop_assert_eq!(counts(&all), scan(c, None, since).await, "all orgs, since {:?}", since);
            for (i, user) in [self.f.user_a, self.f.user_b].into_iter().enumerate() {
                let org = self.org(i);
                let expected = scan(c, Some(org), since).await;
                let m = svc.metrics(org, since).await.unwrap();
                prop_assert_eq!(m.activity_source, ActivitySource::Rollup);
                prop_assert_eq!(counts(&m), expected, "org {}, since {:?}", i, since);
                let t = self.f.store.tenant(user).metrics(since).await.unwrap();
                prop_assert_eq!(counts(&t), expected, "tenant of org {}, since {:?}", i, since);
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
    let world = std::cell::RefCell::new(&mut world);
    runner()
        .run(
            &(proptest::collection::vec(op(), 1..8), any::<u32>()),
            |(ops, seed)| {
                rt.block_on(async {
                    let mut w = world.borrow_mut();
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
            .borrow()
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
