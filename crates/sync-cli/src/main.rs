//! `sync-migrate`: apply, roll back, inspect and verify migration 0024; the
//! spec's troubleshooting checks (`doctor`), cache cleanup and monitoring stats.
//!
//! Exit codes: 0 success; 1 an error, a `verify` shortfall, a `doctor` FAIL, or a
//! `status` that lists a changed or unknown migration; 2 bad usage.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use sync_connect::TlsOptions;
use sync_migrations::{MigrateOptions, MigrationState, RollbackOutcome};
use tokio_postgres::config::Host;

mod ops;
mod partitions;

/// Apply, roll back, inspect and verify the sync-store migrations; troubleshoot,
/// clean up and monitor the sync tables.
#[derive(Parser, Debug)]
#[command(name = "sync-migrate", version)]
struct Cli {
    /// Connection string (URL or key=value). Default: DATABASE_URL, else the local
    /// server as psql finds it (PGHOST/PGPORT/PGUSER/PGDATABASE, unix socket).
    #[arg(long, global = true)]
    database_url: Option<String>,

    /// PEM file of the certificate authorities to trust for TLS, instead of the
    /// system's (like libpq's sslrootcert / PGSSLROOTCERT, which are read too).
    /// TLS follows the connection string's sslmode: disable, prefer (default),
    /// require, verify-ca, verify-full.
    #[arg(long, global = true, value_name = "PEM_FILE")]
    ca_file: Option<PathBuf>,

    /// DANGEROUS: skip the transaction-mode pooler checks before `up` / `down`.
    /// Only for a pooler in session mode that the checks misjudge: through a
    /// transaction-mode pooler the migration lock protects nothing.
    #[arg(long, global = true)]
    skip_pooler_check_dangerously: bool,

    /// Print machine-readable JSON on stdout instead of text.
    #[arg(long, global = true)]
    json: bool,

    /// Longest wait, in seconds, for the migration lock held by another migrator.
    #[arg(long, global = true, default_value_t = 300)]
    lock_wait_secs: u64,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Apply every pending migration (0001, 0024, …) under the migration lock,
    /// then create the activity-log partitions through the current month + 3
    /// (as services' start-up does), so `verify` and `doctor` both pass, then
    /// finish the activity-rollup backfill (0026; one month per transaction,
    /// resumable: run `up` again after an interruption).
    Up {
        /// Only apply the migrations; leave the partitions as they are.
        #[arg(long)]
        no_partitions: bool,
    },
    /// Roll back every applied migration after 0024 (newest first), then 0024,
    /// in one transaction: DROPS their tables with all their rows, functions
    /// and enum types. Refuses if a migration this build
    /// cannot roll back is applied.
    Down,
    /// List embedded migrations: applied, pending, or changed since applied.
    Status,
    /// Check the live catalog against the spec's verification table; exit 1 on any shortfall.
    Verify,
    /// Compare a database where 0024 was applied without our history (another
    /// team's script) with our 0024, by meaning: each difference is same,
    /// converged by --apply, or blocking. Exit 0 adoptable, 1 not. Changes
    /// nothing without --apply.
    Adopt {
        /// Converge the database in phased, re-runnable steps, then record
        /// history rows 1 and 24 as refinery would (`up` continues from there).
        #[arg(long)]
        apply: bool,
        /// Adopt even when rows break one of our constraints: the constraint is
        /// left out with a warning (add it by hand once the rows are fixed; see the README).
        #[arg(long)]
        allow_not_valid: bool,
    },
    /// Partition maintenance of sync_activity_log: list, ensure, archive.
    #[command(subcommand)]
    Partitions(partitions::PartitionsCmd),
    /// The spec's TROUBLESHOOTING checks: one PASS / WARN / FAIL / SKIP line each,
    /// with what to do; exit 1 on any FAIL. Read-only.
    Doctor {
        /// The user whose queries row-level security blocks: checks it is in
        /// auth.users_extended with an org.
        #[arg(long, value_name = "UUID")]
        user_id: Option<uuid::Uuid>,
        /// Months after the current one that should have monthly partitions (as
        /// `partitions ensure`): catch-all rows dated before their end FAIL,
        /// later ones WARN.
        #[arg(long, default_value_t = 3)]
        months_ahead: u32,
        /// The instant that counts as now (RFC 3339); default: the server's clock.
        #[arg(long, value_parser = ops::parse_rfc3339)]
        now: Option<time::OffsetDateTime>,
        /// A hot standby of this database (connection string, same TLS
        /// settings): adds the `replica_lag` check (streaming, replay paused,
        /// bytes behind the primary).
        #[arg(long, value_name = "URL", env = "SYNC_REPLICA_URL")]
        replica_url: Option<String>,
    },
    /// Delete the expired previews of every org (auto_cleanup_preview_cache()).
    Cleanup,
    /// The spec's MONITORING metrics: cache live/expired, active syncs, average
    /// speed and duration, success and error rate.
    Stats {
        /// Only this org (default: every org of the database).
        #[arg(long, value_name = "UUID")]
        org: Option<uuid::Uuid>,
        /// Count activity entries created at or after this RFC 3339 time only.
        #[arg(long, value_name = "RFC3339", value_parser = ops::parse_rfc3339)]
        since: Option<time::OffsetDateTime>,
    },
}

/// An error of any command: the migrator's (with its SQLSTATE) or another's.
#[derive(Debug)]
enum CliError {
    Migrations(sync_migrations::Error),
    Store(sync_store::Error),
    Other(Box<dyn std::error::Error>),
}

impl CliError {
    fn code(&self) -> Option<&str> {
        match self {
            CliError::Migrations(e) => e.code(),
            CliError::Store(e) => e.code(),
            CliError::Other(_) => None,
        }
    }
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CliError::Migrations(
                e @ (sync_migrations::Error::Unavailable { .. }
                | sync_migrations::Error::InvalidConfig { .. }),
            ) => write!(
                f,
                "{e} (the connection string comes from --database-url, else DATABASE_URL, else PGHOST/PGPORT/PGUSER/PGDATABASE)"
            ),
            CliError::Migrations(e) => e.fmt(f),
            CliError::Store(e) => e.fmt(f),
            CliError::Other(e) => e.fmt(f),
        }
    }
}

impl From<sync_store::Error> for CliError {
    fn from(e: sync_store::Error) -> Self {
        CliError::Store(e)
    }
}

impl From<sync_migrations::Error> for CliError {
    fn from(e: sync_migrations::Error) -> Self {
        CliError::Migrations(e)
    }
}

impl From<sync_connect::Error> for CliError {
    fn from(e: sync_connect::Error) -> Self {
        CliError::Migrations(e.into())
    }
}

/// How many months after the current one `up` makes sure have partitions (as
/// `partitions ensure` and services' `startup`).
const MONTHS_AHEAD: u32 = 3;

/// Parses the command line. A usage error exits 2; under `--json` it is printed
/// on stdout in the JSON error shape too (`{"error", "sqlstate": null}`).
fn parse_cli() -> Result<Cli, ExitCode> {
    match Cli::try_parse() {
        Ok(cli) => Ok(cli),
        Err(e) => {
            use clap::error::ErrorKind;
            let usage_error = !matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            );
            let json = std::env::args_os().skip(1).any(|a| a == "--json");
            if usage_error && json {
                let message = e.kind().to_string();
                let detail = e.render().to_string();
                let body = serde_json::json!({
                    "error": format!("usage: {}", detail.lines().next().unwrap_or(&message).trim_start_matches("error: ")),
                    "sqlstate": null,
                });
                println!("{body}");
            }
            let _ = e.print();
            Err(if usage_error {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            })
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = match parse_cli() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    let json = cli.json;
    match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            if json {
                let body = serde_json::json!({
                    "error": e.to_string(),
                    "sqlstate": e.code(),
                });
                println!("{body}");
            }
            eprintln!("sync-migrate: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<ExitCode, CliError> {
    let url = cli.database_url.as_deref();
    let config = sync_connect::resolve_config(url)?;
    let tls = TlsOptions::resolve(url, cli.ca_file.as_deref())?;
    let mut client = open(&cli, &config, &tls).await?;
    let options = MigrateOptions {
        lock_wait: Duration::from_secs(cli.lock_wait_secs),
        refuse_pooler: !cli.skip_pooler_check_dangerously,
        ..MigrateOptions::default()
    };
    let json = cli.json;
    match cli.command {
        Command::Doctor {
            user_id,
            months_ahead,
            now,
            replica_url,
        } => {
            let mut options =
                sync_migrations::DoctorOptions::default().with_months_ahead(months_ahead);
            if let Some(now) = now {
                options = options.with_now(now);
            }
            let replica = match replica_url.as_deref() {
                None => None,
                Some(url) => Some(ops::connect_replica(url, cli.ca_file.as_deref()).await),
            };
            Ok(ops::doctor(&client, user_id, &options, replica, json).await?)
        }
        Command::Cleanup => {
            let store = sync_store::Store::new(sync_connect::pool(&config, &tls, 1)?);
            Ok(ops::cleanup(&store, json).await?)
        }
        Command::Stats { org, since } => {
            let store = sync_store::Store::new(sync_connect::pool(&config, &tls, 1)?);
            Ok(ops::stats(&store, org, since, json).await?)
        }
        Command::Partitions(cmd) => partitions::run(cmd, &mut client, json)
            .await
            .map_err(CliError::Other),
        Command::Up { no_partitions } => up(&mut client, &options, no_partitions, json).await,
        Command::Down => down(&mut client, &options, json).await,
        Command::Status => status(&mut client, json).await,
        Command::Verify => verify(&client, json).await,
        Command::Adopt {
            apply,
            allow_not_valid,
        } => adopt(&mut client, options, apply, allow_not_valid, json).await,
    }
}

/// Checks the host names and (for `up`/`down`) the session for a
/// transaction-mode pooler, says where a changing command acts, connects, and
/// makes sure the commands that read 0024's tables find them.
async fn open(
    cli: &Cli,
    config: &tokio_postgres::Config,
    tls: &TlsOptions,
) -> Result<tokio_postgres::Client, CliError> {
    let check_pooler = !cli.skip_pooler_check_dangerously;
    if check_pooler {
        for host in config.get_hosts() {
            if let Host::Tcp(name) = host {
                sync_connect::pooler::refuse_pooler_host(name)?;
            }
        }
    }
    if let Some(name) = changing_command(&cli.command) {
        // Say where a changing command acts before it does anything.
        eprintln!("sync-migrate {name}: {}", describe_target(config));
    }
    let client = sync_connect::connect(config, tls).await?;
    if matches!(
        cli.command,
        Command::Doctor { .. } | Command::Cleanup | Command::Stats { .. }
    ) {
        require_migrated(&client).await?;
    }
    if check_pooler
        && matches!(
            cli.command,
            Command::Up { .. } | Command::Down | Command::Adopt { apply: true, .. }
        )
    {
        // Two connections: the only way to see an idle transaction-mode pooler.
        let second = sync_connect::connect(config, tls).await?;
        sync_connect::pooler::refuse_transaction_pooler_two_connections(&client, &second).await?;
    }
    Ok(client)
}

/// `up`: apply, then (unless `no_partitions`) ensure the partitions.
async fn up(
    client: &mut tokio_postgres::Client,
    options: &MigrateOptions,
    no_partitions: bool,
    json: bool,
) -> Result<ExitCode, CliError> {
    let report = sync_migrations::apply(client, options).await?;
    let partitions = if no_partitions {
        None
    } else {
        Some(
            sync_migrations::partitions::ensure_partitions(
                client,
                MONTHS_AHEAD,
                &sync_migrations::partitions::PartitionOptions::default(),
                |p| eprintln!("moving rows out of the catch-all: {} moved", p.rows_moved),
            )
            .await
            .map_err(|e| {
                CliError::Other(
                    format!(
                        "the migrations are applied, but creating the activity-log \
                         partitions failed: {e}; run `sync-migrate partitions ensure` \
                         once the cause is fixed"
                    )
                    .into(),
                )
            })?,
        )
    };
    let rollups = sync_migrations::backfill_rollups(client, None, |r| {
        if !json {
            eprintln!(
                "activity rollups: counted {} row(s) of the log, next month {}",
                r.rows_counted,
                r.next_month
                    .map(|t| t.to_string())
                    .unwrap_or_else(|| "none".to_owned())
            );
        }
    })
    .await
    .map_err(|e| {
        CliError::Other(
            format!(
                "the migrations are applied, but the activity-rollup backfill failed: {e}; \
                 the metrics stay exact (they scan the log); run `sync-migrate up` again \
                 to resume it"
            )
            .into(),
        )
    })?;
    if json {
        let mut body = serde_json::to_value(&report).expect("report types serialise");
        body["partitions"] = serde_json::to_value(&partitions).expect("report serialises");
        body["rollups"] = serde_json::to_value(&rollups).expect("report serialises");
        print_json(&body);
    } else if report.applied.is_empty() {
        println!(
            "Nothing to apply: all {} migration(s) already applied.",
            report.already_applied
        );
    } else {
        for m in &report.applied {
            println!("Applied V{}__{}", m.version, m.name);
        }
    }
    if !json && rollups.installed {
        println!(
            "Activity rollups: {}.",
            if rollups.done {
                "backfill done, the metrics read the rollups".to_owned()
            } else if rollups.busy {
                "backfill owed; another session held the rollup state row past the step's lock timeout (a backfill step, a recount, or a writer's open transaction): run `sync-migrate up` again".to_owned()
            } else {
                "backfill owed".to_owned()
            }
        );
    }
    if let (Some(p), false) = (&partitions, json) {
        println!(
            "Activity-log partitions reach {} (current month {} + {MONTHS_AHEAD}); created {}, moved {} row(s).",
            p.through,
            p.current_month,
            p.created.len(),
            p.rows_moved
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `down`: roll back 0025 and 0024.
async fn down(
    client: &mut tokio_postgres::Client,
    options: &MigrateOptions,
    json: bool,
) -> Result<ExitCode, CliError> {
    let outcome = sync_migrations::rollback_0024_dropping_data(client, options).await?;
    if json {
        print_json(&serde_json::json!({ "outcome": outcome }));
    } else {
        match outcome {
            RollbackOutcome::RolledBack => println!("Rolled back 0024."),
            RollbackOutcome::WasNotApplied => {
                println!("0024 was not applied; removed any of its objects that were left.")
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `status`: every migration's state; exit 1 on a changed or unknown one.
async fn status(client: &mut tokio_postgres::Client, json: bool) -> Result<ExitCode, CliError> {
    let lines = sync_migrations::status(client).await?;
    let problems = lines.iter().filter(|l| l.state.is_problem()).count();
    if json {
        print_json(&lines);
    } else {
        println!("{:<8} {:<32} {:<20} State", "Version", "Name", "Checksum");
        for l in &lines {
            let state = match &l.state {
                MigrationState::Applied { applied_on } => {
                    format!("applied {}", applied_on.as_deref().unwrap_or(""))
                }
                MigrationState::ChangedAfterApply {
                    applied_checksum, ..
                } => format!("CHANGED after apply (database checksum {applied_checksum})"),
                MigrationState::Pending => "pending".to_owned(),
                MigrationState::UnknownToThisBuild => "applied, unknown to this build".to_owned(),
            };
            let checksum = l.checksum.map(|c| c.to_string()).unwrap_or_default();
            println!("{:<8} {:<32} {:<20} {}", l.version, l.name, checksum, state);
        }
    }
    if problems > 0 {
        eprintln!(
            "sync-migrate: {problems} migration(s) changed after apply or unknown to this \
             build; `up` refuses this database. Restore the edited migration file, or run \
             a build that includes the unknown one"
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// `verify`: the spec's VERIFICATION RESULTS; exit 1 on any ✗.
async fn verify(client: &tokio_postgres::Client, json: bool) -> Result<ExitCode, CliError> {
    let report = sync_migrations::verify(client).await?;
    if json {
        print_json(&serde_json::json!({ "ok": report.is_ok(), "checks": report.checks }));
    } else {
        print!("{}", report.to_table());
    }
    if !report.is_ok() {
        if !json {
            eprintln!("sync-migrate: verification failed (rows marked ✗)");
        }
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// `adopt [--apply] [--allow-not-valid]`: exit 0 when adoptable (or adopted), 1 when not.
async fn adopt(
    client: &mut tokio_postgres::Client,
    migrate: MigrateOptions,
    apply: bool,
    allow_not_valid: bool,
    json: bool,
) -> Result<ExitCode, CliError> {
    let options = sync_migrations::AdoptOptions {
        apply,
        allow_not_valid,
        migrate,
    };
    let report = sync_migrations::adopt(client, &options).await?;
    if json {
        print_json(&serde_json::json!({
            "adoptable": report.is_adoptable(),
            "already_adopted": report.already_adopted,
            "applied": report.applied,
            "blocking": report.blocking(),
            "differences": report.differences,
            "remaining": report.remaining,
        }));
    } else {
        print!("{}", report.to_table());
    }
    if !report.is_adoptable() {
        if !json {
            eprintln!("sync-migrate: not adoptable (rows marked BLOCKING say what to do)");
        }
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// The name of a command that changes the database, else `None`.
fn changing_command(command: &Command) -> Option<&'static str> {
    match command {
        Command::Up { .. } => Some("up"),
        Command::Down => Some("down"),
        Command::Partitions(_) => Some("partitions"),
        Command::Cleanup => Some("cleanup"),
        Command::Adopt { apply: true, .. } => Some("adopt --apply"),
        _ => None,
    }
}

/// `database "d" on host:port as user "u"`, for every host of `config`.
fn describe_target(config: &tokio_postgres::Config) -> String {
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .map(|h| match h {
            Host::Tcp(name) => format!("{name}:{port}"),
            Host::Unix(path) => format!("{}:{port} (unix socket)", path.display()),
        })
        .collect();
    let user = config.get_user().unwrap_or("?");
    format!(
        "database \"{}\" on {} as user \"{user}\"",
        config.get_dbname().unwrap_or(user),
        if hosts.is_empty() {
            "localhost".to_owned()
        } else {
            hosts.join(", ")
        }
    )
}

/// Refuses a database without 0024's tables: `doctor`, `stats` and `cleanup`
/// would otherwise fail on a missing relation.
async fn require_migrated(client: &tokio_postgres::Client) -> Result<(), CliError> {
    const TABLES: [&str; 3] = ["sync_preview_cache", "sync_progress", "sync_activity_log"];
    let missing: Vec<String> = client
        .query(
            "SELECT t FROM unnest($1::text[]) t WHERE to_regclass(t) IS NULL",
            &[&&TABLES[..]],
        )
        .await
        .map_err(|e| {
            CliError::Other(
                format!(
                    "looking for the sync tables failed: {}",
                    sync_migrations::ServerError::from_pg(&e)
                )
                .into(),
            )
        })?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(CliError::Other(
        format!(
            "this database has no {} (migration 0024 is not applied): apply the migrations \
             first (`sync-migrate up`)",
            missing.join(", ")
        )
        .into(),
    ))
}

fn print_json<T: serde::Serialize>(value: &T) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).expect("report types serialise")
    );
}
