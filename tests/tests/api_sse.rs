//! Live progress over real HTTP against the real server (issue 14 item 2):
//! `GET /api/v1/sync/progress/{syncId}/events`, Server-Sent Events.

mod api_common;

use std::time::Duration;

use serde_json::Value;
use sync_api::auth::KeySource;
use sync_api::sse::{FeedConfig, ListenTarget};
use sync_store::{ProgressDelta, StartSync, SyncEntityType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use api_common::{claims, now, serve_login, sign_hs256, Fixture, Options, Service};

const SECRET: &[u8] = b"a-test-secret-of-at-least-32-bytes!!";
/// Bound on every wait of these tests (a hung stream fails, never hangs).
const WAIT: Duration = Duration::from_secs(20);

/// One thing read from a stream.
#[derive(Debug, Clone, PartialEq)]
enum Item {
    Event { event: String, id: i64, data: Value },
    Comment(String),
}

/// An open event stream over reqwest (chunk by chunk).
struct Stream {
    resp: reqwest::Response,
    buf: String,
    ended: bool,
}

impl Stream {
    /// The next event or comment; `None` once the server ended the stream.
    async fn next(&mut self) -> Option<Item> {
        loop {
            if let Some(pos) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..pos + 2).collect();
                let (mut event, mut id, mut data, mut comment) = (None, None, None, None);
                for line in block.lines() {
                    if let Some(c) = line.strip_prefix(':') {
                        comment = Some(c.trim().to_owned());
                    } else if let Some(v) = line.strip_prefix("event: ") {
                        event = Some(v.to_owned());
                    } else if let Some(v) = line.strip_prefix("id: ") {
                        id = Some(v.parse::<i64>().expect("numeric id"));
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data = Some(serde_json::from_str(v).expect("data is JSON"));
                    }
                }
                return Some(match (event, id, data) {
                    (Some(event), Some(id), Some(data)) => Item::Event { event, id, data },
                    _ => Item::Comment(comment.expect("a comment or a whole event")),
                });
            }
            if self.ended {
                assert!(self.buf.trim().is_empty(), "partial event at the end");
                return None;
            }
            match tokio::time::timeout(WAIT, self.resp.chunk()).await {
                Err(_) => panic!("no data within {WAIT:?}; buffered {:?}", self.buf),
                Ok(Ok(Some(bytes))) => self.buf.push_str(std::str::from_utf8(&bytes).unwrap()),
                Ok(Ok(None)) | Ok(Err(_)) => self.ended = true,
            }
        }
    }

    /// The next progress event (heartbeats skipped); `None` at the end.
    async fn progress(&mut self) -> Option<(i64, Value)> {
        loop {
            match self.next().await? {
                Item::Event { event, id, data } => {
                    assert_eq!(event, "progress");
                    return Some((id, data));
                }
                Item::Comment(_) => {}
            }
        }
    }
}

async fn subscribe(
    service: &Service,
    token: &str,
    sync_id: &str,
    last_id: Option<i64>,
) -> Result<Stream, (u16, Value)> {
    let mut req = service
        .http
        .get(format!(
            "{}/api/v1/sync/progress/{sync_id}/events",
            service.base
        ))
        .header("authorization", format!("Bearer {token}"));
    if let Some(id) = last_id {
        req = req.header("last-event-id", id.to_string());
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    if status != 200 {
        let text = resp.text().await.unwrap();
        return Err((status, serde_json::from_str(&text).unwrap_or(Value::Null)));
    }
    assert_eq!(
        resp.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    Ok(Stream {
        resp,
        buf: String::new(),
        ended: false,
    })
}

/// A service whose feed polls every `poll` (and LISTENs when `listen`).
async fn service(poll: Duration, listen: bool, tweak: impl FnOnce(&mut Options)) -> Service {
    let fixture = Fixture::new().await;
    let (_, login) = fixture.db.login_role("api").await;
    let mut options = Options::new(KeySource::Hs256Secret(SECRET.to_vec()));
    options.feed = FeedConfig {
        poll_interval: poll,
        listen: listen.then(|| ListenTarget {
            config: login.clone(),
            tls: sync_connect::TlsOptions::resolve(None, None).unwrap(),
        }),
        ..FeedConfig::default()
    };
    tweak(&mut options);
    let running = serve_login(&login, options).await;
    Service {
        fixture,
        base: running.base.clone(),
        http: reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .unwrap(),
        running,
    }
}

async fn start(service: &Service, sync_id: &str, total: i32) {
    let mut start = StartSync::new(sync_id, SyncEntityType::Product);
    start.total_items = Some(total);
    service
        .fixture
        .store
        .service()
        .start_sync(service.fixture.org_a, &start)
        .await
        .unwrap();
}

async fn tick(service: &Service, sync_id: &str, processed: i32) {
    service
        .fixture
        .store
        .service()
        .report_progress(
            service.fixture.org_a,
            sync_id,
            &ProgressDelta {
                processed,
                ..ProgressDelta::default()
            },
        )
        .await
        .unwrap();
}

fn token_a(service: &Service) -> String {
    sign_hs256(SECRET, &claims(service.fixture.user_a), None)
}

#[tokio::test]
async fn events_follow_ticks_carry_the_get_json_and_completion_ends_the_stream() {
    let service = service(Duration::from_millis(20), true, |_| {}).await;
    start(&service, "live-1", 5).await;
    let token = token_a(&service);
    let mut stream = subscribe(&service, &token, "live-1", None).await.unwrap();
    let (first_id, first) = stream.progress().await.expect("the initial state");
    let (status, _, get) = service
        .get(Some(&token), "/api/v1/sync/progress/live-1")
        .await;
    assert_eq!(status, 200);
    assert_eq!(first, get, "data is exactly GET progress's JSON");
    assert_eq!(first["processed_count"], 0);

    let mut events = vec![(first_id, first)];
    for _ in 0..5 {
        tick(&service, "live-1", 1).await;
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    while let Some(e) = stream.progress().await {
        events.push(e);
    }
    assert!(events.len() >= 2, "ticks produced events: {events:?}");
    for pair in events.windows(2) {
        assert!(
            pair[0].0 < pair[1].0,
            "ids grow: {} then {}",
            pair[0].0,
            pair[1].0
        );
        assert!(pair[0].1["processed_count"].as_i64() <= pair[1].1["processed_count"].as_i64());
    }
    let (_, last) = events.last().unwrap();
    assert_eq!(last["processed_count"], 5);
    assert_eq!(last["status"], "completed");
    let (_, _, get) = service
        .get(Some(&token), "/api/v1/sync/progress/live-1")
        .await;
    assert_eq!(*last, get, "the final event is the final GET");
    assert_eq!(service.running.feed.stats().subscribers, 0);
}

#[tokio::test]
async fn another_orgs_sync_is_the_same_404_as_a_missing_one() {
    let service = service(Duration::from_millis(50), false, |_| {}).await;
    start(&service, "org-a-sync", 5).await;
    let b = sign_hs256(SECRET, &claims(service.fixture.user_b), None);
    let other = subscribe(&service, &b, "org-a-sync", None)
        .await
        .err()
        .unwrap();
    let missing = subscribe(&service, &b, "no-such-sync", None)
        .await
        .err()
        .unwrap();
    assert_eq!(other.0, 404);
    assert_eq!(missing.0, 404);
    assert_eq!(other.1["code"], missing.1["code"]);
    assert_eq!(
        other.1["message"]
            .as_str()
            .unwrap()
            .replace("org-a-sync", "X"),
        missing.1["message"]
            .as_str()
            .unwrap()
            .replace("no-such-sync", "X"),
    );
    // No token, a bad token: 401 as every endpoint.
    let resp = service
        .http
        .get(format!(
            "{}/api/v1/sync/progress/org-a-sync/events",
            service.base
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    assert!(
        subscribe(&service, "x.y.z", "org-a-sync", None)
            .await
            .err()
            .unwrap()
            .0
            == 401
    );
    assert_eq!(service.running.feed.stats().subscribers, 0);
}

#[tokio::test]
async fn the_stream_ends_when_the_token_expires() {
    let service = service(Duration::from_millis(50), false, |_| {}).await;
    start(&service, "expiring", 100).await;
    let mut c = claims(service.fixture.user_a);
    c["exp"] = (now() + 2).into();
    let token = sign_hs256(SECRET, &c, None);
    let mut stream = subscribe(&service, &token, "expiring", None).await.unwrap();
    let (_, first) = stream.progress().await.unwrap();
    assert_eq!(first["status"], "in_progress");
    // Ends without completion (bounded by WAIT inside `next`).
    while let Some((_, e)) = stream.progress().await {
        assert_eq!(e["status"], "in_progress");
    }
    assert!(now() >= c["exp"].as_i64().unwrap() - 1);
}

/// Kills the LISTEN session with pg_terminate_backend; a completion made
/// while it is down still reaches the subscriber (polls are 60 s apart here,
/// so only the reconnect's re-read or its NOTIFY can deliver it).
#[tokio::test]
async fn a_killed_listen_connection_reconnects_and_misses_nothing() {
    let service = service(Duration::from_secs(60), true, |_| {}).await;
    start(&service, "listened", 3).await;
    let token = token_a(&service);
    let mut stream = subscribe(&service, &token, "listened", None).await.unwrap();
    stream.progress().await.unwrap();
    let feed = service.running.feed.clone();
    let deadline = tokio::time::Instant::now() + WAIT;
    while feed.stats().listen_connects < 1 {
        assert!(tokio::time::Instant::now() < deadline, "never listened");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let killed: i64 = service
        .fixture
        .admin
        .query_one(
            // Waits (up to 10 s) until the backend is gone: a NOTIFY sent
            // after this can reach no old session.
            "SELECT count(pg_terminate_backend(pid, 10000)) FROM pg_stat_activity \
             WHERE datname = current_database() AND query = 'LISTEN sync_progress_done'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(killed, 1, "one LISTEN session");
    tick(&service, "listened", 3).await; // completes it while LISTEN is down
    let (_, last) = stream.progress().await.expect("the final event");
    assert_eq!(last["status"], "completed");
    assert!(stream.progress().await.is_none(), "then the stream ends");
    let deadline = tokio::time::Instant::now() + WAIT;
    while feed.stats().listen_connects < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never listened again: {:?}",
            feed.stats()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Database work per change is one read, whatever the number of subscribers.
#[tokio::test]
async fn statements_per_tick_do_not_grow_with_subscribers() {
    let service = service(Duration::from_millis(30), false, |_| {}).await;
    let token = token_a(&service);
    let feed = service.running.feed.clone();
    let mut reads = Vec::new();
    for (sync_id, subscribers) in [("one-sub", 1usize), ("many-subs", 12)] {
        const TICKS: i32 = 6;
        start(&service, sync_id, TICKS).await;
        let mut streams = Vec::new();
        for _ in 0..subscribers {
            let mut s = subscribe(&service, &token, sync_id, None).await.unwrap();
            s.progress().await.unwrap();
            streams.push(s);
        }
        let before = feed.stats();
        for _ in 0..TICKS {
            tick(&service, sync_id, 1).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for s in &mut streams {
            let mut last = None;
            while let Some((_, e)) = s.progress().await {
                last = Some(e);
            }
            assert_eq!(last.unwrap()["status"], "completed");
        }
        let after = feed.stats();
        let r = after.reads - before.reads;
        assert!(
            (1..=TICKS as u64).contains(&r),
            "{subscribers} subscribers: {r} reads for {TICKS} ticks"
        );
        reads.push(r);
    }
    // Polls run on a timer and never per subscriber; reads never exceed the
    // changes, so 12 subscribers cost what one does.
    assert!(reads[1] <= 6 && reads[0] <= 6, "{reads:?}");
}

/// A client that stops reading is dropped (bounded queue), and its
/// connection is closed (write timeout), instead of being buffered for.
#[tokio::test]
async fn a_slow_client_is_dropped() {
    let service = service(Duration::from_millis(20), false, |o| {
        o.feed.max_pending_events = 2;
        o.write_timeout = Duration::from_secs(2);
    })
    .await;
    start(&service, "fat", 1000).await;
    let token = token_a(&service);
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut conn = socket.connect(service.running.addr).await.unwrap();
    conn.write_all(
        format!(
            "GET /api/v1/sync/progress/fat/events HTTP/1.1\r\nHost: x\r\n\
             Authorization: Bearer {token}\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let pad = "x".repeat(100 * 1024);
    let feed = service.running.feed.clone();
    let mut writes = 0;
    while feed.stats().slow_dropped == 0 {
        assert!(writes < 400, "never dropped: {:?}", feed.stats());
        service
            .fixture
            .admin
            .execute(
                "UPDATE sync_progress SET metadata = jsonb_build_object('pad', $1::text, 'n', $2::int), \
                 processed_count = processed_count + 1 WHERE sync_id = 'fat'",
                &[&pad, &writes],
            )
            .await
            .unwrap();
        writes += 1;
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    // The server closes the connection: reading drains what was in flight,
    // then reaches the end (or a reset), well before the sync's events would.
    let mut sink = vec![0u8; 64 * 1024];
    let mut total = 0usize;
    let outcome = tokio::time::timeout(WAIT, async {
        loop {
            match conn.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    })
    .await;
    assert!(
        outcome.is_ok(),
        "the connection stayed open ({total} bytes read)"
    );
    assert_eq!(feed.stats().subscribers, 0, "{:?}", feed.stats());
    assert!(writes > 0);
}

#[tokio::test]
async fn last_event_id_resumes_and_heartbeats_flow() {
    let service = service(Duration::from_millis(20), false, |o| {
        o.feed.heartbeat = Duration::from_millis(100);
    })
    .await;
    start(&service, "resumed", 2).await;
    let token = token_a(&service);
    let mut s = subscribe(&service, &token, "resumed", None).await.unwrap();
    let (id, _) = s.progress().await.unwrap();
    drop(s);
    // Resuming at the current id: no repeat of the state, only heartbeats
    // until the next change.
    let mut s = subscribe(&service, &token, "resumed", Some(id))
        .await
        .unwrap();
    assert_eq!(s.next().await.unwrap(), Item::Comment("hb".into()));
    tick(&service, "resumed", 1).await;
    let (next_id, e) = s.progress().await.unwrap();
    assert!(next_id > id);
    assert_eq!(e["processed_count"], 1);
    drop(s);
    // Resuming at an older id: the current state at once.
    let mut s = subscribe(&service, &token, "resumed", Some(id))
        .await
        .unwrap();
    let (again, e) = s.progress().await.unwrap();
    assert_eq!((again, e["processed_count"].clone()), (next_id, 1.into()));
    tick(&service, "resumed", 1).await;
    let mut final_id = 0;
    while let Some((i, e)) = s.progress().await {
        final_id = i;
        assert!(e["processed_count"].as_i64().unwrap() >= 1);
    }
    // Resuming after the final event: 204, so EventSource stops reconnecting.
    let resp = service
        .http
        .get(format!(
            "{}/api/v1/sync/progress/resumed/events",
            service.base
        ))
        .header("authorization", format!("Bearer {token}"))
        .header("last-event-id", final_id.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 204);
}

#[tokio::test]
async fn shutdown_closes_streams_with_a_final_event() {
    let mut service = service(Duration::from_millis(20), false, |_| {}).await;
    start(&service, "draining", 10).await;
    let token = token_a(&service);
    let mut s = subscribe(&service, &token, "draining", None).await.unwrap();
    let (id, first) = s.progress().await.unwrap();
    service.running.shutdown();
    let (last_id, last) = s.progress().await.expect("a final event");
    assert_eq!((last_id, &last), (id, &first), "the current state");
    assert!(s.progress().await.is_none(), "then the end");
    let served = service.running.served.take().unwrap();
    tokio::time::timeout(WAIT, served)
        .await
        .expect("the server stopped without waiting for the stream")
        .unwrap();
}

/// Attacks from a database login: anyone may NOTIFY the channel (payloads are
/// ignored and wake-ups are rate-limited), and the poll function answers
/// nothing for ids the caller does not already have.
#[tokio::test]
async fn notify_floods_and_the_poll_function_leak_nothing() {
    let service = service(Duration::from_secs(60), true, |_| {}).await;
    start(&service, "flooded", 10).await;
    let token = token_a(&service);
    let mut s = subscribe(&service, &token, "flooded", None).await.unwrap();
    s.progress().await.unwrap();
    let feed = service.running.feed.clone();
    let deadline = tokio::time::Instant::now() + WAIT;
    while feed.stats().listen_connects < 1 {
        assert!(tokio::time::Instant::now() < deadline, "never listened");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (attacker, login) = service.fixture.db.login_role("attacker").await;
    let c = sync_tests::connect(&login).await;
    let before = feed.stats();
    let started = std::time::Instant::now();
    for i in 0..300 {
        c.execute(
            "SELECT pg_notify('sync_progress_done', $1)",
            &[&format!("garbage {i} ' ; DROP TABLE sync_progress; --")],
        )
        .await
        .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let elapsed = started.elapsed().as_millis() as u64;
    let polls = feed.stats().polls - before.polls;
    assert!(
        polls <= elapsed / 20 + 3,
        "{polls} polls in {elapsed} ms for 300 notifications"
    );
    assert_eq!(
        feed.stats().reads,
        before.reads,
        "nothing changed, nothing re-read"
    );
    // The stream is untouched.
    tick(&service, "flooded", 10).await;
    let (_, last) = s.progress().await.unwrap();
    assert_eq!(last["status"], "completed");

    // The poll function, called directly by a tenant role: random ids give
    // nothing; without the tenant role, no access at all.
    c.batch_execute("BEGIN; SET LOCAL ROLE sync_tenant")
        .await
        .unwrap();
    let ids: Vec<uuid::Uuid> = (0..1000).map(|_| uuid::Uuid::new_v4()).collect();
    let n = c
        .query("SELECT * FROM sync_progress_versions($1)", &[&ids])
        .await
        .unwrap()
        .len();
    assert_eq!(n, 0);
    c.batch_execute("ROLLBACK").await.unwrap();
    let err = c
        .query("SELECT * FROM sync_progress_versions($1)", &[&ids])
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE),
        "{attacker}: {err}"
    );
}

/// Finding 1: `sync_progress_versions` runs with the caller's rights, so a
/// tenant (a login that is neither owner nor superuser) gets no row for
/// another org's id, even a leaked one, and its own org's rows still answer.
#[tokio::test]
async fn the_poll_function_answers_only_for_the_callers_org() {
    let f = Fixture::new().await;
    let theirs = f
        .store
        .service()
        .start_sync(
            f.org_a,
            &StartSync::new("org-a-sync", SyncEntityType::Product),
        )
        .await
        .unwrap();
    let ours = f
        .store
        .service()
        .start_sync(
            f.org_b,
            &StartSync::new("org-b-sync", SyncEntityType::Product),
        )
        .await
        .unwrap();
    f.store
        .service()
        .complete_sync(f.org_a, "org-a-sync")
        .await
        .unwrap();
    let (_, store) = f.login_store("tenant").await;
    let b = store.tenant(f.user_b);
    let got = b.progress_versions(&[theirs.id]).await.unwrap();
    assert!(got.is_empty(), "another org's id answered: {got:?}");
    let got = b.progress_versions(&[theirs.id, ours.id]).await.unwrap();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!((got[0].id, got[0].finished), (ours.id, false));
    let a = store.tenant(f.user_a);
    let got = a.progress_versions(&[theirs.id, ours.id]).await.unwrap();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!((got[0].id, got[0].finished), (theirs.id, true));
}

/// Finding 1: a login LISTENing on the channel learns nothing from the
/// completion's notification (empty payload).
#[tokio::test]
async fn the_completion_notification_carries_no_id() {
    use futures_util::StreamExt;
    let f = Fixture::new().await;
    let (_, login) = f.db.login_role("listener").await;
    let (client, mut connection) = login.connect(tokio_postgres::NoTls).await.unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(Ok(m)) = messages.next().await {
            if let tokio_postgres::AsyncMessage::Notification(n) = m {
                let _ = tx.send((n.channel().to_owned(), n.payload().to_owned()));
            }
        }
    });
    client
        .batch_execute("LISTEN sync_progress_done")
        .await
        .unwrap();
    let row = f
        .store
        .service()
        .start_sync(
            f.org_a,
            &StartSync::new("listened", SyncEntityType::Product),
        )
        .await
        .unwrap();
    f.store
        .service()
        .complete_sync(f.org_a, "listened")
        .await
        .unwrap();
    let (channel, payload) = tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("no notification on completion")
        .unwrap();
    assert_eq!(channel, "sync_progress_done");
    assert_eq!(payload, "", "the payload leaks {}", row.id);
}

/// The feed polls each subscriber's syncs in that subscriber's scope (the
/// poll function is filtered by row-level security): two orgs' streams both
/// follow their syncs to completion.
#[tokio::test]
async fn streams_of_two_orgs_both_follow_their_syncs() {
    let service = service(Duration::from_millis(20), false, |_| {}).await;
    start(&service, "org-a-live", 2).await;
    let mut b_start = StartSync::new("org-b-live", SyncEntityType::Product);
    b_start.total_items = Some(2);
    service
        .fixture
        .store
        .service()
        .start_sync(service.fixture.org_b, &b_start)
        .await
        .unwrap();
    let token_b = sign_hs256(SECRET, &claims(service.fixture.user_b), None);
    let mut sa = subscribe(&service, &token_a(&service), "org-a-live", None)
        .await
        .unwrap();
    let mut sb = subscribe(&service, &token_b, "org-b-live", None)
        .await
        .unwrap();
    sa.progress().await.unwrap();
    sb.progress().await.unwrap();
    tick(&service, "org-a-live", 2).await;
    service
        .fixture
        .store
        .service()
        .report_progress(
            service.fixture.org_b,
            "org-b-live",
            &ProgressDelta {
                processed: 2,
                ..ProgressDelta::default()
            },
        )
        .await
        .unwrap();
    for s in [&mut sa, &mut sb] {
        let mut last = None;
        while let Some((_, e)) = s.progress().await {
            last = Some(e);
        }
        assert_eq!(last.expect("an event")["status"], "completed");
    }
}

/// Finding 5: with Supabase-style default privileges (every new function in
/// public granted to `authenticated`) set before the migrations run, the
/// functions of migration 0028 are still not executable by `authenticated`,
/// and a login member of it is refused.
#[tokio::test]
async fn default_privileges_do_not_open_the_0028_functions() {
    let db = sync_tests::TestDb::empty().await;
    let admin = db.client().await;
    admin
        .batch_execute(
            "DO $r$ BEGIN \
               IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated') THEN \
                 CREATE ROLE authenticated NOLOGIN; \
               END IF; \
             END $r$; \
             ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON FUNCTIONS TO authenticated",
        )
        .await
        .unwrap();
    let mut client = db.client().await;
    sync_migrations::apply(&mut client, &sync_migrations::MigrateOptions::default())
        .await
        .unwrap();
    for f in [
        "sync_progress_notify_done()",
        "sync_progress_versions(uuid[])",
    ] {
        let open: bool = admin
            .query_one(
                "SELECT has_function_privilege('authenticated', $1::text::regprocedure, 'EXECUTE')",
                &[&f],
            )
            .await
            .unwrap()
            .get(0);
        assert!(!open, "{f} is executable by authenticated");
    }
    // The intended grant stays.
    let tenant: bool = admin
        .query_one(
            "SELECT has_function_privilege('sync_tenant', 'sync_progress_versions(uuid[])', 'EXECUTE')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(tenant);
    let role = format!("{}_authn", db.name());
    admin
        .batch_execute(&format!(
            "CREATE ROLE {role} LOGIN NOINHERIT PASSWORD 'x' IN ROLE authenticated; \
             GRANT CONNECT ON DATABASE {db} TO {role}; \
             GRANT USAGE ON SCHEMA public TO {role};",
            db = db.name()
        ))
        .await
        .unwrap();
    let mut config = db.config();
    config.user(&role);
    config.password("x");
    let c = sync_tests::connect(&config).await;
    c.batch_execute("SET ROLE authenticated").await.unwrap();
    let ids: Vec<uuid::Uuid> = vec![uuid::Uuid::new_v4()];
    for (sql, params) in [
        (
            "SELECT * FROM sync_progress_versions($1)",
            &[&ids as &(dyn tokio_postgres::types::ToSql + Sync)][..],
        ),
        ("SELECT sync_progress_notify_done()", &[][..]),
    ] {
        let err = c.query(sql, params).await.unwrap_err();
        assert_eq!(
            err.code(),
            Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE),
            "{sql}: {err}"
        );
    }
    drop(c);
    admin
        .batch_execute(&format!(
            "ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE ALL ON FUNCTIONS FROM authenticated; \
             DROP OWNED BY {role}; DROP ROLE {role}"
        ))
        .await
        .unwrap();
}
