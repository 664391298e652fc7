//! Untimed set-up shared by the rows: orgs with one user each, pools, stores.

use tokio_postgres::Client;
use uuid::Uuid;

use crate::BenchDb;

/// One org and its single user.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tenant {
    pub(crate) org: Uuid,
    pub(crate) user: Uuid,
}

/// Creates `n` orgs named `<tag> <i>` with one user each (set-based) and
/// returns them, ordered by org id. `tag` is a plain word.
pub(crate) async fn create_tenants(c: &Client, tag: &str, n: i32) -> Vec<Tenant> {
    c.batch_execute(&format!(
        "INSERT INTO organization (id, name) \
           SELECT gen_random_uuid(), '{tag} ' || i FROM generate_series(1, {n}) i; \
         INSERT INTO auth.users_extended (id, org_id, email) \
           SELECT gen_random_uuid(), o.id, 'u' || o.id || '@bench.invalid' FROM organization o \
            WHERE NOT EXISTS (SELECT 1 FROM auth.users_extended u WHERE u.org_id = o.id)"
    ))
    .await
    .expect("create orgs and users");
    c.query(
        "SELECT o.id, u.id FROM organization o JOIN auth.users_extended u ON u.org_id = o.id \
         WHERE starts_with(o.name, $1 || ' ') ORDER BY o.id",
        &[&tag],
    )
    .await
    .expect("read orgs")
    .iter()
    .map(|r| Tenant {
        org: r.get(0),
        user: r.get(1),
    })
    .collect()
}

/// A store on a small pool of the bench database's (superuser) login, sending
/// statements as `--unnamed-statements` says (default: cached per connection).
pub(crate) fn store(db: &BenchDb) -> sync_store::Store {
    let pool = sync_connect::pool(&db.config, &db.tls, 4).expect("pool");
    let mode = crate::STATEMENT_MODE
        .get()
        .copied()
        .unwrap_or(sync_store::StatementMode::CachedPerConnection);
    sync_store::Store::with_statement_mode(pool, mode)
}

/// Runs `sql` and panics with the server's message (set-up only).
pub(crate) async fn exec(c: &Client, sql: &str) {
    if let Err(e) = c.batch_execute(sql).await {
        panic!(
            "set-up statement failed: {}\n{sql}",
            sync_migrations::ServerError::from_pg(&e)
        );
    }
}
