//! The one writer of a decision log: a thread that owns the [`DecisionLog`]
//! and commits in groups.
//!
//! Every producer of decisions (the window writer, the HTTP gate) submits
//! its drafts to a [`Committer`] and waits for them to be durable. The
//! thread takes every submission already waiting as one group, appends them
//! all, makes them durable with one `fdatasync`, and only then answers each
//! submission. So decisions from anywhere in the process share one sync,
//! and no answer leaves before its records are on disk.
//!
//! The signed `HEAD.json` (three syncs and a rename) is rewritten at most
//! every [`HEAD_EVERY`] under load and as soon as the log is idle that long;
//! [`crate::verify_dir`] accepts records past the head, and opening a log
//! brings the head up to date, so a crash in between loses nothing. When the
//! last handle is dropped the thread writes the head and is joined.

use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::oneshot;
use tollgate_decision::{rfc3339_ms, Draft};

use crate::{Appended, DecisionLog, LogError};

/// How far `HEAD.json` may trail the synced records.
pub const HEAD_EVERY: Duration = Duration::from_millis(100);

/// Submissions appended together at most.
const MAX_GROUP: usize = 1024;

/// Why a submission is not in the log.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CommitError {
    /// A record is larger than the log takes: the submitter's to fix. That
    /// record was not written (nor any after it in its submission).
    #[error("{0}")]
    TooLarge(String),
    /// The log could not write or sync (disk full, I/O error).
    #[error("{0}")]
    Failed(String),
    /// Too many submissions are waiting ([`Committer::try_submit`]).
    #[error("too many decisions waiting to be recorded")]
    Busy,
    /// The committer thread is gone.
    #[error("the decision log committer has stopped")]
    Stopped,
}

impl From<LogError> for CommitError {
    fn from(e: LogError) -> Self {
        match e {
            LogError::TooLarge { .. } => CommitError::TooLarge(e.to_string()),
            other => CommitError::Failed(other.to_string()),
        }
    }
}

struct Submission {
    drafts: Vec<Draft>,
    reply: oneshot::Sender<Result<Vec<Appended>, CommitError>>,
}

/// A submission's answer, once its records are durable.
pub struct Ticket(oneshot::Receiver<Result<Vec<Appended>, CommitError>>);

impl Ticket {
    /// Wait on an async task.
    pub async fn wait(self) -> Result<Vec<Appended>, CommitError> {
        self.0.await.unwrap_or(Err(CommitError::Stopped))
    }

    /// Wait on a plain thread (not inside an async runtime).
    pub fn wait_blocking(self) -> Result<Vec<Appended>, CommitError> {
        self.0.blocking_recv().unwrap_or(Err(CommitError::Stopped))
    }
}

struct Inner {
    tx: Option<mpsc::SyncSender<Submission>>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Inner {
    /// The last handle: let the thread drain, write the head and end.
    fn drop(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A handle to the log's one writer; clones share it.
#[derive(Clone)]
pub struct Committer {
    inner: Arc<Inner>,
    records_at_open: u64,
}

impl Committer {
    /// Hand `log` to a new committer thread. `queue`: submissions that may
    /// wait at most (then [`Self::submit`] blocks and [`Self::try_submit`]
    /// answers [`CommitError::Busy`]).
    pub fn spawn(log: DecisionLog, queue: usize) -> std::io::Result<Self> {
        let records_at_open = log.records();
        let (tx, rx) = mpsc::sync_channel(queue.max(1));
        let thread = std::thread::Builder::new()
            .name("tollgate-decision-log".into())
            .spawn(move || run(rx, log))?;
        Ok(Committer {
            inner: Arc::new(Inner {
                tx: Some(tx),
                thread: Some(thread),
            }),
            records_at_open,
        })
    }

    /// Records the log held when it was handed over.
    pub fn records_at_open(&self) -> u64 {
        self.records_at_open
    }

    fn sender(&self) -> Result<&mpsc::SyncSender<Submission>, CommitError> {
        self.inner.tx.as_ref().ok_or(CommitError::Stopped)
    }

    /// Submit `drafts`, waiting while the queue is full (backpressure for
    /// the pipeline). All of them are appended or none is answered as
    /// written: the first that fails fails the submission.
    pub fn submit(&self, drafts: Vec<Draft>) -> Result<Ticket, CommitError> {
        let (reply, rx) = oneshot::channel();
        self.sender()?
            .send(Submission { drafts, reply })
            .map_err(|_| CommitError::Stopped)?;
        Ok(Ticket(rx))
    }

    /// Submit `drafts` unless the queue is full ([`CommitError::Busy`]): for
    /// callers that answer a request and must not wait for room.
    pub fn try_submit(&self, drafts: Vec<Draft>) -> Result<Ticket, CommitError> {
        let (reply, rx) = oneshot::channel();
        self.sender()?
            .try_send(Submission { drafts, reply })
            .map_err(|e| match e {
                mpsc::TrySendError::Full(_) => CommitError::Busy,
                mpsc::TrySendError::Disconnected(_) => CommitError::Stopped,
            })?;
        Ok(Ticket(rx))
    }

    /// Submit and wait, on a plain thread.
    pub fn commit_blocking(&self, drafts: Vec<Draft>) -> Result<Vec<Appended>, CommitError> {
        if drafts.is_empty() {
            return Ok(Vec::new());
        }
        self.submit(drafts)?.wait_blocking()
    }
}

fn now_rfc3339() -> String {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    rfc3339_ms(ms)
}

/// The committer thread: group, append, sync once, answer.
fn run(rx: mpsc::Receiver<Submission>, mut log: DecisionLog) {
    // The first group writes HEAD at once (a log without one does not verify).
    let mut head_at = Instant::now()
        .checked_sub(HEAD_EVERY)
        .unwrap_or_else(Instant::now);
    loop {
        let first = match rx.recv_timeout(HEAD_EVERY) {
            Ok(s) => s,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                write_head_if_stale(&mut log);
                head_at = Instant::now();
                continue;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(s) => group.push(s),
                Err(_) => break,
            }
        }
        let ts = now_rfc3339();
        let mut answers = Vec::with_capacity(group.len());
        for s in group {
            let mut appended = Vec::with_capacity(s.drafts.len());
            let mut result = Ok(());
            for d in s.drafts {
                match log.append(d, ts.clone()) {
                    Ok(a) => appended.push(a),
                    Err(e) => {
                        result = Err(CommitError::from(e));
                        break;
                    }
                }
            }
            answers.push((result.map(|()| appended), s.reply));
        }
        let synced = if head_at.elapsed() >= HEAD_EVERY {
            head_at = Instant::now();
            log.sync()
        } else {
            log.sync_records()
        };
        if let Err(e) = synced {
            tracing::error!(error = %e, "decisions could not be synced; they are answered as not recorded");
            let e = CommitError::Failed(e.to_string());
            for (r, _) in answers.iter_mut().filter(|(r, _)| r.is_ok()) {
                *r = Err(e.clone());
            }
        }
        for (r, reply) in answers {
            let _ = reply.send(r);
        }
    }
    write_head_if_stale(&mut log);
}

fn write_head_if_stale(log: &mut DecisionLog) {
    if log.head_stale() {
        if let Err(e) = log.sync() {
            tracing::error!(error = %e, "decision log HEAD.json could not be written");
        }
    }
}
