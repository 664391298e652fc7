#![doc = include_str!("../README.md")]
#![deny(unsafe_code, rust_2018_idioms, nonstandard_style)]
#![warn(missing_docs, unreachable_pub)]

mod adopt;
mod apply;
mod checksum_text;
mod doctor;
mod doctor_replica;
mod embedded;
mod error;
mod history;
pub mod lock;
mod options;
pub mod partitions;
mod rollback;
mod rollups;
mod startup;
mod status;
mod verify;

pub use adopt::{adopt, AdoptOptions, AdoptReport, DiffClass, Difference};
pub use apply::{apply, apply_pool, ApplyReport};
pub use doctor::{doctor, doctor_with, DoctorOptions, Finding, Verdict};
pub use doctor_replica::{replica_lag, REPLICA_LAG_WARN_BYTES};
pub use embedded::{
    embedded_migrations, EmbeddedMigration, ROLLBACKS_AFTER_0024, ROLLBACK_0024_SQL,
    ROLLBACK_0025_SQL, ROLLBACK_0026_SQL, ROLLBACK_0027_SQL, ROLLBACK_0028_SQL, ROLLBACK_0029_SQL,
};
pub use error::{Error, Result, ServerError};
pub use options::MigrateOptions;
pub use rollback::{
    rollback_0024_dropping_data, rollback_0024_dropping_data_pool, RollbackOutcome,
};
pub use rollups::{backfill_rollups, RollupBackfillReport};
pub use startup::{startup, startup_partition_options, startup_with, StartupError, StartupReport};
pub use status::{status, MigrationState, MigrationStatus};
pub use verify::{verify, Check, VerifyReport};
