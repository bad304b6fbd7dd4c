//! Node health from the heartbeat rollups, scored as the `node-reliability`
//! policy scores it, with the policy's thresholds in force: a penalty for
//! silence, for a latency spike, for uptime below target and for a failed
//! proof. Silence is measured as the policy measures it, against a clock of
//! the fleet's own (the latest heartbeat among the nodes read), so a fleet
//! whose events stopped arriving is not all stale.

use serde_json::{json, Map, Value};
use tollgate_decision::rfc3339_ms;

/// The measures of a node's heartbeat rows, as SQL select items (grouped
/// by tenant and node, or by window): what [`node_json`] reads.
pub const NODE_MEASURES: &str = "min(region) AS region, sum(events) AS heartbeats, \
    CAST(max(last_event_time) AS BIGINT) AS last_ms, sum(duration_ms_sum) AS latency_sum, \
    max(duration_ms_max) AS max_latency_ms, min(uptime_ratio_min) AS min_uptime_ratio, \
    coalesce(sum(failed_proofs), 0) AS failed_proofs";

/// The node-reliability policy's thresholds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    pub stale_after_secs: f64,
    pub latency_spike_ms: f64,
    pub uptime_target: f64,
    pub stale_penalty: f64,
    pub latency_penalty: f64,
    pub uptime_penalty: f64,
    /// Absent from policies written before it: 0.
    pub proof_penalty: f64,
    pub min_score: f64,
}

impl Thresholds {
    /// From the policies' effective parameters (`PolicyEngine::params_json`);
    /// `None` when node-reliability is disabled or lacks a threshold.
    pub fn from_params(params: &Map<String, Value>) -> Option<Thresholds> {
        let p = params.get("node-reliability")?.as_object()?;
        let n = |k: &str| p.get(k).and_then(Value::as_f64);
        Some(Thresholds {
            stale_after_secs: n("stale_after_secs")?,
            latency_spike_ms: n("latency_spike_ms")?,
            uptime_target: n("uptime_target")?,
            stale_penalty: n("stale_penalty")?,
            latency_penalty: n("latency_penalty")?,
            uptime_penalty: n("uptime_penalty")?,
            proof_penalty: n("proof_penalty").unwrap_or(0.0),
            min_score: n("min_score")?,
        })
    }

    /// The score and its penalties for one node (or one window of it).
    pub fn score(&self, o: &Observed) -> Value {
        let penalty = |bad: bool, points: f64| if bad { points } else { 0.0 };
        let stale = penalty(o.seconds_silent > self.stale_after_secs, self.stale_penalty);
        let latency = penalty(
            o.max_latency.is_some_and(|l| l > self.latency_spike_ms),
            self.latency_penalty,
        );
        let uptime = penalty(
            o.min_uptime.is_some_and(|u| u < self.uptime_target),
            self.uptime_penalty,
        );
        let proof = penalty(o.failed_proofs > 0, self.proof_penalty);
        let score = 100.0 - stale - latency - uptime - proof;
        json!({
            "reliability_score": score,
            "healthy": score >= self.min_score,
            "stale": stale > 0.0,
            "penalties": {"stale": stale, "latency": latency, "uptime": uptime, "proof": proof},
        })
    }
}

/// What a node's heartbeats showed (over a range, or in one window).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Observed {
    pub seconds_silent: f64,
    pub max_latency: Option<f64>,
    pub min_uptime: Option<f64>,
    pub failed_proofs: i64,
}

impl Observed {
    /// From a row of [`NODE_MEASURES`], silent `seconds_silent` behind the clock.
    pub fn of(r: &Map<String, Value>, seconds_silent: f64) -> Observed {
        Observed {
            seconds_silent,
            max_latency: r.get("max_latency_ms").and_then(Value::as_f64),
            min_uptime: r.get("min_uptime_ratio").and_then(Value::as_f64),
            failed_proofs: r.get("failed_proofs").and_then(Value::as_i64).unwrap_or(0),
        }
    }

    pub fn insert_into(&self, o: &mut Map<String, Value>) {
        o.insert("seconds_silent".into(), json!(self.seconds_silent));
        o.insert("max_latency_ms".into(), json!(self.max_latency));
        o.insert("min_uptime_ratio".into(), json!(self.min_uptime));
        o.insert("failed_proofs".into(), json!(self.failed_proofs));
    }
}

/// The fleet's clock: the latest heartbeat among `nodes` (rows of
/// [`NODE_MEASURES`]), `fallback` when there is none.
pub fn clock(nodes: &[Map<String, Value>], fallback: i64) -> i64 {
    nodes
        .iter()
        .filter_map(|r| r.get("last_ms").and_then(Value::as_i64))
        .max()
        .unwrap_or(fallback)
}

/// One node's row of the registry: tenant, node, region, heartbeats, last
/// heartbeat, silence (behind `clock_ms`, and behind the wall clock
/// `now_ms`), latency, uptime, failed proofs, and with thresholds its score.
pub fn node_json(
    r: &Map<String, Value>,
    clock_ms: i64,
    now_ms: i64,
    t: Option<Thresholds>,
) -> Value {
    let last = r.get("last_ms").and_then(Value::as_i64).unwrap_or(0);
    let heartbeats = r.get("heartbeats").and_then(Value::as_i64).unwrap_or(0);
    let latency_sum = r.get("latency_sum").and_then(Value::as_f64).unwrap_or(0.0);
    let seen = Observed::of(r, (clock_ms - last).max(0) as f64 / 1000.0);
    let mut o = Map::new();
    for k in ["tenant", "node_id", "region"] {
        o.insert(k.into(), r.get(k).cloned().unwrap_or(Value::Null));
    }
    o.insert("heartbeats".into(), json!(heartbeats));
    o.insert("last_heartbeat".into(), json!(rfc3339_ms(last)));
    o.insert(
        "seconds_since_heartbeat".into(),
        json!((now_ms - last).max(0) as f64 / 1000.0),
    );
    o.insert(
        "avg_latency_ms".into(),
        json!((heartbeats > 0).then(|| latency_sum / heartbeats as f64)),
    );
    seen.insert_into(&mut o);
    if let Some(t) = t {
        if let Value::Object(score) = t.score(&seen) {
            o.extend(score);
        }
    }
    Value::Object(o)
}

/// Riskiest first: lowest score, then longest silence.
pub fn rank_riskiest(nodes: &mut [Value]) {
    let f = |v: &Value, k: &str| v.get(k).and_then(Value::as_f64).unwrap_or(0.0);
    nodes.sort_by(|a, b| {
        f(a, "reliability_score")
            .total_cmp(&f(b, "reliability_score"))
            .then(f(b, "seconds_silent").total_cmp(&f(a, "seconds_silent")))
    });
}
