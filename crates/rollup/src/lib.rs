//! The Parquet rollup tree (adapter): the rollup schema, the atomic
//! one-file-per-window writer, the scan that restores closed windows after a
//! restart, the late-data output, and a reader for summaries.
//!
//! Layout: `<root>/kind=<kind>/date=YYYY-MM-DD/hour=HH/<topic>-<partition>-<first_offset>.parquet`.
//! The name is deterministic, and publication is create-only: the first
//! writer of a window's file wins, a replay of the same window finds the same
//! bytes there, and a writer with other bytes for it (a revoked owner still
//! running) gets [`RollupError::Taken`] and never replaces the file. The
//! published file is the window's commit marker; its key-value metadata
//! records the offsets the restart protocol needs (`ARCHITECTURE.md`).

mod checkpoint;
mod history;
mod late;
mod month;
mod scoped;
mod summary;
mod tree;

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::schema::types::ColumnPath;
use tollgate_window::ClosedWindow;

pub use checkpoint::{
    load_checkpoint, remove_stale_checkpoint_temps, save_checkpoint, CheckpointEntry,
};
pub use history::{history_table, PARTITION_COLUMNS};
pub use late::{remove_late_from, write_late, LateRecord};
pub use month::{month_name, month_start_ms};
pub use object_store::aws::AmazonS3Builder;
pub use scoped::{ScanFailed, ScopedTable};
pub use summary::{partition_month, read_summary, MonthToDate, Summary, TeamTotals};
pub use tree::{Found, Output, Tree};

pub const SCHEMA_VERSION: &str = "4";

#[derive(Debug, thiserror::Error)]
pub enum RollupError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("parquet {path}: {source}")]
    Parquet {
        path: PathBuf,
        source: parquet::errors::ParquetError,
    },
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    #[error("{path}: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("rollup history table: {0}")]
    History(String),
    #[error("{path} was already published with other contents, by another owner of its partition; this writer stops and its partition resumes after that file")]
    Taken { path: PathBuf },
    #[error("{op} {location}: {source}")]
    Store {
        op: &'static str,
        location: String,
        source: object_store::Error,
    },
    #[error("{0}")]
    Config(String),
}

pub(crate) fn io<'p>(
    op: &'static str,
    path: &'p Path,
) -> impl FnOnce(std::io::Error) -> RollupError + 'p {
    move |source| RollupError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// The columns that add up across rows and files (`tollgate_window::Totals`).
pub const TOTALS_COLUMNS: [&str; 8] = [
    "events",
    "input_tokens",
    "output_tokens",
    "cost_usd",
    "energy_wh",
    "carbon_g",
    "embodied_g",
    "gpu_hours",
];

/// The rollup file schema (hive columns `kind`, `date`, `hour` come from the path).
pub fn schema() -> SchemaRef {
    let ts = DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()));
    let text = |n: &str, null: bool| Field::new(n, DataType::Utf8, null);
    let int = |n: &str, null: bool| Field::new(n, DataType::Int64, null);
    let float = |n: &str, null: bool| Field::new(n, DataType::Float64, null);
    Arc::new(Schema::new(vec![
        Field::new("window_start", ts.clone(), false),
        Field::new("window_end", ts.clone(), false),
        text("tenant", false),
        text("team", true),
        text("environment", true),
        text("project", true),
        text("model", true),
        text("region", true),
        text("node_id", true),
        int("events", false),
        int("input_tokens", false),
        int("cached_input_tokens", false),
        // Nullable, as every column added since schema 1: older files
        // read as null.
        int("cache_write_tokens", true),
        int("output_tokens", false),
        int("reasoning_tokens", true),
        float("cost_usd", false),
        float("max_unit_cost_usd", false),
        float("energy_wh", false),
        float("carbon_g", false),
        float("embodied_g", true),
        float("gpu_hours", false),
        int("failed_proofs", true),
        float("duration_ms_sum", false),
        float("duration_ms_max", true),
        float("duration_ms_p95", true),
        float("uptime_ratio_min", true),
        // Nullable so that files of schema version 1 (without it) still
        // merge into one table.
        Field::new("last_event_time", ts, true),
    ]))
}

/// Arrow batch for one closed window.
pub fn to_batch(w: &ClosedWindow) -> Result<RecordBatch, RollupError> {
    // Decode every row's dimensions once.
    let rows: Vec<(tollgate_window::DimsRef<'_>, &tollgate_window::Measures)> =
        w.rows.iter().collect();
    let n = rows.len();
    let ts = |v: i64| -> ArrayRef {
        Arc::new(TimestampMillisecondArray::from(vec![v; n]).with_timezone("UTC"))
    };
    let text = |f: &dyn for<'a> Fn(tollgate_window::DimsRef<'a>) -> Option<&'a str>| -> ArrayRef {
        Arc::new(rows.iter().map(|(d, _)| f(*d)).collect::<StringArray>())
    };
    let int = |f: &dyn Fn(&tollgate_window::Measures) -> u64| -> ArrayRef {
        Arc::new(
            rows.iter()
                .map(|(_, m)| i64::try_from(f(m)).unwrap_or(i64::MAX))
                .collect::<Int64Array>(),
        )
    };
    let float = |f: &dyn Fn(&tollgate_window::Measures) -> Option<f64>| -> ArrayRef {
        Arc::new(rows.iter().map(|(_, m)| f(m)).collect::<Float64Array>())
    };
    let has_duration = |m: &tollgate_window::Measures| m.duration.count() > 0;
    let columns: Vec<ArrayRef> = vec![
        ts(w.start_ms),
        ts(w.end_ms),
        text(&|d| Some(d.tenant)),
        text(&|d| d.team),
        text(&|d| d.environment),
        text(&|d| d.project),
        text(&|d| d.model),
        text(&|d| d.region),
        text(&|d| d.node_id),
        int(&|m| m.events),
        int(&|m| m.input_tokens),
        int(&|m| m.cached_input_tokens),
        int(&|m| m.cache_write_tokens),
        int(&|m| m.output_tokens),
        int(&|m| m.reasoning_tokens),
        float(&|m| Some(m.cost_usd)),
        float(&|m| Some(m.max_unit_cost_usd)),
        float(&|m| Some(m.energy_wh)),
        float(&|m| Some(m.carbon_g)),
        float(&|m| Some(m.embodied_g)),
        float(&|m| Some(m.gpu_hours)),
        int(&|m| m.failed_proofs),
        float(&|m| Some(m.duration_ms_sum)),
        float(&|m| has_duration(m).then_some(m.duration_ms_max)),
        float(&|m| m.duration_ms_p95()),
        float(&|m| m.uptime_ratio_min),
        Arc::new(
            TimestampMillisecondArray::from(
                rows.iter()
                    .map(|(_, m)| m.last_event_ms)
                    .collect::<Vec<_>>(),
            )
            .with_timezone("UTC"),
        ),
    ];
    Ok(RecordBatch::try_new(schema(), columns)?)
}

/// A window file's key in the tree:
/// `kind=<kind>/date=YYYY-MM-DD/hour=HH/<topic>-<partition>-<first_offset>.parquet`.
pub fn window_key(kind: &str, topic: &str, partition: i32, w: &ClosedWindow) -> String {
    let start = chrono::DateTime::from_timestamp_millis(w.start_ms).unwrap_or_default();
    format!(
        "kind={kind}/date={}/hour={}/{topic}-{partition}-{}.parquet",
        start.format("%Y-%m-%d"),
        start.format("%H"),
        w.first_offset
    )
}

/// Identifies the source of a rollup file.
#[derive(Debug, Clone, Copy)]
pub struct Source<'a> {
    pub kind: &'a str,
    pub topic: &'a str,
    pub partition: i32,
}

const META: [&str; 4] = [
    "tollgate.window_start_ms",
    "tollgate.window_end_ms",
    "tollgate.first_offset",
    "tollgate.close_offset",
];

/// Columns written with a dictionary: the window bounds (one value per file)
/// and the dimensions (few distinct values). Measures are sums, nearly all
/// distinct, where a dictionary only costs time to build and then falls
/// back or is as large as the values.
const DICTIONARY_COLUMNS: [&str; 9] = [
    "window_start",
    "window_end",
    "tenant",
    "team",
    "environment",
    "project",
    "model",
    "region",
    "node_id",
];

/// Level 1, not the usual 3: measured (`cargo bench -p tollgate-benches
/// --bench rollup`, a window of 10,000 rows) it encodes in two thirds of
/// the time for files 6% larger, and zstd is about 30% of the writer
/// thread's CPU, which shares two cores with the consumer.
const ZSTD_LEVEL: i32 = 1;

/// Encode and publish one closed window, as the writer thread does in two
/// steps (its decisions made durable between them): for tools and tests.
pub fn write_window(
    tree: &Tree,
    src: Source<'_>,
    w: &ClosedWindow,
) -> Result<(PathBuf, u64), RollupError> {
    EncodedWindow::new(tree, src, w, &to_batch(w)?)?.write()
}

/// A window's file encoded in memory, not yet on disk: where it goes and
/// its bytes. The writer thread encodes a window's file while its decisions
/// are not yet durable, and writes it only once they are.
#[derive(Debug)]
pub struct EncodedWindow {
    tree: Tree,
    key: String,
    bytes: Vec<u8>,
}

impl EncodedWindow {
    pub fn new(
        tree: &Tree,
        src: Source<'_>,
        w: &ClosedWindow,
        batch: &RecordBatch,
    ) -> Result<Self, RollupError> {
        let key = window_key(src.kind, src.topic, src.partition, w);
        let bytes = encode_window(src, w, batch).map_err(|source| RollupError::Parquet {
            path: tree.location(&key),
            source,
        })?;
        Ok(EncodedWindow {
            tree: tree.clone(),
            key,
            bytes,
        })
    }

    /// Where the file goes (a path, or an `s3://` URL).
    pub fn path(&self) -> PathBuf {
        self.tree.location(&self.key)
    }

    /// Publish the file create-only ([`Tree::create_only`]: on a local
    /// disk a temp file, fsync, a hard link to the final name, which fails
    /// if the name exists, and an fsync of the directory). Returns where it
    /// is and its size in bytes. A file already there with the same bytes
    /// is this window written before (a replay): done. With other bytes:
    /// [`RollupError::Taken`], and the file stays as it was.
    pub fn write(self) -> Result<(PathBuf, u64), RollupError> {
        let EncodedWindow { tree, key, bytes } = self;
        let len = bytes.len() as u64;
        tree.create_only(&key, bytes::Bytes::from(bytes))?;
        Ok((tree.location(&key), len))
    }
}

/// Publish the fsynced `tmp` as `path`, create-only, and remove `tmp`. A
/// file already at `path` with the same bytes is this one written before
/// (a replay): done. With other bytes: [`RollupError::Taken`], and `path`
/// stays as it was.
pub(crate) fn publish_create_only(tmp: &Path, path: &Path) -> Result<(), RollupError> {
    let published = publish_new(tmp, path).and_then(|new| {
        if new {
            return Ok(());
        }
        let ours = fs::read(tmp).map_err(io("read", tmp))?;
        let there = fs::read(path).map_err(io("read", path))?;
        if ours == there {
            Ok(())
        } else {
            Err(RollupError::Taken {
                path: path.to_owned(),
            })
        }
    });
    let _ = fs::remove_file(tmp);
    published
}

/// Give `tmp` the name `path` unless `path` exists: `true` if it now has
/// it, `false` if the name was taken (nothing changed). A hard link, which
/// no existing name can be replaced by (unlike a rename).
fn publish_new(tmp: &Path, path: &Path) -> Result<bool, RollupError> {
    match fs::hard_link(tmp, path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(io("publish (hard link)", path)(e)),
    }
}

/// How old a temp file of a live (or unknown) writer must be before a
/// restore removes it as a leftover.
pub const STALE_TEMP_AGE: std::time::Duration = std::time::Duration::from_secs(3600);

/// This machine, as a temp file names it: a hash of the host name and boot
/// id, so a process id is only ever judged on the machine it belongs to.
fn machine() -> u64 {
    static MACHINE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *MACHINE.get_or_init(|| {
        let read = |p: &str| fs::read(p).unwrap_or_default();
        let mut id = read("/proc/sys/kernel/hostname");
        id.extend(read("/proc/sys/kernel/random/boot_id"));
        xxhash_rust::xxh3::xxh3_64(&id)
    })
}

/// A temp name for `name` that no other writer uses:
/// `.<name>.<machine>-<pid>-<n>.tmp`. Its owner is in the name, so a
/// restore can tell a crashed writer's leftover from a file being written.
pub(crate) fn temp_name(name: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let n = SEQ.fetch_add(1, Relaxed);
    format!(
        ".{name}.{:016x}-{:x}-{n:x}.tmp",
        machine(),
        std::process::id()
    )
}

/// Is the writer that named temp file `name` certainly gone? Only for a
/// process of this machine other than this one that no longer exists;
/// anything else (this process's own writer thread, another machine's
/// writer, a name of an older format) may still be writing it.
fn temp_owner_is_gone(name: &str) -> bool {
    let Some(owner) = name.strip_suffix(".tmp").and_then(|n| n.rsplit('.').next()) else {
        return false;
    };
    let mut parts = owner.split('-');
    let (Some(m), Some(pid)) = (parts.next(), parts.next()) else {
        return false;
    };
    let (Ok(m), Ok(pid)) = (u64::from_str_radix(m, 16), u32::from_str_radix(pid, 16)) else {
        return false;
    };
    m == machine()
        && pid != std::process::id()
        && Path::new("/proc/self").exists()
        && !Path::new(&format!("/proc/{pid}")).exists()
}

/// Remove `path` (named `name`) if it is a temp file no writer can still be
/// writing: its process is gone, or it is older than [`STALE_TEMP_AGE`].
/// Returns whether it was removed.
pub(crate) fn remove_if_stale_temp(path: &Path, name: &str) -> Result<bool, RollupError> {
    if !(name.starts_with('.') && name.ends_with(".tmp")) {
        return Ok(false);
    }
    if !temp_owner_is_gone(name) {
        let age = match fs::metadata(path).and_then(|m| m.modified()) {
            Ok(t) => t.elapsed().unwrap_or_default(),
            // Gone already (its writer renamed it): nothing to do.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(io("stat", path)(e)),
        };
        if age < STALE_TEMP_AGE {
            return Ok(false);
        }
    }
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io("remove stale temp file", path)(e)),
    }
}

/// A window's Parquet file, in memory: `batch` (from [`to_batch`]) with the
/// metadata the restart protocol reads back.
pub fn encode_window(
    src: Source<'_>,
    w: &ClosedWindow,
    batch: &RecordBatch,
) -> Result<Vec<u8>, parquet::errors::ParquetError> {
    let kv = |k: &str, v: String| KeyValue::new(k.to_string(), v);
    let meta = vec![
        kv("tollgate.schema_version", SCHEMA_VERSION.into()),
        kv("tollgate.kind", src.kind.into()),
        kv("tollgate.topic", src.topic.into()),
        kv("tollgate.partition", src.partition.to_string()),
        kv(META[0], w.start_ms.to_string()),
        kv(META[1], w.end_ms.to_string()),
        kv(META[2], w.first_offset.to_string()),
        kv(META[3], w.close_offset.to_string()),
        kv("tollgate.watermark_ms", w.watermark_ms.to_string()),
        kv("tollgate.duplicates", w.duplicates.to_string()),
    ];
    let props = DICTIONARY_COLUMNS
        .iter()
        .fold(
            WriterProperties::builder()
                .set_compression(Compression::ZSTD(ZstdLevel::try_new(ZSTD_LEVEL)?))
                .set_key_value_metadata(Some(meta))
                .set_dictionary_enabled(false),
            |p, c| p.set_column_dictionary_enabled(ColumnPath::from(*c), true),
        )
        .build();
    let mut writer = ArrowWriter::try_new(Vec::new(), batch.schema(), Some(props))?;
    writer.write(batch)?;
    writer.into_inner()
}

pub(crate) fn sync_dir(dir: &Path) -> Result<(), RollupError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("fsync directory", dir))
}

/// A window found in the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenWindow {
    pub start_ms: i64,
    pub end_ms: i64,
    pub first_offset: i64,
    pub close_offset: i64,
    pub path: PathBuf,
}

pub(crate) fn read_dir_sorted(dir: &Path) -> Result<Vec<fs::DirEntry>, RollupError> {
    match fs::read_dir(dir) {
        Ok(rd) => {
            let mut v = rd.collect::<Result<Vec<_>, _>>().map_err(io("list", dir))?;
            v.sort_by_key(|e| e.file_name());
            Ok(v)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(vec![]),
        Err(e) => Err(RollupError::Io {
            op: "list",
            path: dir.to_path_buf(),
            source: e,
        }),
    }
}

/// Every rollup file in the tree (sorted by key; temp files and the
/// `_tollgate/` bookkeeping excluded): its key.
pub fn list_files(tree: &Tree) -> Result<Vec<String>, RollupError> {
    Ok(tree
        .walk("", "kind=", "kind=")?
        .into_iter()
        .filter(|f| is_rollup_file(f.name()))
        .map(|f| f.key)
        .collect())
}

/// A published rollup file's name (not a temp file).
pub(crate) fn is_rollup_file(name: &str) -> bool {
    name.ends_with(".parquet") && !name.starts_with('.')
}

fn read_meta(tree: &Tree, key: &str) -> Result<WrittenWindow, RollupError> {
    let path = tree.location(key);
    let bytes = tree.read(key)?.ok_or_else(|| RollupError::Corrupt {
        path: path.clone(),
        reason: "listed, then gone".into(),
    })?;
    let reader = SerializedFileReader::new(bytes).map_err(|source| RollupError::Parquet {
        path: path.clone(),
        source,
    })?;
    let kv = reader
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .cloned()
        .unwrap_or_default();
    let get = |name: &str| -> Result<i64, RollupError> {
        kv.iter()
            .find(|e| e.key == name)
            .and_then(|e| e.value.as_deref())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| RollupError::Corrupt {
                path: path.clone(),
                reason: format!("missing or bad metadata `{name}`"),
            })
    };
    Ok(WrittenWindow {
        start_ms: get(META[0])?,
        end_ms: get(META[1])?,
        first_offset: get(META[2])?,
        close_offset: get(META[3])?,
        path: path.clone(),
    })
}

/// The windows of one topic-partition already in the tree, and removal of
/// temp files a crash left behind (a local tree's). With `since_ms`, hour
/// directories that end before it are not read (their windows are covered
/// by the watermark).
pub fn scan_written(
    tree: &Tree,
    src: Source<'_>,
    since_ms: Option<i64>,
) -> Result<Vec<WrittenWindow>, RollupError> {
    let mut out = Vec::new();
    for key in partition_files(tree, src, since_ms, true)? {
        out.push(read_meta(tree, &key)?);
    }
    out.sort_by_key(|w| w.first_offset);
    Ok(out)
}

/// The keys of one topic-partition's window files, from the hour of
/// `since_ms` on (every hour without it). With `clean`, a local tree's
/// stale temp files of the partition are removed on the way.
fn partition_files(
    tree: &Tree,
    src: Source<'_>,
    since_ms: Option<i64>,
    clean: bool,
) -> Result<Vec<String>, RollupError> {
    let prefix = format!("{}-{}-", src.topic, src.partition);
    let from = since_ms
        .and_then(chrono::DateTime::from_timestamp_millis)
        .map(|t| t.format("date=%Y-%m-%d/hour=%H/").to_string())
        .unwrap_or_else(|| "date=".into());
    let mut out = Vec::new();
    for f in tree.walk(&format!("kind={}", src.kind), &from, "date=")? {
        let name = f.name();
        if let Some(tmp) = name.strip_prefix('.') {
            if let (true, true, Some(root)) = (clean, tmp.starts_with(&prefix), tree.local_root()) {
                remove_if_stale_temp(&root.join(&f.key), name)?;
            }
            continue;
        }
        let is_ours = name
            .strip_prefix(&prefix)
            .and_then(|rest| rest.strip_suffix(".parquet"))
            .is_some_and(|off| !off.is_empty() && off.bytes().all(|b| b.is_ascii_digit()));
        // Only `date=…/hour=…/<file>`: anything else is not the writer's.
        let in_hour = f
            .key
            .split('/')
            .nth(2)
            .is_some_and(|h| h.starts_with("hour="));
        if is_ours && in_hour {
            out.push(f.key);
        }
    }
    Ok(out)
}

/// A node's latest heartbeat in one partition's files.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeSeen {
    pub tenant: String,
    pub node_id: String,
    pub region: Option<String>,
    pub last_ms: i64,
}

/// Every node of one heartbeat partition's files from the hour of
/// `since_ms` on, with its latest heartbeat, and the partition's clock when
/// its last file was written (the latest of each file's watermark, but
/// never past its window's end; `None` without files): what a restarted
/// partition's silence tracker starts from (`tollgate_window::silence`).
pub fn nodes_seen(
    tree: &Tree,
    src: Source<'_>,
    since_ms: i64,
) -> Result<(Vec<NodeSeen>, Option<i64>), RollupError> {
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::TimestampMillisecondType;
    let wanted = |c: &str| matches!(c, "tenant" | "node_id" | "region" | "last_event_time");
    let mut latest: std::collections::BTreeMap<(String, String), NodeSeen> = Default::default();
    let mut clock: Option<i64> = None;
    for key in partition_files(tree, src, Some(since_ms), false)? {
        let (batches, kv) = summary::read_columns(tree, &key, &wanted)?;
        let meta = |name: &str| {
            kv.iter()
                .find(|e| e.key == name)
                .and_then(|e| e.value.as_deref())
                .and_then(|v| v.parse::<i64>().ok())
        };
        if let (Some(wm), Some(end)) = (meta("tollgate.watermark_ms"), meta(META[1])) {
            clock = clock.max(Some(wm.min(end)));
        }
        for b in batches {
            let (Some(tenant), Some(node), Some(region), Some(last)) = (
                b.column_by_name("tenant"),
                b.column_by_name("node_id"),
                b.column_by_name("region"),
                b.column_by_name("last_event_time"),
            ) else {
                continue; // schema 1: no node_id, nothing to restore
            };
            let (tenant, node, region) = (
                tenant.as_string::<i32>(),
                node.as_string::<i32>(),
                region.as_string::<i32>(),
            );
            let last = last.as_primitive::<TimestampMillisecondType>();
            for i in 0..b.num_rows() {
                if node.is_null(i) || last.is_null(i) {
                    continue;
                }
                let seen = NodeSeen {
                    tenant: tenant.value(i).to_string(),
                    node_id: node.value(i).to_string(),
                    region: (!region.is_null(i)).then(|| region.value(i).to_string()),
                    last_ms: last.value(i),
                };
                let k = (seen.tenant.clone(), seen.node_id.clone());
                match latest.get(&k) {
                    Some(prev) if prev.last_ms >= seen.last_ms => {}
                    _ => {
                        latest.insert(k, seen);
                    }
                }
            }
        }
    }
    Ok((latest.into_values().collect(), clock))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
