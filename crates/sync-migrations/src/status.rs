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
        /// Checksum recorded in the database.
        applied_checksum: u64,
    },
    /// Not applied yet.
    Pending,
    /// Applied in the database but not embedded in this build.
    UnknownToThisBuild,
}

/// One line of `status`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MigrationStatus {
    /// Version.
    pub version: i32,
    /// Name.
    pub name: String,
    /// Checksum of the embedded file (`None` for a migration unknown to this build).
    pub checksum: Option<u64>,
    /// Applied, pending, changed, unknown.
    #[serde(flatten)]
    pub state: MigrationState,
}

/// Every embedded migration with its state, then any applied migration this build
/// does not know, in version order. Reads refinery's history table (without
/// creating it); changes nothing and takes no lock.
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
