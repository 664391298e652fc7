//! P2a / P2b: append 10k activity rows through `append_activity_many` (binary
//! COPY in one transaction) vs a raw binary COPY of the same rows (P2a) and vs
//! the same rows as 10k autocommit single-row INSERTs (P2b).
//!
//! Every timed part starts on an emptied `sync_activity_log` after a
//! `CHECKPOINT` (both untimed, so no part pays for the previous part's dirty
//! pages), with autovacuum off on the log's partitions (in the bench's own
//! database), and with the same rows (same `created_at`, so the same
//! partition). The raw paths use one already open connection and a statement
//! prepared beforehand. The library path is the same for P2a and P2b, so it is
//! timed once per round, in rotation with both baselines, and both rows report
//! its median.

use std::pin::pin;
use std::time::Instant;

use postgres_types::{IsNull, Kind, ToSql, Type};
use time::Duration;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::Client;
use uuid::Uuid;

use sync_store::{NewActivity, SyncAction, SyncEntityType, SyncStatus};

use crate::data::{create_tenants, exec, store};
use crate::measure::{median, Row, Target};
use crate::BenchDb;

const COLUMNS: &str = "org_id, sync_id, entity_type, action, status, record_count, \
                       duration_seconds, error_message, user_id, created_at";

/// Fewest rounds P2 runs, whatever `--reps` says (when it says less).
const P2_MIN_ROUNDS: usize = 9;

/// The rows, as the library takes them.
fn rows(n: usize) -> Vec<NewActivity> {
    let base = time::macros::datetime!(2026-01-15 00:00 UTC);
    (0..n)
        .map(|i| {
            let mut e = NewActivity::new(
                SyncAction::RecordUpdate,
                if i % 50 == 0 {
                    SyncStatus::Failed
                } else {
                    SyncStatus::Completed
                },
            );
            e.sync_id = Some(format!("sync-{}", i % 100));
            e.entity_type = Some(SyncEntityType::Product);
            e.record_count = (i % 100) as i32;
            e.duration_seconds = Some((i % 1000) as f64 / 8.0);
            e.error_message = (i % 50 == 0).then(|| format!("record {i} rejected"));
            e.created_at = Some(base + Duration::milliseconds(i as i64));
            e
        })
        .collect()
}

/// An enum label in binary COPY (its binary form is the label's text).
#[derive(Debug)]
struct Label(&'static str);

impl ToSql for Label {
    fn to_sql(
        &self,
        _ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        out.extend_from_slice(self.0.as_bytes());
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        matches!(ty.kind(), Kind::Enum(_))
    }

    postgres_types::to_sql_checked!();
}

async fn enum_type(c: &Client, name: &str) -> Type {
    let row = c
        .query_one(
            "SELECT t.oid, array_agg(e.enumlabel::text ORDER BY e.enumsortorder) \
             FROM pg_type t JOIN pg_enum e ON e.enumtypid = t.oid \
             WHERE t.oid = to_regtype($1) GROUP BY t.oid",
            &[&name],
        )
        .await
        .expect("enum type");
    Type::new(
        name.to_owned(),
        row.get(0),
        Kind::Enum(row.get(1)),
        "public".to_owned(),
    )
}

fn decimal(v: Option<f64>) -> Option<rust_decimal::Decimal> {
    v.map(|d| rust_decimal::Decimal::try_from(d).expect("decimal"))
}

async fn raw_copy(c: &Client, types: &[Type; 10], org: Uuid, rows: &[NewActivity]) {
    let sink = c
        .copy_in(&format!(
            "COPY sync_activity_log ({COLUMNS}) FROM STDIN (FORMAT binary)"
        ))
        .await
        .expect("copy in");
    let mut w = pin!(BinaryCopyInWriter::new(sink, types));
    for e in rows {
        let entity = e.entity_type.map(|t| Label(t.as_str()));
        w.as_mut()
            .write(&[
                &org,
                &e.sync_id,
                &entity,
                &Label(e.action.as_str()),
                &Label(e.status.as_str()),
                &e.record_count,
                &decimal(e.duration_seconds),
                &e.error_message,
                &e.user_id,
                &e.created_at,
            ])
            .await
            .expect("copy row");
    }
    let n = w.finish().await.expect("copy finish");
    assert_eq!(n as usize, rows.len());
}

async fn raw_inserts(c: &Client, org: Uuid, rows: &[NewActivity]) {
    let stmt = c
        .prepare(&format!(
            "INSERT INTO sync_activity_log ({COLUMNS}) VALUES ($1, $2, $3::text::sync_entity_type, \
             $4::text::sync_action, $5::text::sync_status_type, $6, $7, $8, $9, $10)"
        ))
        .await
        .expect("prepare insert");
    for e in rows {
        c.execute(
            &stmt,
            &[
                &org,
                &e.sync_id,
                &e.entity_type.map(SyncEntityType::as_str),
                &e.action.as_str(),
                &e.status.as_str(),
                &e.record_count,
                &decimal(e.duration_seconds),
                &e.error_message,
                &e.user_id,
                &e.created_at,
            ],
        )
        .await
        .expect("insert");
    }
}

/// A timed part of P2 (its discriminant indexes the timings).
#[derive(Debug, Clone, Copy)]
enum Part {
    Library = 0,
    Copy = 1,
    Inserts = 2,
}

async fn partitions(c: &Client) -> Vec<String> {
    c.query(
        "SELECT inhrelid::regclass::text FROM pg_inherits \
          WHERE inhparent = 'sync_activity_log'::regclass",
        &[],
    )
    .await
    .expect("partitions")
    .iter()
    .map(|r| r.get(0))
    .collect()
}

async fn count(c: &Client) -> i64 {
    c.query_one("SELECT count(*) FROM sync_activity_log", &[])
        .await
        .expect("count")
        .get(0)
}

/// Runs P2a and P2b (whichever are wanted) on `n` rows.
pub(crate) async fn run(db: &BenchDb, reps: usize, n: usize, a: bool, b: bool) -> Vec<Row> {
    let c = db.connect().await;
    let org = create_tenants(&c, "p2", 1).await[0].org;
    let store = store(db);
    let service = store.service();
    let data = rows(n);
    let types = [
        Type::UUID,
        Type::VARCHAR,
        enum_type(&c, "sync_entity_type").await,
        enum_type(&c, "sync_action").await,
        enum_type(&c, "sync_status_type").await,
        Type::INT4,
        Type::NUMERIC,
        Type::TEXT,
        Type::UUID,
        Type::TIMESTAMPTZ,
    ];
    // No autovacuum on the log's partitions while P2 runs: 10k new rows per part
    // would start one that competes with whatever part is timed next.
    // `part` is regclass text (quoted by the server); one statement per call.
    for part in partitions(&c).await {
        c.execute(
            &format!("ALTER TABLE {part} SET (autovacuum_enabled = off)"),
            &[],
        )
        .await
        .unwrap_or_else(|e| panic!("turning autovacuum off on {part}: {e}"));
    }
    // Warm the library's pool and enum lookup (untimed).
    service
        .append_activity_many(org, &data[..1])
        .await
        .expect("warm-up");
    let (c, service, data, types) = (&c, &service, &data, &types);
    // The three timed parts; every round times each wanted one once, in an order
    // that rotates round by round, so no part always follows the same other one
    // (10k committed INSERTs leave WAL and dirty pages behind for whatever runs next).
    let mut parts = vec![Part::Library];
    if a {
        parts.push(Part::Copy);
    }
    if b {
        parts.push(Part::Inserts);
    }
    let mut took: [Vec<std::time::Duration>; 3] = Default::default();
    // Each part takes well under a second, with spikes from the shared disk, so
    // P2 runs at least 9 rounds (the median then ignores up to 4 spikes a part).
    for round in 0..reps.max(P2_MIN_ROUNDS) {
        for i in 0..parts.len() {
            let part = parts[(round + i) % parts.len()];
            exec(c, "TRUNCATE sync_activity_log; CHECKPOINT").await;
            let start = Instant::now();
            match part {
                Part::Library => {
                    let written = service
                        .append_activity_many(org, data)
                        .await
                        .expect("append_activity_many");
                    assert_eq!(written as usize, n);
                }
                Part::Copy => raw_copy(c, types, org, data).await,
                Part::Inserts => raw_inserts(c, org, data).await,
            }
            took[part as usize].push(start.elapsed());
            assert_eq!(count(c).await as usize, n, "rows after {part:?}");
        }
    }
    let [library, copy, inserts] = took;
    // P2a and P2b have the same library path (the same call on the same rows), so
    // both rows report the one median of its timings.
    let library_ms = median(library);
    let mut out = Vec::new();
    if a {
        out.push(Row {
            id: "P2a",
            what: format!(
                "append {n} activity rows: append_activity_many vs raw binary COPY (ms per batch)"
            ),
            library_ms,
            baseline_ms: median(copy),
            target: Target {
                max_ratio: 1.25,
                max_library_ms: None,
            },
        });
    }
    if b {
        out.push(Row {
            id: "P2b",
            what: format!(
                "append {n} activity rows: append_activity_many vs {n} autocommit prepared \
                 single-row INSERTs, one after the other (ms per batch)"
            ),
            library_ms,
            baseline_ms: median(inserts),
            target: Target {
                max_ratio: 0.05,
                max_library_ms: None,
            },
        });
    }
    assert_eq!(count(c).await as usize, n, "rows after the last part");
    exec(c, "TRUNCATE sync_activity_log").await;
    out
}
