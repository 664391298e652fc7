//! Archiving old months: detached and kept, or dropped.

mod partitions_common;

use partitions_common::*;
use sync_migrations::partitions::{
    archive_partitions, archive_partitions_dropping_data, ensure_partitions, Month, PartitionError,
};
use sync_tests::TestDb;

async fn count(c: &tokio_postgres::Client, sql: &str) -> i64 {
    c.query_one(sql, &[]).await.unwrap().get(0)
}

#[tokio::test]
async fn archive_keeps_or_drops_old_months_and_never_the_current_one() {
    let db = TestDb::migrated().await;
    let mut c = db.client().await;
    let t = tenants(&c).await;
    seed_months(&c, &t, "2025-11-01", "2026-02-01", 6).await;
    seed_months(&c, &t, "2026-03-01", "2027-01-01", 6).await;
    let opts = opts();
    let ensured = ensure_partitions(&mut c, 3, &opts, |_| {}).await.unwrap();
    let current = ensured.current_month;
    assert_eq!(current, "2026-11".parse().unwrap(), "the options' clock");
    let counts = per_month_counts(&c).await;
    let count_of = |m: &str| counts.iter().find(|(k, _)| k == m).map_or(0, |(_, n)| *n);

    // Keep: 2025-11 and 2025-12 leave the table but stay as tables with RLS.
    let kept = archive_partitions(&mut c, "2026-01".parse().unwrap(), &opts)
        .await
        .unwrap();
    let names: Vec<_> = kept.archived.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(
        names,
        ["sync_activity_log_2025_11", "sync_activity_log_2025_12"]
    );
    assert!(kept.archived.iter().all(|a| !a.dropped));
    assert_eq!(
        count(&c, "SELECT count(*) FROM sync_activity_log_2025_12").await,
        count_of("2025-12")
    );
    assert_eq!(
        count(
            &c,
            "SELECT count(*) FROM sync_activity_log WHERE created_at < '2026-01-01 00:00:00+00'"
        )
        .await,
        0
    );
    assert_eq!(
        count(
            &c,
            "SELECT count(*) FROM pg_class c WHERE c.relname IN \
             ('sync_activity_log_2025_11', 'sync_activity_log_2025_12') AND c.relrowsecurity \
             AND NOT c.relispartition AND c.relkind = 'r'"
        )
        .await,
        2
    );
    verify_ok(&c).await;
    // Idempotent.
    let again = archive_partitions(&mut c, "2026-01".parse().unwrap(), &opts)
        .await
        .unwrap();
    assert!(again.archived.is_empty());

    // Drop: everything before the current month goes, the current month, later
    // months and the catch-all stay.
    let total_before = count(&c, "SELECT count(*) FROM sync_activity_log").await;
    let dropped = archive_partitions_dropping_data(&mut c, current, &opts)
        .await
        .unwrap();
    let first_dropped: Month = "2026-01".parse().unwrap();
    let mut expected = Vec::new();
    let mut m = first_dropped;
    while m < current {
        expected.push(m.partition_name());
        m = m.next();
    }
    assert_eq!(
        dropped
            .archived
            .iter()
            .map(|a| a.name.clone())
            .collect::<Vec<_>>(),
        expected
    );
    assert!(dropped.archived.iter().all(|a| a.dropped));
    let gone: i64 = expected
        .iter()
        .map(|n| count_of(&format!("{}-{}", &n[18..22], &n[23..25])))
        .sum();
    assert_eq!(
        count(&c, "SELECT count(*) FROM sync_activity_log").await,
        total_before - gone
    );
    let mut names = partition_names(&c).await;
    names.sort();
    let mut want: Vec<String> = (0..=3).map(|k| current.plus(k).partition_name()).collect();
    want.push("sync_activity_log_future".into());
    assert_eq!(names, want);
    assert_eq!(
        count(
            &c,
            &format!(
                "SELECT count(*) FROM pg_class WHERE relname IN ({})",
                expected
                    .iter()
                    .map(|n| format!("'{n}'"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        )
        .await,
        0,
        "dropped tables are gone"
    );
    verify_ok(&c).await;

    // A cut-off after the current month is refused.
    let err = archive_partitions(&mut c, current.next(), &opts)
        .await
        .unwrap_err();
    assert!(
        matches!(err, PartitionError::CutoffNotInPast { .. }),
        "{err}"
    );

    // Rolling 0024 back now fails, naming a kept archive table (it uses 0024's
    // enum types), and changes nothing; once they are dropped it works.
    let migrate = sync_migrations::MigrateOptions::default();
    let err = sync_migrations::rollback_0024_dropping_data(&mut c, &migrate)
        .await
        .unwrap_err();
    assert!(
        matches!(err, sync_migrations::Error::RollbackFailed { .. }),
        "{err}"
    );
    assert!(
        err.to_string().contains("sync_activity_log_2025_1"),
        "message names the archive table: {err}"
    );
    verify_ok(&c).await;
    c.batch_execute("DROP TABLE sync_activity_log_2025_11, sync_activity_log_2025_12")
        .await
        .unwrap();
    assert_eq!(
        sync_migrations::rollback_0024_dropping_data(&mut c, &migrate)
            .await
            .unwrap(),
        sync_migrations::RollbackOutcome::RolledBack
    );
}

#[tokio::test]
async fn archive_with_nothing_old_changes_nothing() {
    let db = TestDb::migrated().await;
    let mut c = db.client().await;
    let r = archive_partitions(&mut c, "2025-11".parse().unwrap(), &opts())
        .await
        .unwrap();
    assert!(r.archived.is_empty());
    assert_eq!(partition_names(&c).await.len(), 5);
}

// ---------------------------------------------------------------------------
// Archive with an export, and restore.
// ---------------------------------------------------------------------------

use std::path::{Path, PathBuf};
use sync_migrations::partitions::{
    archive_partitions_exporting, restore_partition, ExportOptions, OrphanPolicy, RestoreOptions,
};

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let d = std::env::temp_dir().join(format!("sync-archive-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&d).unwrap();
        TempDir(d)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Rows and an order-independent-of-storage checksum of every row of the log
/// in [from, to): md5 of the rows' text, ordered by (created_at, id).
async fn fingerprint(c: &tokio_postgres::Client, from: &str, to: &str) -> (i64, String) {
    let r = c
        .query_one(
            "SELECT count(*), coalesce(md5(string_agg(l::text, E'\\n' ORDER BY created_at, id)), '') \
               FROM sync_activity_log l WHERE created_at >= $1::text::timestamptz \
                AND created_at < $2::text::timestamptz",
            &[&from, &to],
        )
        .await
        .unwrap();
    (r.get(0), r.get(1))
}

/// A stub of migration 0026's recount function that records each call with the
/// rows attached in its range at that moment.
async fn install_recount_stub(c: &tokio_postgres::Client) {
    c.batch_execute(
        "CREATE TABLE recount_calls (n serial, lo timestamptz, hi timestamptz, attached_rows bigint);
         DROP FUNCTION IF EXISTS sync_activity_rollup_recount(timestamptz, timestamptz);
         CREATE FUNCTION sync_activity_rollup_recount(lo timestamptz, hi timestamptz) RETURNS void
         LANGUAGE sql AS $$
           INSERT INTO recount_calls (lo, hi, attached_rows)
           SELECT lo, hi, count(*) FROM sync_activity_log WHERE created_at >= lo AND created_at < hi
         $$;",
    )
    .await
    .unwrap();
}

async fn recount_calls(c: &tokio_postgres::Client) -> Vec<(String, i64)> {
    c.query(
        "SELECT to_char(lo AT TIME ZONE 'UTC', 'YYYY-MM') || '..' || \
                to_char(hi AT TIME ZONE 'UTC', 'YYYY-MM'), attached_rows FROM recount_calls ORDER BY n",
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect()
}

fn manifests(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".manifest.json"))
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn export_then_restore_round_trips_every_row_and_recounts_rollups() {
    let db = TestDb::migrated().await;
    let mut c = db.client().await;
    let t = tenants(&c).await;
    seed_months(&c, &t, "2025-11-01", "2026-02-01", 40).await;
    // Awkward values: NULLs, quotes, newlines, unicode, big numerics.
    c.execute(
        "INSERT INTO sync_activity_log (org_id, action, status, record_count, duration_seconds, \
                                        error_message, user_id, created_at, entity_type, sync_id) \
         VALUES ($1, 'sync_complete', 'failed', 7, 12345678901234567890.123456789, \
                 E'line1\\nline2 \"q\" ''s'' \\\\ é 漢 \\t', $2, '2025-12-31 23:59:59.999999+00', NULL, NULL)",
        &[&t.org_a, &t.user_a],
    )
    .await
    .unwrap();
    let opts = opts();
    ensure_partitions(&mut c, 3, &opts, |_| {}).await.unwrap();
    install_recount_stub(&c).await;
    let before_all = fingerprint(&c, "2025-11-01", "2026-01-01").await;
    let nov = fingerprint(&c, "2025-11-01", "2025-12-01").await;
    let dec = fingerprint(&c, "2025-12-01", "2026-01-01").await;
    assert!(nov.0 > 40 && dec.0 > 40);
    let later = fingerprint(&c, "2026-01-01", "2099-01-01").await;

    let dir = TempDir::new();
    let mut phases = Vec::new();
    let report = archive_partitions_exporting(
        &mut c,
        "2026-01".parse().unwrap(),
        &ExportOptions::new(&dir.0),
        &opts,
        |p| phases.push((p.month, p.phase)),
    )
    .await
    .unwrap();
    assert_eq!(report.archived.len(), 2);
    assert!(report.archived.iter().all(|a| a.dropped));
    let rows: Vec<u64> = report
        .archived
        .iter()
        .map(|a| a.export.as_ref().unwrap().rows)
        .collect();
    assert_eq!(rows, [nov.0 as u64, dec.0 as u64]);
    assert!(phases.len() >= 6, "progress reported: {phases:?}");
    assert_eq!(fingerprint(&c, "2025-11-01", "2026-01-01").await.0, 0);
    assert_eq!(fingerprint(&c, "2026-01-01", "2099-01-01").await, later);
    assert_eq!(
        count(&c, "SELECT count(*) FROM pg_class WHERE relname IN ('sync_activity_log_2025_11', 'sync_activity_log_2025_12')").await,
        0,
        "dropped after the export"
    );
    assert_eq!(
        recount_calls(&c).await,
        [
            ("2025-11..2025-12".to_owned(), 0),
            ("2025-12..2026-01".to_owned(), 0)
        ],
        "recount after each DETACH, in its transaction"
    );
    let files = manifests(&dir.0);
    assert_eq!(files.len(), 2);
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&files[0]).unwrap()).unwrap();
    assert_eq!(manifest["month"], "2025-11");
    assert_eq!(manifest["rows"], nov.0);
    assert_eq!(manifest["from"], "2025-11-01T00:00:00Z");
    assert_eq!(manifest["sha256"].as_str().unwrap().len(), 64);
    assert_eq!(manifest["columns"][0]["name"], "id");
    let newest = sync_migrations::embedded_migrations()
        .iter()
        .map(|m| m.version)
        .max()
        .unwrap();
    assert_eq!(manifest["schema_version"], newest);
    verify_ok(&c).await;

    // Restore both, from the manifest and from the data file.
    let r1 = restore_partition(&mut c, &files[0], &RestoreOptions::default(), &opts, |_| {})
        .await
        .unwrap();
    assert_eq!(
        (r1.rows_in_file, r1.rows_restored),
        (nov.0 as u64, nov.0 as u64)
    );
    assert!(!r1.merged && !r1.ensured_first);
    let data1 = files[1]
        .to_string_lossy()
        .replace(".manifest.json", ".copy.zst");
    let r2 = restore_partition(
        &mut c,
        Path::new(&data1),
        &RestoreOptions::default(),
        &opts,
        |_| {},
    )
    .await
    .unwrap();
    assert_eq!(r2.partition, "sync_activity_log_2025_12");
    assert_eq!(fingerprint(&c, "2025-11-01", "2025-12-01").await, nov);
    assert_eq!(fingerprint(&c, "2025-12-01", "2026-01-01").await, dec);
    assert_eq!(
        fingerprint(&c, "2025-11-01", "2026-01-01").await,
        before_all
    );
    assert_eq!(fingerprint(&c, "2026-01-01", "2099-01-01").await, later);
    assert_eq!(
        recount_calls(&c).await[2..],
        [
            ("2025-11..2025-12".to_owned(), nov.0),
            ("2025-12..2026-01".to_owned(), dec.0)
        ],
        "recount after each ATTACH sees the restored rows"
    );
    // Attached like ensure attaches: RLS, TRUNCATE guard, every index; verify passes.
    assert_eq!(
        count(
            &c,
            "SELECT count(*) FROM pg_class c WHERE c.relname = 'sync_activity_log_2025_11' \
               AND c.relrowsecurity AND c.relispartition \
               AND EXISTS (SELECT 1 FROM pg_trigger g WHERE g.tgrelid = c.oid \
                            AND g.tgname = 'trg_sync_activity_log_10_no_truncate')"
        )
        .await,
        1
    );
    assert_eq!(
        count(
            &c,
            "SELECT count(*) FROM pg_indexes WHERE tablename = 'sync_activity_log_2025_11'"
        )
        .await,
        count(
            &c,
            "SELECT count(*) FROM pg_indexes WHERE tablename = 'sync_activity_log_2026_01'"
        )
        .await,
    );
    verify_ok(&c).await;

    // Restoring the same file again is refused: its rows are there.
    let err = restore_partition(&mut c, &files[0], &RestoreOptions::default(), &opts, |_| {})
        .await
        .unwrap_err();
    assert!(
        matches!(err, PartitionError::RowsAlreadyPresent { .. }),
        "{err}"
    );
    assert_eq!(fingerprint(&c, "2025-11-01", "2025-12-01").await, nov);
}

#[tokio::test]
async fn a_tampered_or_truncated_archive_is_refused_and_nothing_is_written() {
    let db = TestDb::migrated().await;
    let mut c = db.client().await;
    let t = tenants(&c).await;
    seed_months(&c, &t, "2025-11-01", "2025-12-01", 30).await;
    let opts = opts();
    let dir = TempDir::new();
    archive_partitions_exporting(
        &mut c,
        "2025-12".parse().unwrap(),
        &ExportOptions::new(&dir.0),
        &opts,
        |_| {},
    )
    .await
    .unwrap();
    let manifest = manifests(&dir.0).remove(0);
    let data = PathBuf::from(
        manifest
            .to_string_lossy()
            .replace(".manifest.json", ".copy.zst"),
    );
    let good = std::fs::read(&data).unwrap();
    let names = partition_names(&c).await;
    let total = count(&c, "SELECT count(*) FROM sync_activity_log").await;
    let mut damaged: Vec<(&str, Vec<u8>)> = Vec::new();
    let mut flipped = good.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x01;
    damaged.push(("one bit flipped", flipped));
    damaged.push(("truncated", good[..good.len() - 7].to_vec()));
    damaged.push(("appended", [&good[..], b"x"].concat()));
    damaged.push(("empty", Vec::new()));
    for (what, bytes) in damaged {
        std::fs::write(&data, &bytes).unwrap();
        let err = restore_partition(&mut c, &manifest, &RestoreOptions::default(), &opts, |_| {})
            .await
            .unwrap_err();
        assert!(
            matches!(err, PartitionError::ArchiveFileInvalid { .. }),
            "{what}: {err}"
        );
        assert!(err.to_string().contains("SHA-256"), "{what}: {err}");
        assert_eq!(partition_names(&c).await, names, "{what}");
        assert_eq!(
            count(&c, "SELECT count(*) FROM sync_activity_log").await,
            total
        );
    }
    // A manifest edited to match a different row count is refused too.
    std::fs::write(&data, &good).unwrap();
    let mut m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
    m["rows"] = serde_json::json!(m["rows"].as_u64().unwrap() + 1);
    std::fs::write(&manifest, serde_json::to_vec(&m).unwrap()).unwrap();
    let err = restore_partition(&mut c, &manifest, &RestoreOptions::default(), &opts, |_| {})
        .await
        .unwrap_err();
    assert!(
        matches!(err, PartitionError::ArchiveFileInvalid { .. }),
        "{err}"
    );
    assert_eq!(partition_names(&c).await, names);
}

#[tokio::test]
async fn orphans_are_reported_and_refused_unless_told_how_to_treat_them() {
    let db = TestDb::migrated().await;
    let mut c = db.client().await;
    let t = tenants(&c).await;
    seed_months(&c, &t, "2025-11-01", "2025-11-01", 30).await;
    // Rows of user_b (org_b) as well.
    c.execute(
        "UPDATE sync_activity_log SET user_id = $1 WHERE org_id = $2 AND record_count % 3 = 0",
        &[&t.user_b, &t.org_b],
    )
    .await
    .unwrap();
    let a_rows = count(
        &c,
        &format!(
            "SELECT count(*) FROM sync_activity_log WHERE org_id = '{}'",
            t.org_a
        ),
    )
    .await;
    let b_user_rows = count(
        &c,
        &format!(
            "SELECT count(*) FROM sync_activity_log WHERE user_id = '{}'",
            t.user_b
        ),
    )
    .await;
    let a_user_rows = count(
        &c,
        &format!(
            "SELECT count(*) FROM sync_activity_log WHERE user_id = '{}'",
            t.user_a
        ),
    )
    .await;
    let total = count(&c, "SELECT count(*) FROM sync_activity_log").await;
    let opts = opts();
    let dir = TempDir::new();
    archive_partitions_exporting(
        &mut c,
        "2025-12".parse().unwrap(),
        &ExportOptions::new(&dir.0),
        &opts,
        |_| {},
    )
    .await
    .unwrap();
    let manifest = manifests(&dir.0).remove(0);
    // org_a is deleted (its rows would have cascaded), user_b too (set null).
    c.execute("DELETE FROM organization WHERE id = $1", &[&t.org_a])
        .await
        .unwrap();
    c.execute(
        "DELETE FROM auth.users_extended WHERE id = $1",
        &[&t.user_b],
    )
    .await
    .unwrap();
    let err = restore_partition(&mut c, &manifest, &RestoreOptions::default(), &opts, |_| {})
        .await
        .unwrap_err();
    // Deleting org_a may take user_a with it (auth.users_extended's own FK).
    let user_a_gone = count(
        &c,
        &format!(
            "SELECT count(*) FROM auth.users_extended WHERE id = '{}'",
            t.user_a
        ),
    )
    .await
        == 0;
    match &err {
        PartitionError::OrphanRows {
            org_rows,
            user_rows,
            sample_org_ids,
            sample_user_ids,
        } => {
            assert_eq!(*org_rows as i64, a_rows);
            assert_eq!(
                *user_rows as i64,
                b_user_rows + if user_a_gone { a_user_rows } else { 0 }
            );
            assert_eq!(sample_org_ids, &[t.org_a]);
            assert!(sample_user_ids.contains(&t.user_b));
        }
        other => panic!("expected OrphanRows, got {other}"),
    }
    assert!(!partition_names(&c)
        .await
        .contains(&"sync_activity_log_2025_11".to_owned()));

    // as-deleted: org_a's rows left out, user_b cleared.
    let r = restore_partition(
        &mut c,
        &manifest,
        &RestoreOptions::default().with_orphans(OrphanPolicy::AsDeleted),
        &opts,
        |_| {},
    )
    .await
    .unwrap();
    assert_eq!(r.rows_in_file as i64, total);
    assert_eq!(r.rows_restored as i64, total - a_rows);
    assert_eq!(
        count(&c, "SELECT count(*) FROM sync_activity_log").await,
        total - a_rows
    );
    assert_eq!(
        count(&c, &format!("SELECT count(*) FROM sync_activity_log WHERE org_id = '{}' AND user_id IS NULL AND record_count % 3 = 0", t.org_b)).await,
        b_user_rows
    );
    verify_ok(&c).await;
}

async fn same_tenants(c: &tokio_postgres::Client, t: &Tenants) {
    c.execute(
        "INSERT INTO organization (id, name) VALUES ($1, 'a'), ($2, 'b')",
        &[&t.org_a, &t.org_b],
    )
    .await
    .unwrap();
    c.execute(
        "INSERT INTO auth.users_extended (id, org_id) VALUES ($1, $2), ($3, $4)",
        &[&t.user_a, &t.org_a, &t.user_b, &t.org_b],
    )
    .await
    .unwrap();
}

/// md5 of the rows whose ids are `ids`, ordered.
async fn fingerprint_of(c: &tokio_postgres::Client, ids: &[uuid::Uuid]) -> (i64, String) {
    let r = c
        .query_one(
            "SELECT count(*), coalesce(md5(string_agg(l::text, E'\\n' ORDER BY created_at, id)), '') \
               FROM sync_activity_log l WHERE id = ANY($1)",
            &[&ids],
        )
        .await
        .unwrap();
    (r.get(0), r.get(1))
}

#[tokio::test]
async fn restoring_a_month_inside_the_catch_all_splits_it_and_merges_its_rows() {
    // The archive comes from a database whose partitions were ensured.
    let src = TestDb::migrated().await;
    let mut s = src.client().await;
    let t = tenants(&s).await;
    seed_months(&s, &t, "2026-05-01", "2026-05-01", 25).await;
    let opts = opts();
    ensure_partitions(&mut s, 3, &opts, |_| {}).await.unwrap();
    let ids: Vec<uuid::Uuid> = s
        .query("SELECT id FROM sync_activity_log", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let exported = fingerprint_of(&s, &ids).await;
    let dir = TempDir::new();
    archive_partitions_exporting(
        &mut s,
        "2026-06".parse().unwrap(),
        &ExportOptions::new(&dir.0),
        &opts,
        |_| {},
    )
    .await
    .unwrap();
    let manifest = manifests(&dir.0)
        .into_iter()
        .find(|p| p.to_string_lossy().contains("2026_05"))
        .unwrap();

    // The target still has 0024's layout: 2026-05 lies in the catch-all, which
    // holds rows of that month and of later ones.
    let dst = TestDb::migrated().await;
    let mut d = dst.client().await;
    same_tenants(&d, &t).await;
    seed_months(&d, &t, "2026-05-01", "2026-08-01", 10).await;
    let own = fingerprint(&d, "2026-05-01", "2026-06-01").await;
    let others = fingerprint(&d, "2026-06-01", "2099-01-01").await;
    let r = restore_partition(&mut d, &manifest, &RestoreOptions::default(), &opts, |_| {})
        .await
        .unwrap();
    assert!(r.ensured_first && r.merged, "{r:?}");
    assert_eq!(r.partition, "sync_activity_log_2026_05");
    assert_eq!(fingerprint_of(&d, &ids).await, exported);
    assert_eq!(
        count(&d, "SELECT count(*) FROM sync_activity_log_2026_05").await,
        own.0 + exported.0
    );
    assert_eq!(
        count(
            &d,
            "SELECT count(*) FROM sync_activity_log_future WHERE created_at < '2027-03-01'"
        )
        .await,
        0,
        "every row is in its month"
    );
    assert_eq!(fingerprint(&d, "2026-06-01", "2099-01-01").await, others);
    verify_ok(&d).await;
}

/// kill -9 of `sync-migrate partitions archive --export` at random moments: each
/// time the month is either still attached with every row, or exported to a
/// file that restores every row. Counts are printed.
#[tokio::test]
async fn killing_an_exporting_archive_never_loses_rows() {
    use std::process::{Command, Stdio};
    let db = TestDb::migrated().await;
    let mut c = db.client().await;
    let t = tenants(&c).await;
    seed_months(&c, &t, "2025-11-01", "2025-11-01", 5_000).await;
    let opts = opts();
    ensure_partitions(&mut c, 3, &opts, |_| {}).await.unwrap();
    let original = fingerprint(&c, "2025-11-01", "2025-12-01").await;
    let dir = TempDir::new();
    let t0 = std::time::Instant::now();
    let bin = sync_tests::sync_migrate_bin();
    eprintln!("built sync-migrate in {:?}", t0.elapsed());
    let run = || {
        Command::new(&bin)
            .args(["partitions", "archive", "--before", "2025-12", "--export"])
            .arg(&dir.0)
            .args(["--now", "2026-11-15T12:00:00Z", "--database-url", &db.url()])
            .env_remove("DATABASE_URL")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    // How long a whole run takes here, to spread the kills over it.
    let started = std::time::Instant::now();
    let status = run().wait().unwrap();
    assert!(status.success());
    let full = started.elapsed();
    eprintln!("one archive --export run: {full:?}");
    let m = manifests(&dir.0).remove(0);
    restore_partition(&mut c, &m, &RestoreOptions::default(), &opts, |_| {})
        .await
        .unwrap();
    assert_eq!(fingerprint(&c, "2025-11-01", "2025-12-01").await, original);
    let (mut tries, mut still_attached, mut exported, mut lost) = (0, 0, 0, 0);
    for i in 0..10u32 {
        tries += 1;
        let mut child = run();
        // Spread over the run, from right at start-up to past the end.
        let wait = full.mul_f64(f64::from(i) / 8.0);
        std::thread::sleep(wait);
        let _ = child.kill();
        let _ = child.wait();
        // A COMMIT the killed run had sent may still be running on its
        // backend: read only once it has ended.
        sync_tests::wait_for_other_sessions_to_settle(&c, std::time::Duration::from_secs(60)).await;
        let attached = partition_names(&c)
            .await
            .contains(&"sync_activity_log_2025_11".to_owned());
        if attached {
            still_attached += 1;
            if fingerprint(&c, "2025-11-01", "2025-12-01").await != original {
                lost += 1;
            }
            continue;
        }
        exported += 1;
        // Not attached: the newest manifest holds every row.
        let newest = manifests(&dir.0).into_iter().max().unwrap();
        restore_partition(&mut c, &newest, &RestoreOptions::default(), &opts, |_| {})
            .await
            .unwrap();
        if fingerprint(&c, "2025-11-01", "2025-12-01").await != original {
            lost += 1;
        }
    }
    eprintln!(
        "kill -9 during archive --export: {tries} tries, {still_attached} still attached, \
         {exported} exported, {lost} lost"
    );
    assert_eq!(lost, 0);
    assert_eq!(still_attached + exported, tries);
    // Leftover partial files never carry a manifest.
    for e in std::fs::read_dir(&dir.0).unwrap() {
        let p = e.unwrap().path().to_string_lossy().into_owned();
        if p.ends_with(".manifest.json") {
            assert!(Path::new(&p.replace(".manifest.json", ".copy.zst")).exists());
        }
    }
    verify_ok(&c).await;
}

/// An attacker with write access to the export directory: a manifest that
/// names another month's (intact, correctly hashed) file, or a path outside
/// the directory, is refused and nothing is written.
#[tokio::test]
async fn a_manifest_lying_about_its_month_or_file_is_refused() {
    let db = TestDb::migrated().await;
    let mut c = db.client().await;
    let t = tenants(&c).await;
    seed_months(&c, &t, "2025-11-01", "2025-12-01", 10).await;
    let opts = opts();
    ensure_partitions(&mut c, 3, &opts, |_| {}).await.unwrap();
    let dir = TempDir::new();
    archive_partitions_exporting(
        &mut c,
        "2026-01".parse().unwrap(),
        &ExportOptions::new(&dir.0),
        &opts,
        |_| {},
    )
    .await
    .unwrap();
    let files = manifests(&dir.0);
    let nov: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&files[0]).unwrap()).unwrap();
    let dec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&files[1]).unwrap()).unwrap();
    // Restore December first, so one lie meets an attached month, one an absent one.
    restore_partition(&mut c, &files[1], &RestoreOptions::default(), &opts, |_| {})
        .await
        .unwrap();
    let names = partition_names(&c).await;
    let total = count(&c, "SELECT count(*) FROM sync_activity_log").await;
    let mut tries = 0;
    for (month, from, to) in [
        ("2025-11", "2025-11-01T00:00:00Z", "2025-12-01T00:00:00Z"),
        ("2025-12", "2025-12-01T00:00:00Z", "2026-01-01T00:00:00Z"),
    ] {
        // The other month's data, hashed correctly, under this month's name.
        let mut lie = if month == "2025-11" {
            dec.clone()
        } else {
            nov.clone()
        };
        lie["month"] = month.into();
        lie["from"] = from.into();
        lie["to"] = to.into();
        let path = dir.0.join(format!("lie-{month}.manifest.json"));
        std::fs::write(&path, serde_json::to_vec(&lie).unwrap()).unwrap();
        let err = restore_partition(
            &mut c,
            &path,
            &RestoreOptions::default().with_orphans(OrphanPolicy::Skip),
            &opts,
            |_| {},
        )
        .await
        .unwrap_err();
        tries += 1;
        assert!(
            matches!(err, PartitionError::Database { .. }),
            "{month}: {err}"
        );
        assert_eq!(partition_names(&c).await, names);
        assert_eq!(
            count(&c, "SELECT count(*) FROM sync_activity_log").await,
            total
        );
    }
    for bad in ["../x.copy.zst", "/etc/passwd", ".hidden"] {
        let mut lie = nov.clone();
        lie["data_file"] = bad.into();
        let path = dir.0.join("path.manifest.json");
        std::fs::write(&path, serde_json::to_vec(&lie).unwrap()).unwrap();
        let err = restore_partition(&mut c, &path, &RestoreOptions::default(), &opts, |_| {})
            .await
            .unwrap_err();
        tries += 1;
        assert!(
            matches!(err, PartitionError::ArchiveFileInvalid { .. }),
            "{bad}: {err}"
        );
    }
    assert_eq!(partition_names(&c).await, names);
    eprintln!("lying manifests: {tries} tries, {tries} refused, 0 rows written");
}
