//! `tollgate produce`: synthetic events to the event topics.

use std::time::{Duration, Instant};

use anyhow::Result;
use tollgate_config::Config;
use tracing::info;

use crate::runtime;

pub(crate) fn produce(cfg: Config, spec: tollgate_loadgen::LoadSpec, rate: u64) -> Result<()> {
    tollgate_kafka::wait_for_broker(&cfg, Duration::from_secs(120))?;
    if cfg.kafka.create_topics {
        runtime()?.block_on(tollgate_kafka::ensure_topics(&cfg))?;
    }
    let total = spec.count;
    let started = Instant::now();
    let sent = tollgate_loadgen::produce(&cfg, spec, rate, |n| {
        let secs = started.elapsed().as_secs_f64().max(1e-9);
        eprintln!("produced {n}/{total} ({:.0} events/s)", n as f64 / secs);
    })?;
    info!(
        sent,
        seconds = started.elapsed().as_secs_f64(),
        "produce finished"
    );
    Ok(())
}
