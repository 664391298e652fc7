//! Refusing to migrate through a transaction-mode pooler.
//!
//! Session advisory locks only protect anything when every statement of the
//! session reaches the same server backend. Behind PgBouncer in transaction mode
//! (Neon's `-pooler` endpoints), consecutive transactions may be served by
//! different backends, so the lock would be taken on one backend and the
//! migration run on another. Two signs are checked, cheapest first:
//! 1. the host name is a Neon pooled endpoint (contains `-pooler`);
//! 2. `pg_backend_pid()` changes between three consecutive transactions.
//!
//! The second only proves a pooler when it sees one switch; a quiet pooler may
//! serve the same backend three times, so the host check and the documentation
//! ("migrate through the direct endpoint") remain the first line.

use tokio_postgres::Client;

use crate::error::{Error, Result};

/// Fails with [`Error::PoolerDetected`] if `client` talks to a transaction-mode pooler.
pub async fn refuse_transaction_pooler(client: &Client) -> Result<()> {
    let mut pids = Vec::with_capacity(3);
    for _ in 0..3 {
        let pid: i32 = client
            .query_one("SELECT pg_backend_pid()", &[])
            .await
            .map_err(Error::db("probing for a connection pooler"))?
            .get(0);
        pids.push(pid);
    }
    if pids.windows(2).any(|w| w[0] != w[1]) {
        return Err(Error::PoolerDetected {
            reason: format!(
                "consecutive transactions were served by different server backends (pids {pids:?})"
            ),
            suggestion: String::new(),
        });
    }
    Ok(())
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
