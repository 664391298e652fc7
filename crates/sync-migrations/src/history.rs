//! Reading refinery's history table without creating it.

use tokio_postgres::Client;

use crate::embedded::{runner, HISTORY_TABLE};
use crate::error::{Error, Result};

/// One row of refinery's history table.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub(crate) struct AppliedMigration {
    /// Version.
    pub version: i32,
    /// Name as recorded.
    pub name: String,
    /// When it was applied (RFC 3339, as refinery records it).
    pub applied_on: Option<String>,
    /// Checksum as recorded (a decimal string in JSON).
    #[serde(serialize_with = "crate::checksum_text::serialize")]
    pub checksum: u64,
}

/// The applied migrations, oldest first; empty when the history table does not exist.
pub(crate) async fn applied_migrations(client: &mut Client) -> Result<Vec<AppliedMigration>> {
    let exists: bool = client
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&HISTORY_TABLE])
        .await
        .map_err(Error::db("looking for the migration history table"))?
        .get(0);
    if !exists {
        return Ok(Vec::new());
    }
    let applied = runner()
        .get_applied_migrations_async(client)
        .await
        .map_err(|e| crate::apply::map_refinery_error(e, &[]))?;
    let mut list: Vec<AppliedMigration> = applied
        .iter()
        .map(|m| AppliedMigration {
            version: m.version(),
            name: m.name().to_owned(),
            applied_on: m.applied_on().and_then(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            }),
            checksum: m.checksum(),
        })
        .collect();
    list.sort_by_key(|m| m.version);
    Ok(list)
}

/// Fails when an applied migration is unknown to this build or was edited.
pub(crate) fn check_consistent(applied: &[AppliedMigration]) -> Result<()> {
    let embedded = crate::embedded::embedded_migrations();
    for a in applied {
        match embedded.iter().find(|e| e.version == a.version) {
            None => {
                return Err(Error::UnknownApplied {
                    version: a.version,
                    name: a.name.clone(),
                })
            }
            Some(e) if e.checksum != a.checksum || e.name != a.name => {
                return Err(Error::ChangedAfterApply {
                    version: a.version,
                    name: e.name.clone(),
                    applied_checksum: a.checksum,
                    embedded_checksum: e.checksum,
                })
            }
            Some(_) => {}
        }
    }
    Ok(())
}
