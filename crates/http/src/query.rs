//! Reads over the rollups (and the live windows): `GET /v1/metrics`,
//! `GET /v1/usage`, `POST /v1/query`. Every query runs in a fresh
//! DataFusion session whose only table, `rollups`, is the rollup tree
//! already filtered to the caller's tenant, with a memory cap, a row cap
//! and a deadline; DDL, DML and other statements are refused.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use arrow::record_batch::RecordBatch;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use datafusion::common::ScalarValue;
use datafusion::execution::context::SQLOptions;
use datafusion::prelude::{col, lit, SessionConfig, SessionContext};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use tollgate_decision::rfc3339_ms;

use crate::auth::Principal;
use crate::problem::Problem;
use crate::{parse_json, AppState};
use crate::{scope, Caller};

const DAY_MS: i64 = 86_400_000;

/// Parse an instant given as RFC 3339 or epoch milliseconds.
pub(crate) fn parse_instant(name: &str, v: &str) -> Result<i64, Problem> {
    if let Ok(ms) = v.parse::<i64>() {
        return Ok(ms);
    }
    chrono::DateTime::parse_from_rfc3339(v)
        .map(|t| t.timestamp_millis())
        .map_err(|_| {
            Problem::bad_request(format!(
                "`{name}` must be RFC 3339 (2026-11-22T10:00:00Z) or epoch milliseconds, got {v:?}"
            ))
        })
}

/// The tenant a read is limited to: the token's, or with `AUTH_MODE=none`
/// the one asked for (`None`: all).
pub(crate) fn read_tenant(who: &Principal, asked: Option<&str>) -> Result<Option<String>, Problem> {
    match (&who.tenant, asked) {
        (Some(mine), Some(a)) if mine != a => Err(Problem::forbidden(format!(
            "this token is for tenant {mine:?}, not {a:?}"
        ))),
        (Some(mine), _) => Ok(Some(mine.clone())),
        (None, a) => Ok(a.map(str::to_string)),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RangeParams {
    from: Option<String>,
    to: Option<String>,
    tenant: Option<String>,
    team: Option<String>,
}

struct Range {
    from_ms: i64,
    to_ms: i64,
}

impl RangeParams {
    /// Default: the last 24 hours.
    fn range(&self) -> Result<Range, Problem> {
        let to_ms = match &self.to {
            Some(v) => parse_instant("to", v)?,
            None => chrono::Utc::now().timestamp_millis(),
        };
        let from_ms = match &self.from {
            Some(v) => parse_instant("from", v)?,
            None => to_ms - DAY_MS,
        };
        if from_ms >= to_ms {
            return Err(Problem::bad_request("`from` must be before `to`"));
        }
        Ok(Range { from_ms, to_ms })
    }
}

fn ts(ms: i64) -> datafusion::prelude::Expr {
    lit(ScalarValue::TimestampMillisecond(
        Some(ms),
        Some("UTC".into()),
    ))
}

/// A query's error: the caller's own mistake (400, with DataFusion's text,
/// which only ever saw the caller's rows), or a failed scan of the rollup
/// tree (500, no detail: it may name a server path).
fn df_error(e: datafusion::error::DataFusionError) -> Problem {
    if tollgate_rollup::ScanFailed::is_cause_of(&e) {
        return Problem::internal(tollgate_rollup::ScanFailed.to_string());
    }
    Problem::bad_request(format!("query failed: {e}"))
}

/// A session whose `rollups` table is the caller's rows (and within
/// `range`, when given), under the configured memory cap. The scope is
/// applied inside the table's scan (`tollgate_rollup::ScopedTable`), below
/// every expression of the caller's SQL.
fn scoped_session(
    s: &AppState,
    tenant: Option<&str>,
    range: Option<&Range>,
    team: Option<&str>,
) -> Result<Session, Problem> {
    // The slot first: a refused query builds nothing.
    let slot = s.queries.slot()?;
    let config = SessionConfig::new().with_target_partitions(2);
    // Every query draws from the one pool of `http.query_memory_bytes`.
    let ctx = SessionContext::new_with_config_rt(config, s.queries.env());
    s.queries.bound_functions(&ctx);
    let table = tollgate_rollup::history_table(&s.rollups)
        .map_err(|e| Problem::internal(format!("cannot open the rollups: {e}")))?;
    let mut scope = lit(true);
    if let Some(t) = tenant {
        scope = scope.and(col("tenant").eq(lit(t)));
    }
    if let Some(r) = range {
        // `date` prunes whole directories; `window_start` is exact.
        let first = &rfc3339_ms(r.from_ms)[..10];
        let last = &rfc3339_ms(r.to_ms)[..10];
        scope = scope
            .and(col("date").gt_eq(lit(first)))
            .and(col("date").lt_eq(lit(last)))
            .and(col("window_start").gt_eq(ts(r.from_ms)))
            .and(col("window_start").lt(ts(r.to_ms)));
    }
    if let Some(team) = team {
        scope = scope.and(col("team").eq(lit(team)));
    }
    let scoped = tollgate_rollup::ScopedTable::new(table, scope);
    ctx.register_table("rollups", Arc::new(scoped))
        .map_err(df_error)?;
    Ok(Session { ctx, slot })
}

/// A scoped session and the query slot it runs in.
struct Session {
    ctx: SessionContext,
    slot: crate::engine::Slot,
}

/// Run `sql` (read-only) on the query threads and collect at most
/// `max_rows` rows before the deadline. Returns the column names, the
/// batches and whether rows were left out.
async fn run(
    s: &AppState,
    session: Session,
    sql: &str,
    max_rows: usize,
) -> Result<(Vec<String>, Vec<RecordBatch>, bool), Problem> {
    let Session { ctx, slot } = session;
    let opts = SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false);
    let sql = sql.to_string();
    let work = async move {
        let df = ctx.sql_with_options(&sql, opts).await.map_err(df_error)?;
        let names: Vec<String> = df
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        let mut stream = df.execute_stream().await.map_err(df_error)?;
        let mut out = Vec::new();
        let mut rows = 0usize;
        while let Some(batch) = stream.next().await {
            let batch = batch.map_err(df_error)?;
            if rows + batch.num_rows() > max_rows {
                out.push(batch.slice(0, max_rows - rows));
                return Ok((names, out, true));
            }
            rows += batch.num_rows();
            out.push(batch);
        }
        Ok((names, out, false))
    };
    let limit = Duration::from_millis(s.cfg.http.query_timeout_ms);
    s.queries.run(slot, limit, work).await
}

fn rows(batches: &[RecordBatch]) -> Result<Vec<Map<String, Value>>, Problem> {
    tollgate_policy::json_rows(batches).map_err(Problem::internal)
}

const MEASURES: &str = "sum(events) AS events, sum(input_tokens) AS input_tokens, \
    sum(output_tokens) AS output_tokens, sum(cost_usd) AS cost_usd, \
    sum(energy_wh) AS energy_wh, sum(carbon_g) AS carbon_g, sum(gpu_hours) AS gpu_hours";

/// Numeric measures of a result row, in a fixed order.
fn measures(r: &Map<String, Value>) -> Map<String, Value> {
    tollgate_rollup::TOTALS_COLUMNS
        .iter()
        .map(|k| (k.to_string(), r.get(*k).cloned().unwrap_or(json!(0))))
        .collect()
}

fn totals_json(t: &tollgate_telemetry::live::Totals) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("events".into(), json!(t.events));
    m.insert("input_tokens".into(), json!(t.input_tokens));
    m.insert("output_tokens".into(), json!(t.output_tokens));
    m.insert("cost_usd".into(), json!(t.cost_usd));
    m.insert("energy_wh".into(), json!(t.energy_wh));
    m.insert("carbon_g".into(), json!(t.carbon_g));
    m.insert("gpu_hours".into(), json!(t.gpu_hours));
    m
}

fn add_into(acc: &mut Map<String, Value>, m: &Map<String, Value>) {
    for (k, v) in m {
        let sum = acc.get(k).and_then(Value::as_f64).unwrap_or(0.0) + v.as_f64().unwrap_or(0.0);
        let value = if k == "events" || k.ends_with("_tokens") {
            json!(sum.round() as u64)
        } else {
            json!(sum)
        };
        acc.insert(k.clone(), value);
    }
}

/// The common start of the range reads: authenticate, parse the range,
/// settle the tenant, open the scoped session.
async fn range_read(
    s: &AppState,
    who: &Principal,
    q: Result<Query<RangeParams>, axum::extract::rejection::QueryRejection>,
) -> Result<(RangeParams, Range, Option<String>, Session), Problem> {
    let Query(q) = q.map_err(|e| Problem::bad_request(e.body_text()))?;
    let range = q.range()?;
    let tenant = read_tenant(who, q.tenant.as_deref())?;
    let ctx = scoped_session(s, tenant.as_deref(), Some(&range), q.team.as_deref())?;
    Ok((q, range, tenant, ctx))
}

/// `GET /v1/metrics`: totals over a time range, and by kind, model and team.
pub async fn summary(
    State(s): State<Arc<AppState>>,
    Caller(who, ..): Caller<scope::UsageRead>,
    q: Result<Query<RangeParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, Problem> {
    let (_, range, tenant, ctx) = range_read(&s, &who, q).await?;
    let sql = format!(
        "SELECT kind, coalesce(model, '') AS model, coalesce(team, '') AS team, {MEASURES} \
         FROM rollups GROUP BY 1, 2, 3"
    );
    let (_, batches, _) = run(&s, ctx, &sql, usize::MAX).await?;
    let mut total = Map::new();
    let mut by: [BTreeMap<String, Map<String, Value>>; 3] = Default::default();
    for row in rows(&batches)? {
        let m = measures(&row);
        add_into(&mut total, &m);
        for (i, dim) in ["kind", "model", "team"].iter().enumerate() {
            let key = row
                .get(*dim)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            add_into(by[i].entry(key).or_default(), &m);
        }
    }
    let list = |dim: &str, m: &BTreeMap<String, Map<String, Value>>| -> Vec<Value> {
        m.iter()
            .map(|(k, v)| {
                let mut o = Map::new();
                o.insert(
                    dim.into(),
                    if k.is_empty() { Value::Null } else { json!(k) },
                );
                o.extend(v.clone());
                Value::Object(o)
            })
            .collect()
    };
    Ok(Json(json!({
        "tenant": tenant,
        "from": rfc3339_ms(range.from_ms),
        "to": rfc3339_ms(range.to_ms),
        "source": "rollups",
        "total": total,
        "by_kind": list("kind", &by[0]),
        "by_model": list("model", &by[1]),
        "by_team": list("team", &by[2]),
    }))
    .into_response())
}

/// `GET /v1/usage`: the team's (or tenant's) usage per window: written
/// rollups plus the windows still open.
pub async fn usage(
    State(s): State<Arc<AppState>>,
    Caller(who, ..): Caller<scope::UsageRead>,
    q: Result<Query<RangeParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, Problem> {
    let (q, range, tenant, ctx) = range_read(&s, &who, q).await?;
    let sql = format!(
        "SELECT tenant, team, window_start, window_end, {MEASURES} FROM rollups \
         GROUP BY tenant, team, window_start, window_end ORDER BY window_start, tenant, team"
    );
    let max = s.cfg.http.max_query_rows;
    let (_, batches, truncated) = run(&s, ctx, &sql, max).await?;
    let mut windows = Vec::new();
    let mut total = Map::new();
    for row in rows(&batches)? {
        let m = measures(&row);
        add_into(&mut total, &m);
        let mut o = Map::new();
        for k in ["tenant", "team", "window_start", "window_end"] {
            o.insert(k.into(), row.get(k).cloned().unwrap_or(Value::Null));
        }
        o.insert("source".into(), json!("rollup"));
        o.extend(m);
        windows.push(Value::Object(o));
    }
    // The windows still open, from the consumer's last live snapshot.
    let live = s.telemetry.live.snapshot();
    let mut open = Vec::new();
    for (t, team, w) in live.all_open() {
        let tenant_ok = tenant.as_deref().is_none_or(|x| x == t);
        let team_ok = q.team.as_deref().is_none_or(|x| Some(x) == team);
        if !(tenant_ok && team_ok) || w.end_ms <= range.from_ms || w.start_ms >= range.to_ms {
            continue;
        }
        let m = totals_json(&w.totals);
        add_into(&mut total, &m);
        let mut o = Map::new();
        o.insert("tenant".into(), json!(t));
        o.insert("team".into(), json!(team));
        o.insert("window_start".into(), json!(rfc3339_ms(w.start_ms)));
        o.insert("window_end".into(), json!(rfc3339_ms(w.end_ms)));
        o.insert("source".into(), json!("live"));
        o.extend(m);
        open.push((w.start_ms, t.to_string(), Value::Object(o)));
    }
    open.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    windows.extend(open.into_iter().map(|(_, _, v)| v));
    Ok(Json(json!({
        "tenant": tenant,
        "team": q.team,
        "from": rfc3339_ms(range.from_ms),
        "to": rfc3339_ms(range.to_ms),
        "live_as_of": (live.as_of_ms > 0).then(|| rfc3339_ms(live.as_of_ms)),
        "windows": windows,
        "truncated": truncated,
        "total": total,
    }))
    .into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SqlRequest {
    sql: String,
    #[serde(default)]
    max_rows: Option<usize>,
}

/// `POST /v1/query`: read-only SQL over `rollups` (the caller's tenant).
pub async fn sql(
    State(s): State<Arc<AppState>>,
    Caller(who, ..): Caller<scope::QueryRun>,
    body: Bytes,
) -> Result<Response, Problem> {
    let req: SqlRequest = parse_json(&body)?;
    if req.sql.trim().is_empty() {
        return Err(Problem::unprocessable("`sql` is empty"));
    }
    let cap = s.cfg.http.max_query_rows;
    let max = req.max_rows.unwrap_or(cap).min(cap);
    let ctx = scoped_session(&s, who.tenant.as_deref(), None, None)?;
    let (columns, batches, truncated) = run(&s, ctx, &req.sql, max).await?;
    let rows = rows(&batches)?;
    Ok(Json(json!({
        "columns": columns,
        "rows": rows,
        "row_count": rows.len(),
        "truncated": truncated,
    }))
    .into_response())
}
