//! Per-partition checkpoints next to the rollups:
//! `<root>/_tollgate/checkpoints/<topic>-<partition>.json`.
//!
//! The restart protocol needs the watermark as it was at the committed offset.
//! Kafka can carry it as commit metadata, but not every broker returns that
//! metadata (tansu drops it), so the worker also records it here, atomically,
//! *before* committing the offset. The file keeps the most recent entries, so
//! whichever of them the broker ended up committing can be looked up.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{io, sync_dir, RollupError};

const KEEP: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointEntry {
    pub offset: i64,
    pub watermark_ms: Option<i64>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct CheckpointFile {
    version: u32,
    topic: String,
    partition: i32,
    /// Oldest first.
    history: Vec<CheckpointEntry>,
}

fn path(root: &Path, topic: &str, partition: i32) -> PathBuf {
    root.join("_tollgate")
        .join("checkpoints")
        .join(format!("{topic}-{partition}.json"))
}

fn read(p: &Path) -> Result<Option<CheckpointFile>, RollupError> {
    match fs::read(p) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| RollupError::Corrupt {
                path: p.to_path_buf(),
                reason: e.to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(RollupError::Io {
            op: "read",
            path: p.to_path_buf(),
            source: e,
        }),
    }
}

/// Record a checkpoint durably (temp file, fsync, rename, fsync directory).
pub fn save_checkpoint(
    root: &Path,
    topic: &str,
    partition: i32,
    entry: CheckpointEntry,
) -> Result<(), RollupError> {
    let p = path(root, topic, partition);
    let dir = p.parent().unwrap_or(root);
    fs::create_dir_all(dir).map_err(io("create directory", dir))?;
    let mut file = read(&p)?.unwrap_or_else(|| CheckpointFile {
        version: 1,
        topic: topic.into(),
        partition,
        history: vec![],
    });
    file.history.retain(|e| e.offset != entry.offset);
    file.history.push(entry);
    if file.history.len() > KEEP {
        let drop = file.history.len() - KEEP;
        file.history.drain(..drop);
    }
    let tmp = dir.join(crate::temp_name(&format!("{topic}-{partition}.json")));
    let bytes = serde_json::to_vec_pretty(&file).map_err(|e| RollupError::Corrupt {
        path: p.clone(),
        reason: e.to_string(),
    })?;
    let mut f = File::create(&tmp).map_err(io("create", &tmp))?;
    f.write_all(&bytes).map_err(io("write", &tmp))?;
    f.sync_all().map_err(io("fsync", &tmp))?;
    drop(f);
    fs::rename(&tmp, &p).map_err(io("rename", &tmp))?;
    sync_dir(dir)
}

/// The checkpoint recorded for exactly `offset`, if any.
pub fn load_checkpoint(
    root: &Path,
    topic: &str,
    partition: i32,
    offset: i64,
) -> Result<Option<CheckpointEntry>, RollupError> {
    Ok(read(&path(root, topic, partition))?
        .and_then(|f| f.history.into_iter().rev().find(|e| e.offset == offset)))
}

/// Remove the temp files of this partition's checkpoint that no writer can
/// still be writing (a writer killed between create and rename; see
/// [`crate::remove_if_stale_temp`]). A restore calls it whether or not an
/// offset was committed. Returns how many were removed.
pub fn remove_stale_checkpoint_temps(
    root: &Path,
    topic: &str,
    partition: i32,
) -> Result<usize, RollupError> {
    let p = path(root, topic, partition);
    let (Some(dir), Some(file)) = (p.parent(), p.file_name()) else {
        return Ok(0);
    };
    let prefix = format!(".{}.", file.to_string_lossy());
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(io("list", dir)(e)),
    };
    let mut removed = 0;
    for entry in entries {
        let entry = entry.map_err(io("list", dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(&prefix) && crate::remove_if_stale_temp(&entry.path(), &name)? {
            removed += 1;
        }
    }
    Ok(removed)
}
