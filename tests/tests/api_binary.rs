//! The `sync-api` binary as an operator runs it: configured by environment
//! variables only, JSON logs with one line per request, Prometheus metrics on
//! the separate listener only, and a clean exit on SIGTERM.

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use uuid::Uuid;

mod api_common;
use api_common::{claims, free_port, sign_hs256, sync_api_bin, Fixture};

#[tokio::test]
async fn the_binary_runs_from_env_logs_json_serves_metrics_apart_and_stops_on_sigterm() {
    let bin = tokio::task::spawn_blocking(sync_api_bin).await.unwrap();
    let f = Fixture::new().await;
    let (_, login) = f.db.login_role("bin").await;
    let dir = std::env::temp_dir().join(format!("sync-api-bin-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let secret = b"0123456789abcdef0123456789abcdef";
    std::fs::write(dir.join("secret"), [&secret[..], b"\n"].concat()).unwrap();
    let (port, metrics_port) = (free_port(), free_port());
    let child = tokio::process::Command::new(bin)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("DATABASE_URL", sync_tests::config_url(&login))
        .env("SYNC_API_BIND", format!("127.0.0.1:{port}"))
        .env("SYNC_API_METRICS_BIND", format!("127.0.0.1:{metrics_port}"))
        .env("SYNC_API_JWT_HS256_SECRET_FILE", dir.join("secret"))
        .env("SYNC_API_JWT_ISSUER", api_common::ISSUER)
        .env("SYNC_API_LOG_FORMAT", "json")
        .env("SYNC_API_MONITORING_DATABASE_URL", f.db.url())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let mut up = false;
    for _ in 0..600 {
        if let Ok(r) = http.get(format!("{base}/healthz")).send().await {
            up = r.status() == 200;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(up, "sync-api did not come up");

    let token = sign_hs256(secret, &claims(f.user_a), None);
    let mut start = sync_store::StartSync::new("bin-live", sync_store::SyncEntityType::Product);
    start.total_items = Some(10);
    f.store.service().start_sync(f.org_a, &start).await.unwrap();
    let mut live = http
        .get(format!("{base}/api/v1/sync/progress/bin-live/events"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(live.status().as_u16(), 200);
    let resp = http
        .get(format!("{base}/api/v1/sync/progress/none-such"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 404);
    let public_metrics = http.get(format!("{base}/metrics")).send().await.unwrap();
    assert_eq!(
        public_metrics.status().as_u16(),
        404,
        "no /metrics on the public listener"
    );
    let scrape = http
        .get(format!("http://127.0.0.1:{metrics_port}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        scrape.contains("http_requests_total")
            && scrape.contains(r#"route="/api/v1/sync/progress/{sync_id}""#)
            && scrape.contains(r#"status="404""#)
            && scrape.contains("db_pool_size")
            && scrape.contains(r#"sync_active_syncs{org="all"} 1"#)
            && scrape.contains("sse_subscribers 1"),
        "the MONITORING gauges, aggregated, and the live subscribers: {scrape}"
    );
    assert!(
        !scrape.contains(&f.org_a.to_string()),
        "no per-org series unless asked"
    );

    let pid = child.id().unwrap();
    let killed = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    // Shutdown closes the live stream with a final event, then the stream ends.
    let mut text = String::new();
    tokio::time::timeout(Duration::from_secs(30), async {
        while let Ok(Some(chunk)) = live.chunk().await {
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await
    .expect("the stream ends on SIGTERM");
    assert_eq!(text.matches("event: progress").count(), 2, "{text}");
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("sync-api exits after SIGTERM")
        .unwrap();
    let logs = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "exit {:?}; logs:\n{logs}", out.status);
    let lines: Vec<Value> = logs
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l["status"] == 404 && l.get("latency").is_some()),
        "one line per request with status and latency:\n{logs}"
    );
    assert!(!logs.contains(&token), "the token never reaches the logs");
    std::fs::remove_dir_all(dir).unwrap();
}
