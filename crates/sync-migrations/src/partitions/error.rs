//! [`PartitionError`]: everything partition maintenance can fail with.

use std::time::Duration;

use super::month::Month;
use sync_connect::{source_chain, ServerError};

/// Why a partition operation (list, ensure, archive) failed. Whatever the
/// variant, the transaction was rolled back: nothing was changed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PartitionError {
    /// A lock could not be had within the configured `lock_timeout` (SQLSTATE
    /// 55P03): another session holds the partition advisory lock (an `ensure` or
    /// `archive` on another replica) or a conflicting lock on `sync_activity_log`
    /// (e.g. a long transaction).
    #[error("{step}: gave up after waiting {waited:?} for a lock held by another session ({server}); nothing was changed. Retry later, find the holder in pg_locks, or wait longer (sync-migrate partitions: --wait-secs for another run, --lock-timeout-secs for table locks; PartitionOptions::wait_for_other_run / lock_timeout)")]
    LockTimeout {
        /// Which step waited, e.g. "taking the partition advisory lock".
        step: String,
        /// The `lock_timeout` in force.
        waited: Duration,
        /// What the server reported (SQLSTATE 55P03).
        server: Box<ServerError>,
    },

    /// A statement failed on the server; the transaction was rolled back.
    #[error("{step} failed: {server}; nothing was changed")]
    Database {
        /// Which step failed, e.g. "attaching sync_activity_log_2026_03".
        step: String,
        /// What the server reported.
        server: Box<ServerError>,
    },

    /// The connection broke; the server rolls the transaction back.
    #[error("{step}: the connection to the database was lost ({reason}); reconnect and run again — the transaction was rolled back")]
    ConnectionLost {
        /// Which step was running.
        step: String,
        /// What the driver said.
        reason: String,
    },

    /// `sync_activity_log` does not exist in the connected database.
    #[error("table sync_activity_log does not exist in this database (search_path schema); apply the migrations first")]
    NotMigrated,

    /// A month could not be parsed or is out of range.
    #[error(
        "invalid month {input:?}: expected YYYY-MM with a year from 1000 to 9999, e.g. 2026-03"
    )]
    InvalidMonth {
        /// What was given.
        input: String,
    },

    /// `months_ahead` is larger than [`MAX_MONTHS_AHEAD`](super::MAX_MONTHS_AHEAD).
    #[error("months ahead {given} is more than the maximum {max}; pick a smaller number")]
    TooManyMonthsAhead {
        /// What was given.
        given: u32,
        /// The maximum.
        max: u32,
    },

    /// An archive cut-off later than the current month (which would touch the
    /// current month or later ones).
    #[error("refusing to archive before {before}: the current month is {current}, and archive never touches the current month or later ones; choose {current} or an earlier month")]
    CutoffNotInPast {
        /// The cut-off given.
        before: Month,
        /// The current UTC month (server clock).
        current: Month,
    },

    /// A partition is neither a UTC month nor the catch-all up to MAXVALUE
    /// (e.g. a DEFAULT partition, or bounds not on month boundaries).
    #[error("partition {partition} of sync_activity_log has bounds {bounds}, which is neither one UTC month nor the catch-all up to MAXVALUE; ensure manages only that layout — re-partition or detach it by hand first")]
    UnexpectedLayout {
        /// Its name.
        partition: String,
        /// Its bounds as PostgreSQL prints them.
        bounds: String,
    },

    /// A table that ensure must create already exists outside the partition set
    /// (an archived month, a leftover).
    #[error("cannot create table {name}: a relation of that name already exists and is not a partition of sync_activity_log; rename or drop it, then run ensure again")]
    NameTaken {
        /// The schema-qualified name.
        name: String,
    },

    /// An interrupted split left state that no longer matches the table (e.g.
    /// the catch-all it was splitting was detached or dropped by hand).
    #[error("an interrupted split of the catch-all cannot be resumed: {detail}; nothing was changed. Inspect sync_activity_log_split_state, then drop the working objects (tables sync_activity_log_split_state, sync_activity_log_split_delta, sync_activity_log_split_staging with the tables attached to it, function sync_activity_log_split_capture()) and run ensure again")]
    StaleSplitState {
        /// What does not match.
        detail: String,
    },

    /// An export file or directory could not be written or read.
    #[error("{path}: {reason}; nothing was detached or restored — check the path, its permissions and free space, then run again")]
    ExportIo {
        /// The file or directory.
        path: String,
        /// What went wrong.
        reason: String,
    },

    /// An archive file or manifest is not what it claims (changed, damaged,
    /// truncated, another format).
    #[error("archive file {path} is invalid: {reason}; nothing was written — restore from an intact copy of the file and its manifest")]
    ArchiveFileInvalid {
        /// The file.
        path: String,
        /// Why it was refused.
        reason: String,
    },

    /// The archive's columns differ from `sync_activity_log`'s (another schema version).
    #[error("archive {path} has columns {archive} but sync_activity_log has {table}; nothing was written — restore into a database at the archive's schema version (manifest schema_version), or convert the file")]
    SchemaMismatch {
        /// The manifest.
        path: String,
        /// The archive's columns, `name type, …`.
        archive: String,
        /// The table's columns, `name type, …`.
        table: String,
    },

    /// Rows of the archive name organizations or users that no longer exist,
    /// and the restore was told to refuse them (the default).
    #[error("{org_rows} row(s) name organizations that no longer exist (e.g. {sample_org_ids:?}) and {user_rows} row(s) users that no longer exist (e.g. {sample_user_ids:?}); nothing was written — choose how to treat them: skip (leave those rows out) or as-deleted (leave out rows of missing organizations, clear user_id of missing users, as the foreign keys' ON DELETE would have)")]
    OrphanRows {
        /// Rows whose `org_id` is not in `organization`.
        org_rows: u64,
        /// Rows whose `user_id` is set but not in `auth.users_extended`.
        user_rows: u64,
        /// Up to 5 of the missing organization ids.
        sample_org_ids: Vec<uuid::Uuid>,
        /// Up to 5 of the missing user ids.
        sample_user_ids: Vec<uuid::Uuid>,
    },

    /// Some rows of the archive are already in `sync_activity_log` (same id
    /// and created_at): the file was restored before, or the month was never
    /// dropped.
    #[error("rows of archive {path} are already in {partition} ({server}); nothing was written — the month was already restored; to restore it again, archive it first")]
    RowsAlreadyPresent {
        /// The manifest.
        path: String,
        /// The partition holding them.
        partition: String,
        /// What the server reported (SQLSTATE 23505).
        server: Box<ServerError>,
    },

    /// The month to restore lies in the catch-all even after `ensure` (it is
    /// more than the months-ahead horizon after the current month).
    #[error("month {month} lies in the catch-all partition (from {catch_all_from}) beyond the partitions ensure keeps; nothing was written — restore it when it is within the current month + months ahead")]
    MonthInCatchAll {
        /// The archive's month.
        month: Month,
        /// The catch-all's lower bound.
        catch_all_from: String,
    },
}

impl PartitionError {
    /// The SQLSTATE of the server error behind this one, if any.
    pub fn code(&self) -> Option<&str> {
        self.server().and_then(|s| s.code.as_deref())
    }

    /// The server's report, when the error came from a statement.
    pub fn server(&self) -> Option<&ServerError> {
        match self {
            PartitionError::LockTimeout { server, .. }
            | PartitionError::Database { server, .. }
            | PartitionError::RowsAlreadyPresent { server, .. } => Some(server),
            _ => None,
        }
    }

    /// True for [`PartitionError::LockTimeout`].
    pub fn is_lock_timeout(&self) -> bool {
        matches!(self, PartitionError::LockTimeout { .. })
    }

    /// Maps a driver error of `step` (run under `lock_timeout`) to a [`PartitionError`].
    pub(crate) fn from_pg(
        step: impl Into<String>,
        lock_timeout: Duration,
        err: tokio_postgres::Error,
    ) -> Self {
        let step = step.into();
        let Some(db) = err.as_db_error() else {
            return PartitionError::ConnectionLost {
                step,
                reason: source_chain(&err),
            };
        };
        let server = Box::new(ServerError::from_db(db));
        if err.code() == Some(&tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE) {
            PartitionError::LockTimeout {
                step,
                waited: lock_timeout,
                server,
            }
        } else {
            PartitionError::Database { step, server }
        }
    }
}
