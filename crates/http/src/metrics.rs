//! `/metrics` and the HTTP request metrics.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus::{exponential_buckets, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

use crate::problem::Problem;
use crate::AppState;
use crate::{scope, Caller};

/// Requests by route and status, latency by route.
pub struct HttpMetrics {
    requests: IntCounterVec,
    duration: HistogramVec,
}

impl HttpMetrics {
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let requests = IntCounterVec::new(
            Opts::new(
                "tollgate_http_requests_total",
                "HTTP requests by route, method and status code.",
            ),
            &["route", "method", "status"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "tollgate_http_request_duration_seconds",
                "HTTP request latency by route and method.",
            )
            .buckets(exponential_buckets(0.000_1, 2.0, 16)?),
            &["route", "method"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        Ok(HttpMetrics { requests, duration })
    }
}

/// Route middleware: carry the matched route template out on the response,
/// where [`track`] (outside the router) reads it.
pub async fn remember_route(req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().cloned();
    let mut response = next.run(req).await;
    if let Some(r) = route {
        response.extensions_mut().insert(r);
    }
    response
}

/// Middleware: count and time every request by its route template (never
/// the raw path, which would make cardinality unbounded). Requests that
/// never reached a route (404, shed, timed out) are `unmatched`.
pub async fn track(State(s): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = method_label(req.method());
    let response = next.run(req).await;
    let route = response
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str());
    let m = &s.http_metrics;
    m.requests
        .with_label_values(&[route, method, response.status().as_str()])
        .inc();
    m.duration
        .with_label_values(&[route, method])
        .observe(started.elapsed().as_secs_f64());
    response
}

/// The `method` label: one of a fixed set, never the client's own text
/// (any token is a valid HTTP method, and each would be a new series).
fn method_label(m: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        _ => "other",
    }
}

/// Prometheus text format. Needs `metrics.scrape`, which only operator
/// tokens hold (the business counters carry every tenant's and team's
/// names).
pub async fn scrape(State(s): State<Arc<AppState>>, _: Caller<scope::MetricsScrape>) -> Response {
    let families = s.registry.gather();
    match prometheus::TextEncoder::new().encode_to_string(&families) {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => Problem::internal(format!("cannot encode metrics: {e}")).into_response(),
    }
}
