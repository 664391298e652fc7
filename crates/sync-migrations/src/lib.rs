#![doc = include_str!("../README.md")]
#![deny(unsafe_code, rust_2018_idioms, nonstandard_style)]
#![warn(missing_docs, unreachable_pub)]

mod apply;
mod checksum_text;
mod connect;
mod conninfo;
mod doctor;
mod embedded;
mod error;
mod history;
mod lock;
mod options;
mod pooler;
mod rollback;
mod startup;
mod status;
mod tls;
mod verify;

pub use apply::{apply, apply_pool, ApplyReport};
pub use connect::{
    connect, connect_timeout, os_user_name, pool, resolve_config, DEFAULT_CONNECT_TIMEOUT,
    POOL_WAIT_TIMEOUT,
};
pub use doctor::{doctor, Finding, Verdict, TRIGGERS};
pub use embedded::{
    embedded_migrations, EmbeddedMigration, HISTORY_TABLE, ROLLBACK_0024_SQL, V0024,
};
pub use error::{Error, Result, ServerError};
pub use history::{applied_migrations, AppliedMigration};
pub use lock::{
    acquire as acquire_advisory_lock, release as release_advisory_lock, MIGRATION_LOCK_KEY,
};
pub use options::MigrateOptions;
pub use pooler::{
    direct_host_for, probe_transaction_pooler, refuse_pooler_host, refuse_transaction_pooler,
    refuse_transaction_pooler_two_connections, PoolerProbe, SECOND_CONNECTION_WAIT,
};
pub use rollback::{
    rollback_0024_dropping_data, rollback_0024_dropping_data_pool, RollbackOutcome,
};
pub use startup::{startup, StartupError, StartupReport};
pub use status::{status, MigrationState, MigrationStatus};
pub use tls::{tls_connector, MakeRustlsConnect, SslMode, TlsOptions};
pub use verify::{verify, Check, VerifyReport, FUNCTIONS, REQUIRED_ENUM_LABELS, TABLES};
