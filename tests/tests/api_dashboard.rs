//! The dashboard's JSON endpoints (active, recent, metrics with its series,
//! activity filtered by sync and action), its page and headers, mounting under
//! a prefix, and development tokens — over HTTP against a real service on a
//! login role that is neither superuser nor owner (RLS decides).

use serde_json::{json, Value};
use sync_api::auth::{AuthConfig, KeySource, Verifier};
use sync_store::{NewActivity, ProgressDelta, StartSync, SyncAction, SyncEntityType, SyncStatus};
use uuid::Uuid;

mod api_common;
use api_common::{claims, sign_hs256, Service, AUDIENCE, ISSUER};

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef-dashboard";

async fn service() -> Service {
    Service::start(KeySource::Hs256Secret(SECRET.to_vec())).await
}

fn token(user: Uuid) -> String {
    sign_hs256(SECRET, &claims(user), None)
}

async fn start(service: &Service, org: Uuid, sync_id: &str, total: i32) {
    let mut start = StartSync::new(sync_id, SyncEntityType::Product);
    start.total_items = Some(total);
    service
        .fixture
        .store
        .service()
        .start_sync(org, &start)
        .await
        .unwrap();
}

fn ids(body: &Value) -> Vec<String> {
    body["syncs"]
        .as_array()
        .unwrap_or_else(|| panic!("no syncs: {body}"))
        .iter()
        .map(|s| s["sync_id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn active_and_recent_show_only_the_users_org() {
    let s = service().await;
    let (org_a, org_b) = (s.fixture.org_a, s.fixture.org_b);
    let svc = s.fixture.store.service();
    start(&s, org_a, "a-running", 10).await;
    start(&s, org_a, "a-done", 4).await;
    start(&s, org_a, "a-failed", 4).await;
    start(&s, org_b, "b-running", 10).await;
    let delta = ProgressDelta {
        processed: 3,
        failed: 1,
        ..ProgressDelta::default()
    };
    svc.report_progress(org_a, "a-done", &delta).await.unwrap();
    svc.fail_sync(org_a, "a-failed", "<img src=x onerror=alert(1)>")
        .await
        .unwrap();
    let (ta, tb) = (token(s.fixture.user_a), token(s.fixture.user_b));

    let (status, _, body) = s.get(Some(&ta), "/api/v1/sync/active").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(ids(&body), ["a-running"]);
    assert_eq!(body["syncs"][0]["status"], "in_progress");
    assert_eq!(body["syncs"][0]["total_items"], 10);

    let (status, _, body) = s.get(Some(&ta), "/api/v1/sync/recent").await;
    assert_eq!(status, 200, "{body}");
    let mut got = ids(&body);
    got.sort();
    assert_eq!(got, ["a-done", "a-failed", "a-running"]);
    let by_id = |id: &str| {
        body["syncs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["sync_id"] == id)
            .unwrap()
            .clone()
    };
    assert_eq!(by_id("a-done")["status"], "completed_with_errors");
    assert_eq!(by_id("a-failed")["status"], "failed");
    assert_eq!(
        by_id("a-failed")["metadata"]["_sync_outcome"]["error_message"],
        "<img src=x onerror=alert(1)>"
    );

    let (_, _, body) = s.get(Some(&tb), "/api/v1/sync/active").await;
    assert_eq!(ids(&body), ["b-running"]);
    let (_, _, body) = s.get(Some(&tb), "/api/v1/sync/recent?limit=1000").await;
    assert_eq!(ids(&body), ["b-running"]);

    let (status, _, body) = s.get(Some(&ta), "/api/v1/sync/recent?limit=1").await;
    assert_eq!((status, ids(&body).len()), (200, 1));
    for bad in ["0", "1001", "-1", "x", ""] {
        let (status, _, body) = s
            .get(Some(&ta), &format!("/api/v1/sync/recent?limit={bad}"))
            .await;
        assert_eq!(
            (status, body["code"].as_str()),
            (400, Some("invalid_input"))
        );
    }
    for path in [
        "/api/v1/sync/active",
        "/api/v1/sync/recent",
        "/api/v1/sync/metrics",
    ] {
        let (status, _, _) = s.get(None, path).await;
        assert_eq!(status, 401, "{path}");
    }
    // A user without an org: 403 everywhere, never an empty success.
    let stranger = token(Uuid::new_v4());
    for path in [
        "/api/v1/sync/active",
        "/api/v1/sync/recent",
        "/api/v1/sync/metrics",
    ] {
        let (status, _, body) = s.get(Some(&stranger), path).await;
        assert_eq!(status, 403, "{path}: {body}");
    }
}

#[tokio::test]
async fn metrics_count_the_window_and_the_series_adds_up() {
    let s = service().await;
    let (org_a, org_b) = (s.fixture.org_a, s.fixture.org_b);
    let svc = s.fixture.store.service();
    start(&s, org_a, "m1", 5).await;
    start(&s, org_a, "m2", 5).await;
    start(&s, org_a, "m3", 7).await;
    start(&s, org_b, "other", 100).await;
    let five = ProgressDelta {
        processed: 5,
        ..ProgressDelta::default()
    };
    svc.report_progress(org_a, "m1", &five).await.unwrap(); // completes: 5 items
    let with_errors = ProgressDelta {
        processed: 3,
        failed: 2,
        ..ProgressDelta::default()
    };
    svc.report_progress(org_a, "m2", &with_errors)
        .await
        .unwrap(); // completed_with_errors: 3 items
    svc.fail_sync(org_a, "m3", "boom").await.unwrap(); // failed: 0 items
    let b_tick = ProgressDelta {
        processed: 100,
        ..ProgressDelta::default()
    };
    svc.report_progress(org_b, "other", &b_tick).await.unwrap();
    // An entry from two days ago: outside the default 24 h window.
    let mut old = NewActivity::new(SyncAction::SyncFail, SyncStatus::Failed);
    old.created_at = Some(time::OffsetDateTime::now_utc() - time::Duration::days(2));
    svc.append_activity(org_a, &old).await.unwrap();

    let ta = token(s.fixture.user_a);
    let (status, _, body) = s.get(Some(&ta), "/api/v1/sync/metrics").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["window_seconds"], 86400);
    let m = &body["metrics"];
    assert_eq!(m["active_syncs"], 0, "{m}");
    // 3 sync_start + 3 ends in the window (the old row is outside).
    assert_eq!(m["activity_total"], 6, "{m}");
    assert_eq!(m["outcomes"]["ended"], 3);
    assert_eq!(m["outcomes"]["completed"], 1);
    assert_eq!(m["outcomes"]["completed_with_errors"], 1);
    assert_eq!(m["outcomes"]["failed"], 1);
    let series = &body["series"];
    assert_eq!(series["bucket_seconds"], 3600);
    let points = series["points"].as_array().unwrap();
    assert!((24..=26).contains(&points.len()), "{}", points.len());
    let sum = |k: &str| points.iter().map(|p| p[k].as_i64().unwrap()).sum::<i64>();
    assert_eq!(sum("entries"), 6);
    assert_eq!(sum("errors"), 2, "failed + completed_with_errors");
    assert_eq!(sum("items"), 8, "5 + 3 + 0, org B's 100 not counted");
    let starts: Vec<&str> = points
        .iter()
        .map(|p| p["start"].as_str().unwrap())
        .collect();
    assert!(starts.windows(2).all(|w| w[0] < w[1]), "{starts:?}");

    // A three-day window sees the old row; 60 s buckets over 1 h.
    let (_, _, body) = s
        .get(Some(&ta), "/api/v1/sync/metrics?window_seconds=259200")
        .await;
    assert_eq!(body["metrics"]["activity_total"], 7);
    let (status, _, body) = s
        .get(
            Some(&ta),
            "/api/v1/sync/metrics?window_seconds=3600&bucket_seconds=60",
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let n = body["series"]["points"].as_array().unwrap().len();
    assert!((60..=62).contains(&n), "{n}");

    // Org B sees its own figures only.
    let tb = token(s.fixture.user_b);
    let (_, _, body) = s.get(Some(&tb), "/api/v1/sync/metrics").await;
    let points = body["series"]["points"].as_array().unwrap();
    let items: i64 = points.iter().map(|p| p["items"].as_i64().unwrap()).sum();
    assert_eq!(items, 100);
    assert_eq!(body["metrics"]["outcomes"]["ended"], 1);

    for bad in [
        "window_seconds=59",
        "window_seconds=2678401",
        "window_seconds=x",
        "bucket_seconds=59",
        "window_seconds=2678400&bucket_seconds=60",
        "window_seconds=86400&bucket_seconds=-5",
    ] {
        let (status, _, body) = s
            .get(Some(&ta), &format!("/api/v1/sync/metrics?{bad}"))
            .await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert_eq!(body["code"], "invalid_input");
    }
}

#[tokio::test]
async fn activity_filters_by_sync_and_action_with_the_cursor() {
    let s = service().await;
    let (org_a, org_b) = (s.fixture.org_a, s.fixture.org_b);
    let svc = s.fixture.store.service();
    start(&s, org_a, "act", 100).await;
    start(&s, org_a, "noise", 100).await;
    start(&s, org_b, "act", 100).await;
    for i in 0..7 {
        let mut e = NewActivity::new(SyncAction::RecordCreate, SyncStatus::Completed);
        e.sync_id = Some("act".into());
        e.entity_type = Some(if i % 2 == 0 {
            SyncEntityType::Order
        } else {
            SyncEntityType::Customer
        });
        e.record_count = i;
        svc.append_activity(org_a, &e).await.unwrap();
        let mut n = e.clone();
        n.sync_id = Some("noise".into());
        svc.append_activity(org_a, &n).await.unwrap();
        let mut b = e.clone();
        b.record_count = 1000 + i;
        svc.append_activity(org_b, &b).await.unwrap();
    }
    let ta = token(s.fixture.user_a);
    // Every entry of sync "act", 3 per page, following the cursor.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = "/api/v1/sync/activity?sync_id=act&limit=3".to_owned();
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let (status, _, body) = s.get(Some(&ta), &path).await;
        assert_eq!(status, 200, "{body}");
        for e in body["entries"].as_array().unwrap() {
            assert_eq!(e["sync_id"], "act");
            assert_eq!(e["org_id"], json!(org_a));
            seen.push(e["id"].as_str().unwrap().to_owned());
        }
        match body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 8, "7 record rows + sync_start");
    let mut dedup = seen.clone();
    dedup.sort();
    dedup.dedup();
    assert_eq!(dedup.len(), 8);

    let (_, _, body) = s
        .get(
            Some(&ta),
            "/api/v1/sync/activity?sync_id=act&action=record_create&entity=order",
        )
        .await;
    let entries = body["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 4, "{body}");
    assert!(entries
        .iter()
        .all(|e| e["action"] == "record_create" && e["entity_type"] == "order"));
    let (_, _, body) = s
        .get(
            Some(&ta),
            "/api/v1/sync/activity?sync_id=act&action=sync_start",
        )
        .await;
    assert_eq!(body["entries"].as_array().unwrap().len(), 1);
    for bad in [
        "action=explode",
        "entity=robot",
        "sync_id=",
        "cursor=nope",
        "limit=0",
    ] {
        let (status, _, body) = s
            .get(Some(&ta), &format!("/api/v1/sync/activity?{bad}"))
            .await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
}

#[tokio::test]
async fn the_page_is_served_with_a_strict_csp_and_merges_into_another_router() {
    let s = service().await;
    let http = &s.http;
    for (path, ty) in [
        ("/", "text/html"),
        ("/dashboard/app.js", "text/javascript"),
        ("/dashboard/app.css", "text/css"),
    ] {
        let resp = http.get(format!("{}{path}", s.base)).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 200, "{path}");
        let h = resp.headers();
        assert!(
            h["content-type"].to_str().unwrap().starts_with(ty),
            "{path}"
        );
        let csp = h["content-security-policy"].to_str().unwrap();
        assert_eq!(csp, sync_api::dashboard::CSP);
        assert!(!csp.contains("unsafe"), "{csp}");
        assert!(csp.contains("script-src 'self'") && csp.contains("default-src 'none'"));
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert_eq!(h["x-frame-options"], "DENY");
        let body = resp.text().await.unwrap();
        if path == "/" {
            // No inline script, style or handler: everything comes from the two files.
            let lower = body.to_lowercase();
            assert!(
                !lower.contains("<script>") && !lower.contains("style="),
                "inline"
            );
            assert!(!lower.contains(" onload=") && !lower.contains(" onclick="));
            assert!(lower.contains("<table") && lower.contains("dashboard/app.js"));
        }
        if path == "/dashboard/app.js" {
            assert!(!body.contains("innerHTML") && !body.contains("eval("));
        }
    }

    // Merged into another service's router, beside its own routes.
    let fixture = &s.fixture;
    let (_, login) = fixture.db.login_role("merged").await;
    let tls = sync_connect::TlsOptions::resolve(None, None).unwrap();
    let pool =
        sync_connect::pool_with_wait(&login, &tls, 2, std::time::Duration::from_secs(5)).unwrap();
    let verifier = Verifier::new(AuthConfig {
        keys: KeySource::Hs256Secret(SECRET.to_vec()),
        issuer: ISSUER.into(),
        audience: AUDIENCE.into(),
        jwks_min_refresh: sync_api::auth::JWKS_MIN_REFRESH,
    })
    .await
    .unwrap();
    let state = sync_api::AppState::new(
        sync_store::Store::new(pool),
        std::sync::Arc::new(verifier),
        sync_api::Limits::default(),
    );
    let app = axum::Router::new()
        .route("/internal/ping", axum::routing::get(|| async { "pong" }))
        .merge(sync_api::dashboard::router(state));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    for path in ["/", "/dashboard/app.js", "/internal/ping"] {
        let resp = http
            .get(format!("http://{addr}{path}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200, "{path}");
    }
    start(&s, fixture.org_a, "nested-sync", 3).await;
    let resp = http
        .get(format!("http://{addr}/api/v1/sync/active"))
        .header("authorization", format!("Bearer {}", token(fixture.user_a)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(ids(&body), ["nested-sync"]);
}

#[tokio::test]
async fn dev_tokens_pass_the_services_verifier() {
    let user = Uuid::new_v4();
    // Asymmetric: the service trusts the JWKS the key file prints.
    let pair = rcgen::KeyPair::generate().unwrap();
    let key =
        sync_api::dev_token::DevKey::from_file_bytes(pair.serialize_pem().as_bytes(), "k").unwrap();
    let dir = std::env::temp_dir().join(format!("dash-jwks-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let jwks = dir.join("jwks.json");
    std::fs::write(&jwks, key.public_jwks().unwrap()).unwrap();
    let verifier = Verifier::new(AuthConfig {
        keys: KeySource::JwksFile(jwks.clone()),
        issuer: ISSUER.into(),
        audience: AUDIENCE.into(),
        jwks_min_refresh: sync_api::auth::JWKS_MIN_REFRESH,
    })
    .await
    .unwrap();
    let t = key.sign(user, ISSUER, AUDIENCE, 600).unwrap();
    assert_eq!(verifier.verify(&t).await.unwrap().user, user);
    // Wrong issuer or another key: refused.
    let t = key.sign(user, "someone-else", AUDIENCE, 600).unwrap();
    assert!(verifier.verify(&t).await.is_err());
    let other = rcgen::KeyPair::generate().unwrap();
    let other = sync_api::dev_token::DevKey::from_file_bytes(other.serialize_pem().as_bytes(), "k")
        .unwrap();
    let t = other.sign(user, ISSUER, AUDIENCE, 600).unwrap();
    assert!(verifier.verify(&t).await.is_err());
    assert!(key.sign(user, ISSUER, AUDIENCE, 0).is_err());
    assert!(key
        .sign(
            user,
            ISSUER,
            AUDIENCE,
            sync_api::dev_token::MAX_TTL_SECS + 1
        )
        .is_err());

    // HS256: the same secret file on both sides; no JWKS.
    let hs =
        sync_api::dev_token::DevKey::from_file_bytes(b"0123456789abcdef0123456789abcdef\n", "k")
            .unwrap();
    assert!(hs.public_jwks().is_err());
    let verifier = Verifier::new(AuthConfig {
        keys: KeySource::Hs256Secret(b"0123456789abcdef0123456789abcdef".to_vec()),
        issuer: ISSUER.into(),
        audience: AUDIENCE.into(),
        jwks_min_refresh: sync_api::auth::JWKS_MIN_REFRESH,
    })
    .await
    .unwrap();
    let t = hs.sign(user, ISSUER, AUDIENCE, 60).unwrap();
    assert_eq!(verifier.verify(&t).await.unwrap().user, user);
    assert!(sync_api::dev_token::DevKey::from_file_bytes(b"short", "k").is_err());
    assert!(sync_api::dev_token::DevKey::from_file_bytes(
        b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        "k"
    )
    .is_err());
    std::fs::remove_dir_all(&dir).unwrap();
}
