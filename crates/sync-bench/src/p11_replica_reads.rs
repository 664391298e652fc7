//! P11: activity listings per second, primary only vs primary + replica, under
//! the same write load. A throwaway primary and a real streaming standby of it
//! (`TempCluster::start_standby`: `pg_basebackup -R`) on this machine; `rows`
//! activity rows over 10 orgs; 4 writer tasks tick their own syncs on the
//! primary without pause during both sides; 8 reader tasks list the newest 50
//! rows of an org (service scope) for a fixed time through a store without a
//! replica (baseline) and through the same store given the replica (library;
//! default read-your-writes consistency — the readers write nothing, so no
//! replay wait). Reported as ms per listing of the whole system (1000 /
//! listings per second). No target: on one 2-core machine both servers, the
//! writers and the readers share the cores, so the replica can only move work
//! around, not add capacity (docs/scaling.md).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sync_store::{ActivityFilter, ProgressDelta, ReplicaOptions, StartSync, Store, SyncEntityType};
use sync_testdb::tempcluster::TempCluster;
use uuid::Uuid;

use crate::measure::{Row, Target};

const READERS: usize = 8;
const WRITERS: usize = 4;
const ORGS: usize = 10;

fn pool(config: &tokio_postgres::Config, size: usize) -> deadpool_postgres::Pool {
    let tls = sync_connect::TlsOptions::default();
    sync_connect::pool(config, &tls, size).expect("pool")
}

fn mode() -> sync_store::StatementMode {
    crate::STATEMENT_MODE
        .get()
        .copied()
        .unwrap_or(sync_store::StatementMode::CachedPerConnection)
}

/// Listings per second by `READERS` tasks for `run`.
async fn listings(store: &Store, orgs: &[Uuid], run: Duration) -> f64 {
    let count = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + run;
    let tasks: Vec<_> = (0..READERS)
        .map(|r| {
            let svc = store.session().service();
            let count = count.clone();
            let orgs = orgs.to_vec();
            tokio::spawn(async move {
                let mut i = r;
                while Instant::now() < deadline {
                    let page = svc
                        .list_activity(orgs[i % orgs.len()], &ActivityFilter::default(), None, 50)
                        .await
                        .expect("list_activity");
                    assert!(!page.entries.is_empty());
                    count.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("reader");
    }
    count.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
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

pub(crate) async fn run(reps: usize, rows: u64, secs: u64) -> Row {
    let primary = tokio::task::spawn_blocking(|| TempCluster::start(&[]))
        .await
        .expect("join")
        .expect("throwaway primary");
    let c = sync_connect::connect(&primary.config(), &sync_connect::TlsOptions::default())
        .await
        .expect("connect to the throwaway primary");
    {
        let mut c = sync_connect::connect(&primary.config(), &sync_connect::TlsOptions::default())
            .await
            .expect("connect");
        sync_migrations::apply(&mut c, &sync_migrations::MigrateOptions::default())
            .await
            .expect("apply migrations");
    }
    let tenants = crate::data::create_tenants(&c, "p11", ORGS as i32).await;
    let orgs: Vec<Uuid> = tenants.iter().map(|t| t.org).collect();
    crate::data::exec(
        &c,
        &format!(
            "INSERT INTO sync_activity_log (org_id, sync_id, action, status, record_count, created_at) \
             SELECT o.id, 'p11-' || (i % 100), 'sync_progress', 'in_progress', 1, \
                    now() - make_interval(secs => i) \
               FROM generate_series(1, {rows}) i \
               JOIN LATERAL (SELECT id FROM organization WHERE starts_with(name, 'p11 ') \
                             ORDER BY id OFFSET (i % {ORGS}) LIMIT 1) o ON true; \
             ANALYZE"
        ),
    )
    .await;
    let (primary, standby) = tokio::task::spawn_blocking(move || {
        let s = primary.start_standby();
        (primary, s)
    })
    .await
    .expect("join");
    let standby = standby.expect("standby");
    standby.wait_streaming().await.expect("streaming");

    // The write load, the same during both sides.
    let writer_store = Store::with_statement_mode(pool(&primary.config(), WRITERS), mode());
    for w in 0..WRITERS {
        writer_store
            .service()
            .start_sync(
                orgs[w % ORGS],
                &StartSync::new(format!("p11-w{w}"), SyncEntityType::Product),
            )
            .await
            .expect("start_sync");
    }
    let stop = Arc::new(AtomicBool::new(false));
    let ticks = Arc::new(AtomicU64::new(0));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let svc = writer_store.service();
            let (stop, ticks, org) = (stop.clone(), ticks.clone(), orgs[w % ORGS]);
            tokio::spawn(async move {
                let sync_id = format!("p11-w{w}");
                let delta = ProgressDelta {
                    processed: 1,
                    ..ProgressDelta::default()
                };
                while !stop.load(Ordering::Relaxed) {
                    svc.report_progress(org, &sync_id, &delta)
                        .await
                        .expect("tick");
                    ticks.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();

    let primary_only = Store::with_statement_mode(pool(&primary.config(), READERS), mode());
    let with_replica = Store::with_statement_mode(pool(&primary.config(), READERS), mode())
        .with_replica(pool(&standby.config(), READERS), ReplicaOptions::default());
    let run = Duration::from_secs(secs);
    // Untimed warm-up of both stores (connections, prepared statements).
    listings(&primary_only, &orgs, Duration::from_millis(300)).await;
    listings(&with_replica, &orgs, Duration::from_millis(300)).await;
    let (mut lib, mut base, mut lib_w, mut base_w) = (vec![], vec![], vec![], vec![]);
    for round in 0..reps {
        for replica_side in if round % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        } {
            let t0 = ticks.load(Ordering::Relaxed);
            let start = Instant::now();
            if replica_side {
                lib.push(listings(&with_replica, &orgs, run).await);
            } else {
                base.push(listings(&primary_only, &orgs, run).await);
            }
            let w = (ticks.load(Ordering::Relaxed) - t0) as f64 / start.elapsed().as_secs_f64();
            if replica_side {
                lib_w.push(w)
            } else {
                base_w.push(w)
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.expect("writer");
    }
    let stats = with_replica.replica_stats().expect("replica stats");
    drop(standby);
    drop(primary);
    let (lib, base) = (median(lib), median(base));
    Row {
        id: "P11",
        what: format!(
            "newest 50 activity rows of an org ({rows} rows, {ORGS} orgs), {READERS} readers for \
             {secs} s under {WRITERS} ticking writers: primary + streaming replica vs primary only \
             (ms per listing of the whole system; {lib:.0} vs {base:.0} listings/s; writers \
             {:.0} vs {:.0} ticks/s; replica answered {} reads, fell back {}; no target on one \
             2-core host)",
            median(lib_w),
            median(base_w),
            stats.replica_reads,
            stats.fallback_lag
                + stats.fallback_unavailable
                + stats.fallback_conflict
                + stats.fallback_timeout
                + stats.fallback_error,
        ),
        library_ms: 1000.0 / lib,
        baseline_ms: 1000.0 / base,
        target: Target {
            max_ratio: f64::INFINITY,
            max_library_ms: None,
        },
    }
}
