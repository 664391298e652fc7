//! `sync-migrate partitions list | ensure | archive`.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use sync_migrations::partitions::{
    archive_partitions, archive_partitions_dropping_data, ensure_partitions, list_partitions,
    Month, MoveProgress, PartitionInfo, PartitionOptions, PARTITION_LOCK_KEY,
};
use time::OffsetDateTime;

/// Partition maintenance of `sync_activity_log`.
#[derive(clap::Subcommand, Debug)]
pub(crate) enum PartitionsCmd {
    /// Each partition of sync_activity_log with its bounds, row estimate and size.
    List,
    /// Create monthly partitions through the current month + N and move rows out
    /// of the catch-all `sync_activity_log_future` into their months. Rows are
    /// copied while writers keep writing, in resumable batches; reads and writes
    /// of the table wait only for a short final step. Interrupted (kill, server
    /// restart), it resumes where it stopped when run again.
    Ensure {
        /// How many months after the current (UTC) month must have partitions.
        #[arg(long, default_value_t = 3)]
        months_ahead: u32,
        #[command(flatten)]
        common: Common,
    },
    /// Detach the months before a cut-off (kept as standalone tables unless --drop).
    /// Never touches the current month or the catch-all.
    Archive {
        /// Cut-off month, YYYY-MM: months entirely before it are archived. At most
        /// the current month.
        #[arg(long)]
        before: String,
        /// DROP the archived months with all their rows instead of keeping them.
        #[arg(long)]
        drop: bool,
        #[command(flatten)]
        common: Common,
    },
}

/// Default `--wait-secs`: 30 minutes, long enough for another run to move a
/// large backlog (1 000 000 rows take about 20 s on a small machine).
const DEFAULT_WAIT_SECS: u64 = 1800;

/// Options of the changing `partitions` subcommands.
#[derive(clap::Args, Debug)]
pub(crate) struct Common {
    /// Longest wait, in seconds, for another partition maintenance run (another
    /// replica or CLI) to finish; then this run starts and usually finds nothing
    /// left to do. When the wait runs out the command fails and changes nothing.
    #[arg(long, default_value_t = DEFAULT_WAIT_SECS, value_parser = clap::value_parser!(u64).range(1..=2_000_000))]
    wait_secs: u64,
    /// Longest wait, in seconds, for each table lock (e.g. behind a long
    /// transaction on sync_activity_log); then the command fails and changes nothing.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=2_000_000))]
    lock_timeout_secs: u64,
    /// The instant whose UTC month counts as the current month (RFC 3339, e.g.
    /// 2026-11-15T00:00:00Z); default: the server's clock.
    #[arg(long, value_parser = crate::ops::parse_rfc3339)]
    now: Option<OffsetDateTime>,
    /// `ensure`: 8 KiB heap blocks of the catch-all copied per transaction.
    #[arg(long, default_value_t = sync_migrations::partitions::DEFAULT_COPY_BATCH_BLOCKS, value_parser = clap::value_parser!(u32).range(1..))]
    batch_blocks: u32,
}

impl Common {
    fn options(&self) -> PartitionOptions {
        let mut o =
            PartitionOptions::with_lock_timeout(Duration::from_secs(self.lock_timeout_secs))
                .with_wait_for_other_run(Duration::from_secs(self.wait_secs))
                .with_copy_batch_blocks(self.batch_blocks);
        if let Some(now) = self.now {
            o = o.with_now(now);
        }
        o
    }
}

/// Runs one `partitions` subcommand; results go to stdout (JSON with `json`),
/// progress to stderr.
pub(crate) async fn run(
    cmd: PartitionsCmd,
    client: &mut tokio_postgres::Client,
    json: bool,
) -> Result<ExitCode, Box<dyn std::error::Error>> {
    match cmd {
        PartitionsCmd::List => {
            let parts = list_partitions(client).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&parts)?);
            } else {
                print!("{}", list_table(&parts));
            }
        }
        PartitionsCmd::Ensure {
            months_ahead,
            common,
        } => {
            let options = common.options();
            let progress = |p: MoveProgress| {
                let of = p
                    .rows_estimated
                    .map(|n| format!(" of about {n}"))
                    .unwrap_or_default();
                let _ = writeln!(
                    std::io::stderr(),
                    "moving rows out of the catch-all: {} copied{of}",
                    p.rows_moved
                );
            };
            announce_other_run(client, &options).await;
            let report = ensure_partitions(client, months_ahead, &options, progress).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else if !report.changed() {
                println!(
                    "nothing to do: monthly partitions already reach {} (current month {} + {months_ahead})",
                    report.through, report.current_month
                );
            } else {
                println!(
                    "created {} partition(s){}; catch-all now from {}; moved {} row(s); \
                     sync_activity_log was locked (ACCESS EXCLUSIVE) for {} ms, writes to \
                     organization and auth.users_extended waited up to {} ms",
                    report.created.len(),
                    match (report.created.first(), report.created.last()) {
                        (Some(a), Some(b)) if a != b => format!(" {a} … {b}"),
                        (Some(a), _) => format!(" {a}"),
                        _ => String::new(),
                    },
                    report.catch_all_from.map(show).unwrap_or_default(),
                    report.rows_moved,
                    report.exclusive_lock_held.as_millis(),
                    report.referenced_tables_locked.as_millis()
                );
            }
        }
        PartitionsCmd::Archive {
            before,
            drop,
            common,
        } => {
            let options = common.options();
            let before: Month = before.parse()?;
            announce_other_run(client, &options).await;
            let report = if drop {
                archive_partitions_dropping_data(client, before, &options).await?
            } else {
                archive_partitions(client, before, &options).await?
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else if report.archived.is_empty() {
                println!("nothing to do: no attached month before {before}");
            } else {
                for a in &report.archived {
                    println!(
                        "{} {} ({})",
                        if a.dropped {
                            "dropped"
                        } else {
                            "detached, kept as table"
                        },
                        a.name,
                        a.month
                    );
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Tells stderr when another run holds the partition lock (so a wait is not a
/// silent hang). Best effort: a failing look-up prints nothing.
async fn announce_other_run(client: &tokio_postgres::Client, options: &PartitionOptions) {
    let holder: Option<i32> = client
        .query_opt(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted \
             AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
             AND ((classid::int8 << 32) | objid::int8) = $1 LIMIT 1",
            &[&PARTITION_LOCK_KEY],
        )
        .await
        .ok()
        .flatten()
        .map(|r| r.get(0));
    if let Some(pid) = holder {
        let _ = writeln!(
            std::io::stderr(),
            "another partition maintenance run (backend pid {pid}) holds the partition lock; \
             waiting up to {} s for it (--wait-secs)",
            options.wait_for_other_run.as_secs()
        );
    }
}

fn show(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    if t.time() == time::Time::MIDNIGHT {
        format!("{}", t.date())
    } else {
        format!("{} {} UTC", t.date(), t.time())
    }
}

fn human_bytes(n: i64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", units[u])
    }
}

fn list_table(parts: &[PartitionInfo]) -> String {
    let rows: Vec<[String; 5]> = parts
        .iter()
        .map(|p| {
            [
                p.name.clone(),
                p.from.map(show).unwrap_or_else(|| p.bounds.clone()),
                p.to.map(show).unwrap_or_else(|| "MAXVALUE".into()),
                p.row_estimate
                    .map(|n| n.to_string())
                    .unwrap_or_else(|| "?".into()),
                human_bytes(p.total_bytes),
            ]
        })
        .collect();
    let head = ["partition", "from", "to", "rows (est.)", "size"];
    let mut w = head.map(str::len);
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let line = |c: [&str; 5]| {
        format!(
            "{:<a$}  {:<b$}  {:<c$}  {:>d$}  {:>e$}\n",
            c[0],
            c[1],
            c[2],
            c[3],
            c[4],
            a = w[0],
            b = w[1],
            c = w[2],
            d = w[3],
            e = w[4]
        )
    };
    let mut out = line(head);
    for r in &rows {
        out.push_str(&line([&r[0], &r[1], &r[2], &r[3], &r[4]]));
    }
    out
}
