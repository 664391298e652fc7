//! A worker that counts one item per millisecond through a `ProgressReporter`,
//! for the crash test (`tests/tests/reporter_crash.rs`): it prints
//! `<item> <unix µs>` **before** counting each item (so the printed items are
//! always at least what was counted), and attaches `{"done": n}` as the
//! checkpoint every 50 items. Env: `DATABASE_URL`, `ORG`, `SYNC_ID`,
//! `INTERVAL_MS`. Runs until killed.

use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sync_store::{ReporterConfig, Store};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let env = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("{k} not set"));
    let config = sync_connect::resolve_config(Some(&env("DATABASE_URL"))).unwrap();
    let pool = sync_tests::pool_for(&config);
    let org: uuid::Uuid = env("ORG").parse().unwrap();
    let interval = Duration::from_millis(env("INTERVAL_MS").parse().unwrap());
    let store = Store::new(pool);
    let reporter = store
        .service()
        .reporter(
            org,
            &env("SYNC_ID"),
            ReporterConfig::default().with_interval(interval),
        )
        .await
        .unwrap();
    let mut out = std::io::stdout().lock();
    let mut n: u64 = 0;
    loop {
        n += 1;
        let micros = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_micros();
        writeln!(out, "{n} {micros}").unwrap();
        out.flush().unwrap();
        reporter.inc(1, 0);
        if n.is_multiple_of(50) {
            reporter
                .checkpoint(serde_json::json!({ "done": n }))
                .unwrap();
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}
