//! Reports of one billing period, for the people who pay: spend, tokens,
//! carbon and unit cost by team and model, budget status, the period's
//! notable decisions and the riskiest nodes.
//!
//! [`gather`] reads the session's `rollups` table — the caller has scoped it
//! to whoever reads (the API a tenant's `ScopedTable`, `tollgate report` the
//! tree) — and the decisions it was fed ([`Decisions`]); a [`Report`]
//! renders as JSON, Markdown or a self-contained HTML page with inline SVG
//! charts ([`Report::render`]). Knows neither where the rollups nor the
//! decision log live.

mod html;
mod markdown;
pub mod nodes;

use std::collections::BTreeMap;

use datafusion::prelude::SessionContext;
use serde::Serialize;
use serde_json::{json, Map, Value};
use tollgate_decision::rfc3339_ms;
pub use tollgate_export::Period;

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("report query: {0}")]
    Query(#[from] datafusion::error::DataFusionError),
    #[error("report rows: {0}")]
    Rows(String),
    #[error("`format` must be json, md or html, got {0:?}")]
    Format(String),
}

/// The additive usage measures of rollup rows, as SQL select items.
pub const USAGE_MEASURES: &str = "sum(events) AS events, sum(input_tokens) AS input_tokens, \
    sum(output_tokens) AS output_tokens, sum(cost_usd) AS cost_usd, \
    sum(energy_wh) AS energy_wh, sum(carbon_g) AS carbon_g, \
    coalesce(sum(embodied_g), 0.0) AS embodied_g, sum(gpu_hours) AS gpu_hours";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Markdown,
    Html,
}

impl Format {
    pub fn parse(v: &str) -> Result<Format, ReportError> {
        match v {
            "json" => Ok(Format::Json),
            "md" | "markdown" => Ok(Format::Markdown),
            "html" => Ok(Format::Html),
            _ => Err(ReportError::Format(v.to_string())),
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Json => "application/json",
            Format::Markdown => "text/markdown; charset=utf-8",
            Format::Html => "text/html; charset=utf-8",
        }
    }
}

/// What a report is judged against, and how long its lists are.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Whose report (`None`: every tenant's, an operator's).
    pub tenant: Option<String>,
    /// team-monthly-budget's budget per team and month (`None`: disabled).
    pub budget_usd: Option<f64>,
    /// node-reliability's thresholds (`None`: disabled, nodes unscored).
    pub nodes: Option<nodes::Thresholds>,
    pub now_ms: i64,
    /// Length of the decision and node lists.
    pub top: usize,
}

impl Settings {
    /// From the policies' effective parameters (`PolicyEngine::params_json`).
    pub fn from_params(tenant: Option<String>, params: &Map<String, Value>, now_ms: i64) -> Self {
        let budget_usd = params
            .get("team-monthly-budget")
            .and_then(|p| p.get("budget_usd"))
            .and_then(Value::as_f64);
        Settings {
            tenant,
            budget_usd,
            nodes: nodes::Thresholds::from_params(params),
            now_ms,
            top: 10,
        }
    }
}

/// Usage of a set of rollup rows, and its unit costs.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Usage {
    pub cost_usd: f64,
    /// Inference events.
    pub requests: u64,
    /// Training events.
    pub training_jobs: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub energy_wh: f64,
    /// Operational carbon, g CO2e.
    pub carbon_g: f64,
    /// Embodied carbon, g CO2e.
    pub embodied_g: f64,
    pub gpu_hours: f64,
    /// Inference cost per request.
    pub cost_per_request: Option<f64>,
    /// Inference cost per 1,000 tokens (input and output).
    pub cost_per_1k_tokens: Option<f64>,
    /// SCI of inference: (operational + embodied carbon) per request.
    pub sci_g_per_request: Option<f64>,
    #[serde(skip)]
    inference: Sci,
    #[serde(skip)]
    inference_cost_usd: f64,
}

impl Usage {
    /// Add one row of [`USAGE_MEASURES`] of `kind`.
    fn add(&mut self, kind: &str, r: &Map<String, Value>) {
        let f = |k: &str| r.get(k).and_then(Value::as_f64).unwrap_or(0.0);
        let n = |k: &str| r.get(k).and_then(Value::as_u64).unwrap_or(0);
        self.cost_usd += f("cost_usd");
        self.input_tokens += n("input_tokens");
        self.output_tokens += n("output_tokens");
        self.energy_wh += f("energy_wh");
        self.carbon_g += f("carbon_g");
        self.embodied_g += f("embodied_g");
        self.gpu_hours += f("gpu_hours");
        match kind {
            "inference" => {
                self.requests += n("events");
                self.inference_cost_usd += f("cost_usd");
                self.inference.add(&Sci::of(r));
            }
            "training" => self.training_jobs += n("events"),
            _ => {}
        }
        self.finish();
    }

    fn finish(&mut self) {
        let requests = self.requests as f64;
        let tokens = (self.input_tokens + self.output_tokens) as f64;
        self.cost_per_request = (self.requests > 0).then(|| self.inference_cost_usd / requests);
        self.cost_per_1k_tokens =
            (self.requests > 0 && tokens > 0.0).then(|| self.inference_cost_usd / tokens * 1000.0);
        self.sci_g_per_request = self.inference.per_request();
    }

    /// The SCI of the inference in it.
    pub fn sci(&self) -> Sci {
        self.inference
    }
}

/// The Green Software Foundation's Software Carbon Intensity of inference,
/// `((E × I) + M) / R`: operational carbon (energy × the region's grid
/// intensity, `carbon_g`), embodied carbon (`embodied_g`, from the price
/// book's per-GPU-hour figure), per inference request.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Sci {
    pub operational_g: f64,
    pub embodied_g: f64,
    pub requests: u64,
}

impl Sci {
    /// From a row of [`USAGE_MEASURES`] of inference.
    pub fn of(m: &Map<String, Value>) -> Sci {
        let f = |k: &str| m.get(k).and_then(Value::as_f64).unwrap_or(0.0);
        Sci {
            operational_g: f("carbon_g"),
            embodied_g: f("embodied_g"),
            requests: m.get("events").and_then(Value::as_u64).unwrap_or(0),
        }
    }

    pub fn add(&mut self, o: &Sci) {
        self.operational_g += o.operational_g;
        self.embodied_g += o.embodied_g;
        self.requests += o.requests;
    }

    /// `None` without requests.
    pub fn per_request(&self) -> Option<f64> {
        (self.requests > 0).then(|| (self.operational_g + self.embodied_g) / self.requests as f64)
    }

    pub fn to_json(self) -> Value {
        json!({
            "formula": "((E × I) + M) / R",
            "functional_unit": "inference request",
            "operational_g": self.operational_g,
            "embodied_g": self.embodied_g,
            "requests": self.requests,
            "g_per_request": self.per_request(),
        })
    }
}

/// Where a team stands against its monthly budget.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Budget {
    pub budget_usd: f64,
    /// Spent so far over the budget.
    pub used_ratio: f64,
    /// `over` (spent more than the budget), `at_risk` (the month's
    /// projection at the rate so far is over it) or `ok`.
    pub status: &'static str,
}

impl Budget {
    fn judge(budget_usd: f64, cost: f64, projected: f64) -> Budget {
        let status = if cost > budget_usd {
            "over"
        } else if projected > budget_usd {
            "at_risk"
        } else {
            "ok"
        };
        Budget {
            budget_usd,
            used_ratio: if budget_usd > 0.0 {
                cost / budget_usd
            } else {
                0.0
            },
            status,
        }
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TeamLine {
    pub tenant: String,
    /// `None`: events without `tags.team`.
    pub team: Option<String>,
    #[serde(flatten)]
    pub usage: Usage,
    pub projected_cost_usd: f64,
    pub budget: Option<Budget>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ModelLine {
    pub model: Option<String>,
    pub kind: String,
    #[serde(flatten)]
    pub usage: Usage,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DayLine {
    /// YYYY-MM-DD (UTC).
    pub date: String,
    pub cost_usd: f64,
    pub carbon_g: f64,
    pub embodied_g: f64,
}

/// The period's decisions: counts by policy and verdict, and the most
/// severe (deny, then warn), newest first.
#[derive(Debug, Clone)]
pub struct Decisions {
    tenant: Option<String>,
    start_ms: i64,
    end_ms: i64,
    top: usize,
    counts: BTreeMap<String, [u64; 3]>,
    notable: Vec<(u8, String, Value)>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PolicyCount {
    pub policy: String,
    pub allow: u64,
    pub warn: u64,
    pub deny: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DecisionSummary {
    pub total: u64,
    pub by_policy: Vec<PolicyCount>,
    pub top: Vec<Value>,
}

fn parse_ms(v: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(v)
        .ok()
        .map(|t| t.timestamp_millis())
}

impl Decisions {
    /// `tenant`: whose decisions count (its subjects' `tenant=`); `None`:
    /// every decision (an operator's report).
    pub fn new(period: &Period, tenant: Option<&str>, top: usize) -> Self {
        Decisions {
            tenant: tenant.map(str::to_string),
            start_ms: period.start_ms,
            end_ms: period.end_ms,
            top,
            counts: BTreeMap::new(),
            notable: Vec::new(),
        }
    }

    /// One record of the decision log (its JSON). Counted when it is the
    /// tenant's and its window starts in the period or, for a decision
    /// without a window (a gate's), when it was made in it.
    pub fn add(&mut self, d: &Value) {
        let s = |k: &str| d.get(k).and_then(Value::as_str);
        if let Some(t) = &self.tenant {
            if tollgate_decision::subject_tenant(s("subject").unwrap_or_default()) != Some(t) {
                return;
            }
        }
        let when = d
            .get("window")
            .and_then(|w| w.get("start"))
            .and_then(Value::as_str)
            .or_else(|| s("ts"))
            .and_then(parse_ms);
        if !when.is_some_and(|t| self.start_ms <= t && t < self.end_ms) {
            return;
        }
        let (Some(policy), Some(verdict)) = (s("policy"), s("verdict")) else {
            return;
        };
        let rank = match verdict {
            "deny" => 2,
            "warn" => 1,
            _ => 0,
        };
        self.counts.entry(policy.to_string()).or_default()[usize::from(rank)] += 1;
        if rank == 0 || self.top == 0 {
            return;
        }
        let line = json!({
            "decision_id": d.get("decision_id"),
            "ts": d.get("ts"),
            "policy": policy,
            "verdict": verdict,
            "subject": d.get("subject"),
            "window_start": d.get("window").and_then(|w| w.get("start")),
            "reason": d.get("reasons").and_then(|r| r.get(0)),
        });
        self.notable
            .push((rank, s("ts").unwrap_or_default().to_string(), line));
        if self.notable.len() > 4 * self.top {
            self.keep_top();
        }
    }

    fn keep_top(&mut self) {
        self.notable.sort_by(|a, b| (b.0, &b.1).cmp(&(a.0, &a.1)));
        self.notable.truncate(self.top);
    }

    fn summary(mut self) -> DecisionSummary {
        self.keep_top();
        let by_policy: Vec<PolicyCount> = self
            .counts
            .into_iter()
            .map(|(policy, [allow, warn, deny])| PolicyCount {
                policy,
                allow,
                warn,
                deny,
            })
            .collect();
        DecisionSummary {
            total: by_policy.iter().map(|p| p.allow + p.warn + p.deny).sum(),
            by_policy,
            top: self.notable.into_iter().map(|(_, _, v)| v).collect(),
        }
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct NodeSummary {
    /// Whether node-reliability's thresholds scored them.
    pub scored: bool,
    pub nodes: usize,
    pub unhealthy: usize,
    /// The riskiest first ([`nodes::node_json`] rows).
    pub riskiest: Vec<Value>,
}

impl NodeSummary {
    /// "3 nodes, 1 unhealthy", and why they are not scored.
    pub fn headline(&self) -> String {
        format!(
            "{} nodes, {} unhealthy{}",
            self.nodes,
            self.unhealthy,
            if self.scored {
                ""
            } else {
                " (node-reliability is disabled: not scored)"
            }
        )
    }
}

/// The node table's columns: heading, field of a [`nodes::node_json`] row,
/// and whether it is a number.
pub(crate) const NODE_COLUMNS: [(&str, &str, bool); 7] = [
    ("node", "node_id", false),
    ("region", "region", false),
    ("score", "reliability_score", true),
    ("silent (s)", "seconds_silent", true),
    ("max latency (ms)", "max_latency_ms", true),
    ("min uptime", "min_uptime_ratio", true),
    ("failed proofs", "failed_proofs", true),
];

/// A node row's cells, as text (unescaped), in [`NODE_COLUMNS`] order.
pub(crate) fn node_cells(v: &Value) -> Vec<String> {
    NODE_COLUMNS
        .iter()
        .map(|(_, field, number)| {
            let x = v.get(*field);
            let text = if *number {
                x.and_then(Value::as_f64).map(|n| n.to_string())
            } else {
                x.and_then(Value::as_str).map(str::to_string)
            };
            text.unwrap_or_else(|| "—".into())
        })
        .collect()
}

/// One billing period's report.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Report {
    pub tenant: Option<String>,
    pub period: String,
    pub from: String,
    pub to: String,
    pub generated_at: String,
    /// The end of the latest window in the report.
    pub data_until: Option<String>,
    /// How much of the period has passed.
    pub elapsed_ratio: f64,
    pub total: Usage,
    /// The period's cost at the rate so far.
    pub projected_cost_usd: f64,
    #[serde(serialize_with = "sci_json")]
    pub sci: Sci,
    /// The budget per team (team-monthly-budget), when it is enabled.
    pub budget_usd: Option<f64>,
    /// Teams by cost, highest first.
    pub teams: Vec<TeamLine>,
    /// Models by cost, highest first.
    pub models: Vec<ModelLine>,
    /// Every day of the period up to today (the whole period once it is
    /// over).
    pub days: Vec<DayLine>,
    /// `None`: the reader may not read decisions.
    pub decisions: Option<DecisionSummary>,
    pub nodes: NodeSummary,
}

fn sci_json<S: serde::Serializer>(sci: &Sci, s: S) -> Result<S::Ok, S::Error> {
    sci.to_json().serialize(s)
}

impl Report {
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    pub fn render(&self, format: Format) -> String {
        match format {
            Format::Json => {
                let mut s = serde_json::to_string_pretty(&self.to_json()).unwrap_or_default();
                s.push('\n');
                s
            }
            Format::Markdown => markdown::render(self),
            Format::Html => html::render(self),
        }
    }

    /// Whose report, in words.
    pub fn whose(&self) -> String {
        match &self.tenant {
            Some(t) => format!("tenant {t}"),
            None => "all tenants".into(),
        }
    }
}

async fn query(ctx: &SessionContext, sql: &str) -> Result<Vec<Map<String, Value>>, ReportError> {
    let batches = ctx.sql(sql).await?.collect().await?;
    tollgate_policy::json_rows(&batches).map_err(ReportError::Rows)
}

/// YYYY-MM-DD (UTC), as the tree's `date` directories name days.
fn day_name(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .format("%Y-%m-%d")
        .to_string()
}

fn text(r: &Map<String, Value>, k: &str) -> Option<String> {
    r.get(k).and_then(Value::as_str).map(str::to_string)
}

/// Rows of a table in the Markdown and HTML forms (the JSON has them all).
pub(crate) const TABLE_ROWS: usize = 50;

/// The name the period's rows are registered under in the caller's session.
const PERIOD_TABLE: &str = "report_period";

/// Gather `period`'s report from the session's `rollups` table (the
/// reader's rows; a `date` and a `kind` column beside the file columns,
/// as the tree's listing table has) and the decisions tallied (`None`:
/// the reader may not read decisions; the report says so).
pub async fn gather(
    ctx: &SessionContext,
    period: &Period,
    settings: &Settings,
    decisions: Option<Decisions>,
) -> Result<Report, ReportError> {
    let rows = ctx.table("rollups").await?.filter(period.filter())?;
    ctx.deregister_table(PERIOD_TABLE)?;
    ctx.register_table(PERIOD_TABLE, rows.into_view())?;
    let usage = |by: &str| {
        format!(
            "SELECT {by}, kind, {USAGE_MEASURES} FROM {PERIOD_TABLE} \
             WHERE kind <> 'heartbeat' GROUP BY {by}, kind"
        )
    };
    let ratio = period.elapsed_ratio(settings.now_ms);

    let mut total = Usage::default();
    let mut teams: BTreeMap<(String, Option<String>), Usage> = BTreeMap::new();
    for r in query(ctx, &usage("tenant, team")).await? {
        let kind = text(&r, "kind").unwrap_or_default();
        let key = (text(&r, "tenant").unwrap_or_default(), text(&r, "team"));
        teams.entry(key).or_default().add(&kind, &r);
        total.add(&kind, &r);
    }
    let mut teams: Vec<TeamLine> = teams
        .into_iter()
        .map(|((tenant, team), usage)| {
            let projected = tollgate_export::projected_cost(usage.cost_usd, ratio);
            TeamLine {
                tenant,
                team,
                budget: settings
                    .budget_usd
                    .map(|b| Budget::judge(b, usage.cost_usd, projected)),
                usage,
                projected_cost_usd: projected,
            }
        })
        .collect();
    teams.sort_by(|a, b| b.usage.cost_usd.total_cmp(&a.usage.cost_usd));

    let mut models: BTreeMap<(Option<String>, String), Usage> = BTreeMap::new();
    for r in query(ctx, &usage("model")).await? {
        let kind = text(&r, "kind").unwrap_or_default();
        models
            .entry((text(&r, "model"), kind.clone()))
            .or_default()
            .add(&kind, &r);
    }
    let mut models: Vec<ModelLine> = models
        .into_iter()
        .map(|((model, kind), usage)| ModelLine { model, kind, usage })
        .collect();
    models.sort_by(|a, b| b.usage.cost_usd.total_cmp(&a.usage.cost_usd));

    // Every day of the period up to today, a day without usage as zeros.
    let mut days: BTreeMap<String, DayLine> = BTreeMap::new();
    let last_ms = period.end_ms.min(settings.now_ms.max(period.start_ms + 1));
    let mut day_ms = period.start_ms;
    while day_ms < last_ms {
        let date = day_name(day_ms);
        days.insert(
            date.clone(),
            DayLine {
                date,
                cost_usd: 0.0,
                carbon_g: 0.0,
                embodied_g: 0.0,
            },
        );
        day_ms += 86_400_000;
    }
    for r in query(
        ctx,
        &format!(
            "SELECT date, sum(cost_usd) AS cost_usd, sum(carbon_g) AS carbon_g, \
             coalesce(sum(embodied_g), 0.0) AS embodied_g FROM {PERIOD_TABLE} \
             WHERE kind <> 'heartbeat' GROUP BY date"
        ),
    )
    .await?
    {
        let f = |k: &str| r.get(k).and_then(Value::as_f64).unwrap_or(0.0);
        let date = text(&r, "date").unwrap_or_default();
        days.insert(
            date.clone(),
            DayLine {
                date,
                cost_usd: f("cost_usd"),
                carbon_g: f("carbon_g"),
                embodied_g: f("embodied_g"),
            },
        );
    }
    let days: Vec<DayLine> = days.into_values().collect();

    let until = query(
        ctx,
        &format!("SELECT CAST(max(window_end) AS BIGINT) AS until_ms FROM {PERIOD_TABLE}"),
    )
    .await?
    .first()
    .and_then(|r| r.get("until_ms").and_then(Value::as_i64));

    let node_rows = query(
        ctx,
        &format!(
            "SELECT tenant, node_id, {} FROM {PERIOD_TABLE} \
             WHERE kind = 'heartbeat' AND node_id IS NOT NULL GROUP BY tenant, node_id",
            nodes::NODE_MEASURES
        ),
    )
    .await?;
    let clock = nodes::clock(&node_rows, period.end_ms);
    let mut scored: Vec<Value> = node_rows
        .iter()
        .map(|r| nodes::node_json(r, clock, settings.now_ms, settings.nodes))
        .collect();
    let unhealthy = scored
        .iter()
        .filter(|n| n.get("healthy").and_then(Value::as_bool) == Some(false))
        .count();
    let count = scored.len();
    nodes::rank_riskiest(&mut scored);
    scored.truncate(settings.top);
    ctx.deregister_table(PERIOD_TABLE)?;

    Ok(Report {
        tenant: settings.tenant.clone(),
        period: period.name.clone(),
        from: rfc3339_ms(period.start_ms),
        to: rfc3339_ms(period.end_ms),
        generated_at: rfc3339_ms(settings.now_ms),
        data_until: until.map(rfc3339_ms),
        elapsed_ratio: ratio,
        projected_cost_usd: tollgate_export::projected_cost(total.cost_usd, ratio),
        sci: total.sci(),
        total,
        budget_usd: settings.budget_usd,
        teams,
        models,
        days,
        decisions: decisions.map(Decisions::summary),
        nodes: NodeSummary {
            scored: settings.nodes.is_some(),
            nodes: count,
            unhealthy,
            riskiest: scored,
        },
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
