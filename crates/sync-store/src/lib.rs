#![doc = include_str!("../README.md")]
#![deny(unsafe_code, rust_2018_idioms, nonstandard_style)]
#![warn(missing_docs, unreachable_pub)]

mod activity;
mod copy_types;
mod cursor;
mod enums;
mod error;
mod metrics;
pub mod partitions;
mod preview;
mod progress;
mod sql;
mod store;
pub mod validate;

pub use activity::{ActivityEntry, ActivityFilter, ActivityPage, NewActivity};
pub use cursor::{ActivityCursor, BadCursor};
pub use enums::{SyncAction, SyncEntityType, SyncStatus, SyncType, UnknownLabel};
pub use error::{Error, Result, ServerError};
pub use metrics::SyncMetrics;
pub use preview::{PreviewEntry, PutPreview};
pub use progress::{ProgressCounts, ProgressDelta, StartSync, SyncProgress};
pub use store::{ServiceScope, Store, TenantScope, TENANT_ROLE};
