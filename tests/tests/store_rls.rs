//! Row-level security as a login role that is neither superuser nor owner: with
//! users of two orgs, a user of org A can neither select, insert, update nor
//! delete org B's rows in any of the three tables, nor read any partition
//! directly, and sees nothing without claims.
mod store_common;

use serde_json::json;
use store_common::Fixture;
use sync_store::{
    ActivityFilter, NewActivity, PutPreview, StartSync, Store, SyncAction, SyncEntityType,
    SyncStatus, SyncType,
};
use time::macros::datetime;
use tokio_postgres::error::SqlState;
use tokio_postgres::Client;
use uuid::Uuid;

const TABLES: [&str; 3] = ["sync_preview_cache", "sync_progress", "sync_activity_log"];
const PARTITIONS: [&str; 5] = [
    "sync_activity_log_2025_11",
    "sync_activity_log_2025_12",
    "sync_activity_log_2026_01",
    "sync_activity_log_2026_02",
    "sync_activity_log_future",
];

/// Rows in both orgs, in every table and every partition.
async fn seed(f: &Fixture) {
    let svc = f.store.service();
    for org in [f.org_a, f.org_b] {
        svc.put_preview(
            org,
            &PutPreview::new(SyncType::Odoo, "s1", "k", json!({"org": org})),
        )
        .await
        .unwrap();
        let mut s = StartSync::new("s1", SyncEntityType::Order);
        s.total_items = Some(100);
        svc.start_sync(org, &s).await.unwrap();
        let entries: Vec<NewActivity> = [
            datetime!(2025-11-02 00:00 UTC),
            datetime!(2025-12-02 00:00 UTC),
            datetime!(2026-01-02 00:00 UTC),
            datetime!(2026-02-02 00:00 UTC),
            datetime!(2026-11-02 00:00 UTC),
        ]
        .into_iter()
        .map(|at| {
            let mut e = NewActivity::new(SyncAction::RecordCreate, SyncStatus::Completed);
            e.created_at = Some(at);
            e
        })
        .collect();
        svc.append_activity_many(org, &entries).await.unwrap();
    }
}

/// Runs `sql` in a transaction as sync_tenant with (or without) the user's
/// claims, then rolls back. Returns the rows affected or the SQLSTATE.
async fn as_tenant(client: &mut Client, user: Option<Uuid>, sql: &str) -> Result<u64, String> {
    let tx = client.transaction().await.unwrap();
    tx.batch_execute("SET LOCAL ROLE sync_tenant")
        .await
        .unwrap();
    if let Some(user) = user {
        tx.execute(
            "SELECT set_config('request.jwt.claims', $1, true)",
            &[&format!("{{\"sub\":\"{user}\"}}")],
        )
        .await
        .unwrap();
    }
    let r = tx
        .execute(sql, &[])
        .await
        .map_err(|e| e.code().unwrap().code().to_owned());
    let _ = tx.rollback().await;
    r
}

async fn count_as_tenant(client: &mut Client, user: Option<Uuid>, sql: &str) -> i64 {
    let tx = client.transaction().await.unwrap();
    tx.batch_execute("SET LOCAL ROLE sync_tenant")
        .await
        .unwrap();
    if let Some(user) = user {
        tx.execute(
            "SELECT set_config('request.jwt.claims', $1, true)",
            &[&format!("{{\"sub\":\"{user}\"}}")],
        )
        .await
        .unwrap();
    }
    let n = tx.query_one(sql, &[]).await.unwrap().get(0);
    tx.rollback().await.unwrap();
    n
}

#[tokio::test]
async fn tenant_api_as_login_role_sees_only_its_org() {
    let f = Fixture::new().await;
    seed(&f).await;
    let (role, config) = f.db.login_role("api").await;
    let store = Store::new(sync_tests::pool_for(&config));
    let mut raw = sync_tests::connect(&config).await;
    let who: (String, bool) = {
        let r = raw
            .query_one(
                "SELECT current_user::text, rolsuper FROM pg_roles WHERE rolname = current_user",
                &[],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(who, (role.clone(), false));
    // The service scope as this role has no rights at all (it is not the owner).
    let err = store.service().get_sync(f.org_a, "s1").await.unwrap_err();
    assert!(matches!(err, sync_store::Error::Forbidden { .. }), "{err}");

    let ta = store.tenant(f.user_a);
    assert_eq!(ta.get_sync("s1").await.unwrap().unwrap().org_id, f.org_a);
    let e = ta.get_preview_by_key("k").await.unwrap().unwrap();
    assert_eq!((e.org_id, e.delta_json), (f.org_a, json!({"org": f.org_a})));
    let acts = ta
        .list_activity(&ActivityFilter::default(), None, 100)
        .await
        .unwrap()
        .entries;
    assert_eq!(acts.len(), 6, "5 appended + sync_start");
    assert!(acts.iter().all(|a| a.org_id == f.org_a));
    let m = ta.metrics(None).await.unwrap();
    assert_eq!((m.cache_live, m.active_syncs, m.activity_total), (1, 1, 6));
    // Writes through the tenant API land in the user's org only.
    ta.report_progress(
        "s1",
        &sync_store::ProgressDelta {
            processed: 5,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let b = f
        .store
        .service()
        .get_sync(f.org_b, "s1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(b.processed_count, 0);

    // Raw SQL as the same role, switched to sync_tenant with user A's claims.
    let a = Some(f.user_a);
    for t in TABLES {
        let n = count_as_tenant(
            &mut raw,
            a,
            &format!("SELECT count(*) FROM {t} WHERE org_id = '{}'", f.org_b),
        )
        .await;
        assert_eq!(n, 0, "select of org B's rows in {t}");
        let n = count_as_tenant(&mut raw, a, &format!("SELECT count(*) FROM {t}")).await;
        assert!(n > 0, "own rows of {t} visible");
        let n = count_as_tenant(&mut raw, None, &format!("SELECT count(*) FROM {t}")).await;
        assert_eq!(n, 0, "nothing of {t} without claims");
    }
    // INSERT into org B: refused by the policies' WITH CHECK.
    let b_org = f.org_b;
    for sql in [
        format!("INSERT INTO sync_preview_cache (org_id, sync_type, sync_id, delta_json, cache_key) VALUES ('{b_org}', 'odoo', 'x', '{{}}', '{b_org}:evil')"),
        format!("INSERT INTO sync_progress (org_id, sync_id, entity_type) VALUES ('{b_org}', 'evil', 'order')"),
        format!("INSERT INTO sync_activity_log (org_id, action, status) VALUES ('{b_org}', 'record_create', 'completed')"),
    ] {
        assert_eq!(as_tenant(&mut raw, a, &sql).await, Err("42501".to_owned()), "{sql}");
    }
    // UPDATE / DELETE of org B's rows: nothing matches.
    for sql in [
        format!(
            "UPDATE sync_preview_cache SET delta_json = '{{\"pwned\":1}}' WHERE org_id = '{b_org}'"
        ),
        format!("UPDATE sync_progress SET processed_count = 99 WHERE org_id = '{b_org}'"),
        "UPDATE sync_progress SET processed_count = 1".to_owned(),
        format!("DELETE FROM sync_preview_cache WHERE org_id = '{b_org}'"),
        format!("DELETE FROM sync_progress WHERE org_id = '{b_org}'"),
    ] {
        let affected = as_tenant(&mut raw, a, &sql).await.unwrap();
        let expect = u64::from(sql == "UPDATE sync_progress SET processed_count = 1");
        assert_eq!(affected, expect, "{sql}");
    }
    // Moving an own row into org B: refused.
    assert_eq!(
        as_tenant(
            &mut raw,
            a,
            &format!("UPDATE sync_progress SET org_id = '{b_org}'")
        )
        .await,
        Err("42501".to_owned())
    );
    // The audit trail is append-only for tenants: UPDATE / DELETE not granted.
    for sql in [
        "UPDATE sync_activity_log SET record_count = 1",
        "DELETE FROM sync_activity_log",
    ] {
        assert_eq!(
            as_tenant(&mut raw, a, sql).await,
            Err("42501".to_owned()),
            "{sql}"
        );
    }
    // Partitions directly: no privilege.
    for p in PARTITIONS {
        assert_eq!(
            as_tenant(&mut raw, a, &format!("SELECT * FROM {p}")).await,
            Err("42501".to_owned()),
            "{p}"
        );
    }
    // Org B's rows are untouched.
    let b_rows: i64 = f
        .admin
        .query_one(
            "SELECT (SELECT count(*) FROM sync_preview_cache WHERE org_id = $1 AND delta_json = jsonb_build_object('org', $1::text)) \
                  + (SELECT count(*) FROM sync_progress WHERE org_id = $1 AND processed_count = 0) \
                  + (SELECT count(*) FROM sync_activity_log WHERE org_id = $1)",
            &[&f.org_b],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(b_rows, 1 + 1 + 6);
    assert!(ta.invalidate_preview("k").await.unwrap());
    assert!(f
        .store
        .service()
        .get_preview_by_key(f.org_b, "k")
        .await
        .unwrap()
        .is_some());
}

/// Every partition of the activity log, read from the catalog (so partitions
/// that maintenance creates are included).
async fn log_partitions(admin: &Client) -> Vec<String> {
    admin
        .query(
            "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
             WHERE i.inhparent = 'sync_activity_log'::regclass ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// The audit trail is append-only for every role but the owner, whatever it was
/// granted (Supabase grants ALL on every table in `public` to `anon` and
/// `authenticated`): a login role that is neither superuser nor owner, holding
/// ALL privileges on every table and partition (including partitions created by
/// `ensure_partitions`), with valid claims of a user of org A, cannot UPDATE or
/// DELETE a single log row, through the parent or any partition; it still reads
/// its org's rows through the parent and appends to its own org only.
#[tokio::test]
async fn audit_trail_is_append_only_for_a_role_holding_all_privileges() {
    let f = Fixture::new().await;
    seed(&f).await;
    // Partition maintenance adds partitions (from the catch-all's 2026-03 on);
    // they must be as closed as the migration's.
    let mut owner = f.db.client().await;
    sync_migrations::partitions::ensure_partitions(
        &mut owner,
        1,
        &sync_migrations::partitions::PartitionOptions::default(),
        |_| {},
    )
    .await
    .unwrap();
    let partitions = log_partitions(&f.admin).await;
    assert!(
        partitions.len() > PARTITIONS.len(),
        "ensure created partitions: {partitions:?}"
    );
    assert!(partitions.iter().any(|p| p == "sync_activity_log_2026_03"));

    let (role, config) = f.db.login_role("auditor").await;
    f.admin
        .batch_execute(&format!(
            "GRANT USAGE ON SCHEMA auth TO {role}; \
             GRANT SELECT ON auth.users_extended TO {role}; \
             GRANT EXECUTE ON FUNCTION auth.uid() TO {role}; \
             GRANT ALL ON ALL TABLES IN SCHEMA public TO {role};"
        ))
        .await
        .unwrap();
    // The role really holds every privilege on every relation it will attack,
    // and is neither superuser nor owner of any of them.
    let weak: i64 = f
        .admin
        .query_one(
            "SELECT count(*) FROM pg_class c, pg_roles r \
             WHERE r.rolname = $1 AND (c.oid = 'sync_activity_log'::regclass OR c.oid IN \
                   (SELECT inhrelid FROM pg_inherits WHERE inhparent = 'sync_activity_log'::regclass)) \
               AND (r.rolsuper OR r.rolbypassrls OR c.relowner = r.oid OR NOT c.relrowsecurity \
                    OR NOT has_table_privilege(r.oid, c.oid, 'SELECT, INSERT, UPDATE, DELETE') \
                    OR NOT has_table_privilege(r.oid, c.oid, 'SELECT') \
                    OR NOT has_table_privilege(r.oid, c.oid, 'UPDATE') \
                    OR NOT has_table_privilege(r.oid, c.oid, 'DELETE'))",
            &[&role],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        weak, 0,
        "role {role} holds ALL, is not owner/superuser, RLS on"
    );

    let before = store_common::snapshot(&f.admin).await;
    let a_rows: i64 = f
        .admin
        .query_one(
            "SELECT count(*) FROM sync_activity_log WHERE org_id = $1",
            &[&f.org_a],
        )
        .await
        .unwrap()
        .get(0);
    assert!(a_rows > 0);
    let raw = sync_tests::connect(&config).await;
    raw.execute(
        "SELECT set_config('request.jwt.claims', $1, false)",
        &[&format!("{{\"sub\":\"{}\"}}", f.user_a)],
    )
    .await
    .unwrap();
    let a = f.org_a;
    let b = f.org_b;
    let mut tries = 0;
    let mut relations = vec!["sync_activity_log".to_owned()];
    relations.extend(partitions.iter().cloned());
    for rel in &relations {
        for sql in [
            format!("UPDATE {rel} SET record_count = record_count + 1000"),
            format!("UPDATE {rel} SET error_message = 'rewritten' WHERE org_id = '{a}'"),
            format!("UPDATE {rel} SET org_id = '{b}' WHERE org_id = '{a}'"),
            format!("DELETE FROM {rel}"),
            format!("DELETE FROM {rel} WHERE org_id = '{a}'"),
            format!("DELETE FROM {rel} WHERE org_id = '{b}'"),
        ] {
            tries += 1;
            match raw.execute(&sql, &[]).await {
                Ok(n) => assert_eq!(n, 0, "{sql} changed {n} row(s)"),
                Err(e) => assert_eq!(
                    e.code(),
                    Some(&SqlState::INSUFFICIENT_PRIVILEGE),
                    "{sql}: {e}"
                ),
            }
        }
    }
    assert_eq!(tries, relations.len() * 6);
    // The idempotency keys (0025) are append-only the same way: removing one would
    // let a retry apply twice. Keys of the user's own org exist for the attempt.
    f.admin
        .execute(
            "INSERT INTO sync_activity_batch (org_id, batch_key, row_count) \
             VALUES ($1, gen_random_uuid(), 1)",
            &[&a],
        )
        .await
        .unwrap();
    for sql in [
        "UPDATE sync_activity_batch SET row_count = row_count + 1".to_owned(),
        "DELETE FROM sync_activity_batch".to_owned(),
        "UPDATE sync_progress_tick_key SET tick_key = tick_key + 1".to_owned(),
        "DELETE FROM sync_progress_tick_key".to_owned(),
    ] {
        match raw.execute(&sql, &[]).await {
            Ok(n) => assert_eq!(n, 0, "{sql} changed {n} row(s)"),
            Err(e) => assert_eq!(
                e.code(),
                Some(&SqlState::INSUFFICIENT_PRIVILEGE),
                "{sql}: {e}"
            ),
        }
    }
    let batches: i64 = f
        .admin
        .query_one("SELECT count(*) FROM sync_activity_batch", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(batches, 1, "the org's batch key is still there");
    relations.extend([
        "sync_activity_batch".to_owned(),
        "sync_progress_tick_key".to_owned(),
    ]);
    // RLS does not cover TRUNCATE, which ALL includes: the guard trigger refuses it
    // on the log and on every partition, those created by maintenance included,
    // and on the key tables.
    for rel in &relations {
        let sql = format!("TRUNCATE {rel}");
        let e = raw
            .batch_execute(&sql)
            .await
            .expect_err(&format!("{sql} must be refused"));
        assert_eq!(
            e.code(),
            Some(&SqlState::INSUFFICIENT_PRIVILEGE),
            "{sql}: {e}"
        );
    }
    assert_eq!(
        store_common::snapshot(&f.admin).await,
        before,
        "nothing changed"
    );

    // SELECT through the parent: the own org's rows, all of them; directly from a
    // partition: nothing.
    let seen: i64 = raw
        .query_one("SELECT count(*) FROM sync_activity_log", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(seen, a_rows);
    for p in &partitions {
        let n: i64 = raw
            .query_one(&format!("SELECT count(*) FROM {p}"), &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 0, "{p} read directly shows nothing");
    }
    // INSERT through the parent: own org yes, org B no; into a partition: no.
    let n = raw
        .execute(
            "INSERT INTO sync_activity_log (org_id, action, status, created_at) \
             VALUES ($1, 'record_create', 'completed', '2026-01-05T00:00:00Z')",
            &[&f.org_a],
        )
        .await
        .unwrap();
    assert_eq!(n, 1);
    for (rel, org) in [
        ("sync_activity_log", f.org_b),
        ("sync_activity_log_2026_01", f.org_a),
        ("sync_activity_log_2026_03", f.org_a),
    ] {
        let e = raw
            .execute(
                &format!(
                    "INSERT INTO {rel} (org_id, action, status, created_at) \
                     VALUES ($1, 'record_create', 'completed', '{}')",
                    if rel.ends_with("_03") {
                        "2026-03-05T00:00:00Z"
                    } else {
                        "2026-01-05T00:00:00Z"
                    }
                ),
                &[&org],
            )
            .await
            .unwrap_err();
        assert_eq!(
            e.code(),
            Some(&SqlState::INSUFFICIENT_PRIVILEGE),
            "{rel}: {e}"
        );
    }
    let after: i64 = f
        .admin
        .query_one(
            "SELECT count(*) FROM sync_activity_log WHERE org_id = $1",
            &[&f.org_a],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(after, a_rows + 1, "the one permitted append, nothing else");
}

/// Every table of the schema that this project's migrations create (all but the
/// prerequisites' `organization` and refinery's history) and every log partition
/// has RLS enabled, and no permissive UPDATE/DELETE policy opens the log or a
/// partition to a non-owner: a later migration or partition that forgets this
/// fails here.
#[tokio::test]
async fn every_table_has_rls_and_the_log_no_open_write_policy() {
    let f = Fixture::new().await;
    let mut owner = f.db.client().await;
    sync_migrations::partitions::ensure_partitions(
        &mut owner,
        1,
        &sync_migrations::partitions::PartitionOptions::default(),
        |_| {},
    )
    .await
    .unwrap();
    let open: Vec<String> = f
        .admin
        .query(
            "SELECT c.relname::text FROM pg_class c \
             WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind IN ('r', 'p') \
               AND c.relname NOT IN ('organization', 'refinery_schema_history') \
               AND NOT c.relrowsecurity ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(open.is_empty(), "tables without RLS: {open:?}");
    let writable: Vec<String> = f
        .admin
        .query(
            "SELECT p.tablename || '.' || p.policyname FROM pg_policies p \
             WHERE p.schemaname = current_schema() \
               AND (p.tablename IN ('sync_activity_log', 'sync_activity_batch', 'sync_progress_tick_key') \
                    OR p.tablename::regclass IN \
                    (SELECT inhrelid FROM pg_inherits WHERE inhparent = 'sync_activity_log'::regclass)) \
               AND p.permissive = 'PERMISSIVE' AND p.cmd IN ('UPDATE', 'DELETE', 'ALL') \
               AND coalesce(p.qual, 'true') <> 'false' ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        writable.is_empty(),
        "open write policies on the log or the key tables: {writable:?}"
    );
    let n_policies: i64 = f
        .admin
        .query_one(
            "SELECT count(*) FROM pg_policies WHERE schemaname = current_schema() \
               AND tablename IN ('sync_preview_cache', 'sync_progress', 'sync_activity_log')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n_policies, 12, "the spec's 4 policies per table");
}
