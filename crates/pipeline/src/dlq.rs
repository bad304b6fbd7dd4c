//! The dead-letter producer: a bad message's copy (`dead_letter::Copy`)
//! with headers naming its source and the error, sent without waiting; the
//! first delivery failure is remembered and stops the next commit, so no
//! offset is committed past a message whose copy is not on the broker.

use std::sync::Mutex;
use std::time::Duration;

use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;
use tollgate_config::Config;
use tollgate_event::DecodeError;
use tollgate_kafka::send_when_queued;
use tollgate_telemetry::Telemetry;
use tracing::{debug, error};

use crate::dead_letter::{Copy, HEADERS_DROPPED_HEADER, TRUNCATED_HEADER};
use crate::events::{DeadLetterTruncated, InternalEvent};
use crate::{kafka, PipelineError};

/// Remembers the first delivery failure.
#[derive(Default)]
struct DeliveryWatch {
    failed: Mutex<Option<String>>,
}

impl ClientContext for DeliveryWatch {}

impl ProducerContext for DeliveryWatch {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            error!(error = %e, "dead-letter delivery failed");
            let mut f = self.failed.lock().unwrap_or_else(|p| p.into_inner());
            f.get_or_insert_with(|| e.to_string());
        }
    }
}

pub(crate) struct DeadLetters {
    producer: ThreadedProducer<DeliveryWatch>,
    topic: String,
}

impl DeadLetters {
    pub(crate) fn new(cfg: &Config) -> Result<Self, PipelineError> {
        let producer = tollgate_kafka::output_producer_config(cfg)
            .create_with_context(DeliveryWatch::default())
            .map_err(kafka("create dead-letter producer"))?;
        Ok(DeadLetters {
            producer,
            topic: cfg.topics.dlq.clone(),
        })
    }

    /// Queue the copy of `msg`, which failed to decode with `err`.
    pub(crate) fn send(
        &self,
        msg: &BorrowedMessage<'_>,
        err: &DecodeError,
        telemetry: &Telemetry,
    ) -> Result<(), PipelineError> {
        let partition = msg.partition().to_string();
        let offset = msg.offset().to_string();
        let reason = err.to_string();
        debug!(topic = msg.topic(), partition = msg.partition(), offset = msg.offset(), error = %reason, "dead-lettered");
        let copy = Copy::new(
            msg.payload().unwrap_or_default(),
            msg.key(),
            msg.headers()
                .into_iter()
                .flat_map(|h| h.iter())
                .map(|h| (h.key, h.value.unwrap_or_default())),
        );
        if let Some(bytes) = copy.truncated_from {
            DeadLetterTruncated {
                topic: msg.topic(),
                partition: msg.partition(),
                offset: msg.offset(),
                bytes,
            }
            .emit(telemetry);
        }
        let truncated = copy.truncated_from.map(|n| n.to_string());
        let mut headers = OwnedHeaders::new()
            .insert(Header {
                key: "tollgate.source.topic",
                value: Some(msg.topic()),
            })
            .insert(Header {
                key: "tollgate.source.partition",
                value: Some(&partition),
            })
            .insert(Header {
                key: "tollgate.source.offset",
                value: Some(&offset),
            })
            .insert(Header {
                key: "tollgate.error",
                value: Some(&reason),
            });
        if let Some(n) = &truncated {
            headers = headers.insert(Header {
                key: TRUNCATED_HEADER,
                value: Some(n),
            });
        }
        let dropped = copy.headers_dropped.to_string();
        if copy.headers_dropped > 0 {
            headers = headers.insert(Header {
                key: HEADERS_DROPPED_HEADER,
                value: Some(&dropped),
            });
        }
        for (key, value) in &copy.headers {
            headers = headers.insert(Header {
                key: key.as_ref(),
                value: Some(*value),
            });
        }
        let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(&self.topic)
            .payload(copy.payload)
            .headers(headers);
        if let Some(k) = copy.key {
            record = record.key(k);
        }
        send_when_queued(&self.producer, record)
            .map_err(|e| PipelineError::DeadLetter(e.to_string()))
    }

    /// Before a commit: every copy sent so far is on the broker, or the
    /// first failure.
    pub(crate) fn all_delivered(&self) -> Result<(), PipelineError> {
        if self.producer.in_flight_count() > 0 {
            self.producer
                .flush(Duration::from_secs(30))
                .map_err(kafka("flush dead-letter producer"))?;
        }
        let failed = self
            .producer
            .context()
            .failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        match failed {
            Some(f) => Err(PipelineError::DeadLetter(f)),
            None => Ok(()),
        }
    }
}
