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
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use datafusion::common::ScalarValue;
use datafusion::execution::context::SQLOptions;
use datafusion::prelude::{col, lit, SessionConfig, SessionContext};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use tollgate_decision::rfc3339_ms;
use tollgate_report::Sci;

use crate::auth::Principal;
use crate::param::{Name, NonEmpty};
use crate::problem::Problem;
use crate::{parse_json, AppState};
use crate::{scope, Caller};

const DAY_MS: i64 = 86_400_000;

/// The instants a read may name: the years RFC 3339 can write, 0000 to
/// 9999 (UTC). An instant outside is moved to the nearer end, so a range's
/// day bounds stay dates of four-digit years.
const FIRST_MS: i64 = -62_167_219_200_000;
const LAST_MS: i64 = 253_402_300_799_999;

/// Parse an instant given as RFC 3339 or epoch milliseconds (1 to 14
/// digits, the spec's `Instant`).
pub(crate) fn parse_instant(name: &str, v: &str) -> Result<i64, Problem> {
    let ms = if !v.is_empty() && v.len() <= 14 && v.bytes().all(|b| b.is_ascii_digit()) {
        v.parse::<i64>().ok()
    } else {
        chrono::DateTime::parse_from_rfc3339(v)
            .ok()
            .map(|t| t.timestamp_millis())
    };
    ms.map(|ms| ms.clamp(FIRST_MS, LAST_MS)).ok_or_else(|| {
        Problem::bad_request(format!(
            "`{name}` must be RFC 3339 (2026-11-22T10:00:00Z) or epoch milliseconds (up to 14 digits), got {v:?}"
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
    from: Option<NonEmpty>,
    to: Option<NonEmpty>,
    /// A UTC month, `YYYY-MM`; with `from`/`to`, the part of it they bound.
    period: Option<NonEmpty>,
    tenant: Option<Name>,
    team: Option<Name>,
    project: Option<NonEmpty>,
    /// `/v1/usage` only: totals per team, project or model instead of
    /// per window.
    group_by: Option<GroupBy>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum GroupBy {
    Team,
    Project,
    Model,
}

impl GroupBy {
    /// The rollup column (never text from the request).
    fn column(self) -> &'static str {
        match self {
            GroupBy::Team => "team",
            GroupBy::Project => "project",
            GroupBy::Model => "model",
        }
    }
}

pub(crate) struct Range {
    pub(crate) from_ms: i64,
    pub(crate) to_ms: i64,
    /// Set when the range is a `period`.
    pub(crate) period: Option<String>,
}

/// `YYYY-MM` → the UTC month's bounds (ms).
pub(crate) fn parse_period(v: &str) -> Result<(i64, i64), Problem> {
    tollgate_export::Period::parse(v)
        .map(|p| (p.start_ms, p.end_ms))
        .map_err(|e| Problem::bad_request(e.to_string()))
}

impl RangeParams {
    /// Default: the last 24 hours. A `period` with `from`/`to` is the
    /// part of the month they bound, without the month's estimate.
    fn range(&self) -> Result<Range, Problem> {
        let (from, to) = (self.from.as_deref(), self.to.as_deref());
        let Some(p) = &self.period else {
            return Range::between(from, to);
        };
        let (start_ms, end_ms) = parse_period(p)?;
        let mut range = Range {
            from_ms: start_ms,
            to_ms: end_ms,
            period: Some(p.0.clone()),
        };
        if let Some(v) = from {
            range.from_ms = range.from_ms.max(parse_instant("from", v)?);
            range.period = None;
        }
        if let Some(v) = to {
            range.to_ms = range.to_ms.min(parse_instant("to", v)?);
            range.period = None;
        }
        Ok(range)
    }
}

impl Range {
    /// `from`/`to` as given (RFC 3339 or epoch ms); by default the 24
    /// hours up to `to`. A range whose `from` is not before its `to` holds
    /// nothing (as `window_start >= from AND window_start < to` would say).
    pub(crate) fn between(from: Option<&str>, to: Option<&str>) -> Result<Range, Problem> {
        let to_ms = match to {
            Some(v) => parse_instant("to", v)?,
            None => chrono::Utc::now().timestamp_millis(),
        };
        let from_ms = match from {
            Some(v) => parse_instant("from", v)?,
            None => to_ms - DAY_MS,
        };
        Ok(Range {
            from_ms,
            to_ms,
            period: None,
        })
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
pub(crate) fn df_error(e: datafusion::error::DataFusionError) -> Problem {
    if tollgate_rollup::ScanFailed::is_cause_of(&e) {
        return Problem::internal(tollgate_rollup::ScanFailed.to_string());
    }
    Problem::bad_request(format!("query failed: {e}"))
}

/// A session whose `rollups` table is the caller's rows (and within
/// `range`, when given, and where each `(column, value)` of `equal` holds),
/// under the configured memory cap. The scope is applied inside the
/// table's scan (`tollgate_rollup::ScopedTable`), below every expression of
/// the caller's SQL.
pub(crate) fn scoped_session(
    s: &AppState,
    tenant: Option<&str>,
    range: Option<&Range>,
    equal: &[(&str, &str)],
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
    for (column, value) in equal {
        scope = scope.and(col(*column).eq(lit(*value)));
    }
    let scoped = tollgate_rollup::ScopedTable::new(table, scope);
    ctx.register_table("rollups", Arc::new(scoped))
        .map_err(df_error)?;
    Ok(Session { ctx, slot })
}

/// A scoped session and the query slot it runs in.
pub(crate) struct Session {
    pub(crate) ctx: SessionContext,
    pub(crate) slot: crate::engine::Slot,
}

/// Run `sql` (read-only) on the query threads and collect at most
/// `max_rows` rows before the deadline. Returns the column names, the
/// batches and whether rows were left out.
pub(crate) async fn run(
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

pub(crate) fn rows(batches: &[RecordBatch]) -> Result<Vec<Map<String, Value>>, Problem> {
    tollgate_policy::json_rows(batches).map_err(Problem::internal)
}

const MEASURES: &str = tollgate_report::USAGE_MEASURES;

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
    m.insert("embodied_g".into(), json!(t.embodied_g));
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
    scoped_read(s, who, q)
}

fn scoped_read(
    s: &AppState,
    who: &Principal,
    q: RangeParams,
) -> Result<(RangeParams, Range, Option<String>, Session), Problem> {
    let range = q.range()?;
    let tenant = read_tenant(who, q.tenant.as_deref())?;
    let mut equal = Vec::new();
    if let Some(t) = &q.team {
        equal.push(("team", &**t));
    }
    if let Some(p) = &q.project {
        equal.push(("project", &**p));
    }
    let ctx = scoped_session(s, tenant.as_deref(), Some(&range), &equal)?;
    Ok((q, range, tenant, ctx))
}

/// `GET /v1/metrics`: totals over a time range, and by kind, model and team.
pub async fn summary(
    State(s): State<Arc<AppState>>,
    Caller(who, ..): Caller<scope::UsageRead>,
    q: Result<Query<RangeParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, Problem> {
    let (q, range, tenant, ctx) = range_read(&s, &who, q).await?;
    if q.group_by.is_some() {
        return Err(Problem::bad_request(
            "`group_by` is a parameter of /v1/usage; /v1/metrics always groups by kind, model and team",
        ));
    }
    let sql = format!(
        "SELECT kind, coalesce(model, '') AS model, coalesce(team, '') AS team, {MEASURES} \
         FROM rollups GROUP BY 1, 2, 3"
    );
    let (_, batches, _) = run(&s, ctx, &sql, usize::MAX).await?;
    let mut total = Map::new();
    let mut by: [BTreeMap<String, Map<String, Value>>; 3] = Default::default();
    // SCI per request: inference rows only (the functional unit is a request).
    let mut sci_total = Sci::default();
    let mut sci_by: [BTreeMap<String, Sci>; 2] = Default::default();
    for row in rows(&batches)? {
        let m = measures(&row);
        add_into(&mut total, &m);
        let key = |dim: &str| {
            row.get(dim)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        for (i, dim) in ["kind", "model", "team"].iter().enumerate() {
            add_into(by[i].entry(key(dim)).or_default(), &m);
        }
        if key("kind") == "inference" {
            let sci = Sci::of(&m);
            sci_total.add(&sci);
            sci_by[0].entry(key("model")).or_default().add(&sci);
            sci_by[1].entry(key("team")).or_default().add(&sci);
        }
    }
    let list = |dim: &str,
                m: &BTreeMap<String, Map<String, Value>>,
                sci: Option<&BTreeMap<String, Sci>>|
     -> Vec<Value> {
        m.iter()
            .map(|(k, v)| {
                let mut o = Map::new();
                o.insert(
                    dim.into(),
                    if k.is_empty() { Value::Null } else { json!(k) },
                );
                o.extend(v.clone());
                if let Some(sci) = sci {
                    o.insert(
                        "sci_g_per_request".into(),
                        json!(sci.get(k).and_then(Sci::per_request)),
                    );
                }
                Value::Object(o)
            })
            .collect()
    };
    Ok(Json(json!({
        "tenant": tenant,
        "from": rfc3339_ms(range.from_ms),
        "to": rfc3339_ms(range.to_ms),
        "period": range.period,
        "source": "rollups",
        "total": total,
        "sci": sci_total.to_json(),
        "by_kind": list("kind", &by[0], None),
        "by_model": list("model", &by[1], Some(&sci_by[0])),
        "by_team": list("team", &by[2], Some(&sci_by[1])),
    }))
    .into_response())
}

/// `GET /v1/usage`: the team's (or tenant's) usage per window (written
/// rollups plus the windows still open), or with `group_by` its totals per
/// team, project or model; with `period` also the billing estimate.
pub async fn usage(
    State(s): State<Arc<AppState>>,
    Caller(who, ..): Caller<scope::UsageRead>,
    q: Result<Query<RangeParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, Problem> {
    let Query(q) = q.map_err(|e| Problem::bad_request(e.body_text()))?;
    usage_of(&s, &who, q).await
}

/// `GET /v1/usage/{project}`: `/v1/usage?project=` under the path the
/// control planes Tollgate replaces use.
pub async fn project_usage(
    State(s): State<Arc<AppState>>,
    Caller(who, ..): Caller<scope::UsageRead>,
    Path(project): Path<String>,
    q: Result<Query<RangeParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, Problem> {
    let Query(mut q) = q.map_err(|e| Problem::bad_request(e.body_text()))?;
    if q.project.as_ref().is_some_and(|p| p.0 != project) {
        return Err(Problem::bad_request(
            "the project is in the path; leave `project` out of the query",
        ));
    }
    q.project = Some(NonEmpty(project));
    usage_of(&s, &who, q).await
}

async fn usage_of(s: &AppState, who: &Principal, q: RangeParams) -> Result<Response, Problem> {
    let (q, range, tenant, ctx) = scoped_read(s, who, q)?;
    let max = s.cfg.http.max_query_rows;
    let sql = match q.group_by {
        None => format!(
            "SELECT tenant, team, window_start, window_end, {MEASURES} FROM rollups \
             GROUP BY tenant, team, window_start, window_end ORDER BY window_start, tenant, team"
        ),
        Some(g) => {
            let c = g.column();
            format!("SELECT {c}, {MEASURES} FROM rollups GROUP BY {c} ORDER BY {c} NULLS FIRST")
        }
    };
    let (_, batches, truncated) = run(s, ctx, &sql, max).await?;
    let mut total = Map::new();
    let mut written = Vec::new();
    for row in rows(&batches)? {
        let m = measures(&row);
        add_into(&mut total, &m);
        written.push((row, m));
    }

    // The windows still open, from the consumer's last live snapshot. It
    // holds team totals only: with a project filter they cannot be told
    // apart and stay out; grouped by project or model they are in the
    // total and in `open`, not in a group.
    let live = s.telemetry.live.snapshot();
    let mut open = Vec::new();
    let mut open_total = Map::new();
    if q.project.is_none() {
        for (t, team, w) in live.all_open() {
            let tenant_ok = tenant.as_deref().is_none_or(|x| x == t);
            let team_ok = q.team.as_deref().is_none_or(|x| Some(x) == team);
            if !(tenant_ok && team_ok) || w.end_ms <= range.from_ms || w.start_ms >= range.to_ms {
                continue;
            }
            let m = totals_json(&w.totals);
            add_into(&mut total, &m);
            add_into(&mut open_total, &m);
            open.push((w.start_ms, t.to_string(), team.map(str::to_string), w, m));
        }
    }
    open.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));

    let mut out = Map::new();
    out.insert("tenant".into(), json!(tenant));
    out.insert("team".into(), json!(q.team.as_deref()));
    out.insert("project".into(), json!(q.project.as_deref()));
    out.insert("from".into(), json!(rfc3339_ms(range.from_ms)));
    out.insert("to".into(), json!(rfc3339_ms(range.to_ms)));
    out.insert("period".into(), json!(range.period));
    out.insert(
        "live_as_of".into(),
        json!((live.as_of_ms > 0).then(|| rfc3339_ms(live.as_of_ms))),
    );
    let now_ms = chrono::Utc::now().timestamp_millis();
    let ratio = range
        .period
        .as_ref()
        .map(|_| tollgate_export::elapsed_ratio(range.from_ms, range.to_ms, now_ms));
    match q.group_by {
        None => {
            let mut windows = Vec::new();
            for (row, m) in written {
                let mut o = Map::new();
                for k in ["tenant", "team", "window_start", "window_end"] {
                    o.insert(k.into(), row.get(k).cloned().unwrap_or(Value::Null));
                }
                o.insert("source".into(), json!("rollup"));
                o.extend(m);
                windows.push(Value::Object(o));
            }
            for (start, t, team, w, m) in open {
                let mut o = Map::new();
                o.insert("tenant".into(), json!(t));
                o.insert("team".into(), json!(team));
                o.insert("window_start".into(), json!(rfc3339_ms(start)));
                o.insert("window_end".into(), json!(rfc3339_ms(w.end_ms)));
                o.insert("source".into(), json!("live"));
                o.extend(m);
                windows.push(Value::Object(o));
            }
            out.insert("windows".into(), Value::Array(windows));
        }
        Some(g) => {
            let c = g.column();
            let mut groups: BTreeMap<Option<String>, Map<String, Value>> = BTreeMap::new();
            for (row, m) in written {
                let key = row.get(c).and_then(Value::as_str).map(str::to_string);
                add_into(groups.entry(key).or_default(), &m);
            }
            let attributed = g == GroupBy::Team;
            if attributed {
                for (_, _, team, _, m) in &open {
                    add_into(groups.entry(team.clone()).or_default(), m);
                }
            }
            let list: Vec<Value> = groups
                .into_iter()
                .map(|(k, m)| {
                    let mut o = Map::new();
                    o.insert(c.into(), json!(k));
                    if let Some(r) = ratio {
                        o.insert("projected_cost_usd".into(), json!(projected(&m, r)));
                    }
                    o.extend(m);
                    Value::Object(o)
                })
                .collect();
            out.insert("group_by".into(), json!(c));
            out.insert("groups".into(), Value::Array(list));
            let mut o = Map::new();
            o.insert("windows".into(), json!(open.len()));
            o.insert("in_groups".into(), json!(attributed));
            o.extend(open_total);
            out.insert("open".into(), Value::Object(o));
        }
    }
    if let Some(r) = ratio {
        out.insert(
            "estimate".into(),
            json!({
                "period_start": rfc3339_ms(range.from_ms),
                "period_end": rfc3339_ms(range.to_ms),
                "elapsed_ratio": r,
                "complete": r >= 1.0,
                "to_date_cost_usd": total.get("cost_usd").and_then(Value::as_f64).unwrap_or(0.0),
                "projected_cost_usd": projected(&total, r),
            }),
        );
    }
    out.insert("truncated".into(), json!(truncated));
    out.insert("total".into(), Value::Object(total));
    Ok(Json(Value::Object(out)).into_response())
}

/// The group's cost projected over its period.
fn projected(m: &Map<String, Value>, ratio: f64) -> f64 {
    let cost = m.get("cost_usd").and_then(Value::as_f64).unwrap_or(0.0);
    tollgate_export::projected_cost(cost, ratio)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SqlRequest {
    sql: String,
    #[serde(default, deserialize_with = "tollgate_event::whole::opt")]
    max_rows: Option<u64>,
}

/// `POST /v1/query`: read-only SQL over `rollups` (the caller's tenant).
pub async fn sql(
    State(s): State<Arc<AppState>>,
    Caller(who, ..): Caller<scope::QueryRun>,
    body: Bytes,
) -> Result<Response, Problem> {
    let req: SqlRequest = parse_json(&body)?;
    if req.sql.is_empty() {
        return Err(Problem::unprocessable("`sql` is empty"));
    }
    let cap = s.cfg.http.max_query_rows;
    let max = req
        .max_rows
        .map_or(cap, |n| usize::try_from(n).unwrap_or(usize::MAX))
        .min(cap);
    let ctx = scoped_session(&s, who.tenant.as_deref(), None, &[])?;
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FocusParams {
    period: Option<NonEmpty>,
    format: Option<String>,
    granularity: Option<String>,
    tenant: Option<Name>,
}

/// `GET /v1/export/focus`: the caller's FOCUS cost-and-usage dataset of
/// one month (`tollgate_export`), as a Parquet or CSV file.
pub async fn focus_export(
    State(s): State<Arc<AppState>>,
    Caller(who, ..): Caller<scope::UsageRead>,
    q: Result<Query<FocusParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, Problem> {
    use tollgate_export::{ExportError, Format, Granularity, Parties, Period};
    let Query(q) = q.map_err(|e| Problem::bad_request(e.body_text()))?;
    let bad = |e: ExportError| Problem::bad_request(e.to_string());
    let Some(period) = q.period.as_deref() else {
        return Err(Problem::bad_request("`period` (YYYY-MM) is required"));
    };
    let period = Period::parse(period).map_err(bad)?;
    let format = Format::parse(q.format.as_deref().unwrap_or("parquet")).map_err(bad)?;
    let granularity =
        Granularity::parse(q.granularity.as_deref().unwrap_or("hour")).map_err(bad)?;
    let tenant = read_tenant(&who, q.tenant.as_deref())?;
    let range = Range {
        from_ms: period.start_ms,
        to_ms: period.end_ms,
        period: Some(period.name.clone()),
    };
    let Session { ctx, slot } = scoped_session(&s, tenant.as_deref(), Some(&range), &[])?;
    let name = format!(
        "focus-{}.{}",
        period.name,
        if format == Format::Csv {
            "csv"
        } else {
            "parquet"
        }
    );
    let work = async move {
        let batch = tollgate_export::focus(&ctx, &period, granularity, &Parties::default())
            .await
            .map_err(|e| match e {
                ExportError::Query(e) => df_error(e),
                e => Problem::internal(e.to_string()),
            })?;
        tollgate_export::write(&batch, format).map_err(|e| Problem::internal(e.to_string()))
    };
    let limit = Duration::from_millis(s.cfg.http.query_timeout_ms);
    let bytes = s.queries.run(slot, limit, work).await?;
    Ok((
        [
            (
                axum::http::header::CONTENT_TYPE,
                format.content_type().to_string(),
            ),
            (
                axum::http::header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
        ],
        bytes,
    )
        .into_response())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod instant_tests {
    use super::*;

    #[test]
    fn instants_are_rfc3339_or_up_to_14_digits_within_four_digit_years() {
        assert_eq!(
            parse_instant("from", "1700000000000").ok(),
            Some(1_700_000_000_000)
        );
        assert_eq!(
            parse_instant("from", "2026-11-22T10:00:00+01:00").ok(),
            Some(1_795_338_000_000)
        );
        for bad in [
            "",
            "+5",
            "-5",
            "1e3",
            "123456789012345",
            "2026-11-22",
            "yesterday",
        ] {
            let e = parse_instant("from", bad).unwrap_err();
            assert!(e.detail.contains("`from`"), "{bad}: {}", e.detail);
        }
        // The ends of RFC 3339's years, whatever the offset.
        assert_eq!(
            parse_instant("to", "9999-12-31T23:59:59-23:59").ok(),
            Some(LAST_MS)
        );
        assert_eq!(
            parse_instant("to", "0000-01-01T00:00:00+23:59").ok(),
            Some(FIRST_MS)
        );
        assert_eq!(&rfc3339_ms(LAST_MS)[..10], "9999-12-31");
        assert_eq!(&rfc3339_ms(FIRST_MS)[..10], "0000-01-01");
        // An empty range is a range.
        let r = Range::between(Some("2000"), Some("1000")).unwrap();
        assert!(r.from_ms > r.to_ms);
    }
}
