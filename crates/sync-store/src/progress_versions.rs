//! Versions of progress rows, for change feeds (sync-api's live progress):
//! one statement answers for many syncs of the caller's org, with keys only.

use postgres_types::Type;
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::sql::ScopedSql;
use crate::store::{col, Scope, TenantScope};
use crate::trace::{op_span, traced};

/// Most ids one [`TenantScope::progress_versions`] call accepts (the
/// function of migration 0028 reads no more).
pub const MAX_VERSION_IDS: usize = 10_000;

/// The version of one `sync_progress` row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProgressVersion {
    /// The row's `id` ([`crate::SyncProgress::id`]).
    pub id: Uuid,
    /// `updated_at` in microseconds since the Unix epoch: it moves on every
    /// change of the row (the metrics trigger sets it).
    pub version: i64,
    /// Whether `completed_at` is set.
    pub finished: bool,
}

static VERSIONS: ScopedSql =
    ScopedSql::new("SELECT id, version, finished FROM sync_progress_versions($2::uuid[])");

impl TenantScope {
    /// The versions of the rows `ids` names that this scope may read: one
    /// statement (`SELECT … FROM sync_progress_versions($ids)`, the SECURITY
    /// INVOKER function of migration 0028) in a tenant transaction, so the
    /// org's row-level security filters it. It answers only with ids the
    /// caller gave, a timestamp and a flag. Ids that match no readable row
    /// (deleted rows, another org's rows) are left out of the answer.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for more than [`MAX_VERSION_IDS`] ids;
    /// [`Error::Forbidden`] when nothing matched and the user has no org;
    /// [`Error::Unavailable`] and the store's other errors, e.g. when
    /// migration 0028 is not applied (`42883`, undefined function).
    pub async fn progress_versions(&self, ids: &[Uuid]) -> Result<Vec<ProgressVersion>> {
        const OP: &str = "progress_versions";
        let scope = Scope::Tenant(self.user_id);
        traced(op_span(OP, scope, None), async {
            if ids.len() > MAX_VERSION_IDS {
                return Err(Error::invalid(
                    OP,
                    "ids",
                    "at most 10000 ids per call; split the list",
                ));
            }
            if ids.is_empty() {
                return Ok(Vec::new());
            }
            let ids = ids.to_vec();
            let rows = self
                .store
                .rows(scope, OP, &VERSIONS, &[(&ids, Type::UUID_ARRAY)])
                .await?;
            rows.iter()
                .map(|r| {
                    Ok(ProgressVersion {
                        id: col(OP, r, 0)?,
                        version: col(OP, r, 1)?,
                        finished: col(OP, r, 2)?,
                    })
                })
                .collect()
        })
        .await
    }
}
