//! Comparing the live catalog with ours, by meaning, and planning the steps.

use tokio_postgres::Client;

use super::catalog::Catalog;
use super::ours;
use super::{DiffClass, Difference};
use crate::error::{Error, Result};
use crate::partitions::quote_ident as q;

/// A policy by what it does: command, permissive, roles, USING, WITH CHECK.
type PolicyShape = (String, String, Vec<String>, Option<String>, Option<String>);

/// One convergence step of `--apply` (see `steps`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Step {
    AddEnumLabel {
        ty: String,
        label: String,
    },
    AlterType {
        table: String,
        column: String,
        ty: &'static str,
    },
    SetDefault {
        table: String,
        column: String,
        sql: &'static str,
    },
    DropDefault {
        table: String,
        column: String,
    },
    DropNotNull {
        table: String,
        column: String,
    },
    ReplaceTriggers,
    RenameIndex {
        from: String,
        to: String,
    },
    RenameConstraint {
        table: String,
        from: String,
        to: String,
    },
    EnableRls {
        table: String,
    },
    ReplacePolicies {
        table: String,
    },
    CreateIndex {
        name: &'static str,
        table: &'static str,
        def: &'static str,
    },
    AddCheck {
        table: &'static str,
        name: &'static str,
        expr: &'static str,
    },
    SetNotNull {
        table: String,
        column: String,
    },
}

/// What the comparison found and what `--apply` would do.
pub(crate) struct Plan {
    pub differences: Vec<Difference>,
    pub steps: Vec<Step>,
}

fn diff(
    area: &str,
    object: String,
    found: String,
    ours: String,
    class: DiffClass,
    action: &str,
) -> Difference {
    Difference {
        area: area.to_owned(),
        object,
        found,
        ours,
        class,
        action: action.to_owned(),
    }
}

/// Rows of `table` that break `predicate` (a constant of ours): count and up to
/// five sample ids.
async fn violations(client: &Client, table: &str, predicate: &str) -> Result<(i64, Vec<String>)> {
    let row = client
        .query_one(
            &format!(
                "SELECT count(*), coalesce((array_agg(id::text ORDER BY id))[1:5], '{{}}') \
                   FROM {} WHERE NOT ({predicate})",
                q(table)
            ),
            &[],
        )
        .await
        .map_err(Error::db("adopt: counting rows that break a constraint"))?;
    Ok((row.get(0), row.get(1)))
}

/// Compares `live` with `reference` and plans the steps. Reads rows only to
/// count constraint violations.
pub(crate) async fn classify(
    client: &Client,
    live: &Catalog,
    reference: &Catalog,
    allow_not_valid: bool,
) -> Result<Plan> {
    use DiffClass::*;
    let mut d = Vec::new();
    let mut steps = Vec::new();

    // Tables.
    for (table, (kind, rls)) in &reference.tables {
        match live.tables.get(table) {
            None => d.push(diff("table", table.clone(), "missing".into(), kind.clone(), Blocking,
                "this is not a database with 0024: run `sync-migrate up` on it instead")),
            Some((k, _)) if k != kind => d.push(diff("table", table.clone(), format!("relkind {k}"),
                format!("relkind {kind}"), Blocking,
                "recreate the table as ours (partitioned by created_at) by hand; adoption does not move data between table kinds")),
            Some((_, live_rls)) => {
                d.push(diff("table", table.clone(), "present".into(), "present".into(), Same, ""));
                if *rls && !live_rls {
                    d.push(diff("rls", table.clone(), "disabled".into(), "enabled".into(), Converged,
                        "ALTER TABLE … ENABLE ROW LEVEL SECURITY"));
                    steps.push(Step::EnableRls { table: table.clone() });
                }
            }
        }
    }
    if d.iter().any(|x| x.class == Blocking) {
        return Ok(Plan {
            differences: d,
            steps,
        });
    }
    for p in &live.partitions {
        if p.rls {
            continue;
        }
        d.push(diff("rls", p.name.clone(), "disabled".into(), "enabled + TRUNCATE guard".into(), Converged,
            "ALTER TABLE … ENABLE ROW LEVEL SECURITY (a partition read directly bypasses the parent's policies)"));
        steps.push(Step::EnableRls {
            table: p.name.clone(),
        });
    }

    // Enums.
    for (ty, labels) in &reference.enums {
        match live.enums.get(ty) {
            None => d.push(diff(
                "enum",
                ty.clone(),
                "missing".into(),
                labels.join(","),
                Blocking,
                "create the type by hand, or run `up` on a database without 0024",
            )),
            Some(have) => {
                for l in labels.iter().filter(|l| !have.contains(l)) {
                    d.push(diff(
                        "enum label",
                        format!("{ty}.{l}"),
                        "missing".into(),
                        "present".into(),
                        Converged,
                        "ALTER TYPE … ADD VALUE (own transaction)",
                    ));
                    steps.push(Step::AddEnumLabel {
                        ty: ty.clone(),
                        label: l.clone(),
                    });
                }
                let extra: Vec<&String> = have.iter().filter(|l| !labels.contains(l)).collect();
                if !extra.is_empty() {
                    d.push(diff(
                        "enum label",
                        ty.clone(),
                        extra
                            .iter()
                            .map(|s| s.as_str())
                            .collect::<Vec<_>>()
                            .join(","),
                        "-".into(),
                        Same,
                        "kept: the store reads them as Other(label)",
                    ));
                }
            }
        }
    }

    // Columns.
    for ((table, column), ours_col) in &reference.columns {
        let name = format!("{table}.{column}");
        let Some(c) = live.columns.get(&(table.clone(), column.clone())) else {
            d.push(diff(
                "column",
                name,
                "missing".into(),
                ours_col.ty.clone(),
                Blocking,
                "add the column by hand (adoption does not add columns)",
            ));
            continue;
        };
        if c.ty != ours_col.ty {
            match ours::safe_type_change(&c.ty, &ours_col.ty) {
                Some(ty) => {
                    d.push(diff(
                        "column type",
                        name.clone(),
                        c.ty.clone(),
                        ours_col.ty.clone(),
                        Converged,
                        "ALTER COLUMN … TYPE (no rewrite)",
                    ));
                    steps.push(Step::AlterType {
                        table: table.clone(),
                        column: column.clone(),
                        ty,
                    });
                }
                None => d.push(diff(
                    "column type",
                    name.clone(),
                    c.ty.clone(),
                    ours_col.ty.clone(),
                    Blocking,
                    "convert the column by hand (it would rewrite the table)",
                )),
            }
        }
        if c.default != ours_col.default {
            let drop_theirs = ours::DROP_THEIR_DEFAULT
                .iter()
                .any(|(t, col)| t == table && col == column);
            match (&ours_col.default, &c.default) {
                (Some(o), _) => match ours::default_sql(o) {
                    Some(sql) => {
                        d.push(diff(
                            "column default",
                            name.clone(),
                            c.default.clone().unwrap_or("none".into()),
                            o.clone(),
                            Converged,
                            "ALTER COLUMN … SET DEFAULT",
                        ));
                        steps.push(Step::SetDefault {
                            table: table.clone(),
                            column: column.clone(),
                            sql,
                        });
                    }
                    None => d.push(diff(
                        "column default",
                        name.clone(),
                        c.default.clone().unwrap_or("none".into()),
                        o.clone(),
                        Blocking,
                        "set the default by hand",
                    )),
                },
                (None, Some(theirs)) if drop_theirs => {
                    d.push(diff("column default", name.clone(), theirs.clone(), "none".into(), Converged,
                        "ALTER COLUMN … DROP DEFAULT (with our completion trigger it would complete every sync inserted without a total)"));
                    steps.push(Step::DropDefault {
                        table: table.clone(),
                        column: column.clone(),
                    });
                }
                (None, Some(theirs)) => d.push(diff(
                    "column default",
                    name.clone(),
                    theirs.clone(),
                    "none".into(),
                    Same,
                    "kept: old writers may leave the column out",
                )),
                (None, None) => {}
            }
        }
        if c.not_null && !ours_col.not_null {
            d.push(diff(
                "column null",
                name.clone(),
                "NOT NULL".into(),
                "nullable".into(),
                Converged,
                "ALTER COLUMN … DROP NOT NULL",
            ));
            steps.push(Step::DropNotNull {
                table: table.clone(),
                column: column.clone(),
            });
        } else if !c.not_null && ours_col.not_null {
            let (n, ids) = violations(client, table, &format!("{} IS NOT NULL", q(column))).await?;
            not_valid(
                &mut d,
                &mut steps,
                "column null",
                name,
                n,
                ids,
                allow_not_valid,
                Step::SetNotNull {
                    table: table.clone(),
                    column: column.clone(),
                },
                "CHECK (… IS NOT NULL) NOT VALID, VALIDATE, SET NOT NULL",
            );
        }
    }
    for (table, column) in live.columns.keys() {
        if reference.tables.contains_key(table)
            && !reference
                .columns
                .contains_key(&(table.clone(), column.clone()))
        {
            d.push(diff(
                "column",
                format!("{table}.{column}"),
                "present".into(),
                "missing".into(),
                Same,
                "kept",
            ));
        }
    }

    // Constraints (checks by definition; keys and foreign keys must already match).
    for k in &reference.constraints {
        let found = live
            .constraints
            .iter()
            .find(|l| l.table == k.table && l.kind == k.kind && l.def == k.def);
        match (found, k.kind.as_str()) {
            (Some(l), _) => {
                let rename = l.name != k.name
                    && !live.constraints.iter().any(|o| o.table == k.table && o.name == k.name)
                    && !live.indexes.iter().any(|i| i.name == k.name);
                d.push(diff("constraint", format!("{}.{}", k.table, k.name), l.name.clone(), k.def.clone(), Same,
                    if !l.validated { "present but NOT VALID" } else if rename { "renamed to ours by --apply" } else { "" }));
                if rename {
                    steps.push(Step::RenameConstraint { table: k.table.clone(), from: l.name.clone(), to: k.name.clone() });
                }
            }
            (None, "c") => {
                let Some((name, table, expr)) = ours::CHECKS.iter().find(|(n, _, _)| *n == k.name) else {
                    d.push(diff("constraint", k.name.clone(), "missing".into(), k.def.clone(), Blocking,
                        "unknown to adopt: add it by hand"));
                    continue;
                };
                let (n, ids) = violations(client, table, expr).await?;
                not_valid(&mut d, &mut steps, "constraint", format!("{table}.{name}"), n, ids, allow_not_valid,
                    Step::AddCheck { table, name, expr }, "ADD CONSTRAINT … NOT VALID, then VALIDATE");
            }
            (None, _) => d.push(diff("constraint", format!("{}.{}", k.table, k.name), "missing".into(), k.def.clone(), Blocking,
                "add the key by hand (CREATE UNIQUE INDEX CONCURRENTLY, then ADD CONSTRAINT … USING INDEX)")),
        }
    }

    // Indexes, by definition.
    for i in &reference.indexes {
        if let Some(l) = live
            .indexes
            .iter()
            .find(|l| l.table == i.table && l.key == i.key && l.valid)
        {
            // Constraint-backed indexes follow their constraint's rename.
            let backs_constraint = reference.constraints.iter().any(|k| k.name == i.name);
            let rename = l.name != i.name
                && !backs_constraint
                && !live.indexes.iter().any(|o| o.name == i.name);
            d.push(diff(
                "index",
                i.name.clone(),
                l.name.clone(),
                i.key.clone(),
                Same,
                if rename {
                    "renamed to ours by --apply (later migrations name it)"
                } else {
                    ""
                },
            ));
            if rename {
                steps.push(Step::RenameIndex {
                    from: l.name.clone(),
                    to: i.name.clone(),
                });
            }
            continue;
        }
        match ours::INDEXES.iter().find(|(n, _, _)| *n == i.name) {
            Some((name, table, def)) => {
                d.push(diff(
                    "index",
                    i.name.clone(),
                    "missing".into(),
                    i.key.clone(),
                    Converged,
                    "CREATE INDEX CONCURRENTLY (per partition on the log)",
                ));
                steps.push(Step::CreateIndex { name, table, def });
            }
            None => d.push(diff(
                "index",
                i.name.clone(),
                "missing".into(),
                i.key.clone(),
                Blocking,
                "unknown to adopt (a key's index): create it by hand",
            )),
        }
    }

    // Policies, per table and command, by what they do.
    for table in reference.tables.keys() {
        let shape = |c: &Catalog| -> Vec<PolicyShape> {
            let mut v: Vec<_> = c
                .policies
                .iter()
                .filter(|p| &p.table == table)
                .map(|p| {
                    (
                        p.cmd.clone(),
                        p.permissive.clone(),
                        p.roles.clone(),
                        p.qual.clone(),
                        p.check.clone(),
                    )
                })
                .collect();
            v.sort();
            v
        };
        let (have, want) = (shape(live), shape(reference));
        if have == want {
            d.push(diff(
                "policies",
                table.clone(),
                format!("{}", have.len()),
                format!("{}", want.len()),
                Same,
                "",
            ));
        } else {
            let names: Vec<String> = live
                .policies
                .iter()
                .filter(|p| &p.table == table)
                .map(|p| p.name.clone())
                .collect();
            d.push(diff(
                "policies",
                table.clone(),
                names.join("; "),
                "ours (org isolation TO PUBLIC; audit trail append-only)".into(),
                Converged,
                "DROP POLICY each, CREATE POLICY ours (one transaction per table)",
            ));
            steps.push(Step::ReplacePolicies {
                table: table.clone(),
            });
        }
    }

    // Triggers: by table, timing and events; ours always replace theirs.
    let mut replace = false;
    for t in &live.triggers {
        let is_partition = live.partitions.iter().any(|p| p.name == t.table);
        let ours = reference.triggers.iter().find(|r| {
            (r.table == t.table || is_partition)
                && r.name == t.name
                && r.timing == t.timing
                && r.function == t.function
                && r.body_md5 == t.body_md5
        });
        if ours.is_none() {
            replace = true;
            d.push(diff(
                "trigger",
                format!("{}.{}", t.table, t.name),
                format!("{} {}() body md5 {}", t.timing, t.function, t.body_md5),
                "-".into(),
                Converged,
                "dropped; ours put in place (the data it computed stays)",
            ));
        }
    }
    for r in &reference.triggers {
        let partition = !reference.tables.contains_key(&r.table);
        let present = live.triggers.iter().any(|t| {
            t.name == r.name
                && t.timing == r.timing
                && t.body_md5 == r.body_md5
                && (t.table == r.table || partition)
        });
        if !present && !partition {
            replace = true;
            d.push(diff(
                "trigger",
                format!("{}.{}", r.table, r.name),
                "missing".into(),
                r.timing.clone(),
                Converged,
                "CREATE TRIGGER",
            ));
        }
    }
    for f in &reference.functions {
        match live.functions.iter().find(|l| l.name == f.name) {
            Some(l)
                if l.body_md5 == f.body_md5
                    && l.result == f.result
                    && l.security_definer == f.security_definer => {}
            Some(l) => {
                replace = true;
                d.push(diff(
                    "function",
                    f.name.clone(),
                    format!("returns {}; body md5 {}", l.result, l.body_md5),
                    format!("returns {}", f.result),
                    Converged,
                    "replaced by ours",
                ));
            }
            None => {
                replace = true;
                d.push(diff(
                    "function",
                    f.name.clone(),
                    "missing".into(),
                    format!("returns {}", f.result),
                    Converged,
                    "CREATE FUNCTION",
                ));
            }
        }
    }
    if replace || steps.iter().any(|s| matches!(s, Step::EnableRls { .. })) {
        steps.push(Step::ReplaceTriggers);
    }
    Ok(Plan {
        differences: d,
        steps,
    })
}

#[allow(clippy::too_many_arguments)]
fn not_valid(
    d: &mut Vec<Difference>,
    steps: &mut Vec<Step>,
    area: &str,
    name: String,
    n: i64,
    ids: Vec<String>,
    allow: bool,
    step: Step,
    how: &str,
) {
    if n == 0 {
        d.push(diff(
            area,
            name,
            "missing".into(),
            "present".into(),
            DiffClass::Converged,
            how,
        ));
        steps.push(step);
    } else {
        let found = format!("{n} row(s) break it, e.g. id {}", ids.join(", "));
        if allow {
            d.push(diff(area, name, found, "present".into(), DiffClass::Converged,
                "--allow-not-valid: left out (a NOT VALID constraint would still refuse the old writers' next write to these rows); once the rows are fixed, add it by hand: ADD CONSTRAINT … NOT VALID, then VALIDATE (README, Adopting an existing database)"));
        } else {
            d.push(diff(area, name, found, "present".into(), DiffClass::Blocking,
                "fix or delete these rows, or pass --allow-not-valid to adopt without this constraint"));
        }
    }
}
