//! `sync-migrate` (minimal stand-in on the `partitions` branch: only the
//! `partitions` subcommands; the full CLI lives on main).

use std::process::ExitCode;

use clap::Parser;

mod partitions;

/// Migrations and partition maintenance for sync-store.
#[derive(Parser, Debug)]
#[command(name = "sync-migrate", version)]
struct Cli {
    /// Database URL (else DATABASE_URL, else the libpq environment / local socket).
    #[arg(long, global = true)]
    database_url: Option<String>,
    /// Print results as JSON.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Partition maintenance of sync_activity_log.
    #[command(subcommand)]
    Partitions(partitions::PartitionsCmd),
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = async {
        let config = sync_migrations::resolve_config(cli.database_url.as_deref())?;
        let mut client = sync_migrations::connect(&config).await?;
        match cli.command {
            Command::Partitions(cmd) => partitions::run(cmd, &mut client, cli.json).await,
        }
    }
    .await;
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
