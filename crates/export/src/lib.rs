//! Exports of the rollups for finance tools: a FinOps FOCUS 1.2
//! cost-and-usage dataset (`tollgate export focus`, `GET /v1/export/focus`).
//!
//! One FOCUS row per charge period (an hour or a day of the rollup windows
//! that start in it) and per tenant, team, environment, project, kind, model
//! and region: the rollups' cost summed, with the FOCUS columns a finance
//! tool requires and Tollgate's own measures as `x_` columns. Heartbeats
//! carry no cost and are not charges, so they are left out.
//!
//! The export reads the table `rollups` of the session it is given (the
//! rollup tree, already scoped to a tenant by an API caller) and does no
//! other I/O; `write` encodes the result as Parquet or CSV.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, Float64Array, Float64Builder, Int64Array, StringArray, StringBuilder,
    TimestampMillisecondArray,
};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use datafusion::common::ScalarValue;
use datafusion::functions::datetime::expr_fn::date_trunc;
use datafusion::functions_aggregate::expr_fn::sum;
use datafusion::prelude::{cast as cast_expr, col, lit, SessionContext};

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("`period` must be a UTC month as YYYY-MM (2026-11), got {0:?}")]
    Period(String),
    #[error("granularity must be `hour` or `day`, got {0:?}")]
    Granularity(String),
    #[error("format must be `parquet` or `csv`, got {0:?}")]
    Format(String),
    #[error("reading the rollups: {0}")]
    Query(#[from] datafusion::error::DataFusionError),
    #[error("building the export: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    #[error("encoding the export as Parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
}

/// A UTC month: the FOCUS billing period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Period {
    pub name: String,
    pub start_ms: i64,
    /// Exclusive: the next month's start.
    pub end_ms: i64,
}

impl Period {
    /// `YYYY-MM`.
    pub fn parse(v: &str) -> Result<Period, ExportError> {
        let bad = || ExportError::Period(v.to_string());
        let b = v.as_bytes();
        let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
        if b.len() != 7 || b[4] != b'-' || !digits(0..4) || !digits(5..7) {
            return Err(bad());
        }
        let start =
            chrono::NaiveDate::parse_from_str(&format!("{v}-01"), "%Y-%m-%d").map_err(|_| bad())?;
        let next = start
            .checked_add_months(chrono::Months::new(1))
            .ok_or_else(bad)?;
        let ms = |d: chrono::NaiveDate| {
            d.and_time(chrono::NaiveTime::MIN)
                .and_utc()
                .timestamp_millis()
        };
        Ok(Period {
            name: v.to_string(),
            start_ms: ms(start),
            end_ms: ms(next),
        })
    }

    /// The month `now_ms` is in.
    pub fn of_ms(now_ms: i64) -> Period {
        let name = chrono::DateTime::from_timestamp_millis(now_ms)
            .unwrap_or_default()
            .format("%Y-%m")
            .to_string();
        Period::parse(&name).unwrap_or(Period {
            name,
            start_ms: now_ms,
            end_ms: now_ms,
        })
    }

    /// The rollup rows of windows that start in the period: `date` (the
    /// tree's directories) skips whole days, `window_start` is exact.
    pub fn filter(&self) -> datafusion::prelude::Expr {
        let day = |ms: i64| {
            chrono::DateTime::from_timestamp_millis(ms)
                .unwrap_or_default()
                .format("%Y-%m-%d")
                .to_string()
        };
        col("date")
            .gt_eq(lit(day(self.start_ms)))
            .and(col("date").lt_eq(lit(day(self.end_ms - 1))))
            .and(col("window_start").gt_eq(lit(ts(self.start_ms))))
            .and(col("window_start").lt(lit(ts(self.end_ms))))
    }

    /// How much of the period has passed at `now_ms`, in [0, 1].
    pub fn elapsed_ratio(&self, now_ms: i64) -> f64 {
        elapsed_ratio(self.start_ms, self.end_ms, now_ms)
    }
}

/// How much of `[from_ms, to_ms)` has passed at `now_ms`, in [0, 1].
pub fn elapsed_ratio(from_ms: i64, to_ms: i64, now_ms: i64) -> f64 {
    if now_ms >= to_ms {
        return 1.0;
    }
    if now_ms <= from_ms {
        return 0.0;
    }
    (now_ms - from_ms) as f64 / (to_ms - from_ms) as f64
}

/// A period's cost at the rate so far: what is spent, over the share of
/// the period that has passed (a linear projection; the spend itself once
/// the period is over; nothing before it starts).
pub fn projected_cost(cost_usd: f64, elapsed_ratio: f64) -> f64 {
    if elapsed_ratio <= 0.0 {
        0.0
    } else {
        cost_usd / elapsed_ratio
    }
}

/// How long one FOCUS charge period is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Granularity {
    #[default]
    Hour,
    Day,
}

impl Granularity {
    pub fn parse(v: &str) -> Result<Granularity, ExportError> {
        match v {
            "hour" => Ok(Granularity::Hour),
            "day" => Ok(Granularity::Day),
            _ => Err(ExportError::Granularity(v.to_string())),
        }
    }

    fn unit(self) -> &'static str {
        match self {
            Granularity::Hour => "hour",
            Granularity::Day => "day",
        }
    }

    fn ms(self) -> i64 {
        match self {
            Granularity::Hour => 3_600_000,
            Granularity::Day => 86_400_000,
        }
    }
}

/// The names FOCUS wants for who provides, publishes and invoices the
/// charges. Tollgate prices usage itself, so by default it is all three.
#[derive(Debug, Clone)]
pub struct Parties {
    pub provider_name: String,
    pub publisher_name: String,
    pub invoice_issuer_name: String,
}

impl Default for Parties {
    fn default() -> Self {
        Parties {
            provider_name: "Tollgate".into(),
            publisher_name: "Tollgate".into(),
            invoice_issuer_name: "Tollgate".into(),
        }
    }
}

/// The FOCUS columns, in the order written (mandatory ones, then the
/// conditional ones Tollgate fills, then `x_` measures).
pub fn focus_schema() -> SchemaRef {
    let ts = || DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()));
    let f = |n: &str, t: DataType, null: bool| Field::new(n, t, null);
    let text = |n: &str| f(n, DataType::Utf8, false);
    let text_null = |n: &str| f(n, DataType::Utf8, true);
    let num = |n: &str| f(n, DataType::Float64, false);
    let int = |n: &str| f(n, DataType::Int64, false);
    Arc::new(Schema::new(vec![
        num("BilledCost"),
        text("BillingAccountId"),
        text("BillingAccountName"),
        text("BillingCurrency"),
        f("BillingPeriodEnd", ts(), false),
        f("BillingPeriodStart", ts(), false),
        text("ChargeCategory"),
        text_null("ChargeClass"),
        text("ChargeDescription"),
        text("ChargeFrequency"),
        f("ChargePeriodEnd", ts(), false),
        f("ChargePeriodStart", ts(), false),
        num("ConsumedQuantity"),
        text("ConsumedUnit"),
        num("ContractedCost"),
        f("ContractedUnitPrice", DataType::Float64, true),
        num("EffectiveCost"),
        text("InvoiceIssuerName"),
        num("ListCost"),
        f("ListUnitPrice", DataType::Float64, true),
        num("PricingQuantity"),
        text("PricingUnit"),
        text("ProviderName"),
        text("PublisherName"),
        text_null("RegionId"),
        text_null("RegionName"),
        text_null("ResourceId"),
        text_null("ResourceName"),
        text_null("ResourceType"),
        text("ServiceCategory"),
        text("ServiceName"),
        text("ServiceSubcategory"),
        text_null("SubAccountId"),
        text_null("SubAccountName"),
        text("Tags"),
        text("x_Kind"),
        int("x_Requests"),
        int("x_InputTokens"),
        int("x_CachedInputTokens"),
        int("x_CacheWriteTokens"),
        int("x_OutputTokens"),
        int("x_ReasoningTokens"),
        num("x_EnergyWh"),
        num("x_CarbonGrams"),
        num("x_EmbodiedCarbonGrams"),
        num("x_GpuHours"),
    ]))
}

fn ts(ms: i64) -> ScalarValue {
    ScalarValue::TimestampMillisecond(Some(ms), Some("UTC".into()))
}

const DIMS: [&str; 7] = [
    "tenant",
    "team",
    "environment",
    "project",
    "kind",
    "model",
    "region",
];
const SUMS: [&str; 11] = [
    "cost_usd",
    "events",
    "input_tokens",
    "cached_input_tokens",
    "cache_write_tokens",
    "output_tokens",
    "reasoning_tokens",
    "energy_wh",
    "carbon_g",
    "embodied_g",
    "gpu_hours",
];

/// The FOCUS rows of `period` from the session's `rollups` table, ordered
/// by charge period, tenant, team, project, kind, model, region.
pub async fn focus(
    ctx: &SessionContext,
    period: &Period,
    granularity: Granularity,
    parties: &Parties,
) -> Result<RecordBatch, ExportError> {
    let mut group = vec![date_trunc(lit(granularity.unit()), col("window_start")).alias("start")];
    group.extend(
        DIMS.iter()
            .map(|d| cast_expr(col(*d), DataType::Utf8).alias(*d)),
    );
    let df = ctx
        .table("rollups")
        .await?
        .filter(
            period
                .filter()
                .and(col("kind").in_list(vec![lit("inference"), lit("training")], false)),
        )?
        .aggregate(group, SUMS.iter().map(|m| sum(col(*m)).alias(*m)).collect())?
        .sort(
            [
                "start",
                "tenant",
                "team",
                "project",
                "kind",
                "model",
                "region",
                "environment",
            ]
            .iter()
            .map(|c| col(*c).sort(true, true))
            .collect(),
        )?;
    let batches = df.collect().await?;
    let schema = focus_schema();
    let mut out = Vec::with_capacity(batches.len());
    for b in &batches {
        out.push(to_focus(b, period, granularity, parties, &schema)?);
    }
    Ok(arrow::compute::concat_batches(&schema, &out)?)
}

/// Measures added after schema 3 are null in older files: 0 here.
fn zero_null_ints(a: Int64Array) -> Int64Array {
    a.iter().map(|v| Some(v.unwrap_or(0))).collect()
}

fn zero_null_floats(a: Float64Array) -> Float64Array {
    a.iter().map(|v| Some(v.unwrap_or(0.0))).collect()
}

fn column<T: Array + Clone + 'static>(
    b: &RecordBatch,
    name: &str,
    as_type: &DataType,
) -> Result<T, ExportError> {
    let c = b.column_by_name(name).ok_or_else(|| {
        arrow::error::ArrowError::SchemaError(format!("the rollups have no column {name}"))
    })?;
    let c = cast(c, as_type)?;
    c.as_any().downcast_ref::<T>().cloned().ok_or_else(|| {
        ExportError::Arrow(arrow::error::ArrowError::CastError(format!(
            "column {name} is not {as_type}"
        )))
    })
}

/// What the kind is priced in, for FOCUS's pricing and consumed units.
struct Charge {
    service: &'static str,
    subcategory: &'static str,
    pricing_unit: &'static str,
    consumed_unit: &'static str,
}

fn charge(kind: &str) -> Charge {
    match kind {
        "training" => Charge {
            service: "Tollgate model training",
            subcategory: "Machine Learning",
            pricing_unit: "GPU Hours",
            consumed_unit: "GPU Hours",
        },
        _ => Charge {
            service: "Tollgate model inference",
            subcategory: "Generative AI",
            pricing_unit: "1K Tokens",
            consumed_unit: "Tokens",
        },
    }
}

fn to_focus(
    b: &RecordBatch,
    period: &Period,
    granularity: Granularity,
    parties: &Parties,
    schema: &SchemaRef,
) -> Result<RecordBatch, ExportError> {
    let utf8 = DataType::Utf8;
    let ts_type = DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()));
    let start: TimestampMillisecondArray = column(b, "start", &ts_type)?;
    let dims: Vec<StringArray> = DIMS
        .iter()
        .map(|d| column::<StringArray>(b, d, &utf8))
        .collect::<Result<_, _>>()?;
    let [tenant, team, environment, project, kind, model, region] = &dims[..] else {
        unreachable!("DIMS has seven columns")
    };
    let f = |n| column::<Float64Array>(b, n, &DataType::Float64);
    let i = |n| column::<Int64Array>(b, n, &DataType::Int64);
    let (cost, energy, carbon, embodied, gpu_hours) = (
        f("cost_usd")?,
        f("energy_wh")?,
        f("carbon_g")?,
        zero_null_floats(f("embodied_g")?),
        f("gpu_hours")?,
    );
    let (events, input, cached, written, output, reasoning) = (
        i("events")?,
        i("input_tokens")?,
        i("cached_input_tokens")?,
        zero_null_ints(i("cache_write_tokens")?),
        i("output_tokens")?,
        zero_null_ints(i("reasoning_tokens")?),
    );
    let n = b.num_rows();
    let opt = |a: &StringArray, r: usize| (!a.is_null(r)).then(|| a.value(r).to_string());
    let mut s: BTreeMap<&str, StringBuilder> = BTreeMap::new();
    let mut text = |name: &'static str, v: Option<&str>| {
        let b = s.entry(name).or_default();
        b.append_option(v);
    };
    let mut consumed = Float64Builder::with_capacity(n);
    let mut pricing = Float64Builder::with_capacity(n);
    let mut unit_price = Float64Builder::with_capacity(n);
    let mut starts = Vec::with_capacity(n);
    let mut ends = Vec::with_capacity(n);
    for r in 0..n {
        let k = kind.value(r);
        let c = charge(k);
        let tokens = (input.value(r) + output.value(r)) as f64;
        let (consumed_q, pricing_q) = if k == "training" {
            (gpu_hours.value(r), gpu_hours.value(r))
        } else {
            (tokens, tokens / 1000.0)
        };
        consumed.append_value(consumed_q);
        pricing.append_value(pricing_q);
        unit_price.append_option((pricing_q > 0.0).then(|| cost.value(r) / pricing_q));
        let st = start.value(r);
        starts.push(st);
        ends.push(st + granularity.ms());
        let model_name = opt(model, r);
        let what = model_name.as_deref().unwrap_or("an unknown model");
        let description = if k == "training" {
            format!("training on {what}: {:.3} GPU hours", gpu_hours.value(r))
        } else {
            format!(
                "inference on {what}: {} requests, {} input and {} output tokens",
                events.value(r),
                input.value(r),
                output.value(r)
            )
        };
        let mut tags = serde_json::Map::new();
        for (key, a) in [
            ("environment", environment),
            ("project", project),
            ("team", team),
        ] {
            if let Some(v) = opt(a, r) {
                tags.insert(key.into(), serde_json::Value::String(v));
            }
        }
        let t = opt(tenant, r);
        let team_v = opt(team, r);
        let region_v = opt(region, r);
        text("BillingAccountId", t.as_deref());
        text("BillingAccountName", t.as_deref());
        text("BillingCurrency", Some("USD"));
        text("ChargeCategory", Some("Usage"));
        text("ChargeClass", None);
        text("ChargeDescription", Some(&description));
        text("ChargeFrequency", Some("Usage-Based"));
        text("ConsumedUnit", Some(c.consumed_unit));
        text("InvoiceIssuerName", Some(&parties.invoice_issuer_name));
        text("PricingUnit", Some(c.pricing_unit));
        text("ProviderName", Some(&parties.provider_name));
        text("PublisherName", Some(&parties.publisher_name));
        text("RegionId", region_v.as_deref());
        text("RegionName", region_v.as_deref());
        text("ResourceId", model_name.as_deref());
        text("ResourceName", model_name.as_deref());
        text("ResourceType", model_name.as_ref().map(|_| "Model"));
        text("ServiceCategory", Some("AI and Machine Learning"));
        text("ServiceName", Some(c.service));
        text("ServiceSubcategory", Some(c.subcategory));
        text("SubAccountId", team_v.as_deref());
        text("SubAccountName", team_v.as_deref());
        text("Tags", Some(&serde_json::Value::Object(tags).to_string()));
        text("x_Kind", Some(k));
    }
    let stamp = |v: Vec<i64>| -> ArrayRef {
        Arc::new(TimestampMillisecondArray::from(v).with_timezone("UTC"))
    };
    let cost: ArrayRef = Arc::new(cost);
    let unit_price: ArrayRef = Arc::new(unit_price.finish());
    let mut columns = Vec::with_capacity(schema.fields().len());
    for field in schema.fields() {
        let name = field.name().as_str();
        let array: ArrayRef = match name {
            "BilledCost" | "ContractedCost" | "EffectiveCost" | "ListCost" => cost.clone(),
            "ContractedUnitPrice" | "ListUnitPrice" => unit_price.clone(),
            "BillingPeriodStart" => stamp(vec![period.start_ms; n]),
            "BillingPeriodEnd" => stamp(vec![period.end_ms; n]),
            "ChargePeriodStart" => stamp(starts.clone()),
            "ChargePeriodEnd" => stamp(ends.clone()),
            "ConsumedQuantity" => Arc::new(consumed.finish_cloned()),
            "PricingQuantity" => Arc::new(pricing.finish_cloned()),
            "x_Requests" => Arc::new(events.clone()),
            "x_InputTokens" => Arc::new(input.clone()),
            "x_CachedInputTokens" => Arc::new(cached.clone()),
            "x_CacheWriteTokens" => Arc::new(written.clone()),
            "x_OutputTokens" => Arc::new(output.clone()),
            "x_ReasoningTokens" => Arc::new(reasoning.clone()),
            "x_EnergyWh" => Arc::new(energy.clone()),
            "x_CarbonGrams" => Arc::new(carbon.clone()),
            "x_EmbodiedCarbonGrams" => Arc::new(embodied.clone()),
            "x_GpuHours" => Arc::new(gpu_hours.clone()),
            _ => match s.get_mut(name) {
                Some(b) => Arc::new(b.finish()),
                None => Arc::new(StringArray::from(vec![None::<&str>; n])),
            },
        };
        columns.push(array);
    }
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

/// How an export is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Parquet,
    Csv,
}

impl Format {
    pub fn parse(v: &str) -> Result<Format, ExportError> {
        match v {
            "parquet" => Ok(Format::Parquet),
            "csv" => Ok(Format::Csv),
            _ => Err(ExportError::Format(v.to_string())),
        }
    }

    /// From a file name's extension (`.csv`; anything else is Parquet).
    pub fn of_path(p: &std::path::Path) -> Format {
        match p.extension().and_then(|e| e.to_str()) {
            Some(e) if e.eq_ignore_ascii_case("csv") => Format::Csv,
            _ => Format::Parquet,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Parquet => "application/vnd.apache.parquet",
            Format::Csv => "text/csv; charset=utf-8",
        }
    }
}

/// Encode `batch` (Parquet: zstd, one row group per 1 M rows; CSV: a
/// header, timestamps as `YYYY-MM-DDTHH:MM:SSZ`).
pub fn write(batch: &RecordBatch, format: Format) -> Result<Vec<u8>, ExportError> {
    let mut out = Vec::new();
    match format {
        Format::Parquet => {
            let props = parquet::file::properties::WriterProperties::builder()
                .set_compression(parquet::basic::Compression::ZSTD(
                    parquet::basic::ZstdLevel::try_new(3)?,
                ))
                .set_max_row_group_row_count(Some(1 << 20))
                .build();
            let mut w =
                parquet::arrow::ArrowWriter::try_new(&mut out, batch.schema(), Some(props))?;
            w.write(batch)?;
            w.close()?;
        }
        Format::Csv => {
            let mut w = arrow::csv::WriterBuilder::new()
                .with_header(true)
                .with_timestamp_tz_format("%Y-%m-%dT%H:%M:%SZ".to_string())
                .build(&mut out);
            w.write(batch)?;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
