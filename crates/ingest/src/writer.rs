//! Background writer: window files and late-event files are written on their
//! own thread, so the consumer keeps decoding while Parquet is encoded and
//! fsynced. Every write is acknowledged back; until then it holds its
//! partition's commit point (`PartitionState::written`).

use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use tollgate_event::Kind;
use tollgate_rollup::{LateRecord, Source};
use tollgate_window::ClosedWindow;

use crate::decide::{Decided, Decider};
use crate::{IngestError, Stats, Telemetry};

/// Jobs queued at most before `submit` blocks (backpressure).
const QUEUE: usize = 8;

pub(crate) enum Job {
    Window {
        topic: Arc<str>,
        partition: i32,
        kind: Kind,
        window: ClosedWindow,
    },
    Late {
        topic: Arc<str>,
        partition: i32,
        key: i64,
        records: Vec<LateRecord>,
    },
}

/// What a finished write reports.
pub(crate) struct Done {
    pub topic: Arc<str>,
    pub partition: i32,
    /// `first_offset` of the window, or the first late offset.
    pub key: i64,
    pub result: Result<Written, IngestError>,
}

pub(crate) struct Written {
    pub path: PathBuf,
    pub bytes: u64,
    pub rows: usize,
    pub events: u64,
    pub duplicates: u64,
    pub window_start_ms: Option<i64>,
    pub micros: u64,
    pub decided: Decided,
}

pub(crate) struct Writer {
    tx: Option<SyncSender<Job>>,
    rx: Receiver<Done>,
    handle: Option<JoinHandle<()>>,
    in_flight: usize,
    /// `stats.writer_blocked_micros` is where `submit` adds its waits.
    t: Arc<Telemetry>,
}

impl Writer {
    pub(crate) fn spawn(
        rollup_dir: PathBuf,
        late_dir: PathBuf,
        decider: Decider,
        t: Arc<Telemetry>,
    ) -> Result<Self, IngestError> {
        let thread_t = t.clone();
        let (tx, jobs) = mpsc::sync_channel::<Job>(QUEUE);
        let (done_tx, rx) = mpsc::channel::<Done>();
        let handle = std::thread::Builder::new()
            .name("tollgate-writer".into())
            .spawn(move || {
                for job in jobs {
                    let started = Instant::now();
                    let done = match job {
                        Job::Window {
                            topic,
                            partition,
                            kind,
                            window,
                        } => {
                            let src = Source {
                                kind: kind.as_str(),
                                topic: &topic,
                                partition,
                            };
                            // Decisions first: the file is the window's
                            // commit marker, so once it exists the window is
                            // never evaluated again.
                            let result = (|| {
                                let batch = tollgate_rollup::to_batch(&window)?;
                                let decided =
                                    decider.decide(kind, &topic, partition, &window, &batch)?;
                                let (path, bytes) = tollgate_rollup::write_window_batch(
                                    &rollup_dir,
                                    src,
                                    &window,
                                    &batch,
                                )?;
                                decider.written(&path, &window);
                                let events = window.events();
                                Stats::add(&thread_t.stats.events_written, events);
                                Ok(Written {
                                    path,
                                    bytes,
                                    rows: window.rows.len(),
                                    events,
                                    duplicates: window.duplicates,
                                    window_start_ms: Some(window.start_ms),
                                    micros: started.elapsed().as_micros() as u64,
                                    decided,
                                })
                            })();
                            Done {
                                topic,
                                partition,
                                key: window.first_offset,
                                result,
                            }
                        }
                        Job::Late {
                            topic,
                            partition,
                            key,
                            records,
                        } => {
                            let result =
                                tollgate_rollup::write_late(&late_dir, &topic, partition, &records)
                                    .map(|path| Written {
                                        path: path.unwrap_or_default(),
                                        bytes: 0,
                                        rows: records.len(),
                                        events: records.len() as u64,
                                        duplicates: 0,
                                        window_start_ms: None,
                                        micros: started.elapsed().as_micros() as u64,
                                        decided: Decided::default(),
                                    })
                                    .map_err(IngestError::from);
                            Done {
                                topic,
                                partition,
                                key,
                                result,
                            }
                        }
                    };
                    if done_tx.send(done).is_err() {
                        return;
                    }
                }
            })
            .map_err(|e| IngestError::Config(format!("cannot start the writer thread: {e}")))?;
        Ok(Writer {
            tx: Some(tx),
            rx,
            handle: Some(handle),
            in_flight: 0,
            t,
        })
    }

    /// Queue a write; blocks while the queue is full.
    pub(crate) fn submit(&mut self, job: Job) -> Result<(), IngestError> {
        let tx = self
            .tx
            .as_ref()
            .ok_or_else(|| IngestError::Config("writer closed".into()))?;
        let stopped = || IngestError::Config("the writer thread stopped".into());
        match tx.try_send(job) {
            Ok(()) => {}
            Err(mpsc::TrySendError::Full(job)) => {
                let waited = Instant::now();
                tx.send(job).map_err(|_| stopped())?;
                Stats::add(
                    &self.t.stats.writer_blocked_micros,
                    waited.elapsed().as_micros() as u64,
                );
            }
            Err(mpsc::TrySendError::Disconnected(_)) => return Err(stopped()),
        }
        self.in_flight += 1;
        Ok(())
    }

    /// Total time the consumer has waited on a full queue, over every run
    /// of this process (callers use differences).
    pub(crate) fn blocked(&self) -> std::time::Duration {
        std::time::Duration::from_micros(
            self.t
                .stats
                .writer_blocked_micros
                .load(std::sync::atomic::Ordering::Relaxed),
        )
    }

    /// A finished write, if any, without waiting.
    pub(crate) fn try_done(&mut self) -> Result<Option<Done>, IngestError> {
        match self.rx.try_recv() {
            Ok(d) => {
                self.in_flight -= 1;
                Ok(Some(d))
            }
            Err(TryRecvError::Empty) => Ok(None),
            Err(TryRecvError::Disconnected) => {
                if self.in_flight == 0 {
                    Ok(None)
                } else {
                    Err(IngestError::Config("the writer thread stopped".into()))
                }
            }
        }
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight
    }
}

impl Drop for Writer {
    /// Finish what is queued (files are idempotent, so a write that is not
    /// committed is simply rewritten after a restart).
    fn drop(&mut self) {
        self.tx.take();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
