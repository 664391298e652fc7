//! Property tests of the store's one input invariant, against the real
//! database, over every write function in both scopes:
//!
//! **an input is either refused with a typed `InvalidInput` and nothing
//! written, or every read function returns it intact afterwards.**
//!
//! "Intact" means equal, with two normalizations PostgreSQL makes and the
//! crate documents: timestamps keep whole microseconds (truncated) and are read
//! back in UTC; JSON numbers are compared by value (jsonb keeps numbers as
//! decimals, so the float `1e16` comes back as the integer `10000000000000000`).
//!
//! Inputs are generated around every bound (JSON depth and NUL characters,
//! far and offset timestamps, tiny/huge/non-finite durations, negative and
//! overflowing counts, long and NUL-bearing text); each run is 64 cases per
//! property (`SYNC_PROPTEST_CASES` for more).
mod store_common;

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{Map, Number, Value};
use store_common::{snapshot, Fixture};
use sync_store::{
    ActivityEntry, ActivityFilter, Error, NewActivity, ProgressDelta, PutPreview, StartSync,
    SyncAction, SyncEntityType, SyncStatus, SyncType,
};
use time::{Duration, OffsetDateTime, UtcOffset};
use tokio::runtime::Runtime;

const CASES: u32 = 64;

/// `SYNC_PROPTEST_CASES` raises the count for a longer local run.
fn runner() -> TestRunner {
    let cases = std::env::var("SYNC_PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(CASES);
    TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    })
}

static SEQ: AtomicUsize = AtomicUsize::new(0);
fn seq() -> usize {
    SEQ.fetch_add(1, Ordering::Relaxed)
}

// ---------------------------------------------------------------- strategies

fn text(max: usize) -> impl Strategy<Value = String> {
    prop_oneof![
        18 => proptest::collection::vec(any::<char>(), 0..8).prop_map(|c| c.into_iter().collect()),
        1 => Just("a\u{0}b".to_owned()),
        1 => (max.saturating_sub(1)..=max + 1).prop_map(|n| "é".repeat(n)),
    ]
}

fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| Value::Number(Number::from_f64(f).unwrap())),
        prop::sample::select(vec![1e16, -1e17, 1.5e300, 5e-324, -0.0, 0.1, 1e-7])
            .prop_map(|f| Value::Number(Number::from_f64(f).unwrap())),
    ]
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        number(),
        text(4).prop_map(Value::String),
    ]
}

fn tree() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map(text(4), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// `v` wrapped in `depth` arrays / objects.
fn wrap(mut v: Value, depth: usize, arrays: bool) -> Value {
    for _ in 0..depth {
        v = if arrays {
            Value::Array(vec![v])
        } else {
            let mut m = Map::new();
            m.insert("k".to_owned(), v);
            Value::Object(m)
        };
    }
    v
}

/// Any JSON, sometimes nested right around the depth bounds (64 accepted,
/// 127 read by serde_json).
fn json() -> impl Strategy<Value = Value> {
    prop_oneof![
        6 => tree(),
        1 => (tree(), 60usize..=70, any::<bool>()).prop_map(|(v, d, a)| wrap(v, d, a)),
        2 => (tree(), 124usize..=140, any::<bool>()).prop_map(|(v, d, a)| wrap(v, d, a)),
    ]
}

/// A metadata object (sometimes not an object).
fn metadata() -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        1 => Just(None),
        4 => (json(), text(4)).prop_map(|(v, k)| {
            let mut m = Map::new();
            m.insert(k, v);
            Some(Value::Object(m))
        }),
        1 => json().prop_map(Some),
    ]
}

/// Timestamps around now (readable previews), anywhere `time` can hold, and
/// at the bounds; any offset, any nanoseconds.
fn timestamp() -> impl Strategy<Value = OffsetDateTime> {
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let instant = prop_oneof![
        3 => now - 600..now + 600,
        2 => OffsetDateTime::new_utc(time::Date::MIN, time::Time::MIDNIGHT).unix_timestamp()
            ..OffsetDateTime::new_utc(time::Date::MAX, time::Time::MIDNIGHT).unix_timestamp(),
        4 => prop::sample::select(vec![
            253_402_300_800i64 - 1800, // 9999-12-31T23:30Z
            253_402_300_800 - 1800,
            253_402_300_800 - 86_400, // 9999-12-31T00:00Z
            253_370_764_800 - 1,       // just before MAX_TIMESTAMP
            253_370_764_800,           // MAX_TIMESTAMP
            -62_135_596_800 - 1,       // just before MIN_TIMESTAMP
            -62_135_596_800,           // MIN_TIMESTAMP
        ]),
    ];
    (instant, 0u32..1_000_000_000, -86_399i32..=86_399).prop_filter_map(
        "representable",
        |(secs, nanos, offset)| {
            let t = OffsetDateTime::from_unix_timestamp(secs).ok()?
                + Duration::nanoseconds(i64::from(nanos));
            // Any offset, even one that puts the local time out of range:
            // built field by field, without converting.
            let off = UtcOffset::from_whole_seconds(offset).ok()?;
            let local = t.checked_to_offset(off).unwrap_or(t);
            Some(local.replace_offset(off))
        },
    )
}

fn i32s() -> impl Strategy<Value = i32> {
    prop_oneof![
        3 => 0i32..1000,
        1 => any::<i32>(),
        1 => prop::sample::select(vec![i32::MAX, i32::MIN, -1, 0]),
    ]
}

fn duration() -> impl Strategy<Value = Option<f64>> {
    prop_oneof![
        1 => Just(None),
        2 => (0.0f64..100_000.0).prop_map(Some),
        2 => any::<f64>().prop_map(Some),
        1 => prop::sample::select(vec![1e-30, 1e15, 1e16, -0.0, f64::NAN, f64::INFINITY, 1e-20])
            .prop_map(Some),
    ]
}

// ------------------------------------------------------------------ checking

/// JSON equality, numbers compared by value.
fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            if x.is_f64() || y.is_f64() {
                x.as_f64() == y.as_f64()
            } else {
                let int = |n: &Number| {
                    n.as_i64()
                        .map(i128::from)
                        .or_else(|| n.as_u64().map(i128::from))
                };
                int(x) == int(y)
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| json_eq(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}

/// What PostgreSQL keeps of a timestamp: whole microseconds, in UTC.
fn micros(t: OffsetDateTime) -> OffsetDateTime {
    let t = t.to_offset(UtcOffset::UTC);
    t - Duration::nanoseconds(i64::from(t.nanosecond() % 1000))
}

fn fail(msg: String) -> TestCaseError {
    TestCaseError::fail(msg)
}

/// The refusal half of the invariant: a typed InvalidInput and no table changed.
async fn refused<T: std::fmt::Debug>(
    f: &Fixture,
    before: &str,
    what: &str,
    r: &sync_store::Result<T>,
) -> Result<(), TestCaseError> {
    match r {
        Err(Error::InvalidInput { field, reason, .. }) => {
            if field.is_empty() || reason.is_empty() {
                return Err(fail(format!("{what}: InvalidInput without field/reason")));
            }
        }
        other => {
            return Err(fail(format!(
                "{what}: expected Ok or InvalidInput, got {other:?}"
            )))
        }
    }
    if snapshot(&f.admin).await != before {
        return Err(fail(format!("{what}: refused but something was written")));
    }
    Ok(())
}

struct Env {
    rt: Runtime,
    f: Fixture,
}

fn env() -> Env {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let f = rt.block_on(Fixture::new());
    Env { rt, f }
}

// --------------------------------------------------------------- properties

#[test]
fn put_preview_accepted_means_readable() {
    let Env { rt, f } = env();
    let strategy = (
        any::<bool>(),
        text(255),
        text(218),
        json(),
        proptest::option::weighted(0.8, timestamp()),
        proptest::option::of(
            prop_oneof![-10i64..10, 0i64..3_000_000_000_000].prop_map(Duration::microseconds),
        ),
    );
    let (ok, refused_n) = (Cell::new(0), Cell::new(0));
    runner()
        .run(&strategy, |(tenant, sync_id, key, delta, at, ttl)| {
            rt.block_on(async {
                let n = seq();
                let input = PutPreview {
                    sync_type: SyncType::Custom,
                    sync_id: format!("{n}{sync_id}"),
                    cache_key: format!("{n}{key}"),
                    delta_json: delta.clone(),
                    computed_at: at,
                    ttl,
                    computed_by: None,
                };
                let svc = f.store.service();
                let ta = f.store.tenant(f.user_a);
                let before = snapshot(&f.admin).await;
                let r = if tenant {
                    ta.put_preview(&input).await
                } else {
                    svc.put_preview(f.org_a, &input).await
                };
                let Ok(e) = r else {
                    refused_n.set(refused_n.get() + 1);
                    return refused(&f, &before, "put_preview", &r).await;
                };
                ok.set(ok.get() + 1);
                let intact = e.sync_id == input.sync_id
                    && e.cache_key == input.cache_key
                    && json_eq(&e.delta_json, &delta)
                    && at.is_none_or(|at| e.computed_at == micros(at))
                    && e.expires_at == e.computed_at + ttl.unwrap_or(Duration::hours(1));
                if !intact {
                    return Err(fail(format!("returned row differs: {e:?} from {input:?}")));
                }
                let by_key = svc.get_preview_by_key(f.org_a, &input.cache_key).await;
                let by_sync = ta.get_preview_by_sync_id(&input.sync_id).await;
                let live = e.expires_at > OffsetDateTime::now_utc() + Duration::minutes(1);
                let expired = e.expires_at <= OffsetDateTime::now_utc();
                for (how, got) in [("by key", by_key), ("by sync id", by_sync)] {
                    match got {
                        Ok(Some(g)) if live && g == e => {}
                        Ok(None) if expired => {}
                        Ok(_) if !live && !expired => {}
                        other => {
                            return Err(fail(format!(
                                "read {how} of an accepted preview: {other:?}, wrote {e:?}"
                            )))
                        }
                    }
                }
                Ok(())
            })
        })
        .unwrap();
    let (ok, refused_n) = (ok.get(), refused_n.get());
    eprintln!("put_preview: {ok} accepted, {refused_n} refused");
    assert!(ok > 0 && refused_n > 0, "both halves exercised");
}

/// Every read of the org returns the sync intact (listings, get, by job).
async fn progress_readable(
    f: &Fixture,
    expected: &sync_store::SyncProgress,
) -> Result<(), TestCaseError> {
    let svc = f.store.service();
    let ta = f.store.tenant(f.user_a);
    let org = f.org_a;
    let same = |p: &sync_store::SyncProgress| {
        p.sync_id == expected.sync_id
            && json_eq(&p.metadata, &expected.metadata)
            && p.processed_count == expected.processed_count
            && p.failed_count == expected.failed_count
            && p.total_items == expected.total_items
            && p.current_item == expected.current_item
            && p.batch_number == expected.batch_number
            && p.completed_at == expected.completed_at
            && p.source_system == expected.source_system
            && p.job_id == expected.job_id
    };
    let got = svc.get_sync(org, &expected.sync_id).await;
    if !matches!(&got, Ok(Some(p)) if same(p)) {
        return Err(fail(format!("get_sync: {got:?}, expected {expected:?}")));
    }
    let got = ta.get_sync(&expected.sync_id).await;
    if !matches!(&got, Ok(Some(p)) if same(p)) {
        return Err(fail(format!("tenant get_sync: {got:?}")));
    }
    let active = svc.list_active_syncs(org).await;
    let found = active
        .as_ref()
        .map(|v| v.iter().any(same))
        .map_err(|e| fail(format!("list_active_syncs: {e:?}")))?;
    if found != expected.completed_at.is_none() {
        return Err(fail(format!("list_active_syncs: found = {found}")));
    }
    let recent = ta
        .list_recent_syncs(1000)
        .await
        .map_err(|e| fail(format!("list_recent_syncs: {e:?}")))?;
    if !recent.iter().any(same) {
        return Err(fail("list_recent_syncs misses it".to_owned()));
    }
    if let Some(job) = &expected.job_id {
        if !job.is_empty() {
            let by_job = svc
                .find_syncs_by_job(org, job)
                .await
                .map_err(|e| fail(format!("find_syncs_by_job: {e:?}")))?;
            if !by_job.iter().any(same) {
                return Err(fail("find_syncs_by_job misses it".to_owned()));
            }
        }
    }
    Ok(())
}

#[derive(Debug, Clone)]
enum Step {
    Tick(ProgressDelta),
    Total(Option<i32>),
    Complete,
    Fail(String),
    Cancel(Option<String>),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (i32s(), i32s(), proptest::option::of(i32s()), proptest::option::of(i32s()))
            .prop_map(|(processed, failed, current_item, batch_number)| Step::Tick(ProgressDelta {
                processed,
                failed,
                current_item,
                batch_number,
            })),
        1 => proptest::option::of(i32s()).prop_map(Step::Total),
        1 => Just(Step::Complete),
        1 => text(8).prop_map(Step::Fail),
        1 => proptest::option::of(text(8)).prop_map(Step::Cancel),
    ]
}

#[test]
fn progress_writes_accepted_means_readable() {
    let Env { rt, f } = env();
    let strategy = (
        any::<bool>(),
        text(255),
        proptest::option::of(i32s()),
        proptest::option::of(text(50)),
        proptest::option::of(text(255)),
        metadata(),
        proptest::collection::vec(step(), 1..4),
    );
    let (ok, refused_n) = (Cell::new(0), Cell::new(0));
    runner()
        .run(
            &strategy,
            |(tenant, sync_id, total, source, job, meta, steps)| {
                rt.block_on(async {
                    let n = seq();
                    let svc = f.store.service();
                    let ta = f.store.tenant(f.user_a);
                    let input = StartSync {
                        sync_id: format!("{n}{sync_id}"),
                        entity_type: SyncEntityType::Order,
                        total_items: total,
                        source_system: source,
                        job_id: job,
                        metadata: meta.clone(),
                        initiated_by: None,
                    };
                    let before = snapshot(&f.admin).await;
                    let r = if tenant {
                        ta.start_sync(&input).await
                    } else {
                        svc.start_sync(f.org_a, &input).await
                    };
                    let Ok(mut current) = r else {
                        refused_n.set(refused_n.get() + 1);
                        return refused(&f, &before, "start_sync", &r).await;
                    };
                    ok.set(ok.get() + 1);
                    let meta_in = meta.unwrap_or_else(|| Value::Object(Map::new()));
                    if !json_eq(&current.metadata, &meta_in) {
                        return Err(fail(format!("start_sync returned {:?}", current.metadata)));
                    }
                    progress_readable(&f, &current).await?;
                    let id = current.sync_id.clone();
                    for s in steps {
                        let before = snapshot(&f.admin).await;
                        let r = match &s {
                            Step::Tick(d) => match svc.report_progress(f.org_a, &id, d).await {
                                Ok(_) => svc.get_sync(f.org_a, &id).await.map(Option::unwrap),
                                Err(e) => Err(e),
                            },
                            Step::Total(t) => ta.set_total(&id, *t).await,
                            Step::Complete => svc.complete_sync(f.org_a, &id).await,
                            Step::Fail(m) => ta.fail_sync(&id, m).await,
                            Step::Cancel(m) => svc.cancel_sync(f.org_a, &id, m.as_deref()).await,
                        };
                        match r {
                            Ok(p) => {
                                ok.set(ok.get() + 1);
                                if let Step::Tick(d) = &s {
                                    let want = current.processed_count.checked_add(d.processed);
                                    if Some(p.processed_count) != want {
                                        return Err(fail(format!("tick lost: {p:?}")));
                                    }
                                }
                                if let Step::Fail(m) = &s {
                                    if p.outcome_error_message() != Some(m.as_str()) {
                                        return Err(fail(format!("fail message: {p:?}")));
                                    }
                                }
                                current = p;
                                progress_readable(&f, &current).await?;
                            }
                            Err(Error::SyncFinished { .. }) if current.completed_at.is_some() => {
                                if snapshot(&f.admin).await != before {
                                    return Err(fail("finished sync changed".to_owned()));
                                }
                            }
                            Err(_) => {
                                refused_n.set(refused_n.get() + 1);
                                refused(&f, &before, &format!("{s:?}"), &r).await?;
                                progress_readable(&f, &current).await?;
                            }
                        }
                    }
                    Ok(())
                })
            },
        )
        .unwrap();
    let (ok, refused_n) = (ok.get(), refused_n.get());
    eprintln!("progress writes: {ok} accepted, {refused_n} refused");
    assert!(ok > 0 && refused_n > 0, "both halves exercised");
}

fn new_activity() -> impl Strategy<Value = NewActivity> {
    (
        proptest::option::of(text(255)),
        i32s(),
        duration(),
        proptest::option::of(text(8)),
        proptest::option::weighted(0.8, timestamp()),
        proptest::option::weighted(0.5, any::<u128>().prop_map(uuid::Uuid::from_u128)),
    )
        .prop_map(
            |(sync_id, record_count, duration, message, at, id)| NewActivity {
                id,
                sync_id,
                entity_type: Some(SyncEntityType::Coupon),
                action: SyncAction::RecordUpdate,
                status: SyncStatus::Completed,
                record_count,
                duration_seconds: duration,
                error_message: message,
                user_id: None,
                created_at: at,
            },
        )
}

fn activity_same(e: &ActivityEntry, a: &NewActivity, sync_id: &str) -> bool {
    e.sync_id.as_deref() == Some(sync_id)
        && e.record_count == a.record_count
        && e.duration_seconds == a.duration_seconds
        && e.error_message == a.error_message
        && a.created_at.is_none_or(|t| e.created_at == micros(t))
}

/// The entries of sync `sync_id`, through both scopes' listings.
async fn listed(f: &Fixture, sync_id: &str) -> Result<Vec<ActivityEntry>, TestCaseError> {
    let filter = ActivityFilter {
        sync_id: Some(sync_id.to_owned()),
        ..Default::default()
    };
    let svc = f
        .store
        .service()
        .list_activity(f.org_a, &filter, None, 1000)
        .await
        .map_err(|e| fail(format!("list_activity: {e:?}")))?;
    let ten = f
        .store
        .tenant(f.user_a)
        .list_activity(&filter, None, 1000)
        .await
        .map_err(|e| fail(format!("tenant list_activity: {e:?}")))?;
    if svc.entries != ten.entries {
        return Err(fail("scopes disagree".to_owned()));
    }
    // and the whole org's first page still decodes
    f.store
        .service()
        .list_activity(f.org_a, &ActivityFilter::default(), None, 1000)
        .await
        .map_err(|e| fail(format!("org listing: {e:?}")))?;
    Ok(svc.entries)
}

#[test]
fn activity_writes_accepted_means_readable() {
    let Env { rt, f } = env();
    let strategy = (0u8..3, proptest::collection::vec(new_activity(), 1..4));
    let (ok, refused_n) = (Cell::new(0), Cell::new(0));
    runner()
        .run(&strategy, |(how, entries)| {
            rt.block_on(async {
                let n = seq();
                // each case lists its own sync id; the generated one is kept
                // for the validator (its length / NUL), prefixed to be unique
                let entries: Vec<NewActivity> = entries
                    .into_iter()
                    .enumerate()
                    .map(|(i, mut e)| {
                        e.sync_id = Some(format!("{n}-{i}{}", e.sync_id.as_deref().unwrap_or("")));
                        e
                    })
                    .collect();
                let svc = f.store.service();
                let before = snapshot(&f.admin).await;
                let r: sync_store::Result<()> = match how {
                    0 => svc.append_activity(f.org_a, &entries[0]).await.map(|_| ()),
                    1 => {
                        let mut e = entries[0].clone();
                        e.created_at = None; // a tenant never backdates
                        let r = f.store.tenant(f.user_a).append_activity(&e).await;
                        let ok = r.map(|_| ());
                        if ok.is_ok() {
                            let sid = e.sync_id.clone().unwrap();
                            let got = listed(&f, &sid).await?;
                            if got.len() != 1 || !activity_same(&got[0], &e, &sid) {
                                return Err(fail(format!("tenant append: {got:?} vs {e:?}")));
                            }
                        }
                        ok
                    }
                    _ => svc
                        .append_activity_many(f.org_a, &entries)
                        .await
                        .map(|_| ()),
                };
                if r.is_err() {
                    refused_n.set(refused_n.get() + 1);
                    return refused(&f, &before, "append", &r).await;
                }
                ok.set(ok.get() + 1);
                let written = match how {
                    0 => &entries[..1],
                    1 => return Ok(()),
                    _ => &entries[..],
                };
                for e in written {
                    let sid = e.sync_id.clone().unwrap();
                    let got = listed(&f, &sid).await?;
                    if got.len() != 1 || !activity_same(&got[0], e, &sid) {
                        return Err(fail(format!("listed {got:?}, wrote {e:?}")));
                    }
                }
                Ok(())
            })
        })
        .unwrap();
    let (ok, refused_n) = (ok.get(), refused_n.get());
    eprintln!("activity writes: {ok} accepted, {refused_n} refused");
    assert!(ok > 0 && refused_n > 0, "both halves exercised");
}

/// A reporter's checkpoint (migration 0027): refused at the call with a typed
/// error (nothing flushed), or read back intact by a resumed reporter.
#[test]
fn reporter_checkpoint_accepted_means_readable() {
    let Env { rt, f } = env();
    let big = (sync_store::validate::MAX_CHECKPOINT_BYTES - 20
        ..sync_store::validate::MAX_CHECKPOINT_BYTES + 5)
        .prop_map(|n| serde_json::json!({ "s": "x".repeat(n) }));
    let strategy = prop_oneof![8 => json(), 1 => big];
    let (ok, refused_n) = (Cell::new(0), Cell::new(0));
    runner()
        .run(&strategy, |checkpoint| {
            rt.block_on(async {
                let sync_id = format!("cp-{}", seq());
                let svc = f.store.service();
                svc.start_sync(
                    f.org_a,
                    &sync_store::StartSync::new(&sync_id, sync_store::SyncEntityType::Product),
                )
                .await
                .unwrap();
                let r = svc
                    .reporter(f.org_a, &sync_id, sync_store::ReporterConfig::default())
                    .await
                    .unwrap();
                r.inc(1, 0);
                let accepted = r.checkpoint(checkpoint.clone());
                r.close().await.map_err(|e| fail(format!("close: {e}")))?;
                let again = svc
                    .resume_reporter(f.org_a, &sync_id, sync_store::ReporterConfig::default())
                    .await
                    .map_err(|e| fail(format!("resume: {e}")))?;
                let read = again.attached().checkpoint.clone();
                let processed = again.attached().progress.processed_count;
                again.close().await.unwrap();
                match accepted {
                    Ok(()) => {
                        ok.set(ok.get() + 1);
                        let read = read.ok_or_else(|| fail("accepted, not stored".into()))?;
                        if !json_eq(&read, &checkpoint) {
                            return Err(fail(format!("wrote {checkpoint}, read {read}")));
                        }
                        if processed != 1 {
                            return Err(fail("counts at the checkpoint not kept".into()));
                        }
                    }
                    Err(Error::InvalidInput { .. }) => {
                        refused_n.set(refused_n.get() + 1);
                        if read.is_some() {
                            return Err(fail("refused, but a checkpoint was stored".into()));
                        }
                    }
                    Err(e) => return Err(fail(format!("expected Ok or InvalidInput, got {e}"))),
                }
                Ok(())
            })
        })
        .unwrap();
    eprintln!(
        "reporter checkpoints: {} accepted and read back, {} refused",
        ok.get(),
        refused_n.get()
    );
    assert!(ok.get() > 0 && refused_n.get() > 0, "both halves exercised");
}
