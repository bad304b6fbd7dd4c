//! A table that yields only the rows of one scope (a tenant, and optionally
//! a time range and a team) *before* any expression a caller wrote can see
//! a row.
//!
//! A view filter is not enough for tenant isolation: DataFusion merges a
//! view's predicate with the caller's own and may evaluate the caller's
//! expressions over every row of the file (a `CAST` that fails names the
//! offending value; a division by zero is a yes/no oracle). [`ScopedTable`]
//! is a leaf of the plan instead: its scan filters the rollup tree with the
//! scope predicate inside a plan node that has no visible children, refuses
//! every filter, limit and projection-expression pushdown, reports no
//! statistics (no row counts of other scopes), prints only its own name in
//! `EXPLAIN`, and turns the errors of the hidden scan into one text that
//! carries neither file paths nor values.

use std::fmt;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DFSchema, Result};
use datafusion::datasource::TableType;
use datafusion::error::DataFusionError;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{
    Boundedness, EmissionType, ReplaceChildrenOptions,
};
use datafusion::physical_plan::filter::FilterExecBuilder;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, PlanProperties,
};
use futures::StreamExt;

/// What a caller sees when the hidden scan fails (a missing or corrupt
/// file: the server's fault, not the query's). The cause, which may name a
/// file or carry a value, goes to the server log only. Find it with
/// `DataFusionError::find_root` and `downcast_ref`.
#[derive(Debug, thiserror::Error)]
#[error("reading the rollups failed (the cause is in the server log)")]
pub struct ScanFailed;

impl ScanFailed {
    /// Whether `e` is (or wraps) a failure of the hidden scan.
    pub fn is_cause_of(e: &DataFusionError) -> bool {
        matches!(e.find_root(), DataFusionError::External(x) if x.is::<ScanFailed>())
    }
}

/// `inner`'s rows that satisfy `scope`, as a table whose scan is a leaf.
#[derive(Debug)]
pub struct ScopedTable {
    inner: Arc<dyn TableProvider>,
    scope: Expr,
}

impl ScopedTable {
    /// `scope` must only name columns of `inner` and be built by the server,
    /// never from SQL a caller wrote.
    pub fn new(inner: Arc<dyn TableProvider>, scope: Expr) -> Self {
        ScopedTable { inner, scope }
    }
}

#[async_trait::async_trait]
impl TableProvider for ScopedTable {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    /// No caller filter goes below the scope: every one is evaluated above
    /// this table, over the scope's rows only.
    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        Ok(vec![
            TableProviderFilterPushDown::Unsupported;
            filters.len()
        ])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        // A limit applies to the scope's rows, so it cannot go below the
        // scope filter; the plan above this table applies it.
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let schema = self.inner.schema();
        let df_schema = DFSchema::try_from(schema.as_ref().clone())?;
        let predicate = state.create_physical_expr(self.scope.clone(), &df_schema)?;
        // The scope goes to the inner scan too, where it only prunes
        // (directories, row groups); the filter below makes it exact.
        let inner = self
            .inner
            .scan(state, None, std::slice::from_ref(&self.scope), None)
            .await
            .map_err(hide)?;
        let filter = FilterExecBuilder::new(predicate, inner)
            .apply_projection(projection.cloned())?
            .build()?;
        let mut plan: Arc<dyn ExecutionPlan> = Arc::new(filter);
        // The subtree is invisible to the session's optimizer: optimize it
        // here, on its own.
        for rule in state.physical_optimizers() {
            plan = rule.optimize(plan, state.config_options()).map_err(hide)?;
        }
        Ok(Arc::new(ScopedScanExec::new(plan)))
    }
}

/// The errors of the hidden scan, without their text.
fn hide(e: DataFusionError) -> DataFusionError {
    match e {
        // The caller's own query used too much memory: say so.
        DataFusionError::ResourcesExhausted(m) => DataFusionError::ResourcesExhausted(m),
        other => {
            tracing::warn!(error = %other, "scoped rollup scan failed");
            DataFusionError::External(Box::new(ScanFailed))
        }
    }
}

/// The leaf that runs the scoped scan. Its subtree is not a child: nothing
/// above can push into it, and `EXPLAIN` does not print it.
#[derive(Debug)]
struct ScopedScanExec {
    hidden: Arc<dyn ExecutionPlan>,
    properties: Arc<PlanProperties>,
}

impl ScopedScanExec {
    fn new(hidden: Arc<dyn ExecutionPlan>) -> Self {
        let partitions = hidden.output_partitioning().partition_count();
        let properties = PlanProperties::new(
            EquivalenceProperties::new(hidden.schema()),
            datafusion::physical_plan::Partitioning::UnknownPartitioning(partitions),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        ScopedScanExec {
            hidden,
            properties: Arc::new(properties),
        }
    }
}

impl DisplayAs for ScopedScanExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ScopedScanExec: rows of the caller's scope")
    }
}

impl ExecutionPlan for ScopedScanExec {
    fn name(&self) -> &str {
        "ScopedScanExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    #[allow(deprecated)]
    fn with_new_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let stream = self.hidden.execute(partition, context).map_err(hide)?;
        let schema = stream.schema();
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            schema,
            stream.map(|batch| batch.map_err(hide)),
        )))
    }
}
