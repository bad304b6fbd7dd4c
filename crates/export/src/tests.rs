use super::*;
use tollgate_rollup::{Source, Tree};
use tollgate_window::{ClosedWindow, DimsRef, Measures};

// 2026-11-30T23:59:00Z: the last window of November; the next is December's.
const NOV_LAST: i64 = 1_796_083_140_000;

fn dims<'a>(
    tenant: &'a str,
    team: &'a str,
    project: Option<&'a str>,
    model: &'a str,
) -> DimsRef<'a> {
    DimsRef {
        tenant,
        team: Some(team),
        environment: Some("prod"),
        project,
        model: Some(model),
        region: Some("eu-north-1"),
        node_id: None,
    }
}

fn m(events: u64, tokens: u64, cost: f64, gpu_hours: f64) -> Measures {
    Measures {
        events,
        input_tokens: tokens,
        output_tokens: tokens / 2,
        cost_usd: cost,
        energy_wh: cost * 2.0,
        carbon_g: cost * 3.0,
        gpu_hours,
        ..Measures::default()
    }
}

fn write_window(
    root: &std::path::Path,
    kind: &str,
    partition: i32,
    start_ms: i64,
    rows: Vec<(DimsRef<'_>, Measures)>,
) {
    let w = ClosedWindow::of_rows(start_ms, 60_000, start_ms / 1000, rows);
    let src = Source {
        kind,
        topic: kind,
        partition,
    };
    tollgate_rollup::write_window(&Tree::local(root), src, &w).expect("write");
}

async fn export(root: &std::path::Path, period: &str, g: Granularity) -> RecordBatch {
    let ctx = SessionContext::new();
    let table = tollgate_rollup::history_table(&Tree::local(root)).expect("table");
    ctx.register_table("rollups", table).expect("register");
    focus(
        &ctx,
        &Period::parse(period).expect("period"),
        g,
        &Parties::default(),
    )
    .await
    .expect("export")
}

fn strings(b: &RecordBatch, name: &str) -> Vec<Option<String>> {
    let a = b
        .column_by_name(name)
        .expect("column")
        .as_any()
        .downcast_ref::<StringArray>()
        .expect("strings");
    (0..a.len())
        .map(|i| (!a.is_null(i)).then(|| a.value(i).to_string()))
        .collect()
}

fn floats(b: &RecordBatch, name: &str) -> Vec<f64> {
    let a = b
        .column_by_name(name)
        .expect("column")
        .as_any()
        .downcast_ref::<Float64Array>()
        .expect("floats");
    a.values().to_vec()
}

#[tokio::test]
async fn a_period_is_its_months_charges_summed_over_partitions_per_hour() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    let dec = NOV_LAST + 60_000;
    // November's last window is not December's charge.
    write_window(
        root,
        "inference",
        0,
        NOV_LAST,
        vec![(dims("acme", "ai", None, "gpt-4o"), m(1, 100, 9.0, 0.0))],
    );
    // One hour of December on two partitions: one row per hour and key.
    write_window(
        root,
        "inference",
        0,
        dec,
        vec![
            (
                dims("acme", "ai", Some("search"), "gpt-4o"),
                m(2, 1000, 1.0, 0.0),
            ),
            (dims("acme", "ai", None, "gpt-4o"), m(1, 10, 0.5, 0.0)),
        ],
    );
    write_window(
        root,
        "inference",
        1,
        dec + 120_000,
        vec![(
            dims("acme", "ai", Some("search"), "gpt-4o"),
            m(3, 2000, 2.0, 0.0),
        )],
    );
    write_window(
        root,
        "training",
        0,
        dec + 3_600_000,
        vec![(dims("globex", "ml", None, "llama-3-70b"), m(1, 0, 8.0, 2.0))],
    );
    // A heartbeat row is not a charge.
    let hb = DimsRef {
        model: None,
        node_id: Some("n1"),
        ..dims("acme", "ai", None, "x")
    };
    write_window(root, "heartbeat", 0, dec, vec![(hb, m(5, 0, 0.0, 0.0))]);

    let b = export(root, "2026-12", Granularity::Hour).await;
    assert_eq!(b.schema(), focus_schema());
    assert_eq!(b.num_rows(), 3, "{b:?}");
    assert_eq!(floats(&b, "BilledCost"), vec![0.5, 3.0, 8.0]);
    assert_eq!(floats(&b, "EffectiveCost"), floats(&b, "BilledCost"));
    assert_eq!(
        strings(&b, "Tags"),
        vec![
            Some(r#"{"environment":"prod","team":"ai"}"#.into()),
            Some(r#"{"environment":"prod","project":"search","team":"ai"}"#.into()),
            Some(r#"{"environment":"prod","team":"ml"}"#.into()),
        ]
    );
    assert_eq!(
        strings(&b, "BillingAccountId")[2].as_deref(),
        Some("globex")
    );
    // Tokens are priced per 1K; training per GPU hour.
    assert_eq!(floats(&b, "PricingQuantity"), vec![0.015, 4.5, 2.0]);
    assert_eq!(floats(&b, "ConsumedQuantity"), vec![15.0, 4500.0, 2.0]);
    assert_eq!(
        strings(&b, "PricingUnit"),
        vec![
            Some("1K Tokens".into()),
            Some("1K Tokens".into()),
            Some("GPU Hours".into())
        ]
    );
    let ts = |name: &str| {
        b.column_by_name(name)
            .expect("column")
            .as_any()
            .downcast_ref::<TimestampMillisecondArray>()
            .expect("timestamps")
            .values()
            .to_vec()
    };
    assert_eq!(ts("ChargePeriodStart"), vec![dec, dec, dec + 3_600_000]);
    assert_eq!(
        ts("ChargePeriodEnd"),
        vec![dec + 3_600_000, dec + 3_600_000, dec + 7_200_000]
    );
    assert_eq!(ts("BillingPeriodStart"), vec![dec; 3]);
    assert!(strings(&b, "ChargeClass").iter().all(Option::is_none));

    // A day: the two hours in one charge period per key.
    let d = export(root, "2026-12", Granularity::Day).await;
    assert_eq!(d.num_rows(), 3);
    let nov = export(root, "2026-11", Granularity::Day).await;
    assert_eq!(floats(&nov, "BilledCost"), vec![9.0]);

    // Both encodings read back.
    let parquet = write(&b, Format::Parquet).expect("parquet");
    let back =
        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes_of(parquet))
            .expect("reader")
            .build()
            .expect("build")
            .next()
            .expect("a batch")
            .expect("batch");
    assert_eq!(back.num_rows(), 3);
    let csv = String::from_utf8(write(&b, Format::Csv).expect("csv")).expect("utf-8");
    let mut lines = csv.lines();
    assert!(lines
        .next()
        .expect("header")
        .starts_with("BilledCost,BillingAccountId,"));
    assert!(csv.contains("2026-12-01T00:00:00Z"), "{csv}");
}

fn bytes_of(v: Vec<u8>) -> bytes::Bytes {
    v.into()
}

#[test]
fn periods_and_options_are_checked() {
    let p = Period::parse("2026-12").expect("ok");
    assert_eq!(
        (p.start_ms, p.end_ms),
        (1_796_083_200_000, 1_798_761_600_000)
    );
    for bad in ["2026-13", "2026-1", "26-12", "2026/12", "2026-12-01", ""] {
        assert!(Period::parse(bad).is_err(), "{bad}");
    }
    assert!(Granularity::parse("week").is_err());
    assert!(Format::parse("xlsx").is_err());
    assert_eq!(Format::of_path(std::path::Path::new("a.CSV")), Format::Csv);
}
