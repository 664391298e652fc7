//! Read replicas with read-your-writes.
//!
//! A [`Store`](crate::Store) given a replica pool ([`Store::with_replica`](crate::Store::with_replica))
//! sends its **stale-tolerant reads** — `list_activity`, `metrics` /
//! `metrics_all_orgs`, `list_recent_syncs` — to the replica, in both scopes and
//! both statement modes. Every other call (writes, `get_sync`, previews, the
//! active-sync list) stays on the primary.
//!
//! Which server answers a routed read is decided per call by the scope's
//! [`Consistency`]:
//!
//! - [`Consistency::ReadYourWrites`] (the default): the store remembers that a
//!   write went through this store (or [session](crate::Store::session)); the
//!   next routed read first asks the primary for `pg_current_wal_insert_lsn()`
//!   (once per batch of writes), then waits — at most
//!   [`ReplicaOptions::max_wait`] — until the replica's
//!   `pg_last_wal_replay_lsn()` is at or past it, and reads the replica; past
//!   the bound it reads the primary. A [`ConsistencyToken`] received from
//!   another process ([`Store::observe`](crate::Store::observe)) raises the
//!   position the same way.
//! - [`Consistency::Stale`]: the replica, whatever its lag.
//! - [`Consistency::Fresh`]: the primary.
//!
//! The replica is never a source of errors for a routed read: when it cannot
//! be reached, times out ([`ReplicaOptions::statement_timeout`]), cancels the
//! read for a recovery conflict (`40001`, e.g. while a partition DETACH/DROP
//! replays), or fails in any other way except a refused input, the read runs on
//! the primary and the caller gets the primary's answer. Such fallbacks are
//! counted ([`ReplicaStats`]) and logged (target `sync_store`, WARN at most once
//! per [`ReplicaOptions::retry_after`] per reason, with fields `operation`,
//! `reason`, `sqlstate`); after the replica was unreachable, routed reads skip
//! it for [`ReplicaOptions::retry_after`]. A read that lagged past the bound is
//! counted and logged at DEBUG with `lag_bytes`.
//!
//! On the replica each read is one pipelined transaction `BEGIN` → set-up →
//! statement → `COMMIT`: the set-up sets `statement_timeout` locally (and, in
//! the tenant scope, the role and claims, exactly as on the primary, so
//! row-level security applies there too). A tenant read that returns no row on
//! the replica is repeated on the primary (an empty answer may mean that the
//! user's org row has not replayed yet).
//!
//! The replica pool must point at **one** standby of the store's primary (a
//! Neon read-replica endpoint, or one hot standby): the replay position checked
//! is the one of the server the read then runs on, and the highest position
//! seen is remembered to skip the check when it is already known to be passed.

mod route;
mod token;

pub use route::{Consistency, ReplicaOptions, ReplicaStats};
pub use token::{BadToken, ConsistencyToken};

pub(crate) use route::Routing;
