//! Giving a new partition what the others have: RLS, the TRUNCATE guard, owner
//! and grants.

use tokio_postgres::Transaction;

use super::error::PartitionError;
use super::options::PartitionOptions;
use super::parent::{quote_ident, Parent};

/// The statement trigger (migration 0024) that refuses TRUNCATE to every role but
/// the owner, on the log and each of its partitions.
const TRUNCATE_TRIGGER: &str = "trg_sync_activity_log_10_no_truncate";
/// Its function.
const TRUNCATE_GUARD: &str = "sync_refuse_truncate";

/// Enables row-level security on `target` and, when there is a `reference`
/// partition, copies its FORCE ROW LEVEL SECURITY flag, its owner and its table
/// privileges (`relacl`, grantee by grantee; grantors are not kept, column
/// privileges are not copied).
///
/// SQL: `ALTER TABLE … ENABLE [FORCE] ROW LEVEL SECURITY`, `ALTER TABLE … OWNER TO`,
/// and — only when the ACLs differ — `REVOKE ALL` from the target's grantees
/// followed by one `GRANT` per entry of `aclexplode(reference.relacl)`; one
/// statement per call, role names through `quote_ident`, privileges from a
/// fixed list.
pub(crate) async fn copy_security(
    tx: &Transaction<'_>,
    parent: &Parent,
    reference: Option<&str>,
    target: &str,
    options: &PartitionOptions,
) -> Result<(), PartitionError> {
    let t = parent.qualify(target);
    let err = |step: String| move |e| PartitionError::from_pg(step, options.lock_timeout, e);
    // One statement per call. Identifiers read from the catalog (owner, grantees)
    // only ever appear through `quote_ident`; privilege keywords only from the
    // fixed list in `privilege_keyword`.
    tx.execute(&format!("ALTER TABLE {t} ENABLE ROW LEVEL SECURITY"), &[])
        .await
        .map_err(err(format!("enabling row-level security on {target}")))?;
    // RLS does not cover TRUNCATE, and statement triggers are not cloned to
    // partitions: every partition gets the log's TRUNCATE guard of its own.
    tx.execute(
        &format!(
            "CREATE TRIGGER {TRUNCATE_TRIGGER} BEFORE TRUNCATE ON {t} \
             FOR EACH STATEMENT EXECUTE FUNCTION {}()",
            parent.qualify(TRUNCATE_GUARD)
        ),
        &[],
    )
    .await
    .map_err(err(format!("guarding {target} against TRUNCATE")))?;
    let Some(reference) = reference else {
        return Ok(());
    };
    let r = parent.qualify(reference);
    let row = tx
        .query_one(
            "SELECT r.relforcerowsecurity, pg_get_userbyid(r.relowner)::text, \
                    r.relowner <> t.relowner \
               FROM pg_class r, pg_class t \
              WHERE r.oid = $1::text::regclass AND t.oid = $2::text::regclass",
            &[&r, &t],
        )
        .await
        .map_err(err(format!("reading owner and RLS flags of {reference}")))?;
    let (force, owner, other_owner): (bool, String, bool) = (row.get(0), row.get(1), row.get(2));
    if force {
        tx.execute(&format!("ALTER TABLE {t} FORCE ROW LEVEL SECURITY"), &[])
            .await
            .map_err(err(format!("forcing row-level security on {target}")))?;
    }
    if other_owner {
        tx.execute(
            &format!("ALTER TABLE {t} OWNER TO {}", quote_ident(&owner)),
            &[],
        )
        .await
        .map_err(err(format!("giving {target} the owner of {reference}")))?;
    }
    // Grantee `None` is PUBLIC (oid 0).
    let entries = "SELECT CASE WHEN a.grantee = 0 THEN NULL \
                               ELSE pg_get_userbyid(a.grantee)::text END, \
                          a.privilege_type, a.is_grantable \
                     FROM pg_class c, aclexplode(coalesce(c.relacl, acldefault('r', c.relowner))) a \
                    WHERE c.oid = $1::text::regclass";
    type Entry = (Option<String>, String, bool);
    let read = |rows: Vec<tokio_postgres::Row>| {
        let mut v: Vec<Entry> = rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect();
        v.sort();
        v
    };
    let want = read(
        tx.query(entries, &[&r])
            .await
            .map_err(err(format!("reading the grants on {reference}")))?,
    );
    let have = read(
        tx.query(entries, &[&t])
            .await
            .map_err(err(format!("reading the grants on {target}")))?,
    );
    if want == have {
        return Ok(());
    }
    let grantee = |g: &Option<String>| g.as_deref().map_or("PUBLIC".to_owned(), quote_ident);
    let mut grantees: Vec<&Option<String>> = have.iter().map(|(g, _, _)| g).collect();
    grantees.dedup();
    let step = || format!("copying the grants of {reference} to {target}");
    for g in grantees {
        tx.execute(&format!("REVOKE ALL ON TABLE {t} FROM {}", grantee(g)), &[])
            .await
            .map_err(err(step()))?;
    }
    for (g, privilege, grantable) in &want {
        let Some(keyword) = privilege_keyword(privilege) else {
            // aclexplode only yields the table privileges below; anything else
            // (a future PostgreSQL's new privilege) is skipped, never spliced.
            tracing::warn!(target: "sync_migrations", privilege = %privilege, table = %target,
                "not copying an unknown table privilege to a new partition");
            continue;
        };
        tx.execute(
            &format!(
                "GRANT {keyword} ON TABLE {t} TO {}{}",
                grantee(g),
                if *grantable { " WITH GRANT OPTION" } else { "" }
            ),
            &[],
        )
        .await
        .map_err(err(step()))?;
    }
    Ok(())
}

/// The table privilege keyword for a `privilege_type` of `aclexplode`, from a
/// fixed list (`None` for anything else).
fn privilege_keyword(privilege: &str) -> Option<&'static str> {
    [
        "SELECT",
        "INSERT",
        "UPDATE",
        "DELETE",
        "TRUNCATE",
        "REFERENCES",
        "TRIGGER",
    ]
    .into_iter()
    .find(|k| *k == privilege)
}

/// Revokes every privilege on `table` from every role but its owner (PUBLIC
/// included): working tables of a split must not be writable, readable or
/// truncatable by anyone else, whatever default privileges granted at CREATE.
///
/// SQL: grantees from `aclexplode(relacl)`, then `REVOKE ALL ON TABLE … FROM
/// <grantee>` per grantee (role names through `quote_ident`).
pub(crate) async fn revoke_all(
    tx: &Transaction<'_>,
    parent: &Parent,
    table: &str,
    options: &PartitionOptions,
) -> Result<(), PartitionError> {
    let t = parent.qualify(table);
    let grantees: Vec<Option<String>> = tx
        .query(
            "SELECT DISTINCT CASE WHEN a.grantee = 0 THEN NULL \
                                  ELSE pg_get_userbyid(a.grantee)::text END \
               FROM pg_class c, aclexplode(c.relacl) a \
              WHERE c.oid = $1::text::regclass AND a.grantee <> c.relowner",
            &[&t],
        )
        .await
        .map_err(|e| {
            PartitionError::from_pg(
                format!("reading the grants on {table}"),
                options.lock_timeout,
                e,
            )
        })?
        .iter()
        .map(|r| r.get(0))
        .collect();
    for g in grantees {
        let who = g.as_deref().map_or("PUBLIC".to_owned(), quote_ident);
        tx.execute(&format!("REVOKE ALL ON TABLE {t} FROM {who}"), &[])
            .await
            .map_err(|e| {
                PartitionError::from_pg(
                    format!("revoking the grants on {table}"),
                    options.lock_timeout,
                    e,
                )
            })?;
    }
    Ok(())
}
