//! Pipeline configuration: `pipelines/*.toml` plus environment overrides.
//!
//! Precedence: command-line flags (applied by the binary) > environment
//! (`KAFKA_BROKERS`, the pricing defaults of `tollgate-enrich`) > file > built-in defaults.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

mod gates;
pub mod keys;

pub use gates::GateLoadError;

use serde::Deserialize;
use tollgate_enrich::{Defaults, EnrichConfigError, PriceBook};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config: {0}")]
    Invalid(String),
    #[error(transparent)]
    Enrich(#[from] EnrichConfigError),
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// Bootstrap servers; `KAFKA_BROKERS` overrides.
    pub brokers: String,
    pub group_id: String,
    /// Static group membership (`group.instance.id`, KIP-345): a restarted
    /// worker with the same id takes its partitions back at once instead of
    /// waiting out a rebalance. Must be unique per running worker; empty turns
    /// it off. Default `tollgate-<hostname>`; `TOLLGATE_INSTANCE_ID` overrides.
    pub instance_id: Option<String>,
    /// Upper bound on how long the broker may hold a fetch. Brokers such as
    /// tansu answer slowly with librdkafka's 500 ms default; keep it low.
    pub fetch_wait_max_ms: u32,
    /// How long librdkafka pauses fetching a partition whose local queue is
    /// full. Its default (1000 ms) leaves a consumer that is slower than the
    /// broker idle for most of each second; keep it low.
    pub fetch_queue_backoff_ms: u32,
    pub session_timeout_ms: u32,
    /// Partitions for topics that tollgate creates itself.
    pub partitions: i32,
    pub replication_factor: i32,
    /// Create missing topics at start.
    pub create_topics: bool,
    /// With no partition assigned for this long, leave and rejoin the group
    /// (self-healing against coordinators that never finish a rebalance, as
    /// tansu 0.6 sometimes does). 0 turns it off; turn it off when running
    /// more workers than partitions on purpose.
    pub rejoin_when_unassigned_secs: u64,
    /// How often librdkafka reports statistics (consumer lag, broker state
    /// for `/metrics` and `/readyz`); 0 turns them off.
    pub statistics_interval_ms: u64,
    /// Extra librdkafka properties for every client (security.protocol,
    /// sasl.*, ssl.*, debug, ...). Applied after tollgate's own settings.
    pub client: std::collections::BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: "127.0.0.1:9092".into(),
            group_id: "tollgate".into(),
            instance_id: None,
            fetch_wait_max_ms: 10,
            fetch_queue_backoff_ms: 10,
            session_timeout_ms: 10_000,
            partitions: 3,
            replication_factor: 1,
            create_topics: true,
            rejoin_when_unassigned_secs: 30,
            statistics_interval_ms: 5000,
            client: Default::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Topics {
    pub inference: String,
    pub training: String,
    pub heartbeat: String,
    pub dlq: String,
    /// Every decision, keyed by `decision_id`.
    pub decisions: String,
    /// Compacted: each partition's team spend (month to date and open
    /// windows), keyed by `tenant/team/topic/partition`, read by every
    /// instance's gate (`[spend]`).
    pub spend: String,
}

impl Default for Topics {
    fn default() -> Self {
        Topics {
            inference: "tollgate.inference".into(),
            training: "tollgate.training".into(),
            heartbeat: "tollgate.heartbeat".into(),
            dlq: "tollgate.dlq".into(),
            decisions: "tollgate.decisions".into(),
            spend: "tollgate.spend".into(),
        }
    }
}

impl Topics {
    /// The event topics with the kind each carries.
    pub fn sources(&self) -> [(&str, tollgate_event::Kind); 3] {
        use tollgate_event::Kind;
        [
            (&self.inference, Kind::Inference),
            (&self.training, Kind::Training),
            (&self.heartbeat, Kind::Heartbeat),
        ]
    }

    /// Every topic tollgate reads or writes.
    pub fn all(&self) -> [&String; 6] {
        [
            &self.inference,
            &self.training,
            &self.heartbeat,
            &self.dlq,
            &self.decisions,
            &self.spend,
        ]
    }

    pub fn kind_of(&self, topic: &str) -> Option<tollgate_event::Kind> {
        self.sources()
            .into_iter()
            .find(|(t, _)| *t == topic)
            .map(|(_, k)| k)
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WindowConfig {
    pub size_secs: u64,
    pub allowed_lateness_secs: u64,
    /// A partition with no new message for this long closes its open windows.
    pub idle_timeout_secs: f64,
    /// An event dated more than this far ahead of the wall clock goes to the
    /// dead-letter topic and never moves the watermark (one event of year
    /// 9999, or a `ts` in microseconds, would make every later event of
    /// its partition late). Allow for the producers' clock skew.
    pub max_future_secs: u64,
}

impl WindowConfig {
    /// `max_future_secs` in milliseconds, for `tollgate_event::check_not_ahead`.
    pub fn max_future_ms(&self) -> i64 {
        i64::try_from(self.max_future_secs.saturating_mul(1000)).unwrap_or(i64::MAX)
    }
}

impl Default for WindowConfig {
    fn default() -> Self {
        WindowConfig {
            size_secs: 60,
            allowed_lateness_secs: 5,
            idle_timeout_secs: 30.0,
            max_future_secs: 300,
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct OutputConfig {
    pub rollup_dir: PathBuf,
    pub late_dir: PathBuf,
    /// How often offsets are committed (also after every window close).
    pub commit_interval_ms: u64,
}

impl Default for OutputConfig {
    fn default() -> Self {
        OutputConfig {
            rollup_dir: "data/rollups".into(),
            late_dir: "data/late".into(),
            commit_interval_ms: 1_000,
        }
    }
}

/// `[policies]`: which policy files run when a window closes.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PoliciesConfig {
    /// Directory of policy files (one `*.toml` per policy).
    pub dir: PathBuf,
    /// Policy names (file stems) not to run.
    pub disabled: Vec<String>,
    /// Threshold overrides: `[policies.params.<policy>] name = value`.
    pub params: BTreeMap<String, BTreeMap<String, toml::Value>>,
}

impl Default for PoliciesConfig {
    fn default() -> Self {
        PoliciesConfig {
            dir: "pipelines/policies".into(),
            disabled: Vec::new(),
            params: BTreeMap::new(),
        }
    }
}

/// `[decisions]`: the decision log.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DecisionsConfig {
    pub log_dir: PathBuf,
    pub max_segment_bytes: u64,
    /// A log per instance, `<log_dir>/<instance id>/`, for instances that
    /// share one volume: a log has one writing process (its directory is
    /// locked while open), so instances sharing `log_dir` need this.
    /// `tollgate verify <log_dir>` checks every instance's log.
    pub per_instance: bool,
}

impl Default for DecisionsConfig {
    fn default() -> Self {
        DecisionsConfig {
            log_dir: "data/decisions".into(),
            max_segment_bytes: 64 << 20,
            per_instance: false,
        }
    }
}

/// `[gates]`: the release gate's Rego rules and their own thresholds.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct GatesConfig {
    /// Directory of Rego modules (`*.rego`).
    pub dir: PathBuf,
    /// The packages whose rules judge a release: `tollgate.gate`
    /// (`violations` of `{rule, message}`) and any OPA-style package
    /// (`deny` messages, optional `allow`), e.g. `finops`. Each must be
    /// declared by a module in `dir`.
    pub packages: Vec<String>,
    /// A Rego built-in given the wrong type aborts the evaluation and the
    /// gate denies with the reason (fail closed, the default). `false`:
    /// OPA's default, the expression is undefined and the rule does not fire.
    pub strict_builtin_errors: bool,
    /// `data.tollgate.params.gates`; the window policies' effective
    /// parameters are beside it under their policy names.
    pub params: BTreeMap<String, toml::Value>,
}

impl Default for GatesConfig {
    fn default() -> Self {
        GatesConfig {
            dir: "pipelines/gates".into(),
            packages: vec!["tollgate.gate".into()],
            strict_builtin_errors: true,
            params: BTreeMap::new(),
        }
    }
}

/// `[spend]`: one gate answer across workers and instances. Each worker
/// publishes its partitions' team spend to `topics.spend` every
/// `publish_interval_ms`; every instance reads the whole topic and its gate
/// answers from the sum.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SpendConfig {
    /// 0: no shared spend; the gate answers from the spend this process saw.
    pub publish_interval_ms: u64,
}

impl Default for SpendConfig {
    fn default() -> Self {
        SpendConfig {
            publish_interval_ms: 1000,
        }
    }
}

impl SpendConfig {
    pub fn enabled(&self) -> bool {
        self.publish_interval_ms > 0
    }
}

/// `[http]`: the API served by `tollgate run`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// `host:port`; empty: no HTTP API. Env `TOLLGATE_HTTP_LISTEN`.
    pub listen: String,
    /// Largest request body (env `MAX_BODY_BYTES`); larger: 413.
    pub max_body_bytes: usize,
    /// Whole-request deadline; slower: 408.
    pub request_timeout_ms: u64,
    /// Requests served at once; more are shed with 503.
    pub max_concurrency: usize,
    /// `/readyz` fails while the summed consumer lag is above this.
    pub ready_max_lag: i64,
    /// How often the consumer publishes live window state for the API.
    pub live_refresh_ms: u64,
    /// Most rows `POST /v1/query` returns.
    pub max_query_rows: usize,
    /// Deadline of one `POST /v1/query`.
    pub query_timeout_ms: u64,
    /// Memory all API queries together may use for sorts, joins and
    /// aggregates (one pool shared by every request and tenant).
    pub query_memory_bytes: usize,
    /// Queries run at once; more are refused with 503.
    pub max_queries: usize,
    /// Threads that run API queries (apart from the gate's and health's).
    pub query_threads: usize,
    /// Most bytes one call of `repeat`, `lpad` or `rpad` may build.
    pub query_string_bytes: usize,
    /// A connection that has not sent a request's headers within this is
    /// closed (slow clients cannot hold connections open).
    pub header_read_timeout_ms: u64,
    /// Connections served at once; more wait in the listen backlog, so the
    /// API never takes the file descriptors the pipeline needs.
    pub max_connections: usize,
    /// Most records one `GET /v1/decisions` page returns.
    pub max_page: usize,
    /// Most (tenant, team, model) label sets of the business counters.
    pub metrics_series_cap: usize,
    /// How long HTTP ingest waits for the broker to acknowledge.
    pub ingest_timeout_ms: u64,
    /// The tenant of requests that name none when `AUTH_MODE=none` (a
    /// token's tenant always wins). Env `TOLLGATE_DEFAULT_TENANT`.
    pub default_tenant: String,
    /// How many `Idempotency-Key`s of HTTP ingest each process remembers
    /// (with the event time and id they were first given), for
    /// `idempotency_ttl_secs`.
    pub idempotency_keys: usize,
    pub idempotency_ttl_secs: u64,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: "127.0.0.1:8080".into(),
            max_body_bytes: 1 << 20,
            request_timeout_ms: 10_000,
            max_concurrency: 1024,
            ready_max_lag: 100_000,
            live_refresh_ms: 1000,
            max_query_rows: 10_000,
            query_timeout_ms: 5_000,
            query_memory_bytes: 256 << 20,
            max_queries: 4,
            query_threads: 1,
            query_string_bytes: 16 << 20,
            header_read_timeout_ms: 5_000,
            max_connections: 512,
            max_page: 1000,
            metrics_series_cap: 1000,
            ingest_timeout_ms: 5_000,
            default_tenant: "default".into(),
            idempotency_keys: 100_000,
            idempotency_ttl_secs: 86_400,
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    pub max_message_bytes: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_message_bytes: tollgate_event::DEFAULT_MAX_MESSAGE_BYTES,
        }
    }
}

/// `[pipeline]`: how the process runs the pipeline.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineConfig {
    /// Consumers of the group in this process, each with its own partitions,
    /// windows and writer thread (sharing the decision log's writer, the
    /// decisions producer, the policies and the API). 0 (the default): one
    /// per core. `TOLLGATE_WORKERS` overrides.
    pub workers: usize,
}

/// Workers a process runs at most.
pub const MAX_WORKERS: usize = 64;

#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub kafka: KafkaConfig,
    pub pipeline: PipelineConfig,
    pub topics: Topics,
    pub window: WindowConfig,
    pub output: OutputConfig,
    pub limits: LimitsConfig,
    pub pricing: PriceBook,
    pub policies: PoliciesConfig,
    pub decisions: DecisionsConfig,
    pub gates: GatesConfig,
    pub spend: SpendConfig,
    pub http: HttpConfig,
    /// Filled from the environment, not the file.
    #[serde(skip)]
    pub defaults: Defaults,
    /// This machine's name (`HOSTNAME`, else `local`), from the environment.
    #[serde(skip)]
    pub host: String,
}

impl Config {
    /// This process's decision log: `decisions.log_dir`, or with
    /// `decisions.per_instance` its subdirectory named after the instance
    /// id (with dynamic membership, `instance_id = ""`: `tollgate-<host>`;
    /// characters other than letters, digits, `.`, `_` and `-` become `_`).
    pub fn decision_log_dir(&self) -> PathBuf {
        if !self.decisions.per_instance {
            return self.decisions.log_dir.clone();
        }
        let dynamic = format!("tollgate-{}", self.host);
        let id = self
            .kafka
            .instance_id
            .as_deref()
            .filter(|id| !id.is_empty())
            .unwrap_or(&dynamic);
        let name: String = id
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let name = if name.starts_with('.') {
            format!("_{name}")
        } else {
            name
        };
        self.decisions.log_dir.join(name)
    }

    /// How many workers to run: `pipeline.workers`, or one per core.
    pub fn workers(&self) -> usize {
        match self.pipeline.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
        .min(MAX_WORKERS)
    }

    /// The group member id of worker `worker` (static membership): the
    /// configured `kafka.instance_id` for worker 0, `<id>-w<k>` for the
    /// others; `None` (dynamic membership) stays `None`.
    pub fn worker_instance_id(&self, worker: usize) -> Option<String> {
        let id = self
            .kafka
            .instance_id
            .as_deref()
            .filter(|id| !id.is_empty())?;
        Some(match worker {
            0 => id.to_owned(),
            k => format!("{id}-w{k}"),
        })
    }

    /// The price book's grid intensities, `(region, g CO2e/kWh)`, as the
    /// policies' `regions` table and the gate rules read them.
    pub fn region_intensities(&self) -> Vec<(String, f64)> {
        self.pricing
            .regions
            .iter()
            .map(|r| (r.region.clone(), r.carbon_intensity_g_per_kwh))
            .collect()
    }

    /// Parse a config file's text; `env` is the environment lookup.
    pub fn from_toml(
        text: &str,
        origin: &Path,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let mut c: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_path_buf(),
            message: e.to_string(),
        })?;
        if let Some(b) = env("KAFKA_BROKERS").filter(|b| !b.trim().is_empty()) {
            c.kafka.brokers = b;
        }
        if let Some(dir) = env("TOLLGATE_POLICIES_DIR").filter(|d| !d.is_empty()) {
            c.policies.dir = dir.into();
        }
        if let Some(dir) = env("TOLLGATE_GATES_DIR").filter(|d| !d.is_empty()) {
            c.gates.dir = dir.into();
        }
        if let Some(listen) = env("TOLLGATE_HTTP_LISTEN") {
            c.http.listen = listen;
        }
        if let Some(v) = env("MAX_BODY_BYTES").filter(|v| !v.trim().is_empty()) {
            c.http.max_body_bytes = v.trim().parse().map_err(|_| {
                ConfigError::Invalid(format!(
                    "MAX_BODY_BYTES must be a number of bytes, got {v:?}"
                ))
            })?;
        }
        if let Some(v) = env("TOLLGATE_WORKERS").filter(|v| !v.trim().is_empty()) {
            c.pipeline.workers = v.trim().parse().map_err(|_| {
                ConfigError::Invalid(format!(
                    "TOLLGATE_WORKERS must be a number (0: one per core), got {v:?}"
                ))
            })?;
        }
        // The Flask control planes' node-health settings, as overrides of
        // the node-reliability policy's thresholds.
        for (var, param, scale) in [
            ("AI_STALE_HEARTBEAT_MINUTES", "stale_after_secs", 60.0),
            ("AI_TARGET_LATENCY_MS", "latency_spike_ms", 1.0),
        ] {
            let Some(v) = env(var).filter(|v| !v.trim().is_empty()) else {
                continue;
            };
            let n: f64 = v
                .trim()
                .parse()
                .ok()
                .filter(|n: &f64| n.is_finite() && *n > 0.0)
                .ok_or_else(|| {
                    ConfigError::Invalid(format!("{var} must be a positive number, got {v:?}"))
                })?;
            c.policies
                .params
                .entry("node-reliability".into())
                .or_default()
                .insert(param.into(), toml::Value::Float(n * scale));
        }
        if let Some(id) = env("TOLLGATE_INSTANCE_ID") {
            c.kafka.instance_id = Some(id);
        }
        if let Some(t) = env("TOLLGATE_DEFAULT_TENANT").filter(|t| !t.is_empty()) {
            c.http.default_tenant = t;
        }
        c.host = env("HOSTNAME")
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "local".into());
        if c.kafka.instance_id.is_none() {
            c.kafka.instance_id = Some(format!("tollgate-{}", c.host));
        }
        c.defaults = Defaults::from_lookup(&env)?;
        c.validate()?;
        Ok(c)
    }

    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml(&text, path, |k| std::env::var(k).ok())
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.pipeline.workers > MAX_WORKERS {
            return bad(format!(
                "pipeline.workers must be at most {MAX_WORKERS} (0: one per core), got {}",
                self.pipeline.workers
            ));
        }
        if self.window.size_secs == 0 {
            return bad("window.size_secs must be at least 1".into());
        }
        if !(self.window.idle_timeout_secs.is_finite() && self.window.idle_timeout_secs > 0.0) {
            return bad("window.idle_timeout_secs must be a positive number".into());
        }
        let names = self.topics.all();
        for (i, a) in names.iter().enumerate() {
            if a.is_empty() {
                return bad("topic names must not be empty".into());
            }
            if names[i + 1..].contains(a) {
                return bad(format!(
                    "topic `{a}` is configured twice; every kind, the DLQ and the decisions need their own topic"
                ));
            }
        }
        if self.kafka.brokers.trim().is_empty() {
            return bad("kafka.brokers is empty (set it in the config or KAFKA_BROKERS)".into());
        }
        if self.decisions.max_segment_bytes < 4096 {
            return bad("decisions.max_segment_bytes must be at least 4096".into());
        }
        if self.kafka.partitions < 1 {
            return bad("kafka.partitions must be at least 1".into());
        }
        let h = &self.http;
        tollgate_event::check_name(&h.default_tenant)
            .map_err(|why| ConfigError::Invalid(format!("http.default_tenant {why}")))?;
        for (name, v) in [
            ("http.max_body_bytes", h.max_body_bytes),
            ("http.max_concurrency", h.max_concurrency),
            ("http.max_query_rows", h.max_query_rows),
            ("http.max_page", h.max_page),
            ("http.request_timeout_ms", h.request_timeout_ms as usize),
            ("http.query_timeout_ms", h.query_timeout_ms as usize),
            ("http.max_queries", h.max_queries),
            ("http.query_threads", h.query_threads),
            ("http.query_string_bytes", h.query_string_bytes),
            (
                "http.header_read_timeout_ms",
                h.header_read_timeout_ms as usize,
            ),
            ("http.max_connections", h.max_connections),
            ("http.ingest_timeout_ms", h.ingest_timeout_ms as usize),
            ("http.idempotency_keys", h.idempotency_keys),
            ("http.idempotency_ttl_secs", h.idempotency_ttl_secs as usize),
        ] {
            if v == 0 {
                return bad(format!("{name} must be at least 1"));
            }
        }
        // Surfaces price book errors at load, with the entry named.
        tollgate_enrich::Enricher::new(self.pricing.clone(), self.defaults.clone())?;
        Ok(())
    }

    pub fn window_spec(&self) -> tollgate_window::WindowSpec {
        tollgate_window::WindowSpec {
            size_ms: (self.window.size_secs as i64).saturating_mul(1000),
            lateness_ms: (self.window.allowed_lateness_secs as i64).saturating_mul(1000),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_log_per_instance_is_named_after_the_instance() {
        let mut cfg = Config::default();
        cfg.decisions.log_dir = "d".into();
        cfg.kafka.instance_id = Some("tollgate-pod/0".into());
        assert_eq!(cfg.decision_log_dir(), std::path::Path::new("d"));
        cfg.decisions.per_instance = true;
        assert_eq!(
            cfg.decision_log_dir(),
            std::path::Path::new("d/tollgate-pod_0")
        );
        cfg.kafka.instance_id = Some("..".into());
        assert_eq!(cfg.decision_log_dir(), std::path::Path::new("d/_.."));
        cfg.kafka.instance_id = Some(String::new());
        cfg.host = "node-7".into();
        assert_eq!(
            cfg.decision_log_dir(),
            std::path::Path::new("d/tollgate-node-7")
        );
    }

    fn none(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn shipped_default_config_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../pipelines/default.toml");
        let text = std::fs::read_to_string(&path).expect("pipelines/default.toml");
        let c = Config::from_toml(&text, &path, none).expect("valid");
        assert!(!c.pricing.models.is_empty());
        assert_eq!(
            c.topics.kind_of("tollgate.training"),
            Some(tollgate_event::Kind::Training)
        );
        assert_eq!(c.kafka.fetch_wait_max_ms, 10);
    }

    #[test]
    fn the_flask_node_health_settings_set_the_node_policy() {
        let env = |k: &str| match k {
            "AI_STALE_HEARTBEAT_MINUTES" => Some("2".to_string()),
            "AI_TARGET_LATENCY_MS" => Some("250".to_string()),
            _ => None,
        };
        let c = Config::from_toml(
            "[policies.params.node-reliability]\nstale_after_secs = 30\nmin_score = 70\n",
            Path::new("x.toml"),
            env,
        )
        .expect("valid");
        let p = &c.policies.params["node-reliability"];
        assert_eq!(p["stale_after_secs"], toml::Value::Float(120.0));
        assert_eq!(p["latency_spike_ms"], toml::Value::Float(250.0));
        assert_eq!(p["min_score"], toml::Value::Integer(70));
        let bad = |k: &str| (k == "AI_STALE_HEARTBEAT_MINUTES").then(|| "soon".to_string());
        let e = Config::from_toml("", Path::new("x.toml"), bad).expect_err("refused");
        assert!(e.to_string().contains("AI_STALE_HEARTBEAT_MINUTES"), "{e}");
    }

    #[test]
    fn env_overrides_brokers_and_defaults() {
        let env = |k: &str| match k {
            "KAFKA_BROKERS" => Some("k1:9092,k2:9092".to_string()),
            "COST_PER_1K_INPUT_TOKENS" => Some("0.5".to_string()),
            "TOLLGATE_POLICIES_DIR" => Some("/etc/tollgate/policies".to_string()),
            "TOLLGATE_GATES_DIR" => Some("/etc/tollgate/gates".to_string()),
            _ => None,
        };
        let c = Config::from_toml("", Path::new("x.toml"), env).expect("valid");
        assert_eq!(c.kafka.brokers, "k1:9092,k2:9092");
        assert_eq!(c.policies.dir, Path::new("/etc/tollgate/policies"));
        assert_eq!(c.gates.dir, Path::new("/etc/tollgate/gates"));
        assert_eq!(c.defaults.cost_per_1k_input_tokens, 0.5);
    }

    #[test]
    fn errors_name_the_file_and_the_problem() {
        let e = Config::from_toml("[window]\nsize = 3\n", Path::new("p.toml"), none).unwrap_err();
        assert!(
            e.to_string().starts_with("config p.toml:") && e.to_string().contains("size"),
            "{e}"
        );
        let e = Config::from_toml(
            "[topics]\ntraining = \"tollgate.inference\"\n",
            Path::new("p.toml"),
            none,
        )
        .unwrap_err();
        assert!(e.to_string().contains("configured twice"), "{e}");
        let e =
            Config::from_toml("[window]\nsize_secs = 0\n", Path::new("p.toml"), none).unwrap_err();
        assert!(e.to_string().contains("size_secs"), "{e}");
    }
}
