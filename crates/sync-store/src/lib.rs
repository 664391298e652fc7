#![doc = include_str!("../README.md")]
#![deny(unsafe_code, rust_2018_idioms, nonstandard_style)]
#![warn(missing_docs, unreachable_pub)]

mod activity;
mod activity_types;
pub mod api;
mod copy_types;
mod cursor;
mod enums;
mod error;
mod listing_window;
mod metrics;
mod preview;
mod preview_types;
mod progress;
mod progress_types;
mod progress_versions;
pub mod replica;
mod reporter;
mod reporter_sql;
mod reporter_task;
mod series;
mod sql;
mod store;
mod trace;
pub mod validate;

pub use activity_types::{ActivityEntry, ActivityFilter, ActivityPage, BatchOutcome, NewActivity};
pub use cursor::{ActivityCursor, BadCursor};
pub use enums::{SyncAction, SyncEntityType, SyncStatus, SyncType, UnknownLabel};
pub use error::{Error, Result, ServerError};
pub use metrics::{ActivitySource, SyncMetrics, SyncOutcomes};
pub use preview_types::{PreviewEntry, PutPreview};
pub use progress_types::{ProgressCounts, ProgressDelta, StartSync, SyncProgress, TickOutcome};
pub use progress_versions::{ProgressVersion, MAX_VERSION_IDS};
pub use replica::{Consistency, ConsistencyToken, ReplicaOptions, ReplicaStats};
pub use reporter::{Attached, ProgressReporter, ReporterConfig, StopReason};
pub use series::{ActivitySeries, SeriesPoint, MAX_SERIES_BUCKETS, MIN_BUCKET_SECONDS};
pub use store::{
    ServiceScope, StatementMode, Store, TenantScope, MAX_CACHED_STATEMENTS, TENANT_ROLE,
};
