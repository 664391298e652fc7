//! `ActivityCursor` tokens: parsing never panics (no unchecked arithmetic on
//! hostile input) and every cursor read from the database round-trips.

use proptest::prelude::*;
use sync_store::{ActivityCursor, BadCursor};
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

/// Tokens shaped like cursors, with numbers far beyond any timestamp.
fn token() -> impl Strategy<Value = String> {
    let number = prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        any::<i128>().prop_map(|n| n.to_string()),
        any::<u128>().prop_map(|n| n.to_string()),
        "[+-]?[0-9]{0,60}",
    ];
    let id = prop_oneof![
        any::<u128>().prop_map(|u| Uuid::from_u128(u).simple().to_string()),
        any::<u128>().prop_map(|u| Uuid::from_u128(u).to_string()),
        ".{0,40}",
    ];
    prop_oneof![
        (number, id).prop_map(|(n, i)| format!("{n}.{i}")),
        ".{0,80}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn from_str_never_panics(s in token()) {
        match s.parse::<ActivityCursor>() {
            Ok(c) => {
                // what parses renders to a token that parses to the same cursor
                prop_assert_eq!(c.to_string().parse::<ActivityCursor>(), Ok(c));
            }
            Err(BadCursor { token }) => prop_assert_eq!(token, s),
        }
    }

    #[test]
    fn roundtrips(micros in (OffsetDateTime::new_utc(time::Date::MIN, time::Time::MIDNIGHT)
                              .unix_timestamp() * 1_000_000)
                  ..(OffsetDateTime::new_utc(time::Date::MAX, time::Time::MIDNIGHT)
                              .unix_timestamp() * 1_000_000),
                  id in any::<u128>()) {
        let c = ActivityCursor {
            created_at: OffsetDateTime::UNIX_EPOCH + Duration::microseconds(micros),
            id: Uuid::from_u128(id),
        };
        prop_assert_eq!(c.to_string().parse::<ActivityCursor>(), Ok(c));
    }
}

#[test]
fn overflowing_micros_are_a_bad_cursor() {
    for t in [
        format!("{}.{}", i128::MAX, Uuid::nil().simple()),
        format!("{}.{}", i128::MIN, Uuid::nil().simple()),
        format!("{}.{}", i64::MAX, Uuid::nil().simple()),
        format!(
            "170141183460469231731687303715884106.{}",
            Uuid::nil().simple()
        ),
    ] {
        assert_eq!(
            t.parse::<ActivityCursor>(),
            Err(BadCursor { token: t.clone() })
        );
    }
}

// ---------------------------------------------------------------------------
// Paging over many partitions: the windowed listing (newest months first)
// returns exactly what one ordered read returns, page after page.
// ---------------------------------------------------------------------------

mod store_common;

use proptest::test_runner::{Config as RunnerConfig, TestRunner};
use sync_store::{ActivityFilter, StatementMode, Store, SyncStatus};

/// 30 older monthly partitions (2023-05 … 2025-10) beside 0024's, the months
/// `ensure` adds through 2027-02 and the catch-all; rows of both orgs in many
/// months (some empty), ties on created_at, rows on month boundaries, rows in
/// the catch-all far in the future.
async fn many_partitions(f: &store_common::Fixture) {
    let mut admin = f.db.client().await;
    let opts = sync_migrations::partitions::PartitionOptions::default()
        .with_now(time::macros::datetime!(2026-11-15 12:00 UTC));
    sync_migrations::partitions::ensure_partitions(&mut admin, 3, &opts, |_| {})
        .await
        .unwrap();
    admin
        .batch_execute(
            "DO $$ DECLARE lo timestamptz; BEGIN
               FOR k IN 1..30 LOOP
                 lo := '2025-11-01 00:00+00'::timestamptz - k * interval '1 month';
                 EXECUTE format('CREATE TABLE %I PARTITION OF sync_activity_log FOR VALUES FROM (%L) TO (%L)',
                   'sync_activity_log_' || to_char(lo AT TIME ZONE 'UTC', 'YYYY_MM'), lo, lo + interval '1 month');
               END LOOP; END $$",
        )
        .await
        .unwrap();
    for (org, salt) in [(f.org_a, 0), (f.org_b, 1)] {
        admin
            .execute(
                "INSERT INTO sync_activity_log (org_id, action, status, created_at) \
                 SELECT $1, 'record_update', \
                        CASE WHEN g % 4 = 0 THEN 'failed' ELSE 'completed' END::sync_status_type, \
                        CASE g % 5 WHEN 0 THEN m \
                                   WHEN 1 THEN m + interval '1 month' - interval '1 microsecond' \
                                   ELSE m + (g % 3) * interval '1 day' END \
                   FROM generate_series('2023-05-01 00:00+00'::timestamptz, \
                                        '2027-02-01 00:00+00'::timestamptz, interval '1 month') m, \
                        generate_series(0, 7) g \
                  WHERE (extract(month FROM m AT TIME ZONE 'UTC')::int * 7 + g + $2) % 11 < \
                        (extract(year FROM m AT TIME ZONE 'UTC')::int % 3) * 3",
                &[&org, &salt],
            )
            .await
            .unwrap();
        admin
            .execute(
                "INSERT INTO sync_activity_log (org_id, action, status, created_at) \
                 SELECT $1, 'record_update', 'completed', t \
                   FROM unnest(ARRAY['2030-06-01 00:00+00', '2030-06-01 00:00+00', \
                                     '2031-01-01 12:00+00', '2027-03-01 00:00+00']::timestamptz[]) t",
                &[&org],
            )
            .await
            .unwrap();
    }
    admin
        .batch_execute("ANALYZE sync_activity_log")
        .await
        .unwrap();
}

/// The ids of `org`'s rows matching the filter, newest first, by one query.
async fn expected(admin: &tokio_postgres::Client, org: Uuid, filter: &ActivityFilter) -> Vec<Uuid> {
    admin
        .query(
            "SELECT id FROM sync_activity_log WHERE org_id = $1 \
               AND ($2::timestamptz IS NULL OR created_at >= $2) \
               AND ($3::timestamptz IS NULL OR created_at < $3) \
               AND ($4::text IS NULL OR status::text = $4) \
             ORDER BY created_at DESC, id DESC",
            &[
                &org,
                &filter.since,
                &filter.until,
                &filter.status.map(|s| s.as_str()),
            ],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_over_many_partitions_equal_one_ordered_read() {
    let f = store_common::Fixture::new().await;
    many_partitions(&f).await;
    let partitions: i64 = f
        .admin
        .query_one(
            "SELECT count(*) FROM pg_inherits WHERE inhparent = 'sync_activity_log'::regclass",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(partitions >= 47, "{partitions} partitions");
    let (_, login) = f.db.login_role("pages").await;
    let stores = [
        Store::new(sync_tests::pool_for(&login)),
        Store::with_statement_mode(
            sync_tests::pool_for(&login),
            StatementMode::CachedPerConnection,
        ),
        Store::new(f.db.pool()),
        Store::with_statement_mode(f.db.pool(), StatementMode::CachedPerConnection),
    ];
    // Instants around month edges, the clock, and far ends.
    let instants: Vec<OffsetDateTime> = [
        "2023-04-01T00:00:00Z",
        "2024-02-01T00:00:00Z",
        "2025-10-31T23:59:59.999999Z",
        "2025-11-01T00:00:00Z",
        "2026-03-01T00:00:00Z",
        "2026-10-01T00:00:00Z",
        "2027-03-01T00:00:00Z",
        "2030-06-01T00:00:00Z",
    ]
    .iter()
    .map(|s| OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).unwrap())
    .chain([OffsetDateTime::now_utc()])
    .collect();
    let strategy = (
        prop_oneof![1u32..=6, 7u32..=60, Just(100u32)],
        0usize..4,
        proptest::option::of(0..instants.len()),
        proptest::option::of(0..instants.len()),
        any::<bool>(),
    );
    let handle = tokio::runtime::Handle::current();
    let mut runner = TestRunner::new(RunnerConfig {
        cases: 40,
        failure_persistence: None,
        ..RunnerConfig::default()
    });
    let (f, stores, instants) = (&f, &stores, &instants);
    tokio::task::block_in_place(|| {
        runner
            .run(&strategy, |(limit, which, since, until, failed)| {
                handle.block_on(async {
                    let filter = ActivityFilter {
                        since: since.map(|i| instants[i]),
                        until: until.map(|i| instants[i]),
                        status: failed.then_some(SyncStatus::Failed),
                        ..Default::default()
                    };
                    let want = expected(&f.admin, f.org_a, &filter).await;
                    let mut got = Vec::new();
                    let mut after = None;
                    let store = &stores[which];
                    // Tenant scope on the login role's stores (0, 1), service
                    // scope on the owner's (2, 3); unnamed and cached each.
                    let tenant = which < 2;
                    for _ in 0..=want.len() + 1 {
                        let page = if tenant {
                            store
                                .tenant(f.user_a)
                                .list_activity(&filter, after, limit)
                                .await
                        } else {
                            store
                                .service()
                                .list_activity(f.org_a, &filter, after, limit)
                                .await
                        }
                        .unwrap();
                        prop_assert!(page.entries.len() <= limit as usize);
                        got.extend(page.entries.iter().map(|e| e.id));
                        after = page.next;
                        if after.is_none() {
                            break;
                        }
                        prop_assert_eq!(
                            page.entries.len(),
                            limit as usize,
                            "a short page with a next cursor"
                        );
                    }
                    prop_assert_eq!(after, None);
                    prop_assert_eq!(got, want);
                    Ok(())
                })
            })
            .unwrap();
    });
}
