//! The main job, end to end: `cargo run --example sync_worker`.
//!
//! 1. Finds a database: `DATABASE_URL` when set (migrations are applied to it),
//!    else a throwaway PostgreSQL started from the installed server binaries
//!    (`pg_config --bindir`, else `/usr/lib/postgresql/<newest>/bin`; as root
//!    they run as the `postgres` operating-system user, without `sudo`), removed
//!    at exit (`sync_tests::tempcluster`, the tests' helper).
//! 2. Applies the migrations and keeps the activity-log partitions ahead
//!    (`sync_migrations::startup`).
//! 3. Simulates a WooCommerce product sync for a new demo org: caches the delta
//!    preview, starts the sync, pushes batches of products (a few fail), counts
//!    every product through a [`sync_store::ProgressReporter`] (no I/O per item:
//!    a background task flushes the counts, a heartbeat and a resume checkpoint
//!    every 250 ms and at each batch end), and shows a live progress bar that
//!    reads the database every 250 ms, so it moves between batches too; speed
//!    and ETA are computed there by triggers. Every product gets an
//!    activity-log entry (binary COPY, one call per batch).
//! 4. Prints what the database recorded and the spec's verification table; exits
//!    1 if any row of that table is ✗.
//!
//! Options: `--items N` (1..=1000000, default 250), `--batch N` (1..=10000,
//! default 10), `--fast` (or `SYNC_WORKER_FAST=1`: 40 items, no pause between
//! batches; what the tests run). Anything out of range is a usage error (exit 2).
//! Memory does not grow with `--items`: products are generated batch by batch.
//!
//! Cancel from a second terminal (or the dashboard): the worker prints the
//! command, e.g. `psql "$DATABASE_URL" -c "UPDATE sync_progress SET
//! cancel_requested_at = now() WHERE sync_id = '…'"`, or `POST
//! /api/v1/sync/progress/{syncId}/cancel` on sync-api. The reporter learns it at
//! its next flush; the worker stops at the next batch boundary, ends the sync
//! **cancelled** (`sync_cancel` in the activity log) and exits 0.
//!
//! Ctrl-C (SIGINT) or SIGTERM: the worker stops at the next batch boundary,
//! marks the sync **cancelled** in the database (`sync_cancel` in the activity
//! log, `completed_at` set) and exits 130 (SIGINT) or 143 (SIGTERM). A second
//! signal exits at once (the sync may then stay open: cancel it with
//! `cancel_sync`).

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use sync_connect::TlsOptions;
use sync_migrations::MigrateOptions;
use sync_store::{
    ActivityFilter, NewActivity, ProgressReporter, PutPreview, ReporterConfig, ServiceScope,
    StartSync, Store, SyncAction, SyncEntityType, SyncProgress, SyncStatus, SyncType,
};
use sync_tests::tempcluster::TempCluster;
use uuid::Uuid;

/// Most products one run may sync (`--items`).
const MAX_ITEMS: u32 = 1_000_000;
/// Most products per batch (`--batch`): one batch's activity entries are held in
/// memory and written in one COPY.
const MAX_BATCH: u32 = 10_000;

/// Simulate a WooCommerce product sync against migration 0024.
#[derive(Parser, Debug)]
struct Args {
    /// How many products to sync (1 to 1000000).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=MAX_ITEMS as i64))]
    items: Option<u32>,
    /// Products per batch (1 to 10000).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=MAX_BATCH as i64))]
    batch: u32,
    /// Few items and no pause between batches (also SYNC_WORKER_FAST=1).
    #[arg(long)]
    fast: bool,
}

type AnyError = Box<dyn std::error::Error + Send + Sync>;

fn main() -> ExitCode {
    let mut args = Args::parse();
    args.fast |= std::env::var("SYNC_WORKER_FAST").is_ok_and(|v| v == "1" || v == "true");
    let url = std::env::var("DATABASE_URL").ok().filter(|s| !s.is_empty());
    // Keeps the throwaway cluster alive until the end of main.
    let mut cluster = None;
    let url = match url {
        Some(url) => {
            println!(
                "Using DATABASE_URL ({}): the migrations are applied to that database.",
                redacted(&url)
            );
            url
        }
        None => match throwaway_cluster() {
            Ok(c) => {
                let url = c.url();
                println!("Started it on port {} (it is removed at exit).", c.port());
                cluster = Some(c);
                url
            }
            Err(e) => {
                eprintln!("sync_worker: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let code = match runtime.block_on(async {
        let stop = watch_signals()?;
        run(&url, &args, stop).await
    }) {
        Ok(Outcome::Verified(true)) => ExitCode::SUCCESS,
        Ok(Outcome::Verified(false)) => {
            eprintln!("sync_worker: verification failed (rows marked ✗)");
            ExitCode::FAILURE
        }
        Ok(Outcome::Interrupted(sig)) => ExitCode::from(sig.exit_code()),
        Ok(Outcome::CancelledOnRequest) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sync_worker: {e}");
            ExitCode::FAILURE
        }
    };
    drop(runtime);
    drop(cluster);
    code
}

/// How a run ended.
enum Outcome {
    /// It ran to the end; `false` when a verification row is ✗.
    Verified(bool),
    /// SIGINT or SIGTERM stopped it (the sync, if started, was cancelled).
    Interrupted(Stop),
    /// A cancel request (psql, the API) stopped it; the sync was cancelled.
    CancelledOnRequest,
}

/// The signal that asked the worker to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Interrupt,
    Terminate,
}

impl Stop {
    fn name(self) -> &'static str {
        match self {
            Stop::Interrupt => "SIGINT",
            Stop::Terminate => "SIGTERM",
        }
    }

    /// The shell's convention: 128 + the signal number.
    fn exit_code(self) -> u8 {
        match self {
            Stop::Interrupt => 130,
            Stop::Terminate => 143,
        }
    }
}

/// Listens for SIGINT and SIGTERM from now on. The first one is published on
/// the returned channel (the worker cancels its sync at the next batch
/// boundary); a second one exits the process at once.
fn watch_signals() -> Result<tokio::sync::watch::Receiver<Option<Stop>>, AnyError> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    let (tx, rx) = tokio::sync::watch::channel(None);
    tokio::spawn(async move {
        let mut first = true;
        loop {
            let stop = tokio::select! {
                Some(()) = int.recv() => Stop::Interrupt,
                Some(()) = term.recv() => Stop::Terminate,
                else => return,
            };
            if first {
                first = false;
                eprintln!(
                    "sync_worker: {} received: cancelling the sync after the current batch \
                     (send it again to quit at once)",
                    stop.name()
                );
                let _ = tx.send(Some(stop));
            } else {
                eprintln!(
                    "sync_worker: {} received again: quitting now; the sync may stay open \
                     (cancel it with cancel_sync)",
                    stop.name()
                );
                std::process::exit(i32::from(stop.exit_code()));
            }
        }
    });
    Ok(rx)
}

/// The URL without its password.
fn redacted(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &creds[..c], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

fn throwaway_cluster() -> Result<TempCluster, AnyError> {
    let dir = sync_tests::tempcluster::bindir().ok_or(
        "no DATABASE_URL and no PostgreSQL server binaries (initdb) found: install PostgreSQL \
         (apt-get install -y postgresql) or set DATABASE_URL",
    )?;
    println!(
        "No DATABASE_URL: starting a throwaway PostgreSQL from {} …",
        dir.display()
    );
    TempCluster::start(&[]).map_err(|e| {
        format!("starting the throwaway PostgreSQL failed: {e}; or set DATABASE_URL").into()
    })
}

/// One simulated WooCommerce product.
struct Product {
    id: u32,
    sku: String,
    name: String,
    is_new: bool,
    /// Why the ERP refused it, if it did.
    refused: Option<&'static str>,
}

fn product(i: u32) -> Product {
    const NAMES: [&str; 6] = [
        "Organic Cotton T-Shirt",
        "Ceramic Coffee Mug",
        "Leather Wallet",
        "Bamboo Cutting Board",
        "Wool Beanie",
        "Steel Water Bottle",
    ];
    const REFUSALS: [&str; 3] = [
        "price is missing",
        "SKU already used by another product in the ERP",
        "tax class 'reduced-rate' unknown to the ERP",
    ];
    Product {
        id: 1000 + i,
        sku: format!("WC-{:05}", 1000 + i),
        name: NAMES[i as usize % NAMES.len()].to_owned(),
        is_new: !i.is_multiple_of(3),
        refused: (i % 17 == 11).then(|| REFUSALS[(i / 17) as usize % REFUSALS.len()]),
    }
}

async fn run(
    url: &str,
    args: &Args,
    mut stop: tokio::sync::watch::Receiver<Option<Stop>>,
) -> Result<Outcome, AnyError> {
    let items = args.items.unwrap_or(if args.fast { 40 } else { 250 });
    // Clap already refuses 0 and values above MAX_BATCH; never run a batch
    // size the user did not ask for.
    let batch = args.batch;
    if !(1..=MAX_BATCH).contains(&batch) || !(1..=MAX_ITEMS).contains(&items) {
        return Err(format!("--items must be 1..={MAX_ITEMS} and --batch 1..={MAX_BATCH}").into());
    }
    let pause = if args.fast {
        Duration::ZERO
    } else {
        Duration::from_millis(400)
    };
    let config = sync_connect::resolve_config(Some(url))?;
    let tls = TlsOptions::resolve(Some(url), None)?;
    let pool = sync_connect::pool(&config, &tls, 4)?;

    // 1. Migrations and partitions, as every service does at start-up.
    let report = sync_migrations::startup(&pool, &MigrateOptions::default(), 3).await?;
    if report.migrations.applied.is_empty() {
        println!(
            "Migrations: all {} already applied.",
            report.migrations.already_applied
        );
    } else {
        for m in &report.migrations.applied {
            println!("Migrations: applied V{}__{}", m.version, m.name);
        }
    }
    if report.partitions.created.is_empty() {
        println!(
            "Partitions: months through {} already exist.",
            report.partitions.through
        );
    } else {
        println!(
            "Partitions: created {} (through {}), moved {} row(s) out of the catch-all.",
            report.partitions.created.join(", "),
            report.partitions.through,
            report.partitions.rows_moved
        );
    }

    // 2. A demo org with one user (the person who clicked "Sync now").
    let (org, user) = (Uuid::new_v4(), Uuid::new_v4());
    {
        let client = pool.get().await?;
        client
            .execute(
                "INSERT INTO organization (id, name) VALUES ($1, 'Demo Shop')",
                &[&org],
            )
            .await?;
        client
            .execute(
                "INSERT INTO auth.users_extended (id, org_id, email, full_name) \
                 VALUES ($1, $2, 'owner@demo-shop.example', 'Demo Owner')",
                &[&user, &org],
            )
            .await?;
    }
    println!("Org \"Demo Shop\" {org}, user {user}.");

    let store = Store::new(pool.clone());
    let svc = store.service();
    let sync_id = format!("woo-products-{}", &Uuid::new_v4().simple().to_string()[..8]);
    // Products are generated batch by batch (memory does not grow with --items).
    let updates = items.div_ceil(3); // product(i) is new unless i % 3 == 0
    let creates = items - updates;

    // 3. The preview the UI shows before the user confirms.
    let delta = serde_json::json!({
        "entity": "product",
        "create": creates,
        "update": updates,
        "sample": (0..items.min(3)).map(product).map(|p| serde_json::json!({"sku": p.sku, "name": p.name})).collect::<Vec<_>>(),
    });
    let preview = svc
        .put_preview(
            org,
            &PutPreview::new(SyncType::Woocommerce, &sync_id, "products", delta),
        )
        .await?;
    println!(
        "Preview cached: {} to create, {} to update (expires in {} min).",
        creates,
        updates,
        (preview.expires_at - preview.computed_at).whole_minutes()
    );

    // 4. The sync itself.
    let mut start = StartSync::new(&sync_id, SyncEntityType::Product);
    start.total_items = Some(i32::try_from(items)?);
    start.source_system = Some("woocommerce".into());
    start.job_id = Some("demo-job-1".into());
    start.initiated_by = Some(user);
    // A signal that came during start-up: nothing is open yet.
    if let Some(sig) = *stop.borrow() {
        eprintln!(
            "sync_worker: stopped by {} before the sync started",
            sig.name()
        );
        return Ok(Outcome::Interrupted(sig));
    }
    svc.start_sync(org, &start).await?;
    println!("Sync {sync_id}: {items} products in batches of {batch}.");
    // The worker's reporter: counting an item costs no I/O; a background task
    // flushes the counts (with a heartbeat) every 250 ms and at batch ends,
    // and brings back a cancel request.
    let reporter = svc
        .reporter(org, &sync_id, ReporterConfig::default())
        .await?;
    println!(
        "To cancel it from another terminal: psql \"$DATABASE_URL\" -c \"UPDATE sync_progress \
         SET cancel_requested_at = now() WHERE sync_id = '{sync_id}'\", or \
         POST /api/v1/sync/progress/{sync_id}/cancel on sync-api (as {user})."
    );

    let bar = progress_bar(u64::from(items));
    // A live bar follows the database every 250 ms, between batches too.
    let follow = bar.follow(svc.clone(), org, sync_id.clone());
    let mut done = 0u32;
    let mut outcome = None;
    for (n, first) in (0..items).step_by(batch as usize).enumerate() {
        // Checked at every batch boundary, so no write is abandoned half-way.
        if let Some(sig) = *stop.borrow() {
            outcome = Some(Ending::Signal(sig));
            break;
        }
        if reporter.is_cancelled() {
            outcome = Some(Ending::Requested);
            break;
        }
        if reporter.stop_reason().is_some() {
            // Ended by someone else, or flushing failed: finish says which.
            break;
        }
        let chunk: Vec<Product> = (first..first.saturating_add(batch).min(items))
            .map(product)
            .collect();
        let started = std::time::Instant::now();
        let per_item = pause / chunk.len() as u32;
        let mut failed = 0;
        for p in &chunk {
            // "Pushing the product to the ERP"; a signal or a cancel request
            // cuts the pauses short (the batch still completes).
            if !per_item.is_zero() {
                tokio::select! {
                    _ = tokio::time::sleep(per_item) => {}
                    _ = stop.changed() => {}
                    _ = reporter.stopped() => {}
                }
            }
            let bad = p.refused.is_some();
            failed += i32::from(bad);
            reporter.inc(u32::from(!bad), u32::from(bad));
        }
        let took = started.elapsed().as_secs_f64() / chunk.len() as f64;
        let entries: Vec<NewActivity> = chunk
            .iter()
            .map(|p| {
                let action = if p.is_new {
                    SyncAction::RecordCreate
                } else {
                    SyncAction::RecordUpdate
                };
                let status = if p.refused.is_some() {
                    SyncStatus::Failed
                } else {
                    SyncStatus::Completed
                };
                let mut e = NewActivity::new(action, status);
                e.sync_id = Some(sync_id.clone());
                e.entity_type = Some(SyncEntityType::Product);
                e.record_count = 1;
                e.duration_seconds = Some((took * 1000.0).round() / 1000.0);
                e.error_message = p
                    .refused
                    .map(|why| format!("product {} ({}): {why}", p.id, p.sku));
                e
            })
            .collect();
        svc.append_activity_many(org, &entries).await?;
        done += chunk.len() as u32;
        reporter.set_current(done as i32);
        // A resume point (the next product), flushed with the counts before it.
        reporter.checkpoint(serde_json::json!({ "next_item": first + chunk.len() as u32 }))?;
        reporter.batch_done(Some(n as i32 + 1));
        if let Bar::Plain = bar {
            // Speed and ETA as the database computed them (the flush of this
            // batch may still be on its way: the counts can lag by one).
            let p = svc
                .get_sync(org, &sync_id)
                .await?
                .ok_or("the sync disappeared")?;
            bar.show(&p, failed);
        }
    }
    follow.abort();
    bar.finish();
    match outcome {
        Some(Ending::Signal(sig)) => {
            let reason = format!(
                "interrupted by {} after {done} of {items} items",
                sig.name()
            );
            return cancel(reporter, &sync_id, reason, Outcome::Interrupted(sig)).await;
        }
        Some(Ending::Requested) => {
            let reason = format!("cancel requested after {done} of {items} items");
            return cancel(reporter, &sync_id, reason, Outcome::CancelledOnRequest).await;
        }
        None => {}
    }
    // Flushes the last counts; the last flush reached the total, so the
    // database had already completed the sync: finish answers it.
    reporter.finish().await?;
    if let Some(sig) = *stop.borrow() {
        eprintln!(
            "sync_worker: stopped by {} after the last batch (the sync had finished)",
            sig.name()
        );
        return Ok(Outcome::Interrupted(sig));
    }

    // 5. What the database recorded.
    let p = svc
        .get_sync(org, &sync_id)
        .await?
        .ok_or("the sync disappeared")?;
    println!();
    println!("Sync {} finished: {}", p.sync_id, p.status());
    println!(
        "  processed {}, failed {}, of {}; elapsed {} s; speed {} items/min; ETA {} s",
        p.processed_count,
        p.failed_count,
        p.total_items.unwrap_or_default(),
        p.elapsed_seconds,
        p.speed_items_per_min
            .map(|s| format!("{s:.2}"))
            .unwrap_or_else(|| "n/a".into()),
        p.eta_seconds
            .map(|s| s.to_string())
            .unwrap_or_else(|| "n/a".into()),
    );
    // The user's own view, through row-level security.
    let seen = store.tenant(user).get_sync(&sync_id).await?;
    println!(
        "  the user sees it through RLS: {}",
        if seen.is_some() { "yes" } else { "no" }
    );

    let filter = ActivityFilter {
        sync_id: Some(sync_id.clone()),
        ..ActivityFilter::default()
    };
    // Counted page by page (memory does not grow with the number of entries).
    let mut total_entries = 0usize;
    let mut counts: std::collections::BTreeMap<(String, String), usize> = Default::default();
    let mut record_failure: Option<String> = None;
    let mut after = None;
    loop {
        let page = svc.list_activity(org, &filter, after, 1000).await?;
        total_entries += page.entries.len();
        for e in &page.entries {
            *counts
                .entry((e.action.to_string(), e.status.to_string()))
                .or_default() += 1;
            if record_failure.is_none() && e.status == SyncStatus::Failed {
                record_failure.clone_from(&e.error_message);
            }
        }
        match page.next {
            Some(c) => after = Some(c),
            None => break,
        }
    }
    println!("Activity log of the sync: {total_entries} entries");
    for ((action, status), n) in &counts {
        println!("  {action:<14} {status:<22} {n:>5}");
    }
    if let Some(e) = record_failure {
        println!("  e.g. failure: {e}");
    }
    let m = svc.metrics(org, None).await?;
    println!(
        "Metrics of the org: syncs completed {} (of {} ended), spec success rate {}, \
         spec error rate {} (over all {} entries), active syncs {}",
        rate(m.outcomes.share(m.outcomes.completed)),
        m.outcomes.ended,
        rate(m.success_rate),
        rate(m.error_rate),
        m.activity_total,
        m.active_syncs
    );

    // 6. The spec's verification table, from the live catalog.
    let client = pool.get().await?;
    let verify = sync_migrations::verify(&client).await?;
    println!();
    println!("VERIFICATION RESULTS");
    print!("{}", verify.to_table());
    Ok(Outcome::Verified(verify.is_ok()))
}

/// Why the batch loop stopped early.
enum Ending {
    /// SIGINT / SIGTERM.
    Signal(Stop),
    /// A cancel request reached the reporter.
    Requested,
}

/// Flushes the last counts and ends the sync cancelled (the database logs
/// `sync_cancel` with `reason`).
async fn cancel(
    reporter: ProgressReporter,
    sync_id: &str,
    reason: String,
    outcome: Outcome,
) -> Result<Outcome, AnyError> {
    match reporter.cancel(Some(&reason)).await {
        Ok(_) | Err(sync_store::Error::SyncFinished { .. }) => {
            eprintln!("sync_worker: sync {sync_id} cancelled ({reason})");
            Ok(outcome)
        }
        Err(e) => Err(format!(
            "cancelling sync {sync_id} failed: {e}; it stays open: cancel it with cancel_sync"
        )
        .into()),
    }
}

fn rate(r: Option<f64>) -> String {
    r.map(|r| format!("{:.1} %", r * 100.0))
        .unwrap_or_else(|| "n/a".into())
}

/// A live bar on a terminal, plain lines otherwise.
enum Bar {
    Live(ProgressBar),
    Plain,
}

fn progress_bar(total: u64) -> Bar {
    if !std::io::stdout().is_terminal() {
        return Bar::Plain;
    }
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stdout());
    bar.set_style(
        ProgressStyle::with_template("{bar:40.cyan/blue} {pos:>4}/{len} {msg}")
            .expect("valid template")
            .progress_chars("█▉▊▋▌▍▎▏ "),
    );
    Bar::Live(bar)
}

fn describe(p: &SyncProgress) -> String {
    format!(
        "{} failed · {} items/min · ETA {} (from the database)",
        p.failed_count,
        p.speed_items_per_min
            .map(|s| format!("{s:.0}"))
            .unwrap_or_else(|| "–".into()),
        p.eta_seconds
            .map(|s| format!("{s} s"))
            .unwrap_or_else(|| "–".into()),
    )
}

impl Bar {
    /// Live bar: a task that reads the sync every 250 ms and redraws (no-op
    /// for plain output). Abort the handle when the loop ends.
    fn follow(&self, svc: ServiceScope, org: Uuid, sync_id: String) -> tokio::task::JoinHandle<()> {
        let Bar::Live(bar) = self else {
            return tokio::spawn(async {});
        };
        let bar = bar.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            loop {
                tick.tick().await;
                if let Ok(Some(p)) = svc.get_sync(org, &sync_id).await {
                    bar.set_position((p.processed_count + p.failed_count) as u64);
                    bar.set_message(describe(&p));
                }
            }
        })
    }

    /// Plain output: one line per batch (`failed` of this batch).
    fn show(&self, p: &SyncProgress, failed: i32) {
        if let Bar::Plain = self {
            let handled = p.processed_count + p.failed_count;
            println!(
                "  batch {:>3}: {handled}/{} ({failed} failed in this batch) · {}",
                p.batch_number.unwrap_or_default(),
                p.total_items.unwrap_or_default(),
                describe(p)
            );
        }
    }

    fn finish(&self) {
        if let Bar::Live(bar) = self {
            bar.finish();
        }
    }
}
