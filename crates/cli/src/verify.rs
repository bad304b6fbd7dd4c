//! `tollgate verify`: every signature and the chain of a decision log, or of
//! every instance's log under a shared `decisions.log_dir`
//! (`decisions.per_instance`).

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use tollgate_decision_log::VerifyReport;

pub(crate) fn verify(dir: &Path, json: bool) -> Result<()> {
    let ring = tollgate_config::keys::from_process_env(false)?;
    if ring.key_ids().next().is_none() {
        bail!("no verification keys: set SAVE_HMAC_SECRET (or SAVE_HMAC_SECRET_FILE) and/or TOLLGATE_VERIFY_KEYS_FILE");
    }
    let logs = if dir.is_dir() {
        tollgate_decision_log::logs_under(dir)?
    } else {
        Vec::new()
    };
    // One log at `dir` (or none: `verify_dir` says why): the report as always.
    if logs.len() <= 1 && logs.first().is_none_or(|l| l == dir) {
        let report = tollgate_decision_log::verify_dir(dir, &ring)?;
        if json {
            println!("{}", report_json(&report));
        }
        return outcome(dir, &report, json, false);
    }
    let reports = logs
        .iter()
        .map(|l| Ok((l.clone(), tollgate_decision_log::verify_dir(l, &ring)?)))
        .collect::<Result<Vec<(PathBuf, VerifyReport)>>>()?;
    if json {
        let each: Vec<_> = reports
            .iter()
            .map(|(l, r)| {
                let mut v = report_json(r);
                v["dir"] = l.display().to_string().into();
                v
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({
                "ok": reports.iter().all(|(_, r)| r.first_bad.is_none()),
                "logs": each,
            })
        );
    }
    let mut failed = Vec::new();
    for (l, r) in &reports {
        if let Err(e) = outcome(l, r, json, true) {
            failed.push(e.to_string());
        }
    }
    if !failed.is_empty() {
        bail!("{}", failed.join("; "));
    }
    if !json {
        let records: u64 = reports.iter().map(|(_, r)| r.records).sum();
        println!(
            "OK: {} instance log(s) under {}, {records} decision(s) in all",
            reports.len(),
            dir.display()
        );
    }
    Ok(())
}

fn report_json(report: &VerifyReport) -> serde_json::Value {
    let bad = report.first_bad.as_ref().map(|b| {
        serde_json::json!({
            "segment": b.segment.display().to_string(),
            "line": b.line,
            "record": b.record,
            "decision_id": b.decision_id,
            "reason": b.reason,
        })
    });
    serde_json::json!({
        "ok": report.first_bad.is_none(),
        "records": report.records,
        "segments": report.segments,
        "last_hash": report.last_hash,
        "first_bad": bad,
    })
}

/// Print the OK line (unless `json`), or the error naming the first bad
/// record; `named`: say which log.
fn outcome(dir: &Path, report: &VerifyReport, json: bool, named: bool) -> Result<()> {
    let which = if named {
        format!("{}: ", dir.display())
    } else {
        String::new()
    };
    match &report.first_bad {
        None => {
            if !json {
                println!(
                    "OK: {which}{} decision(s) in {} segment(s); every signature and chain link verifies; last hash {}",
                    report.records, report.segments, report.last_hash
                );
            }
            Ok(())
        }
        Some(bad) => bail!(
            "{which}verification failed at {bad} ({} record(s) before it verified)",
            report.records
        ),
    }
}
