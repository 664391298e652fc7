//! `StatementMode::CachedPerConnection`: the same prepared statements, on one
//! pooled connection, serve different tenants — RLS must still isolate them.

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use sync_store::{ActivityFilter, ProgressDelta, StartSync, StatementMode, Store, SyncEntityType};

mod store_common;
use store_common::Fixture;
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
    let f = Fixture::new().await;
    let (db, org_a, org_b, user_a, user_b) = (&f.db, f.org_a, f.org_b, f.user_a, f.user_b);

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

/// 60 activity rows of `org` over three months, mixed entity types, actions
/// and statuses, several with equal timestamps.
async fn seed_activity(admin: &tokio_postgres::Client, org: Uuid) {
    admin
        .execute(
            "INSERT INTO sync_activity_log (org_id, sync_id, entity_type, action, status, created_at) \
             SELECT $1, 'sync-' || (i % 3), \
                    (ARRAY['product','order','customer']::sync_entity_type[])[1 + i % 3], \
                    (ARRAY['record_create','record_update']::sync_action[])[1 + i % 2], \
                    (ARRAY['completed','failed','completed']::sync_status_type[])[1 + i % 3], \
                    '2025-11-20 00:00+00'::timestamptz + (i / 2) * interval '1 day' \
               FROM generate_series(0, 59) i",
            &[&org],
        )
        .await
        .unwrap();
}

/// What the one connection of `pool` holds prepared: (listing statements,
/// listing statements on a generic plan, all statements).
async fn prepared(pool: &Pool) -> (i64, i64, i64) {
    let conn = pool.get().await.unwrap();
    let row = conn
        .query_one(
            "SELECT count(*) FILTER (WHERE statement LIKE '%FROM sync_activity_log WHERE%'), \
                    count(*) FILTER (WHERE statement LIKE '%FROM sync_activity_log WHERE%' \
                                       AND generic_plans > 0), \
                    count(*) \
               FROM pg_prepared_statements \
              WHERE statement NOT LIKE '%pg_prepared_statements%'",
            &[],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1), row.get(2))
}

#[tokio::test]
async fn cached_listings_stay_one_statement_per_filter_and_window_shape_in_both_scopes() {
    let f = Fixture::new().await;
    let (db, org, user) = (&f.db, f.org_a, f.user_a);
    seed_activity(&f.admin, org).await;

    let svc_pool = single(&db.config());
    let svc =
        Store::with_statement_mode(svc_pool.clone(), StatementMode::CachedPerConnection).service();
    let (_, login) = db.login_role("generic").await;
    let tenant_pool = single(&login);
    let tenant =
        Store::with_statement_mode(tenant_pool.clone(), StatementMode::CachedPerConnection)
            .tenant(user);
    let by_entity = ActivityFilter {
        entity_type: Some(SyncEntityType::Order),
        ..Default::default()
    };
    // PostgreSQL plans a prepared statement's first five executions for their
    // parameters, then keeps a generic plan only if it costs no more.
    for _ in 0..8 {
        let first = svc
            .list_activity(org, &ActivityFilter::default(), None, 7)
            .await
            .unwrap();
        let next = svc
            .list_activity(org, &by_entity, first.next, 7)
            .await
            .unwrap();
        assert_eq!(first.entries.len(), 7);
        assert!(next
            .entries
            .iter()
            .all(|e| e.entity_type == Some(SyncEntityType::Order)));
        let t_first = tenant
            .list_activity(&ActivityFilter::default(), None, 7)
            .await
            .unwrap();
        let t_next = tenant
            .list_activity(&by_entity, t_first.next, 7)
            .await
            .unwrap();
        assert_eq!(t_first, first);
        assert_eq!(t_next, next);
    }
    // Listings read created_at windows newest first (see sync-store's
    // listing_window): one cached statement per filter shape and window shape
    // used (here: the two filters, the first read through three windows, the
    // cursor's page through one). They keep custom plans on purpose: planned
    // with the window's bounds, they open only the window's partitions, which
    // a generic plan (all partitions locked at each execution) would not.
    for (scope, pool) in [("service", &svc_pool), ("tenant", &tenant_pool)] {
        let (listings, _generic, _) = prepared(pool).await;
        assert!(
            (2..=8).contains(&listings),
            "{scope}: {listings} listing statements, expected one per filter and window shape"
        );
    }
}

#[tokio::test]
async fn cached_listings_page_like_unnamed_ones_and_the_cache_stays_bounded() {
    let f = Fixture::new().await;
    let (db, org) = (&f.db, f.org_a);
    seed_activity(&f.admin, org).await;
    let pool = single(&db.config());
    let cached =
        Store::with_statement_mode(pool.clone(), StatementMode::CachedPerConnection).service();
    let unnamed = Store::new(db.pool()).service();

    // Every combination of the six filters, with and without a cursor, in four
    // page sizes that fall in four different buckets (10, 20, 50, 500): more
    // distinct statements than the cache's bound of 256.
    let mid = time::macros::datetime!(2025-12-01 00:00 UTC);
    let mut wanted = std::collections::HashSet::new();
    for shape in 0u32..64 {
        let on = |bit: u32| shape & (1 << bit) != 0;
        let filter = ActivityFilter {
            entity_type: on(0).then_some(SyncEntityType::Product),
            action: on(1).then_some(sync_store::SyncAction::RecordCreate),
            status: on(2).then_some(sync_store::SyncStatus::Completed),
            sync_id: on(3).then(|| "sync-0".to_owned()),
            since: on(4).then_some(mid - time::Duration::days(8)),
            until: on(5).then_some(mid + time::Duration::days(8)),
        };
        for limit in [1, 15, 30, 300] {
            // Walk every page in both modes: the same entries, the same cursors.
            let (mut after_c, mut after_u) = (None, None);
            let mut pages = 0;
            loop {
                let c = cached
                    .list_activity(org, &filter, after_c, limit)
                    .await
                    .unwrap();
                let u = unnamed
                    .list_activity(org, &filter, after_u, limit)
                    .await
                    .unwrap();
                wanted.insert((shape, after_c.is_some(), limit));
                assert_eq!(c, u, "shape {shape:06b}, limit {limit}, page {pages}");
                assert!(c.entries.len() <= limit as usize);
                pages += 1;
                match c.next {
                    Some(next) => (after_c, after_u) = (Some(next), u.next),
                    None => break,
                }
                if pages == 4 {
                    break;
                }
            }
        }
    }
    assert!(
        wanted.len() > 256,
        "only {} statements wanted",
        wanted.len()
    );
    let (_, _, all) = prepared(&pool).await;
    assert!(
        (1..=sync_store::MAX_CACHED_STATEMENTS as i64).contains(&all),
        "{all} statements prepared on one connection"
    );
}
