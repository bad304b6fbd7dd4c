//! The decisions topic's one producer.
//!
//! Two kinds of decision reach it. The window writer's must be acknowledged
//! before the window's file may exist, so it waits for each one and retries
//! what the broker did not take ([`DecisionPublisher::publish_acknowledged`]).
//! The HTTP gate's are already durable in the log when the caller gets the
//! answer; the topic gets a copy without anyone waiting
//! ([`DecisionPublisher::publish`]), and a copy the broker refuses is logged
//! and counted (`tollgate_decisions_unpublished_total`). Every record is
//! keyed by `decision_id`; consumers de-duplicate by key, since after a
//! crash the same bytes may be published twice (never a different record).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use tokio::sync::oneshot;
use tollgate_config::Config;
use tracing::warn;

use crate::{kafka, BrokerError};

/// Who hears of a record's delivery.
enum Delivery {
    /// Nobody waits: a failure is logged and counted.
    Copy,
    /// A publisher waits for this answer.
    Waited(oneshot::Sender<Result<(), KafkaError>>),
}

struct DeliveryRouter {
    unpublished: prometheus::IntCounter,
}

impl rdkafka::ClientContext for DeliveryRouter {}

impl rdkafka::producer::ProducerContext for DeliveryRouter {
    type DeliveryOpaque = Box<Delivery>;
    fn delivery(&self, result: &rdkafka::producer::DeliveryResult<'_>, to: Box<Delivery>) {
        let result = result.as_ref().map(|_| ()).map_err(|(e, _)| e.clone());
        match *to {
            Delivery::Waited(tx) => {
                let _ = tx.send(result);
            }
            Delivery::Copy => {
                if let Err(e) = result {
                    self.unpublished.inc();
                    warn!(error = %e, "gate decision not published to the decisions topic (it is in the log)");
                }
            }
        }
    }
}

/// The decisions topic's producer, shared by everything in the process
/// that decides.
pub struct DecisionPublisher {
    producer: ThreadedProducer<DeliveryRouter>,
    topic: String,
    unpublished: prometheus::IntCounter,
}

impl DecisionPublisher {
    pub fn new(cfg: &Config) -> Result<Self, BrokerError> {
        let unpublished = prometheus::IntCounter::new(
            "tollgate_decisions_unpublished_total",
            "Gate decisions the broker did not acknowledge (they are in the decision log).",
        )?;
        // The window writer waits for its acknowledgements, so lingering to
        // fill a batch would only add its delay to every window close.
        let producer = crate::output_producer_config(cfg)
            .set("linger.ms", "0")
            .create_with_context(DeliveryRouter {
                unpublished: unpublished.clone(),
            })
            .map_err(kafka("create decisions producer"))?;
        Ok(DecisionPublisher {
            producer,
            topic: cfg.topics.decisions.clone(),
            unpublished,
        })
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The counter of copies the broker did not take, to register with a
    /// Prometheus registry.
    pub fn failures(&self) -> prometheus::IntCounter {
        self.unpublished.clone()
    }

    /// Copy a durable decision to the topic without waiting.
    pub fn publish(&self, decision_id: &str, line: &str) {
        let record = BaseRecord::with_opaque_to(&self.topic, Box::new(Delivery::Copy))
            .key(decision_id)
            .payload(line);
        if let Err((e, _)) = self.producer.send(record) {
            self.unpublished.inc();
            warn!(error = %e, "gate decision not published to the decisions topic (it is in the log)");
        }
    }

    /// Publish every `(decision_id, line)` and wait until the broker
    /// acknowledged each one, sending again what it refused (with backoff)
    /// for up to `patience`.
    pub async fn publish_acknowledged(
        &self,
        items: &[(&str, &str)],
        patience: Duration,
    ) -> Result<(), BrokerError> {
        let mut todo: Vec<usize> = (0..items.len()).collect();
        let started = Instant::now();
        let mut backoff = Duration::from_millis(250);
        for attempt in 1.. {
            let mut failed = Vec::new();
            let mut pending: VecDeque<(usize, oneshot::Receiver<Result<(), KafkaError>>)> =
                VecDeque::new();
            for &i in &todo {
                let (key, line) = items[i];
                loop {
                    let (tx, rx) = oneshot::channel();
                    let record =
                        BaseRecord::with_opaque_to(&self.topic, Box::new(Delivery::Waited(tx)))
                            .key(key)
                            .payload(line);
                    match self.producer.send(record) {
                        Ok(()) => {
                            pending.push_back((i, rx));
                            break;
                        }
                        Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                            // Make room: wait for the oldest one in flight.
                            match pending.pop_front() {
                                Some((j, rx)) => {
                                    if !delivered(rx.await) {
                                        failed.push(j);
                                    }
                                }
                                None => tokio::time::sleep(Duration::from_millis(10)).await,
                            }
                        }
                        Err((e, _)) => return Err(kafka("produce decision")(e)),
                    }
                }
            }
            for (j, rx) in pending {
                if !delivered(rx.await) {
                    failed.push(j);
                }
            }
            if failed.is_empty() {
                return Ok(());
            }
            warn!(
                undelivered = failed.len(),
                attempt,
                topic = %self.topic,
                "decisions not acknowledged by the broker; retrying"
            );
            todo = failed;
            if started.elapsed() >= patience {
                break;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
        Err(BrokerError::Unacknowledged {
            count: todo.len(),
            topic: self.topic.clone(),
            waited: patience,
        })
    }
}

fn delivered<E>(r: Result<Result<(), KafkaError>, E>) -> bool {
    match r {
        Ok(Ok(())) => true,
        Ok(Err(e)) => {
            warn!(error = %e, "decision delivery failed");
            false
        }
        Err(_) => false,
    }
}

impl Drop for DecisionPublisher {
    fn drop(&mut self) {
        let _ = self.producer.flush(Duration::from_secs(5));
    }
}
