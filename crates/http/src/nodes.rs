//! The node registry, read from the heartbeat rollups: `GET /v1/nodes`,
//! `GET /v1/nodes/{node_id}`, `GET /v1/nodes/risk` (and the Flask control
//! planes' `/v1/ai/nodes/risk`). Tenant-scoped like every read.
//!
//! A node's health is scored as the `node-reliability` policy scores it,
//! with the policy's thresholds in force (`tollgate_report::nodes`): a
//! penalty for silence, for a latency spike, for uptime below target and
//! for a failed proof. Silence is measured as the
//! policy measures it, against a clock of the fleet's own: here the
//! latest heartbeat of any of the tenant's nodes in the range, so a fleet
//! whose events stopped arriving is not all stale (`seconds_since_heartbeat`
//! gives the wall clock's view beside it).

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use tollgate_decision::rfc3339_ms;

use tollgate_report::nodes::{self, node_json, Observed, Thresholds, NODE_MEASURES};

use crate::param::{Name, NonEmpty};
use crate::problem::Problem;
use crate::query::{read_tenant, rows, run, scoped_session, Range};
use crate::AppState;
use crate::{scope, Caller};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeParams {
    from: Option<NonEmpty>,
    to: Option<NonEmpty>,
    tenant: Option<Name>,
    #[serde(default, deserialize_with = "tollgate_event::whole::opt_text")]
    limit: Option<u64>,
    /// The `next_cursor` of the previous page (`GET /v1/nodes`).
    cursor: Option<NonEmpty>,
}

impl NodeParams {
    /// Default: the last 24 hours.
    fn range(&self) -> Result<Range, Problem> {
        Range::between(self.from.as_deref(), self.to.as_deref())
    }

    fn limit(&self, max: usize) -> Result<usize, Problem> {
        crate::param::page(self.limit, max)
    }
}

/// The node-reliability policy's thresholds, as the gate rules were
/// compiled with them (`None`: the policy is disabled, nothing is scored).
fn thresholds(s: &AppState) -> Option<Thresholds> {
    Thresholds::from_params(&s.gates.policy_params())
}

/// Every node of the caller's heartbeats in the range, with the fleet's
/// clock (the latest heartbeat among them).
async fn registry(
    s: &AppState,
    q: &NodeParams,
    who: &crate::auth::Principal,
    node: Option<&str>,
) -> Result<(Vec<Map<String, Value>>, i64, Range, Option<String>), Problem> {
    let range = q.range()?;
    let tenant = read_tenant(who, q.tenant.as_deref())?;
    let mut filters = vec![("kind", "heartbeat")];
    if let Some(n) = node {
        filters.push(("node_id", n));
    }
    let session = scoped_session(s, tenant.as_deref(), Some(&range), &filters)?;
    let sql = format!(
        "SELECT tenant, node_id, {NODE_MEASURES} FROM rollups WHERE node_id IS NOT NULL \
         GROUP BY tenant, node_id ORDER BY tenant, node_id"
    );
    let (_, batches, _) = run(s, session, &sql, usize::MAX).await?;
    let nodes = rows(&batches)?;
    let clock = nodes::clock(&nodes, range.to_ms);
    Ok((nodes, clock, range, tenant))
}

/// The caller's nodes of the range by region: (nodes, healthy nodes). With
/// the node-reliability policy disabled every node counts as healthy.
pub(crate) async fn node_health(
    s: &AppState,
    who: &crate::auth::Principal,
    q: &NodeParams,
) -> Result<std::collections::HashMap<String, (usize, usize)>, Problem> {
    let (nodes, clock, _, _) = registry(s, q, who, None).await?;
    let t = thresholds(s);
    let now_ms = chrono::Utc::now().timestamp_millis();
    let mut out: std::collections::HashMap<String, (usize, usize)> = Default::default();
    for r in &nodes {
        let Some(region) = r.get("region").and_then(Value::as_str) else {
            continue;
        };
        let n = node_json(r, clock, now_ms, t);
        let healthy = n.get("healthy").and_then(Value::as_bool).unwrap_or(true);
        let e = out.entry(region.to_string()).or_default();
        e.0 += 1;
        e.1 += usize::from(healthy);
    }
    Ok(out)
}

/// `GET /v1/nodes`: the caller's nodes, a page at a time (by tenant and
/// node id).
pub async fn list(
    State(s): State<Arc<AppState>>,
    Caller(who, ..): Caller<scope::UsageRead>,
    q: Result<Query<NodeParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, Problem> {
    let Query(q) = q.map_err(|e| Problem::bad_request(e.body_text()))?;
    let limit = q.limit(s.cfg.http.max_page)?;
    let (nodes, clock, range, tenant) = registry(&s, &q, &who, None).await?;
    // The cursor is the last row's `<tenant>/<node_id>` (a tenant name
    // holds no `/`). Any text is a place in the (tenant, node_id) order, so
    // no cursor is refused: one without `/` is read as a tenant's start.
    let after: Option<(String, String)> = q.cursor.as_deref().map(|c| {
        let (t, n) = c.split_once('/').unwrap_or((c, ""));
        (t.to_string(), n.to_string())
    });
    let key = |r: &Map<String, Value>| {
        (
            r.get("tenant")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            r.get("node_id")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
        )
    };
    let thresholds = thresholds(&s);
    let now_ms = chrono::Utc::now().timestamp_millis();
    let rest: Vec<&Map<String, Value>> = nodes
        .iter()
        .filter(|r| after.as_ref().is_none_or(|a| key(r) > *a))
        .collect();
    let page: Vec<Value> = rest
        .iter()
        .take(limit)
        .map(|r| node_json(r, clock, now_ms, thresholds))
        .collect();
    let next = (rest.len() > limit)
        .then(|| {
            rest.get(limit - 1).map(|r| {
                let (t, n) = key(r);
                format!("{t}/{n}")
            })
        })
        .flatten();
    Ok(Json(json!({
        "tenant": tenant,
        "from": rfc3339_ms(range.from_ms),
        "to": rfc3339_ms(range.to_ms),
        "clock": rfc3339_ms(clock),
        "scored": thresholds.is_some(),
        "nodes": page,
        "next_cursor": next,
    }))
    .into_response())
}

/// `GET /v1/nodes/risk`: the riskiest of the caller's nodes first (lowest
/// score, then longest silence).
pub async fn risk(
    State(s): State<Arc<AppState>>,
    Caller(who, ..): Caller<scope::UsageRead>,
    q: Result<Query<NodeParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, Problem> {
    let Query(q) = q.map_err(|e| Problem::bad_request(e.body_text()))?;
    if q.cursor.is_some() {
        return Err(Problem::bad_request(
            "`cursor` is a parameter of /v1/nodes; the risk ranking takes `limit`",
        ));
    }
    let limit = q.limit(s.cfg.http.max_page)?;
    let (nodes, clock, range, tenant) = registry(&s, &q, &who, None).await?;
    let Some(t) = thresholds(&s) else {
        return Err(Problem::unavailable(
            "the node-reliability policy is disabled: there is no score to rank by",
        ));
    };
    let now_ms = chrono::Utc::now().timestamp_millis();
    let mut scored: Vec<Value> = nodes
        .iter()
        .map(|r| node_json(r, clock, now_ms, Some(t)))
        .collect();
    nodes::rank_riskiest(&mut scored);
    scored.truncate(limit);
    Ok(Json(json!({
        "tenant": tenant,
        "from": rfc3339_ms(range.from_ms),
        "to": rfc3339_ms(range.to_ms),
        "clock": rfc3339_ms(clock),
        "nodes": scored,
    }))
    .into_response())
}

/// `GET /v1/nodes/{node_id}`: one node of the caller's, with its score per
/// window over the range (newest first, at most `limit`).
pub async fn one(
    State(s): State<Arc<AppState>>,
    Caller(who, ..): Caller<scope::UsageRead>,
    Path(node_id): Path<String>,
    q: Result<Query<NodeParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, Problem> {
    let Query(q) = q.map_err(|e| Problem::bad_request(e.body_text()))?;
    if q.cursor.is_some() {
        return Err(Problem::bad_request("`cursor` is a parameter of /v1/nodes"));
    }
    let limit = q.limit(s.cfg.http.max_page)?;
    // The fleet's clock comes from every node of the caller's.
    let (nodes, clock, range, tenant) = registry(&s, &q, &who, None).await?;
    let Some(node) = nodes
        .iter()
        .find(|r| r.get("node_id").and_then(Value::as_str) == Some(node_id.as_str()))
    else {
        return Err(Problem::new(
            axum::http::StatusCode::NOT_FOUND,
            "no heartbeat of this node in the range",
        ));
    };
    let t = thresholds(&s);
    let now_ms = chrono::Utc::now().timestamp_millis();
    let mut out = node_json(node, clock, now_ms, t);
    // The trend: each window, judged against the window's own clock (the
    // latest heartbeat of any of the caller's nodes in it), as the policy
    // judges a window.
    let fleet = scoped_session(
        &s,
        tenant.as_deref(),
        Some(&range),
        &[("kind", "heartbeat")],
    )?;
    let sql = "SELECT CAST(window_start AS BIGINT) AS start_ms, CAST(max(last_event_time) AS BIGINT) AS clock_ms \
               FROM rollups WHERE node_id IS NOT NULL GROUP BY window_start";
    let (_, batches, _) = run(&s, fleet, sql, usize::MAX).await?;
    let clocks: std::collections::HashMap<i64, i64> = rows(&batches)?
        .iter()
        .filter_map(|r| Some((r.get("start_ms")?.as_i64()?, r.get("clock_ms")?.as_i64()?)))
        .collect();
    let mine = scoped_session(
        &s,
        tenant.as_deref(),
        Some(&range),
        &[("kind", "heartbeat"), ("node_id", node_id.as_str())],
    )?;
    let sql = "SELECT CAST(window_start AS BIGINT) AS start_ms, sum(events) AS heartbeats, \
               CAST(max(last_event_time) AS BIGINT) AS last_ms, max(duration_ms_max) AS max_latency_ms, \
               min(uptime_ratio_min) AS min_uptime_ratio, \
               coalesce(sum(failed_proofs), 0) AS failed_proofs FROM rollups \
               GROUP BY window_start ORDER BY window_start DESC";
    let (_, batches, _) = run(&s, mine, sql, limit).await?;
    let mut trend = Vec::new();
    for r in rows(&batches)? {
        let start = r.get("start_ms").and_then(Value::as_i64).unwrap_or(0);
        let last = r.get("last_ms").and_then(Value::as_i64).unwrap_or(0);
        let clock = clocks.get(&start).copied().unwrap_or(last);
        let seen = Observed::of(&r, (clock - last).max(0) as f64 / 1000.0);
        let mut w = Map::new();
        w.insert("window_start".into(), json!(rfc3339_ms(start)));
        w.insert(
            "heartbeats".into(),
            r.get("heartbeats").cloned().unwrap_or(Value::Null),
        );
        seen.insert_into(&mut w);
        if let Some(t) = t {
            let score = t.score(&seen);
            w.insert(
                "reliability_score".into(),
                score["reliability_score"].clone(),
            );
            w.insert("healthy".into(), score["healthy"].clone());
        }
        trend.push(Value::Object(w));
    }
    if let Value::Object(o) = &mut out {
        o.insert("from".into(), json!(rfc3339_ms(range.from_ms)));
        o.insert("to".into(), json!(rfc3339_ms(range.to_ms)));
        o.insert("clock".into(), json!(rfc3339_ms(clock)));
        o.insert("trend".into(), Value::Array(trend));
    }
    Ok(Json(out).into_response())
}
