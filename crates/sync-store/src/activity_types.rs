//! Row, input, filter and page types of the activity log.

use time::OffsetDateTime;
use uuid::Uuid;

use crate::cursor::ActivityCursor;
use crate::enums::{SyncAction, SyncEntityType, SyncStatus};

/// A `sync_activity_log` row.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct ActivityEntry {
    /// Row id (with `created_at`, the primary key).
    pub id: Uuid,
    /// Owning org.
    pub org_id: Uuid,
    /// The sync, if any.
    pub sync_id: Option<String>,
    /// What kind of record, if any.
    pub entity_type: Option<SyncEntityType>,
    /// What happened.
    pub action: SyncAction,
    /// Outcome.
    pub status: SyncStatus,
    /// Records concerned.
    pub record_count: i32,
    /// Duration in seconds, if known.
    pub duration_seconds: Option<f64>,
    /// Error text, if any.
    pub error_message: Option<String>,
    /// Acting user, if any.
    pub user_id: Option<Uuid>,
    /// When (partition key).
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

impl ActivityEntry {
    /// The cursor that continues a listing after this entry.
    pub fn cursor(&self) -> ActivityCursor {
        ActivityCursor {
            created_at: self.created_at,
            id: self.id,
        }
    }
}

/// Input of `append_activity` / `append_activity_many` / `append_activity_batch`.
#[derive(Debug, Clone, PartialEq)]
pub struct NewActivity {
    /// The row id; `None` = a fresh random id (the server's `gen_random_uuid()`,
    /// or the client's v4 uuid in bulk). Given **with** `created_at` (the log's
    /// primary key is `(id, created_at)`), it is the entry's idempotency key:
    /// `append_activity` of the same `(id, created_at)` again writes nothing and
    /// returns the stored entry, so the call is retry-safe. `id` without
    /// `created_at` is refused (a retry would get another `created_at`). Must be
    /// `None` in tenant scope.
    pub id: Option<Uuid>,
    /// The sync, if any (at most 255 characters).
    pub sync_id: Option<String>,
    /// What kind of record, if any.
    pub entity_type: Option<SyncEntityType>,
    /// What happened.
    pub action: SyncAction,
    /// Outcome.
    pub status: SyncStatus,
    /// Records concerned (`>= 0`).
    pub record_count: i32,
    /// Duration in seconds (finite, `0..=`[`crate::validate::MAX_DURATION_SECONDS`], at most
    /// 28 decimal places in its shortest form; stored exactly).
    pub duration_seconds: Option<f64>,
    /// Error text (at most [`crate::validate::MAX_ERROR_MESSAGE_BYTES`]).
    pub error_message: Option<String>,
    /// Acting user; in tenant scope it must be the tenant user or `None` (= the user).
    pub user_id: Option<Uuid>,
    /// When; `None` = the server's `now()` (transaction time). Must be `None` in tenant scope.
    /// Within [`crate::validate::MIN_TIMESTAMP`]..[`crate::validate::MAX_TIMESTAMP`] in UTC;
    /// stored floored to whole microseconds.
    pub created_at: Option<OffsetDateTime>,
}

impl NewActivity {
    /// An entry with only `action` and `status` set.
    pub fn new(action: SyncAction, status: SyncStatus) -> NewActivity {
        NewActivity {
            id: None,
            sync_id: None,
            entity_type: None,
            action,
            status,
            record_count: 0,
            duration_seconds: None,
            error_message: None,
            user_id: None,
            created_at: None,
        }
    }
}

/// The answer of `append_activity_batch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct BatchOutcome {
    /// `true` when this call wrote the batch; `false` when its key had already
    /// been applied (a repeat: nothing written).
    pub applied: bool,
    /// Rows the batch wrote (by this call, or by the call that applied the key).
    pub rows: u64,
}

/// Filters of an activity listing; every `None` matches all.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ActivityFilter {
    /// Only this entity type.
    pub entity_type: Option<SyncEntityType>,
    /// Only this action.
    pub action: Option<SyncAction>,
    /// Only this status.
    pub status: Option<SyncStatus>,
    /// Only this sync.
    pub sync_id: Option<String>,
    /// Only entries with `created_at >= since`.
    pub since: Option<OffsetDateTime>,
    /// Only entries with `created_at < until`.
    pub until: Option<OffsetDateTime>,
}

/// One page of a listing, newest first.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ActivityPage {
    /// The entries, newest first by `(created_at, id)`.
    pub entries: Vec<ActivityEntry>,
    /// Pass as `after` to get the next page; `None` on the last page.
    pub next: Option<ActivityCursor>,
}
