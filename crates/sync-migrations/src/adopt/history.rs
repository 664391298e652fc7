//! Recording migrations 1 and 24 in refinery's history, as refinery itself does.

use tokio_postgres::Client;

use crate::error::Result;

/// Lets refinery record every embedded migration up to 24 (that is 1 and 24)
/// without running them (`Target::FakeVersion(24)`): refinery creates its table
/// if needed and writes version, name, `applied_on` and checksum exactly as it
/// does for a migration it runs, in one transaction. `up` continues from 25.
pub(crate) async fn record_0001_0024(client: &mut Client) -> Result<()> {
    crate::embedded::runner()
        .set_target(refinery::Target::FakeVersion(crate::embedded::V0024))
        .run_async(client)
        .await
        .map_err(|e| crate::apply::map_refinery_error(e, &[]))?;
    Ok(())
}
