//! `StatementMode::CachedPerConnection`: the same prepared statements, on one
//! pooled connection, serve different tenants — RLS must still isolate them.

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use sync_store::{ActivityFilter, ProgressDelta, StartSync, StatementMode, Store, SyncEntityType};
use sync_tests::TestDb;
use tokio_postgres::NoTls;
use uuid::Uuid;

/// A pool of exactly one connection: every call reuses it and its statements.
fn single(config: &tokio_postgres::Config) -> Pool {
    let manager = Manager::from_config(
        config.clone(),
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager).max_size(1).build().unwrap()
}

#[tokio::test]
async fn cached_statements_serve_each_tenant_only_its_own_rows() {
    let db = TestDb::migrated().await;
    let (org_a, org_b, user_a, user_b) = (
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
    );
    let admin = db.client().await;
    admin
        .execute(
            "INSERT INTO organization (id, name) VALUES ($1, 'A'), ($2, 'B')",
            &[&org_a, &org_b],
        )
        .await
        .unwrap();
    admin
        .execute(
            "INSERT INTO auth.users_extended (id, org_id) VALUES ($1, $2), ($3, $4)",
            &[&user_a, &org_a, &user_b, &org_b],
        )
        .await
        .unwrap();

    // Service scope (owner) in cached mode.
    let svc_pool = single(&db.config());
    let svc =
        Store::with_statement_mode(svc_pool.clone(), StatementMode::CachedPerConnection).service();
    assert_eq!(
        Store::with_statement_mode(svc_pool.clone(), StatementMode::CachedPerConnection)
            .statement_mode(),
        StatementMode::CachedPerConnection
    );
    for org in [org_a, org_b] {
        let mut s = StartSync::new("same-id", SyncEntityType::Product);
        s.total_items = Some(100);
        svc.start_sync(org, &s).await.unwrap();
    }
    for _ in 0..10 {
        svc.report_progress(
            org_a,
            "same-id",
            &ProgressDelta {
                processed: 2,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    }
    assert_eq!(
        svc.get_sync(org_a, "same-id")
            .await
            .unwrap()
            .unwrap()
            .processed_count,
        20
    );
    assert_eq!(
        svc.get_sync(org_b, "same-id")
            .await
            .unwrap()
            .unwrap()
            .processed_count,
        0
    );

    // Tenant scope on a non-owner login role, one connection, alternating users.
    let (_, login) = db.login_role("cache").await;
    let pool = single(&login);
    let store = Store::with_statement_mode(pool.clone(), StatementMode::CachedPerConnection);
    for round in 0..8 {
        for (user, org, expected) in [(user_a, org_a, 20 + round), (user_b, org_b, round)] {
            let t = store.tenant(user);
            let p = t
                .get_sync("same-id")
                .await
                .unwrap()
                .expect("own sync visible");
            assert_eq!(
                p.org_id, org,
                "round {round}: a cached plan leaked another org's row"
            );
            assert_eq!(p.processed_count, expected);
            t.report_progress(
                "same-id",
                &ProgressDelta {
                    processed: 1,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
            let page = t
                .list_activity(&ActivityFilter::default(), None, 100)
                .await
                .unwrap();
            assert!(!page.entries.is_empty());
            assert!(
                page.entries.iter().all(|e| e.org_id == org),
                "round {round}: activity of another org"
            );
        }
    }
    // A user without an org is still refused.
    let stranger = store.tenant(Uuid::new_v4());
    assert!(matches!(
        stranger.get_sync("same-id").await,
        Err(sync_store::Error::Forbidden { .. })
    ));

    // The statements really were prepared once and reused on the one connection,
    // and the connection is clean (no role, no claims, no open transaction).
    let conn = pool.get().await.unwrap();
    let prepared: i64 = conn
        .query_one("SELECT count(*) FROM pg_prepared_statements", &[])
        .await
        .unwrap()
        .get(0);
    assert!(
        (2..=10).contains(&prepared),
        "expected a few cached statements, found {prepared}"
    );
    let row = conn
        .query_one(
            "SELECT current_user::text, coalesce(current_setting('request.jwt.claims', true), ''), \
                    now() = statement_timestamp()",
            &[],
        )
        .await
        .unwrap();
    assert!(row.get::<_, String>(0).ends_with("_cache"));
    assert_eq!(row.get::<_, String>(1), "");
}
