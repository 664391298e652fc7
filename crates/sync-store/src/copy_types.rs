//! The enum types' OIDs, looked up once per store, for binary COPY.

use bytes::BufMut;
use postgres_types::{IsNull, Kind, ToSql, Type};
use tokio_postgres::Client;

use crate::error::{Error, Result};
use crate::store::col;

/// `sync_entity_type`, `sync_action`, `sync_status_type` as the server knows them.
pub(crate) struct CopyTypes {
    pub(crate) entity: Type,
    pub(crate) action: Type,
    pub(crate) status: Type,
}

impl CopyTypes {
    /// One unnamed statement reading `pg_type` / `pg_enum` (types resolved
    /// through the search_path, like the tables).
    pub(crate) async fn load(client: &Client, op: &'static str) -> Result<CopyTypes> {
        let rows = client
            .query_typed(
                "SELECT t.typname::text, t.oid, n.nspname::text, \
                        array_agg(e.enumlabel::text ORDER BY e.enumsortorder) \
                 FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace \
                 JOIN pg_enum e ON e.enumtypid = t.oid \
                 WHERE t.oid IN (to_regtype('sync_entity_type'), to_regtype('sync_action'), \
                                 to_regtype('sync_status_type')) \
                 GROUP BY t.typname, t.oid, n.nspname",
                &[],
            )
            .await
            .map_err(|e| Error::from_pg(op, e))?;
        let mut found = Vec::with_capacity(3);
        for row in &rows {
            let name: String = col(op, row, 0)?;
            let oid: u32 = col(op, row, 1)?;
            let schema: String = col(op, row, 2)?;
            let labels: Vec<String> = col(op, row, 3)?;
            found.push(Type::new(name, oid, Kind::Enum(labels), schema));
        }
        let take = |name: &str| {
            found
                .iter()
                .find(|t| t.name() == name)
                .cloned()
                .ok_or_else(|| Error::Decode {
                    operation: op,
                    column: name.to_owned(),
                    reason: format!("enum type {name} not found; apply the migrations first"),
                })
        };
        Ok(CopyTypes {
            entity: take("sync_entity_type")?,
            action: take("sync_action")?,
            status: take("sync_status_type")?,
        })
    }
}

/// An enum label written in binary COPY (the binary form of an enum value is
/// its label). Accepts any enum type, so labels added to the database later do
/// not break the bulk path of an older build.
#[derive(Debug)]
pub(crate) struct Label(pub(crate) &'static str);

impl ToSql for Label {
    fn to_sql(
        &self,
        _ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> std::result::Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        out.put_slice(self.0.as_bytes());
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        matches!(ty.kind(), Kind::Enum(_))
    }

    postgres_types::to_sql_checked!();
}
