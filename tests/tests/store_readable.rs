//! "Accepted means readable": the inputs a hostile review committed and then
//! could not read back are refused; rows written by plain SQL that the store
//! cannot decode degrade only themselves; plain-SQL cache keys are readable.
mod store_common;

use serde_json::{json, Value};
use store_common::{snapshot, Fixture};
use sync_store::{
    validate, ActivityFilter, Error, NewActivity, PutPreview, StartSync, SyncAction,
    SyncEntityType, SyncStatus, SyncType,
};
use time::macros::datetime;
use time::Duration;

/// `{"a": {"a": … 1 …}}`, `depth` objects deep.
fn nested(depth: usize) -> Value {
    let mut v = json!(1);
    for _ in 0..depth {
        // (not `json!({"a": v})`, which re-serializes `v` recursively)
        let mut m = serde_json::Map::new();
        m.insert("a".to_owned(), v);
        v = Value::Object(m);
    }
    v
}

fn assert_invalid<T: std::fmt::Debug>(r: sync_store::Result<T>, field: &str) {
    match r {
        Err(Error::InvalidInput { field: f, .. }) => assert_eq!(f, field),
        other => panic!("expected InvalidInput({field}), got {other:?}"),
    }
}

#[tokio::test]
async fn deep_json_is_refused_before_writing_and_the_bound_is_readable() {
    let f = Fixture::new().await;
    let svc = f.store.service();
    let ta = f.store.tenant(f.user_a);
    let before = snapshot(&f.admin).await;
    for depth in [validate::MAX_JSON_DEPTH + 1, 128, 20_000] {
        // Dropping a Value 20,000 deep recurses past a test thread's stack:
        // these inputs are leaked on purpose.
        let mut s = std::mem::ManuallyDrop::new(StartSync::new(
            format!("deep-{depth}"),
            SyncEntityType::Product,
        ));
        s.metadata = Some(nested(depth));
        assert_invalid(svc.start_sync(f.org_a, &s).await, "metadata");
        assert_invalid(ta.start_sync(&s).await, "metadata");
        let p = std::mem::ManuallyDrop::new(PutPreview::new(
            SyncType::Odoo,
            "deep",
            format!("k{depth}"),
            nested(depth),
        ));
        assert_invalid(svc.put_preview(f.org_a, &p).await, "delta_json");
        assert_invalid(ta.put_preview(&p).await, "delta_json");
    }
    // NUL in a JSON string or key: refused by the store, naming the field.
    let mut s = StartSync::new("nul", SyncEntityType::Product);
    s.metadata = Some(json!({"k\u{0}": 1}));
    assert_invalid(svc.start_sync(f.org_a, &s).await, "metadata");
    let p = PutPreview::new(SyncType::Odoo, "nul", "k", json!(["a\u{0}b"]));
    assert_invalid(svc.put_preview(f.org_a, &p).await, "delta_json");
    assert_eq!(snapshot(&f.admin).await, before, "nothing written");

    // The deepest accepted document is read back intact by every read.
    let deepest = nested(validate::MAX_JSON_DEPTH);
    let mut s = StartSync::new("deepest", SyncEntityType::Product);
    s.metadata = Some(deepest.clone());
    svc.start_sync(f.org_a, &s).await.unwrap();
    let got = svc.get_sync(f.org_a, "deepest").await.unwrap().unwrap();
    assert_eq!(got.metadata, deepest);
    assert_eq!(svc.list_active_syncs(f.org_a).await.unwrap().len(), 1);
    assert_eq!(svc.list_recent_syncs(f.org_a, 10).await.unwrap().len(), 1);
    // fail_sync wraps a reserved key around it: still readable.
    let failed = svc.fail_sync(f.org_a, "deepest", "boom").await.unwrap();
    assert_eq!(failed.status(), SyncStatus::Failed);
    let p = PutPreview::new(SyncType::Odoo, "deepest", "deepest", deepest.clone());
    svc.put_preview(f.org_a, &p).await.unwrap();
    let e = svc
        .get_preview_by_sync_id(f.org_a, "deepest")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(e.delta_json, deepest);
}

#[tokio::test]
async fn far_timestamps_are_refused_and_never_panic() {
    let f = Fixture::new().await;
    let svc = f.store.service();
    let before = snapshot(&f.admin).await;
    let far = [
        datetime!(9999-12-31 23:30 UTC),
        validate::MAX_TIMESTAMP,
        validate::MIN_TIMESTAMP - Duration::microseconds(1),
        // no UTC equivalent: the driver's conversion would panic
        datetime!(9999-12-31 23:00 -05:00),
        datetime!(-9999-01-01 00:00 +05:00),
    ];
    for at in far {
        let mut p = PutPreview::new(SyncType::Shopify, "far", "far", json!({}));
        p.computed_at = Some(at);
        assert_invalid(svc.put_preview(f.org_a, &p).await, "computed_at");
        let mut a = NewActivity::new(SyncAction::RecordCreate, SyncStatus::Completed);
        a.created_at = Some(at);
        assert_invalid(svc.append_activity(f.org_a, &a).await, "created_at");
        assert_invalid(
            svc.append_activity_many(f.org_a, &[a.clone()]).await,
            "created_at",
        );
        let filter = ActivityFilter {
            since: Some(at),
            ..Default::default()
        };
        // A read never panics either: a far bound lists nothing, or is refused.
        let _ = svc.list_activity(f.org_a, &filter, None, 10).await;
    }
    assert_eq!(snapshot(&f.admin).await, before, "nothing written");

    // The latest accepted computed_at with the longest TTL reads back intact.
    let last = validate::MAX_TIMESTAMP - Duration::microseconds(1);
    let mut p = PutPreview::new(SyncType::Shopify, "last", "last", json!({}));
    p.computed_at = Some(last);
    p.ttl = Some(validate::MAX_PREVIEW_TTL);
    let e = svc.put_preview(f.org_a, &p).await.unwrap();
    assert_eq!(e.computed_at, last);
    assert_eq!(e.expires_at, last + validate::MAX_PREVIEW_TTL);
    let got = svc.get_preview_by_sync_id(f.org_a, "last").await.unwrap();
    assert_eq!(got, Some(e.clone()));
    assert_eq!(
        svc.get_preview_by_key(f.org_a, "last").await.unwrap(),
        Some(e)
    );
}

#[tokio::test]
async fn durations_are_stored_exactly_or_refused() {
    let f = Fixture::new().await;
    let svc = f.store.service();
    let before = snapshot(&f.admin).await;
    for d in [1e-30, 5e-324, 1e16, f64::MAX, f64::NAN, -1.0] {
        let mut a = NewActivity::new(SyncAction::RecordCreate, SyncStatus::Completed);
        a.duration_seconds = Some(d);
        assert_invalid(svc.append_activity(f.org_a, &a).await, "duration_seconds");
        assert_invalid(
            svc.append_activity_many(f.org_a, &[a]).await,
            "duration_seconds",
        );
    }
    assert_eq!(snapshot(&f.admin).await, before, "nothing written");
    for d in [0.1, 1.0 / 3.0, 1e-20, 123_456.789_012_345_67, 1e15] {
        let mut a = NewActivity::new(SyncAction::RecordCreate, SyncStatus::Completed);
        a.duration_seconds = Some(d);
        a.sync_id = Some(format!("d{d}"));
        let e = svc.append_activity(f.org_a, &a).await.unwrap();
        assert_eq!(e.duration_seconds, Some(d), "returned");
        svc.append_activity_many(f.org_a, &[a.clone()])
            .await
            .unwrap();
        let page = svc
            .list_activity(
                f.org_a,
                &ActivityFilter {
                    sync_id: a.sync_id.clone(),
                    ..Default::default()
                },
                None,
                10,
            )
            .await
            .unwrap();
        assert_eq!(page.entries.len(), 2);
        for e in page.entries {
            assert_eq!(e.duration_seconds, Some(d), "listed");
        }
    }
}

/// Rows written by other clients that the store cannot decode: a single read
/// names the row; a listing skips it and returns the others.
#[tokio::test]
async fn undecodable_plain_sql_rows_degrade_only_themselves() {
    let f = Fixture::new().await;
    let svc = f.store.service();
    let org = f.org_a;
    let deep: String = format!("{}1{}", "[".repeat(200), "]".repeat(200));
    f.admin
        .execute(
            "INSERT INTO sync_progress (org_id, sync_id, entity_type, metadata) \
             VALUES ($1, 'bad-deep', 'order', jsonb_build_object('x', $2::text::jsonb)), \
                    ($1, 'good', 'order', '{}')",
            &[&org, &deep],
        )
        .await
        .unwrap();
    // started in year 20000: elapsed etc. are computed, started_at cannot decode.
    f.admin
        .execute(
            "INSERT INTO sync_progress (org_id, sync_id, entity_type, started_at) \
             VALUES ($1, 'bad-far', 'order', '20000-01-01 00:00+00')",
            &[&org],
        )
        .await
        .unwrap();
    let err = svc.get_sync(org, "bad-deep").await.unwrap_err();
    assert!(
        matches!(&err, Error::Decode { column, reason, .. }
            if column == "metadata" && reason.contains("sync_id=\"bad-deep\"")),
        "{err:?}"
    );
    let err = svc.get_sync(org, "bad-far").await.unwrap_err();
    assert!(
        matches!(&err, Error::Decode { reason, .. } if reason.contains("sync_id=\"bad-far\"")),
        "{err:?}"
    );
    let ids =
        |v: Vec<sync_store::SyncProgress>| v.into_iter().map(|p| p.sync_id).collect::<Vec<_>>();
    assert_eq!(ids(svc.list_active_syncs(org).await.unwrap()), ["good"]);
    assert_eq!(ids(svc.list_recent_syncs(org, 10).await.unwrap()), ["good"]);
    let ta = f.store.tenant(f.user_a);
    assert_eq!(ids(ta.list_active_syncs().await.unwrap()), ["good"]);

    // previews: deep delta, expires_at in year 10000
    f.admin
        .execute(
            "INSERT INTO sync_preview_cache (org_id, sync_type, sync_id, delta_json, cache_key, computed_at, expires_at) \
             VALUES ($1, 'odoo', 'p-deep', $2::text::jsonb, 'plain-deep', now(), now() + interval '1 hour'), \
                    ($1, 'odoo', 'p-far', '{}', 'plain-far', '9999-12-31 23:30+00', '10000-01-01 00:30+00')",
            &[&org, &deep],
        )
        .await
        .unwrap();
    for (sync_id, key) in [("p-deep", "plain-deep"), ("p-far", "plain-far")] {
        let err = svc.get_preview_by_sync_id(org, sync_id).await.unwrap_err();
        assert!(
            matches!(&err, Error::Decode { reason, .. } if reason.contains(&format!("sync_id={sync_id:?}"))),
            "{err:?}"
        );
        let err = svc.get_preview_by_key(org, key).await.unwrap_err();
        assert!(matches!(err, Error::Decode { .. }), "{err:?}");
    }

    // activity: one entry dated in year 20000 among good ones
    svc.append_activity(
        org,
        &NewActivity::new(SyncAction::RecordCreate, SyncStatus::Completed),
    )
    .await
    .unwrap();
    f.admin
        .execute(
            "INSERT INTO sync_activity_log (org_id, action, status, created_at) \
             VALUES ($1, 'record_update', 'completed', '20000-01-01 00:00+00')",
            &[&org],
        )
        .await
        .unwrap();
    let page = svc
        .list_activity(org, &ActivityFilter::default(), None, 100)
        .await
        .unwrap();
    // sync_start entries of the good syncs + the appended one; the far one skipped
    assert!(
        page.entries.iter().all(|e| e.created_at.year() < 10_000) && !page.entries.is_empty(),
        "{page:?}"
    );
    let n_listed = page.entries.len() as i64;
    let n_rows: i64 = f
        .admin
        .query_one(
            "SELECT count(*) FROM sync_activity_log WHERE org_id = $1",
            &[&org],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n_listed, n_rows - 1, "exactly the bad row is skipped");
    // with a page of one, the listing still walks past the bad row
    let mut after = None;
    let mut seen = 0;
    loop {
        let page = svc
            .list_activity(org, &ActivityFilter::default(), after, 1)
            .await
            .unwrap();
        seen += page.entries.len() as i64;
        match page.next {
            Some(c) => after = Some(c),
            None => break,
        }
    }
    assert_eq!(seen, n_rows - 1);
}

/// Item 14: the spec's columns with an ordinary key insert fine; the store
/// reads such rows by sync id and by key, showing the key as written.
#[tokio::test]
async fn plain_sql_cache_keys_are_accepted_and_readable() {
    let f = Fixture::new().await;
    let svc = f.store.service();
    let (a, b) = (f.org_a, f.org_b);
    // The spec's columns, an ordinary key, ON CONFLICT (cache_key) as a
    // TypeScript writer would do it.
    for _ in 0..2 {
        f.admin
            .execute(
                "INSERT INTO sync_preview_cache (org_id, sync_type, sync_id, delta_json, cache_key) \
                 VALUES ($1, 'shopify', 'ts-sync', '{\"n\": 1}', 'products:42') \
                 ON CONFLICT (cache_key) DO UPDATE SET delta_json = EXCLUDED.delta_json",
                &[&a],
            )
            .await
            .unwrap();
    }
    let by_sync = svc
        .get_preview_by_sync_id(a, "ts-sync")
        .await
        .unwrap()
        .expect("plain row by sync id");
    assert_eq!(by_sync.cache_key, "products:42", "the key as written");
    assert_eq!(by_sync.delta_json, json!({"n": 1}));
    let by_key = svc.get_preview_by_key(a, "products:42").await.unwrap();
    assert_eq!(by_key, Some(by_sync.clone()));
    let ta = f.store.tenant(f.user_a);
    assert_eq!(
        ta.get_preview_by_key("products:42").await.unwrap(),
        Some(by_sync)
    );
    // Other orgs do not see it, by key or by sync id.
    assert_eq!(
        svc.get_preview_by_key(b, "products:42").await.unwrap(),
        None
    );
    let tb = f.store.tenant(f.user_b);
    assert_eq!(tb.get_preview_by_key("products:42").await.unwrap(), None);
    assert_eq!(tb.get_preview_by_sync_id("ts-sync").await.unwrap(), None);

    // The store's own key "products:42" of org A is namespaced: no collision,
    // and a lookup prefers it over the plain row.
    let mine = svc
        .put_preview(
            a,
            &PutPreview::new(SyncType::Odoo, "mine", "products:42", json!({"mine": true})),
        )
        .await
        .unwrap();
    assert_eq!(mine.cache_key, "products:42");
    assert_eq!(
        svc.get_preview_by_key(a, "products:42").await.unwrap(),
        Some(mine)
    );
    // Org B's put of the same key is its own row.
    svc.put_preview(
        b,
        &PutPreview::new(SyncType::Odoo, "theirs", "products:42", json!({})),
    )
    .await
    .unwrap();
    assert_eq!(f.count("sync_preview_cache").await, 3);

    // invalidate removes the store's row first, then the plain one.
    assert!(svc.invalidate_preview(a, "products:42").await.unwrap());
    assert_eq!(f.count("sync_preview_cache").await, 1);
    assert!(!svc.invalidate_preview(a, "products:42").await.unwrap());
}

/// A plain writer for org B that takes org A's namespaced form of a key never
/// gets org A's data written into its row: the store reports a conflict.
#[tokio::test]
async fn a_foreign_row_holding_a_namespaced_key_is_never_overwritten() {
    let f = Fixture::new().await;
    let svc = f.store.service();
    let (a, b) = (f.org_a, f.org_b);
    f.admin
        .execute(
            "INSERT INTO sync_preview_cache (org_id, sync_type, sync_id, delta_json, cache_key) \
             VALUES ($1, 'odoo', 'b-sync', '{\"b\": 1}', $2)",
            &[&b, &format!("{a}:k")],
        )
        .await
        .unwrap();
    let before = snapshot(&f.admin).await;
    let err = svc
        .put_preview(
            a,
            &PutPreview::new(SyncType::Odoo, "a-sync", "k", json!({"secret": "of A"})),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Conflict { .. }), "{err:?}");
    assert!(
        !err.to_string().contains(&b.to_string()),
        "names no other org: {err}"
    );
    let err = f
        .store
        .tenant(f.user_a)
        .put_preview(&PutPreview::new(
            SyncType::Odoo,
            "a-sync",
            "k",
            json!({"secret": "of A"}),
        ))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Conflict { .. } | Error::Forbidden { .. }),
        "{err:?}"
    );
    assert_eq!(snapshot(&f.admin).await, before, "org B's row unchanged");
    // Org B's row stays org B's (not visible to A by that key).
    assert_eq!(svc.get_preview_by_key(a, "k").await.unwrap(), None);
}

/// Captures every event's fields as `name=value` text.
#[derive(Clone, Default)]
struct Events(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Events {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        struct V<'a>(&'a mut String);
        impl tracing::field::Visit for V<'_> {
            fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn std::fmt::Debug) {
                self.0.push_str(&format!("{}={v:?} ", f.name()));
            }
        }
        let mut text = format!("{} ", event.metadata().level());
        event.record(&mut V(&mut text));
        self.0.lock().unwrap().push(text);
    }
}

/// A skipped row is reported: a WARN event naming the operation and the row.
#[tokio::test]
async fn a_skipped_row_is_reported() {
    use tracing_subscriber::layer::SubscriberExt;
    let events = Events::default();
    let _guard =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(events.clone()));
    let f = Fixture::new().await;
    let deep: String = format!("{}1{}", "[".repeat(200), "]".repeat(200));
    f.admin
        .execute(
            "INSERT INTO sync_progress (org_id, sync_id, entity_type, metadata) \
             VALUES ($1, 'bad-deep', 'order', jsonb_build_object('x', $2::text::jsonb))",
            &[&f.org_a, &deep],
        )
        .await
        .unwrap();
    let listed = f.store.service().list_active_syncs(f.org_a).await.unwrap();
    assert!(listed.is_empty());
    let seen = events.0.lock().unwrap().clone();
    let warned: Vec<_> = seen
        .iter()
        .filter(|e| e.starts_with("WARN") && e.contains("list_active_syncs"))
        .collect();
    assert_eq!(warned.len(), 1, "{seen:#?}");
    assert!(
        warned[0].contains("sync_id=\"bad-deep\"") && warned[0].contains("recursion limit"),
        "{}",
        warned[0]
    );
}
