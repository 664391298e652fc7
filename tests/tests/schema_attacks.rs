//! What the attacker's pass reproduced against the schema, as tests: a login role
//! (neither superuser nor owner) must not run its code as the owner through a
//! temporary object that shadows one of ours, must not hide audit rows in a
//! temporary table, must not TRUNCATE any of the tables, and must not keep the
//! TRIGGER / TRUNCATE privileges that default privileges hand out.
mod store_common;

use store_common::Fixture;
use sync_tests::TestDb;
use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

/// A session of a fresh login role acting as `sync_tenant` with the claims of
/// org A's user (what the tenant scope does, but held open as plain SQL).
async fn tenant_session(f: &Fixture, label: &str) -> Client {
    let (_, config) = f.db.login_role(label).await;
    let c = sync_tests::connect(&config).await;
    c.batch_execute("SET ROLE sync_tenant").await.unwrap();
    c.execute(
        "SELECT set_config('request.jwt.claims', $1, false), \
                set_config('request.jwt.claim.sub', $2, false)",
        &[
            &format!("{{\"sub\":\"{}\"}}", f.user_a),
            &f.user_a.to_string(),
        ],
    )
    .await
    .unwrap();
    c
}

/// The SECURITY DEFINER pruning trigger (0025) deletes from the key table as the
/// owner. With pg_temp first on its search_path, a tenant's temporary table of
/// that name, with a trigger of the tenant's, ran the tenant's code as the owner
/// (a superuser here): privilege escalation. Pinned with pg_temp last, the real
/// table is used and the tenant's code never runs.
#[tokio::test]
async fn a_temporary_table_cannot_take_the_place_of_ours_in_a_security_definer_trigger() {
    let f = Fixture::new().await;
    let c = tenant_session(&f, "shadow").await;
    c.batch_execute(
        "CREATE TEMP TABLE fired (who text); \
         CREATE TEMP TABLE sync_progress_tick_key (org_id uuid, sync_id varchar(255), tick_key bigint); \
         CREATE FUNCTION pg_temp.evil() RETURNS trigger LANGUAGE plpgsql AS \
           $$BEGIN INSERT INTO pg_temp.fired VALUES (current_user); RETURN OLD; END$$; \
         CREATE TRIGGER evil BEFORE DELETE ON pg_temp.sync_progress_tick_key \
           FOR EACH ROW EXECUTE FUNCTION pg_temp.evil();",
    )
    .await
    .unwrap();
    c.execute(
        "INSERT INTO pg_temp.sync_progress_tick_key VALUES ($1, 'esc', 1)",
        &[&f.org_a],
    )
    .await
    .unwrap();
    c.execute(
        "INSERT INTO public.sync_progress (org_id, sync_id, entity_type, total_items) \
         VALUES ($1, 'esc', 'product', 10)",
        &[&f.org_a],
    )
    .await
    .unwrap();
    // Completing the sync fires the pruning trigger (SECURITY DEFINER).
    c.execute(
        "UPDATE public.sync_progress SET processed_count = 10 WHERE sync_id = 'esc'",
        &[],
    )
    .await
    .unwrap();
    let fired: i64 = c
        .query_one("SELECT count(*) FROM pg_temp.fired", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        fired, 0,
        "the tenant's trigger ran inside the owner's function"
    );
    let kept: i64 = c
        .query_one("SELECT count(*) FROM pg_temp.sync_progress_tick_key", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(kept, 1, "the owner's DELETE reached the temporary table");
}

/// The triggers write a sync's start and end to the audit log. With an unpinned
/// search_path a tenant's temporary `sync_activity_log` received them instead.
#[tokio::test]
async fn a_temporary_sync_activity_log_does_not_swallow_the_audit_rows() {
    let f = Fixture::new().await;
    let c = tenant_session(&f, "ghost").await;
    c.batch_execute(
        "CREATE TEMP TABLE sync_activity_log (LIKE public.sync_activity_log INCLUDING DEFAULTS)",
    )
    .await
    .unwrap();
    c.execute(
        "INSERT INTO public.sync_progress (org_id, sync_id, entity_type, total_items) \
         VALUES ($1, 'ghost', 'product', 10)",
        &[&f.org_a],
    )
    .await
    .unwrap();
    c.execute(
        "UPDATE public.sync_progress SET processed_count = 10 WHERE sync_id = 'ghost'",
        &[],
    )
    .await
    .unwrap();
    let logged: Vec<String> = f
        .admin
        .query(
            "SELECT action::text FROM public.sync_activity_log WHERE sync_id = 'ghost' ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(logged, ["sync_complete", "sync_start"]);
}

/// RLS does not filter TRUNCATE: every table refuses it to a non-owner holding
/// ALL, even with a temporary `pg_class` that would answer "you own it" to an
/// unqualified catalog lookup.
#[tokio::test]
async fn truncate_is_refused_on_every_table_even_with_a_fake_pg_class() {
    let f = Fixture::new().await;
    let (role, config) = f.db.login_role("truncator").await;
    f.admin
        .batch_execute(&format!(
            "GRANT ALL ON ALL TABLES IN SCHEMA public TO {role}"
        ))
        .await
        .unwrap();
    let c = sync_tests::connect(&config).await;
    c.batch_execute(
        "CREATE TEMP TABLE pg_class AS \
           SELECT c.oid, (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = current_user) AS relowner \
             FROM pg_catalog.pg_class c WHERE relname LIKE 'sync_%'",
    )
    .await
    .unwrap();
    let before = store_common::snapshot(&f.admin).await;
    for table in [
        "sync_preview_cache",
        "sync_progress",
        "sync_activity_log",
        "sync_activity_log_future",
        "sync_progress_tick_key",
        "sync_activity_batch",
    ] {
        let e = c
            .batch_execute(&format!("TRUNCATE {table} CASCADE"))
            .await
            .expect_err(&format!("TRUNCATE {table} must be refused"));
        assert_eq!(
            e.code(),
            Some(&SqlState::INSUFFICIENT_PRIVILEGE),
            "{table}: {e}"
        );
    }
    assert_eq!(store_common::snapshot(&f.admin).await, before);
}

/// Default privileges (as on Supabase: ALL on new tables to the API roles) hand
/// out TRIGGER and TRUNCATE at CREATE TABLE; the migrations take them back from
/// every role but the owner, keeping the others.
#[tokio::test]
async fn default_privileges_do_not_leave_trigger_or_truncate_to_other_roles() {
    let db = TestDb::empty().await;
    let (role, _) = db.login_role("api").await;
    let admin = db.client().await;
    admin
        .batch_execute(&format!(
            "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON TABLES TO {role}"
        ))
        .await
        .unwrap();
    let mut client = db.client().await;
    sync_migrations::apply(&mut client, &sync_migrations::MigrateOptions::default())
        .await
        .unwrap();
    let rows = admin
        .query(
            "SELECT c.relname::text, \
                    has_table_privilege($1, c.oid, 'SELECT'), \
                    has_table_privilege($1, c.oid, 'TRIGGER'), \
                    has_table_privilege($1, c.oid, 'TRUNCATE'), \
                    has_table_privilege($1, c.oid, 'REFERENCES') \
               FROM pg_class c \
              WHERE c.relname IN ('sync_preview_cache', 'sync_progress', 'sync_activity_log', \
                                  'sync_progress_tick_key', 'sync_activity_batch', \
                                  'sync_activity_rollup', 'sync_activity_rollup_delta', \
                                  'sync_activity_rollup_state') \
                 OR c.oid IN (SELECT inhrelid FROM pg_inherits \
                               WHERE inhparent = 'sync_activity_log'::regclass) \
              ORDER BY 1",
            &[&role],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 13, "3 + 2 + 3 tables and 5 partitions");
    for r in &rows {
        let (name, select, trigger, truncate, references): (String, bool, bool, bool, bool) =
            (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4));
        // 0026's tables keep no default privilege at all (SELECT is granted to
        // sync_tenant only); the others keep theirs but these three.
        let rollup = name.starts_with("sync_activity_rollup");
        assert_eq!(select, !rollup, "{name}: SELECT {select}");
        assert!(
            !trigger && !truncate && !references,
            "{name}: TRIGGER {trigger}, TRUNCATE {truncate}, REFERENCES {references}"
        );
    }
    admin
        .batch_execute(&format!(
            "ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE ALL ON TABLES FROM {role}"
        ))
        .await
        .unwrap();
}

/// A later explicit GRANT gives TRIGGER back, and a trigger of someone else's on
/// a sync table runs inside every writer's statement: `doctor` fails on both.
#[tokio::test]
async fn doctor_fails_on_trigger_privileges_and_foreign_triggers() {
    let f = Fixture::new().await;
    let check = |findings: &[sync_migrations::Finding], name: &str| {
        findings
            .iter()
            .find(|x| x.check == name)
            .unwrap_or_else(|| panic!("no {name} check"))
            .verdict
    };
    let healthy = sync_migrations::doctor(&f.admin, None).await.unwrap();
    assert_eq!(
        check(&healthy, "table_privileges"),
        sync_migrations::Verdict::Pass
    );
    assert_eq!(
        check(&healthy, "foreign_triggers"),
        sync_migrations::Verdict::Pass
    );

    let (role, config) = f.db.login_role("trigger_holder").await;
    f.admin
        .batch_execute(&format!(
            "GRANT ALL ON ALL TABLES IN SCHEMA public TO {role}"
        ))
        .await
        .unwrap();
    let c = sync_tests::connect(&config).await;
    // A persistent trigger of the attacker's, using an existing function: the
    // owner's inserts into the log would be silently dropped.
    c.batch_execute(
        "CREATE TRIGGER zz_drop BEFORE INSERT ON sync_activity_log \
         FOR EACH ROW EXECUTE FUNCTION sync_refuse_truncate()",
    )
    .await
    .unwrap();
    let sick = sync_migrations::doctor(&f.admin, None).await.unwrap();
    let privileges = sick.iter().find(|x| x.check == "table_privileges").unwrap();
    assert_eq!(privileges.verdict, sync_migrations::Verdict::Fail);
    assert!(privileges.found.contains(&role), "{}", privileges.found);
    let triggers = sick.iter().find(|x| x.check == "foreign_triggers").unwrap();
    assert_eq!(triggers.verdict, sync_migrations::Verdict::Fail);
    assert!(triggers.found.contains("zz_drop"), "{}", triggers.found);
}

/// The rollup's old advisory lock key: any login could take it and stall
/// compaction, recount and TRUNCATE (attack finding 4).
const OLD_ROLLUP_LOCK_KEY: i64 = 7526477202620245042;

/// Serialisation is the state row's lock now: a plain login holding the old
/// advisory key changes nothing, and it cannot lock the state row itself (FOR
/// UPDATE / FOR KEY SHARE need UPDATE, which no non-owner holds).
#[tokio::test]
async fn a_login_cannot_stall_the_rollups_with_a_lock() {
    let f = Fixture::new().await;
    let (_, config) = f.db.login_role("locker").await;
    let attacker = sync_tests::connect(&config).await;
    attacker
        .execute("SELECT pg_advisory_lock($1)", &[&OLD_ROLLUP_LOCK_KEY])
        .await
        .unwrap();
    attacker
        .batch_execute("SET ROLE sync_tenant")
        .await
        .unwrap();
    for clause in [
        "FOR UPDATE",
        "FOR NO KEY UPDATE",
        "FOR SHARE",
        "FOR KEY SHARE",
    ] {
        attacker.batch_execute("BEGIN").await.unwrap();
        let e = attacker
            .query(
                &format!("SELECT 1 FROM sync_activity_rollup_state {clause}"),
                &[],
            )
            .await
            .expect_err(clause);
        assert_eq!(
            e.code(),
            Some(&SqlState::INSUFFICIENT_PRIVILEGE),
            "{clause}: {e:?}"
        );
        attacker.batch_execute("ROLLBACK").await.unwrap();
    }
    // While the attacker still holds the advisory key (and an open transaction
    // with a plain SELECT of the state row), compaction and recount work.
    attacker
        .batch_execute("BEGIN; SELECT * FROM sync_activity_rollup_state")
        .await
        .unwrap();
    f.admin
        .batch_execute(&format!(
            "INSERT INTO sync_activity_log (org_id, action, status) \
             SELECT '{}', 'record_update', 'completed' FROM generate_series(1, 5)",
            f.org_a
        ))
        .await
        .unwrap();
    let admin = f.db.client().await;
    admin
        .batch_execute("SET lock_timeout = '2s'; SET statement_timeout = '10s'")
        .await
        .unwrap();
    let all_time = "SELECT coalesce(sum(n), 0)::bigint FROM sync_activity_rollup \
                     WHERE grain = 'all' AND org_id = $1";
    admin
        .query_one("SELECT sync_activity_rollup_compact()", &[])
        .await
        .unwrap();
    let all: i64 = admin.query_one(all_time, &[&f.org_a]).await.unwrap().get(0);
    assert_eq!(all, 5, "every delta folded (by the trigger or this call)");
    let recounted: i64 = admin
        .query_one(
            "SELECT sync_activity_rollup_recount('-infinity', 'infinity')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(recounted, 5);
    let all: i64 = admin.query_one(all_time, &[&f.org_a]).await.unwrap().get(0);
    assert_eq!(all, 5);
    attacker.batch_execute("ROLLBACK").await.unwrap();
}

/// Supabase-style default privileges, set before the migrations run, hand
/// EXECUTE on every new function and ALL on every new table to `authenticated`.
/// The owner-only SECURITY DEFINER functions (0026's and 0025's) and the
/// rollup tables must still be the owner's only (attack finding 5).
#[tokio::test]
async fn default_privileges_of_authenticated_do_not_reach_the_owner_only_functions() {
    let db = TestDb::empty().await;
    let admin = db.client().await;
    // Roles are cluster-wide: created once, never dropped (other tests and
    // databases may use it).
    admin
        .batch_execute(
            "DO $r$ BEGIN CREATE ROLE authenticated NOLOGIN; \
             EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $r$; \
             ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON FUNCTIONS TO authenticated; \
             ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON TABLES TO authenticated;",
        )
        .await
        .unwrap();
    let mut client = db.client().await;
    sync_migrations::apply(&mut client, &sync_migrations::MigrateOptions::default())
        .await
        .unwrap();
    let (role, config) = db.login_role("authn").await;
    admin
        .batch_execute(&format!(
            "ALTER ROLE {role} INHERIT; GRANT authenticated TO {role}"
        ))
        .await
        .unwrap();
    let c = sync_tests::connect(&config).await;
    c.batch_execute("SET lock_timeout = '2s'; SET statement_timeout = '10s'")
        .await
        .unwrap();
    for call in [
        "SELECT sync_activity_rollup_compact()",
        "SELECT sync_activity_rollup_recount('-infinity', 'infinity')",
        "SELECT * FROM sync_activity_rollup_backfill_step()",
        "SELECT 1 FROM sync_activity_rollup_state FOR UPDATE",
        "SELECT 1 FROM sync_activity_rollup_state FOR KEY SHARE",
        "UPDATE sync_activity_rollup_state SET backfill_rows = 0",
        "DELETE FROM sync_activity_rollup_delta",
    ] {
        let e = c.query(call, &[]).await.expect_err(call);
        assert_eq!(
            e.code(),
            Some(&SqlState::INSUFFICIENT_PRIVILEGE),
            "{call}: {e:?}"
        );
    }
    let rows = admin
        .query(
            "SELECT p.oid::regprocedure::text, has_function_privilege('authenticated', p.oid, 'EXECUTE') \
               FROM pg_proc p \
              WHERE p.proname IN ('sync_activity_rollup_compact', 'sync_activity_rollup_recount', \
                                  'sync_activity_rollup_backfill_step', 'sync_activity_rollup_on_insert', \
                                  'sync_activity_rollup_on_delete', 'sync_activity_rollup_on_update', \
                                  'sync_activity_rollup_on_truncate', 'sync_progress_prune_tick_keys', \
                                  'sync_activity_metrics') \
              ORDER BY 1",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 9);
    for r in &rows {
        let (name, exec): (String, bool) = (r.get(0), r.get(1));
        assert!(!exec, "authenticated may execute {name}");
    }
    let tenant_reads: bool = admin
        .query_one(
            "SELECT has_function_privilege('sync_tenant', \
                    'sync_activity_metrics(uuid, timestamptz)', 'EXECUTE') \
                AND has_table_privilege('sync_tenant', 'sync_activity_rollup_state', 'SELECT') \
                AND NOT has_table_privilege('sync_tenant', 'sync_activity_rollup_state', 'UPDATE') \
                AND NOT has_table_privilege('authenticated', 'sync_activity_rollup_state', 'SELECT')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(tenant_reads, "the intended grants stay, no more");
}
