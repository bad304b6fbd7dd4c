//! `tollgate verify`: every signature and the chain of a decision log.

use anyhow::{bail, Result};

pub(crate) fn verify(dir: &std::path::Path, json: bool) -> Result<()> {
    let ring = tollgate_config::keys::from_process_env(false)?;
    if ring.key_ids().next().is_none() {
        bail!("no verification keys: set SAVE_HMAC_SECRET (or SAVE_HMAC_SECRET_FILE) and/or TOLLGATE_VERIFY_KEYS_FILE");
    }
    let report = tollgate_decision_log::verify_dir(dir, &ring)?;
    if json {
        let bad = report.first_bad.as_ref().map(|b| {
            serde_json::json!({
                "segment": b.segment.display().to_string(),
                "line": b.line,
                "record": b.record,
                "decision_id": b.decision_id,
                "reason": b.reason,
            })
        });
        println!(
            "{}",
            serde_json::json!({
                "ok": report.first_bad.is_none(),
                "records": report.records,
                "segments": report.segments,
                "last_hash": report.last_hash,
                "first_bad": bad,
            })
        );
    }
    match &report.first_bad {
        None => {
            if !json {
                println!(
                    "OK: {} decision(s) in {} segment(s); every signature and chain link verifies; last hash {}",
                    report.records, report.segments, report.last_hash
                );
            }
            Ok(())
        }
        Some(bad) => bail!(
            "verification failed at {bad} ({} record(s) before it verified)",
            report.records
        ),
    }
}
