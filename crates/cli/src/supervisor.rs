//! The restart loop of `tollgate run`: wait for the broker, create the
//! topics, run the pipeline's workers (`pipeline.workers` consumers of the
//! group, one thread each); on an error that a restart can fix, stop them
//! all and start again from the committed offsets (exponential backoff); on
//! one that it cannot (broker unreachable for `max_wait`, a committed offset
//! past the log's end), stop and say why.
//!
//! The workers restart together: each run starts from the rollup files as
//! they are (the live month totals are seeded from them once per run), so a
//! window is never counted both in a file and in a worker's memory.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use tollgate_config::Config;
use tollgate_pipeline::{DecisionStage, PipelineError, RunOptions, RunOutcome};
use tollgate_telemetry::Telemetry;
use tracing::{error, info, warn};

/// Run the pipeline until it finishes or is stopped, restarting it after
/// errors; `cfg.kafka.instance_id` changes when the group must be rejoined
/// as a new static member.
pub(crate) fn supervise(
    cfg: &mut Config,
    rt: &tokio::runtime::Runtime,
    opts: &RunOptions,
    telemetry: &Arc<Telemetry>,
    decisions: &DecisionStage,
    serve_http: bool,
    max_wait: Duration,
) -> Result<RunOutcome> {
    let mut backoff = Duration::from_millis(500);
    let mut restarts = 0u32;
    let base_instance = cfg.kafka.instance_id.clone();
    let workers = cfg.workers();
    info!(workers, "pipeline workers");
    if serve_http && cfg.spend.enabled() {
        // The gate answers from every instance's spend (`[spend]`).
        crate::spend_reader::spawn(cfg, telemetry)?;
    }
    let outcome = loop {
        if opts.stop.load(Ordering::Relaxed) {
            break RunOutcome::Stopped;
        }
        if serve_http {
            // The live month totals start from the files already written.
            match tollgate_telemetry::live::Ledger::from_rollups(&decisions.output.rollups) {
                Ok(l) => {
                    info!(
                        teams = l.teams(),
                        "live month totals seeded from the rollups"
                    );
                    telemetry.live.set_seed(l)
                }
                Err(e) => {
                    error!(error = %e, "cannot read this month's rollups; the gate answers 503 until they can be read");
                    telemetry.live.seed_failed();
                }
            }
        }
        let attempt = (|| {
            tollgate_kafka::wait_for_broker(cfg, max_wait)?;
            if cfg.kafka.create_topics {
                rt.block_on(tollgate_kafka::ensure_topics(cfg))?;
            }
            tollgate_pipeline::run_workers(cfg, opts, workers, telemetry, decisions)
        })();
        match attempt {
            Ok(o) => break o,
            // Nothing a restart changes: the operator has to act.
            Err(
                e @ (PipelineError::Broker(tollgate_kafka::BrokerError::Unreachable { .. })
                | PipelineError::CommittedBeyondLog { .. }),
            ) => return Err(e.into()),
            Err(e @ PipelineError::Unassigned(_)) => {
                // The coordinator keeps this static member stuck without
                // partitions (tansu 0.6 after a broker restart): come back
                // as a new static member; the stuck one expires.
                restarts += 1;
                // A dynamic member (no instance id, or "") stays dynamic.
                cfg.kafka.instance_id = base_instance
                    .as_ref()
                    .filter(|b| !b.is_empty())
                    .map(|b| format!("{b}-r{restarts}"));
                warn!(error = %e, instance = ?cfg.kafka.instance_id, "rejoining the consumer group with a new client");
            }
            Err(e) => {
                warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "pipeline stopped with an error; restarting from the committed offsets");
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    };
    Ok(outcome)
}
