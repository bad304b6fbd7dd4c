//! Gate load harness (release mode): the real API (router, auth, limits,
//! Rego rules, signing, group-committed decision log on disk) served on
//! loopback by the same 2-worker runtime `tollgate run` uses, driven by a
//! plain HTTP/1.1 keep-alive client in this process.
//!
//! 1. baseline: closed loop on `GET /healthz` (same server, same client):
//!    requests/s;
//! 2. closed loop on `POST /v1/gates/policy-check` (allowed and denied
//!    bodies alternating): requests/s, and the ratio to the baseline;
//! 3. open loop at `--rate` requests/s: p50/p99/max latency, measured from
//!    each request's scheduled send time (no coordinated omission);
//! 4. the same open loop while another tenant floods `POST /v1/query` with
//!    `--flood` connections of CPU-heavy SQL in a closed loop: gate p50/p99
//!    beside phase 3's, and what the flood got (200, 408, 503).
//!
//! Finally every decision is checked to be in the log, and the log verifies.
//! `scripts/bench-gate.sh` builds and runs this.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tollgate_config::Config;
use tollgate_decision::{Key, KeyRing};
use tollgate_decision_log::{Committer, DecisionLog, LogOptions};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "pipelines/default.toml")]
    config: std::path::PathBuf,
    /// Seconds per phase.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Connections of the closed-loop phases.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Requests/s of the open-loop phase.
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// Connections flooding `POST /v1/query` in the last phase (0: skip it).
    #[arg(long, default_value_t = 16)]
    flood: usize,
    /// Another gate server to measure the same way, `NAME=HOST:PORT`
    /// (repeatable): the same bodies and token, the same closed and open
    /// loops, right after Tollgate's. Its answers must agree with Tollgate's.
    #[arg(long = "compare", value_parser = parse_compare)]
    compare: Vec<(String, std::net::SocketAddr)>,
}

fn parse_compare(s: &str) -> Result<(String, std::net::SocketAddr), String> {
    let (name, addr) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected NAME=HOST:PORT"))?;
    let addr = addr
        .parse()
        .map_err(|e| format!("{s:?}: {addr} is not HOST:PORT: {e}"))?;
    Ok((name.to_string(), addr))
}

/// `allow` and `violations` of one answer of the server at `addr`.
async fn verdict(addr: std::net::SocketAddr, req: &[u8]) -> Result<serde_json::Value> {
    let mut conn = Conn::open(addr).await?;
    let status = conn.call(req).await?;
    if status != 200 {
        bail!("status {status}: {}", String::from_utf8_lossy(&conn.body));
    }
    let v: serde_json::Value = serde_json::from_slice(&conn.body)?;
    Ok(serde_json::json!({"allow": v["allow"], "violations": v["violations"]}))
}

/// Closed loop then open loop on `addr`, printed under `name`.
async fn measure(
    name: &str,
    addr: std::net::SocketAddr,
    args: &Args,
    reqs: Arc<Vec<Vec<u8>>>,
    base_rps: f64,
) -> Result<(usize, Duration)> {
    let (_, warm) = closed_loop(addr, 4, 1.0, reqs.clone()).await?;
    let (rps, mut lat) = closed_loop(addr, args.connections, args.seconds, reqs.clone()).await?;
    lat.sort();
    println!(
        "{name:<28}: {rps:>9.0} req/s  (closed loop p50 {:.3} ms, p99 {:.3} ms; ratio to Tollgate's /healthz {:.3})",
        ms(pct(&lat, 0.50)),
        ms(pct(&lat, 0.99)),
        rps / base_rps
    );
    let mut open = open_loop(addr, args.rate, args.seconds, reqs).await?;
    open.sort();
    println!(
        "{name:<28}  open loop {} req/s ({} requests): p50 {:.3} ms  p99 {:.3} ms  max {:.3} ms",
        args.rate,
        open.len(),
        ms(pct(&open, 0.50)),
        ms(pct(&open, 0.99)),
        ms(open.last().copied().unwrap_or_default())
    );
    Ok((warm.len() + lat.len() + open.len(), pct(&open, 0.99)))
}

const FLOOD_TOKEN: &str = "flood-token-0123456789";
/// CPU-heavy SQL that needs no data: about a second of one core.
const FLOOD_SQL: &str = r#"{"sql": "WITH RECURSIVE t(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM t WHERE n < 2000000) SELECT count(*) AS n FROM t"}"#;

const TOKEN: &str = "bench-token-0123456789";
const ALLOW: &str = r#"{"unit_cost_usd": 0.3, "cost_tags": {"team": "ai", "environment": "dev"}}"#;
const DENY: &str = r#"{"unit_cost_usd": 0.6}"#;

fn request(path: &str, body: Option<&str>) -> Vec<u8> {
    match body {
        None => format!("GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n").into_bytes(),
        Some(b) => format!(
            "POST {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{b}",
            b.len()
        )
        .into_bytes(),
    }
}

/// One keep-alive connection.
struct Conn {
    r: BufReader<tokio::net::tcp::OwnedReadHalf>,
    w: tokio::net::tcp::OwnedWriteHalf,
    line: String,
    body: Vec<u8>,
}

impl Conn {
    async fn open(addr: std::net::SocketAddr) -> Result<Conn> {
        let s = TcpStream::connect(addr).await?;
        s.set_nodelay(true)?;
        let (r, w) = s.into_split();
        Ok(Conn {
            r: BufReader::new(r),
            w,
            line: String::new(),
            body: Vec::new(),
        })
    }

    /// Send one request, read the whole answer; returns the status.
    async fn call(&mut self, req: &[u8]) -> Result<u16> {
        self.w.write_all(req).await?;
        self.line.clear();
        self.r.read_line(&mut self.line).await?;
        let status: u16 = self
            .line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .context("bad status line")?;
        let mut len = 0usize;
        loop {
            self.line.clear();
            self.r.read_line(&mut self.line).await?;
            let l = self.line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse()?;
                }
            }
        }
        self.body.resize(len, 0);
        self.r.read_exact(&mut self.body).await?;
        Ok(status)
    }
}

/// Closed loop of `req` on `connections` connections until `stop`, any
/// status accepted. Returns the count of answers by status.
async fn flood(
    addr: std::net::SocketAddr,
    connections: usize,
    req: Arc<Vec<u8>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> Result<std::collections::BTreeMap<u16, u64>> {
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (req, stop) = (req.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::open(addr).await?;
            let mut seen = std::collections::BTreeMap::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let status = conn.call(&req).await?;
                *seen.entry(status).or_insert(0u64) += 1;
                if status == 503 {
                    // Refused at once: do not spin on the refusal.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            Ok::<_, anyhow::Error>(seen)
        }));
    }
    let mut all = std::collections::BTreeMap::new();
    for t in tasks {
        for (k, v) in t.await?? {
            *all.entry(k).or_insert(0) += v;
        }
    }
    Ok(all)
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Closed loop: every connection sends its next request as soon as the
/// previous answer is in. Returns (requests/s, latencies).
async fn closed_loop(
    addr: std::net::SocketAddr,
    connections: usize,
    seconds: f64,
    reqs: Arc<Vec<Vec<u8>>>,
) -> Result<(f64, Vec<Duration>)> {
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..connections {
        let reqs = reqs.clone();
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::open(addr).await?;
            let mut lat = Vec::new();
            let mut i = c;
            while Instant::now() < deadline {
                let t = Instant::now();
                let status = conn.call(&reqs[i % reqs.len()]).await?;
                if status != 200 {
                    bail!("status {status}");
                }
                lat.push(t.elapsed());
                i += 1;
            }
            Ok::<_, anyhow::Error>(lat)
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    let secs = started.elapsed().as_secs_f64();
    Ok((all.len() as f64 / secs, all))
}

/// Open loop: requests scheduled at a fixed rate by a dedicated thread;
/// latency counts from the scheduled time.
async fn open_loop(
    addr: std::net::SocketAddr,
    rate: u64,
    seconds: f64,
    reqs: Arc<Vec<Vec<u8>>>,
) -> Result<Vec<Duration>> {
    let n = (rate as f64 * seconds) as u64;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<(u64, Instant)>();
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    let start = Instant::now() + Duration::from_millis(50);
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    std::thread::spawn(move || {
        for i in 0..n {
            let at = start + interval * i as u32;
            let now = Instant::now();
            if at > now {
                std::thread::sleep(at - now);
            }
            if tx.send((i, at)).is_err() {
                return;
            }
        }
    });
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (rx, reqs) = (rx.clone(), reqs.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::open(addr).await?;
            let mut lat = Vec::new();
            loop {
                let job = rx.lock().await.recv().await;
                let Some((i, at)) = job else { break };
                let status = conn.call(&reqs[i as usize % reqs.len()]).await?;
                if status != 200 {
                    bail!("status {status}");
                }
                lat.push(at.elapsed());
            }
            Ok::<_, anyhow::Error>(lat)
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    Ok(all)
}

fn main() -> Result<()> {
    tollgate_gate::quiet_library_backtraces();
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    let mut cfg = Config::load(&args.config)?;
    cfg.output.rollup_dir = dir.path().join("rollups");
    cfg.decisions.log_dir = dir.path().join("decisions");
    cfg.http.max_concurrency = 4096;
    let secret = b"bench-secret-0123456789abcdef".to_vec();
    let key = Key::new("bench", secret.clone())?;
    let log = DecisionLog::open(&cfg.decisions.log_dir, key.clone(), LogOptions::default())?;
    let telemetry = Arc::new(tollgate_telemetry::Telemetry::default());
    let registry = prometheus::Registry::new();
    telemetry.register(&registry)?;
    // What `tollgate run` does before serving: the month read from the
    // (here empty) rollups; the gate answers 503 until then.
    telemetry
        .live
        .set_seed(tollgate_telemetry::live::Ledger::default());
    // The thresholds of default.toml's [policies.params] (what the window
    // policies would report as effective parameters).
    let params = serde_json::to_value(&cfg.policies.params)?;
    let params = params.as_object().cloned().unwrap_or_default();
    let engine = cfg.load_gate_engine(params.clone())?;
    let auth = tollgate_http::Auth::parse_tokens(
        &serde_json::json!({
            TOKEN: {"tenant": "acme", "scopes": ["gates.check"]},
            FLOOD_TOKEN: {"tenant": "globex", "scopes": ["query.run"]},
        })
        .to_string(),
        "bench",
    )?;
    let state = tollgate_http::AppState::new(
        cfg.clone(),
        auth,
        telemetry.clone(),
        registry,
        Committer::spawn(log, 8192)?,
        engine,
        params,
        None,
        tollgate_rollup::Tree::local(&cfg.output.rollup_dir),
    )?;
    // The server: the runtime `tollgate run` gives the API.
    let server = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let listener = server.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let addr = listener.local_addr()?;
    let limits = tollgate_http::ServeLimits::from_config(&state.cfg.http);
    let router = tollgate_http::router(state);
    server.spawn(tollgate_http::serve(
        listener,
        router,
        std::future::pending(),
        limits,
    ));

    let client = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let health = Arc::new(vec![request("/healthz", None)]);
    let gate = Arc::new(vec![
        request("/v1/gates/policy-check", Some(ALLOW)),
        request("/v1/gates/policy-check", Some(DENY)),
    ]);
    println!(
        "gate load: {} s per phase, {} connections closed loop, {} req/s open loop, 2 server workers + 1 client thread on {} cores",
        args.seconds,
        args.connections,
        args.rate,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    // Warm up both paths.
    // The other servers must give Tollgate's answers to the bench's bodies.
    let mut checked = 0;
    for (name, other) in &args.compare {
        for req in gate.iter() {
            let ours = client.block_on(verdict(addr, req))?;
            let theirs = client
                .block_on(verdict(*other, req))
                .with_context(|| format!("{name} at {other}"))?;
            if ours != theirs {
                bail!("{name} answers {theirs}, Tollgate {ours}");
            }
            checked += 1;
        }
        println!("{name}: same allow and violations as Tollgate on both bodies");
    }
    let (base_rps, _) =
        client.block_on(closed_loop(addr, args.connections, args.seconds, health))?;
    println!("baseline GET /healthz       : {base_rps:>9.0} req/s");
    let (ours, open_p99) = client.block_on(measure(
        "Tollgate POST /v1/gates/...",
        addr,
        &args,
        gate.clone(),
        base_rps,
    ))?;
    for (name, other) in &args.compare {
        client.block_on(measure(name, *other, &args, gate.clone(), base_rps))?;
    }
    let mut flooded = Vec::new();
    if args.flood > 0 {
        let body = FLOOD_SQL;
        let req = Arc::new(
            format!(
                "POST /v1/query HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {FLOOD_TOKEN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .into_bytes(),
        );
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (seen, lat) = client.block_on(async {
            let flooding = tokio::spawn(flood(addr, args.flood, req, stop.clone()));
            // Let the flood take every query slot first.
            tokio::time::sleep(Duration::from_millis(500)).await;
            let lat = open_loop(addr, args.rate, args.seconds, gate.clone()).await;
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            let seen = flooding.await;
            (seen, lat)
        });
        flooded = lat?;
        flooded.sort();
        let seen = seen??;
        println!(
            "open loop {} req/s while {} connections flood /v1/query ({} requests): p50 {:.3} ms  p99 {:.3} ms  max {:.3} ms; flood answers by status {:?}",
            args.rate,
            args.flood,
            flooded.len(),
            ms(pct(&flooded, 0.50)),
            ms(pct(&flooded, 0.99)),
            ms(flooded.last().copied().unwrap_or_default()),
            seen
        );
        println!(
            "gate p99 with the flood / without: {:.2}",
            ms(pct(&flooded, 0.99)) / ms(open_p99).max(1e-9)
        );
    }
    drop(server);
    let ring = KeyRing::new(Some(key), Vec::new())?;
    let report = tollgate_decision_log::verify_dir(&cfg.decisions.log_dir, &ring)?;
    if let Some(bad) = report.first_bad {
        bail!("decision log does not verify: {bad}");
    }
    let answered = (checked + ours + flooded.len()) as u64;
    if report.records != answered {
        bail!(
            "{answered} gate answers but {} decisions in the log",
            report.records
        );
    }
    println!(
        "decision log: {} records, verified (HMAC + chain)",
        report.records
    );
    Ok(())
}
