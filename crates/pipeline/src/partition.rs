//! The partition operator: one assigned topic-partition, from its restore
//! to its revocation (after Arroyo's operators: the runner owns the poll
//! loop, the clock and the commits; the operator answers `on_message`,
//! `on_tick` and `on_written`, and emits what it closes into a
//! [`Collector`]).
//!
//! It holds the partition's windows (`tollgate_window::PartitionState`),
//! its late events not yet handed to the writer, where it resumes
//! (`tollgate_window::resume`), and its last committed checkpoint.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tollgate_config::Config;
use tollgate_enrich::Enricher;
use tollgate_event::{decode, DecodeError, Kind, Limits};
use tollgate_rollup::{month_start_ms, LateRecord, Output, Source};
use tollgate_telemetry::live::{LiveWriter, TopicPartition};
use tollgate_telemetry::metrics::{Outcome, Telemetry};
use tollgate_telemetry::spend::{PartitionRecord, TeamRecord, WireWindow};
use tollgate_window::resume::{Admit, Resume};
use tollgate_window::{ByTeam, Checkpoint, ClosedWindow, Offer, PartitionState, Totals};
use tracing::{info, info_span, warn};

use crate::events::{EventHandled, InternalEvent, OffsetsVanished, PartitionIdle};
use crate::writer::{Job, Writer};
use crate::PipelineError;

/// What every partition reads while it handles a message; owned by the
/// runner, which keeps the clock in it up to date.
pub(crate) struct Env {
    pub enricher: Enricher,
    pub limits: Limits,
    /// The wall clock (ms since the epoch) as the runner last read it.
    pub wall_ms: i64,
    /// `window.max_future_secs` in ms.
    pub max_ahead_ms: i64,
    /// Late events buffered per partition before they are flushed to a file.
    pub late_batch: usize,
}

/// Where a partition's results go: the live view, the business counters
/// and the writer's queue.
pub(crate) struct Collector<'a> {
    pub writer: &'a mut Writer,
    pub live: &'a mut LiveWriter,
    pub telemetry: &'a Telemetry,
}

/// What the runner must do after a message.
pub(crate) enum Handled {
    /// Nothing more.
    Done,
    /// Seek the partition to this offset (the message was dropped).
    Seek(i64),
    /// The message is not an event: copy it to the dead-letter topic (its
    /// offset is already counted as consumed).
    DeadLetter(DecodeError),
}

pub(crate) struct Partition {
    pub topic: Arc<str>,
    pub partition: i32,
    kind: Kind,
    state: PartitionState,
    late: Vec<LateRecord>,
    last_message: Instant,
    /// When the idle clock was last sent to the writer (heartbeats).
    clock_sent: Instant,
    /// `Writer::blocked()` when the last message arrived.
    blocked_at_last_message: Duration,
    /// The checkpoint last committed (or restored from).
    committed: Option<Checkpoint>,
    resume: Resume,
    /// The month totals by team of the windows this partition closed
    /// (month start → totals), seeded at restore from its rollup files of
    /// the month when the spend is shared (`[spend]`); `None` otherwise.
    spend: Option<ByTeam<BTreeMap<i64, Totals>>>,
}

impl Partition {
    /// Rebuild a partition's state from its committed offset (`committed`:
    /// the offset and its commit metadata, `None` if the group never
    /// committed one) and the rollup tree. `blocked`: `Writer::blocked()` now.
    pub(crate) fn restore(
        cfg: &Config,
        output: &Output,
        topic: &str,
        partition: i32,
        committed: Option<(i64, &str)>,
        blocked: Duration,
    ) -> Result<Self, PipelineError> {
        let kind = cfg.topics.kind_of(topic).ok_or_else(|| {
            PipelineError::Config(format!("message from unexpected topic {topic}"))
        })?;
        let _span = info_span!("restore", topic, partition).entered();
        let started = Instant::now();
        let checkpoint = match committed {
            Some((offset, metadata)) => Checkpoint {
                offset,
                watermark_ms: committed_watermark(output, topic, partition, offset, metadata)?,
            },
            None => Checkpoint {
                offset: 0,
                watermark_ms: None,
            },
        };
        let spec = cfg.window_spec();
        let src = Source {
            kind: kind.as_str(),
            topic,
            partition,
        };
        let since = checkpoint
            .watermark_ms
            .map(|wm| wm.saturating_sub(spec.size_ms));
        let written = tollgate_rollup::scan_written(&output.rollups, src, since)?;
        let removed =
            tollgate_rollup::remove_late_from(&output.late, topic, partition, checkpoint.offset)?;
        let temps_removed =
            tollgate_rollup::remove_stale_checkpoint_temps(&output.rollups, topic, partition)?;
        info!(offset = checkpoint.offset, watermark_ms = ?checkpoint.watermark_ms, windows_on_disk = written.len(), late_files_removed = removed, checkpoint_temps_removed = temps_removed, seconds = started.elapsed().as_secs_f64(), "partition restored");
        let spend = if cfg.spend.enabled() {
            Some(seed_spend(output, src)?)
        } else {
            None
        };
        let state = PartitionState::restore(
            spec,
            kind,
            checkpoint,
            written.iter().map(|w| (w.start_ms, w.close_offset)),
        );
        Ok(Partition {
            topic: topic.into(),
            partition,
            kind,
            state,
            late: Vec::new(),
            last_message: Instant::now(),
            clock_sent: Instant::now(),
            blocked_at_last_message: blocked,
            committed: committed.is_some().then_some(checkpoint),
            resume: Resume::new(checkpoint.offset, committed.is_some()),
            spend,
        })
    }

    /// This partition's spend records (`[spend]`) as of `now_ms`: one per
    /// team with usage in the current month (closed or open windows), and
    /// where the partition is. Months before the previous one are dropped.
    pub(crate) fn spend_records(
        &mut self,
        now_ms: i64,
        owner: &str,
    ) -> Option<(Vec<TeamRecord>, PartitionRecord)> {
        let month = month_start_ms(now_ms);
        let spend = self.spend.as_mut()?;
        let keep_from = month_start_ms(month - 1);
        spend.retain(|months| {
            months.retain(|&m, _| m >= keep_from);
            !months.is_empty()
        });
        let mut teams: BTreeMap<(&str, Option<&str>), TeamRecord> = BTreeMap::new();
        let topic = &*self.topic;
        let partition = self.partition;
        let record = |tenant: &str, team: Option<&str>| TeamRecord {
            tenant: tenant.to_string(),
            team: team.map(str::to_string),
            topic: topic.to_string(),
            partition,
            month_start_ms: month,
            month_to_date: Totals::default(),
            open: Vec::new(),
        };
        for (tenant, team, months) in spend.iter() {
            if let Some(t) = months.get(&month) {
                teams
                    .entry((tenant, team))
                    .or_insert_with(|| record(tenant, team))
                    .month_to_date = *t;
            }
        }
        for (start, end, rows) in self.state.open_rows() {
            let mut by_team: BTreeMap<(&str, Option<&str>), Totals> = BTreeMap::new();
            for (d, m) in rows {
                by_team
                    .entry((d.tenant, d.team))
                    .or_default()
                    .add(&Totals::of(m));
            }
            for ((tenant, team), t) in by_team {
                teams
                    .entry((tenant, team))
                    .or_insert_with(|| record(tenant, team))
                    .open
                    .push(WireWindow {
                        start_ms: start,
                        end_ms: end,
                        totals: t,
                    });
            }
        }
        let at = PartitionRecord {
            topic: topic.to_string(),
            partition,
            watermark_ms: self.state.watermark(),
            offset: self.state.next_offset(),
            published_ms: now_ms,
            owner: owner.to_string(),
        };
        Some((teams.into_values().collect(), at))
    }

    pub(crate) fn is(&self, topic: &str, partition: i32) -> bool {
        self.partition == partition && *self.topic == *topic
    }

    fn source(&self) -> TopicPartition {
        (self.topic.clone(), self.partition)
    }

    /// One message of this partition, read at `now`.
    pub(crate) fn on_message(
        &mut self,
        offset: i64,
        payload: &[u8],
        now: Instant,
        env: &mut Env,
        out: &mut Collector<'_>,
    ) -> Result<Handled, PipelineError> {
        match self
            .resume
            .admit(self.state.next_offset().is_some(), offset)
        {
            Admit::Process => {}
            Admit::Seek(to) => {
                warn!(topic = %self.topic, partition = self.partition, fetched = offset, resume_at = to, "fetch position differs from the committed offset; seeking");
                return Ok(Handled::Seek(to));
            }
            Admit::AlreadyProcessed => return Ok(Handled::Done),
            Admit::Vanished(missing) => OffsetsVanished {
                topic: &self.topic,
                partition: self.partition,
                resume_at: self.resume.resume_at(),
                first_available: offset,
                missing,
            }
            .emit(out.telemetry),
        }
        self.last_message = now;
        self.blocked_at_last_message = out.writer.blocked();
        let decoded = if payload.is_empty() {
            Err(DecodeError::Json("empty message".into()))
        } else {
            decode(payload, self.kind, &env.limits).and_then(|e| {
                tollgate_event::check_not_ahead(e.ts_ms, env.wall_ms, env.max_ahead_ms).map(|()| e)
            })
        };
        let event = match decoded {
            Ok(event) => event,
            Err(err) => {
                self.state.skip(offset);
                self.handled(Outcome::DeadLettered, out);
                return Ok(Handled::DeadLetter(err));
            }
        };
        let enriched = env.enricher.enrich(&event);
        let offer = self.state.offer(offset, &event, &enriched);
        self.handled(
            match offer {
                Offer::Accepted => Outcome::Accepted,
                Offer::Duplicate => Outcome::Duplicate,
                Offer::AlreadyWritten => Outcome::ReplaySkipped,
                Offer::Late { .. } => Outcome::Late,
            },
            out,
        );
        if let Offer::Late { window_start } = offer {
            let event = serde_json::from_slice(payload).unwrap_or(serde_json::Value::Null);
            self.late.push(LateRecord {
                offset,
                window_start_ms: window_start,
                watermark_ms: self.state.watermark(),
                event,
            });
            if self.late.len() >= env.late_batch {
                self.flush_late(out)?;
            }
        }
        let closed = self.state.drain_closed();
        self.emit_closed(closed, out).map(|()| Handled::Done)
    }

    fn handled(&self, outcome: Outcome, out: &Collector<'_>) {
        EventHandled {
            kind: self.kind,
            outcome,
        }
        .emit(out.telemetry);
    }

    /// The runner's tick: close the windows of a partition that has gone
    /// quiet (`tollgate_window::resume::idle_close_due`). `backlog`: what
    /// the broker holds of it not yet read, if known.
    pub(crate) fn on_tick(
        &mut self,
        idle_after: Duration,
        backlog: i64,
        out: &mut Collector<'_>,
    ) -> Result<(), PipelineError> {
        let waited = out
            .writer
            .blocked()
            .saturating_sub(self.blocked_at_last_message);
        self.tick_clock(idle_after, backlog, out)?;
        let pending = self.state.open_windows() > 0 || !self.late.is_empty();
        if !tollgate_window::resume::idle_close_due(
            self.last_message.elapsed(),
            waited,
            backlog,
            idle_after,
            pending,
        ) {
            return Ok(());
        }
        PartitionIdle {
            topic: &self.topic,
            partition: self.partition,
            open: self.state.open_windows(),
        }
        .emit(out.telemetry);
        let closed = self.state.flush_idle();
        self.emit_closed(closed, out)?;
        self.flush_late(out)
    }

    /// A heartbeat partition with nothing to read for `idle_after` and no
    /// window open (its idle close sent every heartbeat to the writer):
    /// how long nothing arrived goes to the writer once a second, where
    /// silent nodes are judged by the idle clock (the latest heartbeat
    /// moved on by that much). A partition that is only behind (backlog)
    /// has no idle clock.
    fn tick_clock(
        &mut self,
        idle_after: Duration,
        backlog: i64,
        out: &mut Collector<'_>,
    ) -> Result<(), PipelineError> {
        let silent = self.last_message.elapsed();
        let due = self.kind == Kind::Heartbeat
            && self.state.open_windows() == 0
            && backlog <= 0
            && silent >= idle_after
            && self.clock_sent.elapsed() >= Duration::from_secs(1);
        if !due {
            return Ok(());
        }
        self.clock_sent = Instant::now();
        out.writer.submit(Job::Clock {
            topic: self.topic.clone(),
            partition: self.partition,
            silent_ms: silent.as_millis() as i64,
            watermark_ms: self.state.watermark(),
        })
    }

    /// The writer made the write starting at `first_offset` durable: it no
    /// longer holds the commit point.
    pub(crate) fn on_written(&mut self, first_offset: i64) {
        self.state.written(first_offset);
    }

    /// The checkpoint to commit, if it moved since the last commit.
    pub(crate) fn checkpoint_to_commit(&self) -> Option<Checkpoint> {
        self.state
            .checkpoint()
            .filter(|cp| self.committed != Some(*cp))
    }

    /// The broker took `cp`.
    pub(crate) fn on_committed(&mut self, cp: Checkpoint) {
        self.committed = Some(cp);
        self.state.committed(cp.offset);
    }

    /// Nothing open, nothing pending, everything committed.
    pub(crate) fn is_settled(&self) -> bool {
        self.state.open_windows() == 0
            && self.late.is_empty()
            && self.state.checkpoint() == self.committed
    }

    /// The open windows' rows, for the live view.
    pub(crate) fn open_rows(
        &self,
    ) -> impl Iterator<
        Item = (
            TopicPartition,
            i64,
            i64,
            impl Iterator<Item = (tollgate_window::DimsRef<'_>, &tollgate_window::Measures)> + '_,
        ),
    > + '_ {
        self.state
            .open_rows()
            .map(move |(start, end, rows)| (self.source(), start, end, rows))
    }

    /// Hand closed windows (and the pending late events) to the writer.
    fn emit_closed(
        &mut self,
        closed: Vec<ClosedWindow>,
        out: &mut Collector<'_>,
    ) -> Result<(), PipelineError> {
        if closed.is_empty() {
            return Ok(());
        }
        let source = self.source();
        let live = out.live.enabled(&out.telemetry.live);
        let mut jobs = Vec::with_capacity(closed.len());
        for window in closed {
            // Each row's dimensions decoded once, for the ledger and the counters.
            let rows: Vec<_> = window.rows.iter().collect();
            // The window leaves the open set and enters the ledger here, on
            // the consumer thread, so the live snapshot counts it exactly once.
            if live {
                out.live.close_window(
                    &source,
                    window.start_ms,
                    window.end_ms,
                    rows.iter().copied(),
                );
            }
            if let Some(spend) = &mut self.spend {
                let month = month_start_ms(window.start_ms);
                for (d, m) in &rows {
                    spend
                        .entry(d.tenant, d.team)
                        .entry(month)
                        .or_default()
                        .add(&Totals::of(m));
                }
            }
            out.telemetry.business.add_rows(rows.into_iter());
            jobs.push(Job::Window {
                topic: source.0.clone(),
                partition: source.1,
                kind: self.kind,
                window,
            });
        }
        // Readers see these windows closed before the writer can make any of
        // their files visible: readers that add the rollup files to the live
        // view's open windows (`/v1/usage`) must never see a window in both.
        out.live.publish_closed(&out.telemetry.live);
        for job in jobs {
            out.writer.submit(job)?;
        }
        self.flush_late(out)
    }

    fn flush_late(&mut self, out: &mut Collector<'_>) -> Result<(), PipelineError> {
        let Some(first_offset) = self.state.late_submitted() else {
            return Ok(());
        };
        out.writer.submit(Job::Late {
            topic: self.topic.clone(),
            partition: self.partition,
            first_offset,
            records: std::mem::take(&mut self.late),
        })
    }
}

/// The watermark at committed offset `offset`: from the checkpoint file
/// beside the rollups, else from the Kafka commit metadata.
/// A partition's month to date by team, from its rollup files of the
/// current month: every window it has written (by whichever owner), none
/// it has only closed (the replay closes those again).
fn seed_spend(
    output: &Output,
    src: Source<'_>,
) -> Result<ByTeam<BTreeMap<i64, Totals>>, PipelineError> {
    let month = month_start_ms(chrono::Utc::now().timestamp_millis());
    let mut spend: ByTeam<BTreeMap<i64, Totals>> = ByTeam::default();
    let files = tollgate_rollup::partition_month(
        &output.rollups,
        src,
        &tollgate_rollup::month_name(month),
        |tenant, team, t| spend.entry(tenant, team).entry(month).or_default().add(t),
    )?;
    tracing::debug!(
        files,
        teams = spend.len(),
        "spend seeded from the month's files"
    );
    Ok(spend)
}

fn committed_watermark(
    output: &Output,
    topic: &str,
    partition: i32,
    offset: i64,
    metadata: &str,
) -> Result<Option<i64>, PipelineError> {
    if let Some(e) = tollgate_rollup::load_checkpoint(&output.rollups, topic, partition, offset)? {
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
