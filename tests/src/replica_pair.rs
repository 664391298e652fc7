//! A throwaway primary with every migration applied and a real streaming hot
//! standby of it ([`tempcluster::TempCluster::start_standby`]): the shared
//! server allows no replication connections, so replica tests bring their own.

use std::time::Duration;

use tokio_postgres::{Client, Config};

use crate::tempcluster::TempCluster;

/// Name of the login role [`ReplicaPair::start`] creates: neither superuser
/// nor owner, member of `sync_tenant` (for the tenant scope).
pub const APP_ROLE: &str = "replica_app";

/// A primary (database `postgres`, migrated) and its streaming standby.
/// Dropping it stops both and removes their files.
pub struct ReplicaPair {
    // Field order is drop order: the standby stops first.
    /// The hot standby.
    pub standby: TempCluster,
    /// The primary.
    pub primary: TempCluster,
}

impl ReplicaPair {
    /// Starts the primary, applies the migrations, creates [`APP_ROLE`],
    /// takes the standby and waits until it streams.
    ///
    /// # Panics
    /// When a step fails (with the server logs).
    pub async fn start() -> ReplicaPair {
        let primary = tokio::task::spawn_blocking(|| TempCluster::start(&[]))
            .await
            .expect("join")
            .unwrap_or_else(|e| panic!("primary: {e}"));
        {
            let mut c = crate::connect(&primary.config()).await;
            sync_migrations::apply(&mut c, &sync_migrations::MigrateOptions::default())
                .await
                .unwrap_or_else(|e| panic!("applying migrations: {e}"));
            c.batch_execute(&format!(
                "CREATE ROLE {APP_ROLE} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT \
                 NOBYPASSRLS IN ROLE sync_tenant; GRANT USAGE ON SCHEMA public TO {APP_ROLE};"
            ))
            .await
            .expect("creating the app role");
        }
        let (primary, standby) = tokio::task::spawn_blocking(move || {
            let standby = primary.start_standby();
            (primary, standby)
        })
        .await
        .expect("join");
        let standby = standby.unwrap_or_else(|e| panic!("standby: {e}"));
        standby
            .wait_streaming()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        ReplicaPair { standby, primary }
    }

    /// Superuser settings for the primary.
    pub fn primary_config(&self) -> Config {
        self.primary.config()
    }

    /// Superuser settings for the standby.
    pub fn standby_config(&self) -> Config {
        self.standby.config()
    }

    /// `config` logged in as [`APP_ROLE`].
    pub fn as_app(config: &Config) -> Config {
        let mut c = config.clone();
        c.user(APP_ROLE);
        c
    }

    /// A superuser connection to the primary.
    pub async fn primary_client(&self) -> Client {
        crate::connect(&self.primary_config()).await
    }

    /// A superuser connection to the standby.
    pub async fn standby_client(&self) -> Client {
        crate::connect(&self.standby_config()).await
    }

    /// Waits (at most 60 s) until the standby has replayed everything the
    /// primary had written when this was called.
    ///
    /// # Panics
    /// When it does not within the bound.
    pub async fn wait_caught_up(&self) {
        let p = self.primary_client().await;
        let s = self.standby_client().await;
        let target: String = p
            .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
            .await
            .unwrap()
            .get(0);
        for _ in 0..6000 {
            let done: bool = s
                .query_one(
                    "SELECT pg_last_wal_replay_lsn() >= $1::text::pg_lsn",
                    &[&target],
                )
                .await
                .unwrap()
                .get(0);
            if done {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the standby did not replay {target} within 60 s");
    }
}
