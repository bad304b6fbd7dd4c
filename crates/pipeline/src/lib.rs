//! The pipeline: a consumer-group member that reads the event topics,
//! decodes, enriches and windows each event, and makes every closed window
//! durable (policies → signed decisions → the decisions topic → the Parquet
//! rollup) before it commits the offsets behind it; invalid messages go to
//! the dead-letter topic. See `ARCHITECTURE.md` for the delivery protocol.

mod dead_letter;
mod decide;
mod dlq;
mod events;
mod partition;
mod runner;
mod spend;
mod workers;
mod writer;

use tollgate_kafka::BrokerError;

pub use decide::DecisionStage;
pub use runner::{run_pipeline, RunOptions, RunOutcome};
pub use workers::run_workers;

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Broker(#[from] BrokerError),
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
    #[error("decisions not recorded: {0}")]
    Commit(#[from] tollgate_decision_log::CommitError),
    #[error("no partitions assigned for {0} s, even after rejoining the consumer group")]
    Unassigned(u64),
}

pub(crate) fn kafka(op: &'static str) -> impl FnOnce(rdkafka::error::KafkaError) -> PipelineError {
    move |source| PipelineError::Broker(BrokerError::Kafka { op, source })
}
