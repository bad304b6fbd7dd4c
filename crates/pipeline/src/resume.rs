//! Where a partition resumes when the broker's first message after a seek
//! to the committed offset is not at that offset: pure rules, no I/O.

/// What to do with a message fetched after the seek to `resume_at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterSeek {
    /// Below the committed offset: it was processed before; skip it.
    AlreadyProcessed,
    /// Above it: the broker no longer has the offsets in between
    /// (retention, compaction, transaction markers). Resume here; this
    /// many offsets are gone.
    Vanished(u64),
}

pub fn after_seek(resume_at: i64, fetched: i64) -> AfterSeek {
    if fetched < resume_at {
        AfterSeek::AlreadyProcessed
    } else {
        AfterSeek::Vanished(fetched.saturating_sub(resume_at) as u64)
    }
}

/// A committed offset past the end of the log: the broker's log is not the
/// one the offset was committed against (the topic was recreated, or the
/// broker lost acknowledged data). Every message the broker now has would
/// look "already processed", so resuming would drop them silently.
pub fn committed_beyond_log(committed: i64, log_end: i64) -> bool {
    committed > log_end
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn below_is_skipped_above_resumes() {
        assert_eq!(after_seek(10, 3), AfterSeek::AlreadyProcessed);
        assert_eq!(after_seek(10, 14), AfterSeek::Vanished(4));
    }

    #[test]
    fn a_committed_offset_at_the_log_end_is_caught_up_and_past_it_is_refused() {
        assert!(!committed_beyond_log(10, 10));
        assert!(!committed_beyond_log(3, 10));
        assert!(committed_beyond_log(11, 10));
    }
}
