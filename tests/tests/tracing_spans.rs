//! One `tracing` span per store operation, with its fields, and no secrets —
//! captured by a real subscriber (a `tracing-subscriber` layer recording every
//! span's fields and every event).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use sync_migrations::partitions::{ensure_partitions, PartitionOptions};
use sync_migrations::MigrateOptions;
use sync_store::{
    ActivityFilter, NewActivity, ProgressDelta, PutPreview, StartSync, Store, SyncAction,
    SyncEntityType, SyncStatus, SyncType,
};
use sync_tests::TestDb;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::Layer;
use uuid::Uuid;

/// A closed span: its name and fields as text.
#[derive(Debug, Clone)]
struct Captured {
    name: &'static str,
    fields: BTreeMap<String, String>,
}

impl Captured {
    fn get(&self, k: &str) -> Option<&str> {
        self.fields.get(k).map(String::as_str)
    }
}

#[derive(Default)]
struct Seen {
    open: BTreeMap<u64, Captured>,
    closed: Vec<Captured>,
    /// Every event's fields (message included), as text.
    events: Vec<String>,
}

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Seen>>);

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

impl<S: tracing::Subscriber> Layer<S> for Capture {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, _: Context<'_, S>) {
        let mut fields = BTreeMap::new();
        attrs.record(&mut Fields(&mut fields));
        let name = attrs.metadata().name();
        self.0
            .lock()
            .unwrap()
            .open
            .insert(id.into_u64(), Captured { name, fields });
    }
    fn on_record(&self, id: &Id, values: &Record<'_>, _: Context<'_, S>) {
        let mut seen = self.0.lock().unwrap();
        if let Some(c) = seen.open.get_mut(&id.into_u64()) {
            values.record(&mut Fields(&mut c.fields));
        }
    }
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        let mut fields = BTreeMap::new();
        event.record(&mut Fields(&mut fields));
        self.0.lock().unwrap().events.push(format!("{fields:?}"));
    }
    fn on_close(&self, id: Id, _: Context<'_, S>) {
        let mut seen = self.0.lock().unwrap();
        if let Some(c) = seen.open.remove(&id.into_u64()) {
            seen.closed.push(c);
        }
    }
}

/// The tests of this file run one at a time: tracing caches, per call site and
/// process-wide, whether any subscriber is interested. Another test hitting the
/// same call sites on another thread without a subscriber (the harness applies
/// migrations) can race with a scoped subscriber being installed here.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

impl Capture {
    fn install(&self) -> tracing::subscriber::DefaultGuard {
        let guard =
            tracing::subscriber::set_default(tracing_subscriber::registry().with(self.clone()));
        tracing::callsite::rebuild_interest_cache();
        guard
    }
    /// Closed spans since the last call.
    fn take(&self) -> Vec<Captured> {
        std::mem::take(&mut self.0.lock().unwrap().closed)
    }
    fn everything_as_text(&self) -> String {
        let seen = self.0.lock().unwrap();
        format!("{:?} {:?} {:?}", seen.closed, seen.open, seen.events)
    }
}

async fn org_with_user(db: &TestDb) -> (Uuid, Uuid) {
    let (org, user) = (Uuid::new_v4(), Uuid::new_v4());
    let c = db.client().await;
    c.execute(
        "INSERT INTO organization (id, name) VALUES ($1, 'o')",
        &[&org],
    )
    .await
    .unwrap();
    c.execute(
        "INSERT INTO auth.users_extended (id, org_id) VALUES ($1, $2)",
        &[&user, &org],
    )
    .await
    .unwrap();
    (org, user)
}

/// The single store span of the last call, checked for the common fields.
fn only_op(spans: Vec<Captured>, operation: &str) -> Captured {
    let ops: Vec<&Captured> = spans.iter().filter(|s| s.name == "sync_store.op").collect();
    assert_eq!(
        ops.len(),
        1,
        "{operation}: expected exactly one span, got {spans:?}"
    );
    let span = ops[0].clone();
    assert_eq!(span.get("operation"), Some(operation), "{span:?}");
    span
}

const SECRETS: [&str; 4] = ["SECRET-DELTA", "SECRET-META", "SECRET-ERR", "SECRET-KEY"];

#[tokio::test(flavor = "current_thread")]
async fn every_store_call_has_one_span_with_its_fields_and_no_secrets() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let db = TestDb::migrated().await;
    let (org, user) = org_with_user(&db).await;
    let store = Store::new(db.pool());
    let svc = store.service();
    let tenant = store.tenant(user);
    let capture = Capture::default();
    let _guard = capture.install();
    let org_text = org.to_string();

    svc.put_preview(
        org,
        &PutPreview::new(
            SyncType::Woocommerce,
            "s-1",
            "SECRET-KEY-1",
            serde_json::json!({"token": "SECRET-DELTA"}),
        ),
    )
    .await
    .unwrap();
    let span = only_op(capture.take(), "put_preview");
    assert_eq!(span.get("scope"), Some("service"));
    assert_eq!(span.get("org"), Some(org_text.as_str()));
    assert_eq!(span.get("sync_id"), Some("s-1"));
    assert_eq!(span.get("rows"), Some("1"));
    assert_eq!(span.get("user"), None);

    let mut start = StartSync::new("s-1", SyncEntityType::Product);
    start.total_items = Some(10);
    start.metadata = Some(serde_json::json!({"api_key": "SECRET-META"}));
    svc.start_sync(org, &start).await.unwrap();
    let span = only_op(capture.take(), "start_sync");
    assert_eq!(span.get("sync_id"), Some("s-1"));
    assert_eq!(span.get("rows"), Some("1"));

    svc.report_progress(
        org,
        "s-1",
        &ProgressDelta {
            processed: 3,
            ..ProgressDelta::default()
        },
    )
    .await
    .unwrap();
    let span = only_op(capture.take(), "report_progress");
    assert_eq!(span.get("sync_id"), Some("s-1"));
    assert_eq!(span.get("error"), None);

    let entries: Vec<NewActivity> = (0..5)
        .map(|_| {
            let mut e = NewActivity::new(SyncAction::RecordUpdate, SyncStatus::Failed);
            e.sync_id = Some("s-1".into());
            e.error_message = Some("SECRET-ERR in a record".into());
            e
        })
        .collect();
    svc.append_activity_many(org, &entries).await.unwrap();
    let span = only_op(capture.take(), "append_activity_many");
    assert_eq!(span.get("rows"), Some("5"));
    assert_eq!(span.get("org"), Some(org_text.as_str()));

    svc.fail_sync(org, "s-1", "SECRET-ERR: upstream said no")
        .await
        .unwrap();
    let span = only_op(capture.take(), "fail_sync");
    assert_eq!(span.get("sync_id"), Some("s-1"));

    // The error path of report_progress runs a second statement (NotFound vs
    // SyncFinished): still one span, with the error kind, not its message.
    let err = svc
        .report_progress(org, "s-1", &ProgressDelta::default())
        .await
        .unwrap_err();
    assert!(matches!(err, sync_store::Error::SyncFinished { .. }));
    let span = only_op(capture.take(), "report_progress");
    assert_eq!(span.get("error"), Some("sync_finished"));
    assert_eq!(span.get("rows"), None);

    // A server error keeps its SQLSTATE.
    svc.start_sync(org, &StartSync::new("s-1", SyncEntityType::Product))
        .await
        .unwrap_err();
    let span = only_op(capture.take(), "start_sync");
    assert_eq!(span.get("error"), Some("conflict"));
    assert_eq!(span.get("sqlstate"), Some("23505"));

    let page = svc
        .list_activity(org, &ActivityFilter::default(), None, 100)
        .await
        .unwrap();
    let span = only_op(capture.take(), "list_activity");
    assert_eq!(
        span.get("rows"),
        Some(page.entries.len().to_string().as_str())
    );
    assert_eq!(
        page.entries.len(),
        7,
        "start, fail and 5 per-record entries"
    );

    // Tenant scope: the user (never the claims), no org on the client side.
    let got = tenant.get_sync("s-1").await.unwrap();
    assert!(got.is_some());
    let span = only_op(capture.take(), "get_sync");
    assert_eq!(span.get("scope"), Some("tenant"));
    assert_eq!(span.get("user"), Some(user.to_string().as_str()));
    assert_eq!(span.get("org"), None);
    assert_eq!(span.get("rows"), Some("1"));
    let missing = tenant.get_preview_by_sync_id("nope").await.unwrap();
    assert!(missing.is_none());
    let span = only_op(capture.take(), "get_preview_by_sync_id");
    assert_eq!(span.get("rows"), Some("0"));

    svc.metrics(org, None).await.unwrap();
    only_op(capture.take(), "metrics");
    svc.cleanup_expired_previews_all_orgs().await.unwrap();
    let span = only_op(capture.take(), "cleanup_expired_previews");
    assert_eq!(span.get("org"), None);
    assert_eq!(span.get("rows"), Some("0"));

    let all = capture.everything_as_text();
    for secret in SECRETS {
        assert!(!all.contains(secret), "{secret} leaked into tracing: {all}");
    }
    assert!(!all.contains("jwt") && !all.contains("\"sub\""), "{all}");
}

#[tokio::test(flavor = "current_thread")]
async fn migrations_and_partition_maintenance_have_spans() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let db = TestDb::empty().await;
    let capture = Capture::default();
    let _guard = capture.install();
    let mut client = db.client().await;

    sync_migrations::apply(&mut client, &MigrateOptions::default())
        .await
        .unwrap();
    let spans = capture.take();
    let apply = spans
        .iter()
        .find(|s| s.name == "sync_migrations.apply")
        .unwrap_or_else(|| panic!("no apply span: {spans:?}"));
    let all = sync_migrations::embedded_migrations().len().to_string();
    assert_eq!(apply.get("applied"), Some(all.as_str()));
    assert_eq!(apply.get("already_applied"), Some("0"));

    let report = ensure_partitions(&mut client, 2, &PartitionOptions::default(), |_| {})
        .await
        .unwrap();
    let spans = capture.take();
    let ensure = spans
        .iter()
        .find(|s| s.name == "sync_migrations.partitions.ensure")
        .unwrap_or_else(|| panic!("no ensure span: {spans:?}"));
    assert_eq!(ensure.get("months_ahead"), Some("2"));
    assert_eq!(
        ensure.get("created"),
        Some(report.created.len().to_string().as_str())
    );

    let outcome =
        sync_migrations::rollback_0024_dropping_data(&mut client, &MigrateOptions::default())
            .await
            .unwrap();
    assert_eq!(outcome, sync_migrations::RollbackOutcome::RolledBack);
    let spans = capture.take();
    let rollback = spans
        .iter()
        .find(|s| s.name == "sync_migrations.rollback_0024")
        .unwrap_or_else(|| panic!("no rollback span: {spans:?}"));
    assert_eq!(rollback.get("outcome"), Some("rolled_back"));
}
