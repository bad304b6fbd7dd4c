//! Per-partition checkpoints next to the rollups:
//! `<root>/_tollgate/checkpoints/<topic>-<partition>.json`.
//!
//! The restart protocol needs the watermark as it was at the committed offset.
//! Kafka can carry it as commit metadata, but not every broker returns that
//! metadata (tansu drops it), so the worker also records it here, atomically,
//! *before* committing the offset. The file keeps the most recent entries, so
//! whichever of them the broker ended up committing can be looked up.

use serde::{Deserialize, Serialize};

use crate::{RollupError, Tree};

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

fn key(topic: &str, partition: i32) -> String {
    format!("_tollgate/checkpoints/{topic}-{partition}.json")
}

fn read(tree: &Tree, key: &str) -> Result<Option<CheckpointFile>, RollupError> {
    let Some(bytes) = tree.read(key)? else {
        return Ok(None);
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| RollupError::Corrupt {
            path: tree.location(key),
            reason: e.to_string(),
        })
}

/// Record a checkpoint durably ([`Tree::replace`]: on a local disk a temp
/// file, fsync, rename, fsync the directory).
pub fn save_checkpoint(
    tree: &Tree,
    topic: &str,
    partition: i32,
    entry: CheckpointEntry,
) -> Result<(), RollupError> {
    let key = key(topic, partition);
    let mut file = read(tree, &key)?.unwrap_or_else(|| CheckpointFile {
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
    let bytes = serde_json::to_vec_pretty(&file).map_err(|e| RollupError::Corrupt {
        path: tree.location(&key),
        reason: e.to_string(),
    })?;
    tree.replace(&key, bytes.into())
}

/// The checkpoint recorded for exactly `offset`, if any.
pub fn load_checkpoint(
    tree: &Tree,
    topic: &str,
    partition: i32,
    offset: i64,
) -> Result<Option<CheckpointEntry>, RollupError> {
    Ok(read(tree, &key(topic, partition))?
        .and_then(|f| f.history.into_iter().rev().find(|e| e.offset == offset)))
}

/// Remove the temp files of this partition's checkpoint that no writer can
/// still be writing (a writer killed between create and rename; see
/// [`crate::remove_if_stale_temp`]). A restore calls it whether or not an
/// offset was committed. Returns how many were removed (an object store
/// has no temp files: none).
pub fn remove_stale_checkpoint_temps(
    tree: &Tree,
    topic: &str,
    partition: i32,
) -> Result<usize, RollupError> {
    let Some(root) = tree.local_root() else {
        return Ok(0);
    };
    let prefix = format!(".{topic}-{partition}.json.");
    let mut removed = 0;
    for f in tree.walk("_tollgate/checkpoints", "", "")? {
        let name = f.name();
        if name.starts_with(&prefix) && crate::remove_if_stale_temp(&root.join(&f.key), name)? {
            removed += 1;
        }
    }
    Ok(removed)
}
