//! `tollgate`: the pipeline, the load generator and the rollup summary.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use tollgate_config::Config;
use tollgate_pipeline::{RunOptions, RunOutcome};
use tollgate_telemetry::Telemetry;
use tracing::{error, info, warn};

#[derive(Parser)]
#[command(
    name = "tollgate",
    version,
    about = "FinOps and carbon telemetry pipeline with policy gates"
)]
struct Cli {
    /// Log format: text or json (also TOLLGATE_LOG_FORMAT). Levels via RUST_LOG.
    #[arg(
        long,
        env = "TOLLGATE_LOG_FORMAT",
        default_value = "text",
        global = true
    )]
    log_format: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
struct ConfigArg {
    /// Pipeline config file.
    #[arg(
        long,
        short,
        env = "TOLLGATE_CONFIG",
        default_value = "pipelines/default.toml"
    )]
    config: PathBuf,
}

#[derive(Args, Clone)]
struct Common {
    #[command(flatten)]
    config: ConfigArg,
    /// Kafka bootstrap servers (overrides the config and KAFKA_BROKERS).
    #[arg(long)]
    brokers: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the pipeline: consume, enrich, window, write rollups.
    Run {
        #[command(flatten)]
        common: Common,
        /// Consumer group (overrides the config).
        #[arg(long)]
        group: Option<String>,
        #[arg(long)]
        rollup_dir: Option<PathBuf>,
        #[arg(long)]
        late_dir: Option<PathBuf>,
        /// Decision log directory (overrides decisions.log_dir).
        #[arg(long)]
        decision_log_dir: Option<PathBuf>,
        /// Seconds without messages after which a partition closes its windows.
        #[arg(long)]
        idle_timeout_secs: Option<f64>,
        /// Exit once every assigned partition is read to its end and written.
        #[arg(long)]
        exit_when_idle: bool,
        /// With --exit-when-idle: give up if the broker is unreachable this long.
        #[arg(long, default_value_t = 120)]
        broker_wait_secs: u64,
        /// HTTP API address, host:port ("" = no API; overrides http.listen
        /// and TOLLGATE_HTTP_LISTEN).
        #[arg(long)]
        http_listen: Option<String>,
    },
    /// Produce synthetic events (inference, training, heartbeat).
    Produce {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 10_000)]
        count: u64,
        /// Events per second; 0 = as fast as the broker takes them.
        #[arg(long, default_value_t = 0)]
        rate: u64,
        #[arg(long, default_value_t = 8)]
        teams: u32,
        #[arg(long, default_value_t = 4)]
        models: u32,
        #[arg(long, default_value_t = 2)]
        tenants: u32,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Event time span covered by the events, ending now.
        #[arg(long, default_value_t = 600)]
        span_secs: u64,
        /// Share of events re-sent as duplicates (0..1).
        #[arg(long, default_value_t = 0.0)]
        duplicates: f64,
    },
    /// Check every signature and the hash chain of a decision log. Keys come
    /// from SAVE_HMAC_SECRET[_FILE] (+ SAVE_HMAC_KEY_ID) and
    /// TOLLGATE_VERIFY_KEYS_FILE. Exits non-zero naming the first bad record.
    Verify {
        /// The decision log directory.
        #[arg(default_value = "data/decisions")]
        log_dir: PathBuf,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Policies: run their fixtures.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Gate rules: judge inputs offline, with the engine the API uses.
    Gate {
        #[command(subcommand)]
        command: GateCommand,
    },
    /// Print spend, tokens and carbon by team from the rollup files.
    Summary {
        #[arg(long, default_value = "data/rollups")]
        rollup_dir: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum GateCommand {
    /// Read Rego inputs as NDJSON on stdin (each the whole `input`,
    /// `context` included) and print, per line, the gate's outcome and each
    /// gate package's rules: `{"allow", "violations", "packages": {name:
    /// value of data.<name>}}`. With --data, print `data.tollgate` instead.
    Eval {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long)]
        data: bool,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Load every policy and run the fixtures in <dir>/tests/ (like `opa test`).
    Test {
        /// For the policy directory and the region table.
        #[command(flatten)]
        config: ConfigArg,
        /// Policy directory (default: the config's policies.dir).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,rdkafka=warn".into());
    let builder = tracing_subscriber::fmt()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn load(common: &Common) -> Result<Config> {
    let mut cfg = Config::load(&common.config.config)?;
    if let Some(b) = &common.brokers {
        cfg.kafka.brokers = b.clone();
    }
    cfg.validate()?;
    Ok(cfg)
}

fn main() -> std::process::ExitCode {
    tollgate_gate::quiet_library_backtraces();
    let cli = Cli::parse();
    init_logging(&cli.log_format);
    let result = match cli.command {
        Command::Run {
            common,
            group,
            rollup_dir,
            late_dir,
            decision_log_dir,
            idle_timeout_secs,
            exit_when_idle,
            broker_wait_secs,
            http_listen,
        } => (|| {
            let mut cfg = load(&common)?;
            if let Some(g) = group {
                cfg.kafka.group_id = g;
            }
            if let Some(d) = rollup_dir {
                cfg.output.rollup_dir = d;
            }
            if let Some(d) = late_dir {
                cfg.output.late_dir = d;
            }
            if let Some(d) = decision_log_dir {
                cfg.decisions.log_dir = d;
            }
            if let Some(t) = idle_timeout_secs {
                cfg.window.idle_timeout_secs = t;
            }
            if let Some(l) = http_listen {
                cfg.http.listen = l;
            }
            cfg.validate()?;
            run(
                cfg,
                &common.config.config,
                exit_when_idle,
                Duration::from_secs(broker_wait_secs),
            )
        })(),
        Command::Produce {
            common,
            count,
            rate,
            teams,
            models,
            tenants,
            seed,
            span_secs,
            duplicates,
        } => (|| {
            let cfg = load(&common)?;
            if !(0.0..1.0).contains(&duplicates) {
                bail!("--duplicates must be in [0, 1)");
            }
            let span_ms = (span_secs as i64) * 1000;
            let now = chrono::Utc::now().timestamp_millis();
            let spec = tollgate_loadgen::LoadSpec {
                count,
                teams: teams.max(1),
                models,
                tenants: tenants.max(1),
                seed,
                start_ms: now - span_ms,
                span_ms,
                duplicate_ratio: duplicates,
                ..Default::default()
            };
            produce(cfg, spec, rate)
        })(),
        Command::Summary { rollup_dir, json } => summary(&rollup_dir, json),
        Command::Verify { log_dir, json } => verify(&log_dir, json),
        Command::Policy {
            command: PolicyCommand::Test { config, dir },
        } => policy_test(&config.config, dir),
        Command::Gate {
            command: GateCommand::Eval { config, data },
        } => gate_eval(&config.config, data),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            error!("{e:#}");
            eprintln!("tollgate: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    runtime_with(1)
}

fn runtime_with(threads: usize) -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .context("start async runtime")
}

/// The signals `tollgate run` answers: SIGINT and SIGTERM stop it
/// gracefully, SIGHUP reloads policies and gate rules.
struct Signals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    /// Registers the handlers now (inside a runtime context), so that from
    /// this call on none of these signals takes its default action.
    fn install() -> Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Self {
            interrupt: signal(SignalKind::interrupt()).context("install the SIGINT handler")?,
            terminate: signal(SignalKind::terminate()).context("install the SIGTERM handler")?,
            hup: signal(SignalKind::hangup()).context("install the SIGHUP handler")?,
        })
    }
}

fn run(
    mut cfg: Config,
    config_path: &std::path::Path,
    exit_when_idle: bool,
    broker_wait: Duration,
) -> Result<()> {
    // Fail closed: no signing key, no pipeline.
    let ring = tollgate_config::keys::from_process_env(true)?;
    let key = ring
        .signing()
        .cloned()
        .context("no signing key configured")?;
    let serve_http = !cfg.http.listen.trim().is_empty();
    // The API gets both cores' worth of async workers; the pipeline runs on
    // its own threads.
    let rt = runtime_with(if serve_http { 2 } else { 1 })?;
    // Signal handlers go in before anything reports readiness: a SIGHUP sent
    // on seeing "signing decisions" must reach the reload, not the default
    // action (which ends the process).
    let signals = {
        let _in_runtime = rt.enter();
        Signals::install()?
    };
    let decisions = rt
        .block_on(tollgate_pipeline::Decisions::open(&cfg, key))
        .context("cannot start the decision stage")?;
    let live = tollgate_telemetry::live::Live::new(if serve_http {
        Duration::from_millis(cfg.http.live_refresh_ms.max(1))
    } else {
        Duration::ZERO
    });
    let telemetry = Arc::new(Telemetry::new(live, cfg.http.metrics_series_cap));
    let registry = prometheus::Registry::new();
    telemetry
        .register(&registry)
        .context("register pipeline metrics")?;
    let api = if serve_http {
        Some(start_api(&rt, &cfg, &decisions, &telemetry, registry)?)
    } else {
        None
    };
    let opts = RunOptions {
        exit_when_idle,
        ..RunOptions::default()
    };
    let stop = opts.stop.clone();
    let Signals {
        mut interrupt,
        mut terminate,
        mut hup,
    } = signals;
    rt.spawn(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
        info!("shutdown requested");
        stop.store(true, Ordering::Relaxed);
    });
    // SIGHUP: reload the policy files and the config's [policies] section,
    // then the gate rules ([gates]). Anything broken is reported and the
    // running set stays in force.
    {
        let decisions = decisions.clone();
        let api = api.clone();
        let (cfg, path) = (cfg.clone(), config_path.to_path_buf());
        rt.spawn(async move {
            while hup.recv().await.is_some() {
                let mut next = cfg.clone();
                match Config::load(&path) {
                    Ok(c) => next.policies = c.policies,
                    Err(e) => {
                        error!(error = %e, "policy reload failed: cannot read the config; the running policies stay in force");
                        continue;
                    }
                }
                match decisions.reload(&next).await {
                    Ok(n) => info!(policies = n, "policies reloaded"),
                    Err(e) => {
                        error!(error = %e, "policy reload failed; the running policies stay in force");
                        continue;
                    }
                }
                if let Some(state) = &api {
                    match Config::load(&path) {
                        Ok(c) => next.gates = c.gates,
                        Err(e) => {
                            error!(error = %e, "gate reload failed: cannot read the config");
                            continue;
                        }
                    }
                    let params = tollgate_http::policy_params(&decisions.engine());
                    match tollgate_http::load_gate_engine(&next, params) {
                        Ok(g) => {
                            info!(revision = g.revision(), "gate rules reloaded");
                            state.gates.replace(g);
                        }
                        Err(e) => error!(error = %e, "gate reload failed; the running gate rules stay in force"),
                    }
                }
            }
        });
    }
    let reporter = {
        let telemetry = telemetry.clone();
        rt.spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(5));
            every.tick().await;
            loop {
                every.tick().await;
                log_counters("progress", &telemetry);
            }
        })
    };
    let started = Instant::now();
    let mut backoff = Duration::from_millis(500);
    let mut restarts = 0u32;
    let base_instance = cfg.kafka.instance_id.clone();
    let outcome = loop {
        if opts.stop.load(Ordering::Relaxed) {
            break RunOutcome::Stopped;
        }
        let max_wait = if exit_when_idle {
            broker_wait
        } else {
            Duration::MAX
        };
        if serve_http {
            // The live month totals start from the files already written.
            match tollgate_telemetry::live::Ledger::from_rollups(&cfg.output.rollup_dir) {
                Ok(l) => {
                    info!(
                        teams = l.teams(),
                        "live month totals seeded from the rollups"
                    );
                    telemetry.live.set_seed(l)
                }
                Err(e) => {
                    error!(error = %e, "cannot read this month's rollups; the gate answers 503 until they can be read");
                    telemetry.live.seed_failed();
                }
            }
        }
        let attempt = (|| {
            tollgate_kafka::wait_for_broker(&cfg, max_wait)?;
            if cfg.kafka.create_topics {
                rt.block_on(tollgate_kafka::ensure_topics(&cfg))?;
            }
            tollgate_pipeline::run_pipeline(&cfg, &opts, &telemetry, &decisions)
        })();
        match attempt {
            Ok(o) => break o,
            // Nothing a restart changes: the operator has to act.
            Err(
                e @ (tollgate_pipeline::PipelineError::Broker(
                    tollgate_kafka::BrokerError::Unreachable { .. },
                )
                | tollgate_pipeline::PipelineError::CommittedBeyondLog { .. }),
            ) => return Err(e.into()),
            Err(e @ tollgate_pipeline::PipelineError::Unassigned(_)) => {
                // The coordinator keeps this static member stuck without
                // partitions (tansu 0.6 after a broker restart): come back
                // as a new static member; the stuck one expires.
                restarts += 1;
                // A dynamic member (no instance id, or "") stays dynamic.
                cfg.kafka.instance_id = base_instance
                    .as_ref()
                    .filter(|b| !b.is_empty())
                    .map(|b| format!("{b}-r{restarts}"));
                warn!(error = %e, instance = ?cfg.kafka.instance_id, "rejoining the consumer group with a new client");
            }
            Err(e) => {
                warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "pipeline stopped with an error; restarting from the committed offsets");
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    };
    reporter.abort();
    let s = telemetry.stats.snapshot();
    let secs = started.elapsed().as_secs_f64();
    log_counters("pipeline finished", &telemetry);
    info!(
        ?outcome,
        seconds = secs,
        events_per_second = s.consumed as f64 / secs.max(1e-9),
        peak_rss_bytes = peak_rss_bytes().unwrap_or(0),
        "pipeline finished"
    );
    Ok(())
}

/// Load the gate rules, bind the listener and serve the API on `rt`.
fn start_api(
    rt: &tokio::runtime::Runtime,
    cfg: &Config,
    decisions: &tollgate_pipeline::Decisions,
    telemetry: &Arc<Telemetry>,
    registry: prometheus::Registry,
) -> Result<Arc<tollgate_http::AppState>> {
    let auth = tollgate_http::Auth::from_env(|k| std::env::var(k).ok())
        .context("HTTP API authentication")?;
    if let tollgate_http::Auth::Static(tokens) = &auth {
        if tokens.is_empty() {
            warn!("AUTH_MODE=static and no AUTH_TOKENS_JSON/AUTH_TOKENS_FILE: every protected route answers 401 (set AUTH_MODE=none for an open local API)");
        }
    }
    let params = tollgate_http::policy_params(&decisions.engine());
    let gates = tollgate_http::load_gate_engine(cfg, params)
        .with_context(|| format!("cannot load the gate rules in {}", cfg.gates.dir.display()))?;
    info!(
        revision = gates.revision(),
        modules = gates.modules().len(),
        "gate rules loaded"
    );
    let state = tollgate_http::AppState::new(
        cfg.clone(),
        auth,
        telemetry.clone(),
        registry,
        decisions.log.clone(),
        gates,
        Some(tollgate_kafka::DecisionPublisher::new(cfg)?),
    )?;
    let listener = rt
        .block_on(tokio::net::TcpListener::bind(cfg.http.listen.trim()))
        .with_context(|| format!("cannot listen on {}", cfg.http.listen))?;
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    info!(addr = %addr, auth = state.auth.mode(), "HTTP API listening");
    let router = tollgate_http::router(state.clone());
    let limits = tollgate_http::ServeLimits::from_config(&cfg.http);
    rt.spawn(async move {
        if let Err(e) = tollgate_http::serve(listener, router, std::future::pending(), limits).await
        {
            error!(error = %e, "HTTP API stopped");
        }
    });
    Ok(state)
}

fn log_counters(what: &str, t: &Telemetry) {
    let s = t.stats.snapshot();
    let e = t.events.totals();
    info!(
        consumed = s.consumed,
        accepted = e.accepted,
        duplicates = e.duplicates,
        late = e.late,
        dead_lettered = e.dead_lettered,
        replay_skipped = e.replay_skipped,
        windows_written = s.windows_written,
        rows_written = s.rows_written,
        bytes_written = s.bytes_written,
        commits = s.commits,
        write_seconds = s.write_micros as f64 / 1e6,
        commit_seconds = s.commit_micros as f64 / 1e6,
        empty_polls = s.empty_polls,
        decisions = s.decisions,
        decisions_replayed = s.decisions_replayed,
        policy_errors = s.policy_errors,
        decide_seconds = s.decide_micros as f64 / 1e6,
        "{what}"
    );
}

/// Peak resident set size of this process (Linux `VmHWM`).
fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn produce(cfg: Config, spec: tollgate_loadgen::LoadSpec, rate: u64) -> Result<()> {
    tollgate_kafka::wait_for_broker(&cfg, Duration::from_secs(120))?;
    if cfg.kafka.create_topics {
        runtime()?.block_on(tollgate_kafka::ensure_topics(&cfg))?;
    }
    let total = spec.count;
    let started = Instant::now();
    let sent = tollgate_loadgen::produce(&cfg, spec, rate, |n| {
        let secs = started.elapsed().as_secs_f64().max(1e-9);
        eprintln!("produced {n}/{total} ({:.0} events/s)", n as f64 / secs);
    })?;
    info!(
        sent,
        seconds = started.elapsed().as_secs_f64(),
        "produce finished"
    );
    Ok(())
}

fn summary(root: &std::path::Path, json: bool) -> Result<()> {
    let s = tollgate_rollup::read_summary(root)
        .with_context(|| format!("reading rollups under {}", root.display()))?;
    if json {
        let teams: serde_json::Map<String, serde_json::Value> = s
            .by_team
            .iter()
            .map(|(team, t)| (team.clone(), serde_json::json!({"events": t.events, "input_tokens": t.input_tokens, "output_tokens": t.output_tokens, "cost_usd": t.cost_usd, "energy_wh": t.energy_wh, "carbon_g": t.carbon_g, "gpu_hours": t.gpu_hours})))
            .collect();
        let t = &s.total;
        println!(
            "{}",
            serde_json::json!({"files": s.files, "by_team": teams, "total": {"events": t.events, "input_tokens": t.input_tokens, "output_tokens": t.output_tokens, "cost_usd": t.cost_usd, "energy_wh": t.energy_wh, "carbon_g": t.carbon_g, "gpu_hours": t.gpu_hours}})
        );
        return Ok(());
    }
    if s.files == 0 {
        println!("no rollup files under {} yet", root.display());
        return Ok(());
    }
    println!("{} rollup files under {}\n", s.files, root.display());
    println!(
        "{:<16} {:>10} {:>14} {:>14} {:>12} {:>14}",
        "team", "events", "input tokens", "output tokens", "spend USD", "carbon g CO2e"
    );
    let row = |name: &str, t: &tollgate_rollup::TeamTotals| {
        println!(
            "{:<16} {:>10} {:>14} {:>14} {:>12.4} {:>14.3}",
            name, t.events, t.input_tokens, t.output_tokens, t.cost_usd, t.carbon_g
        );
    };
    for (team, t) in &s.by_team {
        row(team, t);
    }
    row("TOTAL", &s.total);
    Ok(())
}

fn verify(dir: &std::path::Path, json: bool) -> Result<()> {
    let ring = tollgate_config::keys::from_process_env(false)?;
    if ring.key_ids().next().is_none() {
        bail!("no verification keys: set SAVE_HMAC_SECRET (or SAVE_HMAC_SECRET_FILE) and/or TOLLGATE_VERIFY_KEYS_FILE");
    }
    let report = tollgate_decision_log::verify_dir(dir, &ring)?;
    if json {
        let bad = report.first_bad.as_ref().map(|b| {
            serde_json::json!({
                "segment": b.segment.display().to_string(),
                "line": b.line,
                "record": b.record,
                "decision_id": b.decision_id,
                "reason": b.reason,
            })
        });
        println!(
            "{}",
            serde_json::json!({
                "ok": report.first_bad.is_none(),
                "records": report.records,
                "segments": report.segments,
                "last_hash": report.last_hash,
                "first_bad": bad,
            })
        );
    }
    match &report.first_bad {
        None => {
            if !json {
                println!(
                    "OK: {} decision(s) in {} segment(s); every signature and chain link verifies; last hash {}",
                    report.records, report.segments, report.last_hash
                );
            }
            Ok(())
        }
        Some(bad) => bail!(
            "verification failed at {bad} ({} record(s) before it verified)",
            report.records
        ),
    }
}

fn gate_eval(config: &std::path::Path, print_data: bool) -> Result<()> {
    use std::io::{BufRead, Write};
    let cfg = Config::load(config)?;
    let engine = runtime()?.block_on(tollgate_policy::PolicyEngine::load(
        tollgate_policy::EngineOptions {
            dir: cfg.policies.dir.clone(),
            params: cfg.policies.params.clone(),
            disabled: cfg.policies.disabled.clone(),
            file_schema: tollgate_rollup::schema(),
            history: None,
            regions: cfg.region_intensities(),
        },
    ))?;
    let params = tollgate_http::policy_params(&engine);
    let mut out = std::io::stdout().lock();
    if print_data {
        let data = tollgate_http::gate_data(&cfg, params);
        writeln!(out, "{data}")?;
        return Ok(());
    }
    let gates = tollgate_http::load_gate_engine(&cfg, params)
        .with_context(|| format!("cannot load the gate rules in {}", cfg.gates.dir.display()))?;
    for (n, line) in std::io::stdin().lock().lines().enumerate() {
        let line = line.context("read stdin")?;
        if line.trim().is_empty() {
            continue;
        }
        let input: serde_json::Value =
            serde_json::from_str(&line).with_context(|| format!("line {}: not JSON", n + 1))?;
        let outcome = gates.evaluate(&input);
        let mut packages = serde_json::Map::new();
        for p in gates.packages() {
            let path: Vec<&str> = p.name.split('.').collect();
            let v = match gates.data(&path, Some(&input)) {
                Ok(v) => v.unwrap_or(serde_json::Value::Null),
                Err(e) => serde_json::json!({"error": e.to_string()}),
            };
            packages.insert(p.name.clone(), v);
        }
        let line = serde_json::json!({
            "allow": outcome.allow,
            "violations": outcome.violations,
            "packages": packages,
        });
        writeln!(out, "{line}")?;
    }
    Ok(())
}

fn policy_test(config: &std::path::Path, dir: Option<PathBuf>) -> Result<()> {
    let cfg = Config::load(config)?;
    let dir = dir.unwrap_or_else(|| cfg.policies.dir.clone());
    let regions = cfg.region_intensities();
    let results = runtime()?.block_on(tollgate_policy::fixture::run_dir(
        &dir,
        tollgate_rollup::schema(),
        regions,
    ))?;
    let mut failed = 0;
    for r in &results {
        let verdict = if r.passed() { "PASS" } else { "FAIL" };
        println!("{verdict}: {}: {} ({})", r.policy, r.case, r.file.display());
        for f in &r.failures {
            println!("    {f}");
        }
        failed += usize::from(!r.passed());
    }
    println!("{}", "-".repeat(40));
    println!("PASS: {}/{}", results.len() - failed, results.len());
    if failed > 0 {
        bail!("{failed} policy test(s) failed");
    }
    Ok(())
}
