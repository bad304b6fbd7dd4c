//! Tables policies read.

use std::sync::{Arc, RwLock};

use arrow::array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray, StringBuilder};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::common::stats::Precision;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::Statistics;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::Expr;
use datafusion::physical_expr::{EquivalenceProperties, Partitioning, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::memory::MemoryStream;
use datafusion::physical_plan::statistics::StatisticsArgs;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties, ReplaceChildrenOptions,
    SendableRecordBatchStream,
};
use tollgate_window::Totals;

/// An in-memory table whose contents are replaced between evaluations.
///
/// Policies are planned once against it; each evaluation swaps in the closed
/// window's batches. Its scan ([`SwapExec`]) reads the contents when the plan
/// is *executed*, not when it is planned, and claims only inexact sizes, so
/// a physical plan built over it stays valid for later windows.
#[derive(Debug)]
pub struct SwapTable {
    schema: SchemaRef,
    batches: Arc<RwLock<Vec<RecordBatch>>>,
}

impl SwapTable {
    pub fn new(schema: SchemaRef) -> Arc<Self> {
        Arc::new(SwapTable {
            schema,
            batches: Arc::new(RwLock::new(Vec::new())),
        })
    }

    /// Replace the contents. Batches must have this table's schema.
    pub fn set(&self, batches: Vec<RecordBatch>) {
        match self.batches.write() {
            Ok(mut b) => *b = batches,
            Err(poisoned) => *poisoned.into_inner() = batches,
        }
    }
}

fn current(batches: &RwLock<Vec<RecordBatch>>) -> Vec<RecordBatch> {
    match batches.read() {
        Ok(b) => b.clone(),
        Err(poisoned) => poisoned.into_inner().clone(),
    }
}

#[async_trait]
impl TableProvider for SwapTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let schema = match projection {
            Some(p) => Arc::new(self.schema.project(p)?),
            None => self.schema.clone(),
        };
        let properties = PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        // Sizes of the rows in the table now, as an estimate only: the plan
        // may run on another window's rows, so nothing may rely on them
        // being exact (an exact count would be answered from statistics).
        let rows = current(&self.batches);
        let mut estimate = Statistics::new_unknown(&schema);
        estimate.num_rows = Precision::Inexact(rows.iter().map(|b| b.num_rows()).sum());
        estimate.total_byte_size =
            Precision::Inexact(rows.iter().map(|b| b.get_array_memory_size()).sum());
        Ok(Arc::new(SwapExec {
            batches: self.batches.clone(),
            schema,
            projection: projection.cloned(),
            properties: Arc::new(properties),
            estimate: Arc::new(estimate),
        }))
    }
}

/// The scan of a [`SwapTable`]: streams the table's contents at the time of
/// `execute`. Holds no state between executions, and its statistics are
/// inexact estimates (for join order), so no window's rows are baked into a
/// plan.
#[derive(Debug)]
pub struct SwapExec {
    batches: Arc<RwLock<Vec<RecordBatch>>>,
    schema: SchemaRef,
    projection: Option<Vec<usize>>,
    properties: Arc<PlanProperties>,
    estimate: Arc<Statistics>,
}

impl DisplayAs for SwapExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "SwapExec: projection={:?}", self.projection)
    }
}

impl ExecutionPlan for SwapExec {
    fn name(&self) -> &str {
        "SwapExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        Vec::new()
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn with_new_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn statistics_from_inputs(
        &self,
        _input_stats: &[Arc<Statistics>],
        _args: &StatisticsArgs,
    ) -> DfResult<Arc<Statistics>> {
        Ok(self.estimate.clone())
    }

    fn execute(
        &self,
        partition: usize,
        _context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        if partition != 0 {
            return Err(DataFusionError::Internal(format!(
                "SwapExec has one partition, asked for {partition}"
            )));
        }
        let mut batches = current(&self.batches);
        if let Some(p) = &self.projection {
            batches = batches
                .iter()
                .map(|b| b.project(p))
                .collect::<Result<_, _>>()?;
        }
        Ok(Box::pin(MemoryStream::try_new(
            batches,
            self.schema.clone(),
            None,
        )?))
    }
}

/// `rollups`: the closed window's rows, the rollup file columns plus `kind`.
pub fn rollups_schema(file_schema: &Schema) -> SchemaRef {
    let mut fields: Vec<Field> = file_schema
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields.push(Field::new("kind", DataType::Utf8, false));
    Arc::new(Schema::new(fields))
}

/// `history`: every rollup file, the file columns plus the hive partition
/// columns `kind`, `date` (YYYY-MM-DD) and `hour` (HH), all strings.
pub fn history_schema(file_schema: &Schema) -> SchemaRef {
    let mut fields: Vec<Field> = file_schema
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    for c in HISTORY_PARTITIONS {
        fields.push(Field::new(c, DataType::Utf8, false));
    }
    Arc::new(Schema::new(fields))
}

pub const HISTORY_PARTITIONS: [&str; 3] = ["kind", "date", "hour"];

/// `month_to_date`: the window's UTC month so far by tenant and team,
/// every kind and partition, from the rollup files on disk when the window
/// is decided (the window itself is not in it: its file is written after).
pub fn month_to_date_schema() -> SchemaRef {
    let int = |n: &str| Field::new(n, DataType::Int64, false);
    let float = |n: &str| Field::new(n, DataType::Float64, false);
    Arc::new(Schema::new(vec![
        Field::new("tenant", DataType::Utf8, false),
        Field::new("team", DataType::Utf8, true),
        int("events"),
        int("input_tokens"),
        int("output_tokens"),
        float("cost_usd"),
        float("energy_wh"),
        float("carbon_g"),
        float("gpu_hours"),
    ]))
}

/// An empty `month_to_date`, for windows whose policies do not read it.
pub fn no_month_to_date() -> &'static RecordBatch {
    static EMPTY: std::sync::LazyLock<RecordBatch> =
        std::sync::LazyLock::new(|| RecordBatch::new_empty(month_to_date_schema()));
    &EMPTY
}

/// Rows of [`month_to_date_schema`]: `(tenant, team, totals)`.
pub fn month_to_date_batch<'a>(
    rows: impl IntoIterator<Item = (&'a str, Option<&'a str>, &'a Totals)>,
) -> DfResult<RecordBatch> {
    let (mut tenants, mut teams) = (StringBuilder::new(), StringBuilder::new());
    let mut ints: [Vec<i64>; 3] = Default::default();
    let mut floats: [Vec<f64>; 4] = Default::default();
    for (tenant, team, t) in rows {
        tenants.append_value(tenant);
        teams.append_option(team);
        for (col, v) in ints
            .iter_mut()
            .zip([t.events, t.input_tokens, t.output_tokens])
        {
            col.push(i64::try_from(v).unwrap_or(i64::MAX));
        }
        for (col, v) in floats
            .iter_mut()
            .zip([t.cost_usd, t.energy_wh, t.carbon_g, t.gpu_hours])
        {
            col.push(v);
        }
    }
    let mut columns: Vec<ArrayRef> = vec![Arc::new(tenants.finish()), Arc::new(teams.finish())];
    columns.extend(ints.map(|c| Arc::new(Int64Array::from(c)) as ArrayRef));
    columns.extend(floats.map(|c| Arc::new(Float64Array::from(c)) as ArrayRef));
    Ok(RecordBatch::try_new(month_to_date_schema(), columns)?)
}

/// `regions`: the price book's grid intensities.
pub fn regions_batch(regions: &[(String, f64)]) -> DfResult<RecordBatch> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("region", DataType::Utf8, false),
        Field::new("carbon_intensity_g_per_kwh", DataType::Float64, false),
    ]));
    let names: ArrayRef = Arc::new(
        regions
            .iter()
            .map(|(r, _)| Some(r.as_str()))
            .collect::<StringArray>(),
    );
    let values: ArrayRef = Arc::new(
        regions
            .iter()
            .map(|(_, v)| Some(*v))
            .collect::<Float64Array>(),
    );
    Ok(RecordBatch::try_new(schema, vec![names, values])?)
}
