//! End-to-end harness against a running broker (release mode):
//!
//! 1. produce `--count` synthetic events over `--teams` teams to fresh topics
//!    (in a child process);
//! 2. baseline: a raw rdkafka consumer that does nothing with the messages
//!    reads all of them (new group, in a child process), events/s;
//! 3. the consumer thread's floor: the same messages through the core alone
//!    (decode, enrich, windows; closed windows dropped), events/s;
//! 4. the pipeline (same consumer settings, new group) reads the same topics
//!    until every rollup is written, events/s, and its peak RSS;
//! 5. prints the ratio pipeline ÷ raw consume, and CPU-seconds per million
//!    events.
//!
//! `--producer batched` writes the events as a fleet's client libraries do
//! (`benches/batched/produce.py`), `--teams 12` as well as 10,000.
//!
//! `scripts/bench-e2e.sh` starts the broker and runs this.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::Message;
use tollgate_config::Config;
use tollgate_pipeline::RunOptions;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "127.0.0.1:9092")]
    brokers: String,
    #[arg(long, default_value_t = 1_000_000)]
    count: u64,
    #[arg(long, default_value_t = 10_000)]
    teams: u32,
    /// Pipeline workers (consumers of the group in the pipeline's process,
    /// `pipeline.workers`).
    #[arg(long, default_value_t = 1)]
    workers: usize,
    #[arg(long, default_value = "pipelines/default.toml")]
    config: PathBuf,
    /// Where rollups go (emptied first).
    #[arg(long, default_value = "target/bench-e2e")]
    out: PathBuf,
    /// Also run the Python pipeline of the same rollup
    /// (`benches/python_pipeline/rollup.py`: confluent-kafka + json +
    /// pyarrow) on the same topics, as a baseline.
    #[arg(long)]
    python: bool,
    /// Who writes the events: `loadgen` (Tollgate's generator, every kind,
    /// keyed by tenant/team) or `batched` (`benches/batched/produce.py`:
    /// confluent-kafka keyed by team, batching with `--linger-ms` and
    /// `--batch-messages`, inference events in event-time order with
    /// `--jitter-ms`; needs confluent-kafka).
    #[arg(long, value_enum, default_value_t = Producer::Loadgen)]
    producer: Producer,
    /// `--producer batched`: each event's time moved by up to ± this.
    #[arg(long, default_value_t = 2000)]
    jitter_ms: u64,
    /// `--producer batched`: librdkafka's `linger.ms`.
    #[arg(long, default_value_t = 20)]
    linger_ms: u64,
    /// `--producer batched`: librdkafka's `batch.num.messages`.
    #[arg(long, default_value_t = 10_000)]
    batch_messages: u64,
    /// Internal: run one phase in a child process and print its result on
    /// stdout, so that the pipeline's process holds none of its memory.
    #[arg(long, hide = true)]
    phase: Option<Phase>,
    /// Internal: the run whose topics a phase uses (the parent's process id).
    #[arg(long, hide = true)]
    run_id: Option<u32>,
    /// Internal (`raw-consume`, `core-consume`): messages to read.
    #[arg(long, hide = true, default_value_t = 0)]
    expect: u64,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Producer {
    Loadgen,
    Batched,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Phase {
    /// Produce the events, then the sentinels; prints both counts.
    Produce,
    /// Read `--expect` messages doing nothing with them; prints events/s.
    RawConsume,
    /// Read `--expect` messages through the pipeline's core on this one
    /// thread (decode, enrich, windows), closed windows dropped: no writer,
    /// no decisions, no commits; prints events/s.
    CoreConsume,
}

/// Run `phase` of this run in a child process (this binary, the same
/// arguments) and read the `N` numbers it prints: producing and the other
/// consumers leave memory behind that the allocator keeps (146 MiB,
/// measured), which in this process would count in the pipeline's peak RSS.
fn in_child<T: std::str::FromStr, const N: usize>(
    phase: &str,
    run_id: u32,
    extra: &[String],
) -> Result<[T; N]> {
    let exe = std::env::current_exe().context("this binary's path")?;
    let out = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .args(["--phase", phase, "--run-id", &run_id.to_string()])
        .args(extra)
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("start the {phase} phase"))?;
    if !out.status.success() {
        bail!("the {phase} phase failed: {}", out.status);
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let numbers: Option<Vec<T>> = text.split_whitespace().map(|w| w.parse().ok()).collect();
    numbers
        .and_then(|v| <[T; N]>::try_from(v).ok())
        .with_context(|| format!("the {phase} phase printed {text:?}, not {N} numbers"))
}

/// How often the harness looks at the pipeline's progress (the end time is
/// this precise), and how often it reads `/proc` for the resident set and
/// each thread's CPU. Both run on the machine's two cores next to the
/// pipeline: polling every millisecond and reading `/proc` every 50 ms
/// cost 0.5–0.65 s of CPU per run (measured), a tenth of the pipeline's.
/// The threads' CPU is complete anyway: the pipeline idles for seconds
/// after its last event (the sentinels' windows close on idle).
const POLL_EVERY: Duration = Duration::from_millis(5);
const SAMPLE_EVERY: Duration = Duration::from_millis(250);

/// Peak resident set size since the last reset.
fn vm_hwm_bytes() -> Option<u64> {
    status_bytes("VmHWM:")
}

/// A `/proc/self/status` size field (`VmHWM:`, `VmRSS:`), in bytes.
fn status_bytes(field: &str) -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: u64 = s
        .lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// CPU time (user + system, in clock ticks) of each live thread of this
/// process and the time it waited, runnable, for a core (nanoseconds), by
/// thread id: `(tid, name, ticks, run-queue wait)`.
fn thread_cpu_ticks() -> Vec<(u64, String, u64, u64)> {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    dir.filter_map(|e| {
        let e = e.ok()?;
        let tid: u64 = e.file_name().to_str()?.parse().ok()?;
        let (name, ticks, waited) = task_times(&e.path())?;
        Some((tid, name, ticks, waited))
    })
    .collect()
}

/// A thread's `(name, CPU ticks, run-queue wait in ns)` from its `/proc`
/// directory; the wait is 0 where the kernel keeps no `schedstat`.
fn task_times(dir: &std::path::Path) -> Option<(String, u64, u64)> {
    let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
    // `pid (comm) state ...`: comm may hold spaces, so split at the last ')'.
    let (head, rest) = stat.rsplit_once(')')?;
    let name = head.split_once('(')?.1.to_string();
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of stat (utime, stime) are 12 and 13 after the comm.
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    // `schedstat`: time on a core, time waiting for one, timeslices.
    let waited = std::fs::read_to_string(dir.join("schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0);
    Some((name, ticks, waited))
}

/// `name 1.23s, …`, the largest time first.
fn slowest_first(mut times: Vec<(String, f64)>) -> String {
    times.sort_by(|a, b| b.1.total_cmp(&a.1));
    let shown: Vec<String> = times.iter().map(|(n, t)| format!("{n} {t:.2}s")).collect();
    shown.join(", ")
}

fn raw_consume(cfg: &Config, total: u64) -> Result<f64> {
    let cc = tollgate_kafka::consumer_config(cfg, &format!("{}-raw", cfg.kafka.group_id));
    let consumer: BaseConsumer = cc.create()?;
    let topics: Vec<&str> = cfg.topics.sources().iter().map(|(t, _)| *t).collect();
    let started = Instant::now();
    consumer.subscribe(&topics)?;
    let mut n = 0u64;
    let mut bytes = 0usize;
    // Measured from the first message, so that group join time is not counted.
    let mut first = None;
    while n < total {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                first.get_or_insert_with(Instant::now);
                n += 1;
                bytes += m.payload().map_or(0, <[u8]>::len);
            }
            Some(Err(e)) => eprintln!("raw consume: {e}"),
            None => {
                if started.elapsed() > Duration::from_secs(600) {
                    bail!("raw consumer stalled at {n}/{total}");
                }
            }
        }
    }
    let secs = first.map_or(0.0, |t| t.elapsed().as_secs_f64());
    std::hint::black_box(bytes);
    Ok(total as f64 / secs)
}

/// Like [`raw_consume`], every message through the core as the worker runs
/// it, on this thread: decode, enrich, offer to its partition's windows;
/// windows that close are dropped. The consumer thread's floor. Returns
/// events/s and the share of that time the thread was on a core.
fn core_consume(cfg: &Config, total: u64) -> Result<(f64, f64)> {
    use tollgate_window::PartitionState;
    let cc = tollgate_kafka::consumer_config(cfg, &format!("{}-core", cfg.kafka.group_id));
    let consumer: BaseConsumer = cc.create()?;
    let sources = cfg.topics.sources();
    let topics: Vec<&str> = sources.iter().map(|(t, _)| *t).collect();
    let mut enricher = tollgate_enrich::Enricher::new(cfg.pricing.clone(), cfg.defaults.clone())?;
    let limits = tollgate_event::Limits {
        max_message_bytes: cfg.limits.max_message_bytes,
    };
    let mut parts: std::collections::HashMap<(usize, i32), PartitionState> = Default::default();
    let started = Instant::now();
    consumer.subscribe(&topics)?;
    let (mut n, mut accepted) = (0u64, 0u64);
    let mut first = None;
    let mut ticks_at_first = 0;
    while n < total {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                if first.is_none() {
                    first = Some(Instant::now());
                    ticks_at_first = own_cpu_ticks();
                }
                n += 1;
                let Some(t) = topics.iter().position(|t| *t == m.topic()) else {
                    continue;
                };
                let kind = sources[t].1;
                let Ok(e) = tollgate_event::decode(m.payload().unwrap_or_default(), kind, &limits)
                else {
                    continue;
                };
                let x = enricher.enrich(&e);
                let state = parts
                    .entry((t, m.partition()))
                    .or_insert_with(|| PartitionState::new(cfg.window_spec(), kind));
                if matches!(
                    state.offer(m.offset(), &e, &x),
                    tollgate_window::Offer::Accepted
                ) {
                    accepted += 1;
                }
                for w in state.drain_closed() {
                    state.written(w.first_offset);
                }
            }
            Some(Err(e)) => eprintln!("core consume: {e}"),
            None => {
                if started.elapsed() > Duration::from_secs(600) {
                    bail!("core consumer stalled at {n}/{total}");
                }
            }
        }
    }
    let secs = first.map_or(0.0, |t| t.elapsed().as_secs_f64());
    let on_core = own_cpu_ticks().saturating_sub(ticks_at_first) as f64 / 100.0 / secs;
    if accepted < total.saturating_sub(total / 100) {
        bail!("core consume accepted only {accepted} of {total} messages");
    }
    Ok((total as f64 / secs, on_core))
}

/// CPU time of the calling thread, in clock ticks (100 per second).
fn own_cpu_ticks() -> u64 {
    task_times(std::path::Path::new("/proc/thread-self")).map_or(0, |(_, ticks, _)| ticks)
}

/// One heartbeat at `ts_ms` to every partition of every event topic.
fn produce_sentinels(cfg: &Config, ts_ms: i64) -> Result<u64> {
    use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
    let producer: ThreadedProducer<_> = tollgate_kafka::client_config(cfg).create()?;
    let mut n = 0;
    for (topic, kind) in cfg.topics.sources() {
        for p in 0..cfg.kafka.partitions {
            let body = match kind {
                tollgate_event::Kind::Inference => {
                    r#""model":"sentinel","input_tokens":0,"output_tokens":0,"duration_ms":0"#
                }
                tollgate_event::Kind::Training => {
                    r#""model":"sentinel","gpu_type":"h100","gpu_count":1,"duration_hours":0"#
                }
                tollgate_event::Kind::Heartbeat => r#""node_id":"sentinel","region":"us-east-1""#,
            };
            let payload =
                format!(r#"{{"event_id":"sentinel-{p}","ts":{ts_ms},"tenant":"bench",{body}}}"#);
            producer
                .send(
                    BaseRecord::<str, str>::to(topic)
                        .partition(p)
                        .payload(&payload),
                )
                .map_err(|(e, _)| e)?;
            n += 1;
        }
    }
    producer.flush(Duration::from_secs(30))?;
    Ok(n)
}

/// `benches/batched/produce.py` to this run's inference topic (its events
/// span the same ten minutes as the load generator's): the events sent.
fn produce_batched(cfg: &Config, args: &Args) -> Result<u64> {
    let run = std::process::Command::new("python3")
        .arg("benches/batched/produce.py")
        .args(["--brokers", &cfg.kafka.brokers])
        .args(["--topic", &cfg.topics.inference])
        .args(["--count", &args.count.to_string()])
        .args(["--teams", &args.teams.to_string()])
        .args(["--jitter-ms", &args.jitter_ms.to_string()])
        .args(["--linger-ms", &args.linger_ms.to_string()])
        .args(["--batch-messages", &args.batch_messages.to_string()])
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("run python3 benches/batched/produce.py")?;
    if !run.status.success() {
        bail!("the batched producer failed: {}", run.status);
    }
    let text = String::from_utf8_lossy(&run.stdout);
    text.split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("the batched producer printed {text:?}"))
}

/// `benches/python_pipeline/rollup.py` on this run's topics: its
/// `[events/s, CPU-s, read, counted, files]`.
fn python_pipeline(cfg: &Config, args: &Args, sent: u64) -> Result<[f64; 5]> {
    let t = &cfg.topics;
    let out = args.out.join("python");
    let _ = std::fs::remove_dir_all(&out);
    let run = std::process::Command::new("python3")
        .arg("benches/python_pipeline/rollup.py")
        .args(["--brokers", &cfg.kafka.brokers])
        .args([
            "--topics",
            &format!("{},{},{}", t.inference, t.training, t.heartbeat),
        ])
        .arg("--config")
        .arg(&args.config)
        .args(["--expect", &sent.to_string()])
        .arg("--out")
        .arg(&out)
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("run python3 benches/python_pipeline/rollup.py")?;
    if !run.status.success() {
        bail!("the python pipeline failed: {}", run.status);
    }
    let text = String::from_utf8_lossy(&run.stdout);
    let nums: Vec<f64> = text
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()
        .with_context(|| format!("python pipeline output: {text}"))?;
    nums.try_into()
        .map_err(|_| anyhow::anyhow!("python pipeline output: {text}"))
}

fn main() -> Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let mut cfg = Config::load(&args.config)?;
    let uid = args.run_id.unwrap_or_else(std::process::id);
    cfg.kafka.brokers = args.brokers.clone();
    cfg.kafka.group_id = format!("bench-{uid}");
    let t = &mut cfg.topics;
    for (topic, kind) in [
        (&mut t.inference, "inference"),
        (&mut t.training, "training"),
        (&mut t.heartbeat, "heartbeat"),
        (&mut t.dlq, "dlq"),
        (&mut t.decisions, "decisions"),
        (&mut t.spend, "spend"),
    ] {
        *topic = format!("bench{uid}.{kind}");
    }
    // Every partition ends with a sentinel event an hour ahead, which closes
    // all of its windows by watermark; the sentinels' own windows close on idle.
    cfg.window.idle_timeout_secs = 3.0;
    cfg.output.rollup_dir = args.out.join("rollups");
    cfg.output.late_dir = args.out.join("late");
    cfg.decisions.log_dir = args.out.join("decisions");

    let spec_end_ms = 1_767_225_600_000 + 600_000;
    let spec = tollgate_loadgen::LoadSpec {
        count: args.count,
        teams: args.teams,
        models: 8,
        tenants: 16,
        seed: 11,
        start_ms: 1_767_225_600_000,
        span_ms: 600_000,
        duplicate_ratio: 0.0,
        other_kinds_ratio: 0.05,
        ..Default::default()
    };
    match args.phase {
        Some(Phase::Produce) => {
            let started = Instant::now();
            let sent = match args.producer {
                Producer::Loadgen => {
                    tollgate_loadgen::produce(&cfg, spec, 0, |n| eprint!("\rproduced {n}"))?
                }
                Producer::Batched => produce_batched(&cfg, &args)?,
            };
            eprintln!(
                "\nproduced {sent} events in {:.1}s",
                started.elapsed().as_secs_f64()
            );
            let sentinels = produce_sentinels(&cfg, spec_end_ms + 3_600_000)?;
            println!("{sent} {sentinels}");
            return Ok(());
        }
        Some(Phase::RawConsume) => {
            let raw = raw_consume(&cfg, args.expect).context("raw consume")?;
            println!("{raw}");
            return Ok(());
        }
        Some(Phase::CoreConsume) => {
            let (rate, on_core) = core_consume(&cfg, args.expect).context("core consume")?;
            println!("{rate} {on_core}");
            return Ok(());
        }
        None => {}
    }
    let _ = std::fs::remove_dir_all(&args.out);

    tollgate_kafka::wait_for_broker(&cfg, Duration::from_secs(30))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(tollgate_kafka::ensure_topics(&cfg))?;
    // The pipeline as deployed: every shipped policy, signed decisions.
    let key = tollgate_decision::Key::new("k-bench", "a-benchmark-secret-0123456789")?;
    let decisions = rt.block_on(tollgate_pipeline::DecisionStage::open(&cfg, key))?;

    let [generated, sentinels] = in_child::<u64, 2>("produce", uid, &[])?;
    let sent = generated + sentinels;
    let expect = ["--expect".to_string(), sent.to_string()];
    let [raw] = in_child::<f64, 1>("raw-consume", uid, &expect)?;
    eprintln!("raw consume: {raw:.0} events/s");
    let [core, core_on_cpu] = in_child::<f64, 2>("core-consume", uid, &expect)?;
    eprintln!("core consume: {core:.0} events/s");
    let python = if args.python {
        let p = python_pipeline(&cfg, &args, sent)?;
        eprintln!("python pipeline: {:.0} events/s, {:.2} CPU-s", p[0], p[1]);
        Some(p)
    } else {
        None
    };

    // Peak RSS of the pipeline alone: reset the high-water mark (Linux clear_refs 5).
    std::fs::write("/proc/self/clear_refs", "5").context("reset VmHWM")?;
    // What the process holds before the pipeline starts (the policies are
    // loaded; `tollgate run` holds them too): part of every peak below.
    let rss_at_start = status_bytes("VmRSS:").unwrap_or(0);
    // As `tollgate run` with its API on: live snapshots every second and the
    // business counters (`TOLLGATE_BENCH_LIVE=0`: without the live view, as
    // with the API off).
    let live_every = match std::env::var("TOLLGATE_BENCH_LIVE").as_deref() {
        Ok("0") => Duration::ZERO,
        _ => Duration::from_secs(1),
    };
    let telemetry = Arc::new(tollgate_telemetry::Telemetry::new(
        tollgate_telemetry::live::Live::new(live_every),
        cfg.http.metrics_series_cap,
    ));
    let opts = RunOptions {
        exit_when_idle: true,
        ..RunOptions::default()
    };
    let stop = opts.stop.clone();
    let started = Instant::now();
    let workers = args.workers.max(1);
    let worker = {
        let (cfg, telemetry, decisions) = (cfg.clone(), telemetry.clone(), decisions.clone());
        std::thread::Builder::new()
            .name("consumer".into())
            .spawn(move || {
                tollgate_pipeline::run_workers(&cfg, &opts, workers, &telemetry, &decisions)
            })
            .context("start the pipeline thread")?
    };
    // Time at which the last rollup file holding the generated events is in
    // place: the sentinels close every other window by watermark (their own
    // windows close later, on idle). Measured from the first message, like
    // the raw consumer.
    let (mut first_at, mut done_at) = (None, None);
    // When the consumer had read every message: what follows is the tail
    // (the last windows closing, then the writer emptying its queue).
    let mut read_all_at = None;
    // Threads end with the pipeline, so their CPU time is sampled while it runs.
    let baseline: std::collections::HashMap<u64, (u64, u64)> = thread_cpu_ticks()
        .into_iter()
        .map(|(tid, _, t, w)| (tid, (t, w)))
        .collect();
    let mut cpu: std::collections::HashMap<u64, (String, u64, u64)> = Default::default();
    let mut sampled = Instant::now();
    // Where the resident set peaked: (RSS, seconds, consumed, windows written).
    let mut rss_peak = (0u64, 0.0f64, 0u64, 0u64);
    while !worker.is_finished() {
        let s = telemetry.stats.snapshot();
        if sampled.elapsed() >= SAMPLE_EVERY {
            sampled = Instant::now();
            let rss = status_bytes("VmRSS:").unwrap_or(0);
            if rss > rss_peak.0 {
                rss_peak = (
                    rss,
                    started.elapsed().as_secs_f64(),
                    s.consumed,
                    s.windows_written,
                );
            }
            for (tid, name, t, w) in thread_cpu_ticks() {
                let (t0, w0) = baseline.get(&tid).copied().unwrap_or_default();
                cpu.insert(tid, (name, t - t0.min(t), w - w0.min(w)));
            }
        }
        let consumed = s.consumed;
        if first_at.is_none() && consumed > 0 {
            first_at = Some(started.elapsed());
        }
        if read_all_at.is_none() && consumed >= sent {
            read_all_at = Some(started.elapsed());
        }
        if done_at.is_none() && s.events_written >= generated {
            done_at = Some(started.elapsed());
        }
        if started.elapsed() > Duration::from_secs(900) {
            stop.store(true, Ordering::Relaxed);
        }
        std::thread::sleep(POLL_EVERY);
    }
    worker
        .join()
        .map_err(|_| anyhow::anyhow!("pipeline thread panicked"))??;
    let s = telemetry.stats.snapshot();
    let e = telemetry.events.totals();
    if s.consumed != sent {
        bail!("pipeline consumed {} of {sent}", s.consumed);
    }
    let Some(done_at) = done_at else {
        bail!(
            "only {} of the {generated} generated events reached rollup files",
            s.events_written
        );
    };
    let last_write = done_at - first_at.unwrap_or_default();
    let pipeline = sent as f64 / last_write.as_secs_f64();
    let rss = vm_hwm_bytes().unwrap_or(0);
    let summary =
        tollgate_rollup::read_summary(&tollgate_rollup::Tree::open(&cfg.output.rollup_dir)?)?;
    println!("events                     {sent}");
    println!("teams                      {}", args.teams);
    if args.producer == Producer::Batched {
        println!(
            "producer                   batched (confluent-kafka keyed by team, linger.ms={}, batch.num.messages={}, event time ±{} ms)",
            args.linger_ms, args.batch_messages, args.jitter_ms
        );
    }
    println!("raw consume                {raw:.0} events/s");
    println!(
        "core alone                 {core:.0} events/s (ratio {:.2}): one thread, decode + enrich + windows, no output; on a core {:.0}% of the time",
        core / raw,
        100.0 * core_on_cpu
    );
    println!(
        "pipeline (to last rollup)  {pipeline:.0} events/s  ({:.2}s, {} windows, {} rows)",
        last_write.as_secs_f64(),
        s.windows_written,
        s.rows_written
    );
    println!(
        "time writing windows       {:.2}s in {} groups; committing {:.2}s ({} commits)",
        s.write_micros as f64 / 1e6,
        s.writer_groups,
        s.commit_micros as f64 / 1e6,
        s.commits
    );
    println!("ratio pipeline / raw       {:.2}", pipeline / raw);
    if let Some(read_all) = read_all_at {
        println!(
            "tail                       {:.2}s from reading the last message to the last file",
            done_at.saturating_sub(read_all).as_secs_f64()
        );
    }
    println!(
        "consumer waited            {:.2}s for room in the writer's queue; {} polls found no message",
        s.writer_blocked_micros as f64 / 1e6,
        s.empty_polls
    );
    // Where the writer's decision time goes: each policy's total, from
    // `tollgate_policy_evaluation_duration_seconds`.
    let policies = decisions
        .engine()
        .policies()
        .iter()
        .map(|p| {
            let h = telemetry.policy_seconds.with_label_values(&[&p.name]);
            (p.name.clone(), h.get_sample_sum())
        })
        .collect();
    println!(
        "deciding windows           {:.2}s ({} decisions), of which {:.2}s until the broker acknowledged them; by policy: {}",
        s.decide_micros as f64 / 1e6,
        s.decisions + s.decisions_replayed,
        s.publish_micros as f64 / 1e6,
        slowest_first(policies)
    );
    // CPU of every thread but the harness's own (the main thread, whose id
    // is the process id), against what the machine's cores could give over
    // the pipeline's time: near 100% means the pipeline is short of CPU,
    // not waiting.
    let harness = u64::from(std::process::id());
    let pipeline_cpu = cpu
        .iter()
        .filter(|(tid, _)| **tid != harness)
        .map(|(_, (_, t, _))| *t as f64 / 100.0)
        .sum::<f64>();
    // Summed by thread name (librdkafka's threads are `rdk:*`); 100 ticks/s on Linux.
    let mut by_name: std::collections::BTreeMap<String, u64> = Default::default();
    let mut waits: std::collections::BTreeMap<String, u64> = Default::default();
    for (name, t, w) in cpu.into_values() {
        *by_name.entry(name.clone()).or_default() += t;
        *waits.entry(name).or_default() += w;
    }
    let waits: Vec<(String, f64)> = waits
        .into_iter()
        .filter(|(_, w)| *w >= 10_000_000)
        .map(|(n, w)| (n, w as f64 / 1e9))
        .collect();
    let by_name: Vec<(String, f64)> = by_name
        .into_iter()
        .filter(|(_, t)| *t > 0)
        .map(|(n, t)| (n, t as f64 / 100.0))
        .collect();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "CPU of the pipeline        {pipeline_cpu:.2}s = {:.0}% of {cores} cores over its {:.2}s",
        100.0 * pipeline_cpu / (cores as f64 * last_write.as_secs_f64()),
        last_write.as_secs_f64()
    );
    println!(
        "CPU per 1 M events         {:.2} CPU-s (pipeline)",
        pipeline_cpu * 1e6 / sent as f64
    );
    if let Some([rate, cpu_s, read, counted, files]) = python {
        println!(
            "python pipeline            {rate:.0} events/s (pipeline / python {:.2}), {:.2} CPU-s per 1 M events; {read:.0} read, {counted:.0} counted, {files:.0} files",
            pipeline / rate,
            cpu_s * 1e6 / read
        );
    }
    println!("CPU by thread (whole run)  {}", slowest_first(by_name));
    println!("waited for a core          {}", slowest_first(waits));
    println!(
        "peak RSS of the pipeline   {:.0} MiB (the process held {:.0} MiB when it started)",
        rss as f64 / (1024.0 * 1024.0),
        rss_at_start as f64 / (1024.0 * 1024.0)
    );
    println!(
        "sampled RSS peaked at      {:.0} MiB, {:.1}s in, {} events consumed, {} windows written",
        rss_peak.0 as f64 / (1024.0 * 1024.0),
        rss_peak.1,
        rss_peak.2,
        rss_peak.3
    );
    println!(
        "rollup events              {} (accepted {}, duplicates {}, late {})",
        summary.total.events, e.accepted, e.duplicates, e.late
    );
    Ok(())
}
