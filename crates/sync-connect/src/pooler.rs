//! Refusing to migrate through a transaction-mode pooler.
//!
//! Session advisory locks only protect anything when every statement of the
//! session reaches the same server session. Behind PgBouncer in transaction mode
//! (Neon's `-pooler` endpoints) a server session belongs to a client only for
//! one transaction: between transactions it goes back to the pool, may serve
//! other clients, and the client's next transaction may land on another one. So
//! a lock would be taken on one server session and the migration run on another.
//!
//! Checks, cheapest first: [`refuse_pooler_host`] (a Neon `-pooler` host name),
//! then the session-state probe of [`probe_transaction_pooler`].

use tokio_postgres::{Client, SimpleQueryMessage};

use crate::error::{Error, Result};

const SETTING: &str = "sync_migrations.pooler_probe";

/// What [`probe_transaction_pooler`] saw.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PoolerProbe {
    /// `Some(what was seen)` when server sessions are shared between client
    /// connections or change between transactions (a transaction-mode pooler).
    pub transaction_pooler: Option<String>,
    /// Whether a second connection took part (only then is an idle
    /// transaction-mode pooler detectable): `false` when none was given, or when
    /// it got no answer within [`SECOND_CONNECTION_WAIT`] — a session-mode pooler
    /// with no free server session (a transaction-mode pooler would have handed
    /// it the first connection's idle one). Such a connection still has its
    /// query pending: close it rather than reuse it.
    pub used_second_connection: bool,
}

/// How long the second connection of [`probe_transaction_pooler`] may wait for
/// its answer before the probe goes on without it.
pub const SECOND_CONNECTION_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Probes whether `client` talks to a transaction-mode pooler, with the help of
/// `second` (another connection with the same settings) when given. Leaves no
/// setting behind on `client`'s session.
///
/// How: `client` sets a session-level setting, `sync_migrations.pooler_probe`,
/// to a fresh random token (`SELECT set_config(…, false)`, a transaction of its
/// own). Then
/// - `second`, if given, reads that setting. It can only see the token if the
///   pooler handed it the very server session `client` had just used, i.e. server
///   sessions are shared between client connections. An idle PgBouncer in
///   transaction mode gives the most recently released server session to the
///   next client, so this catches the quiet pooler;
/// - `client` reads its token back in three more transactions. If it is ever
///   missing, its transactions are not all served by one server session. This
///   catches the busy pooler and round-robin pools, where `second` may have got
///   another server session.
///
/// Either sighting is proof (the token is random and only this probe writes it),
/// so the probe never flags a direct connection or a session-mode pooler.
/// Without `second`, an idle transaction-mode pooler looks exactly like a direct
/// connection (every transaction happens to get the same server session back),
/// which is why the CLI and the pool entry points always probe with two
/// connections.
///
/// All probe statements use the simple query protocol (no prepared statement
/// that a pooler could lose between transactions).
///
/// SQL: `SELECT set_config('sync_migrations.pooler_probe', <token>, false),
/// pg_backend_pid()`, then `SELECT current_setting('sync_migrations.pooler_probe',
/// true), pg_backend_pid()` (once on `second`, three times on `client`), then
/// `RESET sync_migrations.pooler_probe`.
pub async fn probe_transaction_pooler(
    client: &Client,
    second: Option<&Client>,
) -> Result<PoolerProbe> {
    let token = random_token();
    let (_, first_pid) = probe_row(
        client,
        &format!("SELECT set_config('{SETTING}', '{token}', false), pg_backend_pid()"),
    )
    .await?;
    let read = format!("SELECT current_setting('{SETTING}', true), pg_backend_pid()");
    let mut seen = None;
    let mut used_second_connection = false;
    if let Some(second) = second {
        let answer = tokio::time::timeout(SECOND_CONNECTION_WAIT, probe_row(second, &read)).await;
        let (value, pid) = match answer {
            Ok(row) => {
                used_second_connection = true;
                row?
            }
            Err(_elapsed) => (None, String::new()),
        };
        if value.as_deref() == Some(token.as_str()) {
            seen = Some(format!(
                "a second connection was served by the server session (backend pid {pid}) that holds \
                 the first connection's session settings: the pooler shares server sessions between \
                 clients between transactions (transaction or statement pooling)"
            ));
        }
    }
    if seen.is_none() {
        for _ in 0..3 {
            let (value, pid) = probe_row(client, &read).await?;
            if value.as_deref() != Some(token.as_str()) {
                seen = Some(format!(
                    "a session setting made on backend pid {first_pid} was gone in a later transaction \
                     (served by backend pid {pid}): consecutive transactions of one connection are \
                     served by different server sessions (transaction or statement pooling)"
                ));
                break;
            }
        }
    }
    client
        .batch_execute(&format!("RESET {SETTING}"))
        .await
        .map_err(Error::db("probing for a connection pooler"))?;
    Ok(PoolerProbe {
        transaction_pooler: seen,
        used_second_connection,
    })
}

/// Fails with [`Error::PoolerDetected`] if the single-connection probe of
/// [`probe_transaction_pooler`] sees a transaction-mode pooler. With one
/// connection only a pooler that switches server sessions is seen; prefer
/// [`refuse_transaction_pooler_two_connections`] when you can open a second
/// connection. The error names the address the server behind the pooler reports
/// (`inet_server_addr()`, `port`, `current_database()`), i.e. the direct endpoint.
pub async fn refuse_transaction_pooler(client: &Client) -> Result<()> {
    refuse(client, None).await
}

/// Fails with [`Error::PoolerDetected`] if [`probe_transaction_pooler`] with
/// `second` (another connection to the same endpoint, with the same settings)
/// sees a transaction-mode pooler. Detects an idle pooler too.
pub async fn refuse_transaction_pooler_two_connections(
    client: &Client,
    second: &Client,
) -> Result<()> {
    refuse(client, Some(second)).await
}

async fn refuse(client: &Client, second: Option<&Client>) -> Result<()> {
    let probe = probe_transaction_pooler(client, second).await?;
    refuse_on(client, probe).await
}

/// [`Error::PoolerDetected`] (naming the direct endpoint) if `probe` saw a pooler.
pub async fn refuse_on(client: &Client, probe: PoolerProbe) -> Result<()> {
    match probe.transaction_pooler {
        None => Ok(()),
        Some(reason) => Err(Error::PoolerDetected {
            reason: format!("this connection goes through a transaction-mode pooler: {reason}"),
            suggestion: direct_endpoint(client).await,
        }),
    }
}

/// ` such as postgresql://user@addr:port/db (…)` from what the server itself reports.
async fn direct_endpoint(client: &Client) -> String {
    let sql = "SELECT host(inet_server_addr()), current_setting('port'), current_database(), current_user";
    let rows = match client.simple_query(sql).await {
        Ok(rows) => rows,
        Err(_) => return String::new(),
    };
    let Some(row) = rows.iter().find_map(|m| match m {
        SimpleQueryMessage::Row(r) => Some(r),
        _ => None,
    }) else {
        return String::new();
    };
    let (addr, port, db, user) = (
        row.get(0),
        row.get(1).unwrap_or("5432"),
        row.get(2).unwrap_or(""),
        row.get(3).unwrap_or(""),
    );
    match addr {
        Some(addr) => {
            let host = if addr.contains(':') { format!("[{addr}]") } else { addr.to_owned() };
            format!(
                " such as postgresql://{user}@{host}:{port}/{db} (the address the server behind the \
                 pooler reports; for Neon, the endpoint host name without `-pooler`)"
            )
        }
        None => format!(
            " on the database server itself: the pooler reaches it over a unix socket, port {port}, \
             database {db}"
        ),
    }
}

async fn probe_row(client: &Client, sql: &str) -> Result<(Option<String>, String)> {
    let messages = client
        .simple_query(sql)
        .await
        .map_err(Error::db("probing for a connection pooler"))?;
    messages
        .iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some((
                r.get(0).filter(|v| !v.is_empty()).map(str::to_owned),
                r.get(1).unwrap_or("?").to_owned(),
            )),
            _ => None,
        })
        .ok_or_else(|| Error::Unavailable {
            reason: "probing for a connection pooler: the server returned no row".to_owned(),
        })
}

/// 128 random bits as hex, from the standard library's randomly seeded hasher.
fn random_token() -> String {
    use std::hash::{BuildHasher, Hasher};
    let half = || {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0),
        );
        h.write_u32(std::process::id());
        h.finish()
    };
    format!("{:016x}{:016x}", half(), half())
}

/// Fails with [`Error::PoolerDetected`] when `host` is a Neon pooled endpoint
/// (`ep-…-pooler.region.aws.neon.tech`), naming the direct host to use instead.
pub fn refuse_pooler_host(host: &str) -> Result<()> {
    if let Some(direct) = direct_host_for(host) {
        return Err(Error::PoolerDetected {
            reason: format!("host {host} is a pooled (PgBouncer, transaction mode) endpoint"),
            suggestion: format!(" such as {direct}"),
        });
    }
    Ok(())
}

/// The direct endpoint for a Neon pooled host name, if `host` is one.
pub fn direct_host_for(host: &str) -> Option<String> {
    let (first, rest) = host.split_once('.').unwrap_or((host, ""));
    let direct = first.strip_suffix("-pooler")?;
    Some(if rest.is_empty() {
        direct.to_owned()
    } else {
        format!("{direct}.{rest}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn neon_pooler_host_maps_to_direct_host() {
        assert_eq!(
            direct_host_for("ep-cool-darkness-123456-pooler.us-east-2.aws.neon.tech").as_deref(),
            Some("ep-cool-darkness-123456.us-east-2.aws.neon.tech")
        );
        assert_eq!(
            direct_host_for("ep-cool-darkness-123456.us-east-2.aws.neon.tech"),
            None
        );
        assert_eq!(direct_host_for("localhost"), None);
        assert!(matches!(
            refuse_pooler_host("db-pooler.example.com"),
            Err(Error::PoolerDetected { .. })
        ));
        assert!(refuse_pooler_host("127.0.0.1").is_ok());
    }
}
