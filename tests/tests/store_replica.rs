//! Stale-tolerant reads on a real streaming replica (`ReplicaPair`: a
//! throwaway primary and a `pg_basebackup -R` hot standby of it): a read that
//! follows the caller's write sees it, stale reads are served when asked,
//! reads fall back to the primary when the replica lags past the bound, is
//! stopped or times out, and row-level security holds on the replica.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sync_store::{
    ActivityFilter, Consistency, ConsistencyToken, Error, NewActivity, ReplicaOptions, StartSync,
    StatementMode, Store, SyncAction, SyncEntityType, SyncStatus,
};
use sync_tests::pool_for;
use sync_tests::replica_pair::ReplicaPair;
use tokio_postgres::Config;
use uuid::Uuid;

struct Tenants {
    org_a: Uuid,
    org_b: Uuid,
    user_a: Uuid,
    user_b: Uuid,
}

async fn tenants(pair: &ReplicaPair) -> Tenants {
    let c = pair.primary_client().await;
    let t = Tenants {
        org_a: Uuid::new_v4(),
        org_b: Uuid::new_v4(),
        user_a: Uuid::new_v4(),
        user_b: Uuid::new_v4(),
    };
    c.execute(
        "INSERT INTO organization (id, name) VALUES ($1, 'org A'), ($2, 'org B')",
        &[&t.org_a, &t.org_b],
    )
    .await
    .unwrap();
    c.execute(
        "INSERT INTO auth.users_extended (id, org_id, email) \
         VALUES ($1, $2, 'a@example.com'), ($3, $4, 'b@example.com')",
        &[&t.user_a, &t.org_a, &t.user_b, &t.org_b],
    )
    .await
    .unwrap();
    pair.wait_caught_up().await;
    t
}

fn options(max_wait: Duration) -> ReplicaOptions {
    let mut o = ReplicaOptions::default();
    o.max_wait = max_wait;
    o.retry_after = Duration::from_millis(200);
    o.checkout_timeout = Duration::from_secs(3);
    o
}

fn store_on(
    primary: &Config,
    replica: &Config,
    mode: StatementMode,
    opts: ReplicaOptions,
) -> Store {
    let mut replica = replica.clone();
    replica.connect_timeout(Duration::from_secs(2));
    Store::with_statement_mode(pool_for(primary), mode).with_replica(pool_for(&replica), opts)
}

fn marked(sync_id: &str) -> NewActivity {
    let mut e = NewActivity::new(SyncAction::SyncProgress, SyncStatus::InProgress);
    e.sync_id = Some(sync_id.to_owned());
    e.record_count = 1;
    e
}

fn by_sync(sync_id: &str) -> ActivityFilter {
    ActivityFilter {
        sync_id: Some(sync_id.to_owned()),
        ..ActivityFilter::default()
    }
}

/// Appends to `org` through its own store (no replica) until `stop`.
fn background_writer(
    primary: Config,
    org: Uuid,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let svc = Store::new(pool_for(&primary)).service();
        let mut n = 0;
        while !stop.load(Ordering::Relaxed) {
            svc.append_activity(org, &marked("noise"))
                .await
                .expect("noise write");
            n += 1;
        }
        n
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_read_after_the_callers_write_sees_it_under_continuous_writes() {
    let pair = ReplicaPair::start().await;
    let t = tenants(&pair).await;
    let stop = Arc::new(AtomicBool::new(false));
    let noise = background_writer(pair.primary_config(), t.org_b, stop.clone());
    for mode in [StatementMode::Unnamed, StatementMode::CachedPerConnection] {
        // A generous bound, so that the replica path is the one exercised on a
        // crowded machine; correctness never depends on it.
        let store = store_on(
            &pair.primary_config(),
            &pair.standby_config(),
            mode,
            options(Duration::from_secs(10)),
        );
        let other_process = store_on(
            &pair.primary_config(),
            &pair.standby_config(),
            mode,
            options(Duration::from_secs(10)),
        );
        for i in 0..25 {
            let session = store.session();
            let id = format!("ryw-{mode:?}-{i}");
            let written = session
                .service()
                .append_activity(t.org_a, &marked(&id))
                .await
                .unwrap();
            // Service scope, same session.
            let page = session
                .service()
                .list_activity(t.org_a, &by_sync(&id), None, 10)
                .await
                .unwrap();
            assert_eq!(page.entries.len(), 1, "{id}: service read missed the write");
            assert_eq!(page.entries[0].id, written.id);
            // Tenant scope of the same session (its own write, through RLS).
            let page = session
                .tenant(t.user_a)
                .list_activity(&by_sync(&id), None, 10)
                .await
                .unwrap();
            assert_eq!(page.entries.len(), 1, "{id}: tenant read missed the write");
            // Another process, given the token as text (an HTTP header).
            let token = session
                .consistency_token()
                .await
                .unwrap()
                .expect("a token after a write");
            let header = token.to_string();
            let elsewhere = other_process.session();
            elsewhere.observe(header.parse::<ConsistencyToken>().unwrap());
            let page = elsewhere
                .tenant(t.user_a)
                .list_activity(&by_sync(&id), None, 10)
                .await
                .unwrap();
            assert_eq!(page.entries.len(), 1, "{id}: token reader missed the write");
        }
        let stats = store.replica_stats().unwrap();
        let other = other_process.replica_stats().unwrap();
        eprintln!("{mode:?}: {stats:?} / {other:?}");
        assert_eq!(
            stats.fallback_unavailable + stats.fallback_error + stats.fallback_conflict,
            0,
            "{stats:?}"
        );
        assert!(
            stats.replica_reads > 0,
            "the replica answered no read: {stats:?}"
        );
        assert!(
            other.replica_reads > 0,
            "the replica answered no token read: {other:?}"
        );
    }
    stop.store(true, Ordering::Relaxed);
    let noise_writes = noise.await.unwrap();
    assert!(noise_writes > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stale_reads_are_served_and_lagging_reads_go_to_the_primary() {
    let pair = ReplicaPair::start().await;
    let t = tenants(&pair).await;
    let standby = pair.standby_client().await;
    for mode in [StatementMode::Unnamed, StatementMode::CachedPerConnection] {
        let store = store_on(
            &pair.primary_config(),
            &pair.standby_config(),
            mode,
            options(Duration::from_millis(100)),
        );
        standby
            .execute("SELECT pg_wal_replay_pause()", &[])
            .await
            .unwrap();
        let id = format!("paused-{mode:?}");
        store
            .service()
            .start_sync(t.org_a, &StartSync::new(&id, SyncEntityType::Product))
            .await
            .unwrap();
        let svc = store.service();

        // Stale: the replica answers, without the write (replay is paused).
        let stale = svc.clone().with_consistency(Consistency::Stale);
        let before = store.replica_stats().unwrap();
        let page = stale
            .list_activity(t.org_a, &by_sync(&id), None, 10)
            .await
            .unwrap();
        assert!(
            page.entries.is_empty(),
            "replay is paused, yet the stale read saw the write"
        );
        let recent = stale.list_recent_syncs(t.org_a, 10).await.unwrap();
        assert!(recent.iter().all(|s| s.sync_id != id));
        let after = store.replica_stats().unwrap();
        // A listing reads newest-first windows until its page is full: one
        // replica read per window, so at least one per call.
        assert!(
            after.replica_reads >= before.replica_reads + 2,
            "{before:?} {after:?}"
        );

        // Read-your-writes: the replica lags past the bound → the primary.
        let page = svc
            .list_activity(t.org_a, &by_sync(&id), None, 10)
            .await
            .unwrap();
        assert_eq!(page.entries.len(), 1, "the start_sync activity row");
        let metrics = svc.metrics(t.org_a, None).await.unwrap();
        assert!(metrics.activity_total >= 1);
        let lagged = store.replica_stats().unwrap();
        // At least the metrics read and one listing window fell back.
        assert!(lagged.fallback_lag >= after.fallback_lag + 2, "{lagged:?}");
        assert_eq!(lagged.replica_reads, after.replica_reads);

        // Another process given this store's token: its read waits, then the primary.
        let token = store.consistency_token().await.unwrap().expect("a token");
        let elsewhere = store_on(
            &pair.primary_config(),
            &pair.standby_config(),
            mode,
            options(Duration::from_millis(100)),
        )
        .session();
        elsewhere.observe(token);
        let page = elsewhere
            .service()
            .list_activity(t.org_a, &by_sync(&id), None, 10)
            .await
            .unwrap();
        assert_eq!(page.entries.len(), 1, "a token reader missed the write");
        // One fallback per listing window read (a sparse page reads them all).
        assert!(elsewhere.replica_stats().unwrap().fallback_lag >= 1);

        // Fresh: the primary, counted as such.
        let fresh = svc.clone().with_consistency(Consistency::Fresh);
        assert!(fresh
            .list_recent_syncs(t.org_a, 10)
            .await
            .unwrap()
            .iter()
            .any(|s| s.sync_id == id));
        assert_eq!(
            store.replica_stats().unwrap().fresh_reads,
            lagged.fresh_reads + 1
        );

        // Replay resumes: the same read is answered by the replica again.
        standby
            .execute("SELECT pg_wal_replay_resume()", &[])
            .await
            .unwrap();
        let mut opts = options(Duration::from_secs(10));
        opts.retry_after = Duration::from_millis(1);
        let patient = store
            .clone()
            .with_replica(pool_for(&pair.standby_config()), opts);
        let page = patient
            .service()
            .list_activity(t.org_a, &by_sync(&id), None, 10)
            .await
            .unwrap();
        assert_eq!(page.entries.len(), 1);
        assert!(patient.replica_stats().unwrap().replica_reads >= 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stopped_replica_means_primary_reads_never_errors() {
    let mut pair = ReplicaPair::start().await;
    let t = tenants(&pair).await;
    let store = store_on(
        &pair.primary_config(),
        &pair.standby_config(),
        StatementMode::CachedPerConnection,
        options(Duration::from_millis(500)),
    );
    let svc = store.service();
    svc.append_activity(t.org_a, &marked("down")).await.unwrap();
    // Warm the replica pool, so a pooled connection dies with the server.
    let page = svc
        .list_activity(t.org_a, &by_sync("down"), None, 10)
        .await
        .unwrap();
    assert_eq!(page.entries.len(), 1);
    tokio::task::block_in_place(|| pair.standby.stop_server());
    let mut reads = 0;
    for consistency in [Consistency::ReadYourWrites, Consistency::Stale] {
        for _ in 0..5 {
            let scoped = svc.clone().with_consistency(consistency);
            let page = scoped
                .list_activity(t.org_a, &by_sync("down"), None, 10)
                .await
                .unwrap();
            assert_eq!(page.entries.len(), 1);
            let tenant = store.tenant(t.user_a).with_consistency(consistency);
            assert_eq!(
                tenant
                    .list_activity(&by_sync("down"), None, 10)
                    .await
                    .unwrap()
                    .entries
                    .len(),
                1
            );
            tenant.metrics(None).await.unwrap();
            reads += 3;
        }
    }
    let stats = store.replica_stats().unwrap();
    // At least one fallback per call (a listing is one read per window).
    assert!(stats.fallback_unavailable >= reads, "{stats:?}");
    assert_eq!(stats.fallback_error, 0, "{stats:?}");
    // Back up: after `retry_after`, reads go to the replica again.
    tokio::task::block_in_place(|| pair.standby.start_server()).unwrap();
    pair.standby.wait_streaming().await.unwrap();
    svc.append_activity(t.org_a, &marked("up")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(250)).await;
    let mut patient = options(Duration::from_secs(10));
    patient.retry_after = Duration::from_millis(200);
    let store = store.with_replica(pool_for(&pair.standby_config()), patient);
    let page = store
        .service()
        .list_activity(t.org_a, &by_sync("up"), None, 10)
        .await
        .unwrap();
    assert_eq!(page.entries.len(), 1);
    assert!(store.replica_stats().unwrap().replica_reads >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_read_blocked_on_the_replica_times_out_there_and_is_answered_by_the_primary() {
    let pair = ReplicaPair::start().await;
    let t = tenants(&pair).await;
    let mut opts = options(Duration::from_millis(100));
    opts.statement_timeout = Duration::from_millis(300);
    let store = store_on(
        &pair.primary_config(),
        &pair.standby_config(),
        StatementMode::Unnamed,
        opts,
    )
    .with_consistency(Consistency::Stale);
    store
        .service()
        .append_activity(t.org_a, &marked("blocked"))
        .await
        .unwrap();
    pair.wait_caught_up().await;
    // An ACCESS EXCLUSIVE lock is WAL-logged and held on the standby too.
    let holder = pair.primary_client().await;
    holder
        .batch_execute("BEGIN; LOCK TABLE sync_activity_log IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    pair.wait_caught_up().await;
    let reader = {
        let store = store.clone();
        let org = t.org_a;
        tokio::spawn(async move {
            store
                .service()
                .list_activity(org, &by_sync("blocked"), None, 10)
                .await
        })
    };
    // The replica read times out (57014) and falls back; the primary read then
    // waits for the lock, which is released once the fallback is counted.
    let mut counted = false;
    for _ in 0..600 {
        if store.replica_stats().unwrap().fallback_timeout >= 1 {
            counted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    holder.batch_execute("COMMIT").await.unwrap();
    assert!(counted, "{:?}", store.replica_stats());
    let page = reader.await.unwrap().unwrap();
    assert_eq!(page.entries.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn row_level_security_holds_on_the_replica() {
    let pair = ReplicaPair::start().await;
    let t = tenants(&pair).await;
    let service = Store::new(pool_for(&pair.primary_config())).service();
    for i in 0..3 {
        service
            .append_activity(t.org_a, &marked(&format!("a{i}")))
            .await
            .unwrap();
        service
            .start_sync(
                t.org_a,
                &StartSync::new(format!("sa{i}"), SyncEntityType::Product),
            )
            .await
            .unwrap();
    }
    for i in 0..5 {
        service
            .append_activity(t.org_b, &marked(&format!("b{i}")))
            .await
            .unwrap();
    }
    pair.wait_caught_up().await;
    // The app role: neither superuser nor owner, on both servers.
    for mode in [StatementMode::Unnamed, StatementMode::CachedPerConnection] {
        let store = store_on(
            &ReplicaPair::as_app(&pair.primary_config()),
            &ReplicaPair::as_app(&pair.standby_config()),
            mode,
            options(Duration::from_secs(10)),
        )
        .with_consistency(Consistency::Stale);
        let a = store.tenant(t.user_a);
        let page = a
            .list_activity(&ActivityFilter::default(), None, 100)
            .await
            .unwrap();
        assert!(page.entries.iter().all(|e| e.org_id == t.org_a));
        assert_eq!(
            page.entries
                .iter()
                .filter(|e| e.action == SyncAction::SyncProgress)
                .count(),
            3
        );
        let b = store.tenant(t.user_b);
        let page = b
            .list_activity(&ActivityFilter::default(), None, 100)
            .await
            .unwrap();
        assert_eq!(page.entries.len(), 5);
        assert!(page.entries.iter().all(|e| e.org_id == t.org_b));
        assert!(a
            .list_recent_syncs(10)
            .await
            .unwrap()
            .iter()
            .all(|s| s.org_id == t.org_a));
        assert_eq!(a.list_recent_syncs(10).await.unwrap().len(), 3);
        assert_eq!(a.metrics(None).await.unwrap().activity_total, 6);
        let stats = store.replica_stats().unwrap();
        assert_eq!(stats.replica_reads, 5, "{stats:?}");
        // A user with no org: refused (confirmed on the primary), never another org's rows.
        let stranger = store.tenant(Uuid::new_v4());
        let err = stranger
            .list_activity(&ActivityFilter::default(), None, 100)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Forbidden { .. }), "{err:?}");
        // B's user cannot name A's sync: an empty answer, confirmed on the primary.
        let page = b.list_activity(&by_sync("a0"), None, 100).await.unwrap();
        assert!(page.entries.is_empty());
        assert!(store.replica_stats().unwrap().fallback_empty >= 2);
    }
}

mod token_props {
    use proptest::prelude::*;
    use sync_store::ConsistencyToken;

    proptest! {
        /// Every position survives text and JSON (the header and a body).
        #[test]
        fn every_position_round_trips(lsn in any::<u64>()) {
            let t = ConsistencyToken::from_lsn(lsn);
            prop_assert_eq!(t.to_string().parse::<ConsistencyToken>(), Ok(t));
            let json = serde_json::to_string(&t).unwrap();
            prop_assert_eq!(serde_json::from_str::<ConsistencyToken>(&json).unwrap(), t);
        }

        /// Accepted means readable: any text that parses names one position,
        /// whose canonical text parses back to it; nothing else is accepted.
        #[test]
        fn accepted_text_is_canonicalised(text in "\\PC{0,20}|[0-9a-fA-F]{0,9}/[0-9a-fA-F]{0,9}") {
            match text.parse::<ConsistencyToken>() {
                Ok(t) => {
                    let (hi, lo) = text.split_once('/').unwrap();
                    let want = (u64::from_str_radix(hi, 16).unwrap() << 32) | u64::from_str_radix(lo, 16).unwrap();
                    prop_assert_eq!(t.lsn(), want);
                    prop_assert!(hi.len() <= 8 && lo.len() <= 8);
                    prop_assert_eq!(t.to_string().parse::<ConsistencyToken>(), Ok(t));
                }
                Err(_) => {
                    let ok_half = |h: &str| !h.is_empty() && h.len() <= 8 && h.bytes().all(|b| b.is_ascii_hexdigit());
                    let well_formed = text.split_once('/').is_some_and(|(h, l)| ok_half(h) && ok_half(l));
                    prop_assert!(!well_formed, "refused a well-formed token {:?}", text);
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn terminated_replica_backends_and_forged_tokens_never_fail_a_read() {
    let pair = ReplicaPair::start().await;
    let t = tenants(&pair).await;
    let mut replica = pair.standby_config();
    replica.application_name("replica_victim");
    let mut opts = options(Duration::from_secs(10));
    // Back to the replica quickly after each kill, so the attack keeps hitting.
    opts.retry_after = Duration::from_millis(10);
    let store = store_on(
        &pair.primary_config(),
        &replica,
        StatementMode::CachedPerConnection,
        opts,
    );
    store
        .service()
        .append_activity(t.org_a, &marked("victim"))
        .await
        .unwrap();
    pair.wait_caught_up().await;

    // A token far past anything the primary wrote is capped at the primary's
    // position: the replica still answers (no forced primary reads).
    let forged = store.session();
    forged.observe(ConsistencyToken::from_lsn(u64::MAX));
    let page = forged
        .service()
        .list_activity(t.org_a, &by_sync("victim"), None, 10)
        .await
        .unwrap();
    assert_eq!(page.entries.len(), 1);
    assert!(store.replica_stats().unwrap().replica_reads >= 1);

    // Replica backends killed while reads run: every read answers, intact.
    let stop = Arc::new(AtomicBool::new(false));
    let killer = {
        let stop = stop.clone();
        let standby = pair.standby_client().await;
        tokio::spawn(async move {
            let mut killed = 0i64;
            while !stop.load(Ordering::Relaxed) {
                let n: i64 = standby
                    .query_one(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                         WHERE application_name = 'replica_victim'",
                        &[],
                    )
                    .await
                    .unwrap()
                    .get(0);
                killed += n;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            killed
        })
    };
    let (mut tries, mut failures) = (0, 0);
    for _ in 0..300 {
        tries += 1;
        tokio::time::sleep(Duration::from_millis(2)).await;
        let stale = store.service().with_consistency(Consistency::Stale);
        match stale
            .list_activity(t.org_a, &by_sync("victim"), None, 10)
            .await
        {
            Ok(page) if page.entries.len() == 1 => {}
            other => {
                failures += 1;
                eprintln!("read failed or lost its row: {other:?}");
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    let killed = killer.await.unwrap();
    let stats = store.replica_stats().unwrap();
    eprintln!("tries {tries}, failures {failures}, replica backends killed {killed}, {stats:?}");
    assert_eq!(failures, 0);
    assert!(
        killed > 1,
        "the attack hit a replica backend {killed} times"
    );
    assert!(stats.replica_reads > 1, "{stats:?}");
}
