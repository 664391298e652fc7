//! `sync-migrate doctor | cleanup | stats`: the spec's TROUBLESHOOTING and
//! MONITORING sections as commands.

use std::process::ExitCode;

use sync_migrations::{Finding, Verdict};
use sync_store::{Store, SyncMetrics};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use uuid::Uuid;

/// Parses an RFC 3339 timestamp (clap value parser: a bad one is a usage error).
pub(crate) fn parse_rfc3339(s: &str) -> Result<OffsetDateTime, String> {
    OffsetDateTime::parse(s, &Rfc3339)
        .map_err(|e| format!("not an RFC 3339 timestamp like 2026-11-01T00:00:00Z: {e}"))
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
    json: bool,
) -> Result<ExitCode, sync_migrations::Error> {
    let findings = sync_migrations::doctor_with(client, user_id, options).await?;
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
        print!("{}", stats_text(&m));
    }
    Ok(ExitCode::SUCCESS)
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

fn stats_text(m: &SyncMetrics) -> String {
    let rows = [
        ("cache: live previews", m.cache_live.to_string()),
        (
            "cache: expired previews (awaiting cleanup)",
            m.cache_expired.to_string(),
        ),
        ("progress: active syncs", m.active_syncs.to_string()),
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
            "activity: success rate (completed)",
            pct(m.success_rate, m.activity_completed),
        ),
        (
            "activity: error rate (failed, completed_with_errors)",
            pct(m.error_rate, m.activity_errors),
        ),
    ];
    let width = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
    rows.iter()
        .map(|(k, v)| format!("  {k:<width$}  {v}\n"))
        .collect()
}
