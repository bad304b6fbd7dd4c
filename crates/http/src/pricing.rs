//! Prices of workloads that have not run: `GET /v1/pricing/quote` and
//! `POST /v1/placement/suggest`. Both price a hypothetical event with the
//! pipeline's own enricher (the price book in force), so a quote is what
//! the rollups would count for that event.

use std::borrow::Cow;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use tollgate_enrich::Enriched;
use tollgate_event::{Body, Event, Tags};

use crate::nodes::{node_health, NodeParams};
use crate::param::NonEmpty;
use crate::problem::Problem;
use crate::{parse_json, AppState};
use crate::{scope, Caller};

/// One workload: tokens of a model, or GPU hours of a GPU type.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    /// The model (inference; for training, what is trained).
    model: Option<NonEmpty>,
    #[serde(default, deserialize_with = "tollgate_event::whole::opt_text")]
    input_tokens: Option<u64>,
    #[serde(default, deserialize_with = "tollgate_event::whole::opt_text")]
    output_tokens: Option<u64>,
    #[serde(default, deserialize_with = "tollgate_event::whole::opt_text")]
    cached_input_tokens: Option<u64>,
    #[serde(default, deserialize_with = "tollgate_event::whole::opt_text")]
    cache_write_tokens: Option<u64>,
    #[serde(default, deserialize_with = "tollgate_event::whole::opt_text")]
    reasoning_tokens: Option<u64>,
    /// How long a request runs (its embodied emissions: one GPU for this long).
    duration_ms: Option<f64>,
    gpu_type: Option<NonEmpty>,
    #[serde(default, deserialize_with = "tollgate_event::whole::opt_text")]
    gpu_count: Option<u64>,
    hours: Option<f64>,
    gpu_utilization: Option<f64>,
    region: Option<NonEmpty>,
    /// YYYY-MM-DD: which prices (default today, UTC).
    date: Option<NonEmpty>,
}

enum Kind {
    Inference,
    Training,
}

impl Workload {
    /// Its count fields.
    const COUNTS: [&'static str; 6] = [
        "input_tokens",
        "output_tokens",
        "cached_input_tokens",
        "cache_write_tokens",
        "reasoning_tokens",
        "gpu_count",
    ];

    fn kind(&self) -> Result<Kind, Problem> {
        let tokens = self.input_tokens.is_some() || self.output_tokens.is_some();
        let gpus = self.gpu_type.is_some() || self.gpu_count.is_some() || self.hours.is_some();
        match (tokens, gpus) {
            (true, false) => {
                if self.model.is_none() {
                    return Err(Problem::bad_request("a token workload needs `model`"));
                }
                Ok(Kind::Inference)
            }
            (false, true) => {
                if self.gpu_type.is_none() || self.hours.is_none() {
                    return Err(Problem::bad_request(
                        "a GPU workload needs `gpu_type` and `hours` (and `gpu_count`, default 1)",
                    ));
                }
                Ok(Kind::Training)
            }
            (true, true) => Err(Problem::bad_request(
                "give tokens (`model`, `input_tokens`, `output_tokens`) or GPU time (`gpu_type`, `gpu_count`, `hours`), not both",
            )),
            (false, false) => Err(Problem::bad_request(
                "nothing to price: give `model` with `input_tokens`/`output_tokens`, or `gpu_type` with `hours`",
            )),
        }
    }

    fn ts_ms(&self) -> Result<i64, Problem> {
        match &self.date {
            None => Ok(chrono::Utc::now().timestamp_millis()),
            Some(d) => chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d")
                .map(|d| {
                    d.and_time(chrono::NaiveTime::MIN)
                        .and_utc()
                        .timestamp_millis()
                })
                .map_err(|_| Problem::bad_request(format!("`date` must be YYYY-MM-DD, got {d:?}"))),
        }
    }

    /// The event this workload would be, in `region`.
    fn event<'a>(&'a self, region: Option<&'a str>) -> Result<Event<'a>, Problem> {
        let body = match self.kind()? {
            Kind::Inference => {
                let input = self.input_tokens.unwrap_or(0);
                let cached = self.cached_input_tokens.unwrap_or(0);
                let written = self.cache_write_tokens.unwrap_or(0);
                let output = self.output_tokens.unwrap_or(0);
                let reasoning = self.reasoning_tokens.unwrap_or(0);
                if cached.saturating_add(written) > input {
                    return Err(Problem::bad_request(
                        "`cached_input_tokens` and `cache_write_tokens` are parts of `input_tokens` and cannot exceed it",
                    ));
                }
                if reasoning > output {
                    return Err(Problem::bad_request(
                        "`reasoning_tokens` is a part of `output_tokens` and cannot exceed it",
                    ));
                }
                let duration_ms = self.duration_ms.unwrap_or(0.0);
                if !(duration_ms.is_finite()
                    && (0.0..=tollgate_event::MAX_DURATION_MS).contains(&duration_ms))
                {
                    return Err(Problem::bad_request(format!(
                        "`duration_ms` must be a number from 0 to {:e}",
                        tollgate_event::MAX_DURATION_MS
                    )));
                }
                Body::Inference {
                    model: Cow::Borrowed(self.model.as_deref().unwrap_or_default()),
                    input_tokens: input,
                    output_tokens: output,
                    cached_input_tokens: cached,
                    cache_write_tokens: written,
                    reasoning_tokens: reasoning,
                    duration_ms,
                    status: None,
                    cost_usd: None,
                }
            }
            Kind::Training => {
                let hours = self.hours.unwrap_or(0.0);
                if !(hours.is_finite() && hours > 0.0) {
                    return Err(Problem::bad_request("`hours` must be a positive number"));
                }
                let gpu_count = self.gpu_count.unwrap_or(1);
                if gpu_count == 0 {
                    return Err(Problem::bad_request("`gpu_count` must be at least 1"));
                }
                if gpu_count as f64 * hours > tollgate_event::MAX_GPU_HOURS {
                    return Err(Problem::bad_request(format!(
                        "`hours` × `gpu_count` is more than {:e} GPU-hours",
                        tollgate_event::MAX_GPU_HOURS
                    )));
                }
                if let Some(u) = self.gpu_utilization {
                    if !(0.0..=1.0).contains(&u) {
                        return Err(Problem::bad_request("`gpu_utilization` must be in [0, 1]"));
                    }
                }
                Body::Training {
                    model: Cow::Borrowed(self.model.as_deref().unwrap_or("")),
                    gpu_type: Cow::Borrowed(self.gpu_type.as_deref().unwrap_or_default()),
                    gpu_count,
                    duration_hours: hours,
                    gpu_utilization: self.gpu_utilization,
                    cost_usd: None,
                }
            }
        };
        Ok(Event {
            event_id: Cow::Borrowed("quote"),
            ts_ms: self.ts_ms()?,
            tenant: Cow::Borrowed(""),
            tags: Tags::default(),
            region: region.map(Cow::Borrowed),
            node_id: None,
            body,
        })
    }
}

/// Price `w` in `region`: the enrichment and which book entry priced it.
fn price(
    s: &AppState,
    w: &Workload,
    region: Option<&str>,
) -> Result<(Enriched, Value, f64), Problem> {
    let e = w.event(region)?;
    let mut enricher = s.ingest.enricher();
    enricher.refresh(&s.telemetry.pricing);
    let priced = enricher.enrich(&e);
    let intensity = enricher.intensity(region);
    let by = match &e.body {
        Body::Inference {
            model,
            input_tokens,
            ..
        } => match enricher.model_entry(model, e.ts_ms) {
            Some(m) => {
                let tier = tollgate_enrich::Enricher::tier(m, *input_tokens)
                    .map(|i| json!({"above_input_tokens": m.tiers[i].above_input_tokens}));
                json!({"pattern": m.pattern, "effective_from": m.effective_from, "effective_to": m.effective_to, "tier": tier})
            }
            None => json!("defaults"),
        },
        Body::Training { gpu_type, .. } => match enricher.gpu_entry(gpu_type, region) {
            Some(g) => json!({"gpu_type": g.gpu_type, "region": g.region}),
            None => json!("defaults"),
        },
        Body::Heartbeat { .. } => Value::Null,
    };
    Ok((priced, by, intensity))
}

fn quote_json(p: &Enriched, by: Value, intensity: f64) -> Map<String, Value> {
    let mut o = Map::new();
    o.insert("cost_usd".into(), json!(p.cost_usd));
    o.insert("unit_cost_usd".into(), json!(p.unit_cost_usd));
    o.insert("energy_wh".into(), json!(p.energy_wh));
    o.insert("carbon_g".into(), json!(p.carbon_g));
    o.insert("embodied_g".into(), json!(p.embodied_g));
    o.insert("gpu_hours".into(), json!(p.gpu_hours));
    o.insert("carbon_intensity_g_per_kwh".into(), json!(intensity));
    o.insert("priced_by".into(), by);
    o
}

/// `GET /v1/pricing/quote`: what a workload would cost, use and emit.
pub async fn quote(
    State(s): State<Arc<AppState>>,
    Caller(..): Caller<scope::UsageRead>,
    q: Result<Query<Workload>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, Problem> {
    let Query(w) = q.map_err(|e| Problem::bad_request(e.body_text()))?;
    let (p, by, intensity) = price(&s, &w, w.region.as_deref())?;
    let mut o = quote_json(&p, by, intensity);
    o.insert("region".into(), json!(w.region));
    o.insert(
        "kind".into(),
        json!(if matches!(w.kind()?, Kind::Training) {
            "training"
        } else {
            "inference"
        }),
    );
    Ok(Json(Value::Object(o)).into_response())
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
enum Objective {
    Cost,
    Carbon,
    #[default]
    Balanced,
}

/// How a placement is chosen; the rest of the request body is the
/// [`Workload`] (without `region`: that is what is chosen).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Placement {
    /// Regions the job may run in (default: every region the price book
    /// or the caller's nodes know).
    #[serde(default)]
    regions: Vec<String>,
    #[serde(default)]
    objective: Objective,
    #[serde(default, deserialize_with = "tollgate_event::whole::opt")]
    limit: Option<u64>,
}

/// Split a placement body into its choice and its workload.
fn placement_request(body: &Bytes) -> Result<(Placement, Workload), Problem> {
    let mut fields: Map<String, Value> = parse_json(body)?;
    if fields.contains_key("region") {
        return Err(Problem::unprocessable(
            "`region` is what a placement chooses; give the allowed ones as `regions`",
        ));
    }
    // The workload's counts are read as a query string's text (the quote
    // shares them); in a JSON body a count is a number.
    if let Some(k) = Workload::COUNTS
        .iter()
        .find(|k| fields.get(**k).is_some_and(Value::is_string))
    {
        return Err(Problem::unprocessable(format!(
            "`{k}` must be a number, not a string"
        )));
    }
    let mut choice = Map::new();
    for k in ["regions", "objective", "limit"] {
        if let Some(v) = fields.remove(k) {
            choice.insert(k.into(), v);
        }
    }
    let invalid =
        |e: serde_json::Error| Problem::unprocessable(format!("invalid placement request: {e}"));
    let placement = serde_json::from_value(Value::Object(choice)).map_err(invalid)?;
    let workload = serde_json::from_value(Value::Object(fields)).map_err(invalid)?;
    Ok((placement, workload))
}

/// `POST /v1/placement/suggest`: the regions to run a job in, best first
/// for the objective, each with the price, energy, carbon and node health
/// behind its rank.
pub async fn suggest(
    State(s): State<Arc<AppState>>,
    Caller(who, ..): Caller<scope::UsageRead>,
    body: Bytes,
) -> Result<Response, Problem> {
    let (req, w) = placement_request(&body)?;
    w.kind()?;
    // The caller's nodes of the last day, by region.
    let health = node_health(&s, &who, &NodeParams::default()).await?;
    let mut regions: Vec<String> = if req.regions.is_empty() {
        let mut r: Vec<String> = {
            let mut e = s.ingest.enricher();
            e.refresh(&s.telemetry.pricing);
            e.book().regions.iter().map(|r| r.region.clone()).collect()
        };
        r.extend(health.keys().cloned());
        r
    } else {
        req.regions.clone()
    };
    regions.sort();
    regions.dedup();
    if regions.is_empty() {
        return Err(Problem::unprocessable(
            "no region to place in: the price book lists none and `regions` is empty",
        ));
    }
    let mut candidates = Vec::new();
    for region in &regions {
        let (priced, by, intensity) = price(&s, &w, Some(region))?;
        let (nodes, healthy) = health.get(region).copied().unwrap_or((0, 0));
        candidates.push((region.clone(), priced, by, intensity, nodes, healthy));
    }
    let min = |f: fn(&Enriched) -> f64| {
        candidates
            .iter()
            .map(|c| f(&c.1))
            .fold(f64::INFINITY, f64::min)
    };
    let (min_cost, min_carbon) = (min(|e| e.cost_usd), min(|e| e.carbon_g));
    let ratio = |v: f64, m: f64| {
        if m > 0.0 {
            v / m
        } else if v > 0.0 {
            f64::INFINITY
        } else {
            1.0
        }
    };
    let score = |e: &Enriched| match req.objective {
        Objective::Cost => e.cost_usd,
        Objective::Carbon => e.carbon_g,
        Objective::Balanced => {
            0.5 * ratio(e.cost_usd, min_cost) + 0.5 * ratio(e.carbon_g, min_carbon)
        }
    };
    let tiebreak = |e: &Enriched| match req.objective {
        Objective::Carbon => e.cost_usd,
        _ => e.carbon_g,
    };
    // Regions where the caller has nodes but none healthy go last; where it
    // has none, health is unknown and does not count against them.
    candidates.sort_by(|a, b| {
        let unhealthy = |c: &(String, Enriched, Value, f64, usize, usize)| c.4 > 0 && c.5 == 0;
        unhealthy(a)
            .cmp(&unhealthy(b))
            .then(score(&a.1).total_cmp(&score(&b.1)))
            .then(tiebreak(&a.1).total_cmp(&tiebreak(&b.1)))
            .then(a.0.cmp(&b.0))
    });
    if req.limit == Some(0) {
        return Err(Problem::unprocessable("`limit` must be at least 1"));
    }
    let limit = req
        .limit
        .map_or(candidates.len(), |n| {
            usize::try_from(n).unwrap_or(usize::MAX)
        })
        .max(1);
    let objective = match req.objective {
        Objective::Cost => "cost",
        Objective::Carbon => "carbon",
        Objective::Balanced => "balanced",
    };
    let ranked: Vec<Value> = candidates
        .iter()
        .take(limit)
        .enumerate()
        .map(|(i, (region, priced, by, intensity, nodes, healthy))| {
            let mut o = Map::new();
            o.insert("rank".into(), json!(i + 1));
            o.insert("region".into(), json!(region));
            o.insert("score".into(), json!(score(priced)));
            o.insert("nodes".into(), json!(nodes));
            o.insert("healthy_nodes".into(), json!(healthy));
            o.extend(quote_json(priced, by.clone(), *intensity));
            Value::Object(o)
        })
        .collect();
    Ok(Json(json!({
        "objective": objective,
        "score": match req.objective {
            Objective::Cost => "cost_usd (lower first; carbon_g breaks ties)",
            Objective::Carbon => "carbon_g (lower first; cost_usd breaks ties)",
            Objective::Balanced => "0.5 × cost_usd / the lowest cost_usd + 0.5 × carbon_g / the lowest carbon_g (1.0 is best on both)",
        },
        "unhealthy_last": "regions where the caller has nodes and none is healthy (node-reliability score under min_score) rank after the others",
        "suggestions": ranked,
    }))
    .into_response())
}
