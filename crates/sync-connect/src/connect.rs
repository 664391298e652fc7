//! Finding and opening the database connection the way `psql` would.

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::{Client, Config};

use crate::conninfo::split_tls_params;
use crate::error::{Error, Result};
use crate::tls::{tls_connector, tls_hint, TlsOptions};

/// Connection settings from, in order: `url` (a `postgres://` URL or a
/// `key=value` string), else the `DATABASE_URL` environment variable, else the
/// libpq environment (`PGHOST`, `PGPORT`, `PGUSER`, `PGDATABASE`, `PGPASSWORD`)
/// with libpq's defaults: the local unix socket (`/var/run/postgresql`, else
/// `/tmp`), user = the operating-system user, database = the user name.
///
/// libpq's TLS parameters that tokio-postgres cannot hold (`sslrootcert`,
/// `sslmode=verify-ca` / `verify-full`) are accepted and left out of the result:
/// read them with [`TlsOptions::resolve`] on the same `url`.
pub fn resolve_config(url: Option<&str>) -> Result<Config> {
    let from_env = std::env::var("DATABASE_URL").ok().filter(|s| !s.is_empty());
    if let Some(text) = url.map(str::to_owned).or(from_env) {
        let invalid = |e: &dyn std::fmt::Display| Error::Unavailable {
            reason: format!("the connection string is not valid: {e}"),
        };
        let (text, _) = split_tls_params(&text).map_err(|e| invalid(&e))?;
        return text.parse::<Config>().map_err(|e| invalid(&e));
    }
    let env = |k: &str| std::env::var(k).ok().filter(|s| !s.is_empty());
    let mut config = Config::new();
    match env("PGHOST") {
        Some(hosts) => {
            for h in hosts.split(',') {
                config.host(h);
            }
        }
        None => {
            let socket_dir = ["/var/run/postgresql", "/tmp"]
                .into_iter()
                .find(|d| {
                    std::path::Path::new(d).join(".s.PGSQL.5432").exists()
                        || std::path::Path::new(d).is_dir() && *d == "/var/run/postgresql"
                })
                .unwrap_or("localhost");
            config.host(socket_dir);
        }
    }
    if let Some(port) = env("PGPORT") {
        let port = port.parse::<u16>().map_err(|_| Error::Unavailable {
            reason: format!("PGPORT={port} is not a port number"),
        })?;
        config.port(port);
    }
    let user = env("PGUSER")
        .or_else(|| env("USER"))
        .unwrap_or_else(|| "postgres".to_owned());
    config.user(&user);
    config.dbname(env("PGDATABASE").unwrap_or_else(|| user.clone()));
    if let Some(password) = env("PGPASSWORD") {
        config.password(password);
    }
    config.application_name("sync-migrate");
    Ok(config)
}

/// Opens a connection secured as `tls` says (see [`crate::SslMode`]) and drives
/// it on the current tokio runtime.
///
/// Fails with [`Error::Unavailable`] when the server cannot be reached, refuses
/// the login, or its certificate does not pass the check `tls` asks for; the
/// message then says what to do (e.g. pass the CA with `--ca-file`).
///
/// ```no_run
/// # async fn demo() -> sync_connect::Result<()> {
/// let url = "postgresql://app@db.example.com/app?sslmode=verify-full";
/// let config = sync_connect::resolve_config(Some(url))?;
/// let tls = sync_connect::TlsOptions::resolve(Some(url), None)?;
/// let client = sync_connect::connect(&config, &tls).await?;
/// let second = sync_connect::connect(&config, &tls).await?;
/// sync_connect::pooler::refuse_transaction_pooler_two_connections(&client, &second).await?;
/// # Ok(()) }
/// ```
pub async fn connect(config: &Config, tls: &TlsOptions) -> Result<Client> {
    let (wire, connector) = tls_connector(config, tls)?;
    let (client, connection) = wire
        .connect(connector)
        .await
        .map_err(|e| connect_error(&e, tls, config))?;
    tokio::spawn(async move {
        // The connection ends when the client is dropped; an error here is
        // reported to the client's next call.
        let _ = connection.await;
    });
    Ok(client)
}

/// A `deadpool_postgres` pool of at most `max_size` connections over `config`,
/// each secured as `tls` says (the same connector as [`connect`]). Connections are
/// opened lazily: a wrong certificate shows up on the first `pool.get()`.
/// Recycling is `RecyclingMethod::Fast` (no query on checkout).
///
/// ```no_run
/// # async fn demo() -> sync_connect::Result<()> {
/// let url = std::env::var("DATABASE_URL").ok();
/// let config = sync_connect::resolve_config(url.as_deref())?;
/// let tls = sync_connect::TlsOptions::resolve(url.as_deref(), None)?;
/// let pool = sync_connect::pool(&config, &tls, 16)?;
/// let client = pool.get().await.expect("a pooled connection");
/// # Ok(()) }
/// ```
pub fn pool(config: &Config, tls: &TlsOptions, max_size: usize) -> Result<Pool> {
    let (wire, connector) = tls_connector(config, tls)?;
    let manager = Manager::from_config(
        wire,
        connector,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(max_size)
        .build()
        .map_err(|e| Error::Unavailable {
            reason: format!("building the connection pool: {e}"),
        })
}

/// Like [`pool`], with every wait bounded: a checkout waits at most `wait` for
/// a free connection, and opening a new connection (TCP, TLS, start-up) at
/// most `wait` as well. A checkout that runs out of time fails with deadpool's
/// `PoolError::Timeout`, instead of queueing forever behind a stuck pool.
///
/// # Errors
/// [`Error::Unavailable`] when the TLS settings cannot be used or the pool
/// cannot be built.
#[allow(clippy::result_large_err)] // the crate-wide Error, as in `pool`
pub fn pool_with_wait(
    config: &Config,
    tls: &TlsOptions,
    max_size: usize,
    wait: std::time::Duration,
) -> Result<Pool> {
    let (wire, connector) = tls_connector(config, tls)?;
    let manager = Manager::from_config(
        wire,
        connector,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(max_size)
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .wait_timeout(Some(wait))
        .create_timeout(Some(wait))
        .recycle_timeout(Some(wait))
        .build()
        .map_err(|e| Error::Unavailable {
            reason: format!("building the connection pool: {e}"),
        })
}

fn connect_error(e: &tokio_postgres::Error, tls: &TlsOptions, config: &Config) -> Error {
    let mode = tls.effective_mode(config);
    let mut reason = crate::error::ServerError::from_pg(e).to_string();
    if let Some(hint) = tls_hint(e, mode) {
        reason = format!("{reason} (sslmode={mode}). {hint}");
    }
    Error::Unavailable { reason }
}
