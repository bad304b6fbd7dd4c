//! SIGHUP: reload the policy files and the config's `[policies]` section,
//! then the gate rules (`[gates]`). Anything broken is reported and the
//! running set stays in force.

use std::path::PathBuf;
use std::sync::Arc;

use tollgate_config::Config;
use tollgate_pipeline::DecisionStage;
use tracing::{error, info};

/// Reload on every SIGHUP until the signal stream ends.
pub(crate) async fn on_sighup(
    mut hup: tokio::signal::unix::Signal,
    cfg: Config,
    path: PathBuf,
    decisions: DecisionStage,
    api: Option<Arc<tollgate_http::AppState>>,
) {
    while hup.recv().await.is_some() {
        let mut next = cfg.clone();
        match Config::load(&path) {
            Ok(c) => next.policies = c.policies,
            Err(e) => {
                error!(error = %e, "policy reload failed: cannot read the config; the running policies stay in force");
                continue;
            }
        }
        match decisions.reload(&next).await {
            Ok(n) => info!(policies = n, "policies reloaded"),
            Err(e) => {
                error!(error = %e, "policy reload failed; the running policies stay in force");
                continue;
            }
        }
        if let Some(state) = &api {
            match Config::load(&path) {
                Ok(c) => next.gates = c.gates,
                Err(e) => {
                    error!(error = %e, "gate reload failed: cannot read the config");
                    continue;
                }
            }
            let params = decisions.engine().params_json();
            match next.load_gate_engine(params) {
                Ok(g) => {
                    info!(revision = g.revision(), "gate rules reloaded");
                    state.gates.replace(g);
                }
                Err(e) => {
                    error!(error = %e, "gate reload failed; the running gate rules stay in force")
                }
            }
        }
    }
}
