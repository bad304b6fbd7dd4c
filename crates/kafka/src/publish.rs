//! Gate decisions copied to the decisions topic.

use std::time::Duration;

use rdkafka::producer::Producer;
use tollgate_config::Config;
use tracing::warn;

use crate::{kafka, BrokerError};

/// Counts decisions the broker did not take.
struct PublishCtx {
    failed: prometheus::IntCounter,
}

impl rdkafka::ClientContext for PublishCtx {}

impl rdkafka::producer::ProducerContext for PublishCtx {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &rdkafka::producer::DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            self.failed.inc();
            warn!(error = %e, "gate decision not published to the decisions topic (it is in the log)");
        }
    }
}

/// Publishes decisions made outside the window path (the HTTP gate) to the
/// decisions topic, keyed by `decision_id`, without waiting: the decision
/// log is their durable record, the topic a copy for consumers. Failures
/// are logged and counted (`tollgate_decisions_unpublished_total`).
pub struct DecisionPublisher {
    producer: rdkafka::producer::ThreadedProducer<PublishCtx>,
    topic: String,
    failed: prometheus::IntCounter,
}

impl DecisionPublisher {
    pub fn new(cfg: &Config) -> Result<Self, BrokerError> {
        let failed = prometheus::IntCounter::new(
            "tollgate_decisions_unpublished_total",
            "Gate decisions the broker did not acknowledge (they are in the decision log).",
        )?;
        let producer = crate::output_producer_config(cfg)
            .create_with_context(PublishCtx {
                failed: failed.clone(),
            })
            .map_err(kafka("create decisions producer"))?;
        Ok(DecisionPublisher {
            producer,
            topic: cfg.topics.decisions.clone(),
            failed,
        })
    }

    /// The failure counter, to register with a Prometheus registry.
    pub fn failures(&self) -> prometheus::IntCounter {
        self.failed.clone()
    }

    pub fn publish(&self, decision_id: &str, line: &str) {
        let record = rdkafka::producer::BaseRecord::to(&self.topic)
            .key(decision_id)
            .payload(line);
        if let Err((e, _)) = self.producer.send(record) {
            self.failed.inc();
            warn!(error = %e, "gate decision not published to the decisions topic (it is in the log)");
        }
    }
}

impl Drop for DecisionPublisher {
    fn drop(&mut self) {
        let _ = self.producer.flush(Duration::from_secs(5));
    }
}
