//! Decisions and policies, each next to a baseline measured in the same run.
//!
//! - `sign/*`: sealing a decision (canonical JSON, HMAC-SHA256, chain hash),
//!   and appending it to the log (no fsync), against the floor of a bare
//!   HMAC-SHA256 over the same signing input.
//! - `window_close/*`: evaluating every shipped policy that applies to an
//!   inference window of 10,000 rollup rows, against writing that window's
//!   Parquet file (which every window close pays anyway).
//!
//! `cargo bench -p tollgate-benches --bench decisions`

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use serde_json::{json, Map};
use tollgate_decision::{rfc3339_ms, Chain, DecisionWindow, Draft, Key, Verdict, GENESIS_HASH};
use tollgate_decision_log::{DecisionLog, LogOptions};
use tollgate_policy::{tables, EngineOptions, PolicyEngine, WindowInput};
use tollgate_window::{ClosedWindow, DimsRef, Measures, RowSet, Totals};

fn draft(i: usize) -> Draft {
    let mut observed = Map::new();
    observed.insert("spend_usd".into(), json!(100.0 + i as f64 * 0.37));
    observed.insert("events".into(), json!(1000 + i));
    observed.insert("limit_usd".into(), json!(100.0));
    Draft {
        policy: "team-window-spend".into(),
        policy_revision: "sha256:0123456789abcdef".into(),
        subject: format!("tenant=acme/team=team-{i}"),
        window: Some(DecisionWindow::from_millis(
            1_795_341_600_000,
            1_795_341_660_000,
            "tollgate.inference/0",
        )),
        observed,
        verdict: Verdict::Deny,
        reasons: vec![format!(
            "team team-{i} spent {:.2} USD in the window, above its 100 USD limit per window",
            100.0 + i as f64 * 0.37
        )],
    }
}

fn sign(c: &mut Criterion) {
    let key = Key::new("k-bench", "a-benchmark-secret-of-32-bytes!!").expect("key");
    let drafts: Vec<Draft> = (0..10_000).map(draft).collect();
    let inputs: Vec<String> = {
        let mut chain = Chain::after(GENESIS_HASH);
        drafts
            .iter()
            .map(|d| chain.seal(d.clone(), rfc3339_ms(0), &key).0.signing_input())
            .collect()
    };
    let mut g = c.benchmark_group("sign");
    g.throughput(Throughput::Elements(drafts.len() as u64));
    g.sample_size(20);
    g.bench_function("baseline_hmac_only", |b| {
        b.iter(|| {
            for s in &inputs {
                std::hint::black_box(key.sign(s.as_bytes()));
            }
        })
    });
    g.bench_function("seal", |b| {
        b.iter_batched(
            || drafts.clone(),
            |ds| {
                let mut chain = Chain::after(GENESIS_HASH);
                let ts = rfc3339_ms(0);
                for d in ds {
                    std::hint::black_box(chain.seal(d, ts.clone(), &key));
                }
            },
            BatchSize::LargeInput,
        )
    });
    g.bench_function("seal_and_append", |b| {
        b.iter_batched(
            || {
                let dir = tempfile::tempdir().expect("tempdir");
                let log =
                    DecisionLog::open(dir.path(), key.clone(), LogOptions::default()).expect("log");
                (dir, log, drafts.clone())
            },
            |(dir, mut log, ds)| {
                let ts = rfc3339_ms(0);
                for d in ds {
                    std::hint::black_box(log.append(d, ts.clone()).expect("append"));
                }
                log.sync().expect("sync");
                drop(dir);
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

/// A closed inference window of `n` rows (`n` teams over 4 models and 4
/// regions). With `violating_every` = k, every k-th row breaks the spend
/// limit, the unit-cost cap and the carbon limit (k = 1: every row does).
fn window(n: usize, violating_every: usize) -> ClosedWindow {
    let teams: Vec<String> = (0..n).map(|i| format!("team-{i}")).collect();
    let models = ["gpt-4o", "gpt-4o-mini", "claude-3-5-sonnet", "llama-3-70b"];
    let regions = ["us-east-1", "us-west-2", "eu-north-1", "eu-west-1"];
    let rows = (0..n).map(|i| {
        let bad = i % violating_every == 0;
        let mut m = Measures {
            events: 10 + (i % 50) as u64,
            input_tokens: 10_000,
            output_tokens: 2_000,
            cost_usd: if bad { 150.0 } else { (i % 997) as f64 * 0.1 },
            max_unit_cost_usd: if bad { 0.9 } else { (i % 50) as f64 * 0.01 },
            energy_wh: 3.0,
            carbon_g: 1.2,
            duration_ms_sum: 500.0,
            duration_ms_max: 90.0,
            last_event_ms: 1_795_341_659_000,
            ..Measures::default()
        };
        m.duration.add(50.0);
        (
            DimsRef {
                tenant: if i % 3 == 0 { "acme" } else { "globex" },
                team: (i % 1000 != 1).then_some(teams[i].as_str()),
                environment: Some(if i % 2 == 0 { "prod" } else { "dev" }),
                project: None,
                model: Some(models[i % models.len()]),
                region: Some(if bad {
                    "ap-southeast-1"
                } else {
                    regions[i % regions.len()]
                }),
                node_id: None,
            },
            m,
        )
    });
    ClosedWindow {
        start_ms: 1_795_341_600_000,
        end_ms: 1_795_341_660_000,
        first_offset: 0,
        close_offset: n as i64,
        watermark_ms: 1_795_341_660_000,
        duplicates: 0,
        rows: RowSet::from_rows(rows),
    }
}

fn window_close(c: &mut Criterion) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let cfg = tollgate_config::Config::load(&root.join("pipelines/default.toml")).expect("config");
    let history_dir = tempfile::tempdir().expect("tempdir");
    let regions: Vec<(String, f64)> = cfg
        .pricing
        .regions
        .iter()
        .map(|r| (r.region.clone(), r.carbon_intensity_g_per_kwh))
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let engine = rt
        .block_on(PolicyEngine::load(EngineOptions {
            dir: root.join("pipelines/policies"),
            params: BTreeMap::new(),
            disabled: vec![],
            file_schema: tollgate_rollup::schema(),
            history: Some(
                tollgate_rollup::history_table(&tollgate_rollup::Tree::local(history_dir.path()))
                    .expect("history"),
            ),
            regions: regions.clone(),
        }))
        .expect("policies");
    let engine = Arc::new(engine);
    for (label, every) in [("1pct_violating", 100usize), ("all_violating", 1)] {
        let w = window(10_000, every);
        let batch = tollgate_rollup::to_batch(&w).expect("batch");
        let out = tempfile::tempdir().expect("tempdir");
        let src = tollgate_rollup::Source {
            kind: "inference",
            topic: "tollgate.inference",
            partition: 0,
        };
        // The month so far: an earlier window of the same teams.
        let mut month = BTreeMap::new();
        for (d, m) in w.rows.iter() {
            let t: &mut Totals = month.entry((d.tenant, d.team)).or_default();
            t.add(&Totals::of(m));
        }
        let month = tables::month_to_date_batch(
            month.iter().map(|((tenant, team), t)| (*tenant, *team, t)),
        )
        .expect("month_to_date");
        let input = WindowInput {
            kind: "inference",
            source: "tollgate.inference/0",
            start_ms: w.start_ms,
            end_ms: w.end_ms,
            rows: &batch,
            month_to_date: Ok(&month),
        };
        let eval = rt.block_on(engine.evaluate(&input));
        assert!(eval.errors.is_empty(), "{:?}", eval.errors);
        eprintln!(
            "{label}: window of {} rows: {} violations from {} policies",
            batch.num_rows(),
            eval.drafts.len(),
            eval.timings.len()
        );
        let mut g = c.benchmark_group(format!("window_close_10k_rows/{label}"));
        g.sample_size(20);
        g.bench_function("baseline_parquet_write", |b| {
            b.iter(|| {
                tollgate_rollup::EncodedWindow::new(
                    &tollgate_rollup::Tree::local(out.path()),
                    src,
                    &w,
                    &batch,
                )
                .and_then(|f| f.write())
                .expect("write")
            })
        });
        g.bench_function("all_policies", |b| {
            b.iter(|| std::hint::black_box(rt.block_on(engine.evaluate(&input))))
        });
        if every == 1 {
            g.finish();
            continue;
        }
        for (name, _) in &eval.timings {
            let others: Vec<String> = engine
                .policies()
                .iter()
                .map(|p| p.name.clone())
                .filter(|n| n != name)
                .collect();
            let one = rt
                .block_on(PolicyEngine::load(EngineOptions {
                    dir: root.join("pipelines/policies"),
                    params: BTreeMap::new(),
                    disabled: others,
                    file_schema: tollgate_rollup::schema(),
                    history: Some(
                        tollgate_rollup::history_table(&tollgate_rollup::Tree::local(
                            history_dir.path(),
                        ))
                        .expect("history"),
                    ),
                    regions: regions.clone(),
                }))
                .expect("policy");
            g.bench_function(format!("policy_{name}"), |b| {
                b.iter(|| std::hint::black_box(rt.block_on(one.evaluate(&input))))
            });
        }
        g.finish();
    }
}

/// One gate request through the shipped Rego rules, against the cheapest
/// thing a request must do anyway: parsing its JSON body.
fn gate(c: &mut Criterion) {
    tollgate_gate::quiet_library_backtraces();
    let cfg = tollgate_config::Config::load(std::path::Path::new("../pipelines/default.toml"))
        .or_else(|_| tollgate_config::Config::load(std::path::Path::new("pipelines/default.toml")))
        .expect("pipelines/default.toml");
    let mut cfg = cfg;
    if cfg.gates.dir.is_relative() && !cfg.gates.dir.exists() {
        cfg.gates.dir = std::path::Path::new("..").join(&cfg.gates.dir);
    }
    let params = serde_json::to_value(&cfg.policies.params).expect("params");
    let engine = cfg
        .load_gate_engine(params.as_object().cloned().unwrap_or_default())
        .expect("gate rules");
    let body = br#"{"unit_cost_usd": 0.6, "cost_tags": {"team": "ai"}, "deployment_region": "us-east-1", "test_pass_rate": 0.99}"#;
    let ctx = tollgate_gate::GateContext {
        tenant: "acme".into(),
        team: Some("ai".into()),
        ..Default::default()
    };
    let mut g = c.benchmark_group("gate");
    g.throughput(Throughput::Elements(1));
    g.bench_function("baseline_parse_body", |b| {
        b.iter(|| serde_json::from_slice::<tollgate_gate::GateRequest>(body).expect("body"))
    });
    g.bench_function("parse_and_evaluate", |b| {
        b.iter(|| {
            let req: tollgate_gate::GateRequest = serde_json::from_slice(body).expect("body");
            engine.evaluate(&tollgate_gate::gate_input(&req, &ctx))
        })
    });
    g.finish();

    // What else regorus offers for the same answer (issue: gate speed).
    // Each variant must give the answer Tollgate's own path gives.
    let input = {
        let req: tollgate_gate::GateRequest = serde_json::from_slice(body).expect("body");
        regorus::Value::from(tollgate_gate::gate_input(&req, &ctx))
    };
    let prepared = engine.regorus_engine().expect("engine");
    let compiled = prepared
        .clone()
        .compile_with_entrypoint(&tollgate_gate::ANSWER.into())
        .expect("compile");
    let want = compiled.eval_with_input(input.clone()).expect("compiled");
    let mut g = c.benchmark_group("gate_regorus");
    g.throughput(Throughput::Elements(1));
    g.bench_function("compiled_policy_eval_with_input", |b| {
        b.iter(|| compiled.eval_with_input(input.clone()).expect("eval"))
    });
    let mut kept = prepared.clone();
    kept.set_input(input.clone());
    assert_eq!(
        kept.eval_rule(tollgate_gate::ANSWER.into()).expect("rule"),
        want
    );
    g.bench_function("engine_kept_eval_rule", |b| {
        b.iter(|| {
            kept.set_input(input.clone());
            kept.eval_rule(tollgate_gate::ANSWER.into()).expect("eval")
        })
    });
    g.bench_function("engine_cloned_eval_rule", |b| {
        b.iter(|| {
            let mut e = prepared.clone();
            e.set_input(input.clone());
            e.eval_rule(tollgate_gate::ANSWER.into()).expect("eval")
        })
    });
    let mut queried = prepared.clone();
    g.bench_function("engine_kept_eval_query", |b| {
        b.iter(|| {
            queried.set_input(input.clone());
            queried
                .eval_query(tollgate_gate::ANSWER.into(), false)
                .expect("eval")
        })
    });
    g.bench_function("input_to_regorus_value", |b| {
        let v = {
            let req: tollgate_gate::GateRequest = serde_json::from_slice(body).expect("body");
            tollgate_gate::gate_input(&req, &ctx)
        };
        b.iter(|| regorus::Value::from(v.clone()))
    });
    g.finish();
}

criterion_group!(benches, sign, window_close, gate);
criterion_main!(benches);
