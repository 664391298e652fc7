//! P9: live-progress fan-out. sync-api in this process (default feed: poll
//! every 100 ms, LISTEN for completions); `subscribers` SSE streams spread over
//! 50 syncs of 5 orgs, each sync ticking 5×/s (`report_progress`, service
//! scope). Library: p99 delay from a tick being sent to its event arriving at a
//! subscriber (events coalesced away are not counted). Baseline: p99 delay of
//! a raw `NOTIFY` reaching a raw `LISTEN` session, probed 5×/s during the same
//! phase (what a NOTIFY-per-tick design could do at best, and what it would
//! cost the writers, which this design does not pay).
//!
//! Two phases, a tenth of the subscribers then all: the row also prints the
//! feed's database statements per tick in each, which must not grow with the
//! number of subscribers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sync_api::sse::FeedConfig;
use sync_store::{ProgressDelta, StartSync, SyncEntityType};

use crate::data::create_tenants;
use crate::measure::{Row, Target};
use crate::p8_http_progress::{serve, sized_store, token};
use crate::BenchDb;

const SYNCS: usize = 50;
const ORGS: usize = 5;
const TICK_EVERY: Duration = Duration::from_millis(200);

/// (sync index, processed_count) → when that tick was sent.
type Sent = Arc<Mutex<HashMap<(usize, i64), Instant>>>;

struct Phase {
    subscribers: usize,
    ticks: u64,
    statements: u64,
    events: usize,
    delays: Vec<Duration>,
    probe: Vec<Duration>,
}

fn p99(mut v: Vec<Duration>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort();
    v[(v.len() * 99 / 100).min(v.len() - 1)].as_secs_f64() * 1000.0
}

pub(crate) async fn run(db: &BenchDb, subscribers: usize, seconds: u64) -> Row {
    let c = db.connect().await;
    let tenants = create_tenants(&c, "p9", ORGS as i32).await;
    let store = sized_store(db, 8);
    let mut syncs = Vec::new();
    for i in 0..SYNCS {
        let t = tenants[i % ORGS];
        let sync_id = format!("bench-p9-{i}");
        store
            .service()
            .start_sync(t.org, &StartSync::new(&sync_id, SyncEntityType::Product))
            .await
            .expect("start_sync");
        syncs.push((t, sync_id));
    }
    let feed_config = FeedConfig {
        listen: Some(sync_api::sse::ListenTarget {
            config: db.config.clone(),
            tls: db.tls.clone(),
        }),
        ..FeedConfig::default()
    };
    let (base, feed) = serve(db, feed_config).await;
    let small = (subscribers / 10).max(1);
    let mut phases = Vec::new();
    let mut counts = vec![0i64; syncs.len()];
    for (subs, secs) in [(small, (seconds / 3).max(3)), (subscribers, seconds)] {
        let before = feed.stats();
        let mut phase = phase(
            db,
            &base,
            &store,
            &syncs,
            &mut counts,
            subs,
            Duration::from_secs(secs),
        )
        .await;
        let after = feed.stats();
        phase.statements = after.statements() - before.statements();
        phases.push(phase);
    }
    // Per tick of a subscribed sync (the small phase subscribes to fewer syncs).
    let per_tick = |p: &Phase| {
        let watched = p.subscribers.min(SYNCS) as f64 / SYNCS as f64;
        p.statements as f64 / (p.ticks.max(1) as f64 * watched)
    };
    let (a, b) = (&phases[0], &phases[1]);
    Row {
        id: "P9",
        what: format!(
            "SSE fan-out, {SYNCS} syncs ticking 5×/s: p99 tick→event delay at {} subscribers \
             ({} events, {}s) vs raw NOTIFY→LISTEN p99; feed statements per tick of a watched sync: {:.3} at {} \
             subscribers, {:.3} at {}",
            b.subscribers,
            b.events,
            seconds,
            per_tick(a),
            a.subscribers,
            per_tick(b),
            b.subscribers,
        ),
        library_ms: p99(b.delays.clone()),
        baseline_ms: p99(b.probe.clone()),
        target: Target {
            max_ratio: 1000.0,
            max_library_ms: Some(200.0),
        },
    }
}

async fn phase(
    db: &BenchDb,
    base: &str,
    store: &sync_store::Store,
    syncs: &[(crate::data::Tenant, String)],
    counts: &mut [i64],
    subscribers: usize,
    length: Duration,
) -> Phase {
    let sent: Sent = Arc::new(Mutex::new(HashMap::new()));
    let delays = Arc::new(Mutex::new(Vec::new()));
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(0)
        .build()
        .expect("client");
    let mut readers = Vec::new();
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(subscribers);
    for s in 0..subscribers {
        let i = s % syncs.len();
        let (tenant, sync_id) = &syncs[i];
        let req = http
            .get(format!("{base}/api/v1/sync/progress/{sync_id}/events"))
            .header("authorization", format!("Bearer {}", token(tenant.user)));
        let (sent, delays, ready) = (sent.clone(), delays.clone(), ready_tx.clone());
        readers.push(tokio::spawn(async move {
            let mut resp = req.send().await.expect("subscribe");
            assert_eq!(resp.status().as_u16(), 200, "subscribe");
            let _ = ready.send(()).await;
            let mut buf = String::new();
            while let Ok(Some(chunk)) = resp.chunk().await {
                let now = Instant::now();
                buf.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(pos) = buf.find("\n\n") {
                    let block: String = buf.drain(..pos + 2).collect();
                    let Some(data) = block.lines().find_map(|l| l.strip_prefix("data: ")) else {
                        continue;
                    };
                    let v: serde_json::Value = serde_json::from_str(data).expect("JSON");
                    let n = v["processed_count"].as_i64().unwrap_or(-1);
                    if let Some(at) = sent.lock().expect("sent").get(&(i, n)) {
                        delays.lock().expect("delays").push(now - *at);
                    }
                }
            }
        }));
    }
    drop(ready_tx);
    for _ in 0..subscribers {
        ready_rx.recv().await.expect("a subscriber failed");
    }
    // The raw baseline: NOTIFY → LISTEN on the same server, 5×/s.
    let probe = Arc::new(Mutex::new(Vec::new()));
    let (listener, mut notes) = sync_connect::connect_listening(&db.config, &db.tls)
        .await
        .expect("probe listen");
    listener
        .batch_execute("LISTEN bench_p9_probe")
        .await
        .expect("LISTEN");
    let probe_sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::new(Mutex::new(HashMap::new()));
    let (ps, pr) = (probe_sent.clone(), probe.clone());
    let probe_reader = tokio::spawn(async move {
        while let Some(n) = notes.recv().await {
            if let Some(at) = ps.lock().expect("probe").get(n.payload()) {
                pr.lock().expect("probe").push(at.elapsed());
            }
        }
    });
    let notifier = db.connect().await;

    let service = store.service();
    let start = Instant::now();
    let mut ticks = 0u64;
    let mut next = tokio::time::Instant::now();
    let mut seq = 0u64;
    while start.elapsed() < length {
        next += TICK_EVERY;
        let writes = syncs.iter().enumerate().map(|(i, (tenant, sync_id))| {
            let n = counts[i] + 1;
            sent.lock().expect("sent").insert((i, n), Instant::now());
            let service = service.clone();
            async move {
                service
                    .report_progress(
                        tenant.org,
                        sync_id,
                        &ProgressDelta {
                            processed: 1,
                            ..ProgressDelta::default()
                        },
                    )
                    .await
                    .expect("tick");
            }
        });
        futures_util::future::join_all(writes).await;
        for c in counts.iter_mut() {
            *c += 1;
        }
        ticks += syncs.len() as u64;
        seq += 1;
        let key = seq.to_string();
        probe_sent
            .lock()
            .expect("probe")
            .insert(key.clone(), Instant::now());
        notifier
            .query("SELECT pg_notify('bench_p9_probe', $1)", &[&key])
            .await
            .expect("notify");
        tokio::time::sleep_until(next).await;
    }
    // Let the last events arrive.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for r in &readers {
        r.abort();
    }
    probe_reader.abort();
    drop(listener);
    let delays = std::mem::take(&mut *delays.lock().expect("delays"));
    let probe = std::mem::take(&mut *probe.lock().expect("probe"));
    Phase {
        subscribers,
        ticks,
        statements: 0,
        events: delays.len(),
        delays,
        probe,
    }
}
