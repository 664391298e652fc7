//! Finding and opening the database connection the way `psql` would.

use tokio_postgres::{Client, Config, NoTls};

use crate::error::{Error, Result};

/// Connection settings from, in order: `url` (a `postgres://` URL or a
/// `key=value` string), else the `DATABASE_URL` environment variable, else the
/// libpq environment (`PGHOST`, `PGPORT`, `PGUSER`, `PGDATABASE`, `PGPASSWORD`)
/// with libpq's defaults: the local unix socket (`/var/run/postgresql`, else
/// `/tmp`), user = the operating-system user, database = the user name.
pub fn resolve_config(url: Option<&str>) -> Result<Config> {
    let from_env = std::env::var("DATABASE_URL").ok().filter(|s| !s.is_empty());
    if let Some(text) = url.map(str::to_owned).or(from_env) {
        return text.parse::<Config>().map_err(|e| Error::Unavailable {
            reason: format!("the connection string is not valid: {e}"),
        });
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

/// Opens a plain (non-TLS) connection and drives it on the current tokio runtime.
pub async fn connect(config: &Config) -> Result<Client> {
    let (client, connection) = config
        .connect(NoTls)
        .await
        .map_err(|e| Error::Unavailable {
            reason: crate::error::ServerError::from_pg(&e).to_string(),
        })?;
    tokio::spawn(async move {
        // The connection ends when the client is dropped; an error here is
        // reported to the client's next call.
        let _ = connection.await;
    });
    Ok(client)
}
