//! Partition lifecycle of `sync_activity_log`: monthly partitions kept ahead of
//! time, rows split out of the catch-all `sync_activity_log_future`, old months
//! archived.
//!
//! Migration 0024 creates UTC-month partitions `sync_activity_log_2025_11` …
//! `_2026_02` and a catch-all `sync_activity_log_future` FROM 2026-03-01 TO
//! MAXVALUE. PostgreSQL 15 has no `SPLIT PARTITION`, so [`ensure_partitions`]
//! creates the missing months and a new catch-all as plain tables, copies the
//! rows of the old catch-all into them, builds their indexes, swaps them in
//! (DETACH old, ATTACH new) and drops the old table — in one transaction.
//!
//! * [`list_partitions`]: each partition with bounds, row estimate and size.
//! * [`ensure_partitions`]: months through the current month + N, catch-all after.
//! * [`archive_partitions`] / [`archive_partitions_dropping_data`]: take months
//!   before a cut-off out of the table (kept as tables, or dropped).
//! * [`archive_partitions_exporting`]: each such month written to a
//!   zstd-compressed binary COPY file with a JSON manifest ([`ArchiveManifest`]:
//!   rows, bounds, columns, SHA-256), re-read and verified, and only then
//!   detached and dropped (or kept with [`ExportOptions::keep_table`]).
//! * [`restore_partition`]: a month brought back from its file, attached with
//!   RLS, the TRUNCATE guard, indexes and grants as `ensure` gives them, orphan
//!   rows per [`OrphanPolicy`].
//!
//! After each DETACH and ATTACH of a month, in the same transaction,
//! `sync_activity_rollup_recount(month start, next month start)` (migration
//! 0026) is called when it exists.
//!
//! # Locks
//!
//! Every changing call runs in one transaction with a local `lock_timeout`
//! ([`PartitionOptions::lock_timeout`], default 5 s; for lock 1
//! [`PartitionOptions::wait_for_other_run`]). Each lock below waits at
//! most that long, then the call fails with [`PartitionError::LockTimeout`] and
//! changes nothing. All locks are released at commit or rollback.
//!
//! 1. `pg_advisory_xact_lock(`[`PARTITION_LOCK_KEY`]`)` — serialises ensure and
//!    archive across replicas. A second replica waits up to
//!    [`PartitionOptions::wait_for_other_run`] (not `lock_timeout`: the other run
//!    may be moving a large backlog), then finds nothing to do; if the wait runs
//!    out it fails with [`PartitionError::LockTimeout`], or — `ensure` with
//!    [`PartitionOptions::skip_if_busy`] — returns with
//!    [`EnsureReport::other_run_busy`] set.
//! 2. Only when something must change: `LOCK TABLE sync_activity_log IN ACCESS
//!    EXCLUSIVE MODE`, which recurses to every partition. It is taken up front
//!    (not through a later lock upgrade) because `DETACH PARTITION` (non-concurrent,
//!    the only kind allowed in a transaction block) and `CREATE`/`ATTACH` need
//!    ACCESS EXCLUSIVE on the parent in PG 15 anyway, and upgrading from a weaker
//!    mode could deadlock against a session that reads and then inserts. While
//!    it is held, every read and write of `sync_activity_log` waits: concurrent
//!    inserts block and then succeed after commit, routed to the new partitions —
//!    none is lost or fails unless its own `lock_timeout`/`statement_timeout` runs out.
//! 3. Foreign-key bookkeeping: `DETACH`/`ATTACH PARTITION` drop and clone the
//!    foreign keys, which takes SHARE ROW EXCLUSIVE on the referenced tables
//!    `organization` and `auth.users_extended` until commit (their writes wait;
//!    reads do not). `ensure` takes it only after the rows are copied and the
//!    indexes built (reported as `referenced_tables_locked`); `archive` from its
//!    first DETACH. Plus ACCESS EXCLUSIVE on the new tables, the old catch-all and
//!    the staging table, which no one else uses.
//!
//! How long lock 2 is held is reported as `exclusive_lock_held`. For `archive`
//! it is catalog work only (milliseconds; with `--drop`, `DROP TABLE` also
//! unlinks the files). For `ensure` it grows with the rows in the old catch-all:
//! one sequential pass copying them into tables without indexes (no per-row index
//! or foreign-key work), a bulk build of each index, and one validation query per
//! foreign key and new partition at ATTACH. Measured on this project's 2-core
//! machine under load, 1 000 000 rows: lock 2 held ≈ 17 s, lock 3 ≈ 1.6 s (see
//! `bench/ensure_1m.sh`). When nothing must change (the usual start-up case) no
//! table lock is taken at all.
//!
//! New partitions get their indexes from the partitioned indexes (names as
//! `CREATE TABLE … PARTITION OF` would give): PostgreSQL copies the definitions
//! itself (a temporary partitioned table `LIKE sync_activity_log INCLUDING
//! INDEXES` the new tables are attached to), so no SQL is ever assembled from
//! catalog text such as `pg_get_indexdef`. They also get row-level security
//! enabled (with no policies, so a partition queried directly shows nothing to
//! non-owners), and the owner, FORCE RLS flag and grants of the old catch-all.

mod archive;
mod archive_export;
mod copy_binary;
mod ensure;
mod error;
mod export_file;
mod list;
mod lock;
mod month;
mod options;
mod parent;
mod plan;
mod restore;
mod rollups;
mod security;

pub use archive::{
    archive_partitions, archive_partitions_dropping_data, ArchiveReport, ArchivedPartition,
};
pub use archive_export::{
    archive_partitions_exporting, ArchivePhase, ArchiveProgress, ExportOptions, ExportedMonth,
};
pub use ensure::{ensure_partitions, EnsureReport, MoveProgress};
pub use error::PartitionError;
pub use export_file::{
    ArchiveColumn, ArchiveManifest, ARCHIVE_ENCODING, ARCHIVE_FORMAT, ARCHIVE_FORMAT_VERSION,
};
pub use list::{list_partitions, PartitionInfo, PartitionKind};
pub use lock::PARTITION_LOCK_KEY;
pub use month::{Month, PARTITION_PREFIX};
pub use options::{
    PartitionOptions, DEFAULT_LOCK_TIMEOUT, DEFAULT_WAIT_FOR_OTHER_RUN, MAX_MONTHS_AHEAD,
};
pub use plan::CATCH_ALL_NAME;
pub use restore::{restore_partition, OrphanPolicy, RestoreOptions, RestoreReport};
