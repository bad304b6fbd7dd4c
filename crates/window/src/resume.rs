//! The partition's side of the delivery protocol that is not about windows:
//! where a restored partition resumes, the one seek it may make, and when a
//! quiet partition closes its windows. Pure rules, no I/O: the pipeline asks
//! and does what they answer.
//!
//! ```
//! use tollgate_window::resume::{Admit, Resume};
//!
//! // Restored from a committed offset of 10; the broker first hands us 7.
//! let mut r = Resume::new(10, true);
//! assert_eq!(r.admit(false, 7), Admit::Seek(10));
//! // After the one seek, what is below the committed offset was processed...
//! assert_eq!(r.admit(false, 8), Admit::AlreadyProcessed);
//! // ...and a gap above it means the broker no longer has those offsets.
//! assert_eq!(r.admit(false, 14), Admit::Vanished(4));
//! // Once the partition has read a message, every offset is processed.
//! assert_eq!(r.admit(true, 15), Admit::Process);
//! ```

use std::time::Duration;

/// What to do with a message fetched for a restored partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Process it.
    Process,
    /// The fetch position is not the committed offset: seek there (once)
    /// and drop this message.
    Seek(i64),
    /// Below the committed offset, after the seek: processed before; skip it.
    AlreadyProcessed,
    /// Above the committed offset, after the seek: the broker no longer has
    /// the offsets in between (retention, compaction, transaction markers).
    /// Process it; this many offsets are gone.
    Vanished(u64),
}

/// Where a partition resumes: the committed offset it was restored from,
/// and whether it has already sought there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resume {
    resume_at: i64,
    committed: bool,
    seeked: bool,
}

impl Resume {
    /// `resume_at`: the restored checkpoint's offset; `committed`: whether
    /// the group had committed one (a partition never committed starts
    /// wherever the broker's reset policy puts it).
    pub fn new(resume_at: i64, committed: bool) -> Self {
        Resume {
            resume_at,
            committed,
            seeked: false,
        }
    }

    pub fn resume_at(&self) -> i64 {
        self.resume_at
    }

    /// Judge the message at `offset`. `started`: the partition has already
    /// read a message (from then on its position is its own).
    pub fn admit(&mut self, started: bool, offset: i64) -> Admit {
        if started || !self.committed || offset == self.resume_at {
            return Admit::Process;
        }
        if !self.seeked {
            self.seeked = true;
            return Admit::Seek(self.resume_at);
        }
        if offset < self.resume_at {
            Admit::AlreadyProcessed
        } else {
            Admit::Vanished(offset.saturating_sub(self.resume_at) as u64)
        }
    }
}

/// A committed offset past the end of the log: the broker's log is not the
/// one the offset was committed against (the topic was recreated, or the
/// broker lost acknowledged data). Every message the broker now has would
/// look "already processed", so resuming would drop them silently.
pub fn committed_beyond_log(committed: i64, log_end: i64) -> bool {
    committed > log_end
}

/// Should a partition close its open windows for want of messages?
///
/// `silent`: since its last message; `waited`: of that, time the consumer
/// spent blocked on a full writer queue (not silence: a partition with a
/// backlog would otherwise close early); `backlog`: messages the broker
/// holds of it not yet read (a slow fetch, not silence: closing then would
/// make them late); `pending`: it has open windows or late events.
pub fn idle_close_due(
    silent: Duration,
    waited: Duration,
    backlog: i64,
    idle_after: Duration,
    pending: bool,
) -> bool {
    pending && backlog <= 0 && silent.saturating_sub(waited) >= idle_after
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_committed_offset_is_processed_without_a_seek() {
        let mut r = Resume::new(10, true);
        assert_eq!(r.admit(false, 10), Admit::Process);
        assert_eq!(Resume::new(10, false).admit(false, 3), Admit::Process);
    }

    #[test]
    fn one_seek_then_below_is_skipped_and_above_resumes() {
        let mut r = Resume::new(10, true);
        assert_eq!(r.admit(false, 14), Admit::Seek(10));
        assert_eq!(r.admit(false, 3), Admit::AlreadyProcessed);
        assert_eq!(r.admit(false, 14), Admit::Vanished(4));
        assert_eq!(r.admit(true, 99), Admit::Process);
    }

    #[test]
    fn a_committed_offset_at_the_log_end_is_caught_up_and_past_it_is_refused() {
        assert!(!committed_beyond_log(10, 10));
        assert!(!committed_beyond_log(3, 10));
        assert!(committed_beyond_log(11, 10));
    }

    #[test]
    fn a_partition_is_idle_only_when_silent_unblocked_caught_up_and_pending() {
        let s = Duration::from_secs;
        assert!(idle_close_due(s(10), s(0), 0, s(5), true));
        assert!(
            !idle_close_due(s(10), s(6), 0, s(5), true),
            "writer waits are not silence"
        );
        assert!(
            !idle_close_due(s(10), s(0), 3, s(5), true),
            "a backlog is not silence"
        );
        assert!(
            !idle_close_due(s(10), s(0), 0, s(5), false),
            "nothing to close"
        );
        assert!(!idle_close_due(s(4), s(0), 0, s(5), true));
    }
}
