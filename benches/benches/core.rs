//! Core throughput on one thread: decode + enrich + window aggregation of
//! synthetic events, next to a baseline in the same run: parsing the same
//! bytes with serde_json into `IgnoredAny` (the floor for any JSON decoder).
//!
//! `cargo bench -p tollgate-benches --bench core`

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use tollgate_enrich::{Defaults, Enricher};
use tollgate_event::{decode, Kind, Limits};
use tollgate_loadgen::{Generator, LoadSpec};
use tollgate_window::{PartitionState, WindowSpec};

const N: u64 = 200_000;

fn events(teams: u32) -> Vec<(Kind, Vec<u8>)> {
    let spec = LoadSpec {
        count: N,
        teams,
        models: 8,
        tenants: 4,
        seed: 3,
        start_ms: 1_767_225_600_000,
        span_ms: 600_000,
        duplicate_ratio: 0.01,
        other_kinds_ratio: 0.0,
        nodes: 0,
        heartbeat_every_ms: 0,
    };
    Generator::new(spec)
        .map(|g| (g.kind, g.payload.into_bytes()))
        .collect()
}

fn book() -> tollgate_enrich::PriceBook {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../pipelines/default.toml");
    tollgate_config::Config::load(std::path::Path::new(path))
        .expect("pipelines/default.toml")
        .pricing
}

fn bench(c: &mut Criterion) {
    let limits = Limits::default();
    let spec = WindowSpec {
        size_ms: 60_000,
        lateness_ms: 5_000,
    };
    for teams in [100u32, 10_000] {
        let evs = events(teams);
        let bytes: usize = evs.iter().map(|(_, b)| b.len()).sum();
        let mut g = c.benchmark_group(format!("core/{teams}_teams"));
        g.throughput(Throughput::Elements(N));
        g.sample_size(10);
        g.bench_function("baseline_json_parse", |b| {
            b.iter(|| {
                for (_, p) in &evs {
                    let v: serde::de::IgnoredAny = serde_json::from_slice(p).expect("json");
                    std::hint::black_box(v);
                }
            })
        });
        g.bench_function("decode", |b| {
            b.iter(|| {
                for (kind, p) in &evs {
                    std::hint::black_box(decode(p, *kind, &limits).expect("valid"));
                }
            })
        });
        g.bench_function("decode_enrich", |b| {
            let mut en = Enricher::new(book(), Defaults::default()).expect("book");
            b.iter(|| {
                for (kind, p) in &evs {
                    let e = decode(p, *kind, &limits).expect("valid");
                    std::hint::black_box(en.enrich(&e));
                }
            })
        });
        g.bench_function("decode_enrich_aggregate", |b| {
            b.iter_batched(
                || {
                    (
                        Enricher::new(book(), Defaults::default()).expect("book"),
                        PartitionState::new(spec, Kind::Inference),
                    )
                },
                |(mut en, mut st)| {
                    let mut rows = 0usize;
                    for (offset, (kind, p)) in evs.iter().enumerate() {
                        let e = decode(p, *kind, &limits).expect("valid");
                        let x = en.enrich(&e);
                        st.offer(offset as i64, &e, &x);
                        for w in st.drain_closed() {
                            rows += w.rows.len();
                        }
                    }
                    rows += st.flush_idle().iter().map(|w| w.rows.len()).sum::<usize>();
                    std::hint::black_box(rows)
                },
                BatchSize::PerIteration,
            )
        });
        g.finish();
        eprintln!(
            "core/{teams}_teams: {N} events, {:.0} bytes/event",
            bytes as f64 / N as f64
        );
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
