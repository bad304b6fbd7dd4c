//! The pipeline's internal events, one type each (after Vector's
//! `internal_events`): `emit` writes the counters and the log line
//! together, so what an operator reads in the logs and what Prometheus
//! scrapes cannot drift apart, and noisy events carry their own rate limit.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use tollgate_event::Kind;
use tollgate_telemetry::metrics::{Outcome, Telemetry};
use tollgate_telemetry::Stats;
use tracing::{debug, info, warn};

use crate::writer::Written;

/// Something that happened in the pipeline, reported once.
pub(crate) trait InternalEvent {
    fn emit(self, telemetry: &Telemetry);
}

/// Lets through one log line per `every` (the counters always count).
pub(crate) struct RateLimit {
    every_ms: i64,
    last_ms: AtomicI64,
}

impl RateLimit {
    pub(crate) const fn new(every: Duration) -> Self {
        RateLimit {
            every_ms: every.as_millis() as i64,
            last_ms: AtomicI64::new(i64::MIN),
        }
    }

    /// Whether a line may be logged now; `now_ms` is any monotonic clock.
    pub(crate) fn allow(&self, now_ms: i64) -> bool {
        let last = self.last_ms.load(Ordering::Relaxed);
        if last != i64::MIN && now_ms.saturating_sub(last) < self.every_ms {
            return false;
        }
        self.last_ms
            .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }
}

fn monotonic_ms() -> i64 {
    use std::sync::OnceLock;
    static START: OnceLock<std::time::Instant> = OnceLock::new();
    START
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_millis() as i64
}

/// What became of one event (the hot path: one relaxed add, no log).
pub(crate) struct EventHandled {
    pub kind: Kind,
    pub outcome: Outcome,
}

impl InternalEvent for EventHandled {
    #[inline]
    fn emit(self, telemetry: &Telemetry) {
        telemetry.events.add(self.kind, self.outcome);
    }
}

/// A broker error the consumer retries (librdkafka reconnects by itself).
pub(crate) struct ConsumerErrorRetried<'a> {
    pub error: &'a rdkafka::error::KafkaError,
}

static CONSUMER_ERRORS: RateLimit = RateLimit::new(Duration::from_secs(10));

impl InternalEvent for ConsumerErrorRetried<'_> {
    fn emit(self, _: &Telemetry) {
        if CONSUMER_ERRORS.allow(monotonic_ms()) {
            warn!(error = %self.error, "kafka consumer error (retrying; logged at most every 10 s)");
        }
    }
}

/// Offsets after the committed one are gone from the broker.
pub(crate) struct OffsetsVanished<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub resume_at: i64,
    pub first_available: i64,
    pub missing: u64,
}

impl InternalEvent for OffsetsVanished<'_> {
    fn emit(self, telemetry: &Telemetry) {
        Stats::add(&telemetry.stats.offsets_vanished, self.missing);
        warn!(topic = %self.topic, partition = self.partition, resume_at = self.resume_at, first_available = self.first_available, missing = self.missing, "offsets after the committed one are gone from the broker; resuming at the first one it has");
    }
}

/// A dead-letter copy cut to fit the producer's limit.
pub(crate) struct DeadLetterTruncated<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub bytes: usize,
}

impl InternalEvent for DeadLetterTruncated<'_> {
    fn emit(self, telemetry: &Telemetry) {
        Stats::add(&telemetry.stats.dead_letters_truncated, 1);
        warn!(
            topic = self.topic,
            partition = self.partition,
            offset = self.offset,
            bytes = self.bytes,
            "dead-letter copy truncated to fit the producer's limit"
        );
    }
}

/// The writer finished a window file or a late file.
pub(crate) struct WriteDone<'a> {
    pub topic: &'a str,
    pub partition: i32,
    /// The window's first offset, or the first late offset.
    pub first_offset: i64,
    pub written: &'a Written,
}

impl InternalEvent for WriteDone<'_> {
    fn emit(self, telemetry: &Telemetry) {
        let (s, w) = (&telemetry.stats, self.written);
        Stats::add(&s.write_micros, w.micros);
        Stats::add(&s.decisions, w.decided.new);
        Stats::add(&s.decisions_replayed, w.decided.replayed);
        Stats::add(&s.policy_errors, w.decided.policy_errors);
        Stats::add(&s.decide_micros, w.decided.micros);
        Stats::add(&s.publish_micros, w.decided.publish_micros);
        match w.window_start_ms {
            Some(start) => {
                telemetry
                    .window_close_seconds
                    .observe(w.latency_micros as f64 / 1e6);
                Stats::add(&s.windows_written, 1);
                Stats::add(&s.rows_written, w.rows as u64);
                Stats::add(&s.bytes_written, w.bytes);
                info!(
                    topic = %self.topic, partition = self.partition, window_start_ms = start,
                    events = w.events, rows = w.rows, duplicates = w.duplicates, first_offset = self.first_offset,
                    decisions = w.decided.new, path = %w.path.display(), write_seconds = w.micros as f64 / 1e6,
                    "window written"
                );
            }
            None => {
                Stats::add(&s.late_files_written, 1);
                info!(topic = %self.topic, partition = self.partition, events = w.events, path = %w.path.display(), "late events written");
            }
        }
    }
}

/// A partition had no message for `window.idle_timeout_secs`.
pub(crate) struct PartitionIdle<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub open: usize,
}

impl InternalEvent for PartitionIdle<'_> {
    fn emit(self, _: &Telemetry) {
        info!(topic = %self.topic, partition = self.partition, open = self.open, "partition idle; closing its windows");
    }
}

/// One commit of the moved checkpoints (or an attempt).
pub(crate) struct CommitAttempted {
    pub took: Duration,
    /// Partitions whose offsets the broker took (0 when nothing moved or
    /// the commit failed).
    pub committed: usize,
}

impl InternalEvent for CommitAttempted {
    fn emit(self, telemetry: &Telemetry) {
        Stats::add(&telemetry.stats.commit_micros, self.took.as_micros() as u64);
        telemetry.commit_seconds.observe(self.took.as_secs_f64());
        if self.committed > 0 {
            Stats::add(&telemetry.stats.commits, 1);
            debug!(partitions = self.committed, "committed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rate_limit_lets_one_line_through_per_period() {
        let r = RateLimit::new(Duration::from_secs(10));
        assert!(r.allow(0));
        assert!(!r.allow(5_000));
        assert!(r.allow(10_000));
        assert!(!r.allow(19_999));
    }
}
