//! The rows of one window: keys in one text arena, measures in one vector,
//! a hash table of row indices. One allocation per window, not per row.

use std::hash::BuildHasher;

use hashbrown::HashTable;

use crate::Measures;

/// Bytes of a field's length prefix: 7 bits each, so every byte is ASCII.
const PREFIX: usize = 5;

/// Append one length-prefixed field (unambiguous for any text). The prefix
/// is `len + 1` (0 for none) in five 7-bit ASCII digits, so a key is valid
/// UTF-8 and, once a window's arena is checked as a whole, its fields are
/// sliced out without a check each. 35 bits hold the length of anything a
/// Kafka message (at most 2 GiB) can carry.
pub(crate) fn push_field(buf: &mut Vec<u8>, v: Option<&str>) {
    let n = v.map_or(0, |s| s.len() as u64 + 1);
    let prefix: [u8; PREFIX] = std::array::from_fn(|i| ((n >> (7 * i)) & 0x7f) as u8);
    buf.extend_from_slice(&prefix);
    if let Some(s) = v {
        buf.extend_from_slice(s.as_bytes());
    }
}

/// A key arena as text: built from `&str` and ASCII prefixes, so the check
/// passes (one pass over the arena, instead of one per field).
fn arena_text(keys: &[u8]) -> &str {
    std::str::from_utf8(keys).unwrap_or_default()
}

/// The dimensions of one row, borrowed from the window's key arena.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct DimsRef<'a> {
    pub tenant: &'a str,
    pub team: Option<&'a str>,
    pub environment: Option<&'a str>,
    /// `tags.project`.
    pub project: Option<&'a str>,
    pub model: Option<&'a str>,
    pub region: Option<&'a str>,
    /// Heartbeats only: one row per node. Other kinds leave it `None`, so a
    /// node id on an inference event does not multiply the rows.
    pub node_id: Option<&'a str>,
}

fn next_field<'a>(key: &mut &'a str) -> Option<&'a str> {
    let Some(prefix) = key.as_bytes().first_chunk::<PREFIX>() else {
        *key = "";
        return None;
    };
    let n = prefix
        .iter()
        .rev()
        .fold(0u64, |n, &d| n << 7 | u64::from(d));
    let Some(len) = n.checked_sub(1) else {
        *key = key.get(PREFIX..).unwrap_or_default();
        return None;
    };
    let len = usize::try_from(len).unwrap_or(usize::MAX);
    let end = PREFIX.saturating_add(len).min(key.len());
    // Keys are built by `push_field`, so the field ends on a boundary.
    let s = key.get(PREFIX..end).unwrap_or_default();
    *key = key.get(end..).unwrap_or_default();
    Some(s)
}

impl<'a> DimsRef<'a> {
    pub(crate) fn decode(mut key: &'a str) -> Self {
        let tenant = next_field(&mut key).unwrap_or_default();
        let team = next_field(&mut key);
        let environment = next_field(&mut key);
        let project = next_field(&mut key);
        let model = next_field(&mut key);
        let region = next_field(&mut key);
        let node_id = next_field(&mut key);
        DimsRef {
            tenant,
            team,
            environment,
            project,
            model,
            region,
            node_id,
        }
    }

    pub(crate) fn encode(&self, buf: &mut Vec<u8>) {
        push_field(buf, Some(self.tenant));
        push_field(buf, self.team);
        push_field(buf, self.environment);
        push_field(buf, self.project);
        push_field(buf, self.model);
        push_field(buf, self.region);
        push_field(buf, self.node_id);
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Row {
    start: u32,
    len: u32,
    pub(crate) m: Measures,
}

fn decode_key<'a>(keys: &'a str, r: &Row) -> DimsRef<'a> {
    DimsRef::decode(
        keys.get(r.start as usize..(r.start + r.len) as usize)
            .unwrap_or_default(),
    )
}

#[derive(Default)]
pub(crate) struct RowTable {
    keys: Vec<u8>,
    rows: Vec<Row>,
    index: HashTable<u32>,
    hasher: foldhash::fast::FixedState,
}

/// How big a window's tables grew: the next window of the partition is
/// allocated at this size, so a steady stream never regrows (and rehashes)
/// its tables while they fill.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Sizes {
    pub(crate) rows: usize,
    pub(crate) key_bytes: usize,
    pub(crate) events: usize,
}

/// Most rows a new window is allocated for up front; a bigger window grows
/// as it fills, as any window did before sizes were carried over.
const MAX_PRESIZED_ROWS: usize = 1 << 17;

impl Sizes {
    /// Scaled down (all three alike) to at most [`MAX_PRESIZED_ROWS`] rows,
    /// so one burst does not make every following window allocate for it.
    pub(crate) fn capped(self) -> Sizes {
        if self.rows <= MAX_PRESIZED_ROWS {
            return self;
        }
        let scale = |n: usize| (n as u128 * MAX_PRESIZED_ROWS as u128 / self.rows as u128) as usize;
        Sizes {
            rows: MAX_PRESIZED_ROWS,
            key_bytes: scale(self.key_bytes),
            events: scale(self.events),
        }
    }
}

impl RowTable {
    pub(crate) fn with_capacity(s: Sizes) -> Self {
        RowTable {
            keys: Vec::with_capacity(s.key_bytes),
            rows: Vec::with_capacity(s.rows),
            index: HashTable::with_capacity(s.rows),
            hasher: Default::default(),
        }
    }

    pub(crate) fn key_bytes(&self) -> usize {
        self.keys.len()
    }

    pub(crate) fn len(&self) -> usize {
        self.rows.len()
    }

    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        self.rows.capacity()
    }

    pub(crate) fn get_or_insert(&mut self, key: &[u8]) -> &mut Measures {
        let RowTable {
            keys,
            rows,
            index,
            hasher,
        } = self;
        let hash = hasher.hash_one(key);
        let found = index.find(hash, |&i| {
            let r = &rows[i as usize];
            keys.get(r.start as usize..(r.start + r.len) as usize) == Some(key)
        });
        let i = match found {
            Some(&i) => i as usize,
            None => {
                let i = rows.len();
                rows.push(Row {
                    start: keys.len() as u32,
                    len: key.len() as u32,
                    m: Measures::default(),
                });
                keys.extend_from_slice(key);
                index.insert_unique(hash, i as u32, |&j| {
                    let r = &rows[j as usize];
                    hasher.hash_one(
                        keys.get(r.start as usize..(r.start + r.len) as usize)
                            .unwrap_or_default(),
                    )
                });
                i
            }
        };
        &mut rows[i].m
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (DimsRef<'_>, &Measures)> + '_ {
        let keys = arena_text(&self.keys);
        self.rows.iter().map(move |r| (decode_key(keys, r), &r.m))
    }

    /// The rows in insertion order. A replay feeds a window the same events
    /// in the same order, so this order is deterministic without a sort.
    pub(crate) fn finish(self) -> RowSet {
        RowSet {
            keys: String::from_utf8(self.keys).unwrap_or_default(),
            rows: self.rows,
        }
    }
}

/// Finished rows of a closed window.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RowSet {
    keys: String,
    rows: Vec<Row>,
}

impl RowSet {
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn iter(&self) -> impl ExactSizeIterator<Item = (DimsRef<'_>, &Measures)> + '_ {
        self.rows.iter().map(|r| (decode_key(&self.keys, r), &r.m))
    }

    /// The rows' measures, without their dimensions.
    pub fn measures(&self) -> impl ExactSizeIterator<Item = &Measures> + '_ {
        self.rows.iter().map(|r| &r.m)
    }

    /// Build from explicit rows (tests, tools), in the order given.
    pub fn from_rows<'a>(rows: impl IntoIterator<Item = (DimsRef<'a>, Measures)>) -> Self {
        let mut t = RowTable::default();
        let mut buf = Vec::new();
        for (d, m) in rows {
            buf.clear();
            d.encode(&mut buf);
            *t.get_or_insert(&buf) = m;
        }
        t.finish()
    }
}
