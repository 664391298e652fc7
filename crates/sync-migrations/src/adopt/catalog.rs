//! One read of the catalog of one schema: what adoption compares, by meaning.
//!
//! Every query takes the schema name and the table names as parameters; the
//! catalog text it returns (defaults, constraint and index definitions, policy
//! expressions) is only ever compared, never spliced into SQL.

use std::collections::BTreeMap;

use tokio_postgres::GenericClient;

use crate::error::{Error, Result};
use crate::verify::TABLES;

/// A column: type (enums by bare name, so two schemas compare), NOT NULL, default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Column {
    pub ty: String,
    pub not_null: bool,
    pub default: Option<String>,
}

/// A constraint of one of the tables (`kind`: c, f, p, u).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Constraint {
    pub table: String,
    pub name: String,
    pub kind: String,
    pub def: String,
    pub validated: bool,
}

/// An index of one of the tables; `key` is its definition from `USING` on
/// (name and table left out).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Index {
    pub table: String,
    pub name: String,
    pub key: String,
    pub valid: bool,
}

/// A policy, by what it does.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Policy {
    pub table: String,
    pub cmd: String,
    pub permissive: String,
    pub roles: Vec<String>,
    pub qual: Option<String>,
    pub check: Option<String>,
    pub name: String,
}

/// A user trigger on one of the tables (or a partition of the log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Trigger {
    pub table: String,
    pub name: String,
    /// e.g. `BEFORE INSERT OR UPDATE FOR EACH ROW`
    pub timing: String,
    pub function: String,
    /// Schema of the function.
    pub function_schema: String,
    pub body_md5: String,
}

/// A function of the schema that a trigger runs or that 0024 defines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Function {
    pub name: String,
    pub result: String,
    pub body_md5: String,
    pub config: Vec<String>,
    pub security_definer: bool,
}

/// A partition of the activity log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Partition {
    pub name: String,
    pub rls: bool,
}

/// The catalog of one schema, as far as 0024 is concerned.
#[derive(Debug, Clone, Default)]
pub(crate) struct Catalog {
    /// The schema read.
    pub schema: String,
    /// Table name -> (relkind, RLS enabled).
    pub tables: BTreeMap<String, (String, bool)>,
    pub partitions: Vec<Partition>,
    /// (table, column) -> column.
    pub columns: BTreeMap<(String, String), Column>,
    /// Enum type -> labels in order.
    pub enums: BTreeMap<String, Vec<String>>,
    pub constraints: Vec<Constraint>,
    pub indexes: Vec<Index>,
    pub policies: Vec<Policy>,
    pub triggers: Vec<Trigger>,
    pub functions: Vec<Function>,
}

const ENUMS: [&str; 4] = [
    "sync_type",
    "sync_action",
    "sync_entity_type",
    "sync_status_type",
];

/// Reads the catalog of `schema` (tables of 0024, their partitions, enums,
/// functions). Read-only.
pub(crate) async fn snapshot<C: GenericClient + Sync>(client: &C, schema: &str) -> Result<Catalog> {
    let tables: Vec<String> = TABLES.iter().map(|t| t.to_string()).collect();
    let enums: Vec<String> = ENUMS.iter().map(|t| t.to_string()).collect();
    let functions: Vec<String> = crate::verify::FUNCTIONS
        .iter()
        .map(|t| t.to_string())
        .chain(std::iter::once("sync_refuse_truncate".to_owned()))
        .collect();
    let q = |sql: &'static str, during: &'static str| {
        let tables = &tables;
        async move {
            client
                .query(sql, &[&schema, tables])
                .await
                .map_err(Error::db(during))
        }
    };
    let mut cat = Catalog {
        schema: schema.to_owned(),
        ..Catalog::default()
    };
    for r in q(
        "SELECT c.relname::text, c.relkind::text, c.relrowsecurity FROM pg_class c \
          WHERE c.relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = $1) \
            AND c.relname = ANY($2)",
        "adopt: reading the tables",
    )
    .await?
    {
        cat.tables.insert(r.get(0), (r.get(1), r.get(2)));
    }
    for r in q(
        "SELECT c.relname::text, c.relrowsecurity FROM pg_inherits i \
           JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent \
          WHERE p.relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = $1) \
            AND p.relname = 'sync_activity_log' AND $2::text[] IS NOT NULL ORDER BY 1",
        "adopt: reading the partitions",
    )
    .await?
    {
        cat.partitions.push(Partition {
            name: r.get(0),
            rls: r.get(1),
        });
    }
    for r in q(
        "SELECT c.relname::text, a.attname::text, \
                CASE WHEN t.typtype = 'e' THEN t.typname::text \
                     ELSE format_type(a.atttypid, a.atttypmod) END, \
                a.attnotnull, pg_get_expr(d.adbin, d.adrelid) \
           FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid \
           JOIN pg_type t ON t.oid = a.atttypid \
           LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum \
          WHERE c.relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = $1) \
            AND c.relname = ANY($2) AND a.attnum > 0 AND NOT a.attisdropped",
        "adopt: reading the columns",
    )
    .await?
    {
        cat.columns.insert(
            (r.get(0), r.get(1)),
            Column {
                ty: r.get(2),
                not_null: r.get(3),
                default: r.get(4),
            },
        );
    }
    for r in client
        .query(
            "SELECT t.typname::text, array_agg(e.enumlabel::text ORDER BY e.enumsortorder) \
               FROM pg_type t JOIN pg_enum e ON e.enumtypid = t.oid \
              WHERE t.typnamespace = (SELECT oid FROM pg_namespace WHERE nspname = $1) \
                AND t.typname = ANY($2) GROUP BY 1",
            &[&schema, &enums],
        )
        .await
        .map_err(Error::db("adopt: reading the enums"))?
    {
        cat.enums.insert(r.get(0), r.get(1));
    }
    for r in q(
        "SELECT c.relname::text, k.conname::text, k.contype::text, \
                pg_get_constraintdef(k.oid), k.convalidated \
           FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid \
          WHERE c.relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = $1) \
            AND c.relname = ANY($2) AND k.contype IN ('c', 'f', 'p', 'u')",
        "adopt: reading the constraints",
    )
    .await?
    {
        cat.constraints.push(Constraint {
            table: r.get(0),
            name: r.get(1),
            kind: r.get(2),
            def: r.get(3),
            validated: r.get(4),
        });
    }
    for r in q(
        "SELECT c.relname::text, x.relname::text, \
                substr(pg_get_indexdef(i.indexrelid), \
                       position(' USING ' IN pg_get_indexdef(i.indexrelid)) + 1), \
                i.indisvalid \
           FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid \
           JOIN pg_class x ON x.oid = i.indexrelid \
          WHERE c.relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = $1) \
            AND c.relname = ANY($2)",
        "adopt: reading the indexes",
    )
    .await?
    {
        cat.indexes.push(Index {
            table: r.get(0),
            name: r.get(1),
            key: r.get(2),
            valid: r.get(3),
        });
    }
    for r in q(
        "SELECT tablename::text, cmd, permissive, roles::text[], qual, with_check, policyname::text \
           FROM pg_policies WHERE schemaname = $1 AND tablename = ANY($2)",
        "adopt: reading the policies",
    )
    .await?
    {
        let mut roles: Vec<String> = r.get(3);
        roles.sort();
        cat.policies.push(Policy {
            table: r.get(0),
            cmd: r.get(1),
            permissive: r.get(2),
            roles,
            qual: r.get(4),
            check: r.get(5),
            name: r.get(6),
        });
    }
    cat.policies.sort();
    for r in q(
        "SELECT c.relname::text, t.tgname::text, \
                concat_ws(' ', CASE WHEN t.tgtype & 2 <> 0 THEN 'BEFORE' \
                                    WHEN t.tgtype & 64 <> 0 THEN 'INSTEAD OF' ELSE 'AFTER' END, \
                          concat_ws(' OR ', CASE WHEN t.tgtype & 4 <> 0 THEN 'INSERT' END, \
                                            CASE WHEN t.tgtype & 16 <> 0 THEN 'UPDATE' END, \
                                            CASE WHEN t.tgtype & 8 <> 0 THEN 'DELETE' END, \
                                            CASE WHEN t.tgtype & 32 <> 0 THEN 'TRUNCATE' END), \
                          CASE WHEN t.tgtype & 1 <> 0 THEN 'FOR EACH ROW' \
                               ELSE 'FOR EACH STATEMENT' END, \
                          CASE WHEN t.tgqual IS NOT NULL THEN 'WHEN (...)' END), \
                p.proname::text, md5(p.prosrc), p.pronamespace::regnamespace::text \
           FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid \
           JOIN pg_proc p ON p.oid = t.tgfoid \
          WHERE NOT t.tgisinternal \
            AND c.relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = $1) \
            AND (c.relname = ANY($2) OR c.oid IN (SELECT inhrelid FROM pg_inherits i \
                   JOIN pg_class pc ON pc.oid = i.inhparent \
                  WHERE pc.relname = 'sync_activity_log' AND pc.relnamespace = c.relnamespace))",
        "adopt: reading the triggers",
    )
    .await?
    {
        cat.triggers.push(Trigger {
            table: r.get(0),
            name: r.get(1),
            timing: r.get(2),
            function: r.get(3),
            body_md5: r.get(4),
            function_schema: r.get(5),
        });
    }
    let mut wanted = functions.clone();
    wanted.extend(cat.triggers.iter().map(|t| t.function.clone()));
    for r in client
        .query(
            "SELECT p.proname::text, pg_get_function_result(p.oid), md5(p.prosrc), \
                    coalesce(p.proconfig, '{}')::text[], p.prosecdef \
               FROM pg_proc p \
              WHERE p.pronamespace = (SELECT oid FROM pg_namespace WHERE nspname = $1) \
                AND p.proname = ANY($2) AND p.pronargs = 0",
            &[&schema, &wanted],
        )
        .await
        .map_err(Error::db("adopt: reading the functions"))?
    {
        cat.functions.push(Function {
            name: r.get(0),
            result: r.get(1),
            body_md5: r.get(2),
            config: r.get(3),
            security_definer: r.get(4),
        });
    }
    Ok(cat)
}
