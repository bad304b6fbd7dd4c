//! `tollgate run`: the pipeline, its API, its signals.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tollgate_config::Config;
use tollgate_pipeline::RunOptions;
use tollgate_telemetry::Telemetry;
use tracing::{error, info, warn};

use crate::runtime_with;

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

pub(crate) fn run(
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
        .block_on(tollgate_pipeline::DecisionStage::open(&cfg, key))
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
        hup,
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
    // then the gate rules ([gates]); see `reload.rs`.
    rt.spawn(crate::reload::on_sighup(
        hup,
        cfg.clone(),
        config_path.to_path_buf(),
        decisions.clone(),
        api.clone(),
        telemetry.clone(),
    ));
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
    let outcome = crate::supervisor::supervise(
        &mut cfg,
        &rt,
        &opts,
        &telemetry,
        &decisions,
        serve_http,
        if exit_when_idle {
            broker_wait
        } else {
            Duration::MAX
        },
    )?;
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
    decisions: &tollgate_pipeline::DecisionStage,
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
    let params = decisions.engine().params_json();
    let gates = cfg
        .load_gate_engine(params.clone())
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
        decisions.committer.clone(),
        gates,
        params,
        Some(decisions.publisher.clone()),
        decisions.output.rollups.clone(),
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
