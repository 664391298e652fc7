//! Every SQL example of the spec, run verbatim against our schema.
//!
//! The statements are extracted at test time from the spec itself
//! (`tests/fixtures/migration-0024-quick-reference.md`, a copy of
//! `../shared/spec/…`; `spec_copy_is_current` fails when the two drift apart):
//! every statement of every ```sql block, and the inline MONITORING queries.
//! Placeholders are bound by the environment, never edited: `$1`/`$2` are bound
//! as parameters by the driver, and `current_user_id` (TROUBLESHOOTING) is a
//! PL/pgSQL variable of a wrapper function holding the current user's id.
//! `EXPLAIN ANALYZE SELECT ...` is prose (literal dots) and the policy fragment
//! `EXISTS (…)` is not a statement; the latter is checked against pg_policies.

use std::path::PathBuf;

use sync_tests::TestDb;
use tokio_postgres::types::{ToSql, Type};

const ORG_A: &str = "00000000-0000-0000-0000-0000000000a1";
const ORG_B: &str = "00000000-0000-0000-0000-0000000000a2";
const USER_A: &str = "00000000-0000-0000-0000-0000000000b1";
const USER_B: &str = "00000000-0000-0000-0000-0000000000b2";

fn spec_text() -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/migration-0024-quick-reference.md");
    std::fs::read_to_string(path).expect("spec fixture")
}

#[test]
fn spec_copy_is_current() {
    let shared = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/spec/migration-0024-quick-reference.md");
    match std::fs::read_to_string(&shared) {
        Ok(text) => assert_eq!(
            text,
            spec_text(),
            "tests/fixtures spec copy differs from {shared:?}: copy it again"
        ),
        // Outside the workplace (a bare clone) only the copy exists.
        Err(_) => eprintln!("note: {shared:?} not found; using the vendored copy"),
    }
}

/// The runnable statements of the spec, verbatim, in order.
fn examples() -> (Vec<String>, Vec<String>) {
    let text = spec_text();
    let mut statements = Vec::new();
    let mut fragments = Vec::new();
    let mut in_sql = false;
    let mut current = String::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            if in_sql && !current.trim().is_empty() {
                fragments.push(std::mem::take(&mut current));
            }
            in_sql = line.trim() == "```sql";
            current.clear();
            continue;
        }
        if in_sql {
            let code = line.split("--").next().unwrap_or("");
            if code.trim().is_empty() && current.trim().is_empty() {
                continue;
            }
            current.push_str(line);
            current.push('\n');
            if code.trim_end().ends_with(';') {
                statements.push(std::mem::take(&mut current).trim().to_owned());
            }
        } else if let Some((_, q)) = line.split_once(": SELECT ") {
            statements.push(format!("SELECT {}", q.trim()));
        } else if let Some(start) = line.find("`SELECT * FROM pg_stat") {
            let rest = &line[start + 1..];
            statements.push(rest[..rest.find('`').unwrap()].to_owned());
        }
    }
    (statements, fragments)
}

#[test]
fn extraction_finds_every_example() {
    let (statements, fragments) = examples();
    // 4 query blocks (5 statements), 1 RLS statement, 4 troubleshooting, 8 monitoring.
    assert_eq!(statements.len(), 18, "{statements:#?}");
    assert_eq!(fragments.len(), 1);
    assert!(fragments[0].trim_start().starts_with("EXISTS ("));
}

async fn seed(db: &TestDb) {
    db.client()
        .await
        .batch_execute(&format!(
            "INSERT INTO organization (id, name) VALUES ('{ORG_A}', 'A'), ('{ORG_B}', 'B');
             INSERT INTO auth.users_extended (id, org_id) VALUES ('{USER_A}', '{ORG_A}'), ('{USER_B}', '{ORG_B}');
             INSERT INTO sync_progress (org_id, sync_id, job_id, entity_type, total_items, started_at, initiated_by)
                 VALUES ('{ORG_A}', 'sync-1', 'job-1', 'product', 10, now() - interval '5 minutes', '{USER_A}'),
                        ('{ORG_A}', 'sync-2', 'job-2', 'order', 4, now() - interval '5 minutes', '{USER_A}'),
                        ('{ORG_B}', 'sync-1', 'job-1', 'customer', 3, now(), '{USER_B}');
             UPDATE sync_progress SET processed_count = 4, current_item = 4 WHERE sync_id = 'sync-1' AND org_id = '{ORG_A}';
             UPDATE sync_progress SET processed_count = 3, failed_count = 1 WHERE sync_id = 'sync-2';
             INSERT INTO sync_preview_cache (org_id, sync_type, sync_id, delta_json, cache_key, computed_at)
                 VALUES ('{ORG_A}', 'woocommerce', 'sync-1', '{{\"products\": {{\"update\": 4}}}}', '{ORG_A}:k1', now()),
                        ('{ORG_A}', 'woocommerce', 'sync-0', '{{}}', '{ORG_A}:k0', now() - interval '2 hours');"
        ))
        .await
        .unwrap();
}

/// Binds `$n` by the type the server inferred.
fn params_for(types: &[Type]) -> Vec<Box<dyn ToSql + Sync>> {
    types
        .iter()
        .enumerate()
        .map(|(i, t)| -> Box<dyn ToSql + Sync> {
            if *t == Type::UUID {
                Box::new(uuid::Uuid::parse_str(ORG_A).unwrap())
            } else if i == 1 {
                // $2 is sync_id in one example and job_id in the other.
                Box::new(if types.len() == 2 {
                    "sync-1".to_owned()
                } else {
                    String::new()
                })
            } else {
                panic!("unexpected parameter type {t}")
            }
        })
        .collect()
}

#[tokio::test]
async fn every_sql_example_runs_verbatim() {
    let db = TestDb::migrated().await;
    seed(&db).await;
    let c = db.client().await;
    let (statements, fragments) = examples();
    for sql in &statements {
        let rows = if sql.contains("current_user_id") {
            // The placeholder is a PL/pgSQL variable holding the current user's id.
            let body = sql.trim_end_matches(';');
            c.batch_execute(&format!(
                "CREATE FUNCTION pg_temp.spec_example(current_user_id uuid) \
                 RETURNS SETOF auth.users_extended LANGUAGE plpgsql AS $spec$ \
                 BEGIN RETURN QUERY {body}; END $spec$"
            ))
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
            c.query(
                "SELECT * FROM pg_temp.spec_example($1)",
                &[&uuid::Uuid::parse_str(USER_A).unwrap()],
            )
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
        } else if sql.contains("$1") {
            let stmt = c
                .prepare(sql)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
            let values = params_for(stmt.params());
            let refs: Vec<&(dyn ToSql + Sync)> = values.iter().map(|b| b.as_ref()).collect();
            c.query(&stmt, &refs)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
        } else {
            c.query(sql.as_str(), &[])
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
        };
        check_result(sql, &rows);
    }
    // The policy fragment the spec shows is what the policies do.
    assert!(fragments[0].contains("auth.users_extended u") && fragments[0].contains("auth.uid()"));
    let quals: Vec<String> = c
        .query(
            "SELECT coalesce(qual, with_check) FROM pg_policies WHERE tablename = 'sync_progress'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(quals.len(), 4);
    for q in quals {
        assert!(
            q.contains("FROM auth.users_extended u")
                && q.contains("( SELECT auth.uid() AS uid)")
                && q.contains("u.org_id = sync_progress.org_id"),
            "{q}"
        );
    }
}

/// Spot checks that the examples return what they say.
fn check_result(sql: &str, rows: &[tokio_postgres::Row]) {
    if sql.starts_with("SHOW constraint_exclusion") {
        assert_eq!(rows[0].get::<_, String>(0), "partition");
    } else if sql.contains("WHERE org_id = $1 AND sync_id = $2") {
        assert_eq!(rows.len(), 1, "{sql}");
        assert_eq!(rows[0].get::<_, String>("sync_id"), "sync-1");
        assert_eq!(rows[0].get::<_, i32>("processed_count"), 4);
    } else if sql.contains("completed_at IS NULL\nORDER BY updated_at DESC") {
        let ids: Vec<String> = rows.iter().map(|r| r.get("sync_id")).collect();
        assert_eq!(ids, vec!["sync-1"], "active syncs of org A");
    } else if sql.contains("FROM sync_activity_log\nWHERE org_id = $1") {
        // sync-1 start; sync-2 start + completion.
        assert_eq!(rows.len(), 3, "{sql}");
    } else if sql.starts_with("SELECT * FROM auto_cleanup_preview_cache()") {
        // The DELETE example just before removed the expired row already.
        assert_eq!(rows[0].get::<_, i64>(0), 0);
    } else if sql.contains("SELECT * FROM auth.users_extended WHERE id = current_user_id") {
        assert_eq!(rows.len(), 1);
    } else if sql.contains("information_schema.triggers") {
        assert_eq!(
            rows.len(),
            13,
            "0024's 5 triggers in 8 (trigger, event) rows, 0025's key pruning trigger, \
             0026's 3 rollup statement triggers (INSERT, UPDATE, DELETE; TRUNCATE is not listed) \
             and 0028's completion notification"
        );
    } else if sql.contains("FILTER (WHERE status = 'completed')") {
        assert_eq!(
            rows[0].get::<_, i64>(0),
            0,
            "integer division as the spec writes it"
        );
    }
}

/// The examples as a tenant: the spec's RLS statement is filtered by org.
#[tokio::test]
async fn rls_example_is_filtered_for_a_tenant() {
    let db = TestDb::migrated().await;
    seed(&db).await;
    let (_, config) = db.login_role("spec").await;
    let mut c = sync_tests::connect(&config).await;
    let tx = c.transaction().await.unwrap();
    tx.batch_execute(&format!(
        "SET LOCAL ROLE sync_tenant; SELECT set_config('request.jwt.claims', '{{\"sub\":\"{USER_B}\"}}', true)"
    ))
    .await
    .unwrap();
    let rows = tx.query("SELECT * FROM sync_progress;", &[]).await.unwrap();
    assert_eq!(rows.len(), 1, "user B sees only org B's progress row");
    let org: uuid::Uuid = rows[0].get("org_id");
    assert_eq!(org.to_string(), ORG_B);
}

/// With realistic data, EXPLAIN shows an index serving each org-scoped example.
#[tokio::test]
async fn indexes_serve_the_example_queries() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    c.batch_execute(
        "INSERT INTO organization (id, name) SELECT ('00000000-0000-0000-0000-' || lpad(g::text, 12, '0'))::uuid, 'o' || g
             FROM generate_series(1, 100) g;
         INSERT INTO sync_progress (org_id, sync_id, job_id, entity_type, total_items, started_at, completed_at)
             SELECT ('00000000-0000-0000-0000-' || lpad((g % 100 + 1)::text, 12, '0'))::uuid, 's' || g, 'j' || g,
                    'product', 100, now() - interval '1 hour', CASE WHEN g % 20 = 0 THEN NULL ELSE now() END
             FROM generate_series(1, 20000) g;
         INSERT INTO sync_activity_log (org_id, sync_id, action, status, created_at)
             SELECT ('00000000-0000-0000-0000-' || lpad((g % 100 + 1)::text, 12, '0'))::uuid, 's' || g,
                    'record_update', 'completed', timestamptz '2025-11-01 00:00+00' + g * interval '7 minutes'
             FROM generate_series(1, 40000) g;
         INSERT INTO sync_preview_cache (org_id, sync_type, sync_id, delta_json, cache_key, computed_at)
             SELECT ('00000000-0000-0000-0000-' || lpad((g % 100 + 1)::text, 12, '0'))::uuid, 'odoo', 's' || g, '{}',
                    ('00000000-0000-0000-0000-' || lpad((g % 100 + 1)::text, 12, '0')) || ':' || g,
                    now() - CASE WHEN g % 100 = 0 THEN interval '2 hours' ELSE interval '0' END
             FROM generate_series(1, 20000) g;
         ANALYZE;",
    )
    .await
    .unwrap();
    let (statements, _) = examples();
    let org = "'00000000-0000-0000-0000-000000000007'";
    let expectations = [
        (
            "WHERE org_id = $1 AND sync_id = $2",
            "sync_progress_org_id_sync_id_key",
        ),
        (
            "completed_at IS NULL\nORDER BY updated_at DESC",
            "sync_progress_active_idx",
        ),
        (
            "FROM sync_activity_log\nWHERE org_id = $1",
            "sync_activity_log_2025_11_org_id_created_at_id_idx",
        ),
        (
            "WHERE org_id = $1 AND job_id = $2",
            "sync_progress_org_job_idx",
        ),
        (
            "DELETE FROM sync_preview_cache",
            "sync_preview_cache_expires_at_idx",
        ),
    ];
    for (marker, index) in expectations {
        let sql = statements
            .iter()
            .find(|s| s.contains(marker))
            .unwrap_or_else(|| panic!("no example with {marker:?}"));
        let sql = sql.trim_start_matches("EXPLAIN (ANALYZE, BUFFERS) ");
        let literal = sql.replace("$1", org).replace("$2", "'s7'");
        let plan: String = c
            .query(&format!("EXPLAIN (COSTS OFF) {literal}"), &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get::<_, String>(0) + "\n")
            .collect();
        assert!(plan.contains(index), "{sql}\nexpected {index} in:\n{plan}");
    }
}
