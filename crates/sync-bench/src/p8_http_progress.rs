//! P8: `GET /api/v1/sync/progress/{syncId}` over HTTP (sync-api in this
//! process on 127.0.0.1, HS256 JWT verified on every request, tenant scope with
//! the verified claims) vs the same `TenantScope::get_sync` called in process,
//! 16 concurrent clients each; p50 of the per-request latencies.
//!
//! Also the server helper of P9.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sync_api::auth::{AuthConfig, KeySource, Verifier};
use sync_api::sse::{Feed, FeedConfig};
use sync_api::{AppState, Limits};
use sync_store::{StartSync, SyncEntityType};
use uuid::Uuid;

use crate::data::create_tenants;
use crate::measure::{Row, Target};
use crate::BenchDb;

const SECRET: &[u8] = b"sync-bench-hs256-secret-of-32-bytes-or-more";
const ISSUER: &str = "https://bench.invalid/auth/v1";
const CLIENTS: usize = 16;

/// The claims the bench's tokens carry for `user` (valid for an hour).
pub(crate) fn claims(user: Uuid) -> serde_json::Value {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    serde_json::json!({
        "sub": user.to_string(), "iss": ISSUER, "aud": "authenticated",
        "iat": now, "exp": now + 3600, "role": "authenticated",
    })
}

/// An HS256 token for `user`.
pub(crate) fn token(user: Uuid) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims(user),
        &jsonwebtoken::EncodingKey::from_secret(SECRET),
    )
    .expect("sign")
}

/// A store over a pool of `size` connections of the bench database.
pub(crate) fn sized_store(db: &BenchDb, size: usize) -> sync_store::Store {
    let pool = sync_connect::pool(&db.config, &db.tls, size).expect("pool");
    let mode = crate::STATEMENT_MODE
        .get()
        .copied()
        .unwrap_or(sync_store::StatementMode::CachedPerConnection);
    sync_store::Store::with_statement_mode(pool, mode)
}

/// Serves sync-api on 127.0.0.1:0 over the bench database (pool of 16);
/// returns its base URL and feed. Runs until the process ends.
pub(crate) async fn serve(db: &BenchDb, feed: FeedConfig) -> (String, Feed) {
    let verifier = Verifier::new(AuthConfig {
        keys: KeySource::Hs256Secret(SECRET.to_vec()),
        issuer: ISSUER.to_owned(),
        audience: "authenticated".to_owned(),
        jwks_min_refresh: sync_api::auth::JWKS_MIN_REFRESH,
    })
    .await
    .expect("verifier");
    let feed = Feed::new(feed);
    let app = sync_api::router(
        AppState::new(sized_store(db, 16), Arc::new(verifier), Limits::default())
            .with_feed(feed.clone()),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(sync_api::server::serve(
        listener,
        app,
        Duration::from_secs(10),
        Duration::from_secs(1),
        std::future::pending(),
    ));
    (base, feed)
}

fn p50(mut v: Vec<Duration>) -> f64 {
    v.sort();
    v[v.len() / 2].as_secs_f64() * 1000.0
}

pub(crate) async fn run(db: &BenchDb, reps: usize, ops: usize) -> Row {
    let c = db.connect().await;
    let tenant = create_tenants(&c, "p8", 1).await[0];
    let store = sized_store(db, 16);
    store
        .service()
        .start_sync(
            tenant.org,
            &StartSync::new("bench-p8", SyncEntityType::Product),
        )
        .await
        .expect("start_sync");
    let scope = store
        .tenant_with_claims(tenant.user, &claims(tenant.user))
        .expect("scope");
    let (base, _feed) = serve(db, FeedConfig::default()).await;
    let url = format!("{base}/api/v1/sync/progress/bench-p8");
    let auth = format!("Bearer {}", token(tenant.user));
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(CLIENTS)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    let per_client = (ops / CLIENTS).max(1);
    let (mut lib, mut base_lat) = (Vec::new(), Vec::new());
    for round in 0..reps + 1 {
        for http_side in [round % 2 == 0, round % 2 == 1] {
            let tasks = (0..CLIENTS).map(|_| {
                let (http, url, auth, scope) =
                    (http.clone(), url.clone(), auth.clone(), scope.clone());
                async move {
                    let mut out = Vec::with_capacity(per_client);
                    for _ in 0..per_client {
                        let start = Instant::now();
                        if http_side {
                            let resp = http
                                .get(&url)
                                .header("authorization", &auth)
                                .send()
                                .await
                                .expect("GET progress");
                            assert_eq!(resp.status().as_u16(), 200);
                            let body = resp.bytes().await.expect("body");
                            assert!(!body.is_empty());
                        } else {
                            let row = scope.get_sync("bench-p8").await.expect("get_sync");
                            assert!(row.is_some());
                        }
                        out.push(start.elapsed());
                    }
                    out
                }
            });
            let all: Vec<Duration> = futures_util::future::join_all(tasks)
                .await
                .into_iter()
                .flatten()
                .collect();
            // Round 0 warms connections and caches up; not counted.
            if round > 0 {
                if http_side {
                    lib.extend(all);
                } else {
                    base_lat.extend(all);
                }
            }
        }
    }
    Row {
        id: "P8",
        what: format!(
            "GET progress over HTTP (JWT verified, tenant scope) vs TenantScope::get_sync in \
             process: p50 per request, {CLIENTS} concurrent clients, {} requests per side",
            lib.len()
        ),
        library_ms: p50(lib),
        baseline_ms: p50(base_lat),
        target: Target {
            max_ratio: 1.5,
            max_library_ms: None,
        },
    }
}
