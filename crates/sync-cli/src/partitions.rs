//! `sync-migrate partitions list | ensure | archive | restore`.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use sync_migrations::partitions::{
    archive_partitions, archive_partitions_dropping_data, archive_partitions_exporting,
    ensure_partitions, list_partitions, restore_partition, ArchivePhase, ArchiveProgress,
    ExportOptions, Month, MoveProgress, OrphanPolicy, PartitionInfo, PartitionOptions,
    RestoreOptions, PARTITION_LOCK_KEY,
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
    /// Detach the months before a cut-off: exported to files and dropped
    /// (--export DIR), kept as standalone tables (no flag), or dropped (--drop).
    /// Never touches the current month or the catch-all.
    #[command(group(clap::ArgGroup::new("cutoff").required(true).args(["before", "older_than"])))]
    Archive {
        /// Cut-off month, YYYY-MM: months entirely before it are archived. At most
        /// the current month.
        #[arg(long)]
        before: Option<String>,
        /// Retention: archive the months entirely before (current month - AGE),
        /// i.e. keep the current month and the AGE months before it. AGE is
        /// `<n>mo` (months) or `<n>y` (years), e.g. 13mo.
        #[arg(long, value_name = "AGE", value_parser = parse_age)]
        older_than: Option<u32>,
        /// DROP the archived months with all their rows instead of keeping them.
        #[arg(long, conflicts_with = "export")]
        drop: bool,
        /// Write each month to DIR first (a zstd-compressed binary COPY plus a
        /// JSON manifest with rows, bounds, columns and SHA-256), re-read and
        /// verify it, then detach and drop the table: the file is the archive.
        #[arg(long, value_name = "DIR")]
        export: Option<std::path::PathBuf>,
        /// With --export: keep each detached table as well.
        #[arg(long, requires = "export")]
        keep_table: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Bring an exported month back (FILE: its .manifest.json or .copy.zst):
    /// verified against the manifest, attached with RLS, indexes, TRUNCATE guard
    /// and grants as `ensure` creates partitions; merged into the month when it
    /// is attached already (refused if any row is already there). A month inside
    /// the catch-all is split out by `ensure` first.
    Restore {
        /// The manifest (*.manifest.json) or data file (*.copy.zst).
        file: std::path::PathBuf,
        /// Rows whose organization or user no longer exists: refuse (report
        /// counts and sample ids, write nothing), skip them, or as-deleted
        /// (skip rows of missing organizations, clear user_id of missing users,
        /// as the foreign keys' ON DELETE would have).
        #[arg(long, value_enum, default_value_t = Orphans::Refuse)]
        orphans: Orphans,
        /// When the month lies in the catch-all: months ahead for the `ensure`
        /// that splits it first.
        #[arg(long, default_value_t = 3)]
        months_ahead: u32,
        #[command(flatten)]
        common: Common,
    },
}

/// `--orphans` of `partitions restore`.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub(crate) enum Orphans {
    /// Refuse the restore, reporting counts and sample ids.
    Refuse,
    /// Leave those rows out.
    Skip,
    /// As the foreign keys' ON DELETE would have: rows of missing orgs left
    /// out, user_id of missing users cleared.
    AsDeleted,
}

/// Parses a retention age, `<n>mo` or `<n>y`, into months (1..=1200).
fn parse_age(s: &str) -> Result<u32, String> {
    let (n, per) = if let Some(n) = s.strip_suffix("mo") {
        (n, 1)
    } else if let Some(n) = s.strip_suffix('y') {
        (n, 12)
    } else {
        return Err(format!("{s:?}: expected <n>mo or <n>y, e.g. 13mo"));
    };
    let n: u32 = n
        .parse()
        .map_err(|_| format!("{s:?}: expected <n>mo or <n>y, e.g. 13mo"))?;
    match n.checked_mul(per) {
        Some(m) if (1..=1200).contains(&m) => Ok(m),
        _ => Err(format!("{s:?}: the age must be 1 to 1200 months")),
    }
}

/// A progress bar on stderr (hidden when stderr is not a terminal).
fn progress_bar() -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg:32} [{bar:30}] {pos}/{len} rows ({elapsed})")
            .expect("static template")
            .progress_chars("=> "),
    );
    bar
}

fn show_progress(bar: &indicatif::ProgressBar, p: &ArchiveProgress) {
    let phase = match p.phase {
        ArchivePhase::Exporting => "writing",
        ArchivePhase::Verifying => "verifying",
        ArchivePhase::Detaching => "detaching",
        _ => "working",
    };
    bar.set_message(format!("{} ({}/{}) {phase}", p.month, p.index, p.of));
    bar.set_length(p.rows_expected.unwrap_or(0).max(p.rows));
    bar.set_position(p.rows);
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
            older_than,
            drop,
            export,
            keep_table,
            common,
        } => {
            let options = common.options();
            let before: Month = match (before, older_than) {
                (Some(b), _) => b.parse()?,
                (None, Some(age)) => {
                    let now: OffsetDateTime = match options.now {
                        Some(now) => now,
                        None => client.query_one("SELECT now()", &[]).await?.get(0),
                    };
                    Month::containing(now)?.minus(age)
                }
                (None, None) => unreachable!("clap requires --before or --older-than"),
            };
            announce_other_run(client, &options).await;
            let report = if let Some(dir) = export {
                let bar = progress_bar();
                let export = ExportOptions::new(dir).keep_table(keep_table);
                let r = archive_partitions_exporting(client, before, &export, &options, |p| {
                    show_progress(&bar, p)
                })
                .await;
                bar.finish_and_clear();
                r?
            } else if drop {
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
                    let what = match (&a.export, a.dropped) {
                        (Some(e), dropped) => format!(
                            "exported {} row(s) to {} (sha256 {}){}",
                            e.rows,
                            e.manifest_file.display(),
                            e.sha256,
                            if dropped {
                                ", dropped"
                            } else {
                                ", detached, kept as table"
                            }
                        ),
                        (None, true) => "dropped".to_owned(),
                        (None, false) => "detached, kept as table".to_owned(),
                    };
                    println!("{} ({}): {what}", a.name, a.month);
                }
            }
        }
        PartitionsCmd::Restore {
            file,
            orphans,
            months_ahead,
            common,
        } => {
            let options = common.options();
            let mut restore = RestoreOptions::default().with_orphans(match orphans {
                Orphans::Refuse => OrphanPolicy::Refuse,
                Orphans::Skip => OrphanPolicy::Skip,
                Orphans::AsDeleted => OrphanPolicy::AsDeleted,
            });
            restore.months_ahead = months_ahead;
            announce_other_run(client, &options).await;
            let bar = progress_bar();
            let r = restore_partition(client, &file, &restore, &options, |p| {
                show_progress(&bar, p)
            })
            .await;
            bar.finish_and_clear();
            let report = r?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!(
                    "restored {} of {} row(s) of {} into {}{}{}",
                    report.rows_restored,
                    report.rows_in_file,
                    report.month,
                    report.partition,
                    if report.merged {
                        " (merged with its rows)"
                    } else {
                        ""
                    },
                    if report.ensured_first {
                        "; ensure split the catch-all first"
                    } else {
                        ""
                    },
                );
                if report.orphan_org_rows + report.orphan_user_rows > 0 {
                    println!(
                        "{} row(s) of missing organizations (e.g. {:?}), {} of missing users (e.g. {:?}) treated as --orphans {:?}",
                        report.orphan_org_rows,
                        report.sample_org_ids,
                        report.orphan_user_rows,
                        report.sample_user_ids,
                        orphans
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

#[cfg(test)]
mod tests {
    use super::parse_age;

    #[test]
    fn retention_ages_are_months_or_years() {
        assert_eq!(parse_age("13mo"), Ok(13));
        assert_eq!(parse_age("1mo"), Ok(1));
        assert_eq!(parse_age("2y"), Ok(24));
        assert_eq!(parse_age("100y"), Ok(1200));
        for bad in [
            "0mo",
            "13",
            "13m",
            "mo",
            "-1mo",
            "101y",
            "1.5y",
            "13 mo",
            "99999999999mo",
        ] {
            assert!(parse_age(bad).is_err(), "{bad}");
        }
    }
}
