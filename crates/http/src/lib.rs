//! HTTP adapter: the axum API served by `tollgate run` beside the pipeline.
//!
//! - `GET /healthz`, `GET /readyz` (open), `GET /metrics` (scope `admin`).
//! - `POST /v1/gates/policy-check`: the release gate, a signed decision.
//! - `POST /v1/metrics/inference|training`, `POST /v1/nodes/heartbeat`,
//!   `POST /v1/events`: ingest, produced to Kafka, 202 once acknowledged.
//! - `GET /v1/metrics`, `GET /v1/usage`, `GET /v1/decisions`,
//!   `POST /v1/query`: reads, always limited to the caller's tenant.
//!
//! Limits: body size (413), request deadline (408), concurrency with load
//! shedding (503). Every error is an `application/problem+json` document.
//! The contract is `schemas/openapi.yaml` (served at `/openapi.yaml`).

pub mod auth;
mod decisions;
mod engine;
mod gate;
mod ingest;
mod metrics;
mod nodes;
mod param;
mod pricing;
pub mod problem;
mod query;
mod report;

use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use axum::error_handling::HandleErrorLayer;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, MethodRouter};
use axum::{BoxError, Json, Router};
use serde_json::json;
use tollgate_config::Config;
use tollgate_decision_log::Committer;
use tollgate_telemetry::Telemetry;
use tower::ServiceBuilder;

pub use auth::{Auth, Principal, Scope};
pub use gate::GateService;
pub use metrics::HttpMetrics;
use problem::Problem;

/// The OpenAPI document of this API.
pub const OPENAPI_YAML: &str = include_str!("../../../schemas/openapi.yaml");

/// The JSON Schemas `schemas/openapi.yaml` refers to, by file, and the
/// component each becomes in the served spec.
const REFERENCED_SCHEMAS: [(&str, &str, &str); 4] = [
    (
        "inference.schema.json",
        "InferenceEvent",
        include_str!("../../../schemas/inference.schema.json"),
    ),
    (
        "training.schema.json",
        "TrainingEvent",
        include_str!("../../../schemas/training.schema.json"),
    ),
    (
        "heartbeat.schema.json",
        "HeartbeatEvent",
        include_str!("../../../schemas/heartbeat.schema.json"),
    ),
    (
        "decision.schema.json",
        "Decision",
        include_str!("../../../schemas/decision.schema.json"),
    ),
];

/// The fields a single-event ingest route fills in when the body leaves
/// them out (`ingest::complete`): the token's tenant, the receive time, the
/// `Idempotency-Key` or a generated id; for training, `gpu_type`
/// `"default"`.
const FILLED: [&str; 4] = ["tenant", "ts", "event_id", "gpu_type"];

/// The spec as served at `/openapi.yaml`: self-contained. Each JSON Schema
/// file `schemas/openapi.yaml` refers to (`./inference.schema.json`, …) is
/// inlined under `components/schemas` (as JSON, which is YAML; its `$schema`
/// and `$id` left out) and the references point there.
///
/// An event's `…Request` component (the body of its single-event route) is
/// written in the file as the event itself, which is stricter than the
/// route; here it becomes the event with the [`FILLED`] fields optional
/// and `cost_tags` (the control plane's name for `tags`, not with it).
pub fn bundled_openapi() -> &'static str {
    static BUNDLED: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        let mut spec = OPENAPI_YAML.to_string();
        let mut inlined = String::new();
        for (file, name, text) in REFERENCED_SCHEMAS {
            spec = spec.replace(
                &format!("\"./{file}\""),
                &format!("\"#/components/schemas/{name}\""),
            );
            let mut schema: serde_json::Value = serde_json::from_str(text).unwrap_or_default();
            if let Some(o) = schema.as_object_mut() {
                o.remove("$schema");
                o.remove("$id");
            }
            inlined.push_str(&format!("    {name}: {schema}\n"));
            if let Some(event) = name.strip_suffix("Event") {
                spec = route_body(&spec, &format!("{event}Request"), schema);
            }
        }
        spec.replacen("\n  schemas:\n", &format!("\n  schemas:\n{inlined}"), 1)
    });
    &BUNDLED
}

/// `spec` with the one-line component `    <name>: …` replaced by `event`
/// as its route takes it (see [`bundled_openapi`]).
fn route_body(spec: &str, name: &str, mut event: serde_json::Value) -> String {
    use serde_json::{json, Value};
    if let Some(o) = event.as_object_mut() {
        if let Some(Value::Array(required)) = o.get_mut("required") {
            required.retain(|f| !f.as_str().is_some_and(|f| FILLED.contains(&f)));
        }
        let tags = o
            .get("properties")
            .and_then(|p| p.get("tags"))
            .cloned()
            .unwrap_or(Value::Bool(true));
        if let Some(Value::Object(props)) = o.get_mut("properties") {
            props.insert("cost_tags".into(), tags);
        }
        let not_both = json!({"not": {"required": ["tags", "cost_tags"]}});
        match o.get_mut("allOf") {
            Some(Value::Array(all)) => all.push(not_both),
            _ => {
                o.insert("allOf".into(), json!([not_both]));
            }
        }
        o.insert(
            "description".into(),
            json!(format!(
                "{} Over HTTP, `tenant` (the token's), `ts` (the receive time), `event_id` (the Idempotency-Key, or a generated id) and a training event's `gpu_type` (`default`) may be left out, and `cost_tags` is `tags`.",
                o.get("description").and_then(Value::as_str).unwrap_or_default()
            )),
        );
    }
    let prefix = format!("\n    {name}: ");
    let Some(start) = spec.find(&prefix) else {
        return spec.to_string();
    };
    let line_end = spec[start + 1..]
        .find('\n')
        .map_or(spec.len(), |i| start + 1 + i);
    format!("{}{prefix}{event}{}", &spec[..start], &spec[line_end..])
}

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error(transparent)]
    Auth(#[from] auth::AuthConfigError),
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Start(String),
}

/// Everything the handlers share.
pub struct AppState {
    pub cfg: Config,
    pub auth: Auth,
    pub telemetry: Arc<Telemetry>,
    pub registry: prometheus::Registry,
    pub http_metrics: HttpMetrics,
    pub gates: GateService,
    pub ingest: ingest::IngestService,
    /// The rollup tree the reads are served from.
    pub rollups: tollgate_rollup::Tree,
    pub decisions_dir: PathBuf,
    pub queries: engine::QueryEngine,
}

impl AppState {
    /// Build the API's state. `committer` is the decision log's writer, which
    /// the pipeline also submits to; `publisher` (the decisions topic's
    /// producer, shared with the pipeline) copies gate decisions there.
    pub fn new(
        cfg: Config,
        auth: Auth,
        telemetry: Arc<Telemetry>,
        registry: prometheus::Registry,
        committer: Committer,
        gate_engine: tollgate_gate::GateEngine,
        policy_params: serde_json::Map<String, serde_json::Value>,
        publisher: Option<Arc<tollgate_kafka::DecisionPublisher>>,
        rollups: tollgate_rollup::Tree,
    ) -> Result<Arc<Self>, HttpError> {
        let http_metrics = HttpMetrics::new(&registry)?;
        if let Some(p) = &publisher {
            registry.register(Box::new(p.failures()))?;
        }
        let gates = GateService::new(
            gate_engine,
            policy_params,
            committer,
            telemetry.clone(),
            publisher,
        );
        let h = &cfg.http;
        let queries = engine::QueryEngine::new(
            h.query_threads,
            h.max_queries,
            h.query_memory_bytes,
            h.query_string_bytes,
        )
        .map_err(|e| HttpError::Start(format!("cannot start the query threads: {e}")))?;
        Ok(Arc::new(AppState {
            queries,
            ingest: ingest::IngestService::new(&cfg)?,
            rollups,
            decisions_dir: cfg.decision_log_dir(),
            cfg,
            auth,
            telemetry,
            registry,
            http_metrics,
            gates,
        }))
    }

    /// Authenticate the request for `scope`: 401 or 403 as a problem.
    pub(crate) fn principal(
        &self,
        headers: &HeaderMap,
        scope: Scope,
    ) -> Result<Principal, Problem> {
        let value = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        self.auth.check(value, scope).map_err(|d| match d {
            auth::Denied::Unauthenticated(why) => Problem::new(StatusCode::UNAUTHORIZED, why),
            auth::Denied::Forbidden(s) => {
                Problem::forbidden(format!("this token lacks the `{}` scope", s.as_str()))
            }
        })
    }
}

/// The caller, authenticated for the scope `S` before the handler runs
/// (and before the body is read): 401 without a valid token, 403 without
/// the scope, each as a problem. `Caller(who, ..): Caller<scope::UsageRead>`.
pub(crate) struct Caller<S>(pub Principal, std::marker::PhantomData<fn() -> S>);

/// The scopes a handler can ask for, as types ([`Caller`]).
pub(crate) mod scope {
    use crate::auth::Scope;

    pub(crate) trait Needed {
        const SCOPE: Scope;
    }

    macro_rules! scopes {
        ($($name:ident),*) => {$(
            pub(crate) struct $name;
            impl Needed for $name {
                const SCOPE: Scope = Scope::$name;
            }
        )*};
    }
    scopes!(
        IngestWrite,
        GatesCheck,
        UsageRead,
        DecisionsRead,
        QueryRun,
        MetricsScrape
    );
}

impl<S: scope::Needed> axum::extract::FromRequestParts<Arc<AppState>> for Caller<S> {
    type Rejection = Problem;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Problem> {
        state
            .principal(&parts.headers, S::SCOPE)
            .map(|p| Caller(p, std::marker::PhantomData))
    }
}

/// Every route: method, path template, handler. The router is built from
/// this table only, and a test checks each entry against the OpenAPI spec.
pub(crate) fn routes() -> Vec<(&'static str, &'static str, MethodRouter<Arc<AppState>>)> {
    vec![
        ("get", "/healthz", get(healthz)),
        ("get", "/health", get(healthz)),
        ("get", "/readyz", get(readyz)),
        ("get", "/metrics", get(metrics::scrape)),
        ("get", "/openapi.yaml", get(openapi)),
        ("post", "/v1/gates/policy-check", post(gate::policy_check)),
        ("post", "/v1/data/{*path}", post(gate::data_post)),
        ("get", "/v1/data/{*path}", get(gate::data_get)),
        ("post", "/v1/metrics/inference", post(ingest::inference)),
        ("post", "/v1/metrics/training", post(ingest::training)),
        ("post", "/v1/nodes/heartbeat", post(ingest::heartbeat)),
        ("post", "/v1/events", post(ingest::events)),
        ("get", "/v1/metrics", get(query::summary)),
        ("get", "/v1/usage", get(query::usage)),
        ("get", "/v1/usage/{project}", get(query::project_usage)),
        ("get", "/v1/export/focus", get(query::focus_export)),
        ("get", "/v1/nodes", get(nodes::list)),
        ("get", "/v1/nodes/risk", get(nodes::risk)),
        ("get", "/v1/ai/nodes/risk", get(nodes::risk)),
        ("get", "/v1/nodes/{node_id}", get(nodes::one)),
        ("get", "/v1/pricing/quote", get(pricing::quote)),
        ("post", "/v1/placement/suggest", post(pricing::suggest)),
        ("get", "/v1/reports/summary", get(report::summary)),
        ("get", "/v1/dashboard/summary", get(report::dashboard)),
        ("get", "/v1/decisions", get(decisions::search)),
        ("post", "/v1/query", post(query::sql)),
    ]
}

/// The API with every route and limit. The limits wrap the whole router
/// (one concurrency budget and deadline for all routes), and the request
/// metrics wrap the limits, so shed and timed-out requests are counted too.
pub fn router(state: Arc<AppState>) -> Router {
    let h = &state.cfg.http;
    let mut routed = Router::new();
    for (_, path, handler) in routes() {
        routed = routed.route(path, handler);
    }
    let routed = routed
        .route_layer(axum::middleware::from_fn(metrics::remember_route))
        .layer(DefaultBodyLimit::max(h.max_body_bytes))
        .layer(axum::middleware::map_response(problem::problemize))
        .with_state(state.clone());
    let limited = ServiceBuilder::new()
        .layer(HandleErrorLayer::new(limit_error))
        .load_shed()
        .concurrency_limit(h.max_concurrency)
        .timeout(Duration::from_millis(h.request_timeout_ms))
        .service(routed);
    Router::new()
        .fallback_service(limited)
        .layer(axum::middleware::from_fn_with_state(state, metrics::track))
}

async fn limit_error(err: BoxError) -> Response {
    if err.is::<tower::timeout::error::Elapsed>() {
        Problem::new(
            StatusCode::REQUEST_TIMEOUT,
            "the request took longer than the server's deadline (http.request_timeout_ms)",
        )
        .into_response()
    } else if err.is::<tower::load_shed::error::Overloaded>() {
        let mut r =
            Problem::unavailable("too many requests in flight (http.max_concurrency); retry later")
                .into_response();
        r.headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        r
    } else {
        Problem::internal(format!("unhandled error: {err}")).into_response()
    }
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// Ready when every pipeline worker runs, a broker is up, partitions are assigned
/// and the lag is under `http.ready_max_lag`. Each check is reported.
async fn readyz(State(s): State<Arc<AppState>>) -> Response {
    let h = &s.telemetry.live.health;
    let lag = h.total_lag();
    let stats_seen = h.stats_at_ms.load(Relaxed) > 0;
    let checks = [
        ("pipeline_running", h.running()),
        ("broker_reachable", h.broker_up.load(Relaxed)),
        ("partitions_assigned", h.assigned() > 0),
        (
            "lag_under_bound",
            stats_seen && lag <= s.cfg.http.ready_max_lag,
        ),
        ("gate_context_loaded", s.telemetry.live.loaded().is_ok()),
    ];
    let ready = checks.iter().all(|(_, ok)| *ok);
    let body = json!({
        "ready": ready,
        "checks": checks.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
        "assigned_partitions": h.assigned(),
        "lag_messages": lag,
        "max_lag_messages": s.cfg.http.ready_max_lag,
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/yaml")],
        bundled_openapi(),
    )
        .into_response()
}

/// What the accept loop allows each client.
#[derive(Debug, Clone, Copy)]
pub struct ServeLimits {
    /// A connection that has not sent a request's headers within this
    /// (from when it connected, or since its last response) is closed.
    pub header_read_timeout: std::time::Duration,
    /// Connections served at once; more wait in the listen backlog.
    pub max_connections: usize,
}

impl ServeLimits {
    pub fn from_config(h: &tollgate_config::HttpConfig) -> Self {
        ServeLimits {
            header_read_timeout: std::time::Duration::from_millis(h.header_read_timeout_ms),
            max_connections: h.max_connections,
        }
    }
}

/// Serve `router` on `listener` until `shutdown` resolves. Slow clients are
/// cut off (`header_read_timeout`), and at most `max_connections` are open
/// at once: the next one is accepted only when one closes, so a flood of
/// connections waits in the kernel's backlog instead of taking the file
/// descriptors the pipeline needs.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    limits: ServeLimits,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::service::TowerToHyperService;

    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of descriptors or a connection reset before accept:
                    // wait a little rather than spin.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .serve_connection(
                TokioIo::new(stream),
                TowerToHyperService::new(router.clone()),
            );
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop(permit);
        });
    }
    // Let requests in flight finish, for a while.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), graceful.shutdown()).await;
    Ok(())
}

/// Parse a JSON body: 400 for malformed JSON, 422 for JSON of the wrong
/// shape, each with serde's message (which names the field and position).
/// The longest `Idempotency-Key` accepted.
pub(crate) const MAX_IDEMPOTENCY_KEY: usize = 128;

/// The request's `Idempotency-Key`, if it sent one: 1 to 128 visible ASCII
/// characters, else 400.
pub(crate) fn idempotency_key(headers: &HeaderMap) -> Result<Option<&str>, Problem> {
    let Some(v) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let k = v.to_str().unwrap_or_default();
    if k.is_empty() || k.len() > MAX_IDEMPOTENCY_KEY || !k.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Problem::bad_request(format!(
            "Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} visible ASCII characters"
        )));
    }
    Ok(Some(k))
}

/// A value no other call in any process uses: time, process id and a
/// per-process sequence number (hex).
pub(crate) fn unique_token() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default();
    format!("{now:x}-{:x}-{n:x}", std::process::id())
}

pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Problem> {
    serde_json::from_slice(body).map_err(|e| {
        if e.is_data() {
            Problem::unprocessable(e.to_string())
        } else {
            Problem::bad_request(format!("request body is not valid JSON: {e}"))
        }
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
