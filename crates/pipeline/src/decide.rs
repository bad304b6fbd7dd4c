//! Decisions for closed windows. On the writer thread, for each closed
//! window and before its rollup file is written (so before any offset that
//! fed it can be committed):
//!
//! 1. evaluate every policy over the window's rows ([`PolicyEngine`]) and
//!    append the decisions to the log (an id already there returns the
//!    stored record: a replay adds nothing) — [`Decider::decide`];
//! 2. fsync the log, publish every decision, new or replayed, to the
//!    decisions topic keyed by `decision_id`, and wait for the broker's
//!    acknowledgement — [`Decider::make_durable`], once for a group of
//!    windows (group commit; the writer thread decides the group's windows
//!    in order, then makes their decisions durable, then writes their
//!    files). Consumers of the topic de-duplicate by key: after a crash the
//!    same bytes may be published twice, never a different record.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use rdkafka::error::KafkaError;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use tollgate_config::Config;
use tollgate_decision::{rfc3339_ms, Key};
use tollgate_decision_log::{Appended, DecisionLog, LogOptions};
use tollgate_event::Kind;
use tollgate_policy::{tables, EngineOptions, PolicyEngine, WindowInput};
use tollgate_rollup::MonthToDate;
use tollgate_window::{ClosedWindow, Totals};
use tracing::{debug, error, info, warn};

use crate::{kafka, PipelineError};
use tollgate_telemetry::live::month_name;
use tollgate_telemetry::metrics::Telemetry;

/// How long to keep retrying a window's decisions while the broker does not
/// acknowledge them (a broker restart, a leader election). Giving up stops
/// the pipeline, which restarts from the committed offsets and publishes
/// them again.
const PUBLISH_PATIENCE: Duration = Duration::from_secs(120);

/// What the pipeline decides with: the policies, the log and the topic.
/// Built once per process and shared (the HTTP gate appends to the same log).
#[derive(Clone)]
pub struct Decisions {
    engine: Arc<RwLock<Arc<PolicyEngine>>>,
    pub log: Arc<Mutex<DecisionLog>>,
    pub topic: String,
}

async fn load_policies(cfg: &Config) -> Result<PolicyEngine, PipelineError> {
    let history = tollgate_rollup::history_table(&cfg.output.rollup_dir)?;
    let engine = PolicyEngine::load(EngineOptions {
        dir: cfg.policies.dir.clone(),
        params: cfg.policies.params.clone(),
        disabled: cfg.policies.disabled.clone(),
        file_schema: tollgate_rollup::schema(),
        history: Some(history),
        regions: cfg.region_intensities(),
    })
    .await?;
    for p in engine.policies() {
        info!(policy = %p.name, revision = %p.revision, verdict = p.verdict.as_str(), kinds = ?p.kinds, "policy loaded");
    }
    Ok(engine)
}

impl Decisions {
    /// Load the policies (every broken file is an error naming it) and open
    /// the decision log, signing with `key`.
    pub async fn open(cfg: &Config, key: Key) -> Result<Self, PipelineError> {
        let engine = load_policies(cfg).await?;
        let key_id = key.id().to_owned();
        let log = open_log(&cfg.decisions.log_dir, key, cfg.decisions.max_segment_bytes)?;
        info!(key_id = %key_id, dir = %cfg.decisions.log_dir.display(), records = log.records(), "signing decisions");
        Ok(Decisions {
            engine: Arc::new(RwLock::new(Arc::new(engine))),
            log: Arc::new(Mutex::new(log)),
            topic: cfg.topics.decisions.clone(),
        })
    }

    /// The policies in force.
    pub fn engine(&self) -> Arc<PolicyEngine> {
        self.engine
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Load the policies again (`[policies]` of `cfg`). On any error the
    /// policies in force stay in force and the error, naming the file, is
    /// returned; the pipeline keeps running either way. Windows closing
    /// during the load use the old set.
    pub async fn reload(&self, cfg: &Config) -> Result<usize, PipelineError> {
        let engine = load_policies(cfg).await?;
        let n = engine.policies().len();
        *self.engine.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(engine);
        Ok(n)
    }
}

fn open_log(dir: &Path, key: Key, max_segment_bytes: u64) -> Result<DecisionLog, PipelineError> {
    Ok(DecisionLog::open(
        dir,
        key,
        LogOptions {
            max_segment_bytes,
            ..LogOptions::default()
        },
    )?)
}

/// Counts for one window, reported back to the worker's stats.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Decided {
    pub new: u64,
    pub replayed: u64,
    pub policy_errors: u64,
    /// Evaluating and logging, plus (on one window of each group) the
    /// group's log sync and publishing.
    pub micros: u64,
    /// Of `micros`: publishing the decisions until the broker acknowledged
    /// them (the group's, on one window of it).
    pub publish_micros: u64,
}

pub(crate) struct Decider {
    d: Decisions,
    /// Decisions and policy timings by policy; decision-log errors.
    t: Arc<Telemetry>,
    producer: FutureProducer,
    rt: tokio::runtime::Runtime,
    /// `month_to_date` for the policies: the rollup tree's month so far,
    /// read incrementally (each file once) before each window that needs it.
    month: Mutex<MonthToDate>,
}

impl Decider {
    pub(crate) fn new(
        cfg: &Config,
        d: Decisions,
        t: Arc<Telemetry>,
    ) -> Result<Self, PipelineError> {
        // The writer waits for each window's acknowledgements, so lingering
        // to fill a batch only adds its delay to every window close.
        let producer: FutureProducer = tollgate_kafka::output_producer_config(cfg)
            .set("linger.ms", "0")
            .create()
            .map_err(kafka("create decisions producer"))?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .map_err(|e| PipelineError::Config(format!("cannot start the policy runtime: {e}")))?;
        Ok(Decider {
            d,
            t,
            producer,
            rt,
            month: Mutex::new(MonthToDate::new(&cfg.output.rollup_dir)),
        })
    }

    /// Evaluate the policies over a closed window and append their
    /// decisions to the log, not yet synced nor published: the window's
    /// file may be written only after [`Self::make_durable`] of them.
    pub(crate) fn decide(
        &self,
        kind: Kind,
        topic: &str,
        partition: i32,
        w: &ClosedWindow,
        batch: &RecordBatch,
    ) -> Result<(Decided, Vec<Appended>), PipelineError> {
        let started = Instant::now();
        let source = format!("{topic}/{partition}");
        let engine = self.d.engine();
        let month = if engine.reads_month_to_date(kind.as_str()) {
            self.month_to_date(w.start_ms)
        } else {
            Ok(tables::no_month_to_date().clone())
        };
        let eval = self.rt.block_on(engine.evaluate(&WindowInput {
            kind: kind.as_str(),
            source: &source,
            start_ms: w.start_ms,
            end_ms: w.end_ms,
            rows: batch,
            month_to_date: month.as_ref().map_err(String::as_str),
        }));
        for (policy, took) in &eval.timings {
            self.t
                .policy_seconds
                .with_label_values(&[policy])
                .observe(took.as_secs_f64());
        }
        let mut out = Decided {
            policy_errors: eval.errors.len() as u64,
            ..Decided::default()
        };
        for e in &eval.errors {
            error!(source = %source, window_start_ms = w.start_ms, error = %e, "policy failed on this window; the other policies ran");
        }
        let mut appended = Vec::with_capacity(eval.drafts.len());
        if !eval.drafts.is_empty() {
            let ts = rfc3339_ms(chrono::Utc::now().timestamp_millis());
            let mut log = self.d.log.lock().unwrap_or_else(|p| p.into_inner());
            for draft in eval.drafts {
                appended.push(
                    log.append(draft, ts.clone())
                        .inspect_err(|_| self.log_error())?,
                );
            }
        }
        for a in &appended {
            let d = a.decision();
            if a.is_new() {
                out.new += 1;
                self.t
                    .decisions
                    .with_label_values(&[&d.policy, d.verdict.as_str()])
                    .inc();
                debug!(decision_id = %d.decision_id, policy = %d.policy, subject = %d.subject, verdict = d.verdict.as_str(), reason = %d.reasons.join("; "), "decision");
            } else {
                out.replayed += 1;
            }
        }
        out.micros = started.elapsed().as_micros() as u64;
        Ok((out, appended))
    }

    /// Make decisions appended by [`Self::decide`] durable: fsync the log
    /// (and its head), publish every one and wait until the broker
    /// acknowledged each. Returns the time spent publishing. Nothing to do
    /// without decisions.
    pub(crate) fn make_durable(&self, appended: &[Appended]) -> Result<Duration, PipelineError> {
        if appended.is_empty() {
            return Ok(Duration::ZERO);
        }
        self.d
            .log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .sync()
            .inspect_err(|_| self.log_error())?;
        let publishing = Instant::now();
        self.rt.block_on(self.publish(appended))?;
        Ok(publishing.elapsed())
    }

    fn log_error(&self) {
        tollgate_telemetry::Stats::add(&self.t.stats.decision_log_errors, 1);
    }

    /// `month_to_date` for the month of a window starting at `start_ms`: the
    /// files written so far (this window's is written after its decisions).
    fn month_to_date(&self, start_ms: i64) -> Result<RecordBatch, String> {
        let month = month_name(start_ms);
        let mut m = self.month.lock().unwrap_or_else(|p| p.into_inner());
        let read = m.refresh(&month).map_err(|e| {
            error!(error = %e, month = %month, "cannot read this month's rollups; policies reading month_to_date fail on this window");
            e.to_string()
        })?;
        if read > 0 {
            debug!(month = %month, read, files = m.files(&month), "month_to_date: rollup files read");
        }
        tables::month_to_date_batch(m.teams(&month)).map_err(|e| e.to_string())
    }

    /// The window is decided and its file will be at `path`: `month_to_date`
    /// counts it from its rows (the next window decided sees it, as if its
    /// file were already written), rather than reading the file back. If
    /// the file is then not written, the worker stops and its successor
    /// starts with a new `Decider`, which counts only files on disk.
    pub(crate) fn count(&self, path: &Path, w: &ClosedWindow) {
        let rows = w
            .rows
            .iter()
            .map(|(d, m)| (d.tenant, d.team, Totals::of(m)));
        let mut m = self.month.lock().unwrap_or_else(|p| p.into_inner());
        m.add_written(path, &month_name(w.start_ms), rows);
    }

    /// Publish every record and wait until the broker acknowledged each one.
    async fn publish(&self, items: &[Appended]) -> Result<(), PipelineError> {
        let mut todo: Vec<usize> = (0..items.len()).collect();
        let started = Instant::now();
        let mut backoff = Duration::from_millis(250);
        for attempt in 1.. {
            let mut failed = Vec::new();
            let mut pending: VecDeque<(usize, DeliveryFuture)> = VecDeque::new();
            for &i in &todo {
                let d = items[i].decision();
                loop {
                    let record = FutureRecord::to(&self.d.topic)
                        .key(&d.decision_id)
                        .payload(items[i].line());
                    match self.producer.send_result(record) {
                        Ok(f) => {
                            pending.push_back((i, f));
                            break;
                        }
                        Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                            match pending.pop_front() {
                                Some((j, f)) => {
                                    if !delivered(f.await) {
                                        failed.push(j);
                                    }
                                }
                                None => tokio::time::sleep(Duration::from_millis(10)).await,
                            }
                        }
                        Err((e, _)) => return Err(kafka("produce decision")(e)),
                    }
                }
            }
            for (j, f) in pending {
                if !delivered(f.await) {
                    failed.push(j);
                }
            }
            if failed.is_empty() {
                return Ok(());
            }
            warn!(
                undelivered = failed.len(),
                attempt,
                topic = %self.d.topic,
                "decisions not acknowledged by the broker; retrying"
            );
            todo = failed;
            if started.elapsed() >= PUBLISH_PATIENCE {
                break;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
        Err(PipelineError::Decisions(format!(
            "{} decision(s) not acknowledged by the broker within {} s",
            todo.len(),
            PUBLISH_PATIENCE.as_secs()
        )))
    }
}

fn delivered<E>(r: Result<rdkafka::producer::future_producer::OwnedDeliveryResult, E>) -> bool {
    match r {
        Ok(Ok(_)) => true,
        Ok(Err((e, _))) => {
            warn!(error = %e, "decision delivery failed");
            false
        }
        Err(_) => false,
    }
}

impl Drop for Decider {
    fn drop(&mut self) {
        let _ = self.producer.flush(Duration::from_secs(5));
    }
}
