//! Shared fixture of the store_* tests: a fresh migrated database, two orgs with
//! one user each, a store over a superuser pool, and an admin connection.
#![allow(dead_code, unreachable_pub)]

use sync_store::Store;
use sync_tests::TestDb;
use tokio_postgres::Client;
use uuid::Uuid;

pub struct Fixture {
    pub db: TestDb,
    pub store: Store,
    pub admin: Client,
    pub org_a: Uuid,
    pub org_b: Uuid,
    pub user_a: Uuid,
    pub user_b: Uuid,
}

impl Fixture {
    pub async fn new() -> Fixture {
        let db = TestDb::migrated().await;
        let admin = db.client().await;
        let (org_a, org_b, user_a, user_b) = (
            Uuid::new_v4(),
            Uuid::new_v4(),
            Uuid::new_v4(),
            Uuid::new_v4(),
        );
        admin
            .execute(
                "INSERT INTO organization (id, name) VALUES ($1, 'org A'), ($2, 'org B')",
                &[&org_a, &org_b],
            )
            .await
            .unwrap();
        admin
            .execute(
                "INSERT INTO auth.users_extended (id, org_id, email) \
                 VALUES ($1, $2, 'a@example.com'), ($3, $4, 'b@example.com')",
                &[&user_a, &org_a, &user_b, &org_b],
            )
            .await
            .unwrap();
        let store = Store::new(db.pool());
        Fixture {
            db,
            store,
            admin,
            org_a,
            org_b,
            user_a,
            user_b,
        }
    }

    /// `SELECT count(*) FROM <table>` as the superuser.
    pub async fn count(&self, table: &str) -> i64 {
        self.admin
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await
            .unwrap()
            .get(0)
    }

    /// A store over a pool of a fresh login role (not superuser, not owner,
    /// member of sync_tenant).
    pub async fn login_store(&self, label: &str) -> (String, Store) {
        let (role, config) = self.db.login_role(label).await;
        (role, Store::new(sync_tests::pool_for(&config)))
    }
}

/// A snapshot of everything in the three tables, to prove "nothing was written".
pub async fn snapshot(admin: &Client) -> String {
    let row = admin
        .query_one(
            "SELECT (SELECT coalesce(jsonb_agg(to_jsonb(c) ORDER BY c.id), '[]') FROM sync_preview_cache c)::text \
                 || (SELECT coalesce(jsonb_agg(to_jsonb(p) ORDER BY p.id), '[]') FROM sync_progress p)::text \
                 || (SELECT coalesce(jsonb_agg(to_jsonb(l) ORDER BY l.id), '[]') FROM sync_activity_log l)::text",
            &[],
        )
        .await
        .unwrap();
    row.get(0)
}
