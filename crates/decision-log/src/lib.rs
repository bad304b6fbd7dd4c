//! The decision log: append-only, hash-chained, in segment files.
//!
//! ```text
//! <dir>/segment-00000000000000000001.ndjson   one canonical JSON record per line
//! <dir>/segment-00000000000000000002.ndjson   (a new segment past `max_segment_bytes`)
//! <dir>/HEAD.json                               records, last hash, signed
//! ```
//!
//! Invariants:
//! - Records are only appended; each one's `prev_hash` is the SHA-256 of the
//!   line before it, across segments ([`tollgate_decision::Chain`]).
//! - A `decision_id` is in the log at most once: [`DecisionLog::append`] of an
//!   id already present returns the stored record instead of a new one, which
//!   is what makes replays after a crash idempotent.
//! - [`DecisionLog::sync`] fsyncs the segment (and the directory when a
//!   segment was created), then replaces `HEAD.json` atomically. The pipeline
//!   calls it before committing the offsets that produced the decisions.
//! - `HEAD.json` is signed and names the record count and the last hash, so
//!   [`verify_dir`] also notices records dropped from the end.
//! - On open, an incomplete last line (a torn write: the process died
//!   mid-append, before any sync covering it) is cut off; every other damage
//!   refuses to open, pointing at `tollgate verify`.
//! - The chain in memory moves only past a line that was written whole
//!   ([`Chain::link`], then [`Chain::advance`]). A failed write, flush or
//!   sync leaves the log *failed*: nothing more is written after bytes of
//!   unknown extent, and the next call reopens the log from its files (as a
//!   restart would, cutting off a torn line) before it goes on. So a
//!   process can always restart on the log it wrote itself.
//! - A record longer than [`LogOptions::max_record_bytes`] is refused
//!   before anything is written ([`LogError::TooLarge`]).
//! - In a running process one thread owns the log and writes it: the
//!   [`Committer`], which every producer of decisions submits to and which
//!   syncs a group of submissions at once.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

mod committer;
pub use committer::{CommitError, Committer, Ticket, HEAD_EVERY};

use serde_json::{json, Value};
use tollgate_decision::{
    line_hash, Chain, Decision, Draft, Key, KeyRing, Verifier, VerifyError, GENESIS_HASH,
};

const SEGMENT_PREFIX: &str = "segment-";
const SEGMENT_SUFFIX: &str = ".ndjson";
const HEAD_FILE: &str = "HEAD.json";
/// Held locked (`flock`, exclusive) by the process writing the log.
const LOCK_FILE: &str = "LOCK";

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("decision log {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("decision log {path}, line {line}: {reason}; run `tollgate verify {dir}` for details", dir = .path.parent().map(|p| p.display().to_string()).unwrap_or_default())]
    Damaged {
        path: PathBuf,
        line: u64,
        reason: String,
    },
    #[error("decision log {dir}: {reason}")]
    Head { dir: PathBuf, reason: String },
    #[error("decision log {dir} is open in another process: one process writes a log (give each instance its own `decisions.log_dir`, or stop the other one)")]
    InUse { dir: PathBuf },
    #[error(
        "decision record is {bytes} bytes, more than the log takes ({max}); nothing was written"
    )]
    TooLarge { bytes: usize, max: usize },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> LogError + '_ {
    move |source| LogError::Io {
        path: path.to_owned(),
        source,
    }
}

#[derive(Clone, Copy, Debug)]
struct Location {
    segment: u64,
    offset: u64,
    len: u32,
}

/// What [`DecisionLog::append`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Appended {
    /// A new record, appended (not yet synced).
    New { decision: Decision, line: String },
    /// The id was already in the log; this is the stored record, unchanged.
    Existing { decision: Decision, line: String },
}

impl Appended {
    pub fn line(&self) -> &str {
        match self {
            Appended::New { line, .. } | Appended::Existing { line, .. } => line,
        }
    }
    pub fn decision(&self) -> &Decision {
        match self {
            Appended::New { decision, .. } | Appended::Existing { decision, .. } => decision,
        }
    }
    pub fn is_new(&self) -> bool {
        matches!(self, Appended::New { .. })
    }
}

#[derive(Clone, Debug)]
pub struct LogOptions {
    pub max_segment_bytes: u64,
    /// Longest record line accepted, in bytes.
    pub max_record_bytes: usize,
}

/// Default [`LogOptions::max_record_bytes`]: a window's decision is well
/// under 4 KiB; a gate's carries the request's tags and metadata.
pub const DEFAULT_MAX_RECORD_BYTES: usize = 64 << 10;

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            max_segment_bytes: 64 << 20,
            max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
        }
    }
}

/// A segment file being appended to. In tests it can be told to fail after
/// a number of bytes (a full disk), writing only part of what it is given.
struct Segment {
    file: File,
    #[cfg(test)]
    fail_after: Option<u64>,
}

impl Segment {
    fn new(file: File) -> Self {
        Segment {
            file,
            #[cfg(test)]
            fail_after: None,
        }
    }

    fn sync_data(&self) -> std::io::Result<()> {
        #[cfg(test)]
        if self.fail_after == Some(0) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::StorageFull,
                "injected: no space left on device",
            ));
        }
        self.file.sync_data()
    }
}

impl Write for Segment {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        #[cfg(test)]
        if let Some(left) = self.fail_after.as_mut() {
            if *left == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::StorageFull,
                    "injected: no space left on device",
                ));
            }
            let n = (buf.len() as u64).min(*left) as usize;
            let n = self.file.write(&buf[..n])?;
            *left -= n as u64;
            return Ok(n);
        }
        self.file.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// The writer side of the log. One per process, enforced: it holds the
/// directory's `LOCK` file locked while it is open.
pub struct DecisionLog {
    dir: PathBuf,
    /// The locked `LOCK` file (released when the log is dropped, or when
    /// the process dies).
    lock: File,
    key: Key,
    opts: LogOptions,
    chain: Chain,
    segment: u64,
    /// Appends are buffered; `sync` (and any read-back) flushes first.
    file: BufWriter<Segment>,
    /// Why the last write, flush or sync failed: the segment may end in a
    /// partial line, so nothing more is written before a reopen.
    failed: Option<String>,
    segment_bytes: u64,
    records: u64,
    ids: HashMap<u128, Location>,
    dirty: bool,
    /// Records synced since `HEAD.json` was last written.
    head_stale: bool,
    new_segment: bool,
}

fn segment_name(seq: u64) -> String {
    format!("{SEGMENT_PREFIX}{seq:020}{SEGMENT_SUFFIX}")
}

/// Segment files of `dir`, in order.
fn segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, LogError> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(io(dir))? {
        let entry = entry.map_err(io(dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(seq) = name
            .strip_prefix(SEGMENT_PREFIX)
            .and_then(|s| s.strip_suffix(SEGMENT_SUFFIX))
            .and_then(|s| s.parse::<u64>().ok())
        {
            out.push((seq, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

fn id_key(id: &str) -> Option<u128> {
    u128::from_str_radix(id, 16).ok().filter(|_| id.len() == 32)
}

impl DecisionLog {
    /// Open (or create) the log in `dir`, signing new records with `key`.
    /// Refused ([`LogError::InUse`]) while another process has it open.
    pub fn open(dir: &Path, key: Key, opts: LogOptions) -> Result<Self, LogError> {
        fs::create_dir_all(dir).map_err(io(dir))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io(&lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                return Err(LogError::InUse {
                    dir: dir.to_owned(),
                })
            }
            Err(fs::TryLockError::Error(e)) => return Err(io(&lock_path)(e)),
        }
        Self::open_locked(dir, key, opts, lock)
    }

    /// [`Self::open`] once the lock is held.
    fn open_locked(dir: &Path, key: Key, opts: LogOptions, lock: File) -> Result<Self, LogError> {
        let segs = segments(dir)?;
        let mut ids = HashMap::new();
        let mut prev = GENESIS_HASH.to_owned();
        let mut records = 0u64;
        for (i, (seq, path)) in segs.iter().enumerate() {
            let last = i + 1 == segs.len();
            let mut bytes = Vec::new();
            File::open(path)
                .and_then(|mut f| f.read_to_end(&mut bytes))
                .map_err(io(path))?;
            if last && !bytes.is_empty() && !bytes.ends_with(b"\n") {
                // Cut at the byte level: a torn line may end inside a
                // UTF-8 sequence.
                let keep = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |p| p + 1);
                tracing::warn!(
                    segment = %path.display(),
                    dropped_bytes = bytes.len() - keep,
                    "cutting off an incomplete last record (torn write from a crash)"
                );
                let f = OpenOptions::new()
                    .write(true)
                    .open(path)
                    .map_err(io(path))?;
                f.set_len(keep as u64).map_err(io(path))?;
                f.sync_all().map_err(io(path))?;
                bytes.truncate(keep);
            }
            let text = String::from_utf8(bytes).map_err(|e| LogError::Damaged {
                path: path.clone(),
                line: 0,
                reason: format!("not UTF-8 text: {e}"),
            })?;
            let mut offset = 0u64;
            for (n, line) in text.split_terminator('\n').enumerate() {
                let damaged = |reason: String| LogError::Damaged {
                    path: path.clone(),
                    line: n as u64 + 1,
                    reason,
                };
                let d: Decision = serde_json::from_str(line)
                    .map_err(|e| damaged(format!("not a decision record: {e}")))?;
                if d.prev_hash != prev {
                    return Err(damaged(
                        VerifyError::BrokenChain {
                            expected: prev,
                            found: d.prev_hash,
                        }
                        .to_string(),
                    ));
                }
                let k = id_key(&d.decision_id)
                    .ok_or_else(|| damaged(format!("bad decision_id {:?}", d.decision_id)))?;
                ids.insert(
                    k,
                    Location {
                        segment: *seq,
                        offset,
                        len: line.len() as u32,
                    },
                );
                prev = line_hash(line);
                offset += line.len() as u64 + 1;
                records += 1;
            }
        }
        let head = read_head(dir)?;
        if let Some(head) = &head {
            if head.records > records {
                return Err(LogError::Head {
                    dir: dir.to_owned(),
                    reason: format!(
                        "HEAD.json counts {} records but the segments hold {records}: records were lost or removed; run `tollgate verify {}`",
                        head.records,
                        dir.display()
                    ),
                });
            }
        }
        let (segment, new_segment) = match segs.last() {
            Some((seq, _)) => (*seq, false),
            None => (1, true),
        };
        let path = dir.join(segment_name(segment));
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io(&path))?;
        let segment_bytes = file.metadata().map_err(io(&path))?.len();
        // Records appended after the last HEAD (a crash between the append
        // and the sync): make them durable and count them in HEAD now, or a
        // replay that only finds existing ids would never update it.
        if records > 0 && head.as_ref().is_none_or(|h| h.records < records) {
            file.sync_all().map_err(io(&path))?;
            write_head(
                dir,
                &Head {
                    records,
                    last_hash: prev.clone(),
                },
                &key,
            )?;
            tracing::info!(dir = %dir.display(), records, "HEAD.json brought up to date after a crash");
        }
        tracing::info!(dir = %dir.display(), records, segment, "decision log opened");
        Ok(DecisionLog {
            dir: dir.to_owned(),
            lock,
            key,
            opts,
            chain: Chain::after(prev),
            segment,
            file: BufWriter::with_capacity(256 << 10, Segment::new(file)),
            failed: None,
            segment_bytes,
            records,
            ids,
            dirty: new_segment,
            head_stale: false,
            new_segment,
        })
    }

    pub fn records(&self) -> u64 {
        self.records
    }

    pub fn contains(&self, decision_id: &str) -> bool {
        id_key(decision_id).is_some_and(|k| self.ids.contains_key(&k))
    }

    /// After a failed write: reopen from the files, as a restart would.
    fn recover(&mut self) -> Result<(), LogError> {
        let Some(reason) = self.failed.take() else {
            return Ok(());
        };
        tracing::warn!(dir = %self.dir.display(), %reason, "reopening the decision log after a failed write");
        // The same locked file description (a dup): the lock never lapses.
        let lock = match self.lock.try_clone() {
            Ok(l) => l,
            Err(e) => {
                self.failed = Some(reason);
                return Err(io(&self.dir.join(LOCK_FILE))(e));
            }
        };
        match DecisionLog::open_locked(&self.dir, self.key.clone(), self.opts.clone(), lock) {
            Ok(fresh) => {
                let old = std::mem::replace(self, fresh);
                // Drop the old buffer unwritten: its bytes would land after
                // a partial line.
                let _ = old.file.into_parts();
                Ok(())
            }
            Err(e) => {
                self.failed = Some(reason);
                Err(e)
            }
        }
    }

    /// Remember that the segment is in an unknown state.
    fn fail<T>(&mut self, e: std::io::Error) -> Result<T, LogError> {
        self.failed = Some(e.to_string());
        Err(io(&self.dir.join(segment_name(self.segment)))(e))
    }

    /// Seal and append `draft`, unless its id is already in the log.
    pub fn append(&mut self, draft: Draft, ts: String) -> Result<Appended, LogError> {
        self.recover()?;
        let id = draft.decision_id();
        let key = id_key(&id).unwrap_or_default();
        if let Some(loc) = self.ids.get(&key).copied() {
            if loc.segment == self.segment {
                if let Err(e) = self.file.flush() {
                    return self.fail(e);
                }
            }
            let line = self.read_at(loc)?;
            let decision = serde_json::from_str(&line).map_err(|e| LogError::Damaged {
                path: self.dir.join(segment_name(loc.segment)),
                line: 0,
                reason: format!("record at byte {}: {e}", loc.offset),
            })?;
            return Ok(Appended::Existing { decision, line });
        }
        if self.segment_bytes >= self.opts.max_segment_bytes {
            self.rotate()?;
        }
        let (decision, line) = self.chain.link(draft, ts, &self.key);
        if line.len() + 1 > self.opts.max_record_bytes {
            return Err(LogError::TooLarge {
                bytes: line.len() + 1,
                max: self.opts.max_record_bytes,
            });
        }
        if let Err(e) = self
            .file
            .write_all(line.as_bytes())
            .and_then(|()| self.file.write_all(b"\n"))
        {
            return self.fail(e);
        }
        self.chain.advance(&line);
        self.ids.insert(
            key,
            Location {
                segment: self.segment,
                offset: self.segment_bytes,
                len: line.len() as u32,
            },
        );
        self.segment_bytes += line.len() as u64 + 1;
        self.records += 1;
        self.dirty = true;
        Ok(Appended::New { decision, line })
    }

    fn read_at(&self, loc: Location) -> Result<String, LogError> {
        let path = self.dir.join(segment_name(loc.segment));
        let mut f = File::open(&path).map_err(io(&path))?;
        f.seek(SeekFrom::Start(loc.offset)).map_err(io(&path))?;
        let mut buf = vec![0u8; loc.len as usize];
        f.read_exact(&mut buf).map_err(io(&path))?;
        String::from_utf8(buf).map_err(|e| LogError::Damaged {
            path,
            line: 0,
            reason: e.to_string(),
        })
    }

    fn rotate(&mut self) -> Result<(), LogError> {
        self.sync()?;
        let path = self.dir.join(segment_name(self.segment + 1));
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)
            .map_err(io(&path))?;
        self.segment += 1;
        self.file = BufWriter::with_capacity(256 << 10, Segment::new(file));
        self.segment_bytes = 0;
        self.new_segment = true;
        self.dirty = true;
        Ok(())
    }

    /// Make every appended record durable and update `HEAD.json`.
    pub fn sync(&mut self) -> Result<(), LogError> {
        self.sync_records()?;
        if self.head_stale {
            write_head(
                &self.dir,
                &Head {
                    records: self.records,
                    last_hash: self.chain.prev_hash().to_owned(),
                },
                &self.key,
            )?;
            self.head_stale = false;
        }
        Ok(())
    }

    /// Make the appended records durable without rewriting `HEAD.json`
    /// (one `fdatasync` instead of three syncs and a rename). Until the
    /// next [`sync`](Self::sync), records after the last HEAD could be cut
    /// off undetected; `verify_dir` accepts them (more records than HEAD
    /// counts), and opening the log brings HEAD up to date.
    pub fn sync_records(&mut self) -> Result<(), LogError> {
        self.recover()?;
        if !self.dirty {
            return Ok(());
        }
        if let Err(e) = self
            .file
            .flush()
            .and_then(|()| self.file.get_ref().sync_data())
        {
            return self.fail(e);
        }
        if self.new_segment {
            sync_dir(&self.dir)?;
            self.new_segment = false;
        }
        self.dirty = false;
        self.head_stale = true;
        Ok(())
    }

    /// Make the segment fail like a full disk after `bytes` more bytes
    /// (a partial write, then errors).
    #[cfg(test)]
    fn fail_writes_after(&mut self, bytes: u64) {
        self.file.get_mut().fail_after = Some(bytes);
    }

    /// Is `HEAD.json` behind the synced records?
    pub fn head_stale(&self) -> bool {
        self.head_stale
    }
}

fn sync_dir(dir: &Path) -> Result<(), LogError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

struct Head {
    records: u64,
    last_hash: String,
}

fn head_signing_input(records: u64, last_hash: &str) -> String {
    format!("tollgate decision log head/1\n{records}\n{last_hash}")
}

fn write_head(dir: &Path, head: &Head, key: &Key) -> Result<(), LogError> {
    let body = json!({
        "records": head.records,
        "last_hash": head.last_hash,
        "key_id": key.id(),
        "signature": key.sign(head_signing_input(head.records, &head.last_hash).as_bytes()),
    });
    let tmp = dir.join(".HEAD.json.tmp");
    let path = dir.join(HEAD_FILE);
    let mut f = File::create(&tmp).map_err(io(&tmp))?;
    f.write_all(body.to_string().as_bytes())
        .and_then(|_| f.sync_data())
        .map_err(io(&tmp))?;
    fs::rename(&tmp, &path).map_err(io(&path))?;
    sync_dir(dir)
}

struct SignedHead {
    records: u64,
    last_hash: String,
    key_id: String,
    signature: String,
}

fn read_head(dir: &Path) -> Result<Option<SignedHead>, LogError> {
    let path = dir.join(HEAD_FILE);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(&path)(e)),
    };
    let bad = |reason: &str| LogError::Head {
        dir: dir.to_owned(),
        reason: format!("HEAD.json is unreadable: {reason}"),
    };
    let v: Value = serde_json::from_str(&text).map_err(|e| bad(&e.to_string()))?;
    let s = |k: &str| {
        v.get(k)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| bad(&format!("missing {k}")))
    };
    Ok(Some(SignedHead {
        records: v
            .get("records")
            .and_then(Value::as_u64)
            .ok_or_else(|| bad("missing records"))?,
        last_hash: s("last_hash")?,
        key_id: s("key_id")?,
        signature: s("signature")?,
    }))
}

/// Where `tollgate verify` found the first problem.
#[derive(Debug, Clone, PartialEq)]
pub struct BadRecord {
    pub segment: PathBuf,
    /// 1-based line in the segment; 0 for problems with `HEAD.json`.
    pub line: u64,
    /// Position in the whole log, 1-based.
    pub record: u64,
    pub decision_id: Option<String>,
    pub reason: String,
}

impl std::fmt::Display for BadRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.line == 0 {
            return write!(f, "{}: {}", self.segment.display(), self.reason);
        }
        write!(
            f,
            "record {} ({}:{}{}): {}",
            self.record,
            self.segment.display(),
            self.line,
            self.decision_id
                .as_deref()
                .map(|id| format!(", decision_id {id}"))
                .unwrap_or_default(),
            self.reason
        )
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct VerifyReport {
    pub records: u64,
    pub segments: usize,
    pub last_hash: String,
    pub first_bad: Option<BadRecord>,
}

/// The decision logs at `root`: `root` itself if it holds segments, else
/// each subdirectory that does (one log per instance, `decisions.per_instance`),
/// by name. Empty if there are none.
pub fn logs_under(root: &Path) -> Result<Vec<PathBuf>, LogError> {
    if !segments(root)?.is_empty() {
        return Ok(vec![root.to_owned()]);
    }
    let mut logs = Vec::new();
    for entry in fs::read_dir(root).map_err(io(root))? {
        let path = entry.map_err(io(root))?.path();
        if path.is_dir() && !segments(&path)?.is_empty() {
            logs.push(path);
        }
    }
    logs.sort();
    Ok(logs)
}

/// Every complete record of the log in `dir` (its JSON line, without the
/// newline), in order; a line still being written is not one yet. Records
/// are not verified here (`verify_dir` does that). `f` breaks to stop.
pub fn for_each_record(
    dir: &Path,
    mut f: impl FnMut(&str) -> std::ops::ControlFlow<()>,
) -> Result<(), LogError> {
    use std::io::BufRead;
    for (_, path) in segments(dir)? {
        let file = File::open(&path).map_err(io(&path))?;
        let mut reader = std::io::BufReader::new(file);
        let mut line = String::new();
        loop {
            line.clear();
            let read = reader.read_line(&mut line).map_err(io(&path))?;
            if read == 0 || !line.ends_with('\n') {
                break;
            }
            if f(line.trim_end_matches('\n')).is_break() {
                return Ok(());
            }
        }
    }
    Ok(())
}

/// Check every record's form, signature and chain link, id uniqueness, and
/// the signed `HEAD.json`. Stops at the first bad record.
pub fn verify_dir(dir: &Path, ring: &KeyRing) -> Result<VerifyReport, LogError> {
    if !dir.is_dir() {
        return Err(io(dir)(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "no such directory",
        )));
    }
    let segs = segments(dir)?;
    let mut v = Verifier::new(ring);
    let mut record = 0u64;
    let report = |records, first_bad, last_hash: &str| VerifyReport {
        records,
        segments: segs.len(),
        last_hash: last_hash.to_owned(),
        first_bad,
    };
    for (_, path) in &segs {
        let mut bytes = Vec::new();
        File::open(path)
            .and_then(|mut f| f.read_to_end(&mut bytes))
            .map_err(io(path))?;
        if bytes.is_empty() {
            continue;
        }
        let torn = !bytes.ends_with(b"\n");
        let body = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
        let lines: Vec<&[u8]> = body.split(|b| *b == b'\n').collect();
        for (n, line) in lines.iter().enumerate() {
            record += 1;
            let bad = |reason: String, id: Option<String>| BadRecord {
                segment: path.clone(),
                line: n as u64 + 1,
                record,
                decision_id: id,
                reason,
            };
            let problem = if torn && n + 1 == lines.len() {
                Err((
                    "incomplete last record (a torn write; `tollgate run` cuts it off on start)"
                        .to_owned(),
                    None,
                ))
            } else {
                match std::str::from_utf8(line) {
                    Err(e) => Err((format!("not UTF-8: {e}"), None)),
                    Ok(text) => v.check_line(text).map(drop).map_err(|e| {
                        let id = serde_json::from_str::<Value>(text)
                            .ok()
                            .and_then(|v| v.get("decision_id")?.as_str().map(str::to_owned));
                        (e.to_string(), id)
                    }),
                }
            };
            if let Err((reason, id)) = problem {
                return Ok(report(record - 1, Some(bad(reason, id)), v.last_hash()));
            }
        }
    }
    let records = record;
    let last_hash = v.last_hash().to_owned();
    let head_problem = match read_head(dir) {
        Err(e) => Some(e.to_string()),
        Ok(None) if records == 0 => None,
        Ok(None) => Some("HEAD.json is missing, so dropped trailing records cannot be ruled out".into()),
        Ok(Some(h)) => match ring.verification_key(&h.key_id) {
            None => Some(format!(
                "HEAD.json is signed with key {:?}, which is not configured for verification",
                h.key_id
            )),
            Some(k) if !k.verify(head_signing_input(h.records, &h.last_hash).as_bytes(), &h.signature) => {
                Some("HEAD.json signature does not match (changed, or another secret)".into())
            }
            Some(_) if h.records > records => Some(format!(
                "HEAD.json counts {} records but the segments hold {records}: records were dropped from the end",
                h.records
            )),
            Some(_) if h.records == records && h.last_hash != last_hash => Some(
                "HEAD.json's last hash differs from the last record's: the last record was replaced"
                    .into(),
            ),
            // More records than HEAD counts: appended after the last sync,
            // which a crash can leave behind; they verified above.
            Some(_) => None,
        },
    };
    let first_bad = head_problem.map(|reason| BadRecord {
        segment: dir.join(HEAD_FILE),
        line: 0,
        record: records,
        decision_id: None,
        reason,
    });
    Ok(report(records, first_bad, &last_hash))
}

#[cfg(test)]
mod tests;
