//! The spec's four endpoints over real HTTP, served by `sync_api::router` (HS256
//! tokens signed by the test) on a pool of a login role that is neither
//! superuser nor owner (so RLS is real).

use serde_json::{json, Value};
use sync_store::{
    NewActivity, ProgressDelta, PutPreview, StartSync, SyncAction, SyncEntityType, SyncStatus,
    SyncType,
};
use uuid::Uuid;

mod api_common;
use api_common::Fixture;

const SECRET: &[u8] = b"a test secret of at least thirty-two bytes";

/// An HS256 token of `user`, signed with the service's secret.
fn token(user: Uuid) -> String {
    api_common::sign_hs256(SECRET, &api_common::claims(user), None)
}

struct Api {
    fixture: Fixture,
    base: String,
    http: reqwest::Client,
    _service: api_common::Running,
    org_a: Uuid,
    org_b: Uuid,
    user_a: Uuid,
    user_b: Uuid,
}

/// Asserts that a reply is the API error `status` / `code`; returns its body.
#[track_caller]
fn assert_code((status, body): (u16, Value), want_status: u16, want_code: &str) -> Value {
    assert_eq!(
        (status, body["code"].as_str()),
        (want_status, Some(want_code)),
        "{body}"
    );
    body
}

impl Api {
    async fn start() -> Api {
        let f = Fixture::new().await;
        let (org_a, org_b, user_a, user_b) = (f.org_a, f.org_b, f.user_a, f.user_b);
        // Seed both orgs through the service scope (owner connection).
        let svc = f.store.service();
        for (org, label) in [(org_a, "a"), (org_b, "b")] {
            let mut start = StartSync::new("shared-id", SyncEntityType::Product);
            start.total_items = Some(10);
            svc.start_sync(org, &start).await.unwrap();
            svc.put_preview(
                org,
                &PutPreview::new(
                    SyncType::Woocommerce,
                    "shared-id",
                    "k",
                    json!({"owner": label}),
                ),
            )
            .await
            .unwrap();
            let mut e = NewActivity::new(SyncAction::RecordCreate, SyncStatus::Completed);
            e.entity_type = Some(SyncEntityType::Customer);
            e.sync_id = Some("shared-id".into());
            svc.append_activity(org, &e).await.unwrap();
        }
        let mut done = StartSync::new("done", SyncEntityType::Order);
        done.total_items = Some(1);
        svc.start_sync(org_a, &done).await.unwrap();
        svc.report_progress(
            org_a,
            "done",
            &ProgressDelta {
                processed: 1,
                ..Default::default()
            },
        )
        .await
        .unwrap();

        let (_, login) = f.db.login_role("http").await;
        let service = api_common::serve_login(
            &login,
            api_common::Options::new(sync_api::auth::KeySource::Hs256Secret(SECRET.to_vec())),
        )
        .await;
        Api {
            fixture: f,
            base: service.base.clone(),
            http: reqwest::Client::new(),
            _service: service,
            org_a,
            org_b,
            user_a,
            user_b,
        }
    }

    async fn get(&self, user: Option<Uuid>, path: &str) -> (u16, Value) {
        let mut req = self.http.get(format!("{}{path}", self.base));
        if let Some(u) = user {
            req = req.bearer_auth(token(u));
        }
        let resp = req.send().await.unwrap();
        (resp.status().as_u16(), resp.json().await.unwrap())
    }

    async fn post(&self, user: Uuid, path: &str, body: &str) -> (u16, Value) {
        let resp = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(token(user))
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .unwrap();
        (resp.status().as_u16(), resp.json().await.unwrap())
    }
}

#[tokio::test]
async fn progress_endpoints_serve_only_the_users_org() {
    let api = Api::start().await;
    let (status, body) = api
        .get(Some(api.user_a), "/api/v1/sync/progress/shared-id")
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["org_id"], api.org_a.to_string());
    assert_eq!(body["status"], "in_progress");
    for field in [
        "elapsed_seconds",
        "speed_items_per_min",
        "eta_seconds",
        "processed_count",
        "total_items",
    ] {
        assert!(body.get(field).is_some(), "missing {field} in {body}");
    }

    let (status, body) = api
        .post(
            api.user_a,
            "/api/v1/sync/progress",
            r#"{"sync_id": "shared-id", "processed": 4, "failed": 1, "current_item": 5}"#,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["processed_count"], 4);
    assert_eq!(body["failed_count"], 1);
    assert_eq!(body["current_item"], 5);
    assert!(
        body["speed_items_per_min"].is_number(),
        "speed is computed by the database: {body}"
    );

    // With batch_number the report is idempotent: the same batch sent three
    // times (a client retrying after an unknown outcome) counts once; another
    // batch counts.
    for _ in 0..3 {
        let (status, body) = api
            .post(
                api.user_a,
                "/api/v1/sync/progress",
                r#"{"sync_id": "shared-id", "processed": 2, "batch_number": 7}"#,
            )
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["processed_count"], 6, "{body}");
    }
    let (status, body) = api
        .post(
            api.user_a,
            "/api/v1/sync/progress",
            r#"{"sync_id": "shared-id", "processed": 1, "batch_number": 8}"#,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["processed_count"], 7, "{body}");
    assert_eq!(body["batch_number"], 8, "{body}");
    // The same batch number on user B's sync of the same id is its own key.
    let (status, body) = api
        .post(
            api.user_b,
            "/api/v1/sync/progress",
            r#"{"sync_id": "shared-id", "processed": 1, "batch_number": 7}"#,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["processed_count"], 1, "{body}");

    // User B's sync with the same id is untouched by user A's reports.
    let (status, body) = api
        .get(Some(api.user_b), "/api/v1/sync/progress/shared-id")
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["processed_count"], 1);
    assert_eq!(body["org_id"], api.org_b.to_string());

    // Beyond the total (7 + 1 + 3 > 10), negative, finished, unknown, bad JSON.
    assert_code(
        api.post(
            api.user_a,
            "/api/v1/sync/progress",
            r#"{"sync_id": "shared-id", "processed": 3}"#,
        )
        .await,
        400,
        "invalid_input",
    );
    assert_code(
        api.post(
            api.user_a,
            "/api/v1/sync/progress",
            r#"{"sync_id": "shared-id", "processed": -1}"#,
        )
        .await,
        400,
        "invalid_input",
    );
    assert_code(
        api.post(
            api.user_a,
            "/api/v1/sync/progress",
            r#"{"sync_id": "done", "processed": 1}"#,
        )
        .await,
        409,
        "sync_finished",
    );
    assert_code(
        api.post(
            api.user_a,
            "/api/v1/sync/progress",
            r#"{"sync_id": "nope", "processed": 1}"#,
        )
        .await,
        404,
        "not_found",
    );
    assert_code(
        api.post(api.user_a, "/api/v1/sync/progress", r#"{"sync_id": 5"#)
            .await,
        400,
        "invalid_input",
    );
    let (_, body) = api
        .get(Some(api.user_a), "/api/v1/sync/progress/shared-id")
        .await;
    assert_eq!(body["processed_count"], 7, "refused updates wrote nothing");

    // A sync only org B has: 404 for A, and B's data never shows.
    let svc_only_b = "only-b";
    {
        let db_admin = api.fixture.store.service();
        db_admin
            .start_sync(
                api.org_b,
                &StartSync::new(svc_only_b, SyncEntityType::Invoice),
            )
            .await
            .unwrap();
    }
    let body = assert_code(
        api.get(
            Some(api.user_a),
            &format!("/api/v1/sync/progress/{svc_only_b}"),
        )
        .await,
        404,
        "not_found",
    );
    assert!(!body.to_string().contains(&api.org_b.to_string()));
    let (status, _) = api
        .post(
            api.user_a,
            "/api/v1/sync/progress",
            &format!(r#"{{"sync_id": "{svc_only_b}", "processed": 1}}"#),
        )
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn preview_endpoint_is_per_org_and_hides_expired() {
    let api = Api::start().await;
    let (status, body) = api
        .get(Some(api.user_a), "/api/v1/sync/preview/shared-id")
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["delta_json"], json!({"owner": "a"}));
    let (_, body) = api
        .get(Some(api.user_b), "/api/v1/sync/preview/shared-id")
        .await;
    assert_eq!(body["delta_json"], json!({"owner": "b"}));
    let (status, body) = api
        .get(Some(api.user_a), "/api/v1/sync/preview/unknown")
        .await;
    assert_eq!((status, body["code"].as_str()), (404, Some("not_found")));
    // Expire A's preview: 404 although the row is still there.
    api.fixture
        .admin
        .execute(
            "UPDATE sync_preview_cache SET computed_at = now() - interval '2 hours' WHERE org_id = $1",
            &[&api.org_a],
        )
        .await
        .unwrap();
    let (status, _) = api
        .get(Some(api.user_a), "/api/v1/sync/preview/shared-id")
        .await;
    assert_eq!(status, 404);
    assert_code(
        api.get(
            Some(api.user_a),
            &format!("/api/v1/sync/preview/{}", "x".repeat(300)),
        )
        .await,
        400,
        "invalid_input",
    );
}

#[tokio::test]
async fn activity_endpoint_filters_pages_and_refuses_other_orgs() {
    let api = Api::start().await;
    let (status, body) = api.get(Some(api.user_a), "/api/v1/sync/activity").await;
    assert_eq!(status, 200, "{body}");
    let entries = body["entries"].as_array().unwrap();
    // record_create + the two sync_start rows + sync_complete of "done".
    assert_eq!(entries.len(), 4, "{body}");
    assert!(entries.iter().all(|e| e["org_id"] == api.org_a.to_string()));

    let (status, body) = api
        .get(
            Some(api.user_a),
            &format!("/api/v1/sync/activity?org={}&entity=customer", api.org_a),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["entries"].as_array().unwrap().len(), 1);
    assert_eq!(body["entries"][0]["entity_type"], "customer");

    // Another org's id: 404, nothing of theirs.
    let body = assert_code(
        api.get(
            Some(api.user_a),
            &format!("/api/v1/sync/activity?org={}", api.org_b),
        )
        .await,
        404,
        "not_found",
    );
    assert!(body.get("entries").is_none());

    // An empty page cannot show the user's org: the org is looked up instead.
    let (status, body) = api
        .get(
            Some(api.user_a),
            &format!("/api/v1/sync/activity?org={}&entity=coupon", api.org_a),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["entries"].as_array().unwrap().len(), 0);
    assert_code(
        api.get(
            Some(api.user_a),
            &format!("/api/v1/sync/activity?org={}&entity=coupon", api.org_b),
        )
        .await,
        404,
        "not_found",
    );

    // Pagination: 4 entries, 3 per page.
    let (_, first) = api
        .get(Some(api.user_a), "/api/v1/sync/activity?limit=3")
        .await;
    assert_eq!(first["entries"].as_array().unwrap().len(), 3);
    let cursor = first["next_cursor"]
        .as_str()
        .expect("a next page")
        .to_owned();
    let (status, second) = api
        .get(
            Some(api.user_a),
            &format!("/api/v1/sync/activity?limit=3&cursor={cursor}"),
        )
        .await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(second["entries"].as_array().unwrap().len(), 1);
    assert!(second["next_cursor"].is_null());
    let ids: std::collections::HashSet<String> = first["entries"]
        .as_array()
        .unwrap()
        .iter()
        .chain(second["entries"].as_array().unwrap())
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 4, "pages overlap or miss entries");

    for bad in [
        "entity=spaceship",
        "limit=0",
        "limit=many",
        "cursor=garbage",
        "org=not-a-uuid",
    ] {
        let (status, body) = api
            .get(Some(api.user_a), &format!("/api/v1/sync/activity?{bad}"))
            .await;
        assert_eq!(
            (status, body["code"].as_str()),
            (400, Some("invalid_input")),
            "{bad}: {body}"
        );
    }
}

#[tokio::test]
async fn authentication_is_required_and_users_without_org_are_forbidden() {
    let api = Api::start().await;
    let (status, body) = api.get(None, "/api/v1/sync/progress/shared-id").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("unauthenticated"))
    );
    let resp = api
        .http
        .get(format!("{}/api/v1/sync/activity", api.base))
        .header("authorization", "Bearer not-a-uuid")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    let stranger = Uuid::new_v4();
    for path in [
        "/api/v1/sync/progress/shared-id",
        "/api/v1/sync/preview/shared-id",
        "/api/v1/sync/activity",
    ] {
        let (status, body) = api.get(Some(stranger), path).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (403, Some("forbidden")),
            "{path}: {body}"
        );
    }
}

#[tokio::test]
async fn cancel_endpoint_reaches_the_worker_and_hides_other_orgs() {
    let api = Api::start().await;
    let svc = api.fixture.store.service();
    let cfg =
        sync_store::ReporterConfig::default().with_interval(std::time::Duration::from_millis(30));
    let reporter = svc.reporter(api.org_a, "shared-id", cfg).await.unwrap();
    let mut only_b = StartSync::new("only-b", SyncEntityType::Product);
    only_b.total_items = Some(3);
    svc.start_sync(api.org_b, &only_b).await.unwrap();

    // Another org's id and an unknown id: the same 404, nothing changed.
    let other = assert_code(
        api.post(api.user_a, "/api/v1/sync/progress/only-b/cancel", "")
            .await,
        404,
        "not_found",
    );
    let unknown = assert_code(
        api.post(api.user_a, "/api/v1/sync/progress/nope/cancel", "")
            .await,
        404,
        "not_found",
    );
    assert_eq!(other, unknown);
    let b = svc.get_sync(api.org_b, "only-b").await.unwrap().unwrap();
    assert_eq!(b.cancel_requested_at, None);
    // A finished sync: 409.
    assert_code(
        api.post(api.user_a, "/api/v1/sync/progress/done/cancel", "")
            .await,
        409,
        "sync_finished",
    );

    let (status, body) = api
        .post(api.user_a, "/api/v1/sync/progress/shared-id/cancel", "")
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["org_id"], api.org_a.to_string());
    assert_eq!(body["status"], "in_progress");
    assert!(body["cancel_requested_at"].is_string(), "{body}");
    assert!(body["heartbeat_at"].is_string(), "{body}");
    assert_eq!(body["stalled"], false);
    // Org B's sync of the same id is untouched.
    let b = svc.get_sync(api.org_b, "shared-id").await.unwrap().unwrap();
    assert_eq!(b.cancel_requested_at, None);
    // A repeat is harmless: same time. Hostile shapes get the JSON errors.
    let (status, again) = api
        .post(api.user_a, "/api/v1/sync/progress/shared-id/cancel", "")
        .await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["cancel_requested_at"], body["cancel_requested_at"]);
    let long = format!("/api/v1/sync/progress/{}/cancel", "x".repeat(300));
    assert_code(api.post(api.user_a, &long, "").await, 400, "invalid_input");
    assert_code(
        api.get(Some(api.user_a), "/api/v1/sync/progress/shared-id/cancel")
            .await,
        405,
        "method_not_allowed",
    );
    assert_eq!(
        api.get(None, "/api/v1/sync/progress/shared-id").await.0,
        401
    );

    tokio::time::timeout(std::time::Duration::from_secs(20), reporter.stopped())
        .await
        .expect("the worker learns the cancel");
    assert!(reporter.is_cancelled());
    reporter.inc(2, 0);
    let p = reporter
        .cancel(Some("cancelled from the API"))
        .await
        .unwrap();
    assert_eq!(p.status(), SyncStatus::Cancelled);
    let (status, body) = api
        .get(Some(api.user_a), "/api/v1/sync/progress/shared-id")
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "cancelled");
    assert_eq!(body["processed_count"], 2);
}
