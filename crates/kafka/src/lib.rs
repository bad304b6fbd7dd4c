//! The Kafka side every Tollgate process shares: client settings from the
//! config, broker reachability and topic creation, the producer settings of
//! Tollgate's own outputs, and the decisions topic's one producer
//! ([`DecisionPublisher`]). The pipeline's consumer and the HTTP API's producer
//! are built from here; neither depends on the other.

mod admin;
mod publish;

use std::time::Duration;

use rdkafka::ClientConfig;
use tollgate_config::Config;

pub use admin::{ensure_topics, wait_for_broker};
pub use publish::DecisionPublisher;

/// A broker operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("kafka {op}: {source}")]
    Kafka {
        op: &'static str,
        source: rdkafka::error::KafkaError,
    },
    #[error("broker not reachable at {brokers} after {waited:?}: {last}")]
    Unreachable {
        brokers: String,
        waited: Duration,
        last: String,
    },
    #[error("{count} decision(s) not acknowledged by the broker on {topic} within {} s", waited.as_secs())]
    Unacknowledged {
        count: usize,
        topic: String,
        waited: Duration,
    },
    #[error("metrics: {0}")]
    Metric(#[from] prometheus::Error),
}

/// `map_err` adapter naming the operation that failed.
pub fn kafka(op: &'static str) -> impl FnOnce(rdkafka::error::KafkaError) -> BrokerError {
    move |source| BrokerError::Kafka { op, source }
}

/// Client settings shared by every client tollgate creates.
pub fn client_config(cfg: &Config) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.kafka.brokers)
        .set("client.id", "tollgate")
        // Fail over quickly on a restarting local broker; librdkafka retries forever anyway.
        .set("reconnect.backoff.max.ms", "2000")
        .set("log_level", "4");
    for (k, v) in &cfg.kafka.client {
        c.set(k, v);
    }
    c
}

/// Settings of the pipeline's own producers (dead letters, decisions):
/// every message acknowledged by all replicas, retried by librdkafka for a
/// minute. At-least-once: consumers of these topics de-duplicate (decisions
/// by key). Not idempotent: tansu 0.6 (SQLite storage) panics on an
/// idempotent produce after a broker restart and stops serving altogether.
pub fn output_producer_config(cfg: &Config) -> ClientConfig {
    let mut pc = client_config(cfg);
    pc.set("enable.idempotence", "false")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "60000");
    pc
}

/// Consumer settings shared by the pipeline and the benchmark's raw consumer:
/// manual commits, earliest start, and the fetch tuning from the config.
pub fn consumer_config(cfg: &Config, group_id: &str) -> ClientConfig {
    let mut c = client_config(cfg);
    c.set("group.id", group_id)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", cfg.kafka.fetch_wait_max_ms.to_string())
        .set(
            "fetch.queue.backoff.ms",
            cfg.kafka.fetch_queue_backoff_ms.to_string(),
        )
        .set(
            "session.timeout.ms",
            cfg.kafka.session_timeout_ms.to_string(),
        );
    c
}

/// Send a record, waiting while librdkafka's local queue is full (the
/// producer drains it in the background); any other error is returned.
pub fn send_when_queued<C, K, P>(
    producer: &rdkafka::producer::ThreadedProducer<C>,
    mut record: rdkafka::producer::BaseRecord<'_, K, P, C::DeliveryOpaque>,
) -> Result<(), rdkafka::error::KafkaError>
where
    C: rdkafka::producer::ProducerContext + 'static,
    K: rdkafka::message::ToBytes + ?Sized,
    P: rdkafka::message::ToBytes + ?Sized,
{
    use rdkafka::error::KafkaError;
    use rdkafka::types::RDKafkaErrorCode;
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                record = r;
                std::thread::sleep(Duration::from_millis(5));
            }
            Err((e, _)) => return Err(e),
        }
    }
}
