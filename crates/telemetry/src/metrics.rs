//! Prometheus view of the pipeline. Hot-path counters stay plain atomics
//! ([`Stats`], [`EventCounters`]) and are turned into metric families only
//! when `/metrics` is scraped; histograms and labelled counters are updated
//! once per window or commit, never per event.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{
    exponential_buckets, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry,
};
use tollgate_event::Kind;
use tollgate_window::{DimsRef, Measures};

use crate::live::Live;
use crate::Stats;

/// What happened to a consumed event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Accepted = 0,
    Duplicate = 1,
    Late = 2,
    ReplaySkipped = 3,
    DeadLettered = 4,
}

impl Outcome {
    pub const ALL: [Outcome; 5] = [
        Outcome::Accepted,
        Outcome::Duplicate,
        Outcome::Late,
        Outcome::ReplaySkipped,
        Outcome::DeadLettered,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Accepted => "accepted",
            Outcome::Duplicate => "duplicate",
            Outcome::Late => "late",
            Outcome::ReplaySkipped => "replay_skipped",
            Outcome::DeadLettered => "dead_lettered",
        }
    }
}

/// Events by kind and outcome (relaxed atomics; one add per event).
#[derive(Debug, Default)]
pub struct EventCounters([[AtomicU64; 5]; 3]);

impl EventCounters {
    #[inline]
    pub fn add(&self, kind: Kind, outcome: Outcome) {
        self.0[kind as usize][outcome as usize].fetch_add(1, Relaxed);
    }

    pub fn get(&self, kind: Kind, outcome: Outcome) -> u64 {
        self.0[kind as usize][outcome as usize].load(Relaxed)
    }

    /// Events with `outcome`, over every kind.
    pub fn total(&self, outcome: Outcome) -> u64 {
        Kind::ALL.iter().map(|&k| self.get(k, outcome)).sum()
    }

    /// Every outcome's total, for logs and reports.
    pub fn totals(&self) -> OutcomeTotals {
        OutcomeTotals {
            accepted: self.total(Outcome::Accepted),
            duplicates: self.total(Outcome::Duplicate),
            late: self.total(Outcome::Late),
            replay_skipped: self.total(Outcome::ReplaySkipped),
            dead_lettered: self.total(Outcome::DeadLettered),
        }
    }
}

/// [`EventCounters`] summed over kinds.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct OutcomeTotals {
    /// Counted in a window.
    pub accepted: u64,
    /// `(tenant, event_id)` already counted in its window.
    pub duplicates: u64,
    /// The window had closed (written to the late-data output).
    pub late: u64,
    /// Replayed, and its window's file already holds it.
    pub replay_skipped: u64,
    /// Invalid: copied to the dead-letter topic.
    pub dead_lettered: u64,
}

/// Label value of business series beyond the cardinality cap.
pub const OTHER: &str = "_other";

/// Spend, carbon and tokens by tenant, team and model, counted from each
/// closed window's rows. At most `cap` label sets; the rest are added to
/// the `_other` series, so totals stay right while cardinality is bounded.
/// Each label set's counters are looked up once and cached by a 128-bit
/// hash of the labels, so a row costs one hash and four atomic adds.
pub struct Business {
    cost: prometheus::CounterVec,
    carbon: prometheus::CounterVec,
    tokens: IntCounterVec,
    cap: usize,
    series: Mutex<hashbrown::HashMap<u128, Series, foldhash::fast::RandomState>>,
    other: Series,
}

#[derive(Clone)]
struct Series {
    cost: prometheus::Counter,
    carbon: prometheus::Counter,
    input: IntCounter,
    output: IntCounter,
}

impl Business {
    fn new(cap: usize) -> Self {
        let labels = &["tenant", "team", "model"];
        let f = |name: &str, help: &str| {
            prometheus::CounterVec::new(Opts::new(name, help), labels).expect("static metric")
        };
        let cost = f(
            "tollgate_cost_usd_total",
            "Enriched cost of the events in closed windows, USD.",
        );
        let carbon = f(
            "tollgate_carbon_grams_total",
            "Carbon (grams CO2e) of the events in closed windows.",
        );
        let tokens = IntCounterVec::new(
            Opts::new(
                "tollgate_tokens_total",
                "Tokens of the events in closed windows, by direction.",
            ),
            &["tenant", "team", "model", "direction"],
        )
        .expect("static metric");
        let other = Business::series_of(&cost, &carbon, &tokens, [OTHER, OTHER, OTHER]);
        Business {
            cost,
            carbon,
            tokens,
            cap,
            series: Mutex::default(),
            other,
        }
    }

    fn series_of(
        cost: &prometheus::CounterVec,
        carbon: &prometheus::CounterVec,
        tokens: &IntCounterVec,
        [a, b, c]: [&str; 3],
    ) -> Series {
        Series {
            cost: cost.with_label_values(&[a, b, c]),
            carbon: carbon.with_label_values(&[a, b, c]),
            input: tokens.with_label_values(&[a, b, c, "input"]),
            output: tokens.with_label_values(&[a, b, c, "output"]),
        }
    }

    /// Count one closed window's rows.
    pub fn add_rows<'a>(&self, rows: impl Iterator<Item = (DimsRef<'a>, &'a Measures)>) {
        let mut series = self.series.lock().unwrap_or_else(|p| p.into_inner());
        let mut buf = Vec::with_capacity(128);
        for (d, m) in rows {
            if m.cost_usd == 0.0 && m.carbon_g == 0.0 && m.input_tokens + m.output_tokens == 0 {
                continue;
            }
            let (team, model) = (d.team.unwrap_or(""), d.model.unwrap_or(""));
            let key = tollgate_window::hash_parts(&mut buf, &[d.tenant, team, model]);
            let s = match series.get(&key) {
                Some(s) => s,
                None if series.len() < self.cap => {
                    let s = Business::series_of(
                        &self.cost,
                        &self.carbon,
                        &self.tokens,
                        [d.tenant, team, model],
                    );
                    series.entry(key).or_insert(s)
                }
                None => &self.other,
            };
            s.cost.inc_by(m.cost_usd.max(0.0));
            s.carbon.inc_by(m.carbon_g.max(0.0));
            s.input.inc_by(m.input_tokens);
            s.output.inc_by(m.output_tokens);
        }
    }
}

/// Everything the pipeline reports: counters, histograms, live state.
pub struct Telemetry {
    pub stats: Stats,
    pub events: EventCounters,
    pub live: Live,
    /// Every instance's team spend, read from the spend topic (`[spend]`).
    pub spend: crate::spend::SharedSpend,
    /// The price book in force; SIGHUP replaces it and every enricher of
    /// the process takes it up.
    pub pricing: tollgate_enrich::SharedBook,
    pub window_close_seconds: Histogram,
    pub commit_seconds: Histogram,
    pub decisions: IntCounterVec,
    /// Time to evaluate one policy over one closed window, by policy.
    pub policy_seconds: HistogramVec,
    pub business: Business,
}

impl Default for Telemetry {
    fn default() -> Self {
        Telemetry::new(Live::default(), 1000)
    }
}

impl Telemetry {
    /// `series_cap`: most business label sets (tenant, team, model) kept.
    pub fn new(live: Live, series_cap: usize) -> Self {
        let buckets = exponential_buckets(0.001, 2.0, 15).expect("static buckets");
        let hist = |name: &str, help: &str| {
            Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.clone()))
                .expect("static metric")
        };
        Telemetry {
            stats: Stats::default(),
            events: EventCounters::default(),
            live,
            spend: Default::default(),
            pricing: Default::default(),
            window_close_seconds: hist(
                "tollgate_window_close_duration_seconds",
                "Time to close one window: policies, decision log and topic, Parquet file.",
            ),
            commit_seconds: hist(
                "tollgate_commit_duration_seconds",
                "Time to commit offsets: DLQ flush, checkpoint, offset commit.",
            ),
            decisions: IntCounterVec::new(
                Opts::new(
                    "tollgate_decisions_total",
                    "Decisions appended to the decision log (window policies and gates).",
                ),
                &["policy", "verdict"],
            )
            .expect("static metric"),
            policy_seconds: HistogramVec::new(
                HistogramOpts::new(
                    "tollgate_policy_evaluation_duration_seconds",
                    "Time to evaluate one policy over one closed window (planning and execution).",
                )
                .buckets(exponential_buckets(0.0001, 2.0, 16).expect("static buckets")),
                &["policy"],
            )
            .expect("static metric"),
            business: Business::new(series_cap),
        }
    }

    /// Register every family with `registry`.
    pub fn register(self: &Arc<Self>, registry: &Registry) -> Result<(), prometheus::Error> {
        registry.register(Box::new(self.window_close_seconds.clone()))?;
        registry.register(Box::new(self.commit_seconds.clone()))?;
        registry.register(Box::new(self.decisions.clone()))?;
        registry.register(Box::new(self.policy_seconds.clone()))?;
        registry.register(Box::new(self.business.cost.clone()))?;
        registry.register(Box::new(self.business.carbon.clone()))?;
        registry.register(Box::new(self.business.tokens.clone()))?;
        registry.register(Box::new(Snapshot::new(self.clone())))?;
        Ok(())
    }
}

/// Families built from the atomics at scrape time.
struct Snapshot {
    telemetry: Arc<Telemetry>,
    descs: Vec<Desc>,
}

macro_rules! counters {
    ($($name:literal => $field:ident, $help:literal;)*) => {
        fn plain_counters(s: &crate::StatsSnapshot) -> Vec<(&'static str, &'static str, u64)> {
            vec![$(($name, $help, s.$field),)*]
        }
    };
}

counters! {
    "tollgate_messages_consumed_total" => consumed, "Messages read from the event topics.";
    "tollgate_dlq_truncated_total" => dead_letters_truncated, "Dead-letter copies whose payload was cut to fit the producer's message size limit.";
    "tollgate_offsets_vanished_total" => offsets_vanished, "Offsets missing on the broker between a committed offset and the first message after it (retention, compaction, transaction markers).";
    "tollgate_rollup_files_written_total" => windows_written, "Parquet rollup files written.";
    "tollgate_rollup_rows_written_total" => rows_written, "Rows in the Parquet rollup files written.";
    "tollgate_rollup_events_written_total" => events_written, "Events counted in the Parquet rollup files written.";
    "tollgate_rollup_bytes_written_total" => bytes_written, "Bytes of the Parquet rollup files written.";
    "tollgate_late_files_written_total" => late_files_written, "Late-data files written.";
    "tollgate_offset_commits_total" => commits, "Offset commits.";
    "tollgate_writer_groups_total" => writer_groups, "Groups of queued jobs the writer made durable together: one decision-log sync and one wait for the broker each.";
    "tollgate_policy_errors_total" => policy_errors, "Policy evaluations that failed on a window.";
    "tollgate_decisions_replayed_total" => decisions_replayed, "Decisions a replay produced again (already in the log).";
    "tollgate_decision_log_errors_total" => decision_log_errors, "Decision-log appends or syncs that failed (the window is retried; a gate request is denied with 503).";
    "tollgate_gate_evaluation_errors_total" => gate_evaluation_errors, "Gate requests whose rules could not be evaluated (answered deny).";
}

impl Snapshot {
    fn new(telemetry: Arc<Telemetry>) -> Self {
        let descs = Snapshot::families(&telemetry)
            .iter()
            .flat_map(|c| c.desc().into_iter().cloned())
            .collect();
        Snapshot { telemetry, descs }
    }

    fn families(telemetry: &Telemetry) -> Vec<Box<dyn Collector>> {
        let mut out: Vec<Box<dyn Collector>> = Vec::new();
        let s = telemetry.stats.snapshot();
        for (name, help, v) in plain_counters(&s) {
            let c = IntCounter::new(name, help).expect("static metric");
            c.inc_by(v);
            out.push(Box::new(c));
        }
        let events = IntCounterVec::new(
            Opts::new(
                "tollgate_events_total",
                "Consumed events by kind and outcome.",
            ),
            &["kind", "outcome"],
        )
        .expect("static metric");
        for kind in Kind::ALL {
            for o in Outcome::ALL {
                events
                    .with_label_values(&[kind.as_str(), o.as_str()])
                    .inc_by(telemetry.events.get(kind, o));
            }
        }
        out.push(Box::new(events));
        for (name, help, outcome) in [
            (
                "tollgate_dlq_messages_total",
                "Invalid messages produced to the dead-letter topic.",
                Outcome::DeadLettered,
            ),
            (
                "tollgate_late_events_total",
                "Events whose window had closed (written to the late-data output).",
                Outcome::Late,
            ),
        ] {
            let c = IntCounter::new(name, help).expect("static metric");
            c.inc_by(telemetry.events.total(outcome));
            out.push(Box::new(c));
        }
        let blocked = prometheus::Counter::new(
            "tollgate_writer_blocked_seconds_total",
            "Time the consumer waited for room in the writer's queue (backpressure from the disk and the broker).",
        )
        .expect("static metric");
        blocked.inc_by(s.writer_blocked_micros as f64 / 1e6);
        out.push(Box::new(blocked));
        let h = &telemetry.live.health;
        let lag = IntGaugeVec::new(
            Opts::new(
                "tollgate_consumer_lag_messages",
                "Messages between the consumer's position and the end of each assigned partition.",
            ),
            &["topic", "partition"],
        )
        .expect("static metric");
        for ((topic, partition), l) in h.lag_by_partition() {
            lag.with_label_values(&[&topic, &partition.to_string()])
                .set(l.max(0));
        }
        out.push(Box::new(lag));
        let gauge = |name: &str, help: &str, v: i64| {
            let g = IntGauge::new(name, help).expect("static metric");
            g.set(v);
            Box::new(g) as Box<dyn Collector>
        };
        out.push(gauge(
            "tollgate_consumer_assigned_partitions",
            "Partitions assigned to this process's consumer-group members (its workers).",
            h.assigned() as i64,
        ));
        out.push(gauge(
            "tollgate_broker_up",
            "1 when a broker connection is up (librdkafka statistics).",
            h.broker_up.load(Relaxed) as i64,
        ));
        out
    }
}

impl Collector for Snapshot {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        Snapshot::families(&self.telemetry)
            .iter()
            .flat_map(|c| c.collect())
            .collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn value(families: &[MetricFamily], name: &str) -> f64 {
        let f = families.iter().find(|f| f.name() == name).unwrap();
        f.get_metric()
            .iter()
            .map(|m| m.get_counter().get_value())
            .sum()
    }

    #[test]
    fn each_event_is_counted_once_and_every_family_reads_that_count() {
        let t = Arc::new(Telemetry::default());
        let registry = Registry::new();
        t.register(&registry).unwrap();
        t.events.add(Kind::Inference, Outcome::Accepted);
        t.events.add(Kind::Inference, Outcome::Late);
        t.events.add(Kind::Training, Outcome::Late);
        t.events.add(Kind::Heartbeat, Outcome::DeadLettered);
        let totals = t.events.totals();
        assert_eq!(
            (totals.accepted, totals.late, totals.dead_lettered),
            (1, 2, 1)
        );
        let families = registry.gather();
        assert_eq!(value(&families, "tollgate_events_total"), 4.0);
        assert_eq!(value(&families, "tollgate_late_events_total"), 2.0);
        assert_eq!(value(&families, "tollgate_dlq_messages_total"), 1.0);
    }
}
