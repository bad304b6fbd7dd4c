//! A worker's side of the shared spend (`[spend]`,
//! `tollgate_telemetry::spend`): every `publish_interval_ms`, each owned
//! partition's team records that changed since they were last sent, and
//! its partition record. Sending never blocks the worker: a full local
//! queue leaves the rest for the next interval, and everything is sent
//! again every [`RESEND_EVERY`] (a record lost in delivery is replaced).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use tollgate_config::Config;
use tollgate_kafka::output_producer_config;
use tollgate_telemetry::spend::{SpendRecord, SPEND_RECORD_VERSION};
use tracing::{debug, warn};

use crate::partition::Partition;
use crate::{kafka, PipelineError};

/// Unchanged records are sent again this often.
pub(crate) const RESEND_EVERY: Duration = Duration::from_secs(30);

pub(crate) struct SpendPublisher {
    producer: ThreadedProducer<DefaultProducerContext>,
    topic: String,
    interval: Duration,
    /// Instance id and worker, in every partition record.
    owner: String,
    last: Option<Instant>,
    last_resend: Instant,
    /// The team records last queued, by key.
    sent: HashMap<String, SpendRecord>,
}

impl SpendPublisher {
    /// `None` when the spend is not shared.
    pub(crate) fn new(cfg: &Config, worker: usize) -> Result<Option<Self>, PipelineError> {
        if !cfg.spend.enabled() {
            return Ok(None);
        }
        let producer = output_producer_config(cfg)
            .set("acks", "1")
            .set("message.timeout.ms", "10000")
            .create()
            .map_err(kafka("create the spend producer"))?;
        let owner = cfg
            .worker_instance_id(worker)
            .unwrap_or_else(|| format!("tollgate-{}-w{worker}", cfg.host));
        Ok(Some(SpendPublisher {
            producer,
            topic: cfg.topics.spend.clone(),
            interval: Duration::from_millis(cfg.spend.publish_interval_ms),
            owner,
            last: None,
            last_resend: Instant::now(),
            sent: HashMap::new(),
        }))
    }

    pub(crate) fn due(&self, now: Instant) -> bool {
        self.last
            .is_none_or(|t| now.duration_since(t) >= self.interval)
    }

    /// Send what changed of `partitions` (all this worker owns).
    pub(crate) fn publish(&mut self, now: Instant, partitions: &mut [Partition]) {
        self.last = Some(now);
        if now.duration_since(self.last_resend) >= RESEND_EVERY {
            self.sent.clear();
            self.last_resend = now;
        }
        let now_ms = chrono::Utc::now().timestamp_millis();
        let (mut teams, mut changed) = (0usize, 0usize);
        for p in partitions.iter_mut() {
            let Some((records, at)) = p.spend_records(now_ms, &self.owner) else {
                continue;
            };
            teams += records.len();
            for r in records {
                let record = SpendRecord::Team(r);
                let key = record.key();
                if self.sent.get(&key) == Some(&record) {
                    continue;
                }
                if !self.send(&key, &record) {
                    return;
                }
                self.sent.insert(key, record);
                changed += 1;
            }
            let at = SpendRecord::Partition(at);
            if !self.send(&at.key(), &at) {
                return;
            }
        }
        debug!(teams, changed, "spend published");
    }

    /// Queue one record; `false` when the local queue is full (the rest
    /// waits for the next interval).
    fn send(&self, key: &str, record: &SpendRecord) -> bool {
        let payload = match serde_json::to_vec(record) {
            Ok(p) => p,
            Err(e) => {
                warn!(error = %e, key, "cannot encode a spend record");
                return true;
            }
        };
        let headers = OwnedHeaders::new().insert(Header {
            key: "v",
            value: Some(SPEND_RECORD_VERSION),
        });
        match self.producer.send(
            BaseRecord::to(&self.topic)
                .key(key)
                .payload(&payload)
                .headers(headers),
        ) {
            Ok(()) => true,
            Err((e, _)) => {
                debug!(error = %e, "spend queue full; the rest goes with the next interval");
                false
            }
        }
    }

    /// Deliver what is queued (a worker that stops leaves its last view).
    pub(crate) fn flush(&self) {
        let _ = self.producer.flush(Duration::from_secs(5));
    }
}
