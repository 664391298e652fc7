//! `ensure_partitions` never runs SQL assembled from catalog text: index names
//! (and role names) chosen by whoever owns the table are data, not code.

mod partitions_common;

use partitions_common::*;
use sync_migrations::partitions::ensure_partitions;
use sync_tests::{connect, TestDb};

/// Indexes of the attached partitions that are not attached to a partitioned
/// index of the parent, and partitions missing one of the parent's indexes.
async fn index_mismatches(c: &tokio_postgres::Client) -> (i64, i64) {
    let row = c
        .query_one(
            "SELECT (SELECT count(*) FROM pg_index x JOIN pg_inherits i ON i.inhrelid = x.indrelid \
                      WHERE i.inhparent = 'sync_activity_log'::regclass \
                        AND NOT EXISTS (SELECT 1 FROM pg_inherits ii WHERE ii.inhrelid = x.indexrelid)), \
                    (SELECT count(*) FROM pg_inherits i, pg_index px \
                      WHERE i.inhparent = 'sync_activity_log'::regclass \
                        AND px.indrelid = 'sync_activity_log'::regclass \
                        AND NOT EXISTS (SELECT 1 FROM pg_index x JOIN pg_inherits ii ON ii.inhrelid = x.indexrelid \
                                         WHERE x.indrelid = i.inhrelid AND ii.inhparent = px.indexrelid))",
            &[],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

#[tokio::test]
async fn an_index_name_crafted_by_the_table_owner_does_not_make_it_superuser() {
    let db = TestDb::migrated().await;
    let mut c = db.client().await;
    let t = tenants(&c).await;
    seed_months(&c, &t, "2026-03-01", "2026-09-01", 5).await;
    let rows_before = all_rows(&c).await;
    // A short role name, so the payload fits in an identifier's 63 bytes.
    let role = format!("o{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    c.batch_execute(&format!(
        "CREATE ROLE {role} LOGIN NOSUPERUSER PASSWORD 'x'; \
         GRANT CONNECT ON DATABASE {db} TO {role}; GRANT USAGE, CREATE ON SCHEMA public TO {role}; \
         ALTER TABLE sync_activity_log OWNER TO {role}",
        db = db.name()
    ))
    .await
    .unwrap();
    for p in partition_names(&c).await {
        c.batch_execute(&format!("ALTER TABLE {p} OWNER TO {role}"))
            .await
            .unwrap();
    }
    // The table owner (not a superuser) plants the index.
    let mut cfg = db.config();
    cfg.user(&role);
    cfg.password("x");
    let owner = connect(&cfg).await;
    let payload = format!("x\" ON y USING btree (id); ALTER ROLE {role} SUPERUSER; --");
    assert!(payload.len() <= 63, "{}", payload.len());
    owner
        .batch_execute(&format!(
            "CREATE INDEX \"{}\" ON sync_activity_log (org_id)",
            payload.replace('"', "\"\"")
        ))
        .await
        .unwrap();
    drop(owner);

    // A superuser runs ensure.
    let result = ensure_partitions(&mut c, 3, &opts(), |_| {}).await;
    let superuser: bool = c
        .query_one("SELECT rolsuper FROM pg_roles WHERE rolname = $1", &[&role])
        .await
        .unwrap()
        .get(0);
    // Clean the cluster-wide role up before asserting.
    c.batch_execute(&format!(
        "ALTER ROLE {role} NOSUPERUSER; REASSIGN OWNED BY {role} TO CURRENT_USER; \
         DROP OWNED BY {role}; DROP ROLE {role}"
    ))
    .await
    .unwrap();
    assert!(!superuser, "ensure made the table owner a superuser");
    let report = result.expect("ensure succeeds with an odd index name");
    assert!(report.changed());
    assert_eq!(all_rows(&c).await, rows_before);
    assert_eq!(index_mismatches(&c).await, (0, 0));
    assert_eq!(misplaced_rows(&c, "2027-02").await, 0);
}

#[tokio::test]
async fn index_names_with_spaces_quotes_semicolons_unicode_and_63_bytes_are_cloned() {
    let db = TestDb::migrated().await;
    let mut c = db.client().await;
    let t = tenants(&c).await;
    seed_months(&c, &t, "2026-03-01", "2027-05-01", 4).await;
    let long = format!("{}x", "é".repeat(31));
    assert_eq!(long.len(), 63);
    let names = [
        "org lookup",
        "a\"b",
        "semi;colon; DROP TABLE organization; --",
        "ünïcødé 索引",
        long.as_str(),
        "CREATE INDEX",
    ];
    let columns = [
        "org_id",
        "status",
        "org_id, status",
        "entity_type",
        "sync_id",
        "user_id",
    ];
    for (n, col) in names.iter().zip(columns) {
        c.batch_execute(&format!(
            "CREATE INDEX \"{}\" ON sync_activity_log ({col})",
            n.replace('"', "\"\"")
        ))
        .await
        .unwrap();
    }
    // A unique index and a partial expression index with odd names too.
    c.batch_execute(
        "CREATE UNIQUE INDEX \"uniq \"\"id\"\"\" ON sync_activity_log (id, created_at); \
         CREATE INDEX \"partial; x\" ON sync_activity_log (lower(sync_id)) WHERE status = 'failed'",
    )
    .await
    .unwrap();
    // A grantee with an odd name, to be copied to the new partitions.
    let grantee = format!(
        "r;\"{}\" x",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let quoted = format!("\"{}\"", grantee.replace('"', "\"\""));
    c.batch_execute(&format!(
        "CREATE ROLE {quoted} NOLOGIN; GRANT SELECT ON sync_activity_log_future TO {quoted}"
    ))
    .await
    .unwrap();
    let rows_before = all_rows(&c).await;

    let first = ensure_partitions(&mut c, 3, &opts(), |_| {}).await;
    let grant_missing: i64 = c
        .query_one(
            "SELECT count(*) FROM pg_inherits i WHERE i.inhparent = 'sync_activity_log'::regclass \
               AND NOT has_table_privilege($1, i.inhrelid, 'SELECT') \
               AND i.inhrelid::regclass::text >= 'sync_activity_log_2026_03'",
            &[&grantee],
        )
        .await
        .unwrap()
        .get(0);
    c.batch_execute(&format!(
        "REASSIGN OWNED BY {quoted} TO CURRENT_USER; DROP OWNED BY {quoted}; DROP ROLE {quoted}"
    ))
    .await
    .unwrap();
    let first = first.expect("ensure succeeds with odd index names (not 42P07)");
    assert!(first.changed());
    assert_eq!(grant_missing, 0, "the odd grantee's SELECT was copied");
    assert_eq!(all_rows(&c).await, rows_before);
    assert_eq!(index_mismatches(&c).await, (0, 0));
    assert_eq!(misplaced_rows(&c, "2027-02").await, 0);
    // The horizon grows on a table that already went through ensure once.
    let second = ensure_partitions(&mut c, 5, &opts(), |_| {}).await.unwrap();
    assert_eq!(
        second.created,
        ["sync_activity_log_2027_03", "sync_activity_log_2027_04"]
    );
    assert_eq!(index_mismatches(&c).await, (0, 0));
    assert_eq!(all_rows(&c).await, rows_before);
    assert_eq!(misplaced_rows(&c, "2027-04").await, 0);
    // Nothing was dropped by a name's text, and the layout verifies.
    let orgs: i64 = c
        .query_one("SELECT count(*) FROM organization", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(orgs, 2);
    verify_ok(&c).await;
}
