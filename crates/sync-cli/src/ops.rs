//! `sync-migrate doctor | cleanup | stats`: the spec's TROUBLESHOOTING and
//! MONITORING sections as commands.

use std::process::ExitCode;

use sync_migrations::{Finding, Verdict};
use sync_store::{ActivitySource, Store, SyncMetrics, SyncOutcomes};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use uuid::Uuid;

/// Parses an RFC 3339 timestamp (clap value parser: a bad one is a usage error).
pub(crate) fn parse_rfc3339(s: &str) -> Result<OffsetDateTime, String> {
    OffsetDateTime::parse(s, &Rfc3339)
        .map_err(|e| format!("not an RFC 3339 timestamp like 2026-11-01T00:00:00Z: {e}"))
}

/// Connects to the replica of `doctor --replica-url` (bounded like every
/// connection); a failure is the check's finding, not an error of the run.
pub(crate) async fn connect_replica(
    url: &str,
    ca_file: Option<&std::path::Path>,
) -> Result<tokio_postgres::Client, String> {
    let config =
        sync_connect::resolve_config(Some(url)).map_err(|e| format!("--replica-url: {e}"))?;
    let tls = sync_connect::TlsOptions::resolve(Some(url), ca_file)
        .map_err(|e| format!("--replica-url TLS settings: {e}"))?;
    sync_connect::connect(&config, &tls)
        .await
        .map_err(|e| format!("connecting to the replica: {e}"))
}

fn label(v: Verdict) -> &'static str {
    match v {
        Verdict::Pass => "PASS",
        Verdict::Warn => "WARN",
        Verdict::Fail => "FAIL",
        Verdict::Skip => "SKIP",
    }
}

/// Runs the doctor; exit code 1 when any check failed.
pub(crate) async fn doctor(
    client: &tokio_postgres::Client,
    user_id: Option<Uuid>,
    options: &sync_migrations::DoctorOptions,
    replica: Option<Result<tokio_postgres::Client, String>>,
    json: bool,
) -> Result<ExitCode, sync_migrations::Error> {
    let mut findings = sync_migrations::doctor_with(client, user_id, options).await?;
    match replica {
        None => {}
        Some(Ok(replica)) => findings.push(sync_migrations::replica_lag(client, &replica).await?),
        Some(Err(reason)) => findings.push(Finding {
            check: "replica_lag",
            verdict: Verdict::Fail,
            found: reason,
            fix: "check --replica-url, that the standby runs and that this role may log in there"
                .to_owned(),
        }),
    }
    let failed = findings
        .iter()
        .filter(|f| f.verdict == Verdict::Fail)
        .count();
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "ok": failed == 0,
                "findings": findings,
            }))
            .expect("findings serialise")
        );
    } else {
        print!("{}", doctor_text(&findings));
    }
    if failed > 0 {
        if !json {
            eprintln!("sync-migrate: doctor found {failed} failing check(s) (lines marked FAIL)");
        }
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

fn doctor_text(findings: &[Finding]) -> String {
    let width = findings.iter().map(|f| f.check.len()).max().unwrap_or(0);
    let mut out = String::new();
    for f in findings {
        out.push_str(&format!(
            "{}  {:<width$}  {}\n",
            label(f.verdict),
            f.check,
            f.found
        ));
        if !f.fix.is_empty() && f.verdict != Verdict::Pass {
            out.push_str(&format!("      {:<width$}  → {}\n", "", f.fix));
        }
    }
    out
}

/// Deletes expired previews of every org.
pub(crate) async fn cleanup(store: &Store, json: bool) -> Result<ExitCode, sync_store::Error> {
    let deleted = store.service().cleanup_expired_previews_all_orgs().await?;
    if json {
        println!("{}", serde_json::json!({ "deleted": deleted }));
    } else {
        println!("deleted {deleted} expired preview(s)");
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints the MONITORING metrics of one org, or of all orgs.
pub(crate) async fn stats(
    store: &Store,
    org: Option<Uuid>,
    since: Option<OffsetDateTime>,
    json: bool,
) -> Result<ExitCode, sync_store::Error> {
    let svc = store.service();
    let m = match org {
        Some(org) => svc.metrics(org, since).await?,
        None => svc.metrics_all_orgs(since).await?,
    };
    let since_text = since.map(|t| t.format(&Rfc3339).expect("formats"));
    if json {
        let mut body = serde_json::to_value(m).expect("metrics serialise");
        body["org"] = serde_json::json!(org);
        body["since"] = serde_json::json!(since_text);
        body["outcomes"] = outcomes_json(&m.outcomes);
        body["definitions"] = serde_json::json!({
            "success_rate": SPEC_SUCCESS_RATE,
            "error_rate": SPEC_ERROR_RATE,
            "outcomes": OUTCOMES_DEFINITION,
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&body).expect("metrics serialise")
        );
    } else {
        let scope = match org {
            Some(org) => format!("org {org}"),
            None => "all orgs".to_owned(),
        };
        let window = match &since_text {
            Some(t) => format!("activity since {t}"),
            None => "all activity".to_owned(),
        };
        println!("Monitoring metrics ({scope}, {window})");
        println!(
            "Activity counted from: {}",
            match m.activity_source {
                ActivitySource::Rollup => "the rollups (migration 0026)",
                _ => "a scan of the log (the rollup backfill is owed: run `sync-migrate up`)",
            }
        );
        print!("{}", stats_text(&m));
        println!();
        println!("Spec success/error rate: {SPEC_SUCCESS_RATE}; {SPEC_ERROR_RATE}.");
        println!("Sync outcomes: {OUTCOMES_DEFINITION}.");
    }
    Ok(ExitCode::SUCCESS)
}

/// What the spec's success rate counts (its MONITORING formula, unchanged).
const SPEC_SUCCESS_RATE: &str = "the spec's formula: entries with status completed / all activity \
     entries (sync_start, progress and record rows included; not the share of syncs that succeeded)";
/// What the spec's error rate counts.
const SPEC_ERROR_RATE: &str = "the spec's formula: entries with status failed or \
     completed_with_errors / all activity entries";
/// Which rows the outcome breakdown counts.
const OUTCOMES_DEFINITION: &str = "only the entries that end a sync (action sync_complete, \
     sync_fail or sync_cancel; one per finished sync), by status: completed, \
     completed_with_errors, failed, cancelled, other (any other status); the shares sum to 100 %, \
     and completed's share is the sync success rate";

/// The outcome breakdown with counts and shares (`share` is `null` when no sync ended).
fn outcomes_json(o: &SyncOutcomes) -> serde_json::Value {
    let entry = |n: i64| serde_json::json!({ "count": n, "share": o.share(n) });
    serde_json::json!({
        "ended": o.ended,
        "completed": entry(o.completed),
        "completed_with_errors": entry(o.completed_with_errors),
        "failed": entry(o.failed),
        "cancelled": entry(o.cancelled),
        "other": entry(o.other),
    })
}

fn opt(v: Option<f64>, unit: &str) -> String {
    v.map(|v| format!("{v:.2}{unit}"))
        .unwrap_or_else(|| "n/a".to_owned())
}

/// A rate with its count, e.g. `93.3 % (233)`; `n/a` without activity.
fn pct(v: Option<f64>, n: i64) -> String {
    v.map(|v| format!("{:.1} % ({n})", v * 100.0))
        .unwrap_or_else(|| "n/a (no activity)".to_owned())
}

/// A share of the ended syncs with its count, e.g. `66.7 % (2)`.
fn outcome(o: &SyncOutcomes, n: i64) -> String {
    o.share(n)
        .map(|v| format!("{:.1} % ({n})", v * 100.0))
        .unwrap_or_else(|| "n/a (no sync ended)".to_owned())
}

fn stats_text(m: &SyncMetrics) -> String {
    let rows = [
        ("cache: live previews", m.cache_live.to_string()),
        (
            "cache: expired previews (awaiting cleanup)",
            m.cache_expired.to_string(),
        ),
        ("progress: active syncs", m.active_syncs.to_string()),
        (
            "progress: stalled syncs (no heartbeat within stall_after)",
            m.stalled_syncs.to_string(),
        ),
        (
            "progress: average speed",
            opt(m.avg_speed_items_per_min, " items/min"),
        ),
        (
            "progress: average duration",
            opt(m.avg_duration_seconds, " s"),
        ),
        ("activity: entries", m.activity_total.to_string()),
        (
            "activity: spec success rate (completed / all entries)",
            pct(m.success_rate, m.activity_completed),
        ),
        (
            "activity: spec error rate (failed, completed_with_errors / all entries)",
            pct(m.error_rate, m.activity_errors),
        ),
        ("syncs ended (sync_complete, sync_fail, sync_cancel)", {
            m.outcomes.ended.to_string()
        }),
        (
            "  completed (sync success rate)",
            outcome(&m.outcomes, m.outcomes.completed),
        ),
        (
            "  completed_with_errors",
            outcome(&m.outcomes, m.outcomes.completed_with_errors),
        ),
        ("  failed", outcome(&m.outcomes, m.outcomes.failed)),
        ("  cancelled", outcome(&m.outcomes, m.outcomes.cancelled)),
        ("  other", outcome(&m.outcomes, m.outcomes.other)),
    ];
    let width = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
    rows.iter()
        .map(|(k, v)| format!("  {k:<width$}  {v}\n"))
        .collect()
}
