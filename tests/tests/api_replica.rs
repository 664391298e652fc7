//! `sync-api --replica-url` against a real streaming replica: activity
//! listings are read there; a write's response carries `X-Sync-Consistency`,
//! and a listing that sends it back sees the write even while the replica's
//! replay is paused (read from the primary after the bounded wait); the
//! replica counters are on `/metrics`; a malformed or repeated token is a 400.

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use sync_store::{StartSync, Store, SyncEntityType};
use sync_tests::replica_pair::ReplicaPair;
use uuid::Uuid;

mod api_common;
use api_common::{claims, free_port, sign_hs256, sync_api_bin};

fn completions(body: &Value, sync_id: &str) -> usize {
    body["entries"]
        .as_array()
        .unwrap_or_else(|| panic!("no entries: {body}"))
        .iter()
        .filter(|e| e["sync_id"] == sync_id && e["action"] == "sync_complete")
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_read_the_replica_and_a_token_brings_the_callers_write() {
    let bin = tokio::task::spawn_blocking(sync_api_bin).await.unwrap();
    let pair = ReplicaPair::start().await;
    let (org, user) = (Uuid::new_v4(), Uuid::new_v4());
    let admin = pair.primary_client().await;
    admin
        .execute(
            "INSERT INTO organization (id, name) VALUES ($1, 'org')",
            &[&org],
        )
        .await
        .unwrap();
    admin
        .execute(
            "INSERT INTO auth.users_extended (id, org_id, email) VALUES ($1, $2, 'u@example.com')",
            &[&user, &org],
        )
        .await
        .unwrap();
    let mut start = StartSync::new("api-replica", SyncEntityType::Product);
    start.total_items = Some(5);
    Store::new(sync_tests::pool_for(&pair.primary_config()))
        .service()
        .start_sync(org, &start)
        .await
        .unwrap();
    pair.wait_caught_up().await;

    let dir = std::env::temp_dir().join(format!("sync-api-replica-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let secret = b"0123456789abcdef0123456789abcdef";
    std::fs::write(dir.join("secret"), secret).unwrap();
    let (port, metrics_port) = (free_port(), free_port());
    let app = |c: &tokio_postgres::Config| sync_tests::config_url(&ReplicaPair::as_app(c));
    let _child = tokio::process::Command::new(bin)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("DATABASE_URL", app(&pair.primary_config()))
        .env("SYNC_API_BIND", format!("127.0.0.1:{port}"))
        .env("SYNC_API_METRICS_BIND", format!("127.0.0.1:{metrics_port}"))
        .env("SYNC_API_JWT_HS256_SECRET_FILE", dir.join("secret"))
        .env("SYNC_API_JWT_ISSUER", api_common::ISSUER)
        .args(["--replica-url", &app(&pair.standby_config())])
        .args(["--replica-max-wait-ms", "100"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
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
    let token = sign_hs256(secret, &claims(user), None);
    let list = |consistency: Option<&str>| {
        let mut req = http
            .get(format!("{base}/api/v1/sync/activity?limit=100"))
            .bearer_auth(&token);
        if let Some(c) = consistency {
            req = req.header("x-sync-consistency", c);
        }
        async move {
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            (status, resp.json::<Value>().await.unwrap())
        }
    };

    // Replay paused: the completion below reaches the primary only.
    let standby = pair.standby_client().await;
    standby
        .execute("SELECT pg_wal_replay_pause()", &[])
        .await
        .unwrap();
    let resp = http
        .post(format!("{base}/api/v1/sync/progress"))
        .bearer_auth(&token)
        .json(&serde_json::json!({"sync_id": "api-replica", "processed": 5}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let header = resp
        .headers()
        .get("x-sync-consistency")
        .expect("a write's response carries the token")
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        header.parse::<sync_store::ConsistencyToken>().is_ok(),
        "{header}"
    );

    // Without the token: the replica answers, without the completion.
    let (status, body) = list(None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(completions(&body, "api-replica"), 0, "{body}");
    // With it: the write is there (the primary, after the bounded wait).
    let (status, body) = list(Some(&header)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(completions(&body, "api-replica"), 1, "{body}");

    // Refused tokens: typed 400s.
    for bad in ["", "x", "0/", "1/2/3", "FFFFFFFFF/0"] {
        let (status, body) = list(Some(bad)).await;
        assert_eq!(status, 400, "{bad:?}: {body}");
        assert_eq!(body["code"], "invalid_input");
    }
    let twice = http
        .get(format!("{base}/api/v1/sync/activity"))
        .bearer_auth(&token)
        .header("x-sync-consistency", header.as_str())
        .header("x-sync-consistency", header.as_str())
        .send()
        .await
        .unwrap();
    assert_eq!(twice.status().as_u16(), 400);

    // Replay resumes: with the token, the replica answers with the write.
    standby
        .execute("SELECT pg_wal_replay_resume()", &[])
        .await
        .unwrap();
    pair.wait_caught_up().await;
    let (_, body) = list(Some(&header)).await;
    assert_eq!(completions(&body, "api-replica"), 1, "{body}");

    let scrape = http
        .get(format!("http://127.0.0.1:{metrics_port}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let value = |line_start: &str| -> f64 {
        scrape
            .lines()
            .find(|l| l.starts_with(line_start))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {line_start} in {scrape}"))
    };
    // A listing reads newest-first time windows until its page is full (one
    // routed read per window), so these count windows, not requests.
    assert!(value("db_replica_reads_total ") >= 2.0, "{scrape}");
    assert!(
        value(r#"db_replica_fallbacks_total{reason="lag"}"#) >= 1.0,
        "{scrape}"
    );
    assert!(scrape.contains("db_replica_pool_size"), "{scrape}");
}
