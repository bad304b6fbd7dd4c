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
use tollgate_enrich::Enricher;
use tollgate_event::{decode, decode_self_described, DecodeError, Event, Kind, Limits};
use tracing::warn;

use crate::auth::Principal;
use crate::problem::Problem;
use crate::AppState;
use crate::{scope, Caller};

pub struct IngestService {
    cfg: Config,
    limits: Limits,
    producer: Mutex<Option<FutureProducer>>,
    /// Prices the answer of a single-event POST with the pipeline's book.
    enricher: Mutex<Enricher>,
    keys: Mutex<IdempotencyKeys>,
}

impl IngestService {
    pub fn new(cfg: &Config) -> Result<Self, crate::HttpError> {
        let enricher = Enricher::new(cfg.pricing.clone(), cfg.defaults.clone())
            .map_err(|e| crate::HttpError::Start(format!("price book: {e}")))?;
        Ok(IngestService {
            cfg: cfg.clone(),
            limits: Limits {
                max_message_bytes: cfg.limits.max_message_bytes,
            },
            producer: Mutex::new(None),
            enricher: Mutex::new(enricher),
            keys: Mutex::new(IdempotencyKeys::new(
                cfg.http.idempotency_keys,
                Duration::from_secs(cfg.http.idempotency_ttl_secs),
            )),
        })
    }

    /// The API's enricher (the pipeline's book), for quotes.
    pub(crate) fn enricher(&self) -> std::sync::MutexGuard<'_, Enricher> {
        self.enricher.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn producer(&self) -> Result<FutureProducer, Problem> {
        let mut slot = self.producer.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = slot.as_ref() {
            return Ok(p.clone());
        }
        let mut pc = tollgate_kafka::client_config(&self.cfg);
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

/// `POST /v1/metrics/inference`, `/v1/metrics/training`,
/// `/v1/nodes/heartbeat`: one event of that kind (full or short body).
macro_rules! single_event_routes {
    ($($name:ident => $kind:ident),*) => {$(
        pub async fn $name(
            s: State<Arc<AppState>>,
            Caller(who, ..): Caller<scope::IngestWrite>,
            h: HeaderMap,
            body: Bytes,
        ) -> Result<Response, Problem> {
            single(s, who, h, body, Kind::$kind).await
        }
    )*};
}

single_event_routes!(inference => Inference, training => Training, heartbeat => Heartbeat);

async fn single(
    State(s): State<Arc<AppState>>,
    who: Principal,
    h: HeaderMap,
    body: Bytes,
    kind: Kind,
) -> Result<Response, Problem> {
    let key = crate::idempotency_key(&h)?;
    let (payload, remembered) = complete(&s, &who, key, &body, kind)?;
    let e = decode(&payload, kind, &s.ingest.limits)
        .and_then(|e| not_ahead(&s, e))
        .map_err(|e| item_problem(&payload, &e))?;
    tenant_allowed(&who, &e)?;
    let priced = {
        let mut enricher = s.ingest.enricher.lock().unwrap_or_else(|p| p.into_inner());
        enricher.refresh(&s.telemetry.pricing);
        enricher.enrich(&e)
    };
    let answer = json!({
        "accepted": 1,
        "event_id": e.event_id,
        "tenant": e.tenant,
        "ts": tollgate_decision::rfc3339_ms(e.ts_ms),
        "cost_usd": priced.cost_usd,
        "unit_cost_usd": priced.unit_cost_usd,
        "unit": match kind {
            Kind::Inference => "request",
            Kind::Training => "gpu_hour",
            Kind::Heartbeat => "none",
        },
        "energy_wh": priced.energy_wh,
        "carbon_g": priced.carbon_g,
        "replayed": remembered.is_some_and(|r| r.acknowledged),
    });
    let it = item(&e, payload.clone());
    let first = remembered.is_none_or(|r| !r.acknowledged);
    if first {
        produce(&s, vec![it]).await?;
        if let Some(k) = key {
            s.ingest
                .keys
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .acknowledged(&e.tenant, k);
        }
    }
    Ok((StatusCode::ACCEPTED, Json(answer)).into_response())
}

/// Complete a single event's body as the short form leaves it (the
/// Flask-style `{"model", "input_tokens", "output_tokens", "duration_ms"}`
/// or `{"model", "duration_hours", "gpu_count"}`): `tenant` from the token
/// (or `http.default_tenant` without auth), `ts` the receive time,
/// `event_id` the `Idempotency-Key` (or a generated one), `cost_tags` as
/// `tags`, and a training run's `gpu_type` `"default"` (priced with the
/// book's defaults). What the body gives is kept; a full event passes
/// unchanged.
///
/// With a key, the first request's `ts` and body are remembered, so a retry
/// is the same event (same window, same id: it counts once) and a reused
/// key with another body is refused.
fn complete(
    s: &AppState,
    who: &Principal,
    key: Option<&str>,
    body: &[u8],
    kind: Kind,
) -> Result<(Vec<u8>, Option<Remembered>), Problem> {
    let mut obj: serde_json::Map<String, Value> = match serde_json::from_slice(body) {
        Ok(Value::Object(m)) => m,
        Ok(_) => return Err(Problem::unprocessable("the event must be a JSON object")),
        Err(e) if e.is_data() || e.is_eof() || e.is_syntax() => {
            return Err(Problem::bad_request(format!(
                "request body is not valid JSON: {e}"
            )))
        }
        Err(e) => return Err(Problem::bad_request(e.to_string())),
    };
    if !obj.contains_key("tenant") {
        let tenant = who
            .tenant
            .clone()
            .unwrap_or_else(|| s.cfg.http.default_tenant.clone());
        obj.insert("tenant".into(), Value::String(tenant));
    }
    // The control plane's name for the event's tags (`team`, `environment`,
    // `project` are kept; the pipeline ignores other keys).
    if !obj.contains_key("tags") {
        if let Some(tags) = obj.remove("cost_tags") {
            obj.insert("tags".into(), tags);
        }
    } else if obj.contains_key("cost_tags") {
        return Err(Problem::unprocessable(
            "send `tags` or `cost_tags`, not both",
        ));
    }
    if kind == Kind::Training && !obj.contains_key("gpu_type") {
        obj.insert("gpu_type".into(), Value::String("default".into()));
    }
    let mut remembered = None;
    match (key, obj.get("event_id")) {
        (Some(k), Some(Value::String(id))) if id != k => {
            return Err(Problem::unprocessable(format!(
                "event_id {id:?} differs from the Idempotency-Key; send one or make them equal"
            )))
        }
        (Some(k), _) => {
            obj.insert("event_id".into(), Value::String(k.to_string()));
            let tenant = obj
                .get("tenant")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            // The body as sent (before `ts` is filled in) is what a retry repeats.
            let digest = body_digest(&obj);
            let now_ms = chrono::Utc::now().timestamp_millis();
            let r = s
                .ingest
                .keys
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remember(&tenant, k, digest, now_ms);
            let r = r.ok_or_else(|| {
                Problem::new(
                    StatusCode::CONFLICT,
                    "this Idempotency-Key was used before with a different event",
                )
            })?;
            if !obj.contains_key("ts") {
                obj.insert("ts".into(), json!(r.ts_ms));
            }
            remembered = r.seen_before.then_some(r);
        }
        (None, Some(_)) => {}
        (None, None) => {
            obj.insert(
                "event_id".into(),
                Value::String(format!("http-{}", crate::unique_token())),
            );
        }
    }
    if !obj.contains_key("ts") {
        obj.insert("ts".into(), json!(chrono::Utc::now().timestamp_millis()));
    }
    let payload = serde_json::to_vec(&Value::Object(obj))
        .map_err(|e| Problem::internal(format!("cannot encode the event: {e}")))?;
    Ok((payload, remembered))
}

fn body_digest(obj: &serde_json::Map<String, Value>) -> [u8; 32] {
    use sha2::Digest;
    let canonical = tollgate_decision::canonical::to_string(&Value::Object(obj.clone()));
    sha2::Sha256::digest(canonical.as_bytes()).into()
}

/// What a key's first request left behind.
#[derive(Debug, Clone, Copy)]
struct Remembered {
    ts_ms: i64,
    /// The broker acknowledged it: a retry is answered without producing.
    acknowledged: bool,
    seen_before: bool,
}

/// `Idempotency-Key`s of this process, per tenant, oldest evicted first
/// (at most `cap`, each for `ttl`).
struct IdempotencyKeys {
    cap: usize,
    ttl: Duration,
    by_key: std::collections::HashMap<(String, String), Entry>,
    order: std::collections::VecDeque<((String, String), std::time::Instant)>,
}

struct Entry {
    digest: [u8; 32],
    ts_ms: i64,
    acknowledged: bool,
    at: std::time::Instant,
}

impl IdempotencyKeys {
    fn new(cap: usize, ttl: Duration) -> Self {
        IdempotencyKeys {
            cap,
            ttl,
            by_key: Default::default(),
            order: Default::default(),
        }
    }

    fn expire(&mut self, now: std::time::Instant) {
        while let Some((k, at)) = self.order.front() {
            if self.order.len() <= self.cap && now.duration_since(*at) < self.ttl {
                break;
            }
            if self.by_key.get(k).is_some_and(|e| e.at == *at) {
                self.by_key.remove(k);
            }
            self.order.pop_front();
        }
    }

    /// `None`: the key was used with another body.
    fn remember(
        &mut self,
        tenant: &str,
        key: &str,
        digest: [u8; 32],
        now_ms: i64,
    ) -> Option<Remembered> {
        let now = std::time::Instant::now();
        self.expire(now);
        let k = (tenant.to_string(), key.to_string());
        if let Some(e) = self.by_key.get(&k) {
            return (e.digest == digest).then_some(Remembered {
                ts_ms: e.ts_ms,
                acknowledged: e.acknowledged,
                seen_before: true,
            });
        }
        self.by_key.insert(
            k.clone(),
            Entry {
                digest,
                ts_ms: now_ms,
                acknowledged: false,
                at: now,
            },
        );
        self.order.push_back((k, now));
        self.expire(now);
        Some(Remembered {
            ts_ms: now_ms,
            acknowledged: false,
            seen_before: false,
        })
    }

    fn acknowledged(&mut self, tenant: &str, key: &str) {
        if let Some(e) = self.by_key.get_mut(&(tenant.to_string(), key.to_string())) {
            e.acknowledged = true;
        }
    }
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
pub async fn events(
    State(s): State<Arc<AppState>>,
    Caller(who, ..): Caller<scope::IngestWrite>,
    body: Bytes,
) -> Result<Response, Problem> {
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
