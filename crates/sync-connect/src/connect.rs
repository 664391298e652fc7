//! Finding and opening the database connection the way `psql` would.

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::config::Host;
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
/// The operating-system user is found as libpq finds it: the name of the
/// *effective* uid in the user database (`getpwuid_r`, so NSS sources count);
/// `$USER` is only a fallback when that uid has no name.
///
/// # Errors
/// [`Error::Unavailable`] when the connection string is not valid, `PGPORT` is
/// not a port number, or no user name can be found (set `PGUSER`).
///
/// libpq's TLS parameters that tokio-postgres cannot hold (`sslrootcert`,
/// `sslmode=verify-ca` / `verify-full`) are accepted and left out of the result:
/// read them with [`TlsOptions::resolve`] on the same `url`.
pub fn resolve_config(url: Option<&str>) -> Result<Config> {
    let from_env = std::env::var("DATABASE_URL").ok().filter(|s| !s.is_empty());
    if let Some(text) = url.map(str::to_owned).or(from_env) {
        let invalid = |e: &dyn std::fmt::Display| Error::InvalidConfig {
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
        let port = port.parse::<u16>().map_err(|_| Error::InvalidConfig {
            reason: format!("PGPORT={port} is not a port number"),
        })?;
        config.port(port);
    }
    let user = match env("PGUSER") {
        Some(user) => user,
        None => os_user_name().ok_or_else(|| Error::InvalidConfig {
            reason: format!(
                "cannot find the name of the operating-system user (uid {}) to log in as; \
                 set PGUSER or pass a connection string",
                uzers::get_effective_uid()
            ),
        })?,
    };
    config.user(&user);
    config.dbname(env("PGDATABASE").unwrap_or_else(|| user.clone()));
    if let Some(password) = env("PGPASSWORD") {
        config.password(password);
    }
    config.application_name("sync-migrate");
    Ok(config)
}

/// How long one connection attempt may take when the connection string sets no
/// `connect_timeout` (libpq waits forever; a migrator or service should not).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest a [`pool`] checkout waits for a free connection.
pub const POOL_WAIT_TIMEOUT: Duration = Duration::from_secs(30);

/// How long one attempt to reach one host may take: the connection string's
/// `connect_timeout` (as libpq, per host), else [`DEFAULT_CONNECT_TIMEOUT`].
pub fn connect_timeout(config: &Config) -> Duration {
    config
        .get_connect_timeout()
        .copied()
        .unwrap_or(DEFAULT_CONNECT_TIMEOUT)
}

/// The whole bound of [`connect`]: the per-host timeout times the number of hosts.
fn connect_bound(config: &Config) -> Duration {
    let hosts = u32::try_from(config.get_hosts().len().max(1)).unwrap_or(u32::MAX);
    connect_timeout(config).saturating_mul(hosts)
}

/// `config` with its per-host socket timeout set (tokio-postgres applies it to
/// the TCP connect only; the whole start-up is bounded around it).
fn with_connect_timeout(config: &Config) -> Config {
    let mut config = config.clone();
    config.connect_timeout(connect_timeout(&config));
    config
}

fn describe_target(config: &Config) -> String {
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .map(|h| match h {
            Host::Tcp(name) => format!("{name}:{port}"),
            Host::Unix(path) => format!("{} (port {port})", path.display()),
        })
        .collect();
    hosts.join(", ")
}

/// The operating-system user's name as libpq finds it: the effective uid's entry
/// in the user database, else `$USER`.
pub fn os_user_name() -> Option<String> {
    uzers::get_user_by_uid(uzers::get_effective_uid())
        .map(|u| u.name().to_string_lossy().into_owned())
        .or_else(|| std::env::var("USER").ok().filter(|s| !s.is_empty()))
}

/// Opens a connection secured as `tls` says (see [`crate::SslMode`]) and drives
/// it on the current tokio runtime.
///
/// Bounded: the whole connection start-up (TCP, TLS, login) of each host must
/// finish within the connection string's `connect_timeout`, else
/// [`DEFAULT_CONNECT_TIMEOUT`] (a server that accepts and never answers fails
/// here instead of hanging).
///
/// # Errors
/// [`Error::Unavailable`] when the server cannot be reached or does not answer
/// in time, refuses the login, or its certificate does not pass the check `tls`
/// asks for; the message then says what to do (e.g. pass the CA with
/// `--ca-file`, or raise `connect_timeout`).
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
    let (wire, connector) = tls_connector(&with_connect_timeout(config), tls)?;
    let bound = connect_bound(config);
    let (client, connection) = tokio::time::timeout(bound, wire.connect(connector))
        .await
        .map_err(|_| Error::Unavailable {
            reason: format!(
                "no answer from {} within {} s (connect_timeout); the server or something \
                 in between accepts connections but does not speak PostgreSQL: check the \
                 host and port, or raise connect_timeout",
                describe_target(config),
                bound.as_secs_f64()
            ),
        })?
        .map_err(|e| connect_error(&e, tls, config))?;
    tokio::spawn(async move {
        // The connection ends when the client is dropped; an error here is
        // reported to the client's next call.
        let _ = connection.await;
    });
    Ok(client)
}

/// Like [`connect`], for a session that receives `NOTIFY`s (after the caller
/// runs `LISTEN channel` on the client): every notification the server sends
/// is forwarded to the returned receiver. The receiver yields `None` once the
/// connection has ended (server restart, `pg_terminate_backend`, network
/// loss): the caller then reconnects. Needs a session, so a direct endpoint or
/// a session-mode pooler, never a transaction-mode pooler.
///
/// # Errors
/// As [`connect`].
pub async fn connect_listening(
    config: &Config,
    tls: &TlsOptions,
) -> Result<(
    Client,
    tokio::sync::mpsc::UnboundedReceiver<tokio_postgres::Notification>,
)> {
    let (wire, connector) = tls_connector(&with_connect_timeout(config), tls)?;
    let bound = connect_bound(config);
    let (client, mut connection) = tokio::time::timeout(bound, wire.connect(connector))
        .await
        .map_err(|_| Error::Unavailable {
            reason: format!(
                "no answer from {} within {} s (connect_timeout): check the host and port, \
                 or raise connect_timeout",
                describe_target(config),
                bound.as_secs_f64()
            ),
        })?
        .map_err(|e| connect_error(&e, tls, config))?;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(tokio_postgres::AsyncMessage::Notification(n))) => {
                    if tx.send(n).is_err() {
                        break;
                    }
                }
                Some(Ok(_)) => {}
                // The connection ended or failed: dropping `tx` tells the caller.
                Some(Err(_)) | None => break,
            }
        }
    });
    Ok((client, rx))
}

/// A `deadpool_postgres` pool of at most `max_size` connections over `config`,
/// each secured as `tls` says (the same connector as [`connect`]). Connections are
/// opened lazily: a wrong certificate shows up on the first `pool.get()`.
/// Recycling is `RecyclingMethod::Fast` (no query on checkout).
///
/// Every wait is bounded: opening a connection as [`connect`] (`connect_timeout`,
/// else [`DEFAULT_CONNECT_TIMEOUT`]), waiting for a free connection
/// [`POOL_WAIT_TIMEOUT`], recycling one the same as opening. A checkout that runs
/// out of time fails with deadpool's `PoolError::Timeout`.
///
/// # Errors
/// [`Error::Unavailable`] when the TLS settings are unusable or the pool cannot
/// be built (no tokio runtime feature).
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
    let bound = connect_bound(config);
    let (wire, connector) = tls_connector(&with_connect_timeout(config), tls)?;
    let manager = Manager::from_config(
        wire,
        connector,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(max_size)
        .runtime(Runtime::Tokio1)
        .create_timeout(Some(bound))
        .recycle_timeout(Some(bound))
        .wait_timeout(Some(POOL_WAIT_TIMEOUT))
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

#[cfg(test)]
mod settings_tests {
    use super::*;

    #[test]
    fn unusable_settings_are_invalid_config_not_unavailable() {
        for url in ["postgres://h:notaport/db", "host=h port= user"] {
            let e = resolve_config(Some(url)).expect_err(url);
            assert!(matches!(e, Error::InvalidConfig { .. }), "{url}: {e:?}");
        }
        let e = TlsOptions::from_connection_string("postgres://h/db?sslmode=bogus")
            .expect_err("sslmode=bogus");
        assert!(matches!(e, Error::InvalidConfig { .. }), "{e:?}");
        assert!(resolve_config(Some("postgres://u@h:5432/db")).is_ok());
    }
}
