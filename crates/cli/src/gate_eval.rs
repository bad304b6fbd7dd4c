//! `tollgate gate eval`: the gate's engine over NDJSON inputs, offline.

use anyhow::{Context, Result};
use tollgate_config::Config;

use crate::runtime;

/// The policies' effective thresholds (their `[params]` with the config's
/// overrides), as the gate rules and reports read them.
pub(crate) fn policy_params(cfg: &Config) -> Result<serde_json::Map<String, serde_json::Value>> {
    let engine = runtime()?.block_on(tollgate_policy::PolicyEngine::load(
        tollgate_policy::EngineOptions {
            dir: cfg.policies.dir.clone(),
            params: cfg.policies.params.clone(),
            disabled: cfg.policies.disabled.clone(),
            file_schema: tollgate_rollup::schema(),
            history: None,
            regions: cfg.region_intensities(),
        },
    ))?;
    Ok(engine.params_json())
}

pub(crate) fn gate_eval(config: &std::path::Path, print_data: bool) -> Result<()> {
    use std::io::{BufRead, Write};
    let cfg = Config::load(config)?;
    let params = policy_params(&cfg)?;
    let mut out = std::io::stdout().lock();
    if print_data {
        let data = cfg.gate_data(params);
        writeln!(out, "{data}")?;
        return Ok(());
    }
    let gates = cfg
        .load_gate_engine(params)
        .with_context(|| format!("cannot load the gate rules in {}", cfg.gates.dir.display()))?;
    for (n, line) in std::io::stdin().lock().lines().enumerate() {
        let line = line.context("read stdin")?;
        if line.trim().is_empty() {
            continue;
        }
        let input: serde_json::Value =
            serde_json::from_str(&line).with_context(|| format!("line {}: not JSON", n + 1))?;
        let outcome = gates.evaluate(&input);
        let mut packages = serde_json::Map::new();
        for p in gates.packages() {
            let path: Vec<&str> = p.name.split('.').collect();
            let v = match gates.data(&path, Some(&input)) {
                Ok(v) => v.unwrap_or(serde_json::Value::Null),
                Err(e) => serde_json::json!({"error": e.to_string()}),
            };
            packages.insert(p.name.clone(), v);
        }
        let line = serde_json::json!({
            "allow": outcome.allow,
            "violations": outcome.violations,
            "packages": packages,
        });
        writeln!(out, "{line}")?;
    }
    Ok(())
}
