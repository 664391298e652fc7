//! `sync-bench`: each hot path of sync-store next to a raw PostgreSQL baseline,
//! measured alternately in the same run; medians of at least 5 repetitions.
//!
//! ```text
//! cargo run --release -p sync-bench [-- --quick] [--json] [--reps N] [--only P1,P3]
//! ```
//! Creates its own database on the server in `DATABASE_URL` (else the local
//! server as psql finds it) and drops it at the end. No timing is asserted.

use std::process::ExitCode;

use clap::Parser;
use tokio_postgres::{Client, Config};

mod data;
mod measure;
mod p10_write_ceiling;
mod p11_replica_reads;
mod p12_listing_partitions;
mod p13_reporter;
mod p1_migrate;
mod p2_append;
mod p3_progress;
mod p4_list;
mod p5_ensure;
mod p6_ensure_writers;
mod p7_metrics_rollup;
mod p8_http_progress;
mod p9_sse_fanout;

use measure::Row;

/// Benchmarks of sync-store against raw PostgreSQL baselines.
#[derive(Parser, Debug)]
#[command(name = "sync-bench")]
struct Args {
    /// Smaller data so the whole run takes under 3 minutes.
    #[arg(long)]
    quick: bool,
    /// Print only a JSON array: {"id","what","library_ms","baseline_ms"} per row.
    #[arg(long)]
    json: bool,
    /// Repetitions per row (at least 5).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(5..))]
    reps: u32,
    /// Run only these rows (comma-separated ids, e.g. P1,P3).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Measure the store with unnamed statements (`StatementMode::Unnamed`, the
    /// pooler-safe default) instead of statements cached per connection (the mode
    /// for direct connections, which this bench uses).
    #[arg(long)]
    unnamed_statements: bool,
}

/// How the measured store sends statements (set once from the arguments).
pub(crate) static STATEMENT_MODE: std::sync::OnceLock<sync_store::StatementMode> =
    std::sync::OnceLock::new();

/// The benchmark's own database.
pub(crate) struct BenchDb {
    tls: sync_connect::TlsOptions,
    admin: Config,
    name: String,
    config: Config,
    url: String,
}

/// Data sizes of one run.
struct Sizes {
    /// P2: activity rows per batch.
    append_rows: usize,
    /// P3: progress updates per repetition.
    progress_ops: usize,
    /// P4: activity rows loaded.
    list_rows: u64,
    /// P4: listings per repetition.
    list_ops: usize,
    /// P5: rows in the catch-all.
    ensure_rows: u64,
    /// P7: log rows of the small database (the large one has 10×).
    rollup_rows: u64,
}

impl Sizes {
    fn new(quick: bool) -> Sizes {
        if quick {
            Sizes {
                append_rows: 10_000,
                progress_ops: 300,
                list_rows: 200_000,
                list_ops: 200,
                ensure_rows: 100_000,
                rollup_rows: 200_000,
            }
        } else {
            Sizes {
                append_rows: 10_000,
                progress_ops: 2_000,
                list_rows: 2_000_000,
                list_ops: 1_000,
                ensure_rows: 1_000_000,
                rollup_rows: 2_000_000,
            }
        }
    }
}

impl BenchDb {
    async fn create() -> BenchDb {
        let url = std::env::var("DATABASE_URL").ok();
        let admin = sync_connect::resolve_config(url.as_deref()).expect("connection settings");
        let tls = sync_connect::TlsOptions::resolve(url.as_deref(), None).expect("TLS settings");
        let name = format!("sync_bench_{}", uuid::Uuid::new_v4().simple());
        Self::create_as(admin, tls, name, "").await
    }

    async fn create_as(
        admin: Config,
        tls: sync_connect::TlsOptions,
        name: String,
        options: &str,
    ) -> BenchDb {
        let c = sync_connect::connect(&admin, &tls)
            .await
            .expect("connect to the server");
        c.batch_execute(&format!("CREATE DATABASE {name}{options}"))
            .await
            .expect("create database");
        let mut config = admin.clone();
        config.dbname(&name);
        let url = libpq_url(&config);
        BenchDb {
            tls,
            admin,
            name,
            config,
            url,
        }
    }

    /// Another empty database on the same server, named after this one.
    pub(crate) async fn sibling(&self, suffix: &str) -> BenchDb {
        let name = format!("{}_{suffix}", self.name);
        Self::create_as(self.admin.clone(), self.tls.clone(), name, "").await
    }

    /// A file copy of this database (which must have no open connections),
    /// named after it with `suffix` and a counter.
    pub(crate) async fn copy(&self, suffix: &str) -> BenchDb {
        let n = COPIES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("{}_{suffix}{n}", self.name);
        let options = format!(" TEMPLATE {} STRATEGY FILE_COPY", self.name);
        Self::create_as(self.admin.clone(), self.tls.clone(), name, &options).await
    }

    pub(crate) async fn connect(&self) -> Client {
        sync_connect::connect(&self.config, &self.tls)
            .await
            .expect("connect")
    }

    /// Drops this database and every database named after it (copies, siblings).
    async fn drop_database_and_copies(self) {
        let c = sync_connect::connect(&self.admin, &self.tls)
            .await
            .expect("connect");
        let names: Vec<String> = c
            .query(
                "SELECT datname::text FROM pg_database WHERE starts_with(datname, $1 || '_')",
                &[&self.name],
            )
            .await
            .expect("list databases")
            .iter()
            .map(|r| r.get(0))
            .collect();
        for name in names {
            c.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .await
                .expect("drop database");
        }
        self.drop_database().await;
    }

    pub(crate) async fn drop_database(self) {
        let c = sync_connect::connect(&self.admin, &self.tls)
            .await
            .expect("connect");
        c.batch_execute(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ))
        .await
        .expect("drop database");
    }
}

static COPIES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn libpq_url(config: &Config) -> String {
    use tokio_postgres::config::Host;
    let user = config.get_user().unwrap_or("postgres");
    let db = config.get_dbname().unwrap_or("postgres");
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let auth = match config.get_password() {
        Some(pw) => format!("{user}:{}", String::from_utf8_lossy(pw)),
        None => user.to_owned(),
    };
    match config.get_hosts().first() {
        Some(Host::Tcp(h)) => format!("postgresql://{auth}@{h}:{port}/{db}"),
        Some(Host::Unix(p)) => {
            format!("postgresql://{auth}@/{db}?host={}&port={port}", p.display())
        }
        None => format!("postgresql://{auth}@localhost:{port}/{db}"),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let wanted =
        |id: &str| args.only.is_empty() || args.only.iter().any(|o| o.eq_ignore_ascii_case(id));
    let reps = args.reps as usize;
    STATEMENT_MODE
        .set(if args.unnamed_statements {
            sync_store::StatementMode::Unnamed
        } else {
            sync_store::StatementMode::CachedPerConnection
        })
        .expect("set once");
    let db = BenchDb::create().await;
    {
        // Prerequisites only; P1 leaves 0024 applied for the rows after it.
        let mut c = db.connect().await;
        sync_migrations::apply(&mut c, &sync_migrations::MigrateOptions::default())
            .await
            .expect("apply migrations");
    }
    let run = std::panic::AssertUnwindSafe(async {
        let mut rows: Vec<Row> = Vec::new();
        if wanted("P1") {
            rows.push(p1_migrate::run(&db, reps).await);
            progress(&args, rows.last());
        }
        let sizes = Sizes::new(args.quick);
        let (p2a, p2b) = (wanted("P2a"), wanted("P2b"));
        if p2a || p2b {
            for r in p2_append::run(&db, reps, sizes.append_rows, p2a, p2b).await {
                rows.push(r);
                progress(&args, rows.last());
            }
        }
        if wanted("P3") {
            rows.push(p3_progress::run(&db, reps, sizes.progress_ops, false).await);
            progress(&args, rows.last());
        }
        if wanted("P3k") {
            rows.push(p3_progress::run(&db, reps, sizes.progress_ops, true).await);
            progress(&args, rows.last());
        }
        if wanted("P4") {
            rows.push(p4_list::run(&db, reps, sizes.list_rows, sizes.list_ops).await);
            progress(&args, rows.last());
        }
        if wanted("P5") {
            rows.push(p5_ensure::run(&db, reps, sizes.ensure_rows).await);
            progress(&args, rows.last());
        }
        if wanted("P12") || wanted("P12u") || wanted("P12c") {
            let recent = if args.quick { 50_000 } else { 400_000 };
            for r in p12_listing_partitions::run(&db, reps, recent, sizes.list_ops).await {
                rows.push(r);
                progress(&args, rows.last());
            }
        }
        if wanted("P6") {
            for r in p6_ensure_writers::run(&db, reps, sizes.ensure_rows).await {
                rows.push(r);
                progress(&args, rows.last());
            }
        }
        let secs = if args.quick { 1 } else { 10 };
        if wanted("P10") {
            for r in p10_write_ceiling::run(&db, reps, secs).await {
                rows.push(r);
                progress(&args, rows.last());
            }
        }
        if wanted("P11") {
            let rows_n = if args.quick { 20_000 } else { 500_000 };
            rows.push(p11_replica_reads::run(reps, rows_n, secs.min(5)).await);
            progress(&args, rows.last());
        }
        if wanted("P8") {
            let ops = if args.quick { 1_600 } else { 16_000 };
            rows.push(p8_http_progress::run(&db, reps, ops).await);
            progress(&args, rows.last());
        }
        if wanted("P9") {
            let (subscribers, seconds) = if args.quick { (100, 10) } else { (1_000, 30) };
            rows.push(p9_sse_fanout::run(&db, subscribers, seconds).await);
            progress(&args, rows.last());
        }
        if wanted("P13") {
            let s = p13_reporter::P13Sizes::new(args.quick);
            for r in p13_reporter::run(&db, reps, &s).await {
                rows.push(r);
                progress(&args, rows.last());
            }
        }
        if ["P7a", "P7b", "P7c", "P7s", "P7w"]
            .iter()
            .any(|id| wanted(id))
            || wanted("P7")
        {
            for r in p7_metrics_rollup::run(&db, reps, sizes.rollup_rows).await {
                rows.push(r);
                progress(&args, rows.last());
            }
        }
        rows
    });
    // A failed row still drops the bench databases, then the run fails.
    let outcome = futures_util::FutureExt::catch_unwind(run).await;
    db.drop_database_and_copies().await;
    let Ok(rows) = outcome else {
        eprintln!("sync-bench: a row failed (see the panic above); databases dropped");
        return ExitCode::FAILURE;
    };

    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows).expect("json"));
    } else {
        println!("| id | what | library ms | baseline ms | ratio | target | met |");
        println!("|---|---|---:|---:|---:|---|---|");
        for r in &rows {
            let target = match r.target.max_library_ms {
                _ if r.target.max_ratio.is_infinite() => "none (measured)".to_owned(),
                Some(ms) => format!("≤ {}×, ≤ {ms} ms", r.target.max_ratio),
                None => format!("≤ {}×", r.target.max_ratio),
            };
            println!(
                "| {} | {} | {:.3} | {:.3} | {:.3} | {} | {} |",
                r.id,
                r.what,
                r.library_ms,
                r.baseline_ms,
                r.ratio(),
                target,
                if r.met() { "yes" } else { "no" }
            );
        }
    }
    ExitCode::SUCCESS
}

fn progress(args: &Args, row: Option<&Row>) {
    if let Some(r) = row {
        if !args.json {
            eprintln!(
                "{} done: library {:.3} ms, baseline {:.3} ms",
                r.id, r.library_ms, r.baseline_ms
            );
        }
    }
}
