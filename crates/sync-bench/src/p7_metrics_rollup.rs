//! P7: activity metrics from the rollups (migration 0026) do not grow with the
//! log.
//!
//! Two sibling databases, both migrated, with the same 50 orgs' worth of rows
//! spread evenly over the same 12 months: `small` rows in one, 10 × `small` in
//! the other (full run 2M vs 20M, `--quick` 0.2M vs 2M). Rows are loaded
//! set-based with triggers off, then counted by the backfill
//! (`sync_migrations::backfill_rollups`, as on a database that had its rows
//! before 0026; its time is printed). Then, alternating, the same call on the
//! large database (library) and on the small one (baseline), `ops` calls per
//! repetition, ms per call:
//!
//! * P7a: `ServiceScope::metrics(org, None)`, cycling through the orgs;
//! * P7b: `ServiceScope::metrics_all_orgs(None)`;
//! * P7c: `metrics_all_orgs(since)` with `since` 7 days before the newest row
//!   and not on an hour (days, hours and the partial hour's log rows), cycling
//!   the minute;
//! * P7s (informational): P7b on the large database vs the pre-0026 full scan
//!   of the same counts on it (what `stats` cost before).
//!
//! And the write cost of the rollup triggers (P7w, informational, same run, on
//! the small database): 2,000 autocommit single-row INSERTs through the parent
//! with the rollup triggers enabled (library) vs disabled (baseline).

use std::time::Instant;

use sync_store::{ActivitySource, Store};
use time::{Duration, OffsetDateTime};
use tokio_postgres::Client;
use uuid::Uuid;

use crate::data::{create_tenants, exec, store};
use crate::measure::{alternate, Row, Side, Target};
use crate::BenchDb;

const ORGS: i32 = 50;
const OPS: usize = 50;
const WRITES: usize = 2_000;
const ROLLUP_TRIGGERS: [&str; 3] = [
    "trg_sync_activity_log_80_rollup_insert",
    "trg_sync_activity_log_81_rollup_update",
    "trg_sync_activity_log_82_rollup_delete",
];

struct Side1 {
    db: BenchDb,
    client: Client,
    store: Store,
    orgs: Vec<Uuid>,
}

/// A migrated sibling database with `rows` log rows over 12 months and 50 orgs,
/// counted into the rollups by the backfill.
async fn load(parent: &BenchDb, suffix: &str, rows: u64) -> Side1 {
    let db = parent.sibling(suffix).await;
    let mut c = db.connect().await;
    sync_migrations::apply(&mut c, &sync_migrations::MigrateOptions::default())
        .await
        .expect("apply migrations");
    sync_migrations::partitions::ensure_partitions(
        &mut c,
        0,
        &sync_migrations::partitions::PartitionOptions::default(),
        |_| {},
    )
    .await
    .expect("ensure_partitions");
    let orgs: Vec<Uuid> = create_tenants(&c, "p7", ORGS)
        .await
        .iter()
        .map(|t| t.org)
        .collect();
    exec(
        &c,
        &format!(
            "SET session_replication_role = replica; \
             INSERT INTO sync_activity_log (org_id, sync_id, entity_type, action, status, \
                    record_count, created_at) \
             SELECT o.id, 'sync-' || (i % 5000), \
                    (enum_range(NULL::sync_entity_type))[1 + i % 16], \
                    (enum_range(NULL::sync_action))[1 + i % 14], \
                    (enum_range(NULL::sync_status_type))[1 + (i / 7) % 6], \
                    i % 100, \
                    '2025-12-01 00:00+00'::timestamptz \
                      + (i::float8 / {rows}) * ('2026-12-01 00:00+00'::timestamptz \
                                                - '2025-12-01 00:00+00'::timestamptz) \
               FROM generate_series(0, {rows} - 1) i \
               JOIN (SELECT id, row_number() OVER (ORDER BY id) - 1 AS k \
                       FROM organization WHERE starts_with(name, 'p7 ')) o ON o.k = i % {ORGS}; \
             RESET session_replication_role; \
             UPDATE sync_activity_rollup_state SET backfill_done_at = NULL"
        ),
    )
    .await;
    let start = Instant::now();
    let report = sync_migrations::backfill_rollups(&mut c, None, |_| {})
        .await
        .expect("backfill");
    assert!(
        report.done && report.rows_counted == rows as i64,
        "{report:?}"
    );
    eprintln!(
        "P7: backfill of {rows} rows: {:.1} s ({} monthly steps)",
        start.elapsed().as_secs_f64(),
        report.steps
    );
    exec(&c, "VACUUM ANALYZE").await;
    let store = store(&db);
    Side1 {
        db,
        client: c,
        store,
        orgs,
    }
}

/// The pre-0026 statement: the activity counts by a full scan.
const SCAN: &str = "SELECT count(*), count(*) FILTER (WHERE status = 'completed'), \
       count(*) FILTER (WHERE status IN ('failed', 'completed_with_errors')), \
       count(*) FILTER (WHERE action IN ('sync_complete', 'sync_fail', 'sync_cancel')) \
     FROM sync_activity_log";

pub(crate) async fn run(db: &BenchDb, reps: usize, small: u64) -> Vec<Row> {
    let large_rows = small * 10;
    let s_owned = load(db, "p7s", small).await;
    let l_owned = load(db, "p7l", large_rows).await;
    let (s, l) = (&s_owned, &l_owned);
    let newest: OffsetDateTime = l
        .client
        .query_one("SELECT max(created_at) FROM sync_activity_log", &[])
        .await
        .expect("newest")
        .get(0);
    let since0 = newest - Duration::days(7) - Duration::minutes(17) - Duration::seconds(9);
    // Same answers as a scan (untimed), and both read the rollups.
    for side in [s, l] {
        let m = side.store.service().metrics_all_orgs(None).await.unwrap();
        assert_eq!(m.activity_source, ActivitySource::Rollup);
        let r = side.client.query_one(SCAN, &[]).await.unwrap();
        assert_eq!(
            [
                m.activity_total,
                m.activity_completed,
                m.activity_errors,
                m.outcomes.ended
            ],
            [r.get::<_, i64>(0), r.get(1), r.get(2), r.get(3)]
        );
    }
    let mut out = Vec::new();
    for (id, kind) in [("P7a", 0u8), ("P7b", 1), ("P7c", 2)] {
        let call = move |side: &'static str, i: usize| async move {
            let side = if side == "l" { l } else { s };
            let svc = side.store.service();
            match kind {
                0 => svc.metrics(side.orgs[i % side.orgs.len()], None).await,
                1 => svc.metrics_all_orgs(None).await,
                _ => {
                    svc.metrics_all_orgs(Some(since0 + Duration::minutes(i as i64)))
                        .await
                }
            }
            .expect("metrics");
        };
        // Warm both.
        for i in 0..5 {
            call("l", i).await;
            call("s", i).await;
        }
        let (library_ms, baseline_ms) = alternate(
            reps,
            |_side: Side| async {},
            move || async move {
                for i in 0..OPS {
                    call("l", i).await;
                }
            },
            move || async move {
                for i in 0..OPS {
                    call("s", i).await;
                }
            },
        )
        .await;
        let what = match kind {
            0 => "metrics(one org, all time)",
            1 => "metrics_all_orgs(all time)",
            _ => "metrics_all_orgs(since 7 days before the newest row, unaligned)",
        };
        out.push(Row {
            id,
            what: format!(
                "{what} from the rollups: {large_rows} vs {small} log rows, {ORGS} orgs, 12 months \
                 (ms per call; {OPS} calls per repetition)"
            ),
            library_ms: library_ms / OPS as f64,
            baseline_ms: baseline_ms / OPS as f64,
            target: Target {
                max_ratio: 1.2,
                max_library_ms: Some(10.0),
            },
        });
    }
    // P7s: the rollups vs the pre-0026 scan, on the large database.
    let (library_ms, baseline_ms) = alternate(
        reps,
        |_side: Side| async {},
        move || async move {
            l.store.service().metrics_all_orgs(None).await.unwrap();
        },
        move || async move {
            l.client.query_one(SCAN, &[]).await.unwrap();
        },
    )
    .await;
    out.push(Row {
        id: "P7s",
        what: format!(
            "metrics_all_orgs from the rollups vs the pre-0026 full scan of the same counts, \
             {large_rows} rows (ms per call; informational)"
        ),
        library_ms,
        baseline_ms,
        target: Target {
            max_ratio: 0.1,
            max_library_ms: None,
        },
    });
    out.push(write_cost(s, reps).await);
    for side in [s_owned, l_owned] {
        let Side1 {
            db, client, store, ..
        } = side;
        drop((client, store));
        db.drop_database().await;
    }
    out
}

/// P7w: single-row autocommit INSERTs through the parent, rollup triggers on
/// (library) vs off (baseline), alternating, on the small database.
async fn write_cost(s: &Side1, reps: usize) -> Row {
    let c = &s.client;
    let org = s.orgs[0];
    let stmt = c
        .prepare(
            "INSERT INTO sync_activity_log (org_id, action, status, record_count, created_at) \
             VALUES ($1, 'record_update', 'completed', 1, $2)",
        )
        .await
        .expect("prepare insert");
    let base = time::macros::datetime!(2026-06-15 00:00 UTC);
    let n = std::sync::atomic::AtomicI64::new(0);
    let (stmt, n) = (&stmt, &n);
    let (library_ms, baseline_ms) = alternate(
        reps,
        |side: Side| async move {
            let verb = match side {
                Side::Library => "ENABLE",
                Side::Baseline => "DISABLE",
            };
            for t in ROLLUP_TRIGGERS {
                exec(
                    c,
                    &format!("ALTER TABLE sync_activity_log {verb} TRIGGER {t}"),
                )
                .await;
            }
            exec(c, "CHECKPOINT").await;
        },
        move || async move {
            for _ in 0..WRITES {
                let i = n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                c.execute(stmt, &[&org, &(base + Duration::milliseconds(i))])
                    .await
                    .expect("insert");
            }
        },
        move || async move {
            for _ in 0..WRITES {
                let i = n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                c.execute(stmt, &[&org, &(base + Duration::milliseconds(i))])
                    .await
                    .expect("insert");
            }
        },
    )
    .await;
    for t in ROLLUP_TRIGGERS {
        exec(
            c,
            &format!("ALTER TABLE sync_activity_log ENABLE TRIGGER {t}"),
        )
        .await;
    }
    Row {
        id: "P7w",
        what: format!(
            "one autocommit single-row INSERT into the log with the rollup triggers vs without \
             (ms per insert; {WRITES} per repetition; informational: the write cost of 0026)"
        ),
        library_ms: library_ms / WRITES as f64,
        baseline_ms: baseline_ms / WRITES as f64,
        target: Target {
            max_ratio: 1.25,
            max_library_ms: None,
        },
    }
}
