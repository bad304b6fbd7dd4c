//! HTTP ingest for producers that cannot speak Kafka. Bodies are validated
//! with the pipeline's own decoder and produced to the kind's topic with an
//! idempotent producer; the answer is 202 only once the broker acknowledged
//! every event. A request is all or nothing: one invalid item and nothing
//! is produced, and the answer lists a reason per bad item.
//!
//! The producer is created on the first ingest request, so a process that
//! never ingests over HTTP keeps no idempotent producer session open (tansu
//! 0.6 mishandles those across broker restarts; see ARCHITECTURE.md).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use serde_json::{json, Value};
use tollgate_config::Config;
use tollgate_event::{decode, decode_self_described, DecodeError, Event, Kind, Limits};
use tracing::warn;

use crate::auth::{Principal, Scope};
use crate::problem::Problem;
use crate::AppState;

pub struct IngestService {
    cfg: Config,
    limits: Limits,
    producer: Mutex<Option<FutureProducer>>,
}

impl IngestService {
    pub fn new(cfg: &Config) -> Self {
        IngestService {
            cfg: cfg.clone(),
            limits: Limits {
                max_message_bytes: cfg.limits.max_message_bytes,
            },
            producer: Mutex::new(None),
        }
    }

    fn producer(&self) -> Result<FutureProducer, Problem> {
        let mut slot = self.producer.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = slot.as_ref() {
            return Ok(p.clone());
        }
        let mut pc = tollgate_ingest::client_config(&self.cfg);
        pc.set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "2")
            .set(
                "message.timeout.ms",
                self.cfg.http.ingest_timeout_ms.to_string(),
            );
        let p: FutureProducer = pc
            .create()
            .map_err(|e| Problem::unavailable(format!("cannot create the Kafka producer: {e}")))?;
        *slot = Some(p.clone());
        Ok(p)
    }

    fn topic(&self, kind: Kind) -> &str {
        match kind {
            Kind::Inference => &self.cfg.topics.inference,
            Kind::Training => &self.cfg.topics.training,
            Kind::Heartbeat => &self.cfg.topics.heartbeat,
        }
    }
}

/// A validated item, ready to produce.
struct Item {
    kind: Kind,
    key: String,
    payload: Vec<u8>,
}

fn item(e: &Event<'_>, payload: Vec<u8>) -> Item {
    Item {
        kind: e.kind(),
        key: format!("{}/{}", e.tenant, e.tags.team.as_deref().unwrap_or("")),
        payload,
    }
}

pub async fn inference(s: State<Arc<AppState>>, h: HeaderMap, body: Bytes) -> Response {
    single(s, h, body, Kind::Inference).await
}

pub async fn training(s: State<Arc<AppState>>, h: HeaderMap, body: Bytes) -> Response {
    single(s, h, body, Kind::Training).await
}

pub async fn heartbeat(s: State<Arc<AppState>>, h: HeaderMap, body: Bytes) -> Response {
    single(s, h, body, Kind::Heartbeat).await
}

async fn single(State(s): State<Arc<AppState>>, h: HeaderMap, body: Bytes, kind: Kind) -> Response {
    let r = async {
        let who = s.principal(&h, Scope::IngestWrite)?;
        let e = decode(&body, kind, &s.ingest.limits)
            .and_then(|e| not_ahead(&s, e))
            .map_err(|e| item_problem(&body, &e))?;
        tenant_allowed(&who, &e)?;
        let it = item(&e, body.to_vec());
        produce(&s, vec![it]).await
    };
    r.await.unwrap_or_else(IntoResponse::into_response)
}

/// The pipeline would dead-letter an event dated too far ahead of the
/// clock (`window.max_future_secs`): refuse it here already.
fn not_ahead<'a>(s: &AppState, e: Event<'a>) -> Result<Event<'a>, DecodeError> {
    let max_ms = s.cfg.window.max_future_ms();
    tollgate_event::check_not_ahead(e.ts_ms, chrono::Utc::now().timestamp_millis(), max_ms)?;
    Ok(e)
}

/// `POST /v1/events`: a JSON array, or NDJSON (one event per line), of
/// events of any kind; each names its `kind`.
pub async fn events(State(s): State<Arc<AppState>>, h: HeaderMap, body: Bytes) -> Response {
    let r = async {
        let who = s.principal(&h, Scope::IngestWrite)?;
        let payloads = split(&body)?;
        if payloads.is_empty() {
            return Err(Problem::unprocessable("no events in the body"));
        }
        let mut items = Vec::with_capacity(payloads.len());
        let mut errors = Vec::new();
        let mut foreign = false;
        for (index, p) in payloads.into_iter().enumerate() {
            match decode_self_described(&p, &s.ingest.limits).and_then(|e| not_ahead(&s, e)) {
                Err(e) => errors.push(json!({"index": index, "error": e.to_string()})),
                Ok(e) => {
                    if let Err(p) = tenant_allowed(&who, &e) {
                        foreign = true;
                        errors.push(json!({"index": index, "error": p.detail}));
                    } else {
                        let it = item(&e, p.clone());
                        items.push(it);
                    }
                }
            }
        }
        if !errors.is_empty() {
            let n = errors.len();
            let p = if foreign {
                Problem::forbidden(format!(
                    "{n} event(s) belong to another tenant; nothing was produced"
                ))
            } else {
                Problem::unprocessable(format!("{n} invalid event(s); nothing was produced"))
            };
            return Err(p.with("errors", Value::Array(errors)));
        }
        produce(&s, items).await
    };
    r.await.unwrap_or_else(IntoResponse::into_response)
}

/// The items of a `/v1/events` body, as bytes.
fn split(body: &[u8]) -> Result<Vec<Vec<u8>>, Problem> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    if first == Some(&b'[') {
        let items: Vec<Value> = serde_json::from_slice(body).map_err(|e| {
            Problem::bad_request(format!("request body is not a valid JSON array: {e}"))
        })?;
        Ok(items
            .iter()
            .map(|v| serde_json::to_vec(v).unwrap_or_default())
            .collect())
    } else {
        Ok(body
            .split(|&b| b == b'\n')
            .map(|l| l.trim_ascii())
            .filter(|l| !l.is_empty())
            .map(<[u8]>::to_vec)
            .collect())
    }
}

/// 400 when the body is not JSON at all, 422 when it is JSON but not a
/// valid event.
fn item_problem(body: &[u8], e: &DecodeError) -> Problem {
    let is_json = serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok();
    match e {
        DecodeError::TooLarge { .. } => Problem::new(StatusCode::PAYLOAD_TOO_LARGE, e.to_string()),
        DecodeError::Json(_) if !is_json => Problem::bad_request(e.to_string()),
        _ => Problem::unprocessable(e.to_string()),
    }
}

fn tenant_allowed(who: &Principal, e: &Event<'_>) -> Result<(), Problem> {
    if who.may_access(&e.tenant) {
        Ok(())
    } else {
        Err(Problem::forbidden(format!(
            "event of tenant {:?}: this token may only write tenant {:?}",
            e.tenant,
            who.tenant.as_deref().unwrap_or_default()
        )))
    }
}

/// Produce every item and wait for the broker's acknowledgements.
async fn produce(s: &AppState, items: Vec<Item>) -> Result<Response, Problem> {
    let producer = s.ingest.producer()?;
    let mut pending = Vec::with_capacity(items.len());
    for it in &items {
        let record = FutureRecord::to(s.ingest.topic(it.kind))
            .key(&it.key)
            .payload(&it.payload);
        match producer.send_result(record) {
            Ok(f) => pending.push(f),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                return Err(Problem::unavailable(
                    "the Kafka producer's queue is full; retry later",
                ))
            }
            Err((e, _)) => return Err(Problem::unavailable(format!("cannot produce: {e}"))),
        }
    }
    let deadline = Duration::from_millis(s.cfg.http.ingest_timeout_ms + 1000);
    let mut failed = Vec::new();
    for (i, f) in pending.into_iter().enumerate() {
        match tokio::time::timeout(deadline, f).await {
            Ok(Ok(Ok(_))) => {}
            Ok(Ok(Err((e, _)))) => failed.push(json!({"index": i, "error": e.to_string()})),
            Ok(Err(_)) | Err(_) => {
                failed.push(json!({"index": i, "error": "no acknowledgement from the broker"}))
            }
        }
    }
    if !failed.is_empty() {
        warn!(
            failed = failed.len(),
            of = items.len(),
            "HTTP ingest: broker did not acknowledge"
        );
        return Err(Problem::unavailable(format!(
            "the broker did not acknowledge {} of {} event(s); retry the request (events are de-duplicated by event_id)",
            failed.len(),
            items.len()
        ))
        .with("errors", Value::Array(failed)));
    }
    Ok((StatusCode::ACCEPTED, Json(json!({"accepted": items.len()}))).into_response())
}
