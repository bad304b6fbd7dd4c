//! Policies as code: one TOML file per policy in a directory (the shipped
//! ones are in `pipelines/policies/`), each with SQL that DataFusion runs over
//! a closed window's rollups. Every row the SQL returns is a violation and
//! becomes a [`Draft`] decision.
//!
//! ```toml
//! description = "Team spend in one window above a limit"
//! verdict = "deny"                  # or "warn"
//! kinds = ["inference", "training"] # windows it runs on; default all
//! subject = "tenant={tenant}/team={team}"
//! message = "team {team} spent {spend_usd:.2} USD, above {limit_usd} USD"
//! sql = """
//! SELECT tenant, team, sum(cost_usd) AS spend_usd, $limit_usd AS limit_usd
//! FROM rollups WHERE team IS NOT NULL
//! GROUP BY tenant, team HAVING sum(cost_usd) > $limit_usd
//! """
//! [params]
//! limit_usd = 100.0
//! ```
//!
//! Tables: `rollups` (the closed window), `month_to_date` (the window's
//! month so far by tenant and team, [`tables::month_to_date_schema`]),
//! `history` (every rollup file so far, with hive columns `kind`, `date`,
//! `hour`; read in full by every plan, so its cost grows with the tree) and
//! `regions` (the price book's grid intensities). Parameters: see
//! [`params`].
//!
//! Cost per window: the SQL is parsed, planned and checked once, at load.
//! Per window the cached logical plan gets the window parameters bound, is
//! optimized and executed; where the window cannot change the physical plan,
//! that too is kept and run again ([`PlanCache`]). Errors at load name the
//! file; errors while evaluating are reported per policy and never stop the
//! others.

pub mod fixture;
pub mod params;
pub mod tables;
pub mod template;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Float64Type, Int64Type, SchemaRef, TimeUnit, UInt64Type};
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::common::ParamValues;
use datafusion::datasource::{MemTable, TableProvider};
use datafusion::execution::context::{SQLOptions, SessionConfig, SessionContext};
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::execution_plan::reset_plan_states;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::scalar::ScalarValue;
use serde::Deserialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use tollgate_decision::{DecisionWindow, Draft, Verdict};

pub use tables::SwapTable;
use template::Template;

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("policy {}: {message}", path.display())]
    Load { path: PathBuf, message: String },
    #[error("policies: {}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))]
    Many(Vec<PolicyError>),
    #[error("policy directory {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("policy configuration: {0}")]
    Config(String),
    #[error("policy {policy}: {message}")]
    Eval { policy: String, message: String },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    #[serde(default)]
    description: String,
    verdict: String,
    #[serde(default)]
    kinds: Vec<String>,
    subject: String,
    message: String,
    sql: String,
    #[serde(default)]
    params: BTreeMap<String, toml::Value>,
}

/// A loaded, planned policy.
#[derive(Debug)]
pub struct Policy {
    pub name: String,
    pub path: PathBuf,
    /// `sha256:` + 16 hex digits over the file and the effective parameters:
    /// any change to either is a new revision (and new decision ids).
    pub revision: String,
    pub verdict: Verdict,
    /// Window kinds it runs on; empty means all.
    pub kinds: Vec<String>,
    pub description: String,
    pub params: BTreeMap<String, toml::Value>,
    subject: Template,
    message: Template,
    plan: LogicalPlan,
    cache: Option<PlanCache>,
    reads_month_to_date: bool,
}

impl Policy {
    pub fn applies_to(&self, kind: &str) -> bool {
        self.kinds.is_empty() || self.kinds.iter().any(|k| k == kind)
    }

    /// Physical plans kept for reuse; `None` when it is planned per window.
    pub fn cached_plans(&self) -> Option<usize> {
        self.cache
            .as_ref()
            .map(|c| c.plans.lock().unwrap_or_else(|p| p.into_inner()).len())
    }
}

/// What the engine is built from.
pub struct EngineOptions {
    /// Directory of `*.toml` policy files.
    pub dir: PathBuf,
    /// Parameter overrides by policy name (from the pipeline config).
    pub params: BTreeMap<String, BTreeMap<String, toml::Value>>,
    /// Policy names not to load.
    pub disabled: Vec<String>,
    /// The rollup file schema (`tollgate_rollup::schema()`).
    pub file_schema: SchemaRef,
    /// `history`; `None` gives an empty table of the right schema.
    pub history: Option<Arc<dyn TableProvider>>,
    /// `regions`: (region, g CO2e per kWh).
    pub regions: Vec<(String, f64)>,
}

/// One closed window to evaluate.
pub struct WindowInput<'a> {
    pub kind: &'a str,
    /// `<topic>/<partition>`.
    pub source: &'a str,
    pub start_ms: i64,
    pub end_ms: i64,
    /// Rows in the rollup file schema.
    pub rows: &'a RecordBatch,
    /// `month_to_date` for the window's month
    /// ([`tables::month_to_date_schema`]; see
    /// [`PolicyEngine::reads_month_to_date`]). `Err` says why it could not be
    /// read: the policies reading it then fail on this window (never judged
    /// against a table that is short).
    pub month_to_date: Result<&'a RecordBatch, &'a str>,
}

#[derive(Debug, Default)]
pub struct Evaluation {
    pub drafts: Vec<Draft>,
    /// Policies that failed on this window; the others still ran.
    pub errors: Vec<PolicyError>,
    /// Time per policy that ran.
    pub timings: Vec<(String, Duration)>,
}

pub struct PolicyEngine {
    ctx: SessionContext,
    rollups: Arc<SwapTable>,
    month_to_date: Arc<SwapTable>,
    rollups_schema: SchemaRef,
    policies: Vec<Policy>,
    // One evaluation at a time: the `rollups` table is shared.
    lock: tokio::sync::Mutex<()>,
}

fn session() -> SessionContext {
    // Windows are small: one partition avoids repartitioning overhead.
    let mut config = SessionConfig::new()
        .with_target_partitions(1)
        .with_information_schema(false);
    // Physical plans are reused across windows (`PlanCache`); DataFusion
    // cannot re-execute a plan holding dynamic filters, and windows are too
    // small for them to pay off.
    let optimizer = &mut config.options_mut().optimizer;
    optimizer.enable_dynamic_filter_pushdown = false;
    optimizer.enable_topk_dynamic_filter_pushdown = false;
    optimizer.enable_join_dynamic_filter_pushdown = false;
    optimizer.enable_aggregate_dynamic_filter_pushdown = false;
    SessionContext::new_with_config(config)
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

const KINDS: [&str; 3] = ["inference", "training", "heartbeat"];

impl PolicyEngine {
    /// Load and plan every policy in `opts.dir`. Every broken file is
    /// reported, each with its path.
    pub async fn load(opts: EngineOptions) -> Result<Self, PolicyError> {
        let ctx = session();
        let rollups_schema = tables::rollups_schema(&opts.file_schema);
        let rollups = SwapTable::new(rollups_schema.clone());
        let df = |e: datafusion::error::DataFusionError| PolicyError::Config(e.to_string());
        ctx.register_table("rollups", rollups.clone()).map_err(df)?;
        let month_to_date = SwapTable::new(tables::month_to_date_schema());
        ctx.register_table(MONTH_TO_DATE, month_to_date.clone())
            .map_err(df)?;
        let history: Arc<dyn TableProvider> = match opts.history {
            Some(h) => h,
            None => Arc::new(
                MemTable::try_new(tables::history_schema(&opts.file_schema), vec![vec![]])
                    .map_err(df)?,
            ),
        };
        ctx.register_table(HISTORY, history).map_err(df)?;
        let regions = tables::regions_batch(&opts.regions).map_err(df)?;
        ctx.register_table(
            "regions",
            Arc::new(MemTable::try_new(regions.schema(), vec![vec![regions]]).map_err(df)?),
        )
        .map_err(df)?;

        let mut files: Vec<PathBuf> = std::fs::read_dir(&opts.dir)
            .map_err(|source| PolicyError::Io {
                path: opts.dir.clone(),
                source,
            })?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "toml"))
            .collect();
        files.sort();

        let mut policies = Vec::new();
        let mut errors = Vec::new();
        let mut seen = HashSet::new();
        for path in files {
            let name = path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default()
                .to_owned();
            seen.insert(name.clone());
            if opts.disabled.contains(&name) {
                tracing::debug!(policy = %name, "disabled by configuration");
                continue;
            }
            match load_one(&ctx, &path, &name, opts.params.get(&name)).await {
                Ok(p) => policies.push(p),
                Err(message) => errors.push(PolicyError::Load { path, message }),
            }
        }
        for name in opts.params.keys().chain(opts.disabled.iter()) {
            if !seen.contains(name) {
                errors.push(PolicyError::Config(format!(
                    "configuration names policy `{name}`, which is not in {}",
                    opts.dir.display()
                )));
            }
        }
        match errors.len() {
            0 => Ok(PolicyEngine {
                ctx,
                rollups,
                month_to_date,
                rollups_schema,
                policies,
                lock: tokio::sync::Mutex::new(()),
            }),
            1 => Err(errors.remove(0)),
            _ => Err(PolicyError::Many(errors)),
        }
    }

    pub fn policies(&self) -> &[Policy] {
        &self.policies
    }

    /// Does any policy that applies to `kind` read `month_to_date`? If not,
    /// callers need not build it.
    pub fn reads_month_to_date(&self, kind: &str) -> bool {
        self.policies
            .iter()
            .any(|p| p.reads_month_to_date && p.applies_to(kind))
    }

    /// Run every policy that applies to the window's kind.
    pub async fn evaluate(&self, w: &WindowInput<'_>) -> Evaluation {
        let _guard = self.lock.lock().await;
        let mut out = Evaluation::default();
        let batch = match with_kind(w.rows, w.kind, &self.rollups_schema) {
            Ok(b) => b,
            Err(message) => {
                out.errors.push(PolicyError::Eval {
                    policy: "*".into(),
                    message,
                });
                return out;
            }
        };
        self.rollups.set(vec![batch]);
        if let Ok(m) = w.month_to_date {
            self.month_to_date.set(vec![m.clone()]);
        }
        let values = params::window_values(w.kind, w.source, w.start_ms, w.end_ms);
        let window = DecisionWindow::from_millis(w.start_ms, w.end_ms, w.source);
        for p in self.policies.iter().filter(|p| p.applies_to(w.kind)) {
            let started = Instant::now();
            let ran = match w.month_to_date {
                Err(why) if p.reads_month_to_date => {
                    Err(format!("{MONTH_TO_DATE} could not be read: {why}"))
                }
                _ => self.run(p, &values).await,
            };
            match ran {
                Ok(rows) => {
                    let mut subjects = HashSet::new();
                    for row in rows {
                        let subject = p.subject.render(&row);
                        if !subjects.insert(subject.clone()) {
                            out.errors.push(PolicyError::Eval {
                                policy: p.name.clone(),
                                message: format!(
                                    "two violations have the subject {subject:?}; put the distinguishing columns in `subject` (kept the first)"
                                ),
                            });
                            continue;
                        }
                        out.drafts.push(Draft {
                            policy: p.name.clone(),
                            policy_revision: p.revision.clone(),
                            reasons: vec![p.message.render(&row)],
                            subject,
                            window: Some(window.clone()),
                            observed: row,
                            verdict: p.verdict,
                        });
                    }
                }
                Err(message) => out.errors.push(PolicyError::Eval {
                    policy: p.name.clone(),
                    message,
                }),
            }
            out.timings.push((p.name.clone(), started.elapsed()));
        }
        self.rollups.set(Vec::new());
        self.month_to_date.set(Vec::new());
        out
    }

    async fn run(
        &self,
        p: &Policy,
        window: &[(&'static str, ScalarValue)],
    ) -> Result<Vec<Map<String, Value>>, String> {
        let plan = match &p.cache {
            None => self.physical_plan(p, window).await?,
            Some(cache) => {
                let key = cache.key(window);
                let kept = match cache.get(&key) {
                    Some(plan) => plan,
                    None => {
                        let plan = self.physical_plan(p, window).await?;
                        cache.put(key, &plan).map_err(|e| e.to_string())?;
                        plan
                    }
                };
                // Each run gets its own copy of the kept plan, state reset
                // (join build sides and the like); the kept one never runs.
                reset_plan_states(kept).map_err(|e| e.to_string())?
            }
        };
        let batches = datafusion::physical_plan::collect(plan, self.ctx.task_ctx())
            .await
            .map_err(|e| e.to_string())?;
        json_rows(&batches)
    }

    /// Bind the window's values, optimize and plan.
    async fn physical_plan(
        &self,
        p: &Policy,
        window: &[(&'static str, ScalarValue)],
    ) -> Result<Arc<dyn ExecutionPlan>, String> {
        let values: ParamValues = window.to_vec().into();
        let plan = p
            .plan
            .clone()
            .with_param_values(values)
            .map_err(|e| e.to_string())?;
        self.ctx
            .state()
            .create_physical_plan(&plan)
            .await
            .map_err(|e| e.to_string())
    }
}

/// Physical plans of one policy, reused across windows. Only for policies
/// whose plan depends on nothing that changes between windows except the
/// window's rows, which [`SwapExec`](tables::SwapExec) reads at execution:
/// no `history` (its file list is taken when planning) and no window
/// parameter other than those in [`params::PLAN_KEY_PARAMS`], whose values
/// key the cache.
#[derive(Debug)]
struct PlanCache {
    keys: Vec<&'static str>,
    plans: std::sync::Mutex<HashMap<Vec<ScalarValue>, Arc<dyn ExecutionPlan>>>,
}

/// The table of every rollup file so far. A listing table: it takes its file
/// list when a plan is made, so plans reading it are made per window.
const HISTORY: &str = "history";

/// The window's month so far by team; set for each window like `rollups`.
const MONTH_TO_DATE: &str = "month_to_date";

/// Names of the tables a plan scans, subqueries included.
fn tables_read(plan: &LogicalPlan) -> datafusion::error::Result<HashSet<String>> {
    let mut tables = HashSet::new();
    plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            tables.insert(scan.table_name.table().to_owned());
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    Ok(tables)
}

/// Plans kept per policy at most (one per kind and source in practice).
const PLAN_CACHE_ENTRIES: usize = 256;

impl PlanCache {
    /// `None` when the plan must be made again for each window.
    fn for_plan(
        plan: &LogicalPlan,
        tables: &HashSet<String>,
    ) -> datafusion::error::Result<Option<Self>> {
        let reads_history = tables.contains(HISTORY);
        let mut keys = Vec::new();
        for name in plan.get_parameter_types()?.keys() {
            let name = name.trim_start_matches('$');
            match params::PLAN_KEY_PARAMS.iter().find(|k| **k == name) {
                Some(k) => keys.push(*k),
                None => return Ok(None),
            }
        }
        keys.sort_unstable();
        Ok((!reads_history).then(|| PlanCache {
            keys,
            plans: Default::default(),
        }))
    }

    /// The values of the parameters that key the cache, for this window.
    fn key(&self, window: &[(&'static str, ScalarValue)]) -> Vec<ScalarValue> {
        self.keys
            .iter()
            .map(|k| {
                window
                    .iter()
                    .find(|(n, _)| n == k)
                    .map_or(ScalarValue::Null, |(_, v)| v.clone())
            })
            .collect()
    }

    fn get(&self, key: &[ScalarValue]) -> Option<Arc<dyn ExecutionPlan>> {
        let plans = self.plans.lock().unwrap_or_else(|p| p.into_inner());
        plans.get(key).cloned()
    }

    /// Keep `plan` for the windows to come. Recursive queries are not kept:
    /// DataFusion cannot run them twice.
    fn put(
        &self,
        key: Vec<ScalarValue>,
        plan: &Arc<dyn ExecutionPlan>,
    ) -> datafusion::error::Result<()> {
        if plan.exists(|n| Ok(n.name() == "RecursiveQueryExec"))? {
            return Ok(());
        }
        let mut plans = self.plans.lock().unwrap_or_else(|p| p.into_inner());
        if plans.len() >= PLAN_CACHE_ENTRIES {
            plans.clear();
        }
        plans.insert(key, plan.clone());
        Ok(())
    }
}

/// The window's rows plus the `kind` column.
fn with_kind(rows: &RecordBatch, kind: &str, schema: &SchemaRef) -> Result<RecordBatch, String> {
    let mut cols: Vec<ArrayRef> = rows.columns().to_vec();
    cols.push(Arc::new(StringArray::from(vec![kind; rows.num_rows()])));
    RecordBatch::try_new(schema.clone(), cols)
        .map_err(|e| format!("window rows do not match the rollup schema: {e}"))
}

async fn load_one(
    ctx: &SessionContext,
    path: &Path,
    name: &str,
    overrides: Option<&BTreeMap<String, toml::Value>>,
) -> Result<Policy, String> {
    if !valid_name(name) {
        return Err(format!(
            "file name `{name}` is not a valid policy name (lowercase letters, digits, `-`, `_`)"
        ));
    }
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let file: PolicyFile = toml::from_str(&text).map_err(|e| e.to_string())?;
    let verdict: Verdict = file.verdict.parse()?;
    if verdict == Verdict::Allow {
        return Err(
            "verdict must be `deny` or `warn`: every row a policy returns is a violation".into(),
        );
    }
    for k in &file.kinds {
        if !KINDS.contains(&k.as_str()) {
            return Err(format!(
                "unknown kind `{k}` in `kinds` (expected {})",
                KINDS.join(", ")
            ));
        }
    }
    let mut params = file.params.clone();
    for (k, v) in overrides.into_iter().flatten() {
        let Some(slot) = params.get_mut(k) else {
            return Err(format!(
                "the pipeline config sets parameter `{k}`, which the policy does not declare under [params]"
            ));
        };
        if std::mem::discriminant(slot) != std::mem::discriminant(v)
            && !matches!(
                (&*slot, v),
                (toml::Value::Float(_), toml::Value::Integer(_))
            )
        {
            return Err(format!(
                "the pipeline config sets parameter `{k}` to {v}, but its default {slot} has another type"
            ));
        }
        *slot = match (&*slot, v) {
            (toml::Value::Float(_), toml::Value::Integer(i)) => toml::Value::Float(*i as f64),
            _ => v.clone(),
        };
    }
    let sql = params::substitute(&file.sql, &params)?;
    let subject = Template::parse(&file.subject).map_err(|e| format!("subject: {e}"))?;
    let message = Template::parse(&file.message).map_err(|e| format!("message: {e}"))?;

    let options = SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false);
    let plan = ctx
        .sql_with_options(&sql, options)
        .await
        .map_err(|e| format!("SQL: {e}"))?
        .into_unoptimized_plan();
    let columns: HashSet<&str> = plan
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect();
    for (what, t) in [("subject", &subject), ("message", &message)] {
        for f in t.fields() {
            if !columns.contains(f) {
                let mut have: Vec<&str> = columns.iter().copied().collect();
                have.sort();
                return Err(format!(
                    "{what} uses `{{{f}}}`, which the SQL does not return (it returns {})",
                    have.join(", ")
                ));
            }
        }
    }
    if subject.fields().next().is_none() {
        return Err("subject must name at least one column, e.g. \"team={team}\"".into());
    }
    // Bind sample window values and optimize: type errors surface now, not
    // on the first window.
    let sample: ParamValues = params::window_values("inference", "check/0", 0, 60_000).into();
    let bound = plan
        .clone()
        .with_param_values(sample)
        .map_err(|e| format!("SQL: {e}"))?;
    ctx.state()
        .optimize(&bound)
        .map_err(|e| format!("SQL: {e}"))?;

    let mut h = Sha256::new();
    h.update(text.as_bytes());
    h.update([0]);
    h.update(toml::to_string(&params).unwrap_or_default().as_bytes());
    let revision = format!("sha256:{}", &tollgate_decision::hex(&h.finalize())[..16]);
    let tables = tables_read(&plan).map_err(|e| format!("SQL: {e}"))?;
    Ok(Policy {
        name: name.to_owned(),
        path: path.to_owned(),
        revision,
        verdict,
        kinds: file.kinds,
        description: file.description,
        params,
        subject,
        message,
        cache: PlanCache::for_plan(&plan, &tables).map_err(|e| format!("SQL: {e}"))?,
        reads_month_to_date: tables.contains(MONTH_TO_DATE),
        plan,
    })
}

/// Result rows as JSON objects keyed by column name.
pub fn json_rows(batches: &[RecordBatch]) -> Result<Vec<Map<String, Value>>, String> {
    let mut out = Vec::new();
    for b in batches {
        let schema = b.schema();
        let mut cols: Vec<std::vec::IntoIter<Value>> = b
            .columns()
            .iter()
            .map(|c| json_column(c).map(Vec::into_iter))
            .collect::<Result<_, _>>()?;
        for _ in 0..b.num_rows() {
            let mut row = Map::new();
            for (f, col) in schema.fields().iter().zip(cols.iter_mut()) {
                row.insert(f.name().clone(), col.next().unwrap_or(Value::Null));
            }
            out.push(row);
        }
    }
    Ok(out)
}

fn json_column(c: &ArrayRef) -> Result<Vec<Value>, String> {
    use arrow::compute::cast;
    let num = |f: f64| {
        serde_json::Number::from_f64(f)
            .map(Value::Number)
            .unwrap_or(Value::Null)
    };
    let n = c.len();
    // One value per row, null where the array is null.
    let each = |a: &dyn Array, f: &dyn Fn(usize) -> Value| -> Vec<Value> {
        (0..n)
            .map(|i| if a.is_null(i) { Value::Null } else { f(i) })
            .collect()
    };
    let values: Vec<Value> = match c.data_type() {
        DataType::Null => vec![Value::Null; n],
        DataType::Boolean => {
            let a = c.as_boolean();
            each(a, &|i| Value::Bool(a.value(i)))
        }
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32 => {
            let c = cast(c, &DataType::Int64).map_err(|e| e.to_string())?;
            let a = c.as_primitive::<Int64Type>();
            each(a, &|i| Value::from(a.value(i)))
        }
        DataType::UInt64 => {
            let a = c.as_primitive::<UInt64Type>();
            each(a, &|i| Value::from(a.value(i)))
        }
        DataType::Float16
        | DataType::Float32
        | DataType::Float64
        | DataType::Decimal128(..)
        | DataType::Decimal256(..) => {
            let c = cast(c, &DataType::Float64).map_err(|e| e.to_string())?;
            let a = c.as_primitive::<Float64Type>();
            each(a, &|i| num(a.value(i)))
        }
        DataType::Timestamp(_, _) | DataType::Date32 | DataType::Date64 => {
            let ms = cast(c, &DataType::Timestamp(TimeUnit::Millisecond, None))
                .and_then(|c| cast(&c, &DataType::Int64))
                .map_err(|e| e.to_string())?;
            let a = ms.as_primitive::<Int64Type>();
            each(a, &|i| {
                Value::String(tollgate_decision::rfc3339_ms(a.value(i)))
            })
        }
        _ => {
            let c = cast(c, &DataType::Utf8).map_err(|e| e.to_string())?;
            let a = c.as_string::<i32>();
            each(a, &|i| Value::String(a.value(i).to_owned()))
        }
    };
    Ok(values)
}

#[cfg(test)]
mod tests;
