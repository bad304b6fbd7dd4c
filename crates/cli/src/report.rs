//! `tollgate report`: one billing period's report (spend, tokens, carbon
//! and unit cost by team and model, budget status, the most severe
//! decisions, the riskiest nodes) from the rollup tree and the decision
//! logs, as Markdown, HTML or JSON — what `GET /v1/reports/summary` serves.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use tollgate_config::Config;
use tollgate_report::{Decisions, Format, Period, Settings};

#[derive(clap::Args)]
pub(crate) struct ReportArgs {
    #[command(flatten)]
    config: crate::ConfigArg,
    /// YYYY-MM (default: this month, UTC).
    #[arg(long)]
    period: Option<String>,
    /// Only this tenant's (default: every tenant's).
    #[arg(long)]
    tenant: Option<String>,
    /// md, html or json (default: from --out's extension, else md).
    #[arg(long)]
    format: Option<String>,
    /// Write it here (default: standard output).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Default: the config's output.rollup_dir (a directory or s3://bucket/prefix).
    #[arg(long)]
    rollup_dir: Option<PathBuf>,
    /// Default: the config's decisions.log_dir (every instance's log under it).
    #[arg(long)]
    log_dir: Option<PathBuf>,
}

/// `--format`, else the extension of `--out` (`.md`, `.html`, `.json`),
/// else Markdown.
fn format_of(format: Option<&str>, out: Option<&Path>) -> Result<Format> {
    if let Some(f) = format {
        return Ok(Format::parse(f)?);
    }
    let ext = out
        .and_then(|p| p.extension())
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    Ok(match ext.as_deref() {
        Some("html" | "htm") => Format::Html,
        Some("json") => Format::Json,
        _ => Format::Markdown,
    })
}

pub(crate) fn report(a: ReportArgs) -> Result<()> {
    let cfg = Config::load(&a.config.config)?;
    let now_ms = chrono::Utc::now().timestamp_millis();
    let period = match a.period.as_deref() {
        Some(p) => Period::parse(p)?,
        None => Period::of_ms(now_ms),
    };
    let format = format_of(a.format.as_deref(), a.out.as_deref())?;
    let params = crate::gate_eval::policy_params(&cfg)?;
    let settings = Settings::from_params(a.tenant.clone(), &params, now_ms);

    let mut tally = Decisions::new(&period, a.tenant.as_deref(), settings.top);
    let log_root = a.log_dir.unwrap_or_else(|| cfg.decisions.log_dir.clone());
    if log_root.is_dir() {
        for log in tollgate_decision_log::logs_under(&log_root)? {
            tollgate_decision_log::for_each_record(&log, |line| {
                if let Ok(d) = serde_json::from_str(line) {
                    tally.add(&d);
                }
                ControlFlow::Continue(())
            })
            .with_context(|| format!("reading the decision log {}", log.display()))?;
        }
    }

    let root = a
        .rollup_dir
        .unwrap_or_else(|| cfg.output.rollup_dir.clone());
    let ctx = crate::export::rollups_session(&root, a.tenant.as_deref())?;
    let report = crate::runtime()?.block_on(tollgate_report::gather(
        &ctx,
        &period,
        &settings,
        Some(tally),
    ))?;
    let text = report.render(format);
    match &a.out {
        Some(out) => {
            crate::export::write_file(out, text.as_bytes())?;
            eprintln!(
                "report for {}, {}: {:.6} USD, written to {}",
                report.period,
                report.whose(),
                report.total.cost_usd,
                out.display()
            );
        }
        None => print!("{text}"),
    }
    Ok(())
}
