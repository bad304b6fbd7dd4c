//! The rollup tree as one DataFusion table (`history` for policies, and the
//! table behind SQL queries): every Parquet file under the root, with the
//! hive columns `kind`, `date` and `hour` from the path.

use std::sync::Arc;

use arrow::datatypes::DataType;
use arrow::datatypes::SchemaRef;
use datafusion::catalog::Session;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::datasource::TableProvider;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, TableType};
use datafusion::physical_plan::ExecutionPlan;
use object_store::ObjectStore;

use crate::{schema, RollupError, Tree};

/// Hive partition columns of the tree, in path order (all strings).
pub const PARTITION_COLUMNS: [&str; 3] = ["kind", "date", "hour"];

/// A table over every rollup file of the tree (a local directory is
/// created if missing). Files are listed when a query runs, so new windows
/// show up without reloading; filters on `kind`/`date`/`hour` skip whole
/// directories. The table of an object-store tree registers its store with
/// the session that scans it, so any `SessionContext` can read it.
pub fn history_table(tree: &Tree) -> Result<Arc<dyn TableProvider>, RollupError> {
    let (url, store) = tree.table_url()?;
    let df = |e: datafusion::error::DataFusionError| RollupError::History(e.to_string());
    let url = ListingTableUrl::parse(url).map_err(df)?;
    let options = ListingOptions::new(Arc::new(ParquetFormat::default()))
        .with_file_extension(".parquet")
        .with_table_partition_cols(
            PARTITION_COLUMNS
                .iter()
                .map(|c| (c.to_string(), DataType::Utf8))
                .collect(),
        );
    let config = ListingTableConfig::new(url)
        .with_listing_options(options)
        .with_schema(schema());
    let table: Arc<dyn TableProvider> = Arc::new(ListingTable::try_new(config).map_err(df)?);
    Ok(match store {
        None => table,
        Some((url, store)) => Arc::new(WithStore { table, url, store }),
    })
}

/// A table whose files are in an object store: registers the store (by its
/// `s3://bucket` URL) with the scanning session's runtime, then scans.
#[derive(Debug)]
struct WithStore {
    table: Arc<dyn TableProvider>,
    url: url::Url,
    store: Arc<dyn ObjectStore>,
}

#[async_trait::async_trait]
impl TableProvider for WithStore {
    fn schema(&self) -> SchemaRef {
        self.table.schema()
    }

    fn table_type(&self) -> TableType {
        self.table.table_type()
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> datafusion::error::Result<Vec<TableProviderFilterPushDown>> {
        self.table.supports_filters_pushdown(filters)
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        // The same bucket is the same store, whichever tree of it asks.
        state
            .runtime_env()
            .register_object_store(&self.url, self.store.clone());
        self.table.scan(state, projection, filters, limit).await
    }
}
