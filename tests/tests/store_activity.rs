//! Activity log: append one / many (binary COPY), filters, keyset pagination with
//! equal timestamps, cursor tokens, unknown enum labels.
mod store_common;

use std::collections::HashSet;

use store_common::Fixture;
use sync_store::{
    ActivityCursor, ActivityFilter, Error, NewActivity, SyncAction, SyncEntityType, SyncStatus,
};
use time::macros::datetime;
use time::{Duration, OffsetDateTime};

fn entry(action: SyncAction, status: SyncStatus) -> NewActivity {
    NewActivity::new(action, status)
}

#[tokio::test]
async fn append_one_in_both_scopes() {
    let f = Fixture::new().await;
    let svc = f.store.service();
    let mut e = entry(SyncAction::RecordCreate, SyncStatus::Completed);
    e.sync_id = Some("s1".into());
    e.entity_type = Some(SyncEntityType::Invoice);
    e.record_count = 12;
    e.duration_seconds = Some(1.5);
    e.error_message = Some("none".into());
    e.user_id = Some(f.user_a);
    e.created_at = Some(datetime!(2025-11-15 12:00 UTC));
    let got = svc.append_activity(f.org_a, &e).await.unwrap();
    assert_eq!(got.org_id, f.org_a);
    assert_eq!(got.sync_id.as_deref(), Some("s1"));
    assert_eq!(got.entity_type, Some(SyncEntityType::Invoice));
    assert_eq!(
        (got.action, got.status),
        (SyncAction::RecordCreate, SyncStatus::Completed)
    );
    assert_eq!((got.record_count, got.duration_seconds), (12, Some(1.5)));
    assert_eq!(got.user_id, Some(f.user_a));
    assert_eq!(got.created_at, datetime!(2025-11-15 12:00 UTC));
    // It landed in the November 2025 partition.
    assert_eq!(f.count("sync_activity_log_2025_11").await, 1);

    let now_entry = svc
        .append_activity(f.org_a, &entry(SyncAction::SyncRetry, SyncStatus::Pending))
        .await
        .unwrap();
    assert!((OffsetDateTime::now_utc() - now_entry.created_at).abs() < Duration::minutes(5));
    assert_eq!(now_entry.entity_type, None);
    assert_eq!(f.count("sync_activity_log_future").await, 1);

    // duration_seconds is numeric: 0.1 is stored as 0.1 by both the single and the COPY path.
    let mut tenth = entry(SyncAction::SyncProgress, SyncStatus::InProgress);
    tenth.duration_seconds = Some(0.1);
    tenth.sync_id = Some("tenth".into());
    svc.append_activity(f.org_a, &tenth).await.unwrap();
    svc.append_activity_many(f.org_a, &[tenth.clone()])
        .await
        .unwrap();
    let texts: Vec<String> = f
        .admin
        .query(
            "SELECT duration_seconds::text FROM sync_activity_log WHERE sync_id = 'tenth'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(texts, vec!["0.1".to_owned(), "0.1".to_owned()]);
    f.admin
        .execute("DELETE FROM sync_activity_log WHERE sync_id = 'tenth'", &[])
        .await
        .unwrap();

    let ta = f.store.tenant(f.user_a);
    let t = ta
        .append_activity(&entry(SyncAction::PreviewDelta, SyncStatus::Completed))
        .await
        .unwrap();
    assert_eq!((t.org_id, t.user_id), (f.org_a, Some(f.user_a)));
    let mut as_other = entry(SyncAction::PreviewDelta, SyncStatus::Completed);
    as_other.user_id = Some(f.user_b);
    let before = store_common::snapshot(&f.admin).await;
    let err = ta.append_activity(&as_other).await.unwrap_err();
    assert!(matches!(err, Error::InvalidInput { .. }), "{err}");
    assert_eq!(store_common::snapshot(&f.admin).await, before);
    let page = ta
        .list_activity(&ActivityFilter::default(), None, 10)
        .await
        .unwrap();
    assert_eq!(page.entries.len(), 3);
    assert!(page.next.is_none());
    assert!(f
        .store
        .tenant(f.user_b)
        .list_activity(&ActivityFilter::default(), None, 10)
        .await
        .unwrap()
        .entries
        .is_empty());
}

#[tokio::test]
async fn append_many_via_copy_and_filters() {
    let f = Fixture::new().await;
    let svc = f.store.service();
    let base = datetime!(2026-01-10 08:00 UTC);
    let mut batch = Vec::new();
    for i in 0..300i32 {
        let mut e = entry(
            if i % 2 == 0 {
                SyncAction::RecordCreate
            } else {
                SyncAction::RecordUpdate
            },
            if i % 5 == 0 {
                SyncStatus::Failed
            } else {
                SyncStatus::Completed
            },
        );
        e.sync_id = Some(format!("s{}", i % 3));
        e.entity_type = if i % 7 == 0 {
            None
        } else {
            Some(SyncEntityType::Product)
        };
        e.record_count = i;
        e.duration_seconds = if i % 4 == 0 {
            None
        } else {
            Some(f64::from(i) / 4.0)
        };
        e.error_message = (i % 5 == 0).then(|| format!("failure {i}"));
        e.user_id = (i % 2 == 0).then_some(f.user_a);
        // Spread over three months (three partitions); a few without created_at.
        e.created_at = (i % 50 != 0)
            .then(|| base + Duration::days(i64::from(i % 90)) + Duration::seconds(i64::from(i)));
        batch.push(e);
    }
    assert_eq!(
        svc.append_activity_many(f.org_a, &batch).await.unwrap(),
        300
    );
    assert_eq!(svc.append_activity_many(f.org_a, &[]).await.unwrap(), 0);
    assert_eq!(f.count("sync_activity_log").await, 300);
    assert!(f.count("sync_activity_log_2026_01").await > 0);
    assert!(f.count("sync_activity_log_2026_02").await > 0);
    assert!(f.count("sync_activity_log_future").await > 0);

    // Every field survived COPY.
    let all = svc
        .list_activity(f.org_a, &ActivityFilter::default(), None, 1000)
        .await
        .unwrap()
        .entries;
    assert_eq!(all.len(), 300);
    for e in &all {
        let i = e.record_count;
        let want = &batch[i as usize];
        assert_eq!(e.sync_id, want.sync_id);
        assert_eq!(e.entity_type, want.entity_type);
        assert_eq!((e.action, e.status), (want.action, want.status));
        assert_eq!(e.duration_seconds, want.duration_seconds);
        assert_eq!(e.error_message, want.error_message);
        assert_eq!(e.user_id, want.user_id);
        if let Some(at) = want.created_at {
            assert_eq!(e.created_at, at);
        }
    }
    // Newest first.
    assert!(all
        .windows(2)
        .all(|w| (w[0].created_at, w[0].id) > (w[1].created_at, w[1].id)));

    let count = |filter: ActivityFilter| {
        let svc = svc.clone();
        let org = f.org_a;
        async move {
            svc.list_activity(org, &filter, None, 1000)
                .await
                .unwrap()
                .entries
        }
    };
    let failed = count(ActivityFilter {
        status: Some(SyncStatus::Failed),
        ..Default::default()
    })
    .await;
    assert_eq!(failed.len(), 60);
    assert!(failed.iter().all(|e| e.status == SyncStatus::Failed));
    let creates = count(ActivityFilter {
        action: Some(SyncAction::RecordCreate),
        ..Default::default()
    })
    .await;
    assert_eq!(creates.len(), 150);
    let untyped = count(ActivityFilter {
        entity_type: Some(SyncEntityType::Product),
        ..Default::default()
    })
    .await;
    assert_eq!(untyped.len(), 300 - 43);
    let s1 = count(ActivityFilter {
        sync_id: Some("s1".into()),
        ..Default::default()
    })
    .await;
    assert_eq!(s1.len(), 100);
    let (since, until) = (
        datetime!(2026-02-01 00:00 UTC),
        datetime!(2026-03-01 00:00 UTC),
    );
    let feb = count(ActivityFilter {
        since: Some(since),
        until: Some(until),
        ..Default::default()
    })
    .await;
    let expected = batch
        .iter()
        .filter(|e| e.created_at.is_some_and(|at| at >= since && at < until))
        .count();
    assert_eq!(feb.len(), expected);
    assert!(feb
        .iter()
        .all(|e| e.created_at >= since && e.created_at < until));
    let combined = count(ActivityFilter {
        entity_type: Some(SyncEntityType::Product),
        action: Some(SyncAction::RecordUpdate),
        status: Some(SyncStatus::Completed),
        sync_id: Some("s2".into()),
        since: Some(base),
        until: None,
    })
    .await;
    let expected = batch
        .iter()
        .filter(|e| {
            e.entity_type == Some(SyncEntityType::Product)
                && e.action == SyncAction::RecordUpdate
                && e.status == SyncStatus::Completed
                && e.sync_id.as_deref() == Some("s2")
        })
        .count();
    assert_eq!(combined.len(), expected);
    // Org B sees none of it.
    assert!(svc
        .list_activity(f.org_b, &ActivityFilter::default(), None, 10)
        .await
        .unwrap()
        .entries
        .is_empty());

    // A batch with an unknown org is refused whole.
    let err = svc
        .append_activity_many(uuid::Uuid::new_v4(), &batch[..5])
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidInput { .. }), "{err}");
    assert_eq!(err.code(), Some("23503"));
    assert_eq!(f.count("sync_activity_log").await, 300);
    // The store is still usable afterwards.
    assert_eq!(
        svc.append_activity_many(f.org_b, &batch[..5])
            .await
            .unwrap(),
        5
    );

    let m = svc.metrics(f.org_a, Some(since)).await.unwrap();
    assert_eq!(
        m.activity_total as usize,
        all.iter().filter(|e| e.created_at >= since).count()
    );
    let m_all = svc.metrics(f.org_a, None).await.unwrap();
    assert_eq!(
        (
            m_all.activity_total,
            m_all.activity_errors,
            m_all.activity_completed
        ),
        (300, 60, 240)
    );
    assert_eq!(m_all.success_rate, Some(0.8));
    assert_eq!(m_all.error_rate, Some(0.2));
}

#[tokio::test]
async fn pagination_is_stable_with_equal_timestamps() {
    let f = Fixture::new().await;
    let svc = f.store.service();
    let same = datetime!(2026-11-20 10:00 UTC);
    let mut batch: Vec<NewActivity> = (0..250)
        .map(|i| {
            let mut e = entry(SyncAction::RecordSkip, SyncStatus::Completed);
            e.record_count = i;
            e.created_at = Some(same);
            e
        })
        .collect();
    // Some newer and older neighbours.
    for (i, at) in [
        (1000, same + Duration::seconds(1)),
        (1001, same - Duration::seconds(1)),
    ] {
        let mut e = entry(SyncAction::RecordSkip, SyncStatus::Completed);
        e.record_count = i;
        e.created_at = Some(at);
        batch.push(e);
    }
    svc.append_activity_many(f.org_a, &batch).await.unwrap();

    for (scope_name, page_size) in [("service", 7u32), ("tenant", 50u32)] {
        let mut seen = Vec::new();
        let mut after: Option<ActivityCursor> = None;
        loop {
            let page = if scope_name == "service" {
                svc.list_activity(f.org_a, &ActivityFilter::default(), after, page_size)
                    .await
                    .unwrap()
            } else {
                // Round-trip the cursor through its token form, as an API would.
                let after = after.map(|c| c.to_string().parse::<ActivityCursor>().unwrap());
                f.store
                    .tenant(f.user_a)
                    .list_activity(&ActivityFilter::default(), after, page_size)
                    .await
                    .unwrap()
            };
            assert!(page.entries.len() <= page_size as usize);
            seen.extend(
                page.entries
                    .iter()
                    .map(|e| (e.created_at, e.id, e.record_count)),
            );
            match page.next {
                Some(c) => {
                    assert_eq!(page.entries.len(), page_size as usize);
                    after = Some(c);
                }
                None => break,
            }
        }
        assert_eq!(seen.len(), 252, "{scope_name}: every row exactly once");
        let ids: HashSet<_> = seen.iter().map(|s| s.1).collect();
        assert_eq!(ids.len(), 252, "{scope_name}: no duplicates");
        assert!(
            seen.windows(2).all(|w| (w[0].0, w[0].1) > (w[1].0, w[1].1)),
            "{scope_name}: strictly newest first"
        );
        assert_eq!(seen.first().unwrap().2, 1000);
        assert_eq!(seen.last().unwrap().2, 1001);
    }
    assert!("garbage".parse::<ActivityCursor>().is_err());
}

#[tokio::test]
async fn unknown_label_from_the_database_reads_as_other() {
    let f = Fixture::new().await;
    let svc = f.store.service();
    f.admin
        .batch_execute("ALTER TYPE sync_action ADD VALUE 'record_merge'")
        .await
        .unwrap();
    f.admin
        .execute(
            "INSERT INTO sync_activity_log (org_id, action, status) VALUES ($1, 'record_merge', 'completed')",
            &[&f.org_a],
        )
        .await
        .unwrap();
    // A label this build lacks reads as Other(label): listings return every
    // row (an adopted database keeps its own labels, e.g. sync_error).
    svc.append_activity(
        f.org_a,
        &entry(SyncAction::RecordCreate, SyncStatus::Completed),
    )
    .await
    .unwrap();
    let page = svc
        .list_activity(f.org_a, &ActivityFilter::default(), None, 10)
        .await
        .unwrap();
    assert_eq!(page.entries.len(), 2, "{page:?}");
    let actions: Vec<SyncAction> = page.entries.iter().map(|e| e.action).collect();
    assert!(actions.contains(&SyncAction::RecordCreate), "{actions:?}");
    assert!(
        actions.contains(&SyncAction::Other("record_merge")),
        "{actions:?}"
    );
    assert_eq!(SyncAction::Other("record_merge").as_str(), "record_merge");
    assert!(!SyncAction::Other("record_merge").is_known());
    f.admin
        .batch_execute("ALTER TYPE sync_entity_type ADD VALUE 'warehouse'")
        .await
        .unwrap();
    f.admin
        .execute(
            "INSERT INTO sync_progress (org_id, sync_id, entity_type) VALUES ($1, 'w', 'warehouse')",
            &[&f.org_a],
        )
        .await
        .unwrap();
    let active = svc.list_active_syncs(f.org_a).await.unwrap();
    assert_eq!(active.len(), 1);
    assert_eq!(active[0].entity_type, SyncEntityType::Other("warehouse"));
    let got = svc.get_sync(f.org_a, "w").await.unwrap().expect("row w");
    assert_eq!(got.entity_type.as_str(), "warehouse");
    // Caller input stays strict.
    assert!("warehouse".parse::<SyncEntityType>().is_err());
    // The bulk path still works with the extra label in the database.
    let n = svc
        .append_activity_many(
            f.org_a,
            &[entry(SyncAction::RecordCreate, SyncStatus::Completed)],
        )
        .await
        .unwrap();
    assert_eq!(n, 1);
    assert!("record_merge".parse::<SyncAction>().is_err());
    // FromSql reads known labels, and an unknown one as Other(label), even
    // though sync_action now has a label this build lacks.
    let row = f
        .admin
        .query_one(
            "SELECT 'sync_fail'::sync_action, 'completed_with_errors'::sync_status_type, \
                    'record_merge'::sync_action",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, SyncAction>(0), SyncAction::SyncFail);
    assert_eq!(
        row.get::<_, SyncAction>(2),
        SyncAction::Other("record_merge")
    );
    assert_eq!(row.get::<_, SyncStatus>(1), SyncStatus::CompletedWithErrors);
    let row = f
        .admin
        .query_one(
            "SELECT count(*) FROM sync_activity_log WHERE status = $1",
            &[&SyncStatus::Completed],
        )
        .await
        .unwrap();
    assert_eq!(
        row.get::<_, i64>(0),
        3,
        "record_merge, record_create, the bulk one"
    );
}

#[test]
fn enum_labels_round_trip() {
    for a in SyncAction::ALL {
        assert_eq!(a.as_str().parse::<SyncAction>().unwrap(), *a);
        assert_eq!(
            serde_json::to_value(a).unwrap(),
            serde_json::json!(a.as_str())
        );
        assert_eq!(a.to_string(), a.as_str());
    }
    for s in SyncStatus::ALL {
        assert_eq!(s.as_str().parse::<SyncStatus>().unwrap(), *s);
    }
    for e in SyncEntityType::ALL {
        assert_eq!(e.as_str().parse::<SyncEntityType>().unwrap(), *e);
    }
    for t in sync_store::SyncType::ALL {
        assert_eq!(t.as_str().parse::<sync_store::SyncType>().unwrap(), *t);
    }
    let err = "bogus".parse::<SyncStatus>().unwrap_err();
    assert_eq!(
        (err.type_name, err.label.as_str()),
        ("sync_status_type", "bogus")
    );
}
