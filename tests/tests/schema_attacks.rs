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
        assert!(select, "{name}: the other default privileges stay");
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
