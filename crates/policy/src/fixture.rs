//! `tollgate policy test`: fixture files of input rollups and expected
//! decisions, like `opa test`.
//!
//! `<policies>/tests/<anything>.toml`:
//!
//! ```toml
//! policy = "team-window-spend"
//!
//! [[case]]
//! name = "a team over its limit is denied; one under it is not"
//! kind = "inference"                       # default inference
//! window_start = "2026-11-22T10:00:00Z"    # default 2026-01-01T00:00:00Z
//! window_secs = 60                         # default 60
//! params = { limit_usd = 100.0 }           # overrides the policy's defaults
//! rollups = [
//!   { tenant = "acme", team = "ml", cost_usd = 150.0, events = 3 },
//!   { tenant = "acme", team = "web", cost_usd = 5.0, events = 1 },
//! ]
//! history = []                             # rows of `history`, same shape
//! month_to_date = [                        # rows of `month_to_date`
//!   { tenant = "acme", team = "ml", cost_usd = 900.0 },
//! ]
//! [[case.expect]]                          # exactly these decisions
//! subject = "tenant=acme/team=ml"
//! verdict = "deny"                         # optional
//! reason_contains = "150.00"               # optional
//! observed = { spend_usd = 150.0 }         # optional, a subset
//! ```
//!
//! Rows name rollup columns; columns left out are 0 (counts and sums),
//! null (nullable columns) or derived from the window (`window_start`,
//! `window_end`, `last_event_time`; for history rows also `kind`, `date` and
//! `hour`). Fixtures run with the policy's own defaults plus the case's
//! `params`, never the deployment's overrides, so they mean the same
//! everywhere.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray,
};
use arrow::datatypes::{DataType, SchemaRef};
use serde::Deserialize;
use serde_json::Value;

use crate::{tables, EngineOptions, PolicyEngine, PolicyError, WindowInput};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FixtureFile {
    policy: String,
    #[serde(default)]
    case: Vec<Case>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    #[serde(default = "default_kind")]
    kind: String,
    #[serde(default)]
    window_start: Option<String>,
    #[serde(default = "default_window_secs")]
    window_secs: i64,
    #[serde(default)]
    params: BTreeMap<String, toml::Value>,
    #[serde(default)]
    rollups: Vec<toml::Table>,
    #[serde(default)]
    history: Vec<toml::Table>,
    #[serde(default)]
    month_to_date: Vec<toml::Table>,
    #[serde(default)]
    expect: Vec<Expect>,
}

fn default_kind() -> String {
    "inference".into()
}

fn default_window_secs() -> i64 {
    60
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    subject: String,
    #[serde(default)]
    verdict: Option<String>,
    #[serde(default)]
    reason_contains: Option<String>,
    #[serde(default)]
    observed: toml::Table,
}

/// The outcome of one case.
#[derive(Debug, Clone)]
pub struct CaseResult {
    pub file: PathBuf,
    pub policy: String,
    pub case: String,
    /// Empty when the case passed.
    pub failures: Vec<String>,
}

impl CaseResult {
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

/// Run every fixture in `<dir>/tests/`. Policies in `dir` without any
/// fixture are reported as a failed case too.
pub async fn run_dir(
    dir: &Path,
    file_schema: SchemaRef,
    regions: Vec<(String, f64)>,
) -> Result<Vec<CaseResult>, PolicyError> {
    // Load everything once first: a broken policy fails here, named.
    let all = PolicyEngine::load(EngineOptions {
        dir: dir.to_owned(),
        params: BTreeMap::new(),
        disabled: vec![],
        file_schema: file_schema.clone(),
        history: None,
        regions: regions.clone(),
    })
    .await?;
    let names: Vec<String> = all.policies().iter().map(|p| p.name.clone()).collect();

    let tests = dir.join("tests");
    let mut files: Vec<PathBuf> = match std::fs::read_dir(&tests) {
        Ok(rd) => rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(source) => {
            return Err(PolicyError::Io {
                path: tests,
                source,
            })
        }
    };
    files.sort();

    let mut results = Vec::new();
    let mut covered = std::collections::HashSet::new();
    for file in files {
        let bad_file = |msg: String| CaseResult {
            file: file.clone(),
            policy: String::new(),
            case: "(fixture file)".into(),
            failures: vec![msg],
        };
        let text = match std::fs::read_to_string(&file) {
            Ok(t) => t,
            Err(e) => {
                results.push(bad_file(e.to_string()));
                continue;
            }
        };
        let fixture: FixtureFile = match toml::from_str(&text) {
            Ok(f) => f,
            Err(e) => {
                results.push(bad_file(e.to_string()));
                continue;
            }
        };
        if !names.contains(&fixture.policy) {
            results.push(bad_file(format!(
                "policy `{}` is not in {}",
                fixture.policy,
                dir.display()
            )));
            continue;
        }
        if fixture.case.is_empty() {
            results.push(bad_file("no [[case]] in the file".into()));
            continue;
        }
        covered.insert(fixture.policy.clone());
        for case in fixture.case {
            let failures =
                match run_case(dir, &fixture.policy, &case, &file_schema, &regions, &names).await {
                    Ok(f) => f,
                    Err(e) => vec![e],
                };
            results.push(CaseResult {
                file: file.clone(),
                policy: fixture.policy.clone(),
                case: case.name.clone(),
                failures,
            });
        }
    }
    for name in names.iter().filter(|n| !covered.contains(*n)) {
        results.push(CaseResult {
            file: tests.join(format!("{name}.toml")),
            policy: name.clone(),
            case: "(coverage)".into(),
            failures: vec!["the policy has no fixture; add one under tests/".into()],
        });
    }
    Ok(results)
}

async fn run_case(
    dir: &Path,
    policy: &str,
    case: &Case,
    file_schema: &SchemaRef,
    regions: &[(String, f64)],
    names: &[String],
) -> Result<Vec<String>, String> {
    let start_ms = match &case.window_start {
        Some(s) => parse_ts(s)?,
        None => parse_ts("2026-01-01T00:00:00Z")?,
    };
    if case.window_secs <= 0 {
        return Err("window_secs must be positive".into());
    }
    let end_ms = start_ms + case.window_secs * 1000;
    let history_schema = tables::history_schema(file_schema);
    let history = tables::SwapTable::new(history_schema.clone());
    let mut params = BTreeMap::new();
    if !case.params.is_empty() {
        params.insert(policy.to_owned(), case.params.clone());
    }
    let engine = PolicyEngine::load(EngineOptions {
        dir: dir.to_owned(),
        params,
        disabled: names.iter().filter(|n| *n != policy).cloned().collect(),
        file_schema: file_schema.clone(),
        history: Some(history.clone()),
        regions: regions.to_vec(),
    })
    .await
    .map_err(|e| e.to_string())?;

    let prev_start = start_ms - case.window_secs * 1000;
    let history_rows = rows_to_batch(
        &history_schema,
        &case.history,
        prev_start,
        start_ms,
        &case.kind,
    )
    .map_err(|e| format!("history: {e}"))?;
    history.set(vec![history_rows]);
    let rows = rows_to_batch(file_schema, &case.rollups, start_ms, end_ms, &case.kind)
        .map_err(|e| format!("rollups: {e}"))?;
    let month_to_date = rows_to_batch(
        &tables::month_to_date_schema(),
        &case.month_to_date,
        start_ms,
        end_ms,
        &case.kind,
    )
    .map_err(|e| format!("month_to_date: {e}"))?;

    let source = format!("tollgate.{}/0", case.kind);
    let eval = engine
        .evaluate(&WindowInput {
            kind: &case.kind,
            source: &source,
            start_ms,
            end_ms,
            rows: &rows,
            month_to_date: Ok(&month_to_date),
        })
        .await;

    let mut failures: Vec<String> = eval.errors.iter().map(|e| e.to_string()).collect();
    for exp in &case.expect {
        let Some(d) = eval.drafts.iter().find(|d| d.subject == exp.subject) else {
            failures.push(format!(
                "expected a decision for {:?}; got {:?}",
                exp.subject,
                eval.drafts.iter().map(|d| &d.subject).collect::<Vec<_>>()
            ));
            continue;
        };
        if let Some(v) = &exp.verdict {
            if v != d.verdict.as_str() {
                failures.push(format!(
                    "{}: verdict {} , expected {v}",
                    exp.subject,
                    d.verdict.as_str()
                ));
            }
        }
        if let Some(s) = &exp.reason_contains {
            if !d.reasons.iter().any(|r| r.contains(s.as_str())) {
                failures.push(format!(
                    "{}: no reason contains {s:?}; reasons: {:?}",
                    exp.subject, d.reasons
                ));
            }
        }
        for (k, want) in &exp.observed {
            let got = d.observed.get(k).unwrap_or(&Value::Null);
            if !same(got, want) {
                failures.push(format!(
                    "{}: observed {k} = {got}, expected {want}",
                    exp.subject
                ));
            }
        }
    }
    for d in &eval.drafts {
        if !case.expect.iter().any(|e| e.subject == d.subject) {
            failures.push(format!(
                "unexpected decision for {:?}: {:?}",
                d.subject, d.reasons
            ));
        }
    }
    Ok(failures)
}

fn same(got: &Value, want: &toml::Value) -> bool {
    match (got, want) {
        (Value::Number(g), toml::Value::Float(w)) => g.as_f64().is_some_and(|g| close(g, *w)),
        (Value::Number(g), toml::Value::Integer(w)) => {
            g.as_f64().is_some_and(|g| close(g, *w as f64))
        }
        (Value::String(g), toml::Value::String(w)) => g == w,
        (Value::Bool(g), toml::Value::Boolean(w)) => g == w,
        _ => false,
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

fn parse_ts(s: &str) -> Result<i64, String> {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.timestamp_millis())
        .map_err(|e| format!("bad timestamp {s:?}: {e}"))
}

/// Build a batch of `schema` from TOML rows, filling what they leave out.
pub fn rows_to_batch(
    schema: &SchemaRef,
    rows: &[toml::Table],
    start_ms: i64,
    end_ms: i64,
    kind: &str,
) -> Result<RecordBatch, String> {
    for (i, r) in rows.iter().enumerate() {
        for k in r.keys() {
            if schema.field_with_name(k).is_err() {
                return Err(format!("row {}: unknown column `{k}`", i + 1));
            }
        }
    }
    let mut cols: Vec<ArrayRef> = Vec::new();
    for f in schema.fields() {
        let name = f.name().as_str();
        let cell = |r: &toml::Table| r.get(name).cloned();
        let ts_of = |r: &toml::Table, key: &str| -> Result<Option<i64>, String> {
            match r.get(key) {
                Some(toml::Value::String(s)) => parse_ts(s).map(Some),
                Some(toml::Value::Integer(i)) => Ok(Some(*i)),
                Some(other) => Err(format!("`{key}`: expected a timestamp, got {other}")),
                None => Ok(None),
            }
        };
        let row_start = |r: &toml::Table| -> Result<i64, String> {
            Ok(ts_of(r, "window_start")?.unwrap_or(start_ms))
        };
        let col: ArrayRef = match f.data_type() {
            DataType::Timestamp(..) => {
                let mut v = Vec::with_capacity(rows.len());
                for r in rows {
                    let s = row_start(r)?;
                    v.push(match name {
                        "window_start" => s,
                        "window_end" => ts_of(r, name)?.unwrap_or(s + (end_ms - start_ms)),
                        _ => ts_of(r, name)?.unwrap_or(s),
                    });
                }
                Arc::new(TimestampMillisecondArray::from(v).with_timezone("UTC"))
            }
            DataType::Utf8 => {
                let mut v: Vec<Option<String>> = Vec::with_capacity(rows.len());
                for r in rows {
                    let derived = || -> Result<Option<String>, String> {
                        let s = chrono::DateTime::from_timestamp_millis(row_start(r)?)
                            .unwrap_or_default();
                        Ok(match name {
                            "kind" => Some(kind.to_owned()),
                            "date" => Some(s.format("%Y-%m-%d").to_string()),
                            "hour" => Some(s.format("%H").to_string()),
                            _ => None,
                        })
                    };
                    v.push(match cell(r) {
                        Some(toml::Value::String(s)) => Some(s),
                        Some(other) => {
                            return Err(format!("`{name}`: expected a string, got {other}"))
                        }
                        None if f.is_nullable() => None,
                        None => match derived()? {
                            Some(s) => Some(s),
                            None => return Err(format!("`{name}` is required in every row")),
                        },
                    });
                }
                Arc::new(StringArray::from(v))
            }
            DataType::Int64 => {
                let mut v = Vec::with_capacity(rows.len());
                for r in rows {
                    v.push(match cell(r) {
                        Some(toml::Value::Integer(i)) => Some(i),
                        Some(other) => {
                            return Err(format!("`{name}`: expected an integer, got {other}"))
                        }
                        None => (!f.is_nullable()).then_some(0),
                    });
                }
                Arc::new(Int64Array::from(v))
            }
            DataType::Float64 => {
                let mut v = Vec::with_capacity(rows.len());
                for r in rows {
                    v.push(match cell(r) {
                        Some(toml::Value::Float(x)) => Some(x),
                        Some(toml::Value::Integer(i)) => Some(i as f64),
                        Some(other) => {
                            return Err(format!("`{name}`: expected a number, got {other}"))
                        }
                        None => (!f.is_nullable()).then_some(0.0),
                    });
                }
                Arc::new(Float64Array::from(v))
            }
            other => return Err(format!("column `{name}` has unsupported type {other}")),
        };
        cols.push(col);
    }
    RecordBatch::try_new(schema.clone(), cols).map_err(|e| e.to_string())
}
