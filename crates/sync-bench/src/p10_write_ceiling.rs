//! P10: the write ceiling of one primary. N concurrent workers (8, 32, 64),
//! each ticking its own running sync as fast as it can for a fixed time —
//! `ServiceScope::report_progress` on a pool of N connections (the BEFORE
//! UPDATE triggers compute elapsed, speed, ETA) — vs `pgbench` with N clients
//! running the bare UPDATE of the same columns on a trigger-free twin of
//! `sync_progress` (`LIKE … INCLUDING ALL`, same rows, same fillfactor), each
//! client on its own row, in the same run. Reported as ms per tick of the
//! whole system (1000 / ticks per second); target: the store carries ≥ 0.7×
//! pgbench's ticks per second (ratio ≤ 1/0.7).

use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sync_store::{ProgressDelta, StartSync, SyncEntityType};
use tokio_postgres::config::Host;

use crate::data::{create_tenants, exec};
use crate::measure::{Row, Target};
use crate::BenchDb;

/// The concurrencies measured (the server allows 100 connections).
pub(crate) const WORKERS: [usize; 3] = [8, 32, 64];

/// `pgbench` of the installed server (same directory as `initdb`).
fn pgbench() -> std::path::PathBuf {
    sync_testdb::tempcluster::bindir()
        .map(|d| d.join("pgbench"))
        .filter(|p| p.exists())
        .expect("pgbench (PostgreSQL server binaries) not found: apt-get install -y postgresql")
}

/// The store side: `workers` tasks ticking for `secs`; ticks per second.
async fn store_ticks(db: &BenchDb, org: uuid::Uuid, workers: usize, run: Duration) -> f64 {
    let pool = sync_connect::pool(&db.config, &db.tls, workers).expect("pool");
    let mode = crate::STATEMENT_MODE
        .get()
        .copied()
        .unwrap_or(sync_store::StatementMode::CachedPerConnection);
    let service = sync_store::Store::with_statement_mode(pool, mode).service();
    // Untimed: every connection opened and every statement prepared.
    let warm: Vec<_> = (0..workers)
        .map(|w| {
            let service = service.clone();
            tokio::spawn(async move {
                let delta = ProgressDelta {
                    processed: 1,
                    ..ProgressDelta::default()
                };
                service
                    .report_progress(org, &format!("p10-{w}"), &delta)
                    .await
                    .expect("report_progress");
            })
        })
        .collect();
    for w in warm {
        w.await.expect("warm-up");
    }
    let ticks = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + run;
    let tasks: Vec<_> = (0..workers)
        .map(|w| {
            let service = service.clone();
            let ticks = ticks.clone();
            tokio::spawn(async move {
                let sync_id = format!("p10-{w}");
                let mut i = 0i32;
                while Instant::now() < deadline {
                    let delta = ProgressDelta {
                        processed: 1,
                        failed: 0,
                        current_item: Some(i),
                        batch_number: Some(i / 100),
                    };
                    service
                        .report_progress(org, &sync_id, &delta)
                        .await
                        .expect("report_progress");
                    ticks.fetch_add(1, Ordering::Relaxed);
                    i = i.wrapping_add(1);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("worker");
    }
    ticks.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

/// The baseline: `pgbench -c workers -T secs` of the bare UPDATE; its tps
/// (without initial connection time).
fn pgbench_ticks(
    db: &BenchDb,
    script: &std::path::Path,
    org: uuid::Uuid,
    workers: usize,
    secs: u64,
) -> f64 {
    let mut cmd = Command::new(pgbench());
    cmd.args(["-n", "-M", "prepared", "-c", &workers.to_string()])
        .args(["-j", &workers.min(2).to_string(), "-T", &secs.to_string()])
        .arg("-D")
        .arg(format!("org={org}"))
        .arg("-f")
        .arg(script)
        .env_remove("PGSERVICE");
    match db.config.get_hosts().first() {
        Some(Host::Tcp(h)) => cmd.args(["-h", h]),
        Some(Host::Unix(p)) => cmd.arg("-h").arg(p),
        None => &mut cmd,
    };
    if let Some(port) = db.config.get_ports().first() {
        cmd.args(["-p", &port.to_string()]);
    }
    if let Some(user) = db.config.get_user() {
        cmd.args(["-U", user]);
    }
    if let Some(pw) = db.config.get_password() {
        cmd.env("PGPASSWORD", String::from_utf8_lossy(pw).as_ref());
    }
    cmd.arg(db.config.get_dbname().unwrap_or("postgres"));
    let out = cmd.output().expect("run pgbench");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "pgbench failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text.lines()
        .find(|l| l.starts_with("tps = "))
        .and_then(|l| l["tps = ".len()..].split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no tps in pgbench's output: {text}"))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

pub(crate) async fn run(db: &BenchDb, reps: usize, secs: u64) -> Vec<Row> {
    let c = db.connect().await;
    let org = create_tenants(&c, "p10", 1).await[0].org;
    let max = WORKERS.iter().copied().max().unwrap_or(1);
    let store = crate::data::store(db);
    for w in 0..max {
        store
            .service()
            .start_sync(
                org,
                &StartSync::new(format!("p10-{w}"), SyncEntityType::Product),
            )
            .await
            .expect("start_sync");
    }
    let fillfactor: Option<String> = c
        .query_one(
            "SELECT (SELECT option_value FROM pg_options_to_table(reloptions) \
                      WHERE option_name = 'fillfactor') \
               FROM pg_class WHERE oid = 'sync_progress'::regclass",
            &[],
        )
        .await
        .expect("fillfactor")
        .get(0);
    let with = fillfactor
        .map(|f| format!(" WITH (fillfactor = {f})"))
        .unwrap_or_default();
    exec(
        &c,
        &format!(
            "CREATE TABLE bench_p10_plain (LIKE sync_progress INCLUDING ALL){with}; \
             INSERT INTO bench_p10_plain SELECT * FROM sync_progress WHERE starts_with(sync_id, 'p10-')"
        ),
    )
    .await;
    exec(&c, "VACUUM ANALYZE bench_p10_plain, sync_progress").await;
    let script = std::env::temp_dir().join(format!("sync-bench-p10-{}.sql", uuid::Uuid::new_v4()));
    std::fs::write(
        &script,
        "UPDATE bench_p10_plain SET processed_count = processed_count + 1, \
         failed_count = failed_count + 0, current_item = :client_id, batch_number = 1 \
         WHERE org_id = :org AND sync_id = 'p10-' || :client_id::text;\n",
    )
    .expect("write the pgbench script");
    let run = Duration::from_secs(secs);
    let mut rows = Vec::new();
    for workers in WORKERS {
        let (mut lib, mut base) = (Vec::new(), Vec::new());
        for round in 0..reps {
            let store_first = round % 2 == 0;
            if store_first {
                lib.push(store_ticks(db, org, workers, run).await);
            }
            let (script, db_ref) = (script.clone(), db);
            base.push(tokio::task::block_in_place(|| {
                pgbench_ticks(db_ref, &script, org, workers, secs)
            }));
            if !store_first {
                lib.push(store_ticks(db, org, workers, run).await);
            }
        }
        let (lib, base) = (median(lib), median(base));
        rows.push(Row {
            id: match workers {
                8 => "P10/8",
                32 => "P10/32",
                _ => "P10/64",
            },
            what: format!(
                "{workers} workers ticking their own sync for {secs} s: report_progress (service \
                 scope, triggers) on a pool of {workers} vs pgbench -c {workers} bare UPDATE on a \
                 trigger-free twin (ms per tick of the whole system; {lib:.0} vs {base:.0} ticks/s)"
            ),
            library_ms: 1000.0 / lib,
            baseline_ms: 1000.0 / base,
            target: Target {
                // ≥ 0.7× pgbench's ticks/s (1 / 0.7 = 1.4286, rounded down).
                max_ratio: 1.428,
                max_library_ms: None,
            },
        });
    }
    let _ = std::fs::remove_file(&script);
    exec(&c, "DROP TABLE bench_p10_plain").await;
    rows
}
