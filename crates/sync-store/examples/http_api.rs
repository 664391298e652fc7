//! Serves the spec's four API endpoints over HTTP (tenant scope, RLS enforced).
//!
//! ```text
//! DATABASE_URL=postgresql://app@localhost/db cargo run -p sync-store --features http --example http_api
//! curl -H 'Authorization: Bearer <user-uuid>' localhost:8080/api/v1/sync/progress/<sync-id>
//! ```
//! The pool's role must be able to `SET ROLE sync_tenant` (migration 0001 grants
//! it to the role that applied the migrations). `BIND` overrides `127.0.0.1:8080`.

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url =
        std::env::var("DATABASE_URL").map_err(|_| "set DATABASE_URL to the database to serve")?;
    let config: tokio_postgres::Config = url.parse()?;
    let manager = Manager::from_config(
        config,
        tokio_postgres::NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    let pool = Pool::builder(manager).max_size(16).build()?;
    let store = sync_store::Store::new(pool);
    let bind = std::env::var("BIND").unwrap_or_else(|_| "127.0.0.1:8080".into());
    let listener = tokio::net::TcpListener::bind(&bind).await?;
    eprintln!("serving the sync API on http://{bind}");
    axum::serve(listener, sync_store::http::router(store)).await?;
    Ok(())
}
