//! Decisions for closed windows. On the writer thread, for each closed
//! window and before its rollup file is written (so before any offset that
//! fed it can be committed):
//!
//! 1. evaluate every policy over the window's rows ([`PolicyEngine`]) —
//!    [`WindowDecider::decide`], which returns the drafts;
//! 2. hand the drafts to the log's [`Committer`] (an id already in the log
//!    answers the stored record: a replay adds nothing), wait until they are
//!    durable, publish every decision, new or replayed, to the decisions
//!    topic keyed by `decision_id`, and wait for the broker's
//!    acknowledgement — [`WindowDecider::make_durable`], once for a group of
//!    windows (group commit; the writer thread decides the group's windows
//!    in order, then makes their decisions durable, then writes their
//!    files). Consumers of the topic de-duplicate by key: after a crash the
//!    same bytes may be published twice, never a different record.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use tollgate_config::Config;
use tollgate_decision::{rfc3339_ms, DecisionWindow, Draft, Key, Verdict};
use tollgate_decision_log::{Appended, Committer, DecisionLog, LogOptions};
use tollgate_event::Kind;
use tollgate_kafka::DecisionPublisher;
use tollgate_policy::{tables, EngineOptions, PolicyEngine, WindowInput};
use tollgate_rollup::{month_name, MonthToDate, Output};
use tollgate_window::silence::{Change, NodeSilence};
use tollgate_window::{ClosedWindow, Totals};
use tracing::{debug, error, info};

use crate::PipelineError;
use tollgate_telemetry::metrics::Telemetry;

/// How long to keep retrying a window's decisions while the broker does not
/// acknowledge them (a broker restart, a leader election). Giving up stops
/// the pipeline, which restarts from the committed offsets and publishes
/// them again.
const PUBLISH_PATIENCE: Duration = Duration::from_secs(120);

/// Decisions that may wait for the committer at most.
const COMMIT_QUEUE: usize = 8192;

/// What the process decides with: the policies, the decision log's one
/// writer and the decisions topic's one producer. Built once per process
/// and shared: the HTTP gate submits to the same committer and publishes
/// with the same producer.
#[derive(Clone)]
pub struct DecisionStage {
    /// One policy engine per worker: an engine evaluates one window at a
    /// time (its `rollups` table holds that window), so workers sharing one
    /// would wait for each other. The same files and parameters in each.
    engines: Arc<RwLock<Vec<Arc<PolicyEngine>>>>,
    pub committer: Committer,
    pub publisher: Arc<DecisionPublisher>,
    /// Where the windows, late files and checkpoints go (and `history`
    /// and `month_to_date` are read from).
    pub output: Output,
}

/// The policies once for each of the process's workers.
async fn load_engines(
    cfg: &Config,
    output: &Output,
) -> Result<Vec<Arc<PolicyEngine>>, PipelineError> {
    let first = load_policies(cfg, output).await?;
    for p in first.policies() {
        info!(policy = %p.name, revision = %p.revision, verdict = p.verdict.as_str(), kinds = ?p.kinds, "policy loaded");
    }
    let mut engines = vec![Arc::new(first)];
    for _ in 1..cfg.workers() {
        engines.push(Arc::new(load_policies(cfg, output).await?));
    }
    Ok(engines)
}

async fn load_policies(cfg: &Config, output: &Output) -> Result<PolicyEngine, PipelineError> {
    let history = tollgate_rollup::history_table(&output.rollups)?;
    let engine = PolicyEngine::load(EngineOptions {
        dir: cfg.policies.dir.clone(),
        params: cfg.policies.params.clone(),
        disabled: cfg.policies.disabled.clone(),
        file_schema: tollgate_rollup::schema(),
        history: Some(history),
        regions: cfg.region_intensities(),
    })
    .await?;
    Ok(engine)
}

impl DecisionStage {
    /// Load the policies (every broken file is an error naming it) and open
    /// the decision log, signing with `key`.
    pub async fn open(cfg: &Config, key: Key) -> Result<Self, PipelineError> {
        let output = Output::open(&cfg.output.rollup_dir, &cfg.output.late_dir)?;
        let engines = load_engines(cfg, &output).await?;
        let key_id = key.id().to_owned();
        let dir = cfg.decision_log_dir();
        let log = open_log(&dir, key, cfg.decisions.max_segment_bytes)?;
        let committer = Committer::spawn(log, COMMIT_QUEUE).map_err(|e| {
            PipelineError::Config(format!("cannot start the decision log committer: {e}"))
        })?;
        let publisher = Arc::new(DecisionPublisher::new(cfg)?);
        info!(key_id = %key_id, dir = %dir.display(), records = committer.records_at_open(), "signing decisions");
        Ok(DecisionStage {
            engines: Arc::new(RwLock::new(engines)),
            committer,
            publisher,
            output,
        })
    }

    /// The policies in force (worker 0's engine: the parameters the gate
    /// rules read are the same in every one).
    pub fn engine(&self) -> Arc<PolicyEngine> {
        self.engine_of(0)
    }

    /// Worker `worker`'s engine (workers beyond those loaded share).
    pub(crate) fn engine_of(&self, worker: usize) -> Arc<PolicyEngine> {
        let engines = self.engines.read().unwrap_or_else(|p| p.into_inner());
        engines[worker % engines.len()].clone()
    }

    /// Load the policies again (`[policies]` of `cfg`). On any error the
    /// policies in force stay in force and the error, naming the file, is
    /// returned; the pipeline keeps running either way. Windows closing
    /// during the load use the old set.
    pub async fn reload(&self, cfg: &Config) -> Result<usize, PipelineError> {
        let engines = load_engines(cfg, &self.output).await?;
        let n = engines[0].policies().len();
        *self.engines.write().unwrap_or_else(|p| p.into_inner()) = engines;
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
pub(crate) struct DecisionCounts {
    pub new: u64,
    pub replayed: u64,
    pub policy_errors: u64,
    /// Evaluating, plus (on one window of each group) the group's commit
    /// and publishing.
    pub micros: u64,
    /// Of `micros`: publishing the decisions until the broker acknowledged
    /// them (the group's, on one window of it).
    pub publish_micros: u64,
}

impl DecisionCounts {
    /// Count `appended`, this window's records as the log answered them.
    pub(crate) fn count(&mut self, appended: &[Appended], telemetry: &Telemetry) {
        for a in appended {
            let d = a.decision();
            if a.is_new() {
                self.new += 1;
                telemetry
                    .decisions
                    .with_label_values(&[&d.policy, d.verdict.as_str()])
                    .inc();
                debug!(decision_id = %d.decision_id, policy = %d.policy, subject = %d.subject, verdict = d.verdict.as_str(), reason = %d.reasons.join("; "), "decision");
            } else {
                self.replayed += 1;
            }
        }
    }
}

pub(crate) struct WindowDecider {
    decisions: DecisionStage,
    /// Whose policy engine it evaluates with.
    worker: usize,
    /// Decisions and policy timings by policy; decision-log errors.
    telemetry: Arc<Telemetry>,
    rt: tokio::runtime::Runtime,
    /// `month_to_date` for the policies: the rollup tree's month so far,
    /// read incrementally (each file once) before each window that needs it.
    month: Mutex<MonthToDate>,
    /// The silent nodes of each heartbeat partition this worker decides,
    /// restored from the partition's files at its first window.
    silence: Mutex<HashMap<(String, i32), NodeSilence>>,
}

/// The built-in decisions about silent nodes (`node-silence`): one `warn`
/// when a node has sent no heartbeat for longer than node-reliability's
/// `stale_after_secs` by its partition's clock, one `allow` when it reports
/// again. Named (decision id) by the node and its last heartbeat before the
/// silence, so a replay or a restored partition makes the same decision,
/// which the log already holds.
pub const SILENCE_POLICY: &str = "node-silence";

/// When a partition's silent nodes are judged ([`WindowDecider::silence`]).
#[derive(Debug, Clone, Copy)]
pub(crate) enum At<'w> {
    /// A heartbeat window closed.
    Window(&'w ClosedWindow),
    /// The partition is idle: nothing arrived for `silent_ms`; its
    /// watermark (where a tracker restored now reads its files from).
    Idle {
        silent_ms: i64,
        watermark_ms: Option<i64>,
    },
}
const SILENCE_REVISION: &str = "1";

/// How far back a restored partition reads its heartbeat files for its
/// nodes (and how long a silent node is remembered): an hour, or ten
/// silences if longer. A node silent longer than that has been reported,
/// and is a new node when it comes back (no `allow` for its return).
fn silence_lookback_ms(stale_after_ms: i64) -> i64 {
    (10 * stale_after_ms).max(3_600_000)
}

fn silence_draft(source: &str, stale_after_ms: i64, c: Change) -> Draft {
    let secs = |ms: i64| ms as f64 / 1000.0;
    let (tenant, node_id, region, window, verdict, observed, reason) = match c {
        Change::Stale {
            tenant,
            node_id,
            region,
            last_ms,
            clock_ms,
        } => {
            let silent = secs(clock_ms - last_ms);
            let reason = format!(
                "node {node_id} in {} has sent no heartbeat since {}: silent {silent:.0} s by its partition's clock, more than {:.0} s",
                region.as_deref().unwrap_or("an unknown region"),
                rfc3339_ms(last_ms),
                secs(stale_after_ms)
            );
            let observed = serde_json::json!({
                "state": "stale",
                "last_heartbeat": rfc3339_ms(last_ms),
                "seconds_silent": silent,
                "clock": rfc3339_ms(clock_ms),
            });
            (
                tenant,
                node_id,
                region,
                DecisionWindow::from_millis(last_ms, last_ms + stale_after_ms, source),
                Verdict::Warn,
                observed,
                reason,
            )
        }
        Change::Back {
            tenant,
            node_id,
            region,
            since_ms,
            back_ms,
        } => {
            let reason = format!(
                "node {node_id} reports again after {:.0} s without a heartbeat",
                secs(back_ms - since_ms)
            );
            let observed = serde_json::json!({
                "state": "back",
                "last_heartbeat": rfc3339_ms(back_ms),
                "silent_since": rfc3339_ms(since_ms),
                "seconds_silent": secs(back_ms - since_ms),
            });
            (
                tenant,
                node_id,
                region,
                DecisionWindow::from_millis(since_ms, back_ms, source),
                Verdict::Allow,
                observed,
                reason,
            )
        }
    };
    let mut observed = match observed {
        serde_json::Value::Object(m) => m,
        _ => serde_json::Map::new(),
    };
    observed.insert("tenant".into(), tenant.clone().into());
    observed.insert("node_id".into(), node_id.clone().into());
    observed.insert("region".into(), region.into());
    observed.insert("stale_after_secs".into(), secs(stale_after_ms).into());
    Draft {
        policy: SILENCE_POLICY.into(),
        policy_revision: SILENCE_REVISION.into(),
        subject: format!("tenant={tenant}/node={node_id}"),
        window: Some(window),
        observed,
        verdict,
        reasons: vec![reason],
    }
}

impl WindowDecider {
    pub(crate) fn new(
        decisions: DecisionStage,
        telemetry: Arc<Telemetry>,
        worker: usize,
    ) -> Result<Self, PipelineError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .map_err(|e| PipelineError::Config(format!("cannot start the policy runtime: {e}")))?;
        let month = Mutex::new(MonthToDate::new(&decisions.output.rollups));
        Ok(WindowDecider {
            decisions,
            worker,
            telemetry,
            rt,
            month,
            silence: Mutex::new(HashMap::new()),
        })
    }

    /// node-reliability's `stale_after_secs` in ms (`None`: the policy is
    /// disabled, and so are silent-node decisions).
    fn stale_after_ms(&self) -> Option<i64> {
        let params = self.decisions.engine_of(self.worker).params_json();
        let secs = params
            .get("node-reliability")?
            .get("stale_after_secs")?
            .as_f64()?;
        Some((secs * 1000.0) as i64)
    }

    /// The partition was (re)assigned: what this worker knew of its nodes
    /// may be behind (another owner ran it); its next window restores it.
    pub(crate) fn forget(&self, topic: &str, partition: i32) {
        let mut all = self.silence.lock().unwrap_or_else(|p| p.into_inner());
        all.remove(&(topic.to_string(), partition));
    }

    /// A partition's nodes as its heartbeat files since `since_ms` hold them.
    fn restore_silence(
        &self,
        topic: &str,
        partition: i32,
        stale_after: i64,
        since_ms: i64,
    ) -> NodeSilence {
        let mut t = NodeSilence::new(stale_after);
        let src = tollgate_rollup::Source {
            kind: Kind::Heartbeat.as_str(),
            topic,
            partition,
        };
        match tollgate_rollup::nodes_seen(&self.decisions.output.rollups, src, since_ms) {
            Ok((nodes, clock)) => {
                for n in &nodes {
                    t.restore(&n.tenant, &n.node_id, n.region.as_deref(), n.last_ms);
                }
                if let Some(c) = clock {
                    t.restored_at(c);
                }
                debug!(
                    topic,
                    partition,
                    nodes = nodes.len(),
                    "silent-node tracker restored from the rollups"
                );
            }
            Err(e) => {
                error!(topic, partition, error = %e, "cannot read this partition's heartbeat rollups: its silent nodes are judged from the windows to come");
            }
        }
        t
    }

    /// Feed one heartbeat partition's silence tracker and draft what
    /// changed. `At::Window`: a closed window's nodes, then the clock at its
    /// close — the partition's latest heartbeat, never past the window's
    /// watermark or end (an idle close moves the watermark past the end;
    /// the heartbeats do not). `At::Idle`: nothing arrived for `silent_ms`;
    /// the clock is the latest heartbeat moved on by that much.
    pub(crate) fn silence(&self, topic: &str, partition: i32, at: At<'_>) -> Vec<Draft> {
        let Some(stale_after) = self.stale_after_ms() else {
            return Vec::new();
        };
        let mut all = self.silence.lock().unwrap_or_else(|p| p.into_inner());
        let key = (topic.to_string(), partition);
        if all
            .get(&key)
            .is_none_or(|t| t.stale_after_ms() != stale_after)
        {
            let since = match at {
                At::Window(w) => w.start_ms,
                At::Idle { watermark_ms, .. } => {
                    watermark_ms.unwrap_or_else(|| chrono::Utc::now().timestamp_millis())
                }
            } - silence_lookback_ms(stale_after);
            all.insert(
                key.clone(),
                self.restore_silence(topic, partition, stale_after, since),
            );
        }
        let Some(tracker) = all.get_mut(&key) else {
            return Vec::new();
        };
        let mut changes = Vec::new();
        let clock = match at {
            At::Window(w) => {
                for (d, m) in w.rows.iter() {
                    if let Some(node) = d.node_id {
                        tracker.seen(d.tenant, node, d.region, m.last_event_ms, &mut changes);
                    }
                }
                tracker
                    .latest_ms()
                    .map(|l| l.min(w.watermark_ms).min(w.end_ms))
            }
            At::Idle { silent_ms, .. } => tracker.latest_ms().map(|l| l.saturating_add(silent_ms)),
        };
        if let Some(clock) = clock {
            tracker.advance(clock, &mut changes);
        }
        tracker.forget_older_than(silence_lookback_ms(stale_after));
        let source = format!("{topic}/{partition}");
        changes
            .into_iter()
            .map(|c| silence_draft(&source, stale_after, c))
            .collect()
    }

    /// Evaluate the policies over a closed window: its decisions as drafts,
    /// not yet in the log. The window's file may be written only after
    /// [`Self::make_durable`] of them.
    pub(crate) fn decide(
        &self,
        kind: Kind,
        topic: &str,
        partition: i32,
        w: &ClosedWindow,
        batch: &RecordBatch,
    ) -> (DecisionCounts, Vec<Draft>) {
        let started = Instant::now();
        let source = format!("{topic}/{partition}");
        let engine = self.decisions.engine_of(self.worker);
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
            self.telemetry
                .policy_seconds
                .with_label_values(&[policy])
                .observe(took.as_secs_f64());
        }
        for e in &eval.errors {
            error!(source = %source, window_start_ms = w.start_ms, error = %e, "policy failed on this window; the other policies ran");
        }
        let mut drafts = eval.drafts;
        if kind == Kind::Heartbeat {
            drafts.extend(self.silence(topic, partition, At::Window(w)));
        }
        let decided = DecisionCounts {
            policy_errors: eval.errors.len() as u64,
            micros: started.elapsed().as_micros() as u64,
            ..DecisionCounts::default()
        };
        (decided, drafts)
    }

    /// Make a group's drafts durable: commit them to the log (one sync,
    /// shared with whatever else is committing), then publish every record
    /// and wait until the broker acknowledged each. Returns the records in
    /// the order of `drafts` and the time spent publishing.
    pub(crate) fn make_durable(
        &self,
        drafts: Vec<Draft>,
    ) -> Result<(Vec<Appended>, Duration), PipelineError> {
        if drafts.is_empty() {
            return Ok((Vec::new(), Duration::ZERO));
        }
        let appended = self
            .decisions
            .committer
            .commit_blocking(drafts)
            .inspect_err(|_| self.log_error())?;
        let publishing = Instant::now();
        let items: Vec<(&str, &str)> = appended
            .iter()
            .map(|a| (a.decision().decision_id.as_str(), a.line()))
            .collect();
        self.rt.block_on(
            self.decisions
                .publisher
                .publish_acknowledged(&items, PUBLISH_PATIENCE),
        )?;
        Ok((appended, publishing.elapsed()))
    }

    fn log_error(&self) {
        tollgate_telemetry::Stats::add(&self.telemetry.stats.decision_log_errors, 1);
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
    /// starts with a new `WindowDecider`, which counts only files on disk.
    pub(crate) fn count(&self, path: &Path, w: &ClosedWindow) {
        let rows = w
            .rows
            .iter()
            .map(|(d, m)| (d.tenant, d.team, Totals::of(m)));
        let mut m = self.month.lock().unwrap_or_else(|p| p.into_inner());
        m.add_written(path, &month_name(w.start_ms), rows);
    }
}
