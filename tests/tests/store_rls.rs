//! Row-level security as a login role that is neither superuser nor owner: with
//! users of two orgs, a user of org A can neither select, insert, update nor
//! delete org B's rows in any of the three tables, nor read any partition
//! directly, and sees nothing without claims.
mod store_common;

use serde_json::json;
use store_common::Fixture;
use sync_store::{
    ActivityFilter, NewActivity, PutPreview, StartSync, Store, SyncAction, SyncEntityType,
    SyncStatus, SyncType,
};
use time::macros::datetime;
use tokio_postgres::Client;
use uuid::Uuid;

const TABLES: [&str; 3] = ["sync_preview_cache", "sync_progress", "sync_activity_log"];
const PARTITIONS: [&str; 5] = [
    "sync_activity_log_2025_11",
    "sync_activity_log_2025_12",
    "sync_activity_log_2026_01",
    "sync_activity_log_2026_02",
    "sync_activity_log_future",
];

/// Rows in both orgs, in every table and every partition.
async fn seed(f: &Fixture) {
    let svc = f.store.service();
    for org in [f.org_a, f.org_b] {
        svc.put_preview(
            org,
            &PutPreview::new(SyncType::Odoo, "s1", "k", json!({"org": org})),
        )
        .await
        .unwrap();
        let mut s = StartSync::new("s1", SyncEntityType::Order);
        s.total_items = Some(100);
        svc.start_sync(org, &s).await.unwrap();
        let entries: Vec<NewActivity> = [
            datetime!(2025-11-02 00:00 UTC),
            datetime!(2025-12-02 00:00 UTC),
            datetime!(2026-01-02 00:00 UTC),
            datetime!(2026-02-02 00:00 UTC),
            datetime!(2026-11-02 00:00 UTC),
        ]
        .into_iter()
        .map(|at| {
            let mut e = NewActivity::new(SyncAction::RecordCreate, SyncStatus::Completed);
            e.created_at = Some(at);
            e
        })
        .collect();
        svc.append_activity_many(org, &entries).await.unwrap();
    }
}

/// Runs `sql` in a transaction as sync_tenant with (or without) the user's
/// claims, then rolls back. Returns the rows affected or the SQLSTATE.
async fn as_tenant(client: &mut Client, user: Option<Uuid>, sql: &str) -> Result<u64, String> {
    let tx = client.transaction().await.unwrap();
    tx.batch_execute("SET LOCAL ROLE sync_tenant")
        .await
        .unwrap();
    if let Some(user) = user {
        tx.execute(
            "SELECT set_config('request.jwt.claims', $1, true)",
            &[&format!("{{\"sub\":\"{user}\"}}")],
        )
        .await
        .unwrap();
    }
    let r = tx
        .execute(sql, &[])
        .await
        .map_err(|e| e.code().unwrap().code().to_owned());
    let _ = tx.rollback().await;
    r
}

async fn count_as_tenant(client: &mut Client, user: Option<Uuid>, sql: &str) -> i64 {
    let tx = client.transaction().await.unwrap();
    tx.batch_execute("SET LOCAL ROLE sync_tenant")
        .await
        .unwrap();
    if let Some(user) = user {
        tx.execute(
            "SELECT set_config('request.jwt.claims', $1, true)",
            &[&format!("{{\"sub\":\"{user}\"}}")],
        )
        .await
        .unwrap();
    }
    let n = tx.query_one(sql, &[]).await.unwrap().get(0);
    tx.rollback().await.unwrap();
    n
}

#[tokio::test]
async fn tenant_api_as_login_role_sees_only_its_org() {
    let f = Fixture::new().await;
    seed(&f).await;
    let (role, config) = f.db.login_role("api").await;
    let store = Store::new(sync_tests::pool_for(&config));
    let mut raw = sync_tests::connect(&config).await;
    let who: (String, bool) = {
        let r = raw
            .query_one(
                "SELECT current_user::text, rolsuper FROM pg_roles WHERE rolname = current_user",
                &[],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(who, (role.clone(), false));
    // The service scope as this role has no rights at all (it is not the owner).
    let err = store.service().get_sync(f.org_a, "s1").await.unwrap_err();
    assert!(matches!(err, sync_store::Error::Forbidden { .. }), "{err}");

    let ta = store.tenant(f.user_a);
    assert_eq!(ta.get_sync("s1").await.unwrap().unwrap().org_id, f.org_a);
    let e = ta.get_preview_by_key("k").await.unwrap().unwrap();
    assert_eq!((e.org_id, e.delta_json), (f.org_a, json!({"org": f.org_a})));
    let acts = ta
        .list_activity(&ActivityFilter::default(), None, 100)
        .await
        .unwrap()
        .entries;
    assert_eq!(acts.len(), 6, "5 appended + sync_start");
    assert!(acts.iter().all(|a| a.org_id == f.org_a));
    let m = ta.metrics(None).await.unwrap();
    assert_eq!((m.cache_live, m.active_syncs, m.activity_total), (1, 1, 6));
    // Writes through the tenant API land in the user's org only.
    ta.report_progress(
        "s1",
        &sync_store::ProgressDelta {
            processed: 5,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let b = f
        .store
        .service()
        .get_sync(f.org_b, "s1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(b.processed_count, 0);

    // Raw SQL as the same role, switched to sync_tenant with user A's claims.
    let a = Some(f.user_a);
    for t in TABLES {
        let n = count_as_tenant(
            &mut raw,
            a,
            &format!("SELECT count(*) FROM {t} WHERE org_id = '{}'", f.org_b),
        )
        .await;
        assert_eq!(n, 0, "select of org B's rows in {t}");
        let n = count_as_tenant(&mut raw, a, &format!("SELECT count(*) FROM {t}")).await;
        assert!(n > 0, "own rows of {t} visible");
        let n = count_as_tenant(&mut raw, None, &format!("SELECT count(*) FROM {t}")).await;
        assert_eq!(n, 0, "nothing of {t} without claims");
    }
    // INSERT into org B: refused by the policies' WITH CHECK.
    let b_org = f.org_b;
    for sql in [
        format!("INSERT INTO sync_preview_cache (org_id, sync_type, sync_id, delta_json, cache_key) VALUES ('{b_org}', 'odoo', 'x', '{{}}', '{b_org}:evil')"),
        format!("INSERT INTO sync_progress (org_id, sync_id, entity_type) VALUES ('{b_org}', 'evil', 'order')"),
        format!("INSERT INTO sync_activity_log (org_id, action, status) VALUES ('{b_org}', 'record_create', 'completed')"),
    ] {
        assert_eq!(as_tenant(&mut raw, a, &sql).await, Err("42501".to_owned()), "{sql}");
    }
    // UPDATE / DELETE of org B's rows: nothing matches.
    for sql in [
        format!(
            "UPDATE sync_preview_cache SET delta_json = '{{\"pwned\":1}}' WHERE org_id = '{b_org}'"
        ),
        format!("UPDATE sync_progress SET processed_count = 99 WHERE org_id = '{b_org}'"),
        "UPDATE sync_progress SET processed_count = 1".to_owned(),
        format!("DELETE FROM sync_preview_cache WHERE org_id = '{b_org}'"),
        format!("DELETE FROM sync_progress WHERE org_id = '{b_org}'"),
    ] {
        let affected = as_tenant(&mut raw, a, &sql).await.unwrap();
        let expect = u64::from(sql == "UPDATE sync_progress SET processed_count = 1");
        assert_eq!(affected, expect, "{sql}");
    }
    // Moving an own row into org B: refused.
    assert_eq!(
        as_tenant(
            &mut raw,
            a,
            &format!("UPDATE sync_progress SET org_id = '{b_org}'")
        )
        .await,
        Err("42501".to_owned())
    );
    // The audit trail is append-only for tenants: UPDATE / DELETE not granted.
    for sql in [
        "UPDATE sync_activity_log SET record_count = 1",
        "DELETE FROM sync_activity_log",
    ] {
        assert_eq!(
            as_tenant(&mut raw, a, sql).await,
            Err("42501".to_owned()),
            "{sql}"
        );
    }
    // Partitions directly: no privilege.
    for p in PARTITIONS {
        assert_eq!(
            as_tenant(&mut raw, a, &format!("SELECT * FROM {p}")).await,
            Err("42501".to_owned()),
            "{p}"
        );
    }
    // Org B's rows are untouched.
    let b_rows: i64 = f
        .admin
        .query_one(
            "SELECT (SELECT count(*) FROM sync_preview_cache WHERE org_id = $1 AND delta_json = jsonb_build_object('org', $1::text)) \
                  + (SELECT count(*) FROM sync_progress WHERE org_id = $1 AND processed_count = 0) \
                  + (SELECT count(*) FROM sync_activity_log WHERE org_id = $1)",
            &[&f.org_b],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(b_rows, 1 + 1 + 6);
    assert!(ta.invalidate_preview("k").await.unwrap());
    assert!(f
        .store
        .service()
        .get_preview_by_key(f.org_b, "k")
        .await
        .unwrap()
        .is_some());
}

/// With UPDATE / DELETE granted directly to a login role (and RLS still on), the
/// activity log's UPDATE / DELETE policies touch only the own org's rows; a
/// partition read directly shows nothing even with SELECT granted.
#[tokio::test]
async fn activity_update_delete_policies_and_partitions_with_grants() {
    let f = Fixture::new().await;
    seed(&f).await;
    let (role, config) = f.db.login_role("auditor").await;
    f.admin
        .batch_execute(&format!(
            "GRANT USAGE ON SCHEMA auth TO {role}; \
             GRANT SELECT ON auth.users_extended TO {role}; \
             GRANT EXECUTE ON FUNCTION auth.uid() TO {role}; \
             GRANT SELECT, UPDATE, DELETE ON sync_activity_log TO {role}; \
             GRANT SELECT ON {} TO {role};",
            PARTITIONS.join(", ")
        ))
        .await
        .unwrap();
    let raw = sync_tests::connect(&config).await;
    let b_before: i64 = f
        .admin
        .query_one(
            "SELECT count(*) FROM sync_activity_log WHERE org_id = $1",
            &[&f.org_b],
        )
        .await
        .unwrap()
        .get(0);
    let a_rows: i64 = f
        .admin
        .query_one(
            "SELECT count(*) FROM sync_activity_log WHERE org_id = $1",
            &[&f.org_a],
        )
        .await
        .unwrap()
        .get(0);
    raw.execute(
        "SELECT set_config('request.jwt.claims', $1, false)",
        &[&format!("{{\"sub\":\"{}\"}}", f.user_a)],
    )
    .await
    .unwrap();
    let updated = raw
        .execute(
            "UPDATE sync_activity_log SET record_count = record_count + 1000",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(updated as i64, a_rows, "UPDATE touched only org A's rows");
    let moved = raw
        .execute(
            &format!("UPDATE sync_activity_log SET org_id = '{}'", f.org_b),
            &[],
        )
        .await
        .unwrap_err();
    assert_eq!(
        moved.code().unwrap().code(),
        "42501",
        "cannot move rows into org B"
    );
    let deleted_b = raw
        .execute(
            "DELETE FROM sync_activity_log WHERE org_id = $1",
            &[&f.org_b],
        )
        .await
        .unwrap();
    assert_eq!(deleted_b, 0);
    for p in PARTITIONS {
        let n: i64 = raw
            .query_one(&format!("SELECT count(*) FROM {p}"), &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 0, "{p} read directly shows nothing");
    }
    let deleted = raw
        .execute("DELETE FROM sync_activity_log", &[])
        .await
        .unwrap();
    assert_eq!(deleted as i64, a_rows);
    let (b_after, b_changed): (i64, i64) = {
        let r = f
            .admin
            .query_one(
                "SELECT count(*), count(*) FILTER (WHERE record_count >= 1000) FROM sync_activity_log WHERE org_id = $1",
                &[&f.org_b],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!((b_after, b_changed), (b_before, 0));
    // Without claims: nothing.
    raw.batch_execute("RESET request.jwt.claims").await.unwrap();
    let n: i64 = raw
        .query_one("SELECT count(*) FROM sync_activity_log", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
    assert_eq!(
        raw.execute("DELETE FROM sync_activity_log", &[])
            .await
            .unwrap(),
        0
    );
    assert_eq!(f.count("sync_activity_log").await, b_before);
}
