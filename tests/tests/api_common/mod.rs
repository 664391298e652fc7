//! Shared pieces of the sync-api tests: keys made by the test, a local JWKS
//! server (axum on 127.0.0.1:0), token signing, and the service itself on a
//! login role that is neither superuser nor owner (so RLS is real).
#![allow(dead_code, unreachable_pub)]

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use sync_api::auth::{AuthConfig, KeySource, Verifier};
use sync_api::{AppState, Limits};
use sync_store::Store;
use uuid::Uuid;

#[path = "../store_common/mod.rs"]
mod store_common;
pub use store_common::Fixture;

pub const ISSUER: &str = "https://auth.example.test/auth/v1";
pub const AUDIENCE: &str = "authenticated";

/// Seconds since the epoch, now (tokens are relative to the real clock,
/// which is what the verifier reads).
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// An ES256 key pair made by the test, with its public JWK.
pub struct Key {
    pub kid: String,
    pub enc: EncodingKey,
    pub jwk: Jwk,
    pub public_pem: String,
}

impl Key {
    pub fn es256(kid: &str) -> Key {
        let pair = rcgen::KeyPair::generate().unwrap(); // ECDSA P-256
        let enc = EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap();
        let mut jwk = Jwk::from_encoding_key(&enc, Algorithm::ES256).unwrap();
        jwk.common.key_id = Some(kid.to_owned());
        Key {
            kid: kid.to_owned(),
            enc,
            jwk,
            public_pem: pair.public_key_pem(),
        }
    }

    /// `claims` signed ES256 with this key, `kid` in the header.
    pub fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.enc).unwrap()
    }
}

/// Valid claims for `user`: right issuer and audience, expiring in 10 minutes.
pub fn claims(user: Uuid) -> Value {
    let now = now();
    json!({
        "sub": user.to_string(),
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": now,
        "exp": now + 600,
        "role": "authenticated",
    })
}

/// `claims` signed HS256 with `secret`.
pub fn sign_hs256(secret: &[u8], claims: &Value, kid: Option<&str>) -> String {
    let mut header = Header::new(Algorithm::HS256);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_secret(secret)).unwrap()
}

/// A JWKS over HTTP, whose document the test can change, counting fetches.
pub struct JwksServer {
    pub url: String,
    doc: Arc<Mutex<JwkSet>>,
    hits: Arc<AtomicUsize>,
}

impl JwksServer {
    pub async fn start(keys: &[&Key]) -> JwksServer {
        let doc = Arc::new(Mutex::new(JwkSet {
            keys: keys.iter().map(|k| k.jwk.clone()).collect(),
        }));
        let hits = Arc::new(AtomicUsize::new(0));
        let (d, h) = (doc.clone(), hits.clone());
        let app = axum::Router::new().route(
            "/.well-known/jwks.json",
            axum::routing::get(move || {
                let (d, h) = (d.clone(), h.clone());
                async move {
                    h.fetch_add(1, Ordering::SeqCst);
                    let body = serde_json::to_string(&*d.lock().unwrap()).unwrap();
                    ([("content-type", "application/json")], body)
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "http://{}/.well-known/jwks.json",
            listener.local_addr().unwrap()
        );
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        JwksServer { url, doc, hits }
    }

    /// Publishes `keys` instead (a key rotation).
    pub fn publish(&self, keys: &[&Key]) {
        self.doc.lock().unwrap().keys = keys.iter().map(|k| k.jwk.clone()).collect();
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// A running service (stops when dropped or on [`Running::shutdown`]).
pub struct Running {
    pub base: String,
    pub addr: std::net::SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    pub served: Option<tokio::task::JoinHandle<()>>,
    /// The live-progress change feed of the service.
    pub feed: sync_api::sse::Feed,
}

impl Running {
    /// Asks the server to shut down gracefully.
    pub fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Options of [`Service::start_with`].
pub struct Options {
    pub keys: KeySource,
    pub limits: Limits,
    pub header_read_timeout: Duration,
    pub jwks_min_refresh: Duration,
    pub pool_size: usize,
    /// The live-progress change feed's settings.
    pub feed: sync_api::sse::FeedConfig,
    /// A write that makes no progress for this long closes the connection.
    pub write_timeout: Duration,
}

impl Options {
    pub fn new(keys: KeySource) -> Options {
        Options {
            keys,
            limits: Limits::default(),
            header_read_timeout: Duration::from_secs(10),
            jwks_min_refresh: sync_api::auth::JWKS_MIN_REFRESH,
            pool_size: 4,
            feed: sync_api::sse::FeedConfig::default(),
            write_timeout: sync_api::server::DEFAULT_WRITE_TIMEOUT,
        }
    }
}

/// Serves sync-api on 127.0.0.1:0 with a pool of `login`.
pub async fn serve_login(login: &tokio_postgres::Config, options: Options) -> Running {
    let tls = sync_connect::TlsOptions::resolve(None, None).unwrap();
    let pool = sync_connect::pool_with_wait(login, &tls, options.pool_size, Duration::from_secs(5))
        .unwrap();
    let verifier = Verifier::new(AuthConfig {
        keys: options.keys,
        issuer: ISSUER.to_owned(),
        audience: AUDIENCE.to_owned(),
        jwks_min_refresh: options.jwks_min_refresh,
    })
    .await
    .unwrap();
    let feed = sync_api::sse::Feed::new(options.feed);
    let app = sync_api::router(
        AppState::new(Store::new(pool), Arc::new(verifier), options.limits).with_feed(feed.clone()),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serve_options = sync_api::server::ServeOptions {
        header_read_timeout: options.header_read_timeout,
        drain: Duration::from_secs(10),
        write_timeout: options.write_timeout,
    };
    let closing = feed.clone();
    let served = tokio::spawn(async move {
        sync_api::server::serve_with(listener, app, serve_options, async move {
            let _ = stopped.await;
            closing.shutdown();
        })
        .await
        .unwrap();
    });
    Running {
        base: format!("http://{addr}"),
        addr,
        stop: Some(stop),
        served: Some(served),
        feed,
    }
}

/// The service over a fresh fixture's database.
pub struct Service {
    pub fixture: Fixture,
    pub base: String,
    pub http: reqwest::Client,
    pub running: Running,
}

impl Service {
    pub async fn start(keys: KeySource) -> Service {
        Service::start_with(Options::new(keys)).await
    }

    pub async fn start_with(options: Options) -> Service {
        let fixture = Fixture::new().await;
        let (_, login) = fixture.db.login_role("api").await;
        let running = serve_login(&login, options).await;
        Service {
            fixture,
            base: running.base.clone(),
            // Bounded: a hung endpoint fails the test instead of hanging it.
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            running,
        }
    }

    /// GET `path` with `Authorization: Bearer <token>` (none when `None`):
    /// status, `WWW-Authenticate`, body as JSON.
    pub async fn get(&self, token: Option<&str>, path: &str) -> (u16, Option<String>, Value) {
        let mut req = self.http.get(format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let challenge = resp
            .headers()
            .get("www-authenticate")
            .map(|v| v.to_str().unwrap().to_owned());
        let text = resp.text().await.unwrap();
        let body = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{path}: {status} body is not JSON ({e}): {text:?}"));
        (status, challenge, body)
    }

    pub async fn post(&self, token: &str, path: &str, body: &str) -> (u16, Value) {
        let resp = self
            .http
            .post(format!("{}{path}", self.base))
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        let body = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{path}: {status} body is not JSON ({e}): {text:?}"));
        (status, body)
    }
}

/// Builds the `sync-api` binary (cargo, quiet) and returns its path.
pub fn sync_api_bin() -> PathBuf {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    let out = Command::new(cargo)
        .args([
            "build",
            "--quiet",
            "--message-format=json",
            "-p",
            "sync-api",
        ])
        .args(["--bin", "sync-api", "--manifest-path"])
        .arg(&manifest)
        .output()
        .expect("running cargo build for sync-api");
    assert!(
        out.status.success(),
        "building sync-api failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v.get("executable")?.as_str().map(PathBuf::from))
        .find(|p| p.file_name().is_some_and(|n| n == "sync-api"))
        .expect("cargo reported the sync-api executable")
}

/// A TCP port free on 127.0.0.1 at the time of the call.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
