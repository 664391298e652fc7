//! The SQL compiled into this crate: `migrations/` (through refinery) and the
//! rollback scripts (`rollback/`).

mod embedded_migrations {
    refinery::embed_migrations!("../../migrations");
}

/// Name of refinery's history table.
pub(crate) const HISTORY_TABLE: &str = "refinery_schema_history";

/// Version of migration 0024.
pub(crate) const V0024: i32 = 24;

/// `rollback/0024_sync_preview_progress_logs.sql`, byte for byte. It carries its
/// own `BEGIN`/`COMMIT`, so it also runs on its own with `psql -v ON_ERROR_STOP=1 -f`.
pub const ROLLBACK_0024_SQL: &str =
    include_str!("../../../rollback/0024_sync_preview_progress_logs.sql");

/// `rollback/0025_idempotent_writes.sql`, byte for byte. It carries no
/// `BEGIN`/`COMMIT`: [`crate::rollback_0024_dropping_data`] runs it and the
/// rollback of 0024 in one transaction. On its own: `psql -1 -v ON_ERROR_STOP=1 -f`.
pub const ROLLBACK_0025_SQL: &str = include_str!("../../../rollback/0025_idempotent_writes.sql");

/// `rollback/0026_activity_rollups.sql`, byte for byte (no `BEGIN`/`COMMIT`, as
/// [`ROLLBACK_0025_SQL`]). On its own: `psql -1 -v ON_ERROR_STOP=1 -f`.
pub const ROLLBACK_0026_SQL: &str = include_str!("../../../rollback/0026_activity_rollups.sql");

/// `rollback/0027_progress_heartbeat.sql`, byte for byte (no `BEGIN`/`COMMIT`,
/// as 0025's).
pub const ROLLBACK_0027_SQL: &str = include_str!("../../../rollback/0027_progress_heartbeat.sql");

/// `rollback/0028_progress_notify.sql`, byte for byte (no `BEGIN`/`COMMIT`,
/// like 0025's).
pub const ROLLBACK_0028_SQL: &str = include_str!("../../../rollback/0028_progress_notify.sql");

/// `rollback/0029_activity_metrics_reads.sql`, byte for byte (no
/// `BEGIN`/`COMMIT`, like 0025's).
pub const ROLLBACK_0029_SQL: &str =
    include_str!("../../../rollback/0029_activity_metrics_reads.sql");

/// The rollback scripts of the migrations after 0024, **newest first**: each
/// entry is (version, script without `BEGIN`/`COMMIT`). Rolling back 0024 first
/// runs every one of these, in this order, in the same transaction. A migration
/// added after 0024 adds its script at the front of this list.
pub const ROLLBACKS_AFTER_0024: &[(i32, &str)] = &[
    (29, ROLLBACK_0029_SQL),
    (28, ROLLBACK_0028_SQL),
    (27, ROLLBACK_0027_SQL),
    (26, ROLLBACK_0026_SQL),
    (25, ROLLBACK_0025_SQL),
];

/// A fresh refinery runner over the embedded migrations, refusing divergent
/// (edited after apply) and missing (applied but unknown) migrations.
pub(crate) fn runner() -> refinery::Runner {
    embedded_migrations::migrations::runner()
        .set_abort_divergent(true)
        .set_abort_missing(true)
}

/// One embedded migration: what `status` and reports show.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct EmbeddedMigration {
    /// Version, e.g. 24.
    pub version: i32,
    /// Name, e.g. `sync_preview_progress_logs`.
    pub name: String,
    /// refinery's checksum of name, version and SQL (a decimal string in JSON).
    #[serde(serialize_with = "crate::checksum_text::serialize")]
    pub checksum: u64,
}

/// The migrations this build embeds, in version order.
pub fn embedded_migrations() -> Vec<EmbeddedMigration> {
    let mut list: Vec<EmbeddedMigration> = runner()
        .get_migrations()
        .iter()
        .map(|m| EmbeddedMigration {
            version: m.version(),
            name: m.name().to_owned(),
            checksum: m.checksum(),
        })
        .collect();
    list.sort_by_key(|m| m.version);
    list
}
