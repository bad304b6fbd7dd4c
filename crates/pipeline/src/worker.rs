//! The ingest worker: one consumer-group member on one thread.
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
use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::ClientContext;
use tollgate_config::Config;
use tollgate_enrich::Enricher;
use tollgate_event::{decode, DecodeError, Kind, Limits};
use tollgate_rollup::{LateRecord, Source};
use tollgate_window::{Checkpoint, ClosedWindow, Offer, PartitionState};
use tracing::{debug, error, info, info_span, warn};

use crate::writer::{Job, Writer};
use tollgate_kafka::{consumer_config, send_when_queued};
use tollgate_telemetry::live::{LiveWriter, TopicPartition};
use tollgate_telemetry::metrics::{Outcome, Telemetry};
use tollgate_telemetry::Stats;

use crate::{kafka, PipelineError};

/// How the worker runs.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Stop once every assigned partition is read to its end, all windows
    /// are written and the offsets are committed (quick start, tests, benchmarks).
    pub exit_when_idle: bool,
    /// Set to stop: the worker commits what is safe and returns.
    pub stop: Arc<AtomicBool>,
    /// Late events buffered per partition before they are flushed to a file.
    pub late_batch: usize,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            exit_when_idle: false,
            stop: Arc::new(AtomicBool::new(false)),
            late_batch: 10_000,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunOutcome {
    Stopped,
    Drained,
}

/// Consumer context: records revoked partitions so the worker drops their
/// state, and reads librdkafka's statistics into the live health.
struct Ctx {
    revoked: Mutex<Vec<(String, i32)>>,
    /// Assigned since the worker last looked: their committed offsets are
    /// checked against the broker's log before anything is read.
    assigned: Mutex<Vec<(String, i32)>>,
    t: Arc<Telemetry>,
}

impl ClientContext for Ctx {
    fn stats(&self, stats: rdkafka::Statistics) {
        let h = &self.t.live.health;
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
        *h.lag.lock().unwrap_or_else(|p| p.into_inner()) = lag;
        h.stats_at_ms
            .store(chrono::Utc::now().timestamp_millis(), Ordering::Relaxed);
    }
}

impl ConsumerContext for Ctx {
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

/// Dead-letter producer context: remembers the first delivery failure.
#[derive(Default)]
struct DlqCtx {
    failed: Mutex<Option<String>>,
}

impl ClientContext for DlqCtx {}

impl ProducerContext for DlqCtx {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            error!(error = %e, "dead-letter delivery failed");
            let mut f = self.failed.lock().unwrap_or_else(|p| p.into_inner());
            f.get_or_insert_with(|| e.to_string());
        }
    }
}

struct Part {
    /// `Writer::blocked()` when the last message arrived.
    blocked_at_last_message: Duration,
    topic: Arc<str>,
    partition: i32,
    kind: Kind,
    state: PartitionState,
    late: Vec<LateRecord>,
    last_message: Instant,
    committed: Option<Checkpoint>,
    /// Where the partition must resume (the restored checkpoint's offset).
    resume_at: i64,
    seeked: bool,
}

struct Worker<'a> {
    cfg: &'a Config,
    opts: &'a RunOptions,
    stats: &'a Stats,
    t: &'a Telemetry,
    live: LiveWriter,
    dlq: ThreadedProducer<DlqCtx>,
    enricher: Enricher,
    limits: Limits,
    parts: Vec<Part>,
    last_commit: Instant,
    commit_due: bool,
    last_message: Instant,
    last_broker_error: Option<Instant>,
    writer: Writer,
    /// The clock as last read by the loop (at most 256 messages old).
    now: Instant,
    /// The wall clock (ms since the epoch) read with `now`.
    wall_ms: i64,
    /// `window.max_future_secs` in ms.
    max_ahead_ms: i64,
    topics: Vec<String>,
    /// Since when the consumer has had no partition assigned.
    unassigned_since: Option<Instant>,
    /// The watchdog already left and rejoined the group once.
    rejoined: bool,
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
    t: &Arc<Telemetry>,
    decisions: &crate::Decisions,
) -> Result<RunOutcome, PipelineError> {
    let mut cc = consumer_config(cfg, &cfg.kafka.group_id);
    cc.set("enable.auto.offset.store", "false");
    if cfg.kafka.statistics_interval_ms > 0 {
        cc.set(
            "statistics.interval.ms",
            cfg.kafka.statistics_interval_ms.to_string(),
        );
    }
    if let Some(id) = cfg.kafka.instance_id.as_deref().filter(|id| !id.is_empty()) {
        cc.set("group.instance.id", id);
    }
    let consumer: BaseConsumer<Ctx> = cc
        .create_with_context(Ctx {
            revoked: Mutex::default(),
            assigned: Mutex::default(),
            t: t.clone(),
        })
        .map_err(kafka("create consumer"))?;
    let topics: Vec<&str> = cfg.topics.sources().iter().map(|(t, _)| *t).collect();
    consumer.subscribe(&topics).map_err(kafka("subscribe"))?;

    let dlq: ThreadedProducer<DlqCtx> = tollgate_kafka::output_producer_config(cfg)
        .create_with_context(DlqCtx::default())
        .map_err(kafka("create dead-letter producer"))?;

    let enricher = Enricher::new(cfg.pricing.clone(), cfg.defaults.clone())
        .map_err(|e| PipelineError::Config(e.to_string()))?;
    let mut w = Worker {
        cfg,
        opts,
        stats: &t.stats,
        t,
        live: LiveWriter::new(&t.live),
        dlq,
        enricher,
        limits: Limits {
            max_message_bytes: cfg.limits.max_message_bytes,
        },
        parts: Vec::new(),
        last_commit: Instant::now(),
        commit_due: false,
        last_message: Instant::now(),
        last_broker_error: None,
        now: Instant::now(),
        wall_ms: wall_clock_ms(),
        max_ahead_ms: cfg.window.max_future_ms(),
        topics: topics.iter().map(|t| t.to_string()).collect(),
        unassigned_since: None,
        rejoined: false,
        writer: Writer::spawn(
            cfg.output.rollup_dir.clone(),
            cfg.output.late_dir.clone(),
            crate::decide::Decider::new(cfg, decisions.clone(), t.clone())?,
            t.clone(),
        )?,
    };
    info!(topics = ?topics, group = %cfg.kafka.group_id, instance = ?cfg.kafka.instance_id, brokers = %cfg.kafka.brokers, "consuming");
    let outcome = w.run(&consumer);
    let health = &t.live.health;
    health.running.store(false, Ordering::Relaxed);
    health.assigned.store(0, Ordering::Relaxed);
    outcome
}

impl Worker<'_> {
    fn run(&mut self, consumer: &BaseConsumer<Ctx>) -> Result<RunOutcome, PipelineError> {
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
            self.apply_revocations(consumer);
            self.check_assigned(consumer)?;
            let busy = match polled {
                Some(Ok(msg)) => {
                    self.handle(consumer, &msg)?;
                    true
                }
                Some(Err(e)) => {
                    self.kafka_error(e)?;
                    false
                }
                None => {
                    Stats::add(&self.stats.empty_polls, 1);
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
            self.wall_ms = wall_clock_ms();
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
        // librdkafka reconnects by itself; say so once every 10 s, not per poll.
        if self
            .last_broker_error
            .is_none_or(|t| t.elapsed() > Duration::from_secs(10))
        {
            warn!(error = %e, "kafka consumer error (retrying)");
            self.last_broker_error = Some(Instant::now());
        }
        Ok(())
    }

    fn apply_revocations(&mut self, consumer: &BaseConsumer<Ctx>) {
        let revoked = std::mem::take(
            &mut *consumer
                .context()
                .revoked
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        );
        if revoked.is_empty() {
            return;
        }
        // Their unwritten state is rebuilt by whoever owns them next, from the committed offset.
        self.parts.retain(|p| {
            !revoked
                .iter()
                .any(|(t, n)| **t == *p.topic && *n == p.partition)
        });
    }

    /// Refuse a newly assigned partition whose committed offset is past the
    /// end of its log ([`crate::resume::committed_beyond_log`]): reading it
    /// would skip everything the broker now has. Checked on assignment, not
    /// at the first message, because such a partition may never yield one.
    fn check_assigned(&self, consumer: &BaseConsumer<Ctx>) -> Result<(), PipelineError> {
        let assigned = std::mem::take(
            &mut *consumer
                .context()
                .assigned
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        );
        if assigned.is_empty() {
            return Ok(());
        }
        let mut tpl = TopicPartitionList::new();
        for (topic, partition) in &assigned {
            tpl.add_partition(topic, *partition);
        }
        let committed = consumer
            .committed_offsets(tpl, Duration::from_secs(10))
            .map_err(kafka("read committed offsets"))?;
        for e in committed.elements() {
            let Offset::Offset(o) = e.offset() else {
                continue;
            };
            let (_, log_end) = consumer
                .fetch_watermarks(e.topic(), e.partition(), Duration::from_secs(10))
                .map_err(kafka("fetch watermarks"))?;
            if crate::resume::committed_beyond_log(o, log_end) {
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

    fn part_index(
        &mut self,
        consumer: &BaseConsumer<Ctx>,
        topic: &str,
        partition: i32,
    ) -> Result<usize, PipelineError> {
        if let Some(i) = self
            .parts
            .iter()
            .position(|p| p.partition == partition && *p.topic == *topic)
        {
            return Ok(i);
        }
        let part = self.restore(consumer, topic, partition)?;
        self.parts.push(part);
        Ok(self.parts.len() - 1)
    }

    /// Rebuild a partition's state from its committed offset and the rollup tree.
    fn restore(
        &self,
        consumer: &BaseConsumer<Ctx>,
        topic: &str,
        partition: i32,
    ) -> Result<Part, PipelineError> {
        let kind = self.cfg.topics.kind_of(topic).ok_or_else(|| {
            PipelineError::Config(format!("message from unexpected topic {topic}"))
        })?;
        let _span = info_span!("restore", topic, partition).entered();
        let started = Instant::now();
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(topic, partition);
        let committed = consumer
            .committed_offsets(tpl, Duration::from_secs(10))
            .map_err(kafka("read committed offset"))?;
        let (offset, metadata) = committed
            .find_partition(topic, partition)
            .map(|e| (e.offset(), e.metadata().to_string()))
            .unwrap_or((Offset::Invalid, String::new()));
        let checkpoint = match offset {
            Offset::Offset(o) => Checkpoint {
                offset: o,
                watermark_ms: self.committed_watermark(topic, partition, o, &metadata)?,
            },
            _ => Checkpoint {
                offset: 0,
                watermark_ms: None,
            },
        };
        let spec = self.cfg.window_spec();
        let src = Source {
            kind: kind.as_str(),
            topic,
            partition,
        };
        let since = checkpoint
            .watermark_ms
            .map(|wm| wm.saturating_sub(spec.size_ms));
        let written = tollgate_rollup::scan_written(&self.cfg.output.rollup_dir, src, since)?;
        let removed = tollgate_rollup::remove_late_from(
            &self.cfg.output.late_dir,
            topic,
            partition,
            checkpoint.offset,
        )?;
        let temps_removed = tollgate_rollup::remove_stale_checkpoint_temps(
            &self.cfg.output.rollup_dir,
            topic,
            partition,
        )?;
        info!(offset = checkpoint.offset, watermark_ms = ?checkpoint.watermark_ms, windows_on_disk = written.len(), late_files_removed = removed, checkpoint_temps_removed = temps_removed, seconds = started.elapsed().as_secs_f64(), "partition restored");
        let state = PartitionState::restore(
            spec,
            kind,
            checkpoint,
            written.iter().map(|w| (w.start_ms, w.close_offset)),
        );
        Ok(Part {
            topic: topic.into(),
            partition,
            kind,
            state,
            late: Vec::new(),
            last_message: Instant::now(),
            blocked_at_last_message: self.writer.blocked(),
            committed: matches!(offset, Offset::Offset(_)).then_some(checkpoint),
            resume_at: checkpoint.offset,
            seeked: false,
        })
    }

    /// The watermark at committed offset `offset`: from the checkpoint file
    /// beside the rollups, else from the Kafka commit metadata.
    fn committed_watermark(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
        metadata: &str,
    ) -> Result<Option<i64>, PipelineError> {
        if let Some(e) =
            tollgate_rollup::load_checkpoint(&self.cfg.output.rollup_dir, topic, partition, offset)?
        {
            return Ok(e.watermark_ms);
        }
        match Checkpoint::parse_watermark(metadata) {
            Ok(wm) => Ok(wm),
            Err(reason) => {
                warn!(%reason, offset, "no recorded watermark for the committed offset; late-event classification restarts with the replay");
                Ok(None)
            }
        }
    }

    fn handle(
        &mut self,
        consumer: &BaseConsumer<Ctx>,
        msg: &BorrowedMessage<'_>,
    ) -> Result<(), PipelineError> {
        let now = self.now;
        self.last_message = now;
        Stats::add(&self.stats.consumed, 1);
        let i = self.part_index(consumer, msg.topic(), msg.partition())?;
        let offset = msg.offset();
        let part = &mut self.parts[i];
        if part.state.next_offset().is_none()
            && part.committed.is_some()
            && offset != part.resume_at
        {
            // The fetch position is not the committed offset we restored from:
            // resuming here would skip or repeat events. Go back to it once.
            if !part.seeked {
                part.seeked = true;
                warn!(topic = %part.topic, partition = part.partition, fetched = offset, resume_at = part.resume_at, "fetch position differs from the committed offset; seeking");
                consumer
                    .seek(
                        &part.topic,
                        part.partition,
                        Offset::Offset(part.resume_at),
                        Duration::from_secs(10),
                    )
                    .map_err(kafka("seek to the committed offset"))?;
                return Ok(());
            }
            match crate::resume::after_seek(part.resume_at, offset) {
                // Below the committed offset: already processed, skip it.
                crate::resume::AfterSeek::AlreadyProcessed => return Ok(()),
                crate::resume::AfterSeek::Vanished(n) => {
                    // The broker has nothing at the committed offset any more
                    // (retention, compaction, transaction markers): resume
                    // at the first offset it has.
                    Stats::add(&self.stats.offsets_vanished, n);
                    warn!(topic = %part.topic, partition = part.partition, resume_at = part.resume_at, first_available = offset, missing = n, "offsets after the committed one are gone from the broker; resuming at the first one it has");
                }
            }
        }
        part.last_message = now;
        part.blocked_at_last_message = self.writer.blocked();
        let payload = msg.payload().unwrap_or_default();
        let decoded = if payload.is_empty() {
            Err(DecodeError::Json("empty message".into()))
        } else {
            decode(payload, part.kind, &self.limits).and_then(|e| {
                tollgate_event::check_not_ahead(e.ts_ms, self.wall_ms, self.max_ahead_ms)
                    .map(|()| e)
            })
        };
        let kind = part.kind;
        match decoded {
            Err(err) => {
                part.state.skip(offset);
                self.t.events.add(kind, Outcome::DeadLettered);
                self.dead_letter(msg, &err)?;
            }
            Ok(event) => {
                let x = self.enricher.enrich(&event);
                let offer = part.state.offer(offset, &event, &x);
                self.t.events.add(
                    kind,
                    match offer {
                        Offer::Accepted => Outcome::Accepted,
                        Offer::Duplicate => Outcome::Duplicate,
                        Offer::AlreadyWritten => Outcome::ReplaySkipped,
                        Offer::Late { .. } => Outcome::Late,
                    },
                );
                if let Offer::Late { window_start } = offer {
                    let event = serde_json::from_slice(payload).unwrap_or(serde_json::Value::Null);
                    part.late.push(LateRecord {
                        offset,
                        window_start_ms: window_start,
                        watermark_ms: part.state.watermark(),
                        event,
                    });
                    if part.late.len() >= self.opts.late_batch {
                        self.flush_late(i)?;
                    }
                }
                let closed = self.parts[i].state.drain_closed();
                self.write_windows(i, closed)?;
            }
        }
        Ok(())
    }

    fn dead_letter(
        &self,
        msg: &BorrowedMessage<'_>,
        err: &DecodeError,
    ) -> Result<(), PipelineError> {
        let partition = msg.partition().to_string();
        let offset = msg.offset().to_string();
        let reason = err.to_string();
        debug!(topic = msg.topic(), partition = msg.partition(), offset = msg.offset(), error = %reason, "dead-lettered");
        let copy = crate::dead_letter::Copy::new(
            msg.payload().unwrap_or_default(),
            msg.key(),
            msg.headers()
                .into_iter()
                .flat_map(|h| h.iter())
                .map(|h| (h.key, h.value.unwrap_or_default())),
        );
        if copy.truncated_from.is_some() {
            Stats::add(&self.stats.dead_letters_truncated, 1);
            warn!(
                topic = msg.topic(),
                partition = msg.partition(),
                offset = msg.offset(),
                bytes = copy.truncated_from,
                "dead-letter copy truncated to fit the producer's limit"
            );
        }
        let truncated = copy.truncated_from.map(|n| n.to_string());
        let mut headers = OwnedHeaders::new()
            .insert(Header {
                key: "tollgate.source.topic",
                value: Some(msg.topic()),
            })
            .insert(Header {
                key: "tollgate.source.partition",
                value: Some(&partition),
            })
            .insert(Header {
                key: "tollgate.source.offset",
                value: Some(&offset),
            })
            .insert(Header {
                key: "tollgate.error",
                value: Some(&reason),
            });
        if let Some(n) = &truncated {
            headers = headers.insert(Header {
                key: crate::dead_letter::TRUNCATED_HEADER,
                value: Some(n),
            });
        }
        let dropped = copy.headers_dropped.to_string();
        if copy.headers_dropped > 0 {
            headers = headers.insert(Header {
                key: crate::dead_letter::HEADERS_DROPPED_HEADER,
                value: Some(&dropped),
            });
        }
        for (key, value) in &copy.headers {
            headers = headers.insert(Header {
                key: key.as_ref(),
                value: Some(*value),
            });
        }
        let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(&self.cfg.topics.dlq)
            .payload(copy.payload)
            .headers(headers);
        if let Some(k) = copy.key {
            record = record.key(k);
        }
        send_when_queued(&self.dlq, record).map_err(|e| PipelineError::DeadLetter(e.to_string()))
    }

    /// Hand closed windows (and the partition's pending late events) to the writer.
    fn write_windows(&mut self, i: usize, closed: Vec<ClosedWindow>) -> Result<(), PipelineError> {
        if closed.is_empty() {
            return Ok(());
        }
        let part = &self.parts[i];
        let source: TopicPartition = (part.topic.clone(), part.partition);
        let live = self.live.enabled(&self.t.live);
        let kind = part.kind;
        let mut jobs = Vec::with_capacity(closed.len());
        for window in closed {
            // Each row's dimensions decoded once, for the ledger and the counters.
            let rows: Vec<_> = window.rows.iter().collect();
            // The window leaves the open set and enters the ledger here, on
            // this thread, so the live snapshot counts it exactly once.
            if live {
                self.live.close_window(
                    &source,
                    window.start_ms,
                    window.end_ms,
                    rows.iter().copied(),
                );
            }
            self.t.business.add_rows(rows.into_iter());
            jobs.push(Job::Window {
                topic: source.0.clone(),
                partition: source.1,
                kind,
                window,
            });
        }
        // Readers see these windows closed before the writer can make any of
        // their files visible: readers that add the rollup files to the live
        // view's open windows (`/v1/usage`) must never see a window in both.
        self.live.publish_closed(&self.t.live);
        for job in jobs {
            self.writer.submit(job)?;
        }
        self.flush_late(i)
    }

    fn flush_late(&mut self, i: usize) -> Result<(), PipelineError> {
        let part = &mut self.parts[i];
        let Some(key) = part.state.late_submitted() else {
            return Ok(());
        };
        let records = std::mem::take(&mut part.late);
        let job = Job::Late {
            topic: part.topic.clone(),
            partition: part.partition,
            key,
            records,
        };
        self.writer.submit(job)
    }

    /// Apply the writer's acknowledgements: each releases its hold on the
    /// partition's commit point.
    fn collect_written(&mut self) -> Result<(), PipelineError> {
        while let Some(done) = self.writer.try_done()? {
            let w = done.result?;
            if let Some(p) = self
                .parts
                .iter_mut()
                .find(|p| p.partition == done.partition && *p.topic == *done.topic)
            {
                p.state.written(done.key);
            }
            self.commit_due = true;
            Stats::add(&self.stats.write_micros, w.micros);
            if w.window_start_ms.is_some() {
                self.t
                    .window_close_seconds
                    .observe(w.latency_micros as f64 / 1e6);
            }
            Stats::add(&self.stats.decisions, w.decided.new);
            Stats::add(&self.stats.decisions_replayed, w.decided.replayed);
            Stats::add(&self.stats.policy_errors, w.decided.policy_errors);
            Stats::add(&self.stats.decide_micros, w.decided.micros);
            Stats::add(&self.stats.publish_micros, w.decided.publish_micros);
            match w.window_start_ms {
                Some(start) => {
                    Stats::add(&self.stats.windows_written, 1);
                    Stats::add(&self.stats.rows_written, w.rows as u64);
                    Stats::add(&self.stats.bytes_written, w.bytes);
                    info!(
                        topic = %done.topic, partition = done.partition, window_start_ms = start,
                        events = w.events, rows = w.rows, duplicates = w.duplicates, first_offset = done.key,
                        path = %w.path.display(), write_seconds = w.micros as f64 / 1e6, "window written"
                    );
                }
                None => {
                    Stats::add(&self.stats.late_files_written, 1);
                    info!(topic = %done.topic, partition = done.partition, events = w.events, path = %w.path.display(), "late events written");
                }
            }
        }
        Ok(())
    }

    fn on_tick(&mut self, consumer: &BaseConsumer<Ctx>) -> Result<(), PipelineError> {
        self.collect_written()?;
        let t: &Telemetry = self.t;
        let health = &t.live.health;
        health.assigned.store(self.parts.len(), Ordering::Relaxed);
        health.running.store(true, Ordering::Relaxed);
        if self.live.due(&self.t.live, self.now) {
            let open = self.parts.iter().flat_map(|p| {
                p.state.open_rows().map(move |(start, end, rows)| {
                    ((p.topic.clone(), p.partition), start, end, rows)
                })
            });
            self.live.publish(&self.t.live, self.now, open);
        }
        self.rejoin_if_unassigned(consumer)?;
        let idle = Duration::from_secs_f64(self.cfg.window.idle_timeout_secs);
        let blocked = self.writer.blocked();
        for i in 0..self.parts.len() {
            let p = &mut self.parts[i];
            // Idle means no message while the consumer was free to read one:
            // time spent waiting on a full writer queue does not count, or a
            // partition with a backlog would close its windows early.
            let waited = blocked.saturating_sub(p.blocked_at_last_message);
            // Nor is a partition idle while the broker holds messages of it
            // not yet read (a slow fetch on a loaded machine, not silence):
            // closing its windows then would make those messages late.
            let backlog = health.backlog(&p.topic, p.partition).unwrap_or(0);
            if p.last_message.elapsed().saturating_sub(waited) >= idle
                && backlog == 0
                && (p.state.open_windows() > 0 || !p.late.is_empty())
            {
                info!(topic = %p.topic, partition = p.partition, open = p.state.open_windows(), "partition idle; closing its windows");
                let closed = p.state.flush_idle();
                self.write_windows(i, closed)?;
                self.flush_late(i)?;
            }
        }
        let interval = Duration::from_millis(self.cfg.output.commit_interval_ms);
        if self.commit_due || self.last_commit.elapsed() >= interval {
            self.commit(consumer)?;
        }
        Ok(())
    }

    fn rejoin_if_unassigned(&mut self, consumer: &BaseConsumer<Ctx>) -> Result<(), PipelineError> {
        let limit = self.cfg.kafka.rejoin_when_unassigned_secs;
        if limit == 0 {
            return Ok(());
        }
        let assigned = consumer.assignment().map(|a| a.count()).unwrap_or(0);
        if assigned > 0 {
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
    fn commit(&mut self, consumer: &BaseConsumer<Ctx>) -> Result<(), PipelineError> {
        let started = Instant::now();
        let result = self.commit_inner(consumer);
        let took = started.elapsed();
        Stats::add(&self.stats.commit_micros, took.as_micros() as u64);
        self.t.commit_seconds.observe(took.as_secs_f64());
        result
    }

    fn commit_inner(&mut self, consumer: &BaseConsumer<Ctx>) -> Result<(), PipelineError> {
        self.collect_written()?;
        self.last_commit = Instant::now();
        self.commit_due = false;
        let mut tpl = TopicPartitionList::new();
        let mut moved = Vec::new();
        for (i, p) in self.parts.iter().enumerate() {
            let Some(cp) = p.state.checkpoint() else {
                continue;
            };
            if p.committed == Some(cp) {
                continue;
            }
            let mut e = tpl.add_partition(&p.topic, p.partition);
            e.set_offset(Offset::Offset(cp.offset))
                .map_err(kafka("commit"))?;
            e.set_metadata(cp.metadata());
            moved.push((i, cp));
        }
        if moved.is_empty() {
            return Ok(());
        }
        if self.dlq.in_flight_count() > 0 {
            self.dlq
                .flush(Duration::from_secs(30))
                .map_err(kafka("flush dead-letter producer"))?;
        }
        if let Some(f) = self
            .dlq
            .context()
            .failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        {
            return Err(PipelineError::DeadLetter(f));
        }
        for (i, cp) in &moved {
            let p = &self.parts[*i];
            let entry = tollgate_rollup::CheckpointEntry {
                offset: cp.offset,
                watermark_ms: cp.watermark_ms,
            };
            tollgate_rollup::save_checkpoint(
                &self.cfg.output.rollup_dir,
                &p.topic,
                p.partition,
                entry,
            )?;
        }
        match consumer.commit(&tpl, CommitMode::Sync) {
            Ok(()) => {
                Stats::add(&self.stats.commits, 1);
                for (i, cp) in moved {
                    let p = &mut self.parts[i];
                    p.committed = Some(cp);
                    p.state.committed(cp.offset);
                    debug!(topic = %p.topic, partition = p.partition, offset = cp.offset, "committed");
                }
                Ok(())
            }
            // Not fatal: the output is written, the offsets will be committed next time.
            Err(e) => {
                warn!(error = %e, "offset commit failed; will retry");
                Ok(())
            }
        }
    }

    /// Every assigned partition is read to its high watermark, nothing is
    /// open or pending, and everything is committed.
    fn drained(&mut self, consumer: &BaseConsumer<Ctx>) -> Result<bool, PipelineError> {
        let idle = Duration::from_secs_f64(self.cfg.window.idle_timeout_secs);
        if self.last_message.elapsed() < idle.min(Duration::from_secs(2)) {
            return Ok(false);
        }
        self.collect_written()?;
        if self.writer.in_flight() > 0 {
            return Ok(false);
        }
        if self.parts.iter().any(|p| {
            p.state.open_windows() > 0 || !p.late.is_empty() || p.state.checkpoint() != p.committed
        }) {
            return Ok(false);
        }
        let assignment = consumer.assignment().map_err(kafka("assignment"))?;
        if assignment.count() == 0 {
            return Ok(false);
        }
        let committed = consumer
            .committed(Duration::from_secs(5))
            .map_err(kafka("read committed offsets"))?;
        for e in assignment.elements() {
            let (_, high) = consumer
                .fetch_watermarks(e.topic(), e.partition(), Duration::from_secs(5))
                .map_err(kafka("fetch watermarks"))?;
            let done = match committed
                .find_partition(e.topic(), e.partition())
                .map(|c| c.offset())
            {
                Some(Offset::Offset(o)) => o >= high,
                _ => high == 0,
            };
            if !done {
                return Ok(false);
            }
        }
        Ok(true)
    }
}
