//! Synthetic load: deterministic events for the quick start and benchmarks.

use std::time::{Duration, Instant};

use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use tollgate_config::Config;
use tollgate_event::Kind;

use tollgate_kafka::{client_config, kafka, send_when_queued, BrokerError};

const MODELS: [&str; 8] = [
    "gpt-4o",
    "gpt-4o-mini",
    "claude-3-5-sonnet",
    "llama-3.1-70b-instruct",
    "mistral-large",
    "gpt-4o-2024-08-06",
    "claude-3-7-sonnet",
    "phi-4",
];
const REGIONS: [&str; 5] = [
    "us-east-1",
    "us-west-2",
    "eu-west-1",
    "eu-north-1",
    "ap-southeast-1",
];
const GPUS: [&str; 3] = ["h100", "a100", "l4"];
const ENVS: [&str; 3] = ["prod", "staging", "dev"];

/// What to generate.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    pub count: u64,
    pub teams: u32,
    pub models: u32,
    pub tenants: u32,
    pub seed: u64,
    /// Event time of the first event (epoch ms).
    pub start_ms: i64,
    /// Event time advances evenly over this span.
    pub span_ms: i64,
    /// Share of events sent again with the same `event_id` (0..1).
    pub duplicate_ratio: f64,
    /// Share of training events (0..1).
    pub other_kinds_ratio: f64,
    /// Nodes sending heartbeats, each every `heartbeat_every_ms` of event
    /// time, spread evenly over the interval (0 nodes: no heartbeats).
    /// The last node is the flaky one: one heartbeat in five reports an
    /// uptime dip, so the node-reliability policy has something to say.
    pub nodes: u32,
    pub heartbeat_every_ms: i64,
}

impl Default for LoadSpec {
    fn default() -> Self {
        LoadSpec {
            count: 10_000,
            teams: 8,
            models: 4,
            tenants: 2,
            seed: 1,
            start_ms: 0,
            span_ms: 600_000,
            duplicate_ratio: 0.0,
            other_kinds_ratio: 0.05,
            nodes: 16,
            heartbeat_every_ms: 10_000,
        }
    }
}

/// splitmix64: small, fast and good enough for synthetic data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// One generated message.
pub struct Generated {
    pub kind: Kind,
    pub key: String,
    pub payload: String,
}

/// Deterministic event stream for a [`LoadSpec`].
pub struct Generator {
    spec: LoadSpec,
    rng: Rng,
    i: u64,
    /// Last event, re-sent as a duplicate.
    last: Option<Generated>,
    /// Heartbeats sent so far.
    beats: u64,
}

impl Generator {
    pub fn new(spec: LoadSpec) -> Self {
        let rng = Rng(spec.seed);
        Generator {
            spec,
            rng,
            i: 0,
            last: None,
            beats: 0,
        }
    }
}

impl Iterator for Generator {
    type Item = Generated;

    fn next(&mut self) -> Option<Generated> {
        if self.i >= self.spec.count {
            return None;
        }
        self.i += 1;
        if self.rng.unit() < self.spec.duplicate_ratio {
            if let Some(last) = &self.last {
                return Some(Generated {
                    kind: last.kind,
                    key: last.key.clone(),
                    payload: last.payload.clone(),
                });
            }
        }
        let s = &self.spec;
        let r = &mut self.rng;
        let n = self.i;
        let ts = s.start_ms + (s.span_ms as i128 * (n - 1) as i128 / s.count.max(1) as i128) as i64;
        if s.nodes > 0 && s.heartbeat_every_ms > 0 {
            let nodes = u64::from(s.nodes);
            let node = self.beats % nodes;
            let at = s.start_ms
                + (self.beats / nodes) as i64 * s.heartbeat_every_ms
                + (node as i64 * s.heartbeat_every_ms) / nodes as i64;
            if at <= ts {
                self.beats += 1;
                let flaky = node == nodes - 1 && r.below(5) == 0;
                let tenant = node % u64::from(s.tenants.max(1));
                let payload = format!(
                    r#"{{"event_id":"hb-{}-{n}","ts":{at},"tenant":"tenant-{tenant}","region":"{}","node_id":"node-{node}","latency_ms":{:.1},"uptime_ratio":{:.4},"proof_ok":true}}"#,
                    s.seed,
                    REGIONS[(node % REGIONS.len() as u64) as usize],
                    5.0 + 200.0 * r.unit(),
                    if flaky {
                        0.9 + 0.09 * r.unit()
                    } else {
                        0.995 + 0.005 * r.unit()
                    }
                );
                // Keyed by node: a node's heartbeats stay on one partition.
                let g = Generated {
                    kind: Kind::Heartbeat,
                    key: format!("tenant-{tenant}/node-{node}"),
                    payload,
                };
                self.last = Some(Generated {
                    kind: g.kind,
                    key: g.key.clone(),
                    payload: g.payload.clone(),
                });
                return Some(g);
            }
        }
        let team = r.below(s.teams as u64);
        let tenant = team % s.tenants.max(1) as u64;
        let env = ENVS[r.below(ENVS.len() as u64) as usize];
        let region = REGIONS[r.below(REGIONS.len() as u64) as usize];
        let model = MODELS[r.below(s.models.clamp(1, MODELS.len() as u32) as u64) as usize];
        let roll = r.unit();
        let common = format!(
            r#""event_id":"ev-{}-{n}","ts":{ts},"tenant":"tenant-{tenant}","tags":{{"team":"team-{team}","environment":"{env}","project":"project-{}"}},"region":"{region}""#,
            s.seed,
            team / 4
        );
        let (kind, body) = if roll < s.other_kinds_ratio {
            let gpu = GPUS[r.below(GPUS.len() as u64) as usize];
            let body = format!(
                r#""model":"{model}","gpu_type":"{gpu}","gpu_count":{},"duration_hours":{:.3},"gpu_utilization":{:.2}"#,
                1 + r.below(8),
                0.05 + r.unit(),
                0.3 + 0.7 * r.unit()
            );
            (Kind::Training, body)
        } else {
            let input = 50 + r.below(4000);
            let cached = if r.below(4) == 0 { r.below(input) } else { 0 };
            let body = format!(
                r#""model":"{model}","input_tokens":{input},"cached_input_tokens":{cached},"output_tokens":{},"duration_ms":{:.1}"#,
                10 + r.below(1500),
                50.0 + 3000.0 * r.unit()
            );
            (Kind::Inference, body)
        };
        let g = Generated {
            kind,
            key: format!("tenant-{tenant}/team-{team}"),
            payload: format!("{{{common},{body}}}"),
        };
        self.last = Some(Generated {
            kind,
            key: g.key.clone(),
            payload: g.payload.clone(),
        });
        Some(g)
    }
}

/// Produce a generated stream to the configured topics with an idempotent
/// producer keyed by tenant/team. `rate` = 0 means as fast as possible.
/// `progress` is called about once a second with the number sent.
pub fn produce(
    cfg: &Config,
    spec: LoadSpec,
    rate: u64,
    mut progress: impl FnMut(u64),
) -> Result<u64, BrokerError> {
    let mut pc = client_config(cfg);
    pc.set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "20")
        .set("batch.size", "1000000")
        .set("queue.buffering.max.messages", "500000")
        .set("message.timeout.ms", "120000");
    let producer: ThreadedProducer<_> = pc.create().map_err(kafka("create producer"))?;
    let topic = |k: Kind| match k {
        Kind::Inference => cfg.topics.inference.as_str(),
        Kind::Training => cfg.topics.training.as_str(),
        Kind::Heartbeat => cfg.topics.heartbeat.as_str(),
    };
    let started = Instant::now();
    let mut last_report = Instant::now();
    let mut sent = 0u64;
    for g in Generator::new(spec) {
        if rate > 0 {
            let due = started + Duration::from_secs_f64(sent as f64 / rate as f64);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        let record = BaseRecord::<str, str>::to(topic(g.kind))
            .key(&g.key)
            .payload(&g.payload);
        send_when_queued(&producer, record).map_err(kafka("produce"))?;
        sent += 1;
        if last_report.elapsed() >= Duration::from_secs(1) {
            last_report = Instant::now();
            progress(sent);
        }
    }
    producer
        .flush(Duration::from_secs(120))
        .map_err(kafka("flush producer"))?;
    progress(sent);
    Ok(sent)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use tollgate_event::{decode, Limits};

    #[test]
    fn generated_events_are_valid_deterministic_and_spread_over_the_span() {
        let spec = LoadSpec {
            count: 2_000,
            duplicate_ratio: 0.1,
            start_ms: 1_000_000,
            span_ms: 600_000,
            ..LoadSpec::default()
        };
        let a: Vec<Generated> = Generator::new(spec.clone()).collect();
        let b: Vec<Generated> = Generator::new(spec).collect();
        assert_eq!(a.len(), 2_000);
        let mut kinds = std::collections::HashMap::new();
        let mut ids = std::collections::HashSet::new();
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(x.payload, y.payload);
            let e = decode(x.payload.as_bytes(), x.kind, &Limits::default()).expect("valid");
            assert!((1_000_000..1_600_000).contains(&e.ts_ms));
            *kinds.entry(x.kind).or_insert(0) += 1;
            ids.insert(e.event_id.to_string());
        }
        assert_eq!(kinds.len(), 3, "all kinds appear");
        assert!(
            ids.len() < 1_950 && ids.len() > 1_700,
            "about 10% duplicates: {} unique",
            ids.len()
        );
    }

    #[test]
    fn every_node_beats_on_its_cadence_keyed_by_node() {
        let spec = LoadSpec {
            count: 20_000,
            start_ms: 0,
            span_ms: 600_000,
            nodes: 8,
            heartbeat_every_ms: 10_000,
            ..LoadSpec::default()
        };
        let mut beats: std::collections::BTreeMap<String, Vec<i64>> = Default::default();
        let mut last_ts = i64::MIN;
        for g in Generator::new(spec) {
            let e = decode(g.payload.as_bytes(), g.kind, &Limits::default()).expect("valid");
            assert!(e.ts_ms >= last_ts, "in event-time order");
            last_ts = e.ts_ms;
            if g.kind == Kind::Heartbeat {
                let node = e.node_id.as_deref().expect("a node").to_string();
                assert!(g.key.ends_with(&format!("/{node}")), "{}", g.key);
                beats.entry(node).or_default().push(e.ts_ms);
            }
        }
        assert_eq!(beats.len(), 8);
        for (node, ts) in &beats {
            assert!(ts.len() >= 59, "{node}: {}", ts.len());
            assert!(
                ts.windows(2).all(|w| w[1] - w[0] == 10_000),
                "{node}: {ts:?}"
            );
        }
    }
}
