//! SIGHUP: reload the price book (`[pricing]`), the policy files and the
//! config's `[policies]` section, then the gate rules (`[gates]`).
//! Anything broken is reported and the running set stays in force.

use std::path::PathBuf;
use std::sync::Arc;

use tollgate_config::Config;
use tollgate_pipeline::DecisionStage;
use tracing::{error, info};

/// Reload on every SIGHUP until the signal stream ends.
pub(crate) async fn on_sighup(
    mut hup: tokio::signal::unix::Signal,
    mut cfg: Config,
    path: PathBuf,
    decisions: DecisionStage,
    api: Option<Arc<tollgate_http::AppState>>,
    telemetry: Arc<tollgate_telemetry::metrics::Telemetry>,
) {
    while hup.recv().await.is_some() {
        let mut next = cfg.clone();
        match Config::load(&path) {
            Ok(c) => {
                next.policies = c.policies;
                // The price book first: the policies and the gate read its
                // regions. Every worker and the API take it up at their
                // next event; what was read before keeps its price.
                if c.pricing != next.pricing {
                    match tollgate_enrich::Enricher::new(c.pricing.clone(), cfg.defaults.clone()) {
                        Ok(_) => {
                            let generation = telemetry.pricing.replace(c.pricing.clone());
                            info!(
                                models = c.pricing.models.len(),
                                generation, "price book reloaded"
                            );
                            cfg.pricing = c.pricing.clone();
                            next.pricing = c.pricing;
                        }
                        Err(e) => {
                            error!(error = %e, "price book reload failed; the running price book stays in force")
                        }
                    }
                }
            }
            Err(e) => {
                error!(error = %e, "reload failed: cannot read the config; the running price book, policies and gate rules stay in force");
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
            match next.load_gate_engine(params.clone()) {
                Ok(g) => {
                    info!(revision = g.revision(), "gate rules reloaded");
                    state.gates.replace(g, params);
                }
                Err(e) => {
                    error!(error = %e, "gate reload failed; the running gate rules stay in force")
                }
            }
        }
    }
}
