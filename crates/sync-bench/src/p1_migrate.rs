//! P1: apply 0024 (and 0025, its idempotency keys) through sync-migrations on a
//! database holding only the prerequisites, vs `psql -1 -f` of the same
//! migration files.
//!
//! Both include their own connection set-up (the library path connects, the
//! baseline starts psql). Between rounds 0024 is removed with the rollback script
//! (untimed), which rolls back 0025 first.

use std::path::PathBuf;

use crate::measure::{alternate, Row, Side, Target};
use crate::BenchDb;

pub(crate) async fn run(db: &BenchDb, reps: usize) -> Row {
    let file = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../migrations/V0024__sync_preview_progress_logs.sql");
    let file_0025 = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../migrations/V0025__idempotent_writes.sql");
    let url = db.url.clone();
    let (library_ms, baseline_ms) = alternate(
        reps,
        |_side: Side| async {
            let mut c = db.connect().await;
            sync_migrations::rollback_0024_dropping_data(
                &mut c,
                &sync_migrations::MigrateOptions::default(),
            )
            .await
            .expect("rollback");
        },
        || async {
            let mut c = db.connect().await;
            let report =
                sync_migrations::apply(&mut c, &sync_migrations::MigrateOptions::default())
                    .await
                    .expect("apply");
            let from_24 = sync_migrations::embedded_migrations()
                .iter()
                .filter(|m| m.version >= 24)
                .count();
            assert_eq!(report.applied.len(), from_24);
        },
        || {
            let url = url.clone();
            let file = file.clone();
            let file_0025 = file_0025.clone();
            async move {
                let out = tokio::process::Command::new("psql")
                    .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-1", "-d", &url, "-f"])
                    .arg(&file)
                    .arg("-f")
                    .arg(&file_0025)
                    .output()
                    .await
                    .expect("psql");
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        },
    )
    .await;
    // Leave 0024 applied and recorded for the next rows.
    let mut c = db.connect().await;
    sync_migrations::rollback_0024_dropping_data(
        &mut c,
        &sync_migrations::MigrateOptions::default(),
    )
    .await
    .expect("rollback");
    let mut c = db.connect().await;
    sync_migrations::apply(&mut c, &sync_migrations::MigrateOptions::default())
        .await
        .expect("apply");
    Row {
        id: "P1",
        what: "apply 0024 + 0025 (sync-migrations) vs psql -1 -f".into(),
        library_ms,
        baseline_ms,
        target: Target {
            max_ratio: 1.2,
            max_library_ms: None,
        },
    }
}
