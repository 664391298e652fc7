//! P1: apply 0024 through sync-migrations on a database holding only the
//! prerequisites, vs `psql -1 -f` of the same migration file.
//!
//! Both include their own connection set-up (the library path connects, the
//! baseline starts psql). Between rounds 0024 is removed with the rollback script
//! (untimed).

use std::path::PathBuf;

use crate::measure::{alternate, Row, Side, Target};
use crate::BenchDb;

pub(crate) async fn run(db: &BenchDb, reps: usize) -> Row {
    let file = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../migrations/V0024__sync_preview_progress_logs.sql");
    let url = db.url.clone();
    let (library_ms, baseline_ms) = alternate(
        reps,
        |_side: Side| async {
            let c = db.connect().await;
            c.batch_execute(sync_migrations::ROLLBACK_0024_SQL)
                .await
                .expect("rollback");
        },
        || async {
            let mut c = db.connect().await;
            let report =
                sync_migrations::apply(&mut c, &sync_migrations::MigrateOptions::default())
                    .await
                    .expect("apply");
            assert_eq!(report.applied.len(), 1);
        },
        || {
            let url = url.clone();
            let file = file.clone();
            async move {
                let out = tokio::process::Command::new("psql")
                    .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-1", "-d", &url, "-f"])
                    .arg(&file)
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
    let c = db.connect().await;
    c.batch_execute(sync_migrations::ROLLBACK_0024_SQL)
        .await
        .expect("rollback");
    let mut c = db.connect().await;
    sync_migrations::apply(&mut c, &sync_migrations::MigrateOptions::default())
        .await
        .expect("apply");
    Row {
        id: "P1",
        what: "apply 0024 (sync-migrations) vs psql -1 -f".into(),
        library_ms,
        baseline_ms,
        target: Target {
            max_ratio: 1.2,
            max_library_ms: None,
        },
    }
}
