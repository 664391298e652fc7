//! The change feed: one per process, whatever the number of subscribers.
//!
//! Every subscribed sync has one [`Hub`] holding its latest snapshot in a
//! `watch` channel (so bursts coalesce into the newest state). One driver task
//! polls the versions of the subscribed syncs with one statement per distinct
//! subscriber scope ([`TenantScope::progress_versions`], filtered by that
//! scope's row-level security) every [`FeedConfig::poll_interval`], or
//! at once when a `NOTIFY sync_progress_done` arrives, and reads again (one
//! `get_progress` in the tenant scope of one of its subscribers) only the syncs
//! whose version moved. Database work per change is therefore one read,
//! whatever the number of subscribers.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use sync_store::api::{self, ProgressResponse};
use sync_store::{TenantScope, MAX_VERSION_IDS};
use tokio::sync::{watch, Notify};
use tokio::time::Instant;
use uuid::Uuid;

use super::listen;

/// Where the feed LISTENs for `NOTIFY sync_progress_done`.
#[derive(Clone)]
pub struct ListenTarget {
    /// A session connection: a direct endpoint or a session-mode pooler,
    /// never a transaction-mode pooler (LISTEN needs the session).
    pub config: tokio_postgres::Config,
    /// TLS for that connection.
    pub tls: sync_connect::TlsOptions,
}

impl std::fmt::Debug for ListenTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListenTarget")
            .field("hosts", &self.config.get_hosts())
            .field("dbname", &self.config.get_dbname())
            .finish_non_exhaustive()
    }
}

/// Settings of the change feed; [`FeedConfig::default`] suits most deployments.
#[derive(Debug, Clone)]
pub struct FeedConfig {
    /// How often the versions of the subscribed syncs are polled (one
    /// statement per poll, none while nobody is subscribed). Default 100 ms,
    /// so the p99 delay of an event stays under 200 ms (bench row P9).
    pub poll_interval: Duration,
    /// LISTEN for completions, so the final event goes out at once; `None`
    /// polls only (lets an idle Neon compute scale to zero: a held LISTEN
    /// connection keeps it awake). Default `None`.
    pub listen: Option<ListenTarget>,
    /// Heartbeat comment (`: hb`) interval on idle streams. Default 15 s.
    pub heartbeat: Duration,
    /// Events queued for one subscriber before it counts as too slow and its
    /// stream is closed. Default 16.
    pub max_pending_events: usize,
    /// Most concurrent subscribers of the process (a 503 beyond). Default 10000.
    pub max_subscribers: usize,
    /// Most re-reads in flight at once after a poll. Default 8.
    pub read_concurrency: usize,
}

impl Default for FeedConfig {
    fn default() -> FeedConfig {
        FeedConfig {
            poll_interval: Duration::from_millis(100),
            listen: None,
            heartbeat: Duration::from_secs(15),
            max_pending_events: 16,
            max_subscribers: 10_000,
            read_concurrency: 8,
        }
    }
}

/// Counters of a feed since it was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct FeedStats {
    /// Open subscriptions.
    pub subscribers: u64,
    /// Syncs with at least one subscriber.
    pub syncs: u64,
    /// Version polls run (one statement each).
    pub polls: u64,
    /// Re-reads of a changed sync (one statement each).
    pub reads: u64,
    /// Subscribers dropped for not reading their stream.
    pub slow_dropped: u64,
    /// Successful LISTEN (re)connections.
    pub listen_connects: u64,
}

impl FeedStats {
    /// Statements the feed sent: polls plus re-reads.
    pub fn statements(&self) -> u64 {
        self.polls + self.reads
    }
}

/// What the subscribers of a sync see: the newest state.
#[derive(Debug)]
pub(crate) struct Snapshot {
    /// The event id: `updated_at` in µs, raised when needed so it only grows.
    pub(crate) id: i64,
    /// The JSON of `GET /api/v1/sync/progress/{syncId}`.
    pub(crate) json: Arc<str>,
    /// Why the stream ends after this snapshot, if it does.
    pub(crate) end: Option<End>,
}

/// Why a stream ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    /// The sync finished: the snapshot is the final event.
    Finished,
    /// The sync is no longer readable (deleted, or access lost): no event.
    Gone,
}

struct Reader {
    id: u64,
    scope: TenantScope,
    expires: Instant,
}

struct Hub {
    row_id: Uuid,
    sync_id: String,
    tx: watch::Sender<Arc<Snapshot>>,
    readers: Mutex<Vec<Reader>>,
    /// The version last read (`updated_at` in µs).
    version: AtomicI64,
}

fn micros(t: time::OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1000).unwrap_or(i64::MAX)
}

impl Hub {
    /// The scope of the subscriber whose token lasts longest, if any is valid.
    fn reader_scope(&self) -> Option<TenantScope> {
        let now = Instant::now();
        let readers = self.readers.lock().expect("readers lock");
        readers
            .iter()
            .filter(|r| r.expires > now)
            .max_by_key(|r| r.expires)
            .map(|r| r.scope.clone())
    }

    /// Publishes `progress` if it differs from the current snapshot.
    fn publish(&self, progress: &ProgressResponse) {
        let version = micros(progress.progress.updated_at);
        let json: Arc<str> = match serde_json::to_string(progress) {
            Ok(j) => Arc::from(j),
            Err(e) => {
                tracing::error!(error = %e, "progress does not serialise");
                return;
            }
        };
        let end = progress
            .progress
            .completed_at
            .is_some()
            .then_some(End::Finished);
        self.version.store(version, Ordering::SeqCst);
        self.tx.send_if_modified(|cur| {
            if cur.end.is_some() || (cur.json == json && cur.end == end) {
                return false;
            }
            let id = version.max(cur.id.saturating_add(1));
            *cur = Arc::new(Snapshot { id, json, end });
            true
        });
    }

    fn publish_gone(&self) {
        self.tx.send_if_modified(|cur| {
            if cur.end.is_some() {
                return false;
            }
            *cur = Arc::new(Snapshot {
                id: cur.id.saturating_add(1),
                json: cur.json.clone(),
                end: Some(End::Gone),
            });
            true
        });
    }
}

pub(crate) struct Signals {
    wake: Notify,
    force_all: AtomicBool,
    polls: AtomicU64,
    reads: AtomicU64,
    slow_dropped: AtomicU64,
    listen_connects: AtomicU64,
    subscribers: AtomicU64,
}

struct Inner {
    config: FeedConfig,
    hubs: Mutex<HashMap<Uuid, Arc<Hub>>>,
    signals: Arc<Signals>,
    closing: watch::Sender<bool>,
    started: AtomicBool,
    next_reader: AtomicU64,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.closing.send_replace(true);
    }
}

/// The process's change feed of live progress. Cheap to clone. Its tasks
/// start with the first subscription and stop on [`Feed::shutdown`] or when
/// the last clone is dropped.
#[derive(Clone)]
pub struct Feed {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Feed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Feed")
            .field("config", &self.inner.config)
            .field("stats", &self.stats())
            .finish()
    }
}

/// One subscriber's registration; unregisters on drop.
pub(crate) struct Subscription {
    feed: Feed,
    hub: Arc<Hub>,
    reader: u64,
    pub(crate) rx: watch::Receiver<Arc<Snapshot>>,
    pub(crate) closing: watch::Receiver<bool>,
}

impl Subscription {
    pub(crate) fn count_slow_drop(&self) {
        self.feed
            .inner
            .signals
            .slow_dropped
            .fetch_add(1, Ordering::Relaxed);
        metrics::counter!("sse_slow_clients_dropped_total").increment(1);
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let inner = &self.feed.inner;
        let mut hubs = inner.hubs.lock().expect("hubs lock");
        let empty = {
            let mut readers = self.hub.readers.lock().expect("readers lock");
            readers.retain(|r| r.id != self.reader);
            readers.is_empty()
        };
        if empty
            && hubs
                .get(&self.hub.row_id)
                .is_some_and(|h| Arc::ptr_eq(h, &self.hub))
        {
            hubs.remove(&self.hub.row_id);
        }
        let left = inner.signals.subscribers.fetch_sub(1, Ordering::SeqCst) - 1;
        metrics::gauge!("sse_subscribers").set(left as f64);
    }
}

/// Too many subscribers (the caller answers 503).
#[derive(Debug)]
pub(crate) struct Full;

impl Feed {
    /// A feed with `config`; nothing runs until the first subscription.
    pub fn new(config: FeedConfig) -> Feed {
        let (closing, _) = watch::channel(false);
        Feed {
            inner: Arc::new(Inner {
                config,
                hubs: Mutex::new(HashMap::new()),
                signals: Arc::new(Signals {
                    wake: Notify::new(),
                    force_all: AtomicBool::new(false),
                    polls: AtomicU64::new(0),
                    reads: AtomicU64::new(0),
                    slow_dropped: AtomicU64::new(0),
                    listen_connects: AtomicU64::new(0),
                    subscribers: AtomicU64::new(0),
                }),
                closing,
                started: AtomicBool::new(false),
                next_reader: AtomicU64::new(0),
            }),
        }
    }

    /// The settings.
    pub fn config(&self) -> &FeedConfig {
        &self.inner.config
    }

    /// Counters since the feed was made.
    pub fn stats(&self) -> FeedStats {
        let s = &self.inner.signals;
        FeedStats {
            subscribers: s.subscribers.load(Ordering::SeqCst),
            syncs: self.inner.hubs.lock().map(|h| h.len() as u64).unwrap_or(0),
            polls: s.polls.load(Ordering::SeqCst),
            reads: s.reads.load(Ordering::SeqCst),
            slow_dropped: s.slow_dropped.load(Ordering::SeqCst),
            listen_connects: s.listen_connects.load(Ordering::SeqCst),
        }
    }

    /// Graceful shutdown: every open stream gets the current state as a final
    /// `progress` event and ends; the feed's tasks stop; later subscriptions
    /// get a 503. Call it when the server stops accepting connections, so the
    /// drain does not wait for streams that would never end.
    pub fn shutdown(&self) {
        self.inner.closing.send_replace(true);
    }

    pub(crate) fn is_closing(&self) -> bool {
        *self.inner.closing.borrow()
    }

    /// Registers a subscriber of the sync `progress` describes, read (and so
    /// authorised) in `scope` just now; `expires` is when its token expires.
    pub(crate) fn subscribe(
        &self,
        scope: TenantScope,
        progress: &ProgressResponse,
        expires: Instant,
    ) -> Result<Subscription, Full> {
        let inner = &self.inner;
        if inner.signals.subscribers.load(Ordering::SeqCst) as usize >= inner.config.max_subscribers
        {
            return Err(Full);
        }
        self.start();
        let row_id = progress.progress.id;
        let reader = inner.next_reader.fetch_add(1, Ordering::Relaxed);
        let mut hubs = inner.hubs.lock().expect("hubs lock");
        let hub = hubs
            .entry(row_id)
            .or_insert_with(|| {
                let (tx, _) = watch::channel(Arc::new(Snapshot {
                    id: 0,
                    json: Arc::from(""),
                    end: None,
                }));
                Arc::new(Hub {
                    row_id,
                    sync_id: progress.progress.sync_id.clone(),
                    tx,
                    readers: Mutex::new(Vec::new()),
                    version: AtomicI64::new(i64::MIN),
                })
            })
            .clone();
        hub.readers.lock().expect("readers lock").push(Reader {
            id: reader,
            scope,
            expires,
        });
        drop(hubs);
        // Newer than what the hub holds (or the hub is new): publish it.
        if micros(progress.progress.updated_at) > hub.version.load(Ordering::SeqCst) {
            hub.publish(progress);
        }
        let n = inner.signals.subscribers.fetch_add(1, Ordering::SeqCst) + 1;
        metrics::gauge!("sse_subscribers").set(n as f64);
        Ok(Subscription {
            rx: hub.tx.subscribe(),
            closing: inner.closing.subscribe(),
            feed: self.clone(),
            hub,
            reader,
        })
    }

    /// Starts the driver (and the LISTEN task) once.
    fn start(&self) {
        if self.inner.started.swap(true, Ordering::SeqCst) {
            return;
        }
        let weak = Arc::downgrade(&self.inner);
        let signals = self.inner.signals.clone();
        let closing = self.inner.closing.subscribe();
        let interval = self.inner.config.poll_interval;
        if let Some(target) = self.inner.config.listen.clone() {
            tokio::spawn(listen::run(
                target,
                signals.clone(),
                self.inner.closing.subscribe(),
            ));
        }
        tokio::spawn(drive(weak, signals, closing, interval));
    }
}

/// Least time between two polls, whatever wakes the driver.
const MIN_POLL_GAP: Duration = Duration::from_millis(20);

async fn drive(
    weak: Weak<Inner>,
    signals: Arc<Signals>,
    mut closing: watch::Receiver<bool>,
    interval: Duration,
) {
    let mut failures = 0u32;
    let mut last_poll = tokio::time::Instant::now();
    loop {
        let pause = if failures == 0 {
            interval
        } else {
            // Backoff while the database is unreachable, up to 5 s.
            (interval * 2u32.saturating_pow(failures.min(5))).min(Duration::from_secs(5))
        };
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = signals.wake.notified() => {}
            _ = closing.wait_for(|c| *c) => return,
        }
        let Some(inner) = weak.upgrade() else { return };
        // Anyone may NOTIFY the channel: wake-ups never poll more often than
        // every MIN_POLL_GAP, however many notifications arrive.
        let since = last_poll.elapsed();
        if since < MIN_POLL_GAP {
            tokio::time::sleep(MIN_POLL_GAP - since).await;
        }
        last_poll = tokio::time::Instant::now();
        if poll_once(&inner).await {
            failures = 0;
        } else {
            failures = failures.saturating_add(1);
        }
    }
}

/// Polls the versions and re-reads what changed; false when the poll failed.
async fn poll_once(inner: &Inner) -> bool {
    let hubs: Vec<Arc<Hub>> = inner
        .hubs
        .lock()
        .expect("hubs lock")
        .values()
        .cloned()
        .collect();
    if hubs.is_empty() {
        return true;
    }
    let force = inner.signals.force_all.swap(false, Ordering::SeqCst);
    // sync_progress_versions is filtered by the caller's row-level security
    // (migration 0028), so each hub is polled in a scope of one of its own
    // subscribers: one statement per distinct scope, not per hub.
    let mut groups: Vec<(TenantScope, Vec<Uuid>)> = Vec::new();
    for hub in &hubs {
        let Some(scope) = hub.reader_scope() else {
            continue;
        };
        match groups
            .iter_mut()
            .find(|(s, _)| s.user_id() == scope.user_id())
        {
            Some((_, ids)) => ids.push(hub.row_id),
            None => groups.push((scope, vec![hub.row_id])),
        }
    }
    let mut versions = HashMap::with_capacity(hubs.len());
    for (scope, ids) in &groups {
        for chunk in ids.chunks(MAX_VERSION_IDS) {
            inner.signals.polls.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("sse_feed_statements_total", "kind" => "poll").increment(1);
            match scope.progress_versions(chunk).await {
                Ok(found) => versions.extend(found.into_iter().map(|v| (v.id, v.version))),
                Err(e) => {
                    tracing::warn!(error = %e, "live progress: polling versions failed; retrying");
                    if force {
                        inner.signals.force_all.store(true, Ordering::SeqCst);
                    }
                    return false;
                }
            }
        }
    }
    let changed: Vec<Arc<Hub>> = hubs
        .into_iter()
        .filter(|h| {
            force
                || versions
                    .get(&h.row_id)
                    .is_none_or(|v| *v != h.version.load(Ordering::SeqCst))
        })
        .collect();
    futures_util::stream::iter(changed)
        .for_each_concurrent(inner.config.read_concurrency.max(1), |hub| async move {
            refresh(inner, &hub).await;
        })
        .await;
    true
}

/// One read of `hub`'s sync in a subscriber's scope, published to all.
async fn refresh(inner: &Inner, hub: &Hub) {
    let Some(scope) = hub.reader_scope() else {
        return;
    };
    inner.signals.reads.fetch_add(1, Ordering::Relaxed);
    metrics::counter!("sse_feed_statements_total", "kind" => "read").increment(1);
    match api::get_progress(&scope, &hub.sync_id).await {
        Ok(progress) => hub.publish(&progress),
        Err(e) if e.status == 403 || e.status == 404 => hub.publish_gone(),
        Err(e) => {
            // The hub's version is unchanged, so the next poll reads it again.
            tracing::warn!(code = e.code, message = %e.message, "live progress: re-read failed; retrying at the next poll");
        }
    }
}

/// For the LISTEN task: a connection (re)established, or a notification.
pub(crate) fn on_listen_connected(signals: &Signals) {
    signals.listen_connects.fetch_add(1, Ordering::Relaxed);
    metrics::counter!("sse_listen_connects_total").increment(1);
    // Whatever changed while the connection was down is re-read.
    signals.force_all.store(true, Ordering::SeqCst);
    signals.wake.notify_one();
}

pub(crate) fn on_notification(signals: &Signals) {
    signals.wake.notify_one();
}
