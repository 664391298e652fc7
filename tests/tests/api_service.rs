//! sync-api over real HTTP against the real server: JWT verification (a local
//! JWKS server with keys made by the test), claims in the tenant transaction,
//! bounded waits, JSON errors, health and readiness, header-read timeout.

use std::time::Duration;

use base64::Engine as _;
use serde_json::{json, Value};
use sync_api::auth::KeySource;
use sync_store::{StartSync, SyncEntityType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;

mod api_common;
use api_common::{claims, now, sign_hs256, JwksServer, Key, Options, Service};

/// Starts `sync_id` in `org` (10 items) through the service scope.
async fn seed(service: &Service, org: Uuid, sync_id: &str) {
    let mut start = StartSync::new(sync_id, SyncEntityType::Product);
    start.total_items = Some(10);
    service
        .fixture
        .store
        .service()
        .start_sync(org, &start)
        .await
        .unwrap();
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[tokio::test]
async fn valid_tokens_pass_and_every_bad_token_is_the_same_401() {
    let key = Key::es256("k1");
    let other = Key::es256("k1"); // same kid, different key: a forged signature
    let jwks = JwksServer::start(&[&key]).await;
    let service = Service::start(KeySource::JwksUrl(jwks.url.clone())).await;
    let (user_a, org_a) = (service.fixture.user_a, service.fixture.org_a);
    seed(&service, org_a, "s1").await;
    let path = "/api/v1/sync/progress/s1";

    let (status, _, body) = service.get(Some(&key.sign(&claims(user_a))), path).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["org_id"], org_a.to_string());

    let with = |f: &dyn Fn(&mut Value)| {
        let mut c = claims(user_a);
        f(&mut c);
        c
    };
    let t = now();
    let header_none = b64(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = b64(claims(user_a).to_string().as_bytes());
    let jwk_json = serde_json::to_vec(&key.jwk).unwrap();
    let bad: Vec<(&str, String)> = vec![
        ("expired", key.sign(&with(&|c| c["exp"] = json!(t - 120)))),
        (
            "not yet valid",
            key.sign(&with(&|c| c["nbf"] = json!(t + 600))),
        ),
        (
            "no exp",
            key.sign(&with(&|c| {
                c.as_object_mut().unwrap().remove("exp");
            })),
        ),
        (
            "wrong issuer",
            key.sign(&with(&|c| c["iss"] = json!("https://evil.example/auth/v1"))),
        ),
        (
            "no issuer",
            key.sign(&with(&|c| {
                c.as_object_mut().unwrap().remove("iss");
            })),
        ),
        (
            "wrong audience",
            key.sign(&with(&|c| c["aud"] = json!("anon"))),
        ),
        (
            "sub not a uuid",
            key.sign(&with(&|c| c["sub"] = json!("admin"))),
        ),
        ("bad signature", other.sign(&claims(user_a))),
        (
            "hs256 with the public key PEM",
            sign_hs256(key.public_pem.as_bytes(), &claims(user_a), Some("k1")),
        ),
        (
            "hs256 with the JWK",
            sign_hs256(&jwk_json, &claims(user_a), Some("k1")),
        ),
        ("alg none", format!("{header_none}.{payload}.")),
        ("alg none, no dot", format!("{header_none}.{payload}")),
        ("garbage", "not.a.jwt".to_owned()),
        ("huge", "a".repeat(20_000)),
    ];
    let mut bodies = Vec::new();
    for (what, token) in &bad {
        let (status, challenge, body) = service.get(Some(token), path).await;
        assert_eq!(status, 401, "{what}: {body}");
        assert_eq!(body["code"], "unauthenticated", "{what}: {body}");
        let challenge = challenge.unwrap_or_else(|| panic!("{what}: no WWW-Authenticate"));
        assert!(challenge.starts_with("Bearer "), "{what}: {challenge}");
        bodies.push((body, challenge));
    }
    // One reply for every refusal: nothing tells one failure from another.
    assert!(bodies.windows(2).all(|w| w[0] == w[1]), "{bodies:?}");

    // No header at all: a 401 with a plain challenge.
    let (status, challenge, body) = service.get(None, path).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("unauthenticated"))
    );
    assert!(challenge.unwrap().starts_with("Bearer"));
    // Another scheme.
    let resp = service
        .http
        .get(format!("{}{path}", service.base))
        .header(
            "authorization",
            format!("Basic {}", key.sign(&claims(user_a))),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
}

#[tokio::test]
async fn two_authorization_headers_are_a_400() {
    let secret = b"0123456789abcdef0123456789abcdef".to_vec();
    let service = Service::start(KeySource::Hs256Secret(secret.clone())).await;
    let user_a = service.fixture.user_a;
    seed(&service, service.fixture.org_a, "s1").await;
    let good = sign_hs256(&secret, &claims(user_a), None);
    let resp = service
        .http
        .get(format!("{}/api/v1/sync/progress/s1", service.base))
        .header("authorization", format!("Bearer {good}"))
        .header("authorization", "Bearer other")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["code"], "invalid_request", "{body}");
    // The same token alone is fine.
    let (status, _, body) = service.get(Some(&good), "/api/v1/sync/progress/s1").await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn hs256_mode_accepts_only_hs256_with_its_secret() {
    let secret = b"0123456789abcdef0123456789abcdef".to_vec();
    let service = Service::start(KeySource::Hs256Secret(secret.clone())).await;
    let user_a = service.fixture.user_a;
    seed(&service, service.fixture.org_a, "s1").await;
    let path = "/api/v1/sync/progress/s1";
    let (status, _, body) = service
        .get(Some(&sign_hs256(&secret, &claims(user_a), None)), path)
        .await;
    assert_eq!(status, 200, "{body}");
    let es256 = Key::es256("k1").sign(&claims(user_a));
    let hs384 = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS384),
        &claims(user_a),
        &jsonwebtoken::EncodingKey::from_secret(&secret),
    )
    .unwrap();
    let wrong_secret = sign_hs256(
        b"another secret of thirty-two bytes!!",
        &claims(user_a),
        None,
    );
    for (what, token) in [
        ("es256", es256),
        ("hs384", hs384),
        ("wrong secret", wrong_secret),
    ] {
        let (status, _, body) = service.get(Some(&token), path).await;
        assert_eq!(status, 401, "{what}: {body}");
    }
}

#[tokio::test]
async fn kid_rotation_refetches_the_jwks_and_drops_retired_keys() {
    let (k1, k2) = (Key::es256("k1"), Key::es256("k2"));
    let jwks = JwksServer::start(&[&k1]).await;
    let mut options = Options::new(KeySource::JwksUrl(jwks.url.clone()));
    options.jwks_min_refresh = Duration::ZERO;
    let service = Service::start_with(options).await;
    let user_a = service.fixture.user_a;
    seed(&service, service.fixture.org_a, "s1").await;
    let path = "/api/v1/sync/progress/s1";

    assert_eq!(
        service.get(Some(&k1.sign(&claims(user_a))), path).await.0,
        200
    );
    assert_eq!(jwks.hits(), 1, "fetched once on first use");
    assert_eq!(
        service.get(Some(&k1.sign(&claims(user_a))), path).await.0,
        200
    );
    assert_eq!(jwks.hits(), 1, "cached by kid");

    jwks.publish(&[&k2]); // the IdP rotates: k2 in, k1 out
    let (status, _, body) = service.get(Some(&k2.sign(&claims(user_a))), path).await;
    assert_eq!(status, 200, "an unknown kid refetches the JWKS: {body}");
    assert_eq!(jwks.hits(), 2);
    let (status, _, _) = service.get(Some(&k1.sign(&claims(user_a))), path).await;
    assert_eq!(status, 401, "a retired key no longer verifies");
}

#[tokio::test]
async fn unknown_kids_do_not_hammer_the_jwks_url() {
    let (k1, stranger) = (Key::es256("k1"), Key::es256("unknown"));
    let jwks = JwksServer::start(&[&k1]).await;
    let mut options = Options::new(KeySource::JwksUrl(jwks.url.clone()));
    options.jwks_min_refresh = Duration::from_secs(3600);
    let service = Service::start_with(options).await;
    let user_a = service.fixture.user_a;
    let path = "/api/v1/sync/progress/s1";
    for _ in 0..20 {
        let (status, _, _) = service
            .get(Some(&stranger.sign(&claims(user_a))), path)
            .await;
        assert_eq!(status, 401);
    }
    assert_eq!(
        jwks.hits(),
        1,
        "one fetch (first use); refetches are rate-limited"
    );
}

#[tokio::test]
async fn jwks_file_keys_verify() {
    let key = Key::es256("file-key");
    let dir = std::env::temp_dir().join(format!("sync-api-jwks-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("jwks.json");
    std::fs::write(
        &file,
        serde_json::to_vec(&json!({"keys": [key.jwk]})).unwrap(),
    )
    .unwrap();
    let service = Service::start(KeySource::JwksFile(file)).await;
    seed(&service, service.fixture.org_a, "s1").await;
    let (status, _, body) = service
        .get(
            Some(&key.sign(&claims(service.fixture.user_a))),
            "/api/v1/sync/progress/s1",
        )
        .await;
    assert_eq!(status, 200, "{body}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn another_orgs_sync_is_the_same_404_as_a_missing_one() {
    let secret = b"0123456789abcdef0123456789abcdef".to_vec();
    let service = Service::start(KeySource::Hs256Secret(secret.clone())).await;
    let f = &service.fixture;
    seed(&service, f.org_a, "only-a").await;
    let b = sign_hs256(&secret, &claims(f.user_b), None);
    for prefix in ["/api/v1/sync/progress/", "/api/v1/sync/preview/"] {
        let (s1, _, theirs) = service.get(Some(&b), &format!("{prefix}only-a")).await;
        let (s2, _, missing) = service.get(Some(&b), &format!("{prefix}no-such")).await;
        assert_eq!((s1, s2), (404, 404), "{theirs} {missing}");
        // Same code; the message names only the id the caller sent.
        assert_eq!(theirs["code"], missing["code"]);
        assert_eq!(
            theirs["message"].as_str().unwrap().replace("only-a", "X"),
            missing["message"].as_str().unwrap().replace("no-such", "X")
        );
    }
    let (status, body) = service
        .post(
            &b,
            "/api/v1/sync/progress",
            r#"{"sync_id": "only-a", "processed": 1}"#,
        )
        .await;
    assert_eq!(status, 404, "{body}");
    let (_, _, a_view) = service
        .get(
            Some(&sign_hs256(&secret, &claims(f.user_a), None)),
            "/api/v1/sync/progress/only-a",
        )
        .await;
    assert_eq!(a_view["processed_count"], 0, "org B's POST changed nothing");
}

#[tokio::test]
async fn verified_claims_and_the_statement_timeout_reach_the_tenant_transaction() {
    let secret = b"0123456789abcdef0123456789abcdef".to_vec();
    let mut options = Options::new(KeySource::Hs256Secret(secret.clone()));
    options.limits.statement_timeout = Duration::from_millis(4321);
    let service = Service::start_with(options).await;
    let f = &service.fixture;
    seed(&service, f.org_a, "s1").await;
    // A trigger records what the tenant transaction sees.
    f.admin
        .batch_execute(
            "CREATE FUNCTION test_seen() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
               NEW.metadata := NEW.metadata || jsonb_build_object( \
                 'seen_claims', current_setting('request.jwt.claims', true)::jsonb, \
                 'seen_timeout', current_setting('statement_timeout')); \
               RETURN NEW; END $$; \
             CREATE TRIGGER test_seen BEFORE UPDATE ON sync_progress \
               FOR EACH ROW EXECUTE FUNCTION test_seen();",
        )
        .await
        .unwrap();
    let mut c = claims(f.user_a);
    c["app_metadata"] = json!({"plan": "pro"});
    let (status, body) = service
        .post(
            &sign_hs256(&secret, &c, None),
            "/api/v1/sync/progress",
            r#"{"sync_id": "s1", "processed": 1}"#,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["metadata"]["seen_claims"], c, "{body}");
    assert_eq!(body["metadata"]["seen_timeout"], "4321ms", "{body}");
}

#[tokio::test]
async fn a_held_table_lock_times_out_instead_of_hanging_every_endpoint() {
    let secret = b"0123456789abcdef0123456789abcdef".to_vec();
    let mut options = Options::new(KeySource::Hs256Secret(secret.clone()));
    options.limits.statement_timeout = Duration::from_millis(300);
    // Longer than the client's own bound (30 s): only the statement timeout
    // can answer in time.
    options.limits.request_timeout = Duration::from_secs(120);
    let service = Service::start_with(options).await;
    let f = &service.fixture;
    seed(&service, f.org_a, "s1").await;
    let token = sign_hs256(&secret, &claims(f.user_a), None);
    let locker = f.db.client().await;
    locker
        .batch_execute("BEGIN; LOCK TABLE sync_progress IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    for _ in 0..3 {
        let (status, _, body) = service.get(Some(&token), "/api/v1/sync/progress/s1").await;
        assert_eq!(
            (status, body["code"].as_str()),
            (503, Some("unavailable")),
            "{body}"
        );
        let (status, body) = service
            .post(
                &token,
                "/api/v1/sync/progress",
                r#"{"sync_id": "s1", "processed": 1}"#,
            )
            .await;
        assert_eq!(status, 503, "{body}");
    }
    let (status, _, _) = service.get(None, "/healthz").await;
    assert_eq!(status, 200);
    locker.batch_execute("ROLLBACK").await.unwrap();
    let (status, _, body) = service.get(Some(&token), "/api/v1/sync/progress/s1").await;
    assert_eq!(status, 200, "served again once the lock is gone: {body}");
    assert_eq!(
        body["processed_count"], 0,
        "the timed-out POSTs applied nothing"
    );
}

#[tokio::test]
async fn framework_errors_are_json_and_there_is_no_public_metrics() {
    let secret = b"0123456789abcdef0123456789abcdef".to_vec();
    let service = Service::start(KeySource::Hs256Secret(secret.clone())).await;
    let token = sign_hs256(&secret, &claims(service.fixture.user_a), None);
    let url = |p: &str| format!("{}{p}", service.base);
    let check = |resp: reqwest::Response, want: u16, code: &'static str| async move {
        let status = resp.status().as_u16();
        let ctype = resp
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned());
        let body: Value = resp.json().await.unwrap();
        assert_eq!(
            (status, body["code"].as_str()),
            (want, Some(code)),
            "{body}"
        );
        assert_eq!(ctype.as_deref(), Some("application/json"));
    };
    check(
        service.http.get(url("/nope")).send().await.unwrap(),
        404,
        "not_found",
    )
    .await;
    check(
        service.http.get(url("/metrics")).send().await.unwrap(),
        404,
        "not_found",
    )
    .await;
    // A path parameter that is not UTF-8: the framework's plain-text 400 gets
    // the JSON shape too.
    check(
        service
            .http
            .get(url("/api/v1/sync/progress/%ff%fe"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap(),
        400,
        "invalid_request",
    )
    .await;
    check(
        service
            .http
            .delete(url("/api/v1/sync/progress"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap(),
        405,
        "method_not_allowed",
    )
    .await;
    let big = format!(r#"{{"sync_id": "{}"}}"#, "x".repeat(200_000));
    check(
        service
            .http
            .post(url("/api/v1/sync/progress"))
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body(big)
            .send()
            .await
            .unwrap(),
        413,
        "payload_too_large",
    )
    .await;
    check(
        service
            .http
            .post(url("/api/v1/sync/progress"))
            .bearer_auth(&token)
            .header("content-type", "text/plain")
            .body(r#"{"sync_id": "s1"}"#)
            .send()
            .await
            .unwrap(),
        415,
        "unsupported_media_type",
    )
    .await;
}

#[tokio::test]
async fn healthz_readyz_and_the_openapi_document() {
    let secret = b"0123456789abcdef0123456789abcdef".to_vec();
    let service = Service::start(KeySource::Hs256Secret(secret)).await;
    assert_eq!(service.get(None, "/healthz").await.0, 200);
    let (status, _, body) = service.get(None, "/readyz").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (503, Some("not_ready")),
        "{body}"
    );
    assert!(
        body["message"].as_str().unwrap().contains("GRANT")
            || body["message"].as_str().unwrap().contains("grant"),
        "tells the operator what to do: {body}"
    );
    // The deployment step the README names.
    let role: String = service
        .fixture
        .admin
        .query_one(
            "SELECT rolname::text FROM pg_roles WHERE rolname LIKE $1 || '%api'",
            &[&service.fixture.db.name()],
        )
        .await
        .unwrap()
        .get(0);
    service
        .fixture
        .admin
        .batch_execute(&format!(
            "GRANT SELECT ON refinery_schema_history TO {role}"
        ))
        .await
        .unwrap();
    let (status, _, body) = service.get(None, "/readyz").await;
    assert_eq!(status, 200, "{body}");
    let (status, _, doc) = service.get(None, "/openapi.json").await;
    assert_eq!(status, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"), "{doc}");
    for p in [
        "/api/v1/sync/preview/{sync_id}",
        "/api/v1/sync/progress/{sync_id}",
        "/api/v1/sync/progress",
        "/api/v1/sync/progress/{sync_id}/cancel",
        "/api/v1/sync/activity",
    ] {
        assert!(doc["paths"].get(p).is_some(), "{p} missing");
    }
    // A migration recorded as never applied: not ready.
    service
        .fixture
        .admin
        .execute(
            "DELETE FROM refinery_schema_history \
             WHERE version = (SELECT max(version) FROM refinery_schema_history)",
            &[],
        )
        .await
        .unwrap();
    let (status, _, body) = service.get(None, "/readyz").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (503, Some("not_ready")),
        "{body}"
    );
    assert_eq!(
        service.get(None, "/healthz").await.0,
        200,
        "the process is still up"
    );
}

#[tokio::test]
async fn silent_connections_are_closed_after_the_header_read_timeout() {
    let secret = b"0123456789abcdef0123456789abcdef".to_vec();
    let mut options = Options::new(KeySource::Hs256Secret(secret));
    options.header_read_timeout = Duration::from_millis(500);
    let service = Service::start_with(options).await;
    let mut conns = Vec::new();
    for _ in 0..5 {
        let mut c = tokio::net::TcpStream::connect(service.running.addr)
            .await
            .unwrap();
        c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        conns.push(c);
    }
    for mut c in conns {
        let mut buf = Vec::new();
        // Bounded, and below hyper's own 30 s default: a server that does not
        // apply the configured 500 ms limit fails here instead of hanging.
        let read = tokio::time::timeout(Duration::from_secs(15), c.read_to_end(&mut buf)).await;
        assert!(read.is_ok(), "the server kept a silent connection open");
    }
    assert_eq!(service.get(None, "/healthz").await.0, 200);
}

#[tokio::test]
async fn shutdown_drains_a_request_in_flight_and_stops_accepting() {
    let secret = b"0123456789abcdef0123456789abcdef".to_vec();
    let mut options = Options::new(KeySource::Hs256Secret(secret.clone()));
    options.limits.statement_timeout = Duration::from_secs(60);
    let mut service = Service::start_with(options).await;
    let f = &service.fixture;
    seed(&service, f.org_a, "s1").await;
    let token = sign_hs256(&secret, &claims(f.user_a), None);
    let locker = f.db.client().await;
    locker
        .batch_execute("BEGIN; LOCK TABLE sync_progress IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let (http, url) = (
        service.http.clone(),
        format!("{}/api/v1/sync/progress/s1", service.base),
    );
    let in_flight = tokio::spawn(async move {
        http.get(url)
            .bearer_auth(token)
            .send()
            .await
            .map(|r| r.status().as_u16())
    });
    // Wait until the request is blocked on the lock (seen from the server side).
    let mut waiting = false;
    for _ in 0..600 {
        let n: i64 = f
            .admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' \
                 AND datname = current_database()",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if n > 0 {
            waiting = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(waiting, "the request never reached the lock");
    service.running.shutdown();
    // New connections are refused once the listener is closed.
    let mut refused = false;
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(service.running.addr)
            .await
            .is_err()
        {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(refused, "still accepting after shutdown");
    locker.batch_execute("ROLLBACK").await.unwrap();
    let status = in_flight
        .await
        .unwrap()
        .expect("the request in flight was answered");
    assert_eq!(status, 200);
    service.running.served.take().unwrap().await.unwrap();
}

#[tokio::test]
async fn tenant_with_claims_refuses_claims_of_another_user() {
    let f = api_common::Fixture::new().await;
    for bad in [
        json!({"sub": f.user_b.to_string()}),
        json!({"role": "authenticated"}),
        json!([f.user_a.to_string()]),
        json!({"sub": 42}),
    ] {
        let err = f.store.tenant_with_claims(f.user_a, &bad).unwrap_err();
        assert!(
            matches!(err, sync_store::Error::InvalidInput { .. }),
            "{bad}: {err:?}"
        );
    }
    let scope = f
        .store
        .tenant_with_claims(f.user_a, &json!({"sub": f.user_a.to_string()}))
        .unwrap();
    assert_eq!(scope.org_id().await.unwrap(), f.org_a);
}
