//! `tollgate`: the pipeline, the load generator and the rollup summary.
//! One file per command; `supervisor.rs` (the restart loop) and `reload.rs`
//! (SIGHUP) are the parts of `run` that live on their own.

mod export;
mod gate_eval;
mod policy_test;
mod pricing;
mod produce;
mod reload;
mod report;
mod run;
mod spend_reader;
mod summary;
mod supervisor;
mod verify;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use tollgate_config::Config;
use tracing::error;

use gate_eval::gate_eval;
use policy_test::policy_test;
use produce::produce;
use run::run;
use summary::summary;
use verify::verify;

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
pub(crate) struct ConfigArg {
    /// Pipeline config file.
    #[arg(
        long,
        short,
        env = "TOLLGATE_CONFIG",
        default_value = "pipelines/default.toml"
    )]
    pub(crate) config: PathBuf,
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
        /// Consumers of the group in this process (overrides pipeline.workers
        /// and TOLLGATE_WORKERS; 0 = one per core).
        #[arg(long)]
        workers: Option<usize>,
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
        /// A directory, or s3://bucket/prefix (credentials and endpoint
        /// from the AWS_* environment).
        #[arg(long, default_value = "data/rollups")]
        rollup_dir: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// The price book.
    Pricing {
        #[command(subcommand)]
        command: PricingCommand,
    },
    /// Export the rollups for finance tools.
    Export {
        #[command(subcommand)]
        command: ExportCommand,
    },
    /// One billing period's report: spend, tokens, carbon and unit cost by
    /// team and model, budget status, the most severe decisions and the
    /// riskiest nodes (Markdown, HTML with inline SVG charts, or JSON).
    Report(report::ReportArgs),
}

#[derive(Subcommand)]
enum PricingCommand {
    /// Validate the config's price book; with --model, print the entry
    /// that prices it on --date (default today, UTC).
    Check {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long)]
        model: Option<String>,
        /// YYYY-MM-DD.
        #[arg(long)]
        date: Option<String>,
    },
}

#[derive(Subcommand)]
enum ExportCommand {
    /// A FinOps FOCUS 1.2 cost-and-usage dataset of one UTC month
    /// (schemas/focus.md).
    Focus {
        /// The billing period, YYYY-MM.
        #[arg(long)]
        period: String,
        /// Where to write it: `.csv` is CSV, anything else Parquet.
        #[arg(long)]
        out: PathBuf,
        /// A directory, or s3://bucket/prefix.
        #[arg(long, default_value = "data/rollups")]
        rollup_dir: PathBuf,
        /// Only this tenant's charges (default: every tenant's).
        #[arg(long)]
        tenant: Option<String>,
        /// Charge periods of an `hour` or a `day`.
        #[arg(long, default_value = "hour")]
        granularity: String,
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
            workers,
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
            if let Some(n) = workers {
                cfg.pipeline.workers = n;
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
        Command::Pricing {
            command:
                PricingCommand::Check {
                    config,
                    model,
                    date,
                },
        } => pricing::pricing_check(&config.config, model.as_deref(), date.as_deref()),
        Command::Export {
            command:
                ExportCommand::Focus {
                    period,
                    out,
                    rollup_dir,
                    tenant,
                    granularity,
                },
        } => export::focus(&rollup_dir, &period, &out, tenant.as_deref(), &granularity),
        Command::Report(args) => report::report(args),
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

pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    runtime_with(1)
}

pub(crate) fn runtime_with(threads: usize) -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .context("start async runtime")
}
