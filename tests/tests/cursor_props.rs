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
