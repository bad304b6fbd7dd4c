//! Writing a window's rollup file, without the disk: building the Arrow batch
//! and encoding the Parquet file in memory, as the writer thread does for
//! every closed window, against the floor of the format measured in the
//! same run: the same batch as Parquet with no compression, no dictionary
//! and no statistics.
//!
//! The window is what the end-to-end harness closes: about 10,000 rows from
//! synthetic events over 10,000 teams (nearly one row per event).
//!
//! `cargo bench -p tollgate-benches --bench rollup`

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use parquet::arrow::ArrowWriter;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use tollgate_enrich::{Defaults, Enricher};
use tollgate_event::{decode, Limits};
use tollgate_loadgen::{Generator, LoadSpec};
use tollgate_rollup::Source;
use tollgate_window::{ClosedWindow, PartitionState, WindowSpec};

/// The first full window of 10,000 synthetic events a minute.
fn window() -> ClosedWindow {
    let spec = LoadSpec {
        count: 20_000,
        teams: 10_000,
        models: 8,
        tenants: 16,
        seed: 11,
        start_ms: 1_767_225_600_000,
        span_ms: 120_000,
        duplicate_ratio: 0.0,
        other_kinds_ratio: 0.0,
        nodes: 0,
        heartbeat_every_ms: 0,
    };
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../pipelines/default.toml");
    let cfg = tollgate_config::Config::load(std::path::Path::new(path)).expect("default.toml");
    let mut enricher = Enricher::new(cfg.pricing, Defaults::default()).expect("price book");
    let mut state = PartitionState::new(
        WindowSpec {
            size_ms: 60_000,
            lateness_ms: 5_000,
        },
        tollgate_event::Kind::Inference,
    );
    let limits = Limits::default();
    let mut closed = Vec::new();
    for (offset, g) in Generator::new(spec).enumerate() {
        let e = decode(g.payload.as_bytes(), g.kind, &limits).expect("valid event");
        let x = enricher.enrich(&e);
        state.offer(offset as i64, &e, &x);
        closed.extend(state.drain_closed());
    }
    closed.extend(state.flush_idle());
    closed.into_iter().next().expect("a window")
}

fn bench(c: &mut Criterion) {
    let w = window();
    let src = Source {
        kind: "inference",
        topic: "tollgate.inference",
        partition: 0,
    };
    let batch = tollgate_rollup::to_batch(&w).expect("batch");
    let plain = || {
        let props = WriterProperties::builder()
            .set_dictionary_enabled(false)
            .set_statistics_enabled(EnabledStatistics::None)
            .build();
        let mut writer =
            ArrowWriter::try_new(Vec::new(), batch.schema(), Some(props)).expect("writer");
        writer.write(&batch).expect("write");
        writer.into_inner().expect("finish")
    };
    let encoded = tollgate_rollup::encode_window(src, &w, &batch).expect("encode");
    eprintln!(
        "rollup: window of {} rows: file {} bytes; uncompressed plain {} bytes",
        w.rows.len(),
        encoded.len(),
        plain().len()
    );
    let mut g = c.benchmark_group("rollup_10k_rows");
    g.throughput(Throughput::Elements(w.rows.len() as u64));
    g.sample_size(20);
    g.bench_function("baseline_parquet_plain", |b| {
        b.iter(|| std::hint::black_box(plain()))
    });
    g.bench_function("to_batch", |b| {
        b.iter(|| std::hint::black_box(tollgate_rollup::to_batch(&w).expect("batch")))
    });
    g.bench_function("encode_window", |b| {
        b.iter(|| std::hint::black_box(tollgate_rollup::encode_window(src, &w, &batch)))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
