//! One `tracing` span per database operation of the store.
//!
//! Every public call that talks to the database runs inside exactly one span
//! named `sync_store.op` (target `sync_store`, level INFO) with these fields:
//!
//! | field | value |
//! | --- | --- |
//! | `operation` | the public function, e.g. `report_progress` |
//! | `scope` | `service` or `tenant` |
//! | `org` | the org named by a service call (absent in tenant scope, where the database finds it) |
//! | `user` | the tenant user's id (tenant scope only) |
//! | `sync_id` | the sync the call is about, when there is one |
//! | `rows` | rows returned or affected, on success |
//! | `error` | the error kind on failure, e.g. `not_found`, `conflict` |
//! | `sqlstate` | the server's SQLSTATE on failure, when there is one |
//!
//! No field ever carries claims JSON, preview deltas, metadata, error messages
//! written by callers, server messages (which can quote values) or passwords.

use std::future::Future;

use tracing::field::Empty;
use tracing::{Instrument, Span};

use crate::activity_types::ActivityPage;
use crate::error::{Error, Result};
use crate::metrics::SyncMetrics;
use crate::preview_types::PreviewEntry;
use crate::progress_types::{ProgressCounts, SyncProgress};
use crate::store::Scope;

/// The span of one operation (see the module docs for its fields).
pub(crate) fn op_span(operation: &'static str, scope: Scope, sync_id: Option<&str>) -> Span {
    let span = tracing::info_span!(
        target: "sync_store",
        "sync_store.op",
        operation,
        scope = Empty,
        org = Empty,
        user = Empty,
        sync_id = sync_id,
        rows = Empty,
        error = Empty,
        sqlstate = Empty,
    );
    match scope {
        Scope::Service(org) => {
            span.record("scope", "service");
            if let Some(org) = org {
                span.record("org", tracing::field::display(org));
            }
        }
        Scope::Tenant(user) => {
            span.record("scope", "tenant");
            span.record("user", tracing::field::display(user));
        }
    }
    span
}

/// Runs `fut` inside `span`, then records `rows` (success) or `error` and
/// `sqlstate` (failure) on it.
pub(crate) async fn traced<T: RowCount>(
    span: Span,
    fut: impl Future<Output = Result<T>>,
) -> Result<T> {
    let out = fut.instrument(span.clone()).await;
    match &out {
        Ok(v) => {
            span.record("rows", v.row_count());
        }
        Err(e) => {
            span.record("error", e.kind());
            if let Some(code) = e.code() {
                span.record("sqlstate", code);
            }
        }
    }
    out
}

/// How many rows a result stands for (returned or affected).
pub(crate) trait RowCount {
    fn row_count(&self) -> u64;
}

impl RowCount for u64 {
    fn row_count(&self) -> u64 {
        *self
    }
}

impl<T> RowCount for Vec<T> {
    fn row_count(&self) -> u64 {
        self.len() as u64
    }
}

impl<T> RowCount for Option<T> {
    fn row_count(&self) -> u64 {
        u64::from(self.is_some())
    }
}

impl RowCount for crate::progress_types::TickOutcome {
    fn row_count(&self) -> u64 {
        u64::from(self.applied)
    }
}

impl RowCount for crate::activity_types::BatchOutcome {
    fn row_count(&self) -> u64 {
        if self.applied {
            self.rows
        } else {
            0
        }
    }
}

impl RowCount for ActivityPage {
    fn row_count(&self) -> u64 {
        self.entries.len() as u64
    }
}

macro_rules! one_row {
    ($($t:ty),*) => {$(
        impl RowCount for $t {
            fn row_count(&self) -> u64 {
                1
            }
        }
    )*};
}

one_row!(
    uuid::Uuid,
    PreviewEntry,
    SyncProgress,
    ProgressCounts,
    SyncMetrics,
    crate::activity_types::ActivityEntry
);

impl Error {
    /// A short, stable name of the variant, safe to log (no caller data).
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Error::NotFound { .. } => "not_found",
            Error::SyncFinished { .. } => "sync_finished",
            Error::Conflict { .. } => "conflict",
            Error::Forbidden { .. } => "forbidden",
            Error::InvalidInput { .. } => "invalid_input",
            Error::Unavailable { .. } => "unavailable",
            Error::OutcomeUnknown { .. } => "outcome_unknown",
            Error::UnknownLabel { .. } => "unknown_label",
            Error::Database { .. } => "database",
            Error::Driver { .. } => "driver",
            Error::Decode { .. } => "decode",
        }
    }
}
