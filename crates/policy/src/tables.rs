//! Tables policies read.

use std::sync::{Arc, RwLock};

use arrow::array::{ArrayRef, Float64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;

/// An in-memory table whose contents are replaced between evaluations.
///
/// Policies are planned once against it; each evaluation swaps in the closed
/// window's batches and executes the cached plan, so no SQL is parsed or
/// planned per window.
#[derive(Debug)]
pub struct SwapTable {
    schema: SchemaRef,
    batches: RwLock<Vec<RecordBatch>>,
}

impl SwapTable {
    pub fn new(schema: SchemaRef) -> Arc<Self> {
        Arc::new(SwapTable {
            schema,
            batches: RwLock::new(Vec::new()),
        })
    }

    /// Replace the contents. Batches must have this table's schema.
    pub fn set(&self, batches: Vec<RecordBatch>) {
        match self.batches.write() {
            Ok(mut b) => *b = batches,
            Err(poisoned) => *poisoned.into_inner() = batches,
        }
    }

    fn get(&self) -> Vec<RecordBatch> {
        match self.batches.read() {
            Ok(b) => b.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
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
        let exec = MemorySourceConfig::try_new_exec(
            &[self.get()],
            self.schema.clone(),
            projection.cloned(),
        )?;
        Ok(exec)
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
