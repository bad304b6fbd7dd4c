//! Kafka adapter: the ingest worker (consumer group → decode → enrich →
//! windows → Parquet rollups, with offsets committed only behind durable
//! output), the dead-letter producer, topic administration and the synthetic
//! load generator. See `ARCHITECTURE.md` for the delivery protocol.

mod admin;
mod dead_letter;
mod decide;
pub mod live;
pub mod loadgen;
pub mod metrics;
mod resume;
mod stats;
mod worker;
mod writer;

use std::time::Duration;

use rdkafka::ClientConfig;
use tollgate_config::Config;

pub use admin::{ensure_topics, wait_for_broker};
pub use decide::{DecisionPublisher, Decisions};
pub use metrics::Telemetry;
pub use stats::{Stats, StatsSnapshot};
pub use worker::{run_pipeline, RunOptions, RunOutcome};

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("kafka {op}: {source}")]
    Kafka {
        op: &'static str,
        source: rdkafka::error::KafkaError,
    },
    #[error("broker not reachable at {brokers} after {waited:?}: {last}")]
    BrokerUnreachable {
        brokers: String,
        waited: Duration,
        last: String,
    },
    #[error("writing output: {0}")]
    Output(#[from] tollgate_rollup::RollupError),
    #[error("dead-letter delivery failed: {0}")]
    DeadLetter(String),
    #[error("broker returned offset {got} of {topic}/{partition} when asked for {wanted}; refusing to skip or repeat events")]
    OffsetGap {
        topic: String,
        partition: i32,
        wanted: i64,
        got: i64,
    },
    #[error("the committed offset {committed} of {topic}/{partition} is beyond the end of its log ({log_end}): the topic was recreated or the broker lost data. Tollgate will not guess which events it has counted; move the rollup and decision directories aside and reset the consumer group's offsets (README: \"When the broker's log is not the one Tollgate read\")")]
    CommittedBeyondLog {
        topic: String,
        partition: i32,
        committed: i64,
        log_end: i64,
    },
    #[error("config: {0}")]
    Config(String),
    #[error(transparent)]
    Policy(#[from] tollgate_policy::PolicyError),
    #[error(transparent)]
    DecisionLog(#[from] tollgate_decision_log::LogError),
    #[error("publishing decisions: {0}")]
    Decisions(String),
    #[error("no partitions assigned for {0} s, even after rejoining the consumer group")]
    Unassigned(u64),
}

pub(crate) fn kafka(op: &'static str) -> impl FnOnce(rdkafka::error::KafkaError) -> IngestError {
    move |source| IngestError::Kafka { op, source }
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
pub(crate) fn output_producer_config(cfg: &Config) -> ClientConfig {
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
pub(crate) fn send_when_queued<C, K, P>(
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
