//! `sync-migrate doctor --replica-url`: the `replica_lag` check against a real
//! streaming standby — pass when streaming, warn when replay is paused, fail
//! for a primary given as the replica or a replica that cannot be reached.

use std::process::Command;

use sync_migrations::{replica_lag, Verdict};
use sync_tests::replica_pair::ReplicaPair;
use sync_tests::sync_migrate_bin;

fn doctor_json(primary: &str, replica: &str) -> serde_json::Value {
    let out = Command::new(sync_migrate_bin())
        .args([
            "--json",
            "doctor",
            "--database-url",
            primary,
            "--replica-url",
            replica,
        ])
        .env_remove("DATABASE_URL")
        .env_remove("SYNC_REPLICA_URL")
        .output()
        .expect("run sync-migrate");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn replica_finding(report: &serde_json::Value) -> serde_json::Value {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["check"] == "replica_lag")
        .cloned()
        .unwrap_or_else(|| panic!("no replica_lag finding: {report}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_lag_is_reported_for_a_streaming_paused_or_missing_standby() {
    let mut pair = ReplicaPair::start().await;
    let primary = pair.primary_client().await;
    let standby = pair.standby_client().await;

    let f = replica_lag(&primary, &standby).await.unwrap();
    assert_eq!(f.verdict, Verdict::Pass, "{f:?}");
    assert!(f.found.contains("bytes behind"), "{f:?}");

    // The CLI flag gives the same check.
    let report = doctor_json(&pair.primary.url(), &pair.standby.url());
    assert_eq!(replica_finding(&report)["verdict"], "pass", "{report}");

    standby
        .execute("SELECT pg_wal_replay_pause()", &[])
        .await
        .unwrap();
    primary
        .batch_execute("CREATE TABLE doctor_lag_probe (x int); DROP TABLE doctor_lag_probe")
        .await
        .unwrap();
    let f = replica_lag(&primary, &standby).await.unwrap();
    assert_eq!(f.verdict, Verdict::Warn, "{f:?}");
    assert!(f.fix.contains("pg_wal_replay_resume"), "{f:?}");
    standby
        .execute("SELECT pg_wal_replay_resume()", &[])
        .await
        .unwrap();

    // The primary given as its own replica.
    let f = replica_lag(&primary, &primary).await.unwrap();
    assert_eq!(f.verdict, Verdict::Fail, "{f:?}");

    // A standby that is down: a FAIL line and exit code 1, not a crash.
    let url = pair.standby.url();
    drop(standby);
    tokio::task::block_in_place(|| pair.standby.stop_server());
    let report = doctor_json(&pair.primary.url(), &url);
    assert_eq!(replica_finding(&report)["verdict"], "fail", "{report}");
    assert_eq!(report["ok"], false);
}
