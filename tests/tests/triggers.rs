//! The 0024 triggers' arithmetic, with controlled timestamps: inside one
//! transaction `now()` is constant, so started_at = now() - N seconds makes the
//! elapsed time exactly N.

use sync_tests::TestDb;
use tokio_postgres::Transaction;

const ORG: &str = "00000000-0000-0000-0000-0000000000a1";
const USER: &str = "00000000-0000-0000-0000-0000000000b1";

async fn seeded() -> TestDb {
    let db = TestDb::migrated().await;
    db.client()
        .await
        .batch_execute(&format!(
            "INSERT INTO organization (id, name) VALUES ('{ORG}', 'A');
             INSERT INTO auth.users_extended (id, org_id) VALUES ('{USER}', '{ORG}');"
        ))
        .await
        .unwrap();
    db
}

#[derive(Debug, PartialEq)]
struct Metrics {
    elapsed: i32,
    speed: Option<String>,
    eta: Option<i32>,
    completed: bool,
}

async fn metrics(tx: &Transaction<'_>, sync_id: &str) -> Metrics {
    let r = tx
        .query_one(
            "SELECT elapsed_seconds, speed_items_per_min::text, eta_seconds, completed_at IS NOT NULL \
             FROM sync_progress WHERE sync_id = $1",
            &[&sync_id],
        )
        .await
        .unwrap();
    Metrics {
        elapsed: r.get(0),
        speed: r.get(1),
        eta: r.get(2),
        completed: r.get(3),
    }
}

async fn log(
    tx: &Transaction<'_>,
    sync_id: &str,
) -> Vec<(String, String, i32, Option<String>, Option<String>)> {
    tx.query(
        "SELECT action::text, status::text, record_count, duration_seconds::text, error_message \
         FROM sync_activity_log WHERE sync_id = $1 ORDER BY action",
        &[&sync_id],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
    .collect()
}

#[tokio::test]
async fn elapsed_speed_eta_and_completion() {
    let db = seeded().await;
    let mut c = db.client().await;
    let tx = c.transaction().await.unwrap();
    tx.batch_execute(&format!(
        "INSERT INTO sync_progress (org_id, sync_id, entity_type, total_items, started_at, initiated_by)
         VALUES ('{ORG}', 's1', 'product', 100, now() - interval '600 seconds', '{USER}')"
    ))
    .await
    .unwrap();
    // Nothing handled yet: speed 0 per minute, ETA unknown.
    assert_eq!(
        metrics(&tx, "s1").await,
        Metrics {
            elapsed: 600,
            speed: Some("0.00".into()),
            eta: None,
            completed: false
        }
    );
    tx.batch_execute(
        "UPDATE sync_progress SET processed_count = 45, failed_count = 5 WHERE sync_id = 's1'",
    )
    .await
    .unwrap();
    // 50 items in 600 s = 5.00/min; 50 remaining at 12 s per item = 600 s.
    assert_eq!(
        metrics(&tx, "s1").await,
        Metrics {
            elapsed: 600,
            speed: Some("5.00".into()),
            eta: Some(600),
            completed: false
        }
    );
    tx.batch_execute("UPDATE sync_progress SET processed_count = 63 WHERE sync_id = 's1'")
        .await
        .unwrap();
    // 68 in 600 s = 6.80/min; 32 remaining × 600/68 = 282.35 → 283 (rounded up).
    assert_eq!(
        metrics(&tx, "s1").await,
        Metrics {
            elapsed: 600,
            speed: Some("6.80".into()),
            eta: Some(283),
            completed: false
        }
    );
    tx.batch_execute("UPDATE sync_progress SET processed_count = 95 WHERE sync_id = 's1'")
        .await
        .unwrap();
    // processed + failed = total: completed, ETA 0, speed 10.00/min.
    assert_eq!(
        metrics(&tx, "s1").await,
        Metrics {
            elapsed: 600,
            speed: Some("10.00".into()),
            eta: Some(0),
            completed: true
        }
    );
    assert_eq!(
        log(&tx, "s1").await,
        vec![
            (
                "sync_complete".into(),
                "completed_with_errors".into(),
                95,
                Some("600.000000".into()),
                Some("5 of 100 items failed".into())
            ),
            (
                "sync_start".into(),
                "in_progress".into(),
                100,
                Some("0".into()),
                None
            ),
        ]
    );
    let user: Option<uuid::Uuid> = tx
        .query_one(
            "SELECT DISTINCT user_id FROM sync_activity_log WHERE sync_id = 's1'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(user.map(|u| u.to_string()).as_deref(), Some(USER));
    tx.commit().await.unwrap();
}

/// Elapsed, speed and ETA stop at `completed_at`: with `started_at` and
/// `completed_at` stated explicitly (months in the past, 600 s apart), every
/// later update keeps elapsed at exactly 600 — a trigger that measured to
/// `now()` instead would give months. Completion detected by the trigger is
/// stamped with the completing transaction's `now()`, and elapsed equals
/// `completed_at - started_at` there. `updated_at` is the updating
/// transaction's `now()` even when the statement sets it. No sleeps.
#[tokio::test]
async fn elapsed_freezes_at_completion_and_updated_at_moves() {
    let db = seeded().await;
    let mut c = db.client().await;
    // Explicit completion in the past.
    c.batch_execute(&format!(
        "INSERT INTO sync_progress (org_id, sync_id, entity_type, total_items, started_at)
         VALUES ('{ORG}', 'past', 'order', 10, '2026-01-05 10:00:00+00');
         UPDATE sync_progress SET processed_count = 10, completed_at = '2026-01-05 10:10:00+00'
          WHERE sync_id = 'past';"
    ))
    .await
    .unwrap();
    let read = "SELECT elapsed_seconds, speed_items_per_min::text, eta_seconds, \
                       updated_at = now() FROM sync_progress WHERE sync_id = $1";
    for round in 0..3 {
        // A later update, each in its own transaction (a later now()).
        let tx = c.transaction().await.unwrap();
        tx.execute(
            "UPDATE sync_progress SET metadata = jsonb_build_object('round', $1::int), \
                    updated_at = '2000-01-01' WHERE sync_id = 'past'",
            &[&round],
        )
        .await
        .unwrap();
        let r = tx.query_one(read, &[&"past"]).await.unwrap();
        let got: (i32, Option<String>, Option<i32>, bool) =
            (r.get(0), r.get(1), r.get(2), r.get(3));
        assert_eq!(
            got,
            (600, Some("1.00".to_owned()), Some(0), true),
            "round {round}: elapsed/speed/ETA frozen at completion (600 s, 10 items), \
             updated_at maintained by the trigger"
        );
        tx.commit().await.unwrap();
    }

    // Completion detected by the trigger: completed_at is that transaction's
    // now(), elapsed measured to it; a later update keeps both.
    c.batch_execute(&format!(
        "INSERT INTO sync_progress (org_id, sync_id, entity_type, total_items, started_at)
         VALUES ('{ORG}', 'now', 'order', 10, '2026-01-05 10:00:00+00')"
    ))
    .await
    .unwrap();
    let tx = c.transaction().await.unwrap();
    let r = tx
        .query_one(
            "UPDATE sync_progress SET processed_count = 10 WHERE sync_id = 'now' \
             RETURNING completed_at = now(), \
                       elapsed_seconds = floor(extract(epoch FROM completed_at - started_at)), \
                       elapsed_seconds, completed_at",
            &[],
        )
        .await
        .unwrap();
    assert!(
        r.get::<_, bool>(0),
        "completed_at is the completing transaction's now()"
    );
    assert!(r.get::<_, bool>(1), "elapsed measured to completed_at");
    let (elapsed, completed_at): (i32, time::OffsetDateTime) = (r.get(2), r.get(3));
    tx.commit().await.unwrap();
    // Move the completion back by a day (as if it happened yesterday): a
    // frozen elapsed follows completed_at exactly, not the clock.
    let tx = c.transaction().await.unwrap();
    let r = tx
        .query_one(
            "UPDATE sync_progress SET completed_at = completed_at - interval '1 day' \
             WHERE sync_id = 'now' RETURNING elapsed_seconds, completed_at",
            &[],
        )
        .await
        .unwrap();
    let (elapsed_after, completed_after): (i32, time::OffsetDateTime) = (r.get(0), r.get(1));
    tx.commit().await.unwrap();
    assert_eq!(completed_after, completed_at - time::Duration::days(1));
    assert_eq!(elapsed_after, elapsed - 86_400);
}

#[tokio::test]
async fn no_division_by_zero_at_start_or_with_total_zero_or_unknown() {
    let db = seeded().await;
    let mut c = db.client().await;
    let tx = c.transaction().await.unwrap();
    // Started this very instant: no elapsed time, speed unknown.
    tx.batch_execute(&format!(
        "INSERT INTO sync_progress (org_id, sync_id, entity_type, total_items) VALUES ('{ORG}', 'now', 'order', 10);
         INSERT INTO sync_progress (org_id, sync_id, entity_type, total_items) VALUES ('{ORG}', 'zero', 'order', 0);
         INSERT INTO sync_progress (org_id, sync_id, entity_type, started_at)
             VALUES ('{ORG}', 'unknown', 'order', now() - interval '60 seconds');
         UPDATE sync_progress SET processed_count = 30 WHERE sync_id = 'unknown';"
    ))
    .await
    .unwrap();
    assert_eq!(
        metrics(&tx, "now").await,
        Metrics {
            elapsed: 0,
            speed: None,
            eta: None,
            completed: false
        }
    );
    // Total 0: nothing to do, complete on insert, both log entries written.
    assert_eq!(
        metrics(&tx, "zero").await,
        Metrics {
            elapsed: 0,
            speed: None,
            eta: Some(0),
            completed: true
        }
    );
    let actions: Vec<String> = log(&tx, "zero")
        .await
        .into_iter()
        .map(|l| format!("{}/{}", l.0, l.1))
        .collect();
    assert_eq!(
        actions,
        vec!["sync_complete/completed", "sync_start/in_progress"]
    );
    // Unknown total: speed known, no ETA, never auto-completes.
    assert_eq!(
        metrics(&tx, "unknown").await,
        Metrics {
            elapsed: 60,
            speed: Some("30.00".into()),
            eta: None,
            completed: false
        }
    );
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn explicit_fail_and_cancel_are_logged_with_their_status() {
    let db = seeded().await;
    let mut c = db.client().await;
    let tx = c.transaction().await.unwrap();
    tx.batch_execute(&format!(
        "INSERT INTO sync_progress (org_id, sync_id, entity_type, total_items, started_at)
             VALUES ('{ORG}', 'f', 'invoice', 10, now() - interval '30 seconds'),
                    ('{ORG}', 'c', 'invoice', 10, now() - interval '30 seconds');
         UPDATE sync_progress SET processed_count = 3, completed_at = now(),
             metadata = metadata || '{{\"_sync_outcome\": {{\"status\": \"failed\", \"error_message\": \"ERP timeout\"}}}}'
             WHERE sync_id = 'f';
         UPDATE sync_progress SET completed_at = now(),
             metadata = metadata || '{{\"_sync_outcome\": {{\"status\": \"cancelled\"}}}}'
             WHERE sync_id = 'c';"
    ))
    .await
    .unwrap();
    let f = log(&tx, "f").await;
    assert_eq!(
        f[0],
        (
            "sync_fail".into(),
            "failed".into(),
            3,
            Some("30.000000".into()),
            Some("ERP timeout".into())
        )
    );
    let c_log = log(&tx, "c").await;
    assert_eq!(c_log[0].0, "sync_cancel");
    assert_eq!(c_log[0].1, "cancelled");
    assert_eq!(
        metrics(&tx, "f").await,
        Metrics {
            elapsed: 30,
            speed: Some("6.00".into()),
            eta: Some(0),
            completed: true
        }
    );
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn constraints_refuse_bad_counts_and_bad_expiry() {
    let db = seeded().await;
    let c = db.client().await;
    c.batch_execute(&format!(
        "INSERT INTO sync_progress (org_id, sync_id, entity_type, total_items) VALUES ('{ORG}', 's', 'order', 10)"
    ))
    .await
    .unwrap();
    for (sql, code) in [
        ("UPDATE sync_progress SET processed_count = -1", "23514"),
        ("UPDATE sync_progress SET processed_count = 8, failed_count = 3", "23514"),
        ("UPDATE sync_progress SET metadata = '[]'", "23514"),
        (
            "INSERT INTO sync_preview_cache (org_id, sync_type, sync_id, delta_json, cache_key, computed_at, expires_at) \
             VALUES ('00000000-0000-0000-0000-0000000000a1', 'odoo', 's', '{}', \
                     '00000000-0000-0000-0000-0000000000a1:k', now(), now() - interval '1 second')",
            "23514",
        ),
        (
            "INSERT INTO sync_activity_log (org_id, action, status, record_count) \
             VALUES ('00000000-0000-0000-0000-0000000000a1', 'sync_start', 'pending', -5)",
            "23514",
        ),
        ("INSERT INTO sync_activity_log (org_id, action, status) \
          VALUES ('00000000-0000-0000-0000-0000000000ff', 'sync_start', 'pending')", "23503"),
    ] {
        let err = c.batch_execute(sql).await.unwrap_err();
        assert_eq!(err.code().map(|c| c.code()), Some(code), "{sql}: {err:?}");
    }
}

#[tokio::test]
async fn preview_ttl_defaults_and_cleanup() {
    let db = seeded().await;
    let c = db.client().await;
    c.batch_execute(&format!(
        "INSERT INTO sync_preview_cache (org_id, sync_type, sync_id, delta_json, cache_key, computed_at)
             VALUES ('{ORG}', 'shopify', 'live', '{{}}', '{ORG}:live', now()),
                    ('{ORG}', 'shopify', 'old', '{{}}', '{ORG}:old', now() - interval '2 hours');"
    ))
    .await
    .unwrap();
    let ttl: Vec<String> = c
        .query(
            "SELECT (expires_at - computed_at)::text FROM sync_preview_cache ORDER BY sync_id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(ttl, vec!["01:00:00", "01:00:00"]);
    // Moving computed_at without naming expires_at moves the expiry with it.
    c.batch_execute("UPDATE sync_preview_cache SET computed_at = now() WHERE sync_id = 'old'")
        .await
        .unwrap();
    c.batch_execute("UPDATE sync_preview_cache SET computed_at = now() - interval '3 hours' WHERE sync_id = 'old'")
        .await
        .unwrap();
    let deleted: i64 = c
        .query_one("SELECT * FROM auto_cleanup_preview_cache()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(deleted, 1);
    let left: Vec<String> = c
        .query("SELECT sync_id FROM sync_preview_cache", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(left, vec!["live"]);
}

/// A progress tick touches no indexed column, so PostgreSQL can do it as a HOT
/// update, and the table keeps room for it (fillfactor 70).
///
/// Each of 10 syncs is ticked once: their 10 new row versions fit in the free
/// space fillfactor leaves on the page, so no update depends on pruning (which a
/// concurrent snapshot, e.g. autovacuum's ANALYZE on a loaded server, can hold
/// back). A tick that changed an indexed column would make all 10 non-HOT.
#[tokio::test]
async fn progress_ticks_are_hot_updates() {
    let db = seeded().await;
    let c = db.client().await;
    let options: Vec<String> = c
        .query_one(
            "SELECT coalesce(reloptions, '{}') FROM pg_class WHERE oid = 'sync_progress'::regclass",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(options, ["fillfactor=70"]);
    c.batch_execute(&format!(
        "INSERT INTO sync_progress (org_id, sync_id, entity_type, total_items, job_id)
             SELECT '{ORG}', 's' || i, 'product', 100000, 'job-1' FROM generate_series(1, 10) i"
    ))
    .await
    .unwrap();
    for i in 1..=10 {
        c.batch_execute(&format!(
            "UPDATE sync_progress SET processed_count = processed_count + 10, failed_count = failed_count + 1, \
             current_item = {i}, batch_number = {i}, metadata = '{{\"batch\": {i}}}' WHERE sync_id = 's{i}'"
        ))
        .await
        .unwrap();
    }
    // Statistics are flushed at transaction end by the backend; force it for this session.
    c.batch_execute("SELECT pg_stat_force_next_flush()")
        .await
        .unwrap();
    let r = c
        .query_one(
            "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_xact_user_tables WHERE relname = 'sync_progress' \
             UNION ALL SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = 'sync_progress' \
             ORDER BY 1 DESC LIMIT 1",
            &[],
        )
        .await
        .unwrap();
    let (upd, hot): (i64, i64) = (r.get(0), r.get(1));
    assert_eq!(upd, 10);
    assert_eq!(hot, 10, "every tick must be a HOT update ({hot} of {upd})");
}
