//! Totals over the rollup tree, for the quick start and `tollgate summary`.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::Path;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{Float64Type, Int64Type};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::{io, list_files, RollupError};

/// Totals of one team (or all).
pub type TeamTotals = tollgate_window::Totals;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    pub files: usize,
    /// By team; events without a team tag are under `(untagged)`.
    pub by_team: BTreeMap<String, TeamTotals>,
    pub total: TeamTotals,
}

/// Read every rollup file under `root` and total it by team.
pub fn read_summary(root: &Path) -> Result<Summary, RollupError> {
    let mut s = Summary::default();
    for path in list_files(root)? {
        s.files += 1;
        let file = File::open(&path).map_err(io("open", &path))?;
        let pq = |source| RollupError::Parquet {
            path: path.clone(),
            source,
        };
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)
            .map_err(pq)?
            .build()
            .map_err(pq)?;
        for batch in reader {
            let batch = batch?;
            let col = |name: &str| {
                batch
                    .column_by_name(name)
                    .ok_or_else(|| RollupError::Corrupt {
                        path: path.clone(),
                        reason: format!("no column `{name}`"),
                    })
            };
            let team = col("team")?.as_string::<i32>().clone();
            let ints = |n| col(n).map(|c| c.as_primitive::<Int64Type>().clone());
            let floats = |n| col(n).map(|c| c.as_primitive::<Float64Type>().clone());
            let (events, tin, tout) = (
                ints("events")?,
                ints("input_tokens")?,
                ints("output_tokens")?,
            );
            let (cost, energy, carbon, gpu) = (
                floats("cost_usd")?,
                floats("energy_wh")?,
                floats("carbon_g")?,
                floats("gpu_hours")?,
            );
            for i in 0..batch.num_rows() {
                let key = if team.is_null(i) {
                    "(untagged)".to_string()
                } else {
                    team.value(i).to_string()
                };
                let row = TeamTotals {
                    events: events.value(i).max(0) as u64,
                    input_tokens: tin.value(i).max(0) as u64,
                    output_tokens: tout.value(i).max(0) as u64,
                    cost_usd: cost.value(i),
                    energy_wh: energy.value(i),
                    carbon_g: carbon.value(i),
                    gpu_hours: gpu.value(i),
                };
                s.by_team.entry(key).or_default().add(&row);
                s.total.add(&row);
            }
        }
    }
    Ok(s)
}
