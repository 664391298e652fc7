//! `doctor`'s replica check: is the given server a streaming standby, and how
//! far behind the primary does it replay.

use tokio_postgres::Client;

use crate::doctor::{Finding, Verdict};
use crate::error::{Error, Result};

/// A replica this many bytes of WAL behind the primary (or more) is worth a
/// look: one WAL segment. Reads routed with read-your-writes then mostly go to
/// the primary (sync-store waits a bounded time for replay).
pub const REPLICA_LAG_WARN_BYTES: f64 = 16.0 * 1024.0 * 1024.0;

/// What the standby says about itself.
const STANDBY_SQL: &str = "SELECT pg_is_in_recovery(), \
        pg_last_wal_replay_lsn()::text, \
        pg_last_wal_receive_lsn()::text, \
        CASE WHEN pg_is_in_recovery() THEN pg_get_wal_replay_pause_state() END, \
        (SELECT coalesce(status, 'hidden') FROM pg_stat_wal_receiver), \
        extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8";

/// The primary's position and the standby's distance from it, in bytes.
const PRIMARY_SQL: &str = "SELECT pg_current_wal_lsn()::text, \
        pg_wal_lsn_diff(pg_current_wal_lsn(), $1::text::pg_lsn)::float8";

/// The `replica_lag` check of `sync-migrate doctor --replica-url`: `replica`
/// must be a hot standby (`pg_is_in_recovery()`), receiving WAL
/// (`pg_stat_wal_receiver`), not paused, and replaying within
/// [`REPLICA_LAG_WARN_BYTES`] of `primary`'s `pg_current_wal_lsn()`.
///
/// Fail: not a standby, no WAL receiver (not streaming), replay position
/// unknown. Warn: replay paused, lag at or past the threshold, or the
/// receiver's status hidden (the role lacks `pg_read_all_stats`). Reads only.
///
/// # Errors
/// [`Error`] when a query on either server fails (e.g. the connection is lost).
pub async fn replica_lag(primary: &Client, replica: &Client) -> Result<Finding> {
    let row = replica
        .query_one(STANDBY_SQL, &[])
        .await
        .map_err(Error::db("reading the replica's recovery state"))?;
    let in_recovery: bool = row.get(0);
    let replayed: Option<String> = row.get(1);
    let received: Option<String> = row.get(2);
    let pause: Option<String> = row.get(3);
    let receiver: Option<String> = row.get(4);
    let replay_age: Option<f64> = row.get(5);
    let finding = |verdict, found: String, fix: &str| Finding {
        check: "replica_lag",
        verdict,
        found,
        fix: fix.to_owned(),
    };
    if !in_recovery {
        return Ok(finding(
            Verdict::Fail,
            "the replica URL's server is not in recovery: it is a primary, not a standby".into(),
            "point --replica-url at a hot standby (a Neon read replica, or pg_basebackup -R) of this database",
        ));
    }
    let Some(replayed) = replayed else {
        return Ok(finding(
            Verdict::Fail,
            "the standby reports no replay position".into(),
            "check the standby's log; it may still be starting",
        ));
    };
    let row = primary
        .query_one(PRIMARY_SQL, &[&replayed])
        .await
        .map_err(Error::db("reading the primary's WAL position"))?;
    let current: String = row.get(0);
    let lag: f64 = row.get::<_, f64>(1).max(0.0);
    let age = replay_age
        .map(|s| format!("; last replayed commit {s:.1} s ago"))
        .unwrap_or_default();
    let found = format!(
        "replayed {replayed} (received {}), primary at {current}: {lag:.0} bytes behind{age}; receiver {}",
        received.as_deref().unwrap_or("none"),
        receiver.as_deref().unwrap_or("absent"),
    );
    Ok(match (receiver.as_deref(), pause.as_deref()) {
        (None, _) => finding(
            Verdict::Fail,
            found,
            "the standby is not streaming from the primary: check primary_conninfo, the primary's pg_hba.conf replication line and max_wal_senders",
        ),
        (_, Some(state)) if state != "not paused" => finding(
            Verdict::Warn,
            format!("{found}; replay {state}"),
            "resume replay on the standby: SELECT pg_wal_replay_resume()",
        ),
        _ if lag >= REPLICA_LAG_WARN_BYTES => finding(
            Verdict::Warn,
            found,
            "the standby replays slowly: check its load, max_standby_streaming_delay and long queries on it; read-your-writes reads fall back to the primary meanwhile",
        ),
        (Some("hidden"), _) => finding(
            Verdict::Warn,
            found,
            "grant pg_read_all_stats to this role to see the WAL receiver's status",
        ),
        _ => finding(Verdict::Pass, found, ""),
    })
}
