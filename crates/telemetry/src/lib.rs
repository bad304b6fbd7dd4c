//! Telemetry of a running Tollgate: the read model the HTTP API and the
//! gate see ([`live`]: open windows, the month ledger, consumer health),
//! the shared spend of every instance ([`spend`]), the pipeline's counters ([`Stats`], [`metrics::EventCounters`]) and the
//! Prometheus families built from them at scrape time ([`Telemetry`]).
//!
//! The pipeline writes here; the API reads. Neither depends on the other:
//! this crate is the only thing they share about a running process.

pub mod live;
pub mod metrics;
pub mod spend;
mod stats;

pub use metrics::Telemetry;
pub use stats::{Stats, StatsSnapshot};
