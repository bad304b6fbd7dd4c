//! The rollup tree as one DataFusion table (`history` for policies, and the
//! table behind SQL queries): every Parquet file under the root, with the
//! hive columns `kind`, `date` and `hour` from the path.

use std::path::Path;
use std::sync::Arc;

use arrow::datatypes::DataType;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::datasource::TableProvider;

use crate::{io, schema, RollupError};

/// Hive partition columns of the tree, in path order (all strings).
pub const PARTITION_COLUMNS: [&str; 3] = ["kind", "date", "hour"];

/// A table over every rollup file under `root` (created if missing). Files
/// are listed when a query runs, so new windows show up without reloading;
/// filters on `kind`/`date`/`hour` skip whole directories.
pub fn history_table(root: &Path) -> Result<Arc<dyn TableProvider>, RollupError> {
    std::fs::create_dir_all(root).map_err(io("create directory", root))?;
    let abs = root.canonicalize().map_err(io("resolve", root))?;
    let df = |e: datafusion::error::DataFusionError| RollupError::History(e.to_string());
    let url = ListingTableUrl::parse(format!("{}/", abs.display())).map_err(df)?;
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
    Ok(Arc::new(ListingTable::try_new(config).map_err(df)?))
}
