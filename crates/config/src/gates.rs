//! The gate rules as configured: the `*.rego` modules of `[gates] dir`,
//! compiled with `data.tollgate` assembled from the config (the window
//! policies' effective thresholds, `[gates.params]`, the price book's
//! regions). One loader for `tollgate run`, its SIGHUP reload, `tollgate
//! gate eval` and the benches.

use std::path::Path;

use serde_json::{json, Map, Value};
use tollgate_gate::{GateEngine, GateError};

use crate::Config;

#[derive(Debug, thiserror::Error)]
pub enum GateLoadError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Gate(#[from] GateError),
}

impl Config {
    /// Compile the gate modules of `[gates] dir` with [`Self::gate_data`].
    /// Threshold checks the rules find missing are logged here (every gate
    /// answer denies until they are fixed).
    pub fn load_gate_engine(
        &self,
        policy_params: Map<String, Value>,
    ) -> Result<GateEngine, GateLoadError> {
        let engine = GateEngine::compile_packages(
            self.gate_modules()?,
            self.gate_data(policy_params),
            &self.gates.packages,
            self.gates.strict_builtin_errors,
        )?;
        for v in engine.misconfigured() {
            tracing::warn!(rule = %v.rule, "gate misconfigured, every gate answer denies until fixed: {}", v.message);
        }
        Ok(engine)
    }

    /// The `*.rego` files of `[gates] dir`: `(path, text)`.
    pub fn gate_modules(&self) -> Result<Vec<(String, String)>, GateLoadError> {
        let dir = &self.gates.dir;
        let read = |p: &Path| {
            let path = p.display().to_string();
            move |source| GateLoadError::Read { path, source }
        };
        let mut modules = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(read(dir))? {
            let path = entry.map_err(read(dir))?.path();
            if path.extension().is_some_and(|x| x == "rego") {
                let text = std::fs::read_to_string(&path).map_err(read(&path))?;
                modules.push((path.to_string_lossy().into_owned(), text));
            }
        }
        Ok(modules)
    }

    /// `data.tollgate` of the gate rules: `policy_params` (the window
    /// policies' effective parameters, by policy) with `[gates.params]` as
    /// `params.gates`, and the price book's regions (`{region: g/kWh}`).
    pub fn gate_data(&self, policy_params: Map<String, Value>) -> Value {
        let mut params = policy_params;
        params.insert(
            "gates".into(),
            serde_json::to_value(&self.gates.params).unwrap_or(Value::Null),
        );
        let regions: Map<String, Value> = self
            .region_intensities()
            .into_iter()
            .map(|(region, g)| (region, json!(g)))
            .collect();
        json!({"params": params, "regions": regions})
    }
}
