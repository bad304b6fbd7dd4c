//! Counters of the pipeline, shared with whoever reports them.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

macro_rules! stats {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {
        /// Live counters (monotonic).
        #[derive(Debug, Default)]
        pub struct Stats { $($(#[$doc])* pub $name: AtomicU64,)* }

        /// A copy of [`Stats`] at one moment.
        #[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
        pub struct StatsSnapshot { $(pub $name: u64,)* }

        impl Stats {
            pub fn snapshot(&self) -> StatsSnapshot {
                StatsSnapshot { $($name: self.$name.load(Relaxed),)* }
            }
        }
    };
}

stats! {
    /// Messages read from the event topics. (What became of each event is
    /// counted once, by kind and outcome: `metrics::EventCounters`.)
    consumed,
    /// Dead-letter copies whose payload was cut to fit the producer's limit.
    dead_letters_truncated,
    /// Offsets the broker no longer has between a committed offset and the
    /// first message it returned (retention, compaction, transaction
    /// markers): the partition resumed after them.
    offsets_vanished,
    windows_written,
    rows_written,
    /// Events in the window files written, counted by the writer thread as
    /// each file is renamed into place (the others are counted when the
    /// consumer thread collects the write).
    events_written,
    bytes_written,
    late_files_written,
    commits,
    /// Time spent writing window files (µs).
    write_micros,
    /// Time spent committing: DLQ flush, checkpoint file, offset commit (µs).
    commit_micros,
    /// Polls that returned no message (the consumer was waiting for the broker).
    empty_polls,
    /// Time the consumer thread waited for room in the writer's queue (µs).
    writer_blocked_micros,
    /// Groups of jobs the writer thread made durable together (group commit).
    writer_groups,
    /// Decisions appended to the log.
    decisions,
    /// Decisions a replay produced again (already in the log; republished).
    decisions_replayed,
    /// Policy evaluations that failed (the others on the window still ran).
    policy_errors,
    /// Decision-log appends or syncs that failed (window path and gate).
    decision_log_errors,
    /// Gate requests whose rules could not be evaluated (answered deny).
    gate_evaluation_errors,
    /// Time spent evaluating policies, logging and publishing decisions (µs).
    decide_micros,
    /// Of `decide_micros`: publishing decisions until the broker acknowledged them (µs).
    publish_micros,
}

impl Stats {
    #[inline]
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }
}
