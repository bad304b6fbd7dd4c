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
mod json;
mod load;
pub mod params;
mod plan_cache;
pub mod tables;
pub mod template;

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{ArrayRef, RecordBatch, StringArray};
use arrow::datatypes::SchemaRef;
use datafusion::common::ParamValues;
use datafusion::datasource::{MemTable, TableProvider};
use datafusion::execution::context::{SessionConfig, SessionContext};
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::execution_plan::reset_plan_states;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::scalar::ScalarValue;
use serde_json::{Map, Value};
use tollgate_decision::{DecisionWindow, Draft, Verdict};

pub use json::json_rows;
use load::load_one;
use plan_cache::PlanCache;
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
        self.cache.as_ref().map(PlanCache::len)
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

/// The table of every rollup file so far. A listing table: it takes its file
/// list when a plan is made, so plans reading it are made per window.
pub(crate) const HISTORY: &str = "history";

/// The window's month so far by team; set for each window like `rollups`.
pub(crate) const MONTH_TO_DATE: &str = "month_to_date";

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

    /// The policies' effective parameters, by policy name, as JSON (the
    /// gate rules read the same thresholds as `data.tollgate.params`).
    pub fn params_json(&self) -> serde_json::Map<String, serde_json::Value> {
        self.policies()
            .iter()
            .map(|p| {
                (
                    p.name.clone(),
                    serde_json::to_value(&p.params).unwrap_or(serde_json::Value::Null),
                )
            })
            .collect()
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

/// The window's rows plus the `kind` column.
fn with_kind(rows: &RecordBatch, kind: &str, schema: &SchemaRef) -> Result<RecordBatch, String> {
    let mut cols: Vec<ArrayRef> = rows.columns().to_vec();
    cols.push(Arc::new(StringArray::from(vec![kind; rows.num_rows()])));
    RecordBatch::try_new(schema.clone(), cols)
        .map_err(|e| format!("window rows do not match the rollup schema: {e}"))
}

#[cfg(test)]
mod tests;
