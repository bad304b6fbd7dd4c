//! `POST /v1/gates/policy-check`: judge a release with the Rego gate rules
//! and the team's live spend, record the answer as a signed decision, then
//! answer.
//!
//! Decisions go to the decision log's one writer ([`Committer`]), which
//! commits in groups: requests that arrive while a group is being fsynced
//! (with the pipeline's windows, if any) form the next one, so the log sees
//! one fsync per group, not per request, and no answer leaves before its
//! decision is durable. The answer is then copied to the decisions topic.

use std::sync::{Arc, RwLock};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use tollgate_decision::{rfc3339_ms, Draft};
use tollgate_decision_log::{Appended, CommitError, Committer};
use tollgate_gate::{Freshness, GateContext, GateEngine, GateRequest, MonthSpend, WindowSpend};
use tollgate_kafka::DecisionPublisher;
use tollgate_rollup::month_start_ms;
use tollgate_telemetry::live::{LiveSnapshot, OpenWindow};
use tollgate_telemetry::spend::SpendView;
use tollgate_telemetry::{Stats, Telemetry};
use tracing::debug;

use crate::auth::Principal;
use crate::problem::Problem;
use crate::{parse_json, AppState};
use crate::{scope, Caller};

/// The gate rules in force, and where their decisions go.
pub struct GateService {
    engine: RwLock<Arc<GateEngine>>,
    /// The window policies' effective parameters the rules were compiled
    /// with (`data.tollgate.params`), by policy name; the node registry
    /// scores with `node-reliability`'s.
    params: RwLock<Arc<serde_json::Map<String, serde_json::Value>>>,
    committer: Committer,
    telemetry: Arc<Telemetry>,
    publisher: Option<Arc<DecisionPublisher>>,
}

impl GateService {
    /// `committer`: the decision log's writer, shared with the pipeline;
    /// `publisher`: where new gate decisions are copied after they are
    /// durable (the decisions topic); `None` keeps them in the log only.
    pub fn new(
        engine: GateEngine,
        params: serde_json::Map<String, serde_json::Value>,
        committer: Committer,
        telemetry: Arc<Telemetry>,
        publisher: Option<Arc<DecisionPublisher>>,
    ) -> Self {
        GateService {
            engine: RwLock::new(Arc::new(engine)),
            params: RwLock::new(Arc::new(params)),
            committer,
            telemetry,
            publisher,
        }
    }

    pub fn engine(&self) -> Arc<GateEngine> {
        self.engine
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Put new rules in force, compiled with the policies' `params`
    /// (SIGHUP).
    pub fn replace(&self, engine: GateEngine, params: serde_json::Map<String, serde_json::Value>) {
        *self.engine.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(engine);
        *self.params.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(params);
    }

    pub fn policy_params(&self) -> Arc<serde_json::Map<String, serde_json::Value>> {
        self.params
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Record `draft` durably (then count it and copy it to the topic), or
    /// say why not: the gate denies whatever it cannot record.
    async fn record(&self, draft: Draft) -> Result<Appended, Problem> {
        let recorded = match self.committer.try_submit(vec![draft]) {
            Ok(ticket) => ticket.wait().await,
            Err(e) => Err(e),
        };
        let appended = recorded
            .and_then(|mut a| a.pop().ok_or(CommitError::Stopped))
            .map_err(|e| {
                if matches!(e, CommitError::Failed(_)) {
                    Stats::add(&self.telemetry.stats.decision_log_errors, 1);
                }
                not_recorded(e)
            })?;
        if appended.is_new() {
            let d = appended.decision();
            self.telemetry
                .decisions
                .with_label_values(&[&d.policy, d.verdict.as_str()])
                .inc();
            if let Some(p) = &self.publisher {
                p.publish(&d.decision_id, appended.line());
            }
        }
        Ok(appended)
    }
}

/// The problem for a decision the log did not take.
fn not_recorded(e: CommitError) -> Problem {
    match e {
        CommitError::TooLarge(why) => Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request's decision cannot be recorded, so the gate denies: {why}; send fewer or shorter tags and metadata"),
        ),
        CommitError::Busy => Problem::unavailable(
            "too many gate decisions waiting to be recorded; denying, retry later",
        ),
        CommitError::Stopped => Problem::unavailable("the decision log writer has stopped; denying"),
        CommitError::Failed(why) => Problem::unavailable(format!(
            "the decision could not be recorded, so the gate denies: {why}"
        )),
    }
}

/// The rules' verdict, counting the requests they could not evaluate.
fn judge(
    s: &AppState,
    engine: &GateEngine,
    input: &Value,
    package: Option<&str>,
) -> tollgate_gate::Outcome {
    let outcome = engine.outcome(input, package);
    if outcome.failed {
        Stats::add(&s.telemetry.stats.gate_evaluation_errors, 1);
    }
    outcome
}

pub async fn policy_check(
    State(s): State<Arc<AppState>>,
    Caller(principal, ..): Caller<scope::GatesCheck>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Problem> {
    let s = &*s;
    let headers = &headers;
    let req: GateRequest = parse_json(&body)?;
    req.validate().map_err(Problem::unprocessable)?;
    let tenant = judged_tenant(s, &principal, req.tenant.as_deref())?;
    let request_key = match crate::idempotency_key(headers)? {
        Some(k) => format!("key:{k}"),
        None => crate::unique_token(),
    };
    let team = req.team().map(str::to_string);
    // Never judged on a month that is only not loaded yet: fail closed.
    let denies = |why: String| {
        Problem::unavailable(format!("the gate denies: {why}")).with("allow", json!(false))
    };
    let ctx = match s.telemetry.spend.snapshot() {
        // Every instance's spend, from the spend topic.
        Some(view) => {
            if !s.telemetry.spend.loaded() {
                return Err(denies(
                    "the spend of the other instances is not loaded yet (the spend topic is being read)".into(),
                ));
            }
            shared_context(&view, &tenant, team.as_deref())
        }
        None => {
            s.telemetry
                .live
                .loaded()
                .map_err(|why| denies(why.to_string()))?;
            context(&s.telemetry.live.snapshot(), &tenant, team.as_deref())
        }
    };
    let engine = s.gates.engine();
    let input = tollgate_gate::gate_input(&req, &ctx);
    let outcome = judge(s, &engine, &input, None);
    let draft = tollgate_gate::draft(&engine, input.clone(), &outcome, &request_key);
    let appended = s
        .gates
        .record(draft)
        .await
        .map_err(|p| p.with("allow", json!(false)))?;
    let d = appended.decision();
    if !appended.is_new() && !same_request(&d.observed, &input) {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "this Idempotency-Key was used before with a different request",
        )
        .with("decision_id", json!(d.decision_id)));
    }
    debug!(decision_id = %d.decision_id, tenant = %tenant, team = ?team, verdict = d.verdict.as_str(), reasons = %d.reasons.join("; "), "gate decision");
    let violations: Vec<Value> = if appended.is_new() {
        outcome
            .violations
            .iter()
            .map(|v| json!({"rule": v.rule, "message": v.message}))
            .collect()
    } else {
        // A retried request gets the recorded answer, not a fresh one.
        d.reasons
            .iter()
            .map(|r| {
                let (rule, message) = r.split_once(": ").unwrap_or(("", r));
                json!({"rule": rule, "message": message})
            })
            .collect()
    };
    Ok(Json(json!({
        "allow": d.verdict == tollgate_decision::Verdict::Allow,
        "verdict": d.verdict.as_str(),
        "violations": violations,
        "decision_id": d.decision_id,
        "policy_revision": d.policy_revision,
        "ts": d.ts,
        "key_id": d.key_id,
        "signature": d.signature,
        "replayed": !appended.is_new(),
        "context": d.observed.get("context"),
    }))
    .into_response())
}

/// `POST /v1/data/{path}` with `{"input": ...}`: OPA's Data API for the
/// configured gate packages, so a client that called OPA can call Tollgate.
/// The answer is OPA's (`{"result": ...}`, or `{}` when undefined). A query
/// of a package itself, or of its `allow`, `deny` or `violations`, is a gate
/// decision: the input gets the live `context` (as the gate's does; a
/// caller's own `context` is replaced), and the answer is signed, logged
/// and carries `decision_id`. Other rules of the package (helpers,
/// constants) are answered without a decision.
pub async fn data_post(
    State(s): State<Arc<AppState>>,
    Caller(principal, ..): Caller<scope::GatesCheck>,
    axum::extract::Path(path): axum::extract::Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Problem> {
    let input = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        let v: Value = parse_json(&body)?;
        match v {
            Value::Object(mut m) => m.remove("input"),
            _ => return Err(Problem::bad_request("the body must be {\"input\": ...}")),
        }
    };
    data(&s, &principal, &path, &headers, input).await
}

/// `GET /v1/data/{path}`: the same without input. A gate decision needs an
/// input, so decision paths answer 400 (fail closed) instead of judging
/// nothing.
pub async fn data_get(
    State(s): State<Arc<AppState>>,
    Caller(principal, ..): Caller<scope::GatesCheck>,
    axum::extract::Path(path): axum::extract::Path<String>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    data(&s, &principal, &path, &headers, None).await
}

async fn data(
    s: &AppState,
    principal: &Principal,
    path: &str,
    headers: &HeaderMap,
    input: Option<Value>,
) -> Result<Response, Problem> {
    let segs: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    let engine = s.gates.engine();
    let Some(package) = engine.package_of(&segs).cloned() else {
        return Err(Problem::new(
            StatusCode::NOT_FOUND,
            format!(
                "data/{} is not inside a gate package ([gates] packages)",
                segs.join("/")
            ),
        ));
    };
    let depth = package.name.split('.').count();
    let is_decision = segs.len() == depth
        || (segs.len() == depth + 1 && matches!(segs[depth], "allow" | "deny" | "violations"));
    if !is_decision {
        return match engine.data(&segs, input.as_ref()) {
            Ok(Some(v)) => Ok(Json(json!({"result": v})).into_response()),
            Ok(None) => Ok(Json(json!({})).into_response()),
            Err(e) => Err(Problem::internal(e.to_string())),
        };
    }
    let Some(input) = input else {
        return Err(Problem::bad_request(format!(
            "data/{} is a gate decision: POST {{\"input\": ...}}",
            segs.join("/")
        )));
    };
    let Value::Object(mut input) = input else {
        return Err(Problem::unprocessable("`input` must be an object"));
    };
    let asked = input.get("tenant").and_then(Value::as_str);
    let tenant = judged_tenant(s, principal, asked)?;
    tollgate_event::check_name(&tenant)
        .map_err(|why| Problem::unprocessable(format!("tenant {why}")))?;
    let team = input
        .get("team")
        .or_else(|| input.get("cost_tags").and_then(|t| t.get("team")))
        .and_then(Value::as_str)
        .filter(|t| tollgate_event::check_name(t).is_ok())
        .map(str::to_string);
    let request_key = match crate::idempotency_key(headers)? {
        Some(k) => format!("key:{k}"),
        None => crate::unique_token(),
    };
    s.telemetry.live.loaded().map_err(|why| {
        Problem::unavailable(format!("the gate denies: {why}")).with("allow", json!(false))
    })?;
    let ctx = context(&s.telemetry.live.snapshot(), &tenant, team.as_deref());
    input.insert(
        "context".into(),
        serde_json::to_value(&ctx).unwrap_or(Value::Null),
    );
    let input = Value::Object(input);
    let outcome = judge(s, &engine, &input, Some(&package.name));
    let result = engine.data(&segs, Some(&input));
    let mut draft = tollgate_gate::draft(&engine, input.clone(), &outcome, &request_key);
    draft
        .observed
        .insert("data_path".into(), json!(segs.join("/")));
    let appended = s
        .gates
        .record(draft)
        .await
        .map_err(|p| p.with("allow", json!(false)))?;
    let d = appended.decision();
    debug!(decision_id = %d.decision_id, tenant = %tenant, path = %segs.join("/"), verdict = d.verdict.as_str(), "data API gate decision");
    match result {
        Ok(Some(v)) => Ok(Json(json!({"result": v, "decision_id": d.decision_id})).into_response()),
        Ok(None) => Ok(Json(json!({"decision_id": d.decision_id})).into_response()),
        Err(e) => Err(Problem::internal(format!("the gate denies: {e}"))
            .with("decision_id", json!(d.decision_id))),
    }
}

/// The tenant a gate request is judged for: the token's (another one asked
/// for is a 403), else the one asked for, else `http.default_tenant`.
fn judged_tenant(
    s: &AppState,
    principal: &crate::auth::Principal,
    asked: Option<&str>,
) -> Result<String, Problem> {
    match (&principal.tenant, asked) {
        (Some(mine), Some(asked)) if mine != asked => Err(Problem::forbidden(format!(
            "this token is for tenant {mine:?}, not {asked:?}"
        ))),
        (Some(mine), _) => Ok(mine.clone()),
        (None, Some(asked)) => Ok(asked.to_string()),
        (None, None) => Ok(s.cfg.http.default_tenant.clone()),
    }
}

/// Do two gate inputs carry the same request (the live context aside)?
fn same_request(observed: &serde_json::Map<String, Value>, input: &Value) -> bool {
    let Value::Object(now) = input else {
        return false;
    };
    let strip = |m: &serde_json::Map<String, Value>| {
        let mut m = m.clone();
        m.remove("context");
        m
    };
    strip(observed) == strip(now)
}

fn window_spend(w: OpenWindow) -> WindowSpend {
    WindowSpend {
        start: rfc3339_ms(w.start_ms),
        end: rfc3339_ms(w.end_ms),
        spend_usd: w.totals.cost_usd,
        events: w.totals.events,
    }
}

/// The team's live spend: its newest open window and its month to date.
fn context(live: &LiveSnapshot, tenant: &str, team: Option<&str>) -> GateContext {
    let now_ms = chrono::Utc::now().timestamp_millis();
    let month = month_start_ms(now_ms);
    let window = live.open_windows(tenant, team).pop().map(window_spend);
    let m = live.month(tenant, team, month);
    let as_of = if live.as_of_ms > 0 {
        live.as_of_ms
    } else {
        now_ms
    };
    GateContext {
        tenant: tenant.to_string(),
        team: team.map(str::to_string),
        window,
        month: MonthSpend {
            start: rfc3339_ms(month)[..10].to_string(),
            spend_usd: m.cost_usd,
            events: m.events,
        },
        as_of: rfc3339_ms(as_of),
        freshness: None,
    }
}

/// The team's spend summed over every partition of every instance (the
/// spend topic), and how fresh the sum is.
fn shared_context(view: &SpendView, tenant: &str, team: Option<&str>) -> GateContext {
    let now_ms = chrono::Utc::now().timestamp_millis();
    let month = month_start_ms(now_ms);
    let t = view.team(tenant, team, month);
    GateContext {
        tenant: tenant.to_string(),
        team: team.map(str::to_string),
        window: t.window.map(window_spend),
        month: MonthSpend {
            start: rfc3339_ms(month)[..10].to_string(),
            spend_usd: t.month.cost_usd,
            events: t.month.events,
        },
        as_of: rfc3339_ms(if view.as_of_ms > 0 {
            view.as_of_ms
        } else {
            now_ms
        }),
        freshness: Some(Freshness {
            partitions: t.partitions,
            watermark: t.watermark_ms.map(rfc3339_ms),
            published: t.published_ms.map(rfc3339_ms),
        }),
    }
}
