//! `tollgate policy test`: every policy's fixtures.

use std::path::PathBuf;

use anyhow::{bail, Result};
use tollgate_config::Config;

use crate::runtime;

pub(crate) fn policy_test(config: &std::path::Path, dir: Option<PathBuf>) -> Result<()> {
    let cfg = Config::load(config)?;
    let dir = dir.unwrap_or_else(|| cfg.policies.dir.clone());
    let regions = cfg.region_intensities();
    let results = runtime()?.block_on(tollgate_policy::fixture::run_dir(
        &dir,
        tollgate_rollup::schema(),
        regions,
    ))?;
    let mut failed = 0;
    for r in &results {
        let verdict = if r.passed() { "PASS" } else { "FAIL" };
        println!("{verdict}: {}: {} ({})", r.policy, r.case, r.file.display());
        for f in &r.failures {
            println!("    {f}");
        }
        failed += usize::from(!r.passed());
    }
    println!("{}", "-".repeat(40));
    println!("PASS: {}/{}", results.len() - failed, results.len());
    if failed > 0 {
        bail!("{failed} policy test(s) failed");
    }
    Ok(())
}
