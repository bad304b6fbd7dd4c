//! Several workers in one process: `pipeline.workers` consumers of the same
//! group, each on its own thread with its own partitions, windows and writer
//! thread, sharing the decision stage (policies, the decision log's writer,
//! the decisions producer) and the live view. A worker is what another
//! instance would be: the group's coordinator splits the partitions between
//! them exactly as between processes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tollgate_config::Config;
use tollgate_telemetry::Telemetry;
use tracing::warn;

use crate::{run_pipeline, DecisionStage, PipelineError, RunOptions, RunOutcome};

/// One run of `n` workers, each on a thread of its own. The first error
/// stops the others (each commits what is written) and is returned. With
/// `exit_when_idle`, each worker returns once the group's whole input is
/// committed to its end, so the run is drained when they all have.
pub fn run_workers(
    cfg: &Config,
    opts: &RunOptions,
    n: usize,
    telemetry: &Arc<Telemetry>,
    decisions: &DecisionStage,
) -> Result<RunOutcome, PipelineError> {
    telemetry.live.health.set_workers(n);
    let stop = Arc::new(AtomicBool::new(false));
    std::thread::scope(|scope| {
        let mut first_error = None;
        let mut running = Vec::with_capacity(n);
        for worker in 0..n {
            let opts = RunOptions {
                stop: stop.clone(),
                worker,
                ..opts.clone()
            };
            let spawned = std::thread::Builder::new()
                .name(format!("tollgate-worker-{worker}"))
                .spawn_scoped(scope, move || {
                    run_pipeline(cfg, &opts, telemetry, decisions)
                });
            match spawned {
                Ok(h) => running.push((worker, h)),
                Err(e) => {
                    // The ones started stop too (the scope waits for them).
                    stop.store(true, Ordering::Relaxed);
                    first_error = Some(PipelineError::Config(format!(
                        "cannot start a worker thread: {e}"
                    )));
                    break;
                }
            }
        }
        let mut drained = false;
        while !running.is_empty() {
            std::thread::sleep(Duration::from_millis(50));
            if opts.stop.load(Ordering::Relaxed) {
                stop.store(true, Ordering::Relaxed);
            }
            let (done, still): (Vec<_>, Vec<_>) =
                running.into_iter().partition(|(_, h)| h.is_finished());
            running = still;
            for (worker, h) in done {
                let result = h.join().unwrap_or_else(|_| {
                    Err(PipelineError::Config(format!(
                        "worker {worker} panicked (the panic is in the log above)"
                    )))
                });
                match result {
                    Ok(RunOutcome::Drained) => drained = true,
                    Ok(RunOutcome::Stopped) => {}
                    Err(e) => {
                        warn!(worker, error = %e, "worker stopped with an error; stopping the others");
                        stop.store(true, Ordering::Relaxed);
                        first_error.get_or_insert(e);
                    }
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None if drained && !opts.stop.load(Ordering::Relaxed) => Ok(RunOutcome::Drained),
            None => Ok(RunOutcome::Stopped),
        }
    })
}
