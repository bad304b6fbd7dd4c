//! `tollgate export focus`: a FOCUS dataset of one month, to a file.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use datafusion::prelude::{col, lit, SessionContext};
use tollgate_export::{Format, Granularity, Parties, Period};

/// A session whose `rollups` table is the tree at `root` (a directory or
/// `s3://bucket/prefix`), only `tenant`'s rows when one is given.
pub(crate) fn rollups_session(root: &Path, tenant: Option<&str>) -> Result<SessionContext> {
    let tree = tollgate_rollup::Tree::open(root)?;
    let table = tollgate_rollup::history_table(&tree)
        .with_context(|| format!("opening the rollups under {}", root.display()))?;
    let table: Arc<dyn datafusion::catalog::TableProvider> = match tenant {
        Some(t) => Arc::new(tollgate_rollup::ScopedTable::new(
            table,
            col("tenant").eq(lit(t)),
        )),
        None => table,
    };
    let ctx = SessionContext::new();
    ctx.register_table("rollups", table)?;
    Ok(ctx)
}

/// Written beside, then renamed: a reader never sees half a file.
pub(crate) fn write_file(out: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = out.with_extension(format!(
        "{}.tmp",
        out.extension().and_then(|e| e.to_str()).unwrap_or("out")
    ));
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, out).with_context(|| format!("renaming to {}", out.display()))?;
    Ok(())
}

pub(crate) fn focus(
    root: &Path,
    period: &str,
    out: &Path,
    tenant: Option<&str>,
    granularity: &str,
) -> Result<()> {
    let period = Period::parse(period)?;
    let granularity = Granularity::parse(granularity)?;
    let ctx = rollups_session(root, tenant)?;
    let batch = crate::runtime()?.block_on(async {
        let batch = tollgate_export::focus(&ctx, &period, granularity, &Parties::default()).await?;
        anyhow::Ok(batch)
    })?;
    let format = Format::of_path(out);
    let bytes = tollgate_export::write(&batch, format)?;
    write_file(out, &bytes)?;
    let cost: f64 = batch
        .column_by_name("BilledCost")
        .and_then(|c| {
            c.as_any()
                .downcast_ref::<datafusion::arrow::array::Float64Array>()
        })
        .map_or(0.0, |a| a.values().iter().sum());
    eprintln!(
        "{} FOCUS rows for {}, {cost:.6} USD billed, written to {}",
        batch.num_rows(),
        period.name,
        out.display()
    );
    Ok(())
}
