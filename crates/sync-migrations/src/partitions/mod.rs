//! Partition lifecycle of `sync_activity_log`: monthly partitions kept ahead of
//! time, rows split out of the catch-all `sync_activity_log_future`, old months
//! archived.
//!
//! Migration 0024 creates UTC-month partitions `sync_activity_log_2025_11` …
//! `_2026_02` and a catch-all `sync_activity_log_future` FROM 2026-03-01 TO
//! MAXVALUE. PostgreSQL 15 has no `SPLIT PARTITION`, so [`ensure_partitions`]
//! creates the missing months and a new catch-all as plain tables, copies the
//! rows of the old catch-all into them **while writers keep writing**, and
//! swaps them in (DROP old, ATTACH new) in a short final step.
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
//! # The online split (ensure with a non-empty layout)
//!
//! Steps, each its own transaction under the partition advisory lock (below),
//! each recording where it got to in the state table
//! `sync_activity_log_split_state` (one row, created by the first step, dropped
//! by the last), so a run killed at any point (kill -9, server restart,
//! `pg_terminate_backend`) leaves a consistent state and the next `ensure`
//! (another replica's start-up, the CLI) resumes it:
//!
//! 1. **prepare**: create the new tables (`LIKE sync_activity_log`, each with a
//!    CHECK on its bounds; the months under their final names, the new
//!    catch-all as `sync_activity_log_split_future`), attached to a routing table
//!    `sync_activity_log_split_staging` (partitioned, no indexes); the delta
//!    table `sync_activity_log_split_delta (id, created_at)`; a SECURITY DEFINER
//!    trigger function `sync_activity_log_split_capture()` (search_path pinned)
//!    and, last, the row trigger of that name AFTER INSERT OR UPDATE OR DELETE
//!    on the old catch-all, which records the old and new key of every change.
//!    Every working table has every privilege revoked from everyone but its
//!    owner (default privileges would otherwise let e.g. `authenticated` insert
//!    rows into a future partition or truncate the delta). `CREATE TRIGGER`
//!    takes SHARE ROW EXCLUSIVE on the old catch-all only, waiting at most
//!    200 ms per attempt (writers queue behind it meanwhile), retried until
//!    [`PartitionOptions::lock_timeout`] is spent.
//! 2. **copy** (repeated): `INSERT INTO staging SELECT … FROM old WHERE ctid`
//!    in the next [`PartitionOptions::copy_batch_blocks`] heap blocks (a TID range
//!    scan, sequential, no index maintenance), the next block recorded in the
//!    same transaction; progress reported after each commit. The first batch
//!    fixes the end block.
//! 3. **index**: apply the delta (below), then move the new tables from the
//!    routing table to a routing table `LIKE sync_activity_log INCLUDING INDEXES`:
//!    attaching builds the parent's indexes on each in bulk (no SQL from
//!    catalog text).
//! 4. **fk** / **validate**: give each new table the parent's foreign keys
//!    (`ADD CONSTRAINT … NOT VALID`, a catalog change: SHARE ROW EXCLUSIVE on
//!    `organization` / `auth.users_extended` for milliseconds; identifiers
//!    quoted, actions from a fixed list), then `VALIDATE CONSTRAINT` (a scan
//!    that does not block writes of the referenced tables), so the final ATTACH
//!    adopts them instead of validating under the lock.
//! 5. **catch-up** then **final**: apply the delta outside the lock; then
//!    `LOCK TABLE sync_activity_log IN ACCESS EXCLUSIVE MODE` (200 ms per
//!    attempt, whole transaction under that `lock_timeout`; on expiry roll
//!    back, catch up again, retry until `lock_timeout` is spent); apply the last
//!    delta; copy RLS/FORCE/owner/grants and the TRUNCATE guard from the old
//!    catch-all; DROP the old catch-all; ATTACH each new table (the bounds CHECK
//!    spares the partition-constraint scan, matching indexes and foreign keys
//!    are adopted, so no scan runs under the lock) and drop its CHECK; rename
//!    the new catch-all (and its indexes, to the old one's index names) into
//!    place; drop the working objects; commit.
//!
//! **Why nothing is lost or duplicated.** The capture trigger exists (committed)
//! before the first copy batch takes its snapshot, and `CREATE TRIGGER` waited
//! for every transaction that had written the catch-all. So every row version is
//! either committed before every copy snapshot (and was in a block below the
//! end block measured after the trigger: a row's block never changes unless it
//! is updated) or written by a transaction that also wrote a delta row, atomically
//! with the change (in-flight transactions included: their delta rows commit or
//! vanish with them). Copies in different snapshots may see a key twice (before
//! and after an update) or a stale version; every such key has a delta row.
//! Applying the delta = for each key read from it, delete the key's staging rows
//! and insert the old catch-all's current row of that key (none if deleted or
//! moved out), then delete exactly the delta rows read (by ctid): a change
//! committed after the re-read has a delta row of its own that stays. Once the
//! final step holds ACCESS EXCLUSIVE, no writer of the catch-all is in flight, so
//! the last application leaves the staging tables equal to the old catch-all.
//! Keys are the primary key `(id, created_at)`, unique across the log.
//! Maintenance DML goes to the staging and delta tables only, never through the
//! parent (statement triggers on the parent, e.g. rollups, see no change).
//! Rows of the old catch-all dated after the new months go to the new catch-all.
//!
//! **Replicas.** Steps are serialised by the advisory lock and start from the
//! recorded state, so runs can take turns. A run that finds the split under way
//! with a heartbeat younger than 60 s from a live backend (pid and backend start
//! in `pg_stat_activity`) and [`PartitionOptions::skip_if_busy`] set leaves it to
//! that run (what start-up does); otherwise it helps.
//!
//! # Locks
//!
//! Every changing transaction sets a local `lock_timeout`
//! ([`PartitionOptions::lock_timeout`], default 5 s; for lock 1
//! [`PartitionOptions::wait_for_other_run`]). A lock not had in time fails the
//! call with [`PartitionError::LockTimeout`]; the step's transaction is rolled
//! back (earlier steps of a split stay done and are resumed by the next run).
//!
//! 1. `pg_advisory_xact_lock(`[`PARTITION_LOCK_KEY`]`)` — serialises ensure and
//!    archive steps across replicas. A second replica waits up to
//!    [`PartitionOptions::wait_for_other_run`], then either helps or (with
//!    [`PartitionOptions::skip_if_busy`]) returns with
//!    [`EnsureReport::other_run_busy`] set.
//! 2. ACCESS EXCLUSIVE on `sync_activity_log` — `archive`, and only the final
//!    step of `ensure` (and the whole of an `ensure` that has no catch-all to
//!    split). While it is held every read and write of the log waits; inserts
//!    then succeed, routed to the new partitions. Reported as
//!    `exclusive_lock_held`. For `ensure` it does not grow with the rows moved,
//!    only with the rows changed since the last catch-up and the number of new
//!    tables (catalog work).
//! 3. SHARE ROW EXCLUSIVE on `organization` and `auth.users_extended`: adding
//!    the foreign keys NOT VALID (milliseconds), and DROP/ATTACH in the final
//!    step (reported as `referenced_tables_locked`).
//!
//! New partitions get their indexes from the partitioned indexes (names as
//! `CREATE TABLE … PARTITION OF` would give): PostgreSQL copies the definitions
//! itself (a partitioned table `LIKE sync_activity_log INCLUDING INDEXES` the
//! new tables are attached to), so no SQL is ever assembled from catalog text
//! such as `pg_get_indexdef`. They also get row-level security enabled (with no
//! policies, so a partition queried directly shows nothing to non-owners), and
//! the owner, FORCE RLS flag and grants of the old catch-all.
//!
//! Left-overs: an interrupted split keeps its working objects and the capture
//! trigger (writers of the catch-all also write the delta) until a run
//! finishes it; `sync-migrate partitions ensure` does. Rolling back 0024 while
//! one is unfinished leaves the standalone new tables behind (like archived
//! months).

mod archive;
mod archive_export;
mod copy_binary;
mod ensure;
mod error;
mod export_file;
mod list;
mod lock;
mod month;
mod online;
mod options;
mod parent;
pub(crate) use parent::quote_ident;
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
    PartitionOptions, DEFAULT_COPY_BATCH_BLOCKS, DEFAULT_LOCK_TIMEOUT, DEFAULT_WAIT_FOR_OTHER_RUN,
    MAX_MONTHS_AHEAD,
};
pub use plan::CATCH_ALL_NAME;
pub use restore::{restore_partition, OrphanPolicy, RestoreOptions, RestoreReport};
