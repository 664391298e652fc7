//! Preview cache: put / get / invalidate / cleanup, TTL semantics, org namespacing,
//! in both scopes.
mod store_common;

use serde_json::json;
use store_common::Fixture;
use sync_store::{Error, PutPreview, SyncType};
use time::{Duration, OffsetDateTime};

fn put(sync_id: &str, key: &str, delta: serde_json::Value) -> PutPreview {
    PutPreview::new(SyncType::Woocommerce, sync_id, key, delta)
}

#[tokio::test]
async fn service_put_get_invalidate_and_default_ttl() {
    let f = Fixture::new().await;
    let svc = f.store.service();
    let e = svc
        .put_preview(f.org_a, &put("s1", "k1", json!({"n": 1})))
        .await
        .unwrap();
    assert_eq!(e.cache_key, "k1", "the caller never sees the org prefix");
    assert_eq!(e.org_id, f.org_a);
    assert_eq!(e.sync_type, SyncType::Woocommerce);
    assert_eq!(
        e.expires_at - e.computed_at,
        Duration::hours(1),
        "database default TTL"
    );
    let stored: String = f
        .admin
        .query_one("SELECT cache_key FROM sync_preview_cache", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, format!("{}:k1", f.org_a));

    let by_key = svc
        .get_preview_by_key(f.org_a, "k1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(by_key, e);
    let by_sync = svc
        .get_preview_by_sync_id(f.org_a, "s1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(by_sync, e);
    assert!(svc
        .get_preview_by_key(f.org_a, "nope")
        .await
        .unwrap()
        .is_none());
    assert!(svc
        .get_preview_by_sync_id(f.org_a, "nope")
        .await
        .unwrap()
        .is_none());

    // Upsert: same key replaces the entry (one row), with the new delta and a new default expiry.
    let computed = OffsetDateTime::now_utc() - Duration::minutes(10);
    let mut again = put("s1", "k1", json!({"n": 2}));
    again.computed_at = Some(computed);
    let e2 = svc.put_preview(f.org_a, &again).await.unwrap();
    assert_eq!(e2.id, e.id);
    assert_eq!(e2.delta_json, json!({"n": 2}));
    assert_eq!(e2.expires_at - e2.computed_at, Duration::hours(1));
    assert_eq!(f.count("sync_preview_cache").await, 1);

    // Newest by computed_at wins for get by sync id.
    let newer = svc
        .put_preview(f.org_a, &put("s1", "k2", json!({"n": 3})))
        .await
        .unwrap();
    assert_eq!(
        svc.get_preview_by_sync_id(f.org_a, "s1")
            .await
            .unwrap()
            .unwrap()
            .id,
        newer.id
    );

    assert!(svc.invalidate_preview(f.org_a, "k1").await.unwrap());
    assert!(!svc.invalidate_preview(f.org_a, "k1").await.unwrap());
    assert!(svc
        .get_preview_by_key(f.org_a, "k1")
        .await
        .unwrap()
        .is_none());
    svc.put_preview(f.org_a, &put("s1", "k3", json!({})))
        .await
        .unwrap();
    assert_eq!(
        svc.invalidate_previews_for_sync(f.org_a, "s1")
            .await
            .unwrap(),
        2
    );
    assert_eq!(f.count("sync_preview_cache").await, 0);
}

#[tokio::test]
async fn ttl_expired_rows_are_never_returned_and_cleanup_counts_them() {
    let f = Fixture::new().await;
    let svc = f.store.service();
    // Explicit TTL.
    let mut short = put("s1", "short", json!({}));
    short.ttl = Some(Duration::minutes(5));
    let e = svc.put_preview(f.org_a, &short).await.unwrap();
    assert_eq!(e.expires_at - e.computed_at, Duration::minutes(5));

    // Computed 2 hours ago with the default TTL: already expired.
    let mut old = put("s-old", "old", json!({"stale": true}));
    old.computed_at = Some(OffsetDateTime::now_utc() - Duration::hours(2));
    let stale = svc.put_preview(f.org_a, &old).await.unwrap();
    assert!(stale.expires_at < OffsetDateTime::now_utc());
    // Computed 30 minutes ago with a 10-minute TTL: expired as well; org B.
    let mut old_b = put("s-old", "old", json!({}));
    old_b.computed_at = Some(OffsetDateTime::now_utc() - Duration::minutes(30));
    old_b.ttl = Some(Duration::minutes(10));
    svc.put_preview(f.org_b, &old_b).await.unwrap();

    assert_eq!(
        f.count("sync_preview_cache").await,
        3,
        "expired rows exist before cleanup"
    );
    assert!(svc
        .get_preview_by_key(f.org_a, "old")
        .await
        .unwrap()
        .is_none());
    assert!(svc
        .get_preview_by_sync_id(f.org_a, "s-old")
        .await
        .unwrap()
        .is_none());
    assert!(f
        .store
        .tenant(f.user_a)
        .get_preview_by_key("old")
        .await
        .unwrap()
        .is_none());
    assert!(f
        .store
        .tenant(f.user_a)
        .get_preview_by_sync_id("s-old")
        .await
        .unwrap()
        .is_none());

    let m = svc.metrics(f.org_a, None).await.unwrap();
    assert_eq!((m.cache_live, m.cache_expired), (1, 1));

    // Tenant cleanup removes only its own org's expired rows.
    assert_eq!(
        f.store
            .tenant(f.user_a)
            .cleanup_expired_previews()
            .await
            .unwrap(),
        1
    );
    assert_eq!(f.count("sync_preview_cache").await, 2);
    assert_eq!(svc.cleanup_expired_previews_all_orgs().await.unwrap(), 1);
    assert_eq!(svc.cleanup_expired_previews_all_orgs().await.unwrap(), 0);
    assert_eq!(f.count("sync_preview_cache").await, 1);
    assert!(svc
        .get_preview_by_key(f.org_a, "short")
        .await
        .unwrap()
        .is_some());

    // Re-putting an expired key revives it with a fresh expiry.
    let revived = svc
        .put_preview(f.org_a, &put("s-old", "old", json!({"n": 1})))
        .await
        .unwrap();
    assert!(revived.expires_at > OffsetDateTime::now_utc());
}

#[tokio::test]
async fn keys_are_namespaced_per_org() {
    let f = Fixture::new().await;
    let svc = f.store.service();
    let a = svc
        .put_preview(f.org_a, &put("s", "same", json!({"org": "a"})))
        .await
        .unwrap();
    let b = svc
        .put_preview(f.org_b, &put("s", "same", json!({"org": "b"})))
        .await
        .unwrap();
    assert_ne!(
        a.id, b.id,
        "same caller key in two orgs: two rows, no overwrite"
    );
    assert_eq!(
        svc.get_preview_by_key(f.org_a, "same")
            .await
            .unwrap()
            .unwrap()
            .delta_json,
        json!({"org": "a"})
    );
    assert_eq!(
        svc.get_preview_by_key(f.org_b, "same")
            .await
            .unwrap()
            .unwrap()
            .delta_json,
        json!({"org": "b"})
    );
    // A key that spells another org's prefix stays inside the caller's namespace.
    let sneaky = format!("{}:same", f.org_b);
    assert!(svc
        .get_preview_by_key(f.org_a, &sneaky)
        .await
        .unwrap()
        .is_none());
    let ta = f.store.tenant(f.user_a);
    assert!(ta.get_preview_by_key(&sneaky).await.unwrap().is_none());
    assert_eq!(
        ta.get_preview_by_key("same").await.unwrap().unwrap().id,
        a.id
    );
    assert!(!ta.invalidate_preview(&sneaky).await.unwrap());
    assert_eq!(f.count("sync_preview_cache").await, 2);
}

#[tokio::test]
async fn tenant_preview_functions() {
    let f = Fixture::new().await;
    let ta = f.store.tenant(f.user_a);
    assert_eq!(ta.user_id(), f.user_a);
    let e = ta
        .put_preview(&put("s1", "k1", json!({"x": 1})))
        .await
        .unwrap();
    assert_eq!(e.org_id, f.org_a, "org derived from the user");
    assert_eq!(
        e.computed_by,
        Some(f.user_a),
        "computed_by defaults to the tenant user"
    );
    assert_eq!(e.cache_key, "k1");
    let e2 = ta
        .put_preview(&put("s1", "k1", json!({"x": 2})))
        .await
        .unwrap();
    assert_eq!(e2.id, e.id);
    assert_eq!(
        ta.get_preview_by_key("k1")
            .await
            .unwrap()
            .unwrap()
            .delta_json,
        json!({"x": 2})
    );
    assert_eq!(
        ta.get_preview_by_sync_id("s1").await.unwrap().unwrap().id,
        e.id
    );
    // User B sees none of it.
    let tb = f.store.tenant(f.user_b);
    assert!(tb.get_preview_by_key("k1").await.unwrap().is_none());
    assert!(tb.get_preview_by_sync_id("s1").await.unwrap().is_none());
    assert!(!tb.invalidate_preview("k1").await.unwrap());
    assert_eq!(tb.invalidate_previews_for_sync("s1").await.unwrap(), 0);
    assert_eq!(ta.invalidate_previews_for_sync("s1").await.unwrap(), 1);
    ta.put_preview(&put("s1", "k1", json!({}))).await.unwrap();
    assert!(ta.invalidate_preview("k1").await.unwrap());
    assert_eq!(f.count("sync_preview_cache").await, 0);

    // A user without an auth.users_extended row belongs to no org.
    let ghost = f.store.tenant(uuid::Uuid::new_v4());
    let err = ghost
        .put_preview(&put("s1", "k1", json!({})))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Forbidden { .. }), "{err}");
    let err = ghost.get_preview_by_key("k1").await.unwrap_err();
    assert!(matches!(err, Error::Forbidden { .. }), "{err}");
    assert_eq!(f.count("sync_preview_cache").await, 0);
}
