//! Event-time windows for one topic-partition: assignment, watermark,
//! dedup, aggregation, and the bookkeeping of the exactly-once protocol
//! (`ARCHITECTURE.md`, "Delivery protocol"). This crate performs no I/O:
//! the pipeline feeds it events with their offsets, writes what it hands
//! back, and tells it what became durable; it answers where the partition
//! may be committed.
//!
//! ```
//! use tollgate_enrich::Enriched;
//! use tollgate_event::{decode, Kind, Limits};
//! use tollgate_window::{Offer, PartitionState, WindowSpec};
//!
//! let spec = WindowSpec { size_ms: 60_000, lateness_ms: 5_000 };
//! let mut p = PartitionState::new(spec, Kind::Inference);
//! let mut offer = |p: &mut PartitionState, offset: i64, id: &str, ts: i64| {
//!     let text = format!(r#"{{"event_id":"{id}","ts":{ts},"tenant":"acme","tags":{{"team":"ai"}},"model":"m","input_tokens":10,"output_tokens":1,"duration_ms":5}}"#);
//!     let event = decode(text.as_bytes(), Kind::Inference, &Limits::default()).unwrap();
//!     p.offer(offset, &event, &Enriched { cost_usd: 0.5, ..Enriched::default() })
//! };
//! assert_eq!(offer(&mut p, 0, "a", 1_000), Offer::Accepted);
//! assert_eq!(offer(&mut p, 1, "a", 2_000), Offer::Duplicate);
//! // The watermark (max event time − lateness) passes the first window's end.
//! assert_eq!(offer(&mut p, 2, "b", 70_000), Offer::Accepted);
//! let closed = p.drain_closed();
//! assert_eq!((closed.len(), closed[0].events(), closed[0].first_offset), (1, 1, 0));
//! // Until its file is durable the closed window holds the commit point...
//! assert_eq!(p.checkpoint().unwrap().offset, 0);
//! p.written(closed[0].first_offset);
//! // ...then the commit point is the open window's first offset.
//! assert_eq!(p.checkpoint().unwrap().offset, 2);
//! // An event for the closed window is late, never counted again.
//! assert_eq!(offer(&mut p, 3, "c", 3_000), Offer::Late { window_start: 0 });
//! ```

mod by_team;
pub mod resume;
mod rows;
pub mod silence;
mod sketch;

use std::collections::{BTreeMap, HashMap, HashSet};

use rows::{RowTable, Sizes};

use tollgate_enrich::Enriched;
use tollgate_event::{Body, Event, Kind};

pub use by_team::ByTeam;
pub use rows::{DimsRef, RowSet};
pub use sketch::Sketch;

type FastSet<K> = HashSet<K, foldhash::fast::FixedState>;

/// Tumbling event-time windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowSpec {
    pub size_ms: i64,
    /// How far behind the highest event time the watermark trails.
    pub lateness_ms: i64,
}

impl WindowSpec {
    pub fn start_of(&self, ts_ms: i64) -> i64 {
        ts_ms.div_euclid(self.size_ms) * self.size_ms
    }
}

/// Length-prefixed, unambiguous encoding of the row key.
fn encode_key(buf: &mut Vec<u8>, e: &Event<'_>) {
    buf.clear();
    rows::push_field(buf, Some(&e.tenant));
    rows::push_field(buf, e.tags.team.as_deref());
    rows::push_field(buf, e.tags.environment.as_deref());
    rows::push_field(buf, e.tags.project.as_deref());
    rows::push_field(buf, e.model());
    rows::push_field(buf, e.region.as_deref());
    let node = match e.body {
        Body::Heartbeat { .. } => e.node_id.as_deref(),
        _ => None,
    };
    rows::push_field(buf, node);
}

/// Additive measures of one rollup row.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Measures {
    pub events: u64,
    pub input_tokens: u64,
    pub cached_input_tokens: u64,
    pub cache_write_tokens: u64,
    pub output_tokens: u64,
    pub reasoning_tokens: u64,
    pub cost_usd: f64,
    pub energy_wh: f64,
    pub carbon_g: f64,
    /// Embodied emissions (SCI's M), g CO2e.
    pub embodied_g: f64,
    pub gpu_hours: f64,
    /// Heartbeats whose `proof_ok` was false.
    pub failed_proofs: u64,
    pub max_unit_cost_usd: f64,
    pub duration_ms_sum: f64,
    pub duration_ms_max: f64,
    pub duration: Sketch,
    /// Lowest heartbeat `uptime_ratio` (None when no event carried one).
    pub uptime_ratio_min: Option<f64>,
    /// Latest event time of the row (epoch ms).
    pub last_event_ms: i64,
}

impl Measures {
    fn add(&mut self, e: &Event<'_>, x: &Enriched) {
        self.events += 1;
        if let Body::Inference {
            input_tokens,
            output_tokens,
            cached_input_tokens,
            cache_write_tokens,
            reasoning_tokens,
            ..
        } = e.body
        {
            self.input_tokens += input_tokens;
            self.output_tokens += output_tokens;
            self.cached_input_tokens += cached_input_tokens;
            self.cache_write_tokens += cache_write_tokens;
            self.reasoning_tokens += reasoning_tokens;
        }
        if let Body::Heartbeat {
            uptime_ratio,
            proof_ok,
            ..
        } = e.body
        {
            if let Some(u) = uptime_ratio {
                self.uptime_ratio_min = Some(self.uptime_ratio_min.map_or(u, |m| m.min(u)));
            }
            self.failed_proofs += u64::from(proof_ok == Some(false));
        }
        self.last_event_ms = self.last_event_ms.max(e.ts_ms);
        self.cost_usd += x.cost_usd;
        self.energy_wh += x.energy_wh;
        self.carbon_g += x.carbon_g;
        self.embodied_g += x.embodied_g;
        self.gpu_hours += x.gpu_hours;
        self.max_unit_cost_usd = self.max_unit_cost_usd.max(x.unit_cost_usd);
        if let Some(d) = x.duration_ms {
            self.duration_ms_sum += d;
            self.duration_ms_max = self.duration_ms_max.max(d);
            self.duration.add(d);
        }
    }

    pub fn duration_ms_p95(&self) -> Option<f64> {
        self.duration.quantile(0.95)
    }
}

/// What became of one offered event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// Counted in its window.
    Accepted,
    /// Same `(tenant, event_id)` already counted in this window.
    Duplicate,
    /// A replayed event of a window already written (its offset is below the
    /// window's `close_offset`): skipped, it is in the file.
    AlreadyWritten,
    /// Its window is closed: goes to the late-data output.
    Late { window_start: i64 },
}

struct OpenWindow {
    first_offset: i64,
    /// Watermark just before `first_offset` was processed.
    wm_before: i64,
    rows: RowTable,
    seen: FastSet<u128>,
    duplicates: u64,
}

/// Additive measures of a set of rows (totals across windows, teams, files).
/// Serialized as-is where they travel (the spend topic): a measure a
/// reader does not know is skipped and one a writer did not send is 0, so
/// instances of different versions read each other's records.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Totals {
    pub events: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost_usd: f64,
    pub energy_wh: f64,
    pub carbon_g: f64,
    pub embodied_g: f64,
    pub gpu_hours: f64,
}

impl Totals {
    pub fn of(m: &Measures) -> Totals {
        Totals {
            events: m.events,
            input_tokens: m.input_tokens,
            output_tokens: m.output_tokens,
            cost_usd: m.cost_usd,
            energy_wh: m.energy_wh,
            carbon_g: m.carbon_g,
            embodied_g: m.embodied_g,
            gpu_hours: m.gpu_hours,
        }
    }

    pub fn add(&mut self, o: &Totals) {
        self.events += o.events;
        self.input_tokens += o.input_tokens;
        self.output_tokens += o.output_tokens;
        self.cost_usd += o.cost_usd;
        self.energy_wh += o.energy_wh;
        self.carbon_g += o.carbon_g;
        self.embodied_g += o.embodied_g;
        self.gpu_hours += o.gpu_hours;
    }
}

/// A window handed to the adapter to be written.
#[derive(Debug, Clone, PartialEq)]
pub struct ClosedWindow {
    pub start_ms: i64,
    pub end_ms: i64,
    pub first_offset: i64,
    /// Offset after the last one this window considered: every event of this
    /// window below it is in the file (or was a duplicate).
    pub close_offset: i64,
    /// Watermark when the window closed.
    pub watermark_ms: i64,
    pub duplicates: u64,
    /// Rows in a deterministic order, so a replay writes an identical file.
    pub rows: RowSet,
}

impl ClosedWindow {
    /// A window of `rows` from `start_ms`, `size_ms` long, fed by the one
    /// offset `first_offset` and closed at its end, without duplicates: a
    /// window as tools and tests write one.
    pub fn of_rows<'a>(
        start_ms: i64,
        size_ms: i64,
        first_offset: i64,
        rows: impl IntoIterator<Item = (DimsRef<'a>, Measures)>,
    ) -> ClosedWindow {
        ClosedWindow {
            start_ms,
            end_ms: start_ms + size_ms,
            first_offset,
            close_offset: first_offset + 1,
            watermark_ms: start_ms + size_ms,
            duplicates: 0,
            rows: RowSet::from_rows(rows),
        }
    }

    pub fn events(&self) -> u64 {
        self.rows.measures().map(|m| m.events).sum()
    }
}

/// The point a partition can be committed at, and the state needed to resume
/// from it exactly: the watermark just before that offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpoint {
    pub offset: i64,
    pub watermark_ms: Option<i64>,
}

const CHECKPOINT_PREFIX: &str = "tollgate/1 wm=";

impl Checkpoint {
    /// Text stored as the Kafka commit metadata.
    pub fn metadata(&self) -> String {
        match self.watermark_ms {
            Some(wm) => format!("{CHECKPOINT_PREFIX}{wm}"),
            None => format!("{CHECKPOINT_PREFIX}none"),
        }
    }

    /// The watermark from commit metadata. `Err` when the metadata is not
    /// ours (or garbled): the caller must not guess.
    pub fn parse_watermark(metadata: &str) -> Result<Option<i64>, String> {
        let rest = metadata
            .strip_prefix(CHECKPOINT_PREFIX)
            .ok_or_else(|| format!("commit metadata {metadata:?} was not written by tollgate"))?;
        if rest == "none" {
            return Ok(None);
        }
        rest.parse::<i64>()
            .map(Some)
            .map_err(|_| format!("commit metadata {metadata:?} has a bad watermark"))
    }
}

/// Window state of one topic-partition.
pub struct PartitionState {
    spec: WindowSpec,
    kind: Kind,
    /// `i64::MIN` until the first event.
    wm: i64,
    open: BTreeMap<i64, OpenWindow>,
    /// Windows written before a restart whose `close_offset` lies beyond the
    /// resume point: start → close_offset.
    written: HashMap<i64, i64>,
    /// First late event not yet flushed, with the watermark before it.
    late_hold: Option<(i64, i64)>,
    /// Writes handed to the adapter and not yet acknowledged durable:
    /// first offset → watermark before it. They hold the commit point.
    pending: BTreeMap<i64, i64>,
    next_offset: Option<i64>,
    key_buf: Vec<u8>,
    /// The last closed window's sizes, to allocate the next one at.
    sizes: Sizes,
}

/// A 128-bit hash of text parts, each followed by `0xff` (never in UTF-8,
/// so the parts cannot run into each other). `buf` is scratch space.
pub fn hash_parts(buf: &mut Vec<u8>, parts: &[&str]) -> u128 {
    buf.clear();
    for p in parts {
        buf.extend_from_slice(p.as_bytes());
        buf.push(0xff);
    }
    xxhash_rust::xxh3::xxh3_128(buf)
}

impl PartitionState {
    pub fn new(spec: WindowSpec, kind: Kind) -> Self {
        PartitionState {
            spec,
            kind,
            wm: i64::MIN,
            open: BTreeMap::new(),
            written: HashMap::new(),
            late_hold: None,
            pending: BTreeMap::new(),
            next_offset: None,
            key_buf: Vec::with_capacity(128),
            sizes: Sizes::default(),
        }
    }

    /// State for a partition resumed at `resume_offset` with the checkpoint's
    /// watermark and the windows already written (`(start, close_offset)`).
    pub fn restore(
        spec: WindowSpec,
        kind: Kind,
        checkpoint: Checkpoint,
        written: impl IntoIterator<Item = (i64, i64)>,
    ) -> Self {
        let mut s = Self::new(spec, kind);
        s.wm = checkpoint.watermark_ms.unwrap_or(i64::MIN);
        s.written = written
            .into_iter()
            .filter(|&(_, close)| close > checkpoint.offset)
            .collect();
        s
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    pub fn watermark(&self) -> Option<i64> {
        (self.wm != i64::MIN).then_some(self.wm)
    }

    pub fn open_windows(&self) -> usize {
        self.open.len()
    }

    /// The open windows' rows so far, oldest window first: `(start, end, rows)`.
    /// For live views; the rows are not final until the window closes.
    pub fn open_rows(
        &self,
    ) -> impl Iterator<
        Item = (
            i64,
            i64,
            impl Iterator<Item = (DimsRef<'_>, &Measures)> + '_,
        ),
    > + '_ {
        self.open
            .iter()
            .map(|(&start, w)| (start, start + self.spec.size_ms, w.rows.iter()))
    }

    pub fn next_offset(&self) -> Option<i64> {
        self.next_offset
    }

    /// Feed one valid event at `offset`. Call [`Self::drain_closed`] after it.
    pub fn offer(&mut self, offset: i64, e: &Event<'_>, x: &Enriched) -> Offer {
        let wm_before = self.wm;
        self.next_offset = Some(offset + 1);
        self.wm = self.wm.max(e.ts_ms.saturating_sub(self.spec.lateness_ms));
        let start = self.spec.start_of(e.ts_ms);
        if let Some(&close) = (!self.written.is_empty())
            .then(|| self.written.get(&start))
            .flatten()
        {
            if offset < close {
                return Offer::AlreadyWritten;
            }
            return self.late(offset, wm_before, start);
        }
        if start + self.spec.size_ms <= wm_before {
            return self.late(offset, wm_before, start);
        }
        let (spec, wm, last_sizes) = (self.spec, self.wm, self.sizes);
        let w = self.open.entry(start).or_insert_with(|| {
            // Only the window of the highest event time so far is presized:
            // an older one opening now holds stragglers, not a window's
            // worth of traffic. (`wm + lateness` is that event time.)
            let sizes = if start >= spec.start_of(wm.saturating_add(spec.lateness_ms)) {
                last_sizes.capped()
            } else {
                Sizes::default()
            };
            OpenWindow {
                first_offset: offset,
                wm_before,
                rows: RowTable::with_capacity(sizes),
                seen: FastSet::with_capacity_and_hasher(sizes.events, Default::default()),
                duplicates: 0,
            }
        });
        if !w
            .seen
            .insert(hash_parts(&mut self.key_buf, &[&e.tenant, &e.event_id]))
        {
            w.duplicates += 1;
            return Offer::Duplicate;
        }
        encode_key(&mut self.key_buf, e);
        w.rows.get_or_insert(&self.key_buf).add(e, x);
        Offer::Accepted
    }

    fn late(&mut self, offset: i64, wm_before: i64, window_start: i64) -> Offer {
        if self.late_hold.is_none() {
            self.late_hold = Some((offset, wm_before));
        }
        Offer::Late { window_start }
    }

    /// Note that an offset was consumed without an event (a dead-lettered
    /// message): it moves the commit point when nothing is open.
    pub fn skip(&mut self, offset: i64) {
        self.next_offset = Some(offset + 1);
    }

    /// The late events offered so far were handed to a writer; until
    /// [`Self::written`] is called with the returned key they hold the commit point.
    pub fn late_submitted(&mut self) -> Option<i64> {
        let (offset, wm) = self.late_hold.take()?;
        self.pending.insert(offset, wm);
        Some(offset)
    }

    /// A write handed off by [`Self::drain_closed`] (key: the window's
    /// `first_offset`) or [`Self::late_submitted`] is durable.
    pub fn written(&mut self, key: i64) {
        self.pending.remove(&key);
    }

    /// Writes handed off and not yet acknowledged.
    pub fn pending_writes(&self) -> usize {
        self.pending.len()
    }

    /// Windows whose end the watermark has passed, oldest first. Each holds
    /// the commit point until [`Self::written`] is called with its `first_offset`.
    pub fn drain_closed(&mut self) -> Vec<ClosedWindow> {
        let mut out = Vec::new();
        while let Some(entry) = self.open.first_entry() {
            if *entry.key() + self.spec.size_ms > self.wm {
                break;
            }
            let (start, w) = entry.remove_entry();
            self.pending.insert(w.first_offset, w.wm_before);
            self.sizes = Sizes {
                rows: w.rows.len(),
                key_bytes: w.rows.key_bytes(),
                events: w.seen.len(),
            };
            out.push(self.finish(start, w));
        }
        out
    }

    /// The partition has been idle: advance the watermark past every open
    /// window and close them all.
    pub fn flush_idle(&mut self) -> Vec<ClosedWindow> {
        if let Some((&last, _)) = self.open.last_key_value() {
            self.wm = self.wm.max(last + self.spec.size_ms);
        }
        self.drain_closed()
    }

    fn finish(&self, start: i64, w: OpenWindow) -> ClosedWindow {
        let rows = w.rows.finish();
        ClosedWindow {
            start_ms: start,
            end_ms: start + self.spec.size_ms,
            first_offset: w.first_offset,
            close_offset: self.next_offset.unwrap_or(w.first_offset + 1),
            watermark_ms: self.wm,
            duplicates: w.duplicates,
            rows,
        }
    }

    /// Where the partition may be committed now: the smallest offset that
    /// still feeds unwritten state, with the watermark just before it.
    /// `None` before the first message.
    pub fn checkpoint(&self) -> Option<Checkpoint> {
        let next = self.next_offset?;
        let holds = self
            .open
            .values()
            .map(|w| (w.first_offset, w.wm_before))
            .chain(self.late_hold)
            .chain(self.pending.iter().map(|(&o, &wm)| (o, wm)));
        let (offset, wm) = holds.min_by_key(|&(o, _)| o).unwrap_or((next, self.wm));
        Some(Checkpoint {
            offset,
            watermark_ms: (wm != i64::MIN).then_some(wm),
        })
    }

    /// After a commit at `offset`: written windows closed at or before it are
    /// covered by the watermark and need not be remembered.
    pub fn committed(&mut self, offset: i64) {
        self.written.retain(|_, close| *close > offset);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
