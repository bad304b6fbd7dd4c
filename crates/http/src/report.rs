//! `GET /v1/reports/summary` (JSON, Markdown or HTML) and
//! `GET /v1/dashboard/summary` (the same numbers as JSON, for a UI): one
//! billing period of the caller's, gathered by `tollgate_report` from the
//! caller's scoped rollups and the decision logs on this volume (every
//! instance's, with `decisions.per_instance`). Decisions are in it only
//! for a token that may read them (`decisions.read`).

use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use tollgate_report::{Decisions, Format, Period, Report, ReportError, Settings};

use crate::auth::{Principal, Scope};
use crate::decisions::StopOnDrop;
use crate::param::{Name, NonEmpty};
use crate::problem::Problem;
use crate::query::{df_error, read_tenant, scoped_session, Range, Session};
use crate::AppState;
use crate::{scope, Caller};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportParams {
    /// YYYY-MM (default: this month, UTC).
    period: Option<NonEmpty>,
    tenant: Option<Name>,
    /// json (default), md or html: `/v1/reports/summary` only.
    format: Option<String>,
}

type Params = Result<Query<ReportParams>, axum::extract::rejection::QueryRejection>;

/// `GET /v1/reports/summary?period=&format=json|md|html`.
pub async fn summary(
    State(s): State<Arc<AppState>>,
    Caller(who, ..): Caller<scope::UsageRead>,
    q: Params,
) -> Result<Response, Problem> {
    let Query(q) = q.map_err(|e| Problem::bad_request(e.body_text()))?;
    let format = Format::parse(q.format.as_deref().unwrap_or("json"))
        .map_err(|e| Problem::bad_request(e.to_string()))?;
    let report = build(&s, &who, &q).await?;
    let body = report.render(format);
    Ok((
        [(axum::http::header::CONTENT_TYPE, format.content_type())],
        body,
    )
        .into_response())
}

/// `GET /v1/dashboard/summary?period=`: the report's numbers as JSON.
pub async fn dashboard(
    State(s): State<Arc<AppState>>,
    Caller(who, ..): Caller<scope::UsageRead>,
    q: Params,
) -> Result<Response, Problem> {
    let Query(q) = q.map_err(|e| Problem::bad_request(e.body_text()))?;
    if q.format.is_some() {
        return Err(Problem::bad_request(
            "`format` is a parameter of /v1/reports/summary; the dashboard is JSON",
        ));
    }
    let report = build(&s, &who, &q).await?;
    Ok(Json(report.to_json()).into_response())
}

async fn build(s: &AppState, who: &Principal, q: &ReportParams) -> Result<Report, Problem> {
    let now_ms = chrono::Utc::now().timestamp_millis();
    let period = match q.period.as_deref() {
        Some(p) => Period::parse(p).map_err(|e| Problem::bad_request(e.to_string()))?,
        None => Period::of_ms(now_ms),
    };
    let tenant = read_tenant(who, q.tenant.as_deref())?;
    let settings = Settings::from_params(tenant.clone(), &s.gates.policy_params(), now_ms);
    let decisions = if who.has(Scope::DecisionsRead) {
        let mut tally = Decisions::new(&period, tenant.as_deref(), settings.top);
        // Every log on this volume (one per instance with
        // `decisions.per_instance`); the tally keeps the tenant's.
        let root = s.cfg.decisions.log_dir.clone();
        let stop = Arc::new(AtomicBool::new(false));
        let _stop_on_drop = StopOnDrop(stop.clone());
        let read = move || -> Result<Decisions, tollgate_decision_log::LogError> {
            let logs = if root.is_dir() {
                tollgate_decision_log::logs_under(&root)?
            } else {
                Vec::new()
            };
            for log in logs {
                tollgate_decision_log::for_each_record(&log, |line| {
                    if stop.load(Ordering::Relaxed) {
                        return ControlFlow::Break(());
                    }
                    if let Ok(d) = serde_json::from_str(line) {
                        tally.add(&d);
                    }
                    ControlFlow::Continue(())
                })?;
            }
            Ok(tally)
        };
        let tally = tokio::task::spawn_blocking(read)
            .await
            .map_err(|e| Problem::internal(e.to_string()))?
            .map_err(|e| Problem::internal(format!("cannot read the decision log: {e}")))?;
        Some(tally)
    } else {
        None
    };
    let range = Range {
        from_ms: period.start_ms,
        to_ms: period.end_ms,
        period: Some(period.name.clone()),
    };
    let Session { ctx, slot } = scoped_session(s, tenant.as_deref(), Some(&range), &[])?;
    let work = async move {
        tollgate_report::gather(&ctx, &period, &settings, decisions)
            .await
            .map_err(|e| match e {
                ReportError::Query(e) => df_error(e),
                e => Problem::internal(e.to_string()),
            })
    };
    let limit = Duration::from_millis(s.cfg.http.query_timeout_ms);
    s.queries.run(slot, limit, work).await
}
