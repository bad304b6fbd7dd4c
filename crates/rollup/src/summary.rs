//! Totals over the rollup tree, for the quick start and `tollgate summary`,
//! and month-to-date totals by team for policies ([`MonthToDate`]).

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{Float64Type, Int64Type};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ProjectionMask;

use tollgate_window::ByTeam;

use crate::{is_rollup_file, list_files, RollupError, Tree};

/// Totals of one team (or all).
pub type TeamTotals = tollgate_window::Totals;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    pub files: usize,
    /// By team; events without a team tag are under `(untagged)`.
    pub by_team: BTreeMap<String, TeamTotals>,
    pub total: TeamTotals,
}

/// Read every rollup file of the tree and total it by team.
pub fn read_summary(tree: &Tree) -> Result<Summary, RollupError> {
    let mut s = Summary::default();
    for key in list_files(tree)? {
        s.files += 1;
        for_each_row(tree, &key, |_, team, row| {
            let key = team.unwrap_or("(untagged)").to_string();
            s.by_team.entry(key).or_default().add(row);
            s.total.add(row);
        })?;
    }
    Ok(s)
}

/// The columns [`for_each_row`] reads: the team and its additive measures.
fn row_column(name: &str) -> bool {
    name == "tenant" || name == "team" || crate::TOTALS_COLUMNS.contains(&name)
}

/// The columns of one rollup file that `wanted` names, read whole, and
/// the file's key-value metadata.
pub(crate) fn read_columns(
    tree: &Tree,
    key: &str,
    wanted: &dyn Fn(&str) -> bool,
) -> Result<
    (
        Vec<arrow::array::RecordBatch>,
        Vec<parquet::file::metadata::KeyValue>,
    ),
    RollupError,
> {
    let path = tree.location(key);
    let file = tree.read(key)?.ok_or_else(|| RollupError::Corrupt {
        path: path.clone(),
        reason: "listed, then gone".into(),
    })?;
    let pq = |source| RollupError::Parquet {
        path: path.clone(),
        source,
    };
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(pq)?;
    let kv = builder
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .cloned()
        .unwrap_or_default();
    let fields = builder.parquet_schema().columns();
    let columns = (0..fields.len()).filter(|&i| wanted(fields[i].name()));
    let mask = ProjectionMask::leaves(builder.parquet_schema(), columns);
    let batches = builder
        .with_projection(mask)
        .with_batch_size(64 << 10)
        .build()
        .map_err(pq)?
        .collect::<Result<Vec<_>, _>>()?;
    Ok((batches, kv))
}

/// Call `f(tenant, team, totals)` for every row of one rollup file, reading
/// only the columns it needs. The whole file is read before the first call,
/// so an unreadable file makes no calls at all.
fn for_each_row(
    tree: &Tree,
    key: &str,
    mut f: impl FnMut(&str, Option<&str>, &TeamTotals),
) -> Result<(), RollupError> {
    let path = tree.location(key);
    let (batches, _) = read_columns(tree, key, &row_column)?;
    for batch in batches {
        let col = |name: &str| {
            batch
                .column_by_name(name)
                .ok_or_else(|| RollupError::Corrupt {
                    path: path.clone(),
                    reason: format!("no column `{name}`"),
                })
        };
        let tenant = col("tenant")?.as_string::<i32>().clone();
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
        // Files before schema 4 have no embodied emissions: 0.
        let embodied = batch
            .column_by_name("embodied_g")
            .map(|c| c.as_primitive::<Float64Type>().clone());
        for i in 0..batch.num_rows() {
            let row = TeamTotals {
                events: events.value(i).max(0) as u64,
                input_tokens: tin.value(i).max(0) as u64,
                output_tokens: tout.value(i).max(0) as u64,
                cost_usd: cost.value(i),
                energy_wh: energy.value(i),
                carbon_g: carbon.value(i),
                embodied_g: embodied
                    .as_ref()
                    .filter(|c| !c.is_null(i))
                    .map_or(0.0, |c| c.value(i)),
                gpu_hours: gpu.value(i),
            };
            let team = (!team.is_null(i)).then(|| team.value(i));
            f(tenant.value(i), team, &row);
        }
    }
    Ok(())
}

/// Months kept: two, so that windows either side of a month's end can
/// interleave without either month being read again. The month a refresh
/// asks for is always kept; the oldest other one makes room.
const MONTHS_KEPT: usize = 2;

/// A file's identity in [`Month::files`]: a 128-bit hash of its path, 16
/// bytes whatever the path's length (a month of 1-minute windows is tens of
/// thousands of files per partition and kind).
fn file_key(path: &Path) -> u128 {
    xxhash_rust::xxh3::xxh3_128(path.as_os_str().as_encoded_bytes())
}

/// One month: the files counted and the totals by tenant and team.
#[derive(Debug, Default)]
struct Month {
    files: HashSet<u128>,
    teams: ByTeam<TeamTotals>,
}

impl Month {
    fn add(&mut self, tenant: &str, team: Option<&str>, t: &TeamTotals) {
        self.teams.entry(tenant, team).add(t);
    }
}

/// The rows of one topic-partition's files of `month` (`YYYY-MM`), as
/// `(tenant, team, totals)`: what that partition has written this month,
/// whoever wrote it. Returns how many files were read. A restore seeds the
/// partition's month to date from it (`[spend]`).
pub fn partition_month(
    tree: &Tree,
    src: crate::Source<'_>,
    month: &str,
    mut f: impl FnMut(&str, Option<&str>, &TeamTotals),
) -> Result<usize, RollupError> {
    let date = format!("date={month}-");
    let prefix = format!("{}-{}-", src.topic, src.partition);
    let mut files = 0;
    for found in tree.walk(&format!("kind={}", src.kind), &date, &date)? {
        let name = found.name();
        let in_hour = found
            .key
            .split('/')
            .nth(2)
            .is_some_and(|h| h.starts_with("hour="));
        if in_hour && is_rollup_file(name) && name.starts_with(&prefix) {
            for_each_row(tree, &found.key, &mut f)?;
            files += 1;
        }
    }
    Ok(files)
}

/// Month-to-date totals by tenant and team from the rollup files on disk
/// (every kind and partition, whoever wrote them), kept up to date
/// incrementally. Rollup files are immutable (written under a temporary
/// name, then renamed; a replay rewrites identical bytes), so each is
/// counted once: a refresh costs listing the month's directories plus
/// reading the files that appeared since, and a file this process wrote is
/// counted from its rows ([`Self::add_written`]) without being read back.
#[derive(Debug)]
pub struct MonthToDate {
    tree: Tree,
    /// By `YYYY-MM`, at most [`MONTHS_KEPT`].
    months: BTreeMap<String, Month>,
}

impl MonthToDate {
    pub fn new(tree: &Tree) -> Self {
        MonthToDate {
            tree: tree.clone(),
            months: BTreeMap::new(),
        }
    }

    /// Bring `month` (`YYYY-MM`) up to date with the files on disk. Returns
    /// how many files were read. On error nothing of the failing file is
    /// counted, and the next refresh tries it again.
    pub fn refresh(&mut self, month: &str) -> Result<usize, RollupError> {
        // The month asked for is always kept, whatever its age (a backfill,
        // one bad timestamp): the oldest *other* month makes room, and a
        // month evicted earlier is read again from its files, so the totals
        // are exact for any month.
        if !self.months.contains_key(month) {
            while self.months.len() >= MONTHS_KEPT {
                let Some(oldest) = self.months.keys().next().cloned() else {
                    break;
                };
                self.months.remove(&oldest);
            }
        }
        let state = self.months.entry(month.to_owned()).or_default();
        let mut new_files = 0;
        let date = format!("date={month}-");
        for kind_dir in self.tree.dirs("")? {
            if !kind_dir.starts_with("kind=") {
                continue;
            }
            for f in self.tree.walk(&kind_dir, &date, &date)? {
                let in_hour = f
                    .key
                    .split('/')
                    .nth(2)
                    .is_some_and(|h| h.starts_with("hour="));
                let id = file_key(&self.tree.location(&f.key));
                if !in_hour || !is_rollup_file(f.name()) || state.files.contains(&id) {
                    continue;
                }
                for_each_row(&self.tree, &f.key, |tenant, team, t| {
                    state.add(tenant, team, t)
                })?;
                state.files.insert(id);
                new_files += 1;
            }
        }
        Ok(new_files)
    }

    /// This process wrote `path`, a file of `month` holding `rows`: count
    /// it without reading it back. A month not kept is left to
    /// [`Self::refresh`], which reads the file from disk.
    pub fn add_written<'a>(
        &mut self,
        path: &Path,
        month: &str,
        rows: impl Iterator<Item = (&'a str, Option<&'a str>, TeamTotals)>,
    ) {
        let Some(state) = self.months.get_mut(month) else {
            return;
        };
        if state.files.insert(file_key(path)) {
            for (tenant, team, t) in rows {
                state.add(tenant, team, &t);
            }
        }
    }

    /// Files counted for `month`.
    pub fn files(&self, month: &str) -> usize {
        self.months.get(month).map_or(0, |m| m.files.len())
    }

    /// `(tenant, team, totals)` of `month`, in no particular order.
    pub fn teams<'s>(
        &'s self,
        month: &str,
    ) -> impl Iterator<Item = (&'s str, Option<&'s str>, &'s TeamTotals)> {
        self.months
            .get(month)
            .into_iter()
            .flat_map(|m| m.teams.iter())
    }
}
