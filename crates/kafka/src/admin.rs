//! Broker reachability and topic creation.

use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::types::RDKafkaErrorCode;
use tollgate_config::Config;
use tracing::{info, warn};

use crate::{client_config, kafka, BrokerError};

/// Block until the broker answers a metadata request, retrying with
/// exponential backoff (capped at 5 s) for at most `max_wait`.
pub fn wait_for_broker(cfg: &Config, max_wait: Duration) -> Result<(), BrokerError> {
    let probe: BaseConsumer = client_config(cfg)
        .create()
        .map_err(kafka("create client"))?;
    let start = Instant::now();
    let mut backoff = Duration::from_millis(200);
    loop {
        let remaining = max_wait.saturating_sub(start.elapsed());
        match probe.fetch_metadata(
            None,
            remaining.clamp(Duration::from_millis(500), Duration::from_secs(3)),
        ) {
            Ok(md) => {
                info!(brokers = %cfg.kafka.brokers, count = md.brokers().len(), "broker reachable");
                return Ok(());
            }
            Err(e) => {
                warn!(brokers = %cfg.kafka.brokers, error = %e, retry_in_ms = backoff.as_millis() as u64, "broker not reachable yet");
                if start.elapsed() >= max_wait {
                    return Err(BrokerError::Unreachable {
                        brokers: cfg.kafka.brokers.clone(),
                        waited: start.elapsed(),
                        last: e.to_string(),
                    });
                }
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Create the event, dead-letter, decisions and spend topics if they do
/// not exist (the spend topic compacted).
pub async fn ensure_topics(cfg: &Config) -> Result<(), BrokerError> {
    let admin: AdminClient<DefaultClientContext> = client_config(cfg)
        .create()
        .map_err(kafka("create admin client"))?;
    let names = cfg.topics.all();
    let topics: Vec<NewTopic<'_>> = names
        .iter()
        .map(|n| {
            let t = NewTopic::new(
                n,
                cfg.kafka.partitions,
                TopicReplication::Fixed(cfg.kafka.replication_factor),
            );
            // The spend topic is state (the latest record per key), not a log.
            if *n == &cfg.topics.spend {
                t.set("cleanup.policy", "compact")
            } else {
                t
            }
        })
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = admin
        .create_topics(topics.iter(), &opts)
        .await
        .map_err(kafka("create topics"))?;
    for r in results {
        match r {
            Ok(name) => info!(topic = %name, partitions = cfg.kafka.partitions, "created topic"),
            Err((name, RDKafkaErrorCode::TopicAlreadyExists)) => {
                tracing::debug!(topic = %name, "topic exists")
            }
            Err((name, code)) => {
                return Err(BrokerError::Kafka {
                    op: "create topic",
                    source: rdkafka::error::KafkaError::AdminOp(code),
                })
                .inspect_err(|_| warn!(topic = %name, error = %code, "cannot create topic"));
            }
        }
    }
    Ok(())
}
