//! The spec's VERIFICATION RESULTS table, computed from the live catalog.

use tokio_postgres::Client;

use crate::error::{Error, Result};

/// One row of the verification table.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Check {
    /// What is checked, e.g. "Security Policies".
    pub component: String,
    /// What is expected, e.g. "12" or "15+".
    pub expected: String,
    /// What the catalog holds.
    pub actual: String,
    /// Whether `actual` meets `expected`.
    pub ok: bool,
}

/// The whole table.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct VerifyReport {
    /// Rows in display order.
    pub checks: Vec<Check>,
}

impl VerifyReport {
    /// True when every row passes.
    pub fn is_ok(&self) -> bool {
        self.checks.iter().all(|c| c.ok)
    }

    /// The table as text: Component | Expected | Actual | Status (✓ / ✗).
    pub fn to_table(&self) -> String {
        let w = self
            .checks
            .iter()
            .map(|c| c.component.len())
            .max()
            .unwrap_or(9)
            .max(9);
        let mut out = format!("| {:<w$} | Expected | Actual | Status |\n", "Component");
        out.push_str(&format!(
            "|{}|----------|--------|--------|\n",
            "-".repeat(w + 2)
        ));
        for c in &self.checks {
            out.push_str(&format!(
                "| {:<w$} | {:<8} | {:<6} | {:<6} |\n",
                c.component,
                c.expected,
                c.actual,
                if c.ok { "✓" } else { "✗" }
            ));
        }
        out
    }
}

/// The three tables of 0024.
pub(crate) const TABLES: [&str; 3] = ["sync_preview_cache", "sync_progress", "sync_activity_log"];

/// The enum types of 0024 with the labels the spec (and its example queries) need.
pub(crate) const REQUIRED_ENUM_LABELS: [(&str, &[&str]); 4] = [
    ("sync_type", &["woocommerce", "odoo", "shopify", "custom"]),
    (
        "sync_action",
        &["preview_delta", "sync_start", "sync_complete"],
    ),
    (
        "sync_entity_type",
        &["customer", "product", "order", "invoice"],
    ),
    (
        "sync_status_type",
        &[
            "pending",
            "in_progress",
            "completed",
            "failed",
            "completed_with_errors",
        ],
    ),
];

/// The functions of 0024.
pub(crate) const FUNCTIONS: [&str; 5] = [
    "auto_cleanup_preview_cache",
    "sync_preview_cache_defaults",
    "sync_progress_detect_completion",
    "sync_progress_compute_metrics",
    "sync_progress_log_activity",
];

/// Computes the verification table from the catalog of the connected database
/// (objects in the current schema search path's first schema, `public` by default).
///
/// Rows: Tables (3), RLS Enabled (3/3), Security Policies (exactly 12: more would
/// widen access), Indexes (15+), Triggers (5+, all enabled), Enums (4 with the
/// required labels), Partitions (5+ attached, one catch-all up to MAXVALUE),
/// Partition RLS (enabled on every partition), Functions (5). Read-only.
pub async fn verify(client: &Client) -> Result<VerifyReport> {
    let tables: Vec<String> = TABLES.iter().map(|t| t.to_string()).collect();
    let q = |sql: &'static str| {
        let tables = &tables;
        async move {
            client
                .query_one(sql, &[tables])
                .await
                .map_err(Error::db("reading the catalog for verify"))
        }
    };

    let row = q(
        "SELECT count(*)::int, count(*) FILTER (WHERE c.relrowsecurity)::int \
                 FROM pg_class c WHERE c.relname = ANY($1) AND c.relkind IN ('r','p') \
                 AND c.relnamespace = current_schema()::regnamespace",
    )
    .await?;
    let (n_tables, n_rls): (i32, i32) = (row.get(0), row.get(1));

    let n_policies: i32 = q("SELECT count(*)::int FROM pg_policies \
                             WHERE schemaname = current_schema() AND tablename = ANY($1)")
    .await?
    .get(0);

    let n_indexes: i32 = q("SELECT count(*)::int FROM pg_index i \
                            JOIN pg_class t ON t.oid = i.indrelid \
                            WHERE t.relnamespace = current_schema()::regnamespace \
                            AND (t.relname = ANY($1) OR t.oid IN ( \
                                SELECT inhrelid FROM pg_inherits \
                                WHERE inhparent = to_regclass('sync_activity_log')))")
    .await?
    .get(0);

    let row = q(
        "SELECT count(*)::int, count(*) FILTER (WHERE t.tgenabled <> 'D')::int \
                 FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid \
                 WHERE NOT t.tgisinternal AND c.relname = ANY($1) \
                 AND c.relnamespace = current_schema()::regnamespace",
    )
    .await?;
    let (n_triggers, n_enabled): (i32, i32) = (row.get(0), row.get(1));

    let mut enums_ok = 0;
    for (name, labels) in REQUIRED_ENUM_LABELS {
        let have: Vec<String> = client
            .query(
                "SELECT e.enumlabel::text FROM pg_enum e JOIN pg_type t ON t.oid = e.enumtypid \
                 WHERE t.typname = $1 AND t.typnamespace = current_schema()::regnamespace",
                &[&name],
            )
            .await
            .map_err(Error::db("reading enum labels for verify"))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        if labels.iter().all(|l| have.iter().any(|h| h == l)) {
            enums_ok += 1;
        }
    }

    let row = client
        .query_one(
            "SELECT count(*)::int, \
                    count(*) FILTER (WHERE pg_get_expr(c.relpartbound, c.oid) LIKE '%MAXVALUE%')::int, \
                    count(*) FILTER (WHERE c.relrowsecurity)::int \
             FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
             WHERE i.inhparent = to_regclass('sync_activity_log')",
            &[],
        )
        .await
        .map_err(Error::db("reading partitions for verify"))?;
    let (n_parts, n_catch_all, n_part_rls): (i32, i32, i32) = (row.get(0), row.get(1), row.get(2));

    let fns: Vec<String> = FUNCTIONS.iter().map(|f| f.to_string()).collect();
    let n_functions: i32 = client
        .query_one(
            "SELECT count(DISTINCT proname)::int FROM pg_proc \
             WHERE proname = ANY($1) AND pronamespace = current_schema()::regnamespace",
            &[&fns],
        )
        .await
        .map_err(Error::db("reading functions for verify"))?
        .get(0);

    let checks = vec![
        check("Tables", "3", n_tables.to_string(), n_tables == 3),
        check("RLS Enabled", "3/3", format!("{n_rls}/3"), n_rls == 3),
        check(
            "Security Policies",
            "12",
            n_policies.to_string(),
            n_policies == 12,
        ),
        check("Indexes", "15+", n_indexes.to_string(), n_indexes >= 15),
        check(
            "Triggers",
            "5+",
            if n_enabled == n_triggers {
                n_triggers.to_string()
            } else {
                format!("{n_triggers} ({} disabled)", n_triggers - n_enabled)
            },
            n_triggers >= 5 && n_enabled == n_triggers,
        ),
        check("Enums", "4", enums_ok.to_string(), enums_ok == 4),
        check(
            "Partitions",
            "5+",
            n_parts.to_string(),
            n_parts >= 5 && n_catch_all == 1,
        ),
        check(
            "Partition RLS",
            format!("{n_parts}/{n_parts}"),
            format!("{n_part_rls}/{n_parts}"),
            n_parts > 0 && n_part_rls == n_parts,
        ),
        check("Functions", "5", n_functions.to_string(), n_functions == 5),
    ];
    Ok(VerifyReport { checks })
}

fn check(component: &str, expected: impl Into<String>, actual: String, ok: bool) -> Check {
    Check {
        component: component.to_owned(),
        expected: expected.into(),
        actual,
        ok,
    }
}
