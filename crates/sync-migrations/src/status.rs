//! Which embedded migrations are applied, pending, or changed.

use tokio_postgres::Client;

use crate::embedded::embedded_migrations;
use crate::error::Result;
use crate::history::applied_migrations;

/// State of one migration.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum MigrationState {
    /// Applied, with the same checksum as the embedded file.
    Applied {
        /// When (RFC 3339).
        applied_on: Option<String>,
    },
    /// Applied, but the embedded file has changed since.
    ChangedAfterApply {
        /// When (RFC 3339).
        applied_on: Option<String>,
        /// Checksum recorded in the database (a decimal string in JSON).
        #[serde(serialize_with = "crate::checksum_text::serialize")]
        applied_checksum: u64,
    },
    /// Not applied yet.
    Pending,
    /// Applied in the database but not embedded in this build.
    UnknownToThisBuild,
}

impl MigrationState {
    /// Whether this state is a problem `status` must report with exit code 1: a
    /// migration changed after it was applied, or applied but unknown to this
    /// build (`up` refuses both).
    pub fn is_problem(&self) -> bool {
        matches!(
            self,
            MigrationState::ChangedAfterApply { .. } | MigrationState::UnknownToThisBuild
        )
    }
}

/// One line of `status`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MigrationStatus {
    /// Version.
    pub version: i32,
    /// Name.
    pub name: String,
    /// Checksum of the embedded file (`None` for a migration unknown to this
    /// build); a decimal string in JSON.
    #[serde(serialize_with = "crate::checksum_text::option::serialize")]
    pub checksum: Option<u64>,
    /// Applied, pending, changed, unknown.
    #[serde(flatten)]
    pub state: MigrationState,
}

/// Every embedded migration with its state, then any applied migration this build
/// does not know, in version order. Reads refinery's history table (without
/// creating it); changes nothing and takes no lock.
///
/// # Errors
/// [`crate::Error::Database`] / [`crate::Error::Unavailable`] when the history
/// cannot be read.
pub async fn status(client: &mut Client) -> Result<Vec<MigrationStatus>> {
    let applied = applied_migrations(client).await?;
    let mut lines: Vec<MigrationStatus> = embedded_migrations()
        .into_iter()
        .map(|e| {
            let state = match applied.iter().find(|a| a.version == e.version) {
                None => MigrationState::Pending,
                Some(a) if a.checksum == e.checksum => MigrationState::Applied {
                    applied_on: a.applied_on.clone(),
                },
                Some(a) => MigrationState::ChangedAfterApply {
                    applied_on: a.applied_on.clone(),
                    applied_checksum: a.checksum,
                },
            };
            MigrationStatus {
                version: e.version,
                name: e.name,
                checksum: Some(e.checksum),
                state,
            }
        })
        .collect();
    for a in &applied {
        if !lines.iter().any(|l| l.version == a.version) {
            lines.push(MigrationStatus {
                version: a.version,
                name: a.name.clone(),
                checksum: None,
                state: MigrationState::UnknownToThisBuild,
            });
        }
    }
    lines.sort_by_key(|l| l.version);
    Ok(lines)
}
