//! The runner: one consumer-group member on one thread (after Arroyo's
//! runner). It owns the consumer, the poll loop, the clock, the writer and
//! the commits, and hands each message to its partition's operator
//! ([`crate::partition::Partition`]).
//!
//! Delivery protocol (per topic-partition; `ARCHITECTURE.md`):
//! 1. Each open window remembers the first offset that fed it and the
//!    watermark just before it (`tollgate-window`).
//! 2. A closed window is written to its Parquet file (temp, fsync, rename);
//!    late events pending in the partition are flushed with it.
//! 3. The commit point is the smallest first offset still feeding unwritten
//!    state; it is committed with the watermark at that point as commit
//!    metadata, after the dead-letter producer has flushed.
//! 4. On (re)assignment a partition restores from the committed offset, its
//!    watermark and the windows already in the rollup tree, so replayed
//!    events are neither lost nor counted twice.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::ClientContext;
use tollgate_config::Config;
use tollgate_enrich::Enricher;
use tollgate_event::Limits;
use tollgate_kafka::consumer_config;
use tollgate_telemetry::live::LiveWriter;
use tollgate_telemetry::metrics::Telemetry;
use tollgate_telemetry::Stats;
use tracing::{info, warn};

use crate::dlq::DeadLetters;
use crate::events::{CommitAttempted, ConsumerErrorRetried, InternalEvent, WriteDone};
use crate::partition::{Collector, Env, Handled, Partition};
use crate::writer::{Job, Writer};
use crate::{kafka, PipelineError};

/// How the pipeline runs.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Stop once every assigned partition is read to its end, all windows
    /// are written and the offsets are committed (quick start, tests, benchmarks).
    pub exit_when_idle: bool,
    /// Set to stop: the runner commits what is safe and returns.
    pub stop: Arc<AtomicBool>,
    /// Late events buffered per partition before they are flushed to a file.
    pub late_batch: usize,
    /// This worker's index among the process's workers (`pipeline.workers`):
    /// where it reports in the live view and the health.
    pub worker: usize,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            exit_when_idle: false,
            stop: Arc::new(AtomicBool::new(false)),
            late_batch: 10_000,
            worker: 0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunOutcome {
    Stopped,
    Drained,
}

/// What the consumer tells the runner from librdkafka's threads: revoked
/// partitions (the runner drops their state), newly assigned ones, and
/// librdkafka's statistics (read into the live health).
struct ConsumerEvents {
    revoked: Mutex<Vec<(String, i32)>>,
    /// Assigned since the worker last looked: their committed offsets are
    /// checked against the broker's log before anything is read.
    assigned: Mutex<Vec<(String, i32)>>,
    telemetry: Arc<Telemetry>,
    worker: usize,
}

impl ClientContext for ConsumerEvents {
    fn stats(&self, stats: rdkafka::Statistics) {
        let h = &self.telemetry.live.health;
        let up = stats.brokers.values().any(|b| b.state == "UP");
        h.broker_up.store(up, Ordering::Relaxed);
        let mut lag = BTreeMap::new();
        for (topic, t) in &stats.topics {
            for (&partition, p) in &t.partitions {
                // Messages on the broker not yet read by this member: the
                // high watermark minus the position (the last message handed
                // to the worker + 1, or the next fetch offset before that).
                // Partitions this member does not fetch have neither.
                let position = if p.app_offset >= 0 {
                    p.app_offset
                } else {
                    p.next_offset
                };
                if partition >= 0 && position >= 0 && p.hi_offset >= 0 {
                    lag.insert((topic.clone(), partition), (p.hi_offset - position).max(0));
                }
            }
        }
        h.set_lag(self.worker, lag);
        h.stats_at_ms
            .store(chrono::Utc::now().timestamp_millis(), Ordering::Relaxed);
    }
}

impl ConsumerContext for ConsumerEvents {
    fn pre_rebalance(&self, _c: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(tpl) => {
                let mut r = self.revoked.lock().unwrap_or_else(|p| p.into_inner());
                for e in tpl.elements() {
                    r.push((e.topic().to_string(), e.partition()));
                }
                info!(partitions = tpl.count(), "partitions revoked");
            }
            Rebalance::Assign(tpl) => {
                let mut a = self.assigned.lock().unwrap_or_else(|p| p.into_inner());
                for e in tpl.elements() {
                    a.push((e.topic().to_string(), e.partition()));
                }
                info!(partitions = tpl.count(), "partitions assigned");
            }
            Rebalance::Error(e) => warn!(error = %e, "rebalance error"),
        }
    }
}

struct Runner<'a> {
    cfg: &'a Config,
    /// The trees the windows, late files and checkpoints go to.
    output: tollgate_rollup::Output,
    opts: &'a RunOptions,
    telemetry: &'a Telemetry,
    live: LiveWriter,
    dead_letters: DeadLetters,
    env: Env,
    partitions: Vec<Partition>,
    last_commit: Instant,
    commit_due: bool,
    last_message: Instant,
    writer: Writer,
    /// The clock as last read by the loop (at most 256 messages old).
    now: Instant,
    topics: Vec<String>,
    /// Since when the consumer has had no partition assigned.
    unassigned_since: Option<Instant>,
    /// The watchdog already left and rejoined the group once.
    rejoined: bool,
    /// This worker's side of the shared spend (`[spend]`), if on.
    spend: Option<crate::spend::SpendPublisher>,
}

/// What librdkafka's threads left in `list`, emptying it.
fn taken(list: &Mutex<Vec<(String, i32)>>) -> Vec<(String, i32)> {
    std::mem::take(&mut *list.lock().unwrap_or_else(|p| p.into_inner()))
}

fn wall_clock_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Run the pipeline until stopped (or drained, with `exit_when_idle`).
/// Returns an error for conditions a restart may cure (the caller retries
/// with backoff); bad input never returns an error, it is dead-lettered.
pub fn run_pipeline(
    cfg: &Config,
    opts: &RunOptions,
    telemetry: &Arc<Telemetry>,
    decisions: &crate::DecisionStage,
) -> Result<RunOutcome, PipelineError> {
    // Every line this worker logs names it.
    let _worker = tracing::info_span!("worker", worker = opts.worker).entered();
    let mut cc = consumer_config(cfg, &cfg.kafka.group_id);
    cc.set("enable.auto.offset.store", "false");
    if cfg.kafka.statistics_interval_ms > 0 {
        cc.set(
            "statistics.interval.ms",
            cfg.kafka.statistics_interval_ms.to_string(),
        );
    }
    let instance = cfg.worker_instance_id(opts.worker);
    if let Some(id) = &instance {
        cc.set("group.instance.id", id);
    }
    let consumer: BaseConsumer<ConsumerEvents> = cc
        .create_with_context(ConsumerEvents {
            revoked: Mutex::default(),
            assigned: Mutex::default(),
            telemetry: telemetry.clone(),
            worker: opts.worker,
        })
        .map_err(kafka("create consumer"))?;
    let topics: Vec<&str> = cfg.topics.sources().iter().map(|(t, _)| *t).collect();
    consumer.subscribe(&topics).map_err(kafka("subscribe"))?;
    let enricher = Enricher::new(cfg.pricing.clone(), cfg.defaults.clone())
        .map_err(|e| PipelineError::Config(e.to_string()))?;
    let mut runner = Runner {
        cfg,
        opts,
        telemetry,
        live: LiveWriter::new(&telemetry.live, opts.worker),
        dead_letters: DeadLetters::new(cfg)?,
        env: Env {
            enricher,
            limits: Limits {
                max_message_bytes: cfg.limits.max_message_bytes,
            },
            wall_ms: wall_clock_ms(),
            max_ahead_ms: cfg.window.max_future_ms(),
            late_batch: opts.late_batch,
        },
        partitions: Vec::new(),
        last_commit: Instant::now(),
        commit_due: false,
        last_message: Instant::now(),
        now: Instant::now(),
        topics: topics.iter().map(|t| t.to_string()).collect(),
        unassigned_since: None,
        rejoined: false,
        spend: crate::spend::SpendPublisher::new(cfg, opts.worker)?,
        output: decisions.output.clone(),
        writer: Writer::spawn(
            decisions.output.clone(),
            crate::decide::WindowDecider::new(decisions.clone(), telemetry.clone(), opts.worker)?,
            telemetry.clone(),
        )?,
    };
    info!(topics = ?topics, group = %cfg.kafka.group_id, instance = ?instance, worker = opts.worker, brokers = %cfg.kafka.brokers, "consuming");
    let outcome = runner.run(&consumer);
    if let Some(spend) = &runner.spend {
        spend.flush();
    }
    telemetry.live.health.report(opts.worker, 0, false);
    outcome
}

impl Runner<'_> {
    fn run(
        &mut self,
        consumer: &BaseConsumer<ConsumerEvents>,
    ) -> Result<RunOutcome, PipelineError> {
        let tick = Duration::from_millis(100);
        let mut last_tick = Instant::now();
        let mut since_clock = 0u32;
        loop {
            if self.opts.stop.load(Ordering::Relaxed) {
                self.commit(consumer)?;
                info!("stopped; committed what is written");
                return Ok(RunOutcome::Stopped);
            }
            let polled = consumer.poll(tick);
            // A reloaded price book applies from the next message on.
            self.env.enricher.refresh(&self.telemetry.pricing);
            self.apply_revocations(consumer);
            self.check_assigned(consumer)?;
            let busy = match polled {
                Some(Ok(msg)) => {
                    self.on_message(consumer, &msg)?;
                    true
                }
                Some(Err(e)) => {
                    self.kafka_error(e)?;
                    false
                }
                None => {
                    Stats::add(&self.telemetry.stats.empty_polls, 1);
                    false
                }
            };
            // While messages stream in, read the clock every 256 messages only.
            since_clock += 1;
            if busy && since_clock < 256 {
                continue;
            }
            since_clock = 0;
            self.now = Instant::now();
            self.env.wall_ms = wall_clock_ms();
            if self.now.duration_since(last_tick) >= tick {
                last_tick = self.now;
                self.on_tick(consumer)?;
                if self.opts.exit_when_idle && self.drained(consumer)? {
                    self.commit(consumer)?;
                    info!("all assigned partitions read to their end and written");
                    return Ok(RunOutcome::Drained);
                }
            }
        }
    }

    fn kafka_error(&mut self, e: KafkaError) -> Result<(), PipelineError> {
        if let Some(code) = e.rdkafka_error_code() {
            use rdkafka::types::RDKafkaErrorCode as C;
            if matches!(code, C::Fatal) {
                return Err(kafka("consume")(e));
            }
        }
        ConsumerErrorRetried { error: &e }.emit(self.telemetry);
        Ok(())
    }

    fn apply_revocations(&mut self, consumer: &BaseConsumer<ConsumerEvents>) {
        let revoked = taken(&consumer.context().revoked);
        if revoked.is_empty() {
            return;
        }
        // Their unwritten state is rebuilt by whoever owns them next, from the committed offset.
        self.partitions
            .retain(|p| !revoked.iter().any(|(t, n)| p.is(t, *n)));
    }

    /// Every partition of the subscribed topics (all workers' and instances').
    fn group_partitions(
        &self,
        consumer: &BaseConsumer<ConsumerEvents>,
    ) -> Result<TopicPartitionList, PipelineError> {
        let mut all = TopicPartitionList::new();
        for topic in &self.topics {
            let md = consumer
                .fetch_metadata(Some(topic), Duration::from_secs(5))
                .map_err(kafka("fetch metadata"))?;
            for t in md.topics() {
                for p in t.partitions() {
                    all.add_partition(t.name(), p.id());
                }
            }
        }
        Ok(all)
    }

    /// Refuse a newly assigned partition whose committed offset is past the
    /// end of its log ([`tollgate_window::resume::committed_beyond_log`]): reading it
    /// would skip everything the broker now has. Checked on assignment, not
    /// at the first message, because such a partition may never yield one.
    fn check_assigned(&self, consumer: &BaseConsumer<ConsumerEvents>) -> Result<(), PipelineError> {
        if taken(&consumer.context().assigned).is_empty() {
            return Ok(());
        }
        // Every partition of the group, not only those assigned here: the
        // other workers and instances are reading theirs meanwhile, and a
        // log that is not the one the group committed against is refused
        // before any of it is counted, whoever owns which part.
        let committed = consumer
            .committed_offsets(self.group_partitions(consumer)?, Duration::from_secs(10))
            .map_err(kafka("read committed offsets"))?;
        for e in committed.elements() {
            let Offset::Offset(o) = e.offset() else {
                continue;
            };
            let (_, log_end) = consumer
                .fetch_watermarks(e.topic(), e.partition(), Duration::from_secs(10))
                .map_err(kafka("fetch watermarks"))?;
            if tollgate_window::resume::committed_beyond_log(o, log_end) {
                return Err(PipelineError::CommittedBeyondLog {
                    topic: e.topic().into(),
                    partition: e.partition(),
                    committed: o,
                    log_end,
                });
            }
        }
        Ok(())
    }

    /// The operator of `topic`/`partition`, restored on its first message.
    fn partition_index(
        &mut self,
        consumer: &BaseConsumer<ConsumerEvents>,
        topic: &str,
        partition: i32,
    ) -> Result<usize, PipelineError> {
        if let Some(i) = self.partitions.iter().position(|p| p.is(topic, partition)) {
            return Ok(i);
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(topic, partition);
        let committed = consumer
            .committed_offsets(tpl, Duration::from_secs(10))
            .map_err(kafka("read committed offset"))?;
        let committed = committed
            .find_partition(topic, partition)
            .and_then(|e| match e.offset() {
                Offset::Offset(o) => Some((o, e.metadata().to_string())),
                _ => None,
            });
        let restored = Partition::restore(
            self.cfg,
            &self.output,
            topic,
            partition,
            committed.as_ref().map(|(o, m)| (*o, m.as_str())),
            self.writer.blocked(),
        )?;
        self.partitions.push(restored);
        self.writer.submit(Job::Forget {
            topic: topic.into(),
            partition,
        })?;
        Ok(self.partitions.len() - 1)
    }

    fn on_message(
        &mut self,
        consumer: &BaseConsumer<ConsumerEvents>,
        msg: &BorrowedMessage<'_>,
    ) -> Result<(), PipelineError> {
        self.last_message = self.now;
        Stats::add(&self.telemetry.stats.consumed, 1);
        let i = self.partition_index(consumer, msg.topic(), msg.partition())?;
        let mut out = Collector {
            writer: &mut self.writer,
            live: &mut self.live,
            telemetry: self.telemetry,
        };
        let handled = self.partitions[i].on_message(
            msg.offset(),
            msg.payload().unwrap_or_default(),
            self.now,
            &mut self.env,
            &mut out,
        )?;
        match handled {
            Handled::Done => Ok(()),
            Handled::Seek(to) => consumer
                .seek(
                    msg.topic(),
                    msg.partition(),
                    Offset::Offset(to),
                    Duration::from_secs(10),
                )
                .map_err(kafka("seek to the committed offset")),
            Handled::DeadLetter(err) => self.dead_letters.send(msg, &err, self.telemetry),
        }
    }

    /// Apply the writer's acknowledgements: each releases its hold on the
    /// partition's commit point.
    fn collect_written(&mut self) -> Result<(), PipelineError> {
        while let Some(done) = self.writer.try_done()? {
            let written = done.result?;
            if !done.holds {
                // A clock tick: its decisions only.
                let s = &self.telemetry.stats;
                Stats::add(&s.decisions, written.decided.new);
                Stats::add(&s.decisions_replayed, written.decided.replayed);
                continue;
            }
            if let Some(p) = self
                .partitions
                .iter_mut()
                .find(|p| p.is(&done.topic, done.partition))
            {
                p.on_written(done.first_offset);
            }
            self.commit_due = true;
            WriteDone {
                topic: &done.topic,
                partition: done.partition,
                first_offset: done.first_offset,
                written: &written,
            }
            .emit(self.telemetry);
        }
        Ok(())
    }

    fn on_tick(&mut self, consumer: &BaseConsumer<ConsumerEvents>) -> Result<(), PipelineError> {
        self.collect_written()?;
        let telemetry: &Telemetry = self.telemetry;
        let health = &telemetry.live.health;
        let assignment = consumer.assignment().ok();
        let assigned = assignment.as_ref().map_or(0, |a| a.count());
        health.report(self.opts.worker, assigned, true);
        // A heartbeat partition with nothing to read has no operator yet
        // (they are restored at their first message): restore it, so that
        // its idle clock judges its silent nodes.
        let silent: Vec<(String, i32)> = assignment
            .iter()
            .flat_map(|a| a.elements())
            .filter(|e| self.cfg.topics.kind_of(e.topic()) == Some(tollgate_event::Kind::Heartbeat))
            .filter(|e| {
                !self
                    .partitions
                    .iter()
                    .any(|p| p.is(e.topic(), e.partition()))
            })
            .map(|e| (e.topic().to_string(), e.partition()))
            .collect();
        for (topic, partition) in silent {
            self.partition_index(consumer, &topic, partition)?;
        }
        if self.live.due(&telemetry.live, self.now) {
            let open = self.partitions.iter().flat_map(Partition::open_rows);
            self.live.publish(&telemetry.live, self.now, open);
        }
        if let Some(spend) = self.spend.as_mut().filter(|p| p.due(self.now)) {
            spend.publish(self.now, &mut self.partitions);
        }
        self.rejoin_if_unassigned(consumer, assigned)?;
        let idle = Duration::from_secs_f64(self.cfg.window.idle_timeout_secs);
        let mut out = Collector {
            writer: &mut self.writer,
            live: &mut self.live,
            telemetry,
        };
        for p in &mut self.partitions {
            let backlog = health.backlog(&p.topic, p.partition).unwrap_or(0);
            p.on_tick(idle, backlog, &mut out)?;
        }
        let interval = Duration::from_millis(self.cfg.output.commit_interval_ms);
        if self.commit_due || self.last_commit.elapsed() >= interval {
            self.commit(consumer)?;
        }
        Ok(())
    }

    /// `assigned`: this worker's partitions now. A worker without any while
    /// another worker of the process has some is simply one too many for
    /// the partitions (not stuck), so only a process with none rejoins.
    fn rejoin_if_unassigned(
        &mut self,
        consumer: &BaseConsumer<ConsumerEvents>,
        assigned: usize,
    ) -> Result<(), PipelineError> {
        let limit = self.cfg.kafka.rejoin_when_unassigned_secs;
        if limit == 0 {
            return Ok(());
        }
        if assigned > 0 || self.telemetry.live.health.assigned() > 0 {
            self.unassigned_since = None;
            self.rejoined = false;
            return Ok(());
        }
        let since = *self.unassigned_since.get_or_insert(self.now);
        if self.now.duration_since(since) >= Duration::from_secs(limit) {
            if self.rejoined {
                // Rejoining on this client did not help either (seen with
                // tansu after a broker restart): start over with a new
                // client, from the committed offsets.
                return Err(PipelineError::Unassigned(limit * 2));
            }
            warn!(
                seconds = limit,
                "no partitions assigned; leaving and rejoining the consumer group"
            );
            consumer.unsubscribe();
            let topics: Vec<&str> = self.topics.iter().map(String::as_str).collect();
            consumer.subscribe(&topics).map_err(kafka("subscribe"))?;
            self.unassigned_since = None;
            self.rejoined = true;
        }
        Ok(())
    }

    /// Commit every partition's checkpoint that moved, after the dead-letter
    /// producer has delivered everything sent so far.
    fn commit(&mut self, consumer: &BaseConsumer<ConsumerEvents>) -> Result<(), PipelineError> {
        let started = Instant::now();
        let result = self.commit_moved(consumer);
        CommitAttempted {
            took: started.elapsed(),
            committed: *result.as_ref().unwrap_or(&0),
        }
        .emit(self.telemetry);
        result.map(|_| ())
    }

    /// The partitions committed (0: nothing moved, or the broker refused
    /// and the next commit tries again).
    fn commit_moved(
        &mut self,
        consumer: &BaseConsumer<ConsumerEvents>,
    ) -> Result<usize, PipelineError> {
        self.collect_written()?;
        self.last_commit = Instant::now();
        self.commit_due = false;
        let mut tpl = TopicPartitionList::new();
        let mut moved = Vec::new();
        for (i, p) in self.partitions.iter().enumerate() {
            let Some(cp) = p.checkpoint_to_commit() else {
                continue;
            };
            let mut e = tpl.add_partition(&p.topic, p.partition);
            e.set_offset(Offset::Offset(cp.offset))
                .map_err(kafka("commit"))?;
            e.set_metadata(cp.metadata());
            moved.push((i, cp));
        }
        if moved.is_empty() {
            return Ok(0);
        }
        self.dead_letters.all_delivered()?;
        for (i, cp) in &moved {
            let p = &self.partitions[*i];
            let entry = tollgate_rollup::CheckpointEntry {
                offset: cp.offset,
                watermark_ms: cp.watermark_ms,
            };
            tollgate_rollup::save_checkpoint(&self.output.rollups, &p.topic, p.partition, entry)?;
        }
        match consumer.commit(&tpl, CommitMode::Sync) {
            Ok(()) => {
                for &(i, cp) in &moved {
                    self.partitions[i].on_committed(cp);
                }
                Ok(moved.len())
            }
            // Not fatal: the output is written, the offsets will be committed next time.
            Err(e) => {
                warn!(error = %e, "offset commit failed; will retry");
                Ok(0)
            }
        }
    }

    /// Nothing of this worker is open or pending, and every partition of
    /// the subscribed topics (every worker's and instance's) is committed
    /// to its high watermark.
    fn drained(&mut self, consumer: &BaseConsumer<ConsumerEvents>) -> Result<bool, PipelineError> {
        let idle = Duration::from_secs_f64(self.cfg.window.idle_timeout_secs);
        if self.last_message.elapsed() < idle.min(Duration::from_secs(2)) {
            return Ok(false);
        }
        self.collect_written()?;
        if self.writer.in_flight() > 0 {
            return Ok(false);
        }
        if !self.partitions.iter().all(Partition::is_settled) {
            return Ok(false);
        }
        // The group's whole input, not only this worker's share: a worker
        // (or instance) that is done with its partitions while others are
        // still read, or are between owners in a rebalance, keeps going.
        let all = self.group_partitions(consumer)?;
        if all.count() == 0 {
            return Ok(false);
        }
        let committed = consumer
            .committed_offsets(all, Duration::from_secs(5))
            .map_err(kafka("read committed offsets"))?;
        for e in committed.elements() {
            let (_, high) = consumer
                .fetch_watermarks(e.topic(), e.partition(), Duration::from_secs(5))
                .map_err(kafka("fetch watermarks"))?;
            let done = match e.offset() {
                Offset::Offset(o) => o >= high,
                _ => high == 0,
            };
            if !done {
                return Ok(false);
            }
        }
        Ok(true)
    }
}
