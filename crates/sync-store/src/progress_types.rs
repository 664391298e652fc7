//! Row and input types of sync progress.

use time::OffsetDateTime;
use uuid::Uuid;

use crate::enums::{SyncEntityType, SyncStatus};
use crate::validate::OUTCOME_KEY;

/// A `sync_progress` row, with the database-computed elapsed, speed and ETA.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct SyncProgress {
    /// Row id.
    pub id: Uuid,
    /// Owning org.
    pub org_id: Uuid,
    /// The sync (unique per org).
    pub sync_id: String,
    /// The worker job, if any.
    pub job_id: Option<String>,
    /// What is synced.
    pub entity_type: SyncEntityType,
    /// The item being processed.
    pub current_item: i32,
    /// Total items; `None` = not known yet (no ETA, no automatic completion).
    pub total_items: Option<i32>,
    /// Items done.
    pub processed_count: i32,
    /// Items failed.
    pub failed_count: i32,
    /// `(processed + failed) * 60 / elapsed`, rounded to 2 places (trigger).
    pub speed_items_per_min: Option<f64>,
    /// Seconds left (trigger); `None` while unknown.
    pub eta_seconds: Option<i32>,
    /// Seconds since start, frozen at completion (trigger).
    pub elapsed_seconds: i32,
    /// Start time.
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    /// Last change.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    /// When it finished (completed, failed or cancelled).
    #[serde(with = "time::serde::rfc3339::option")]
    pub completed_at: Option<OffsetDateTime>,
    /// Source system label.
    pub source_system: Option<String>,
    /// Last batch number reported.
    pub batch_number: Option<i32>,
    /// Caller metadata (a JSON object; `_sync_outcome` is reserved).
    pub metadata: serde_json::Value,
    /// Who started it.
    pub initiated_by: Option<Uuid>,
    /// Last flush of the worker's progress reporter (`None`: no reporter
    /// attached yet). Migration 0027.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub heartbeat_at: Option<OffsetDateTime>,
    /// When a cancel was requested (`request_cancel`, `POST …/cancel`): the
    /// worker's reporter learns it at its next flush and ends the sync
    /// cancelled. `None`: not requested.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub cancel_requested_at: Option<OffsetDateTime>,
    /// Running, with a stall threshold, and no heartbeat for longer than it:
    /// the worker is probably dead or stuck. Computed by the database at read
    /// time (function `sync_progress_stalled`), never stored.
    #[serde(default)]
    pub stalled: bool,
}

impl SyncProgress {
    /// The lifecycle state: in progress until `completed_at` is set; then failed
    /// or cancelled per `metadata._sync_outcome.status`, else completed (with
    /// errors when `failed_count > 0`) — the same rule the activity trigger uses.
    pub fn status(&self) -> SyncStatus {
        if self.completed_at.is_none() {
            return SyncStatus::InProgress;
        }
        match self.outcome_field("status") {
            Some("failed") => SyncStatus::Failed,
            Some("cancelled") => SyncStatus::Cancelled,
            _ if self.failed_count > 0 => SyncStatus::CompletedWithErrors,
            _ => SyncStatus::Completed,
        }
    }

    /// The error message given to `fail_sync` / `cancel_sync`, if any.
    pub fn outcome_error_message(&self) -> Option<&str> {
        self.outcome_field("error_message")
    }

    fn outcome_field(&self, key: &str) -> Option<&str> {
        self.metadata.get(OUTCOME_KEY)?.get(key)?.as_str()
    }
}

/// The counts after one `report_progress` call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProgressCounts {
    /// Items done so far.
    pub processed_count: i32,
    /// Items failed so far.
    pub failed_count: i32,
    /// The total, if known.
    pub total_items: Option<i32>,
    /// Set when this increment completed the sync (handled reached the total).
    pub completed_at: Option<OffsetDateTime>,
}

/// The answer of a keyed tick (`report_progress_keyed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct TickOutcome {
    /// The counts after the call.
    pub counts: ProgressCounts,
    /// `true` when this call applied the tick; `false` when its key had already
    /// been applied (a repeat: nothing changed).
    pub applied: bool,
}

/// Input of `start_sync`.
#[derive(Debug, Clone, PartialEq)]
pub struct StartSync {
    /// The sync id, unique per org (1..=255 characters).
    pub sync_id: String,
    /// What is synced.
    pub entity_type: SyncEntityType,
    /// Total items, `None` when not known yet (`>= 0`).
    pub total_items: Option<i32>,
    /// Source system label (at most 50 characters).
    pub source_system: Option<String>,
    /// Worker job id (at most 255 characters).
    pub job_id: Option<String>,
    /// A JSON object (at most [`crate::validate::MAX_METADATA_BYTES`], nested at most
    /// [`crate::validate::MAX_JSON_DEPTH`], no NUL in strings or keys); `_sync_outcome` is refused.
    pub metadata: Option<serde_json::Value>,
    /// Who started it; in tenant scope `None` or the tenant user (`None` = the user).
    pub initiated_by: Option<Uuid>,
}

impl StartSync {
    /// A sync of `entity_type` with nothing else set.
    pub fn new(sync_id: impl Into<String>, entity_type: SyncEntityType) -> StartSync {
        StartSync {
            sync_id: sync_id.into(),
            entity_type,
            total_items: None,
            source_system: None,
            job_id: None,
            metadata: None,
            initiated_by: None,
        }
    }
}

/// One progress report: increments and the worker's position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ProgressDelta {
    /// Added to `processed_count` (`>= 0`).
    pub processed: i32,
    /// Added to `failed_count` (`>= 0`).
    pub failed: i32,
    /// New `current_item` (`>= 0`), or keep.
    pub current_item: Option<i32>,
    /// New `batch_number` (`>= 0`), or keep.
    pub batch_number: Option<i32>,
}
