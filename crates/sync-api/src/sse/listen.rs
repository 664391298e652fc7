//! The LISTEN session of the change feed: `LISTEN sync_progress_done` on its
//! own connection, reconnecting with backoff; every (re)connection makes the
//! feed re-read every subscribed sync, so a change made while the connection
//! was down is not missed.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::feed::{on_listen_connected, on_notification, ListenTarget, Signals};

/// The channel migration 0028's trigger notifies on completion.
pub(crate) const CHANNEL_SQL: &str = "LISTEN sync_progress_done";

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

pub(crate) async fn run(
    target: ListenTarget,
    signals: Arc<Signals>,
    mut closing: watch::Receiver<bool>,
) {
    let mut config = target.config.clone();
    if config.get_application_name().is_none() {
        // So operators can tell it apart in pg_stat_activity.
        config.application_name("sync-api-listen");
    }
    let mut backoff = BACKOFF_MIN;
    loop {
        if *closing.borrow() {
            return;
        }
        let session = async {
            let (client, mut notes) = sync_connect::connect_listening(&config, &target.tls)
                .await
                .map_err(|e| e.to_string())?;
            // Bounded like every statement: a LISTEN that does not answer
            // within 10 s counts as a failed connection.
            tokio::time::timeout(Duration::from_secs(10), client.batch_execute(CHANNEL_SQL))
                .await
                .map_err(|_| "LISTEN did not answer within 10 s".to_owned())?
                .map_err(|e| e.to_string())?;
            tracing::info!("live progress: listening for completions");
            on_listen_connected(&signals);
            while notes.recv().await.is_some() {
                on_notification(&signals);
            }
            drop(client);
            Err::<(), String>("the connection ended".to_owned())
        };
        let connected_at = tokio::time::Instant::now();
        tokio::select! {
            outcome = session => {
                if let Err(e) = outcome {
                    tracing::warn!(error = %e, ?backoff, "live progress: LISTEN connection lost; reconnecting");
                }
            }
            _ = closing.wait_for(|c| *c) => return,
        }
        // A session that lasted a while starts over at the shortest backoff.
        if connected_at.elapsed() > BACKOFF_MAX {
            backoff = BACKOFF_MIN;
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            _ = closing.wait_for(|c| *c) => return,
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}
