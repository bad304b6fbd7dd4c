//! Silent nodes of one heartbeat partition: which nodes have gone quiet for
//! longer than `stale_after` by the partition's own clock, and which came
//! back. A window only knows the nodes that reported in it, so a node that
//! stops entirely is judged here, across windows: one [`Change::Stale`]
//! when its silence passes `stale_after`, one [`Change::Back`] when it
//! reports again. Pure: the caller feeds the closed windows' rows and the
//! clock, and restores the state from the rollups after a restart.
//!
//! A change is named by what the rollups hold — the node and the time of
//! its last heartbeat before the silence — never by the clock that noticed
//! it, so the state rebuilt from the files after a crash notices the same
//! change under the same name, and a decision keyed by it is made once.

use std::collections::BTreeMap;

/// A node as the rollups last saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct Seen {
    pub region: Option<String>,
    /// Its latest heartbeat (event time, epoch ms).
    pub last_ms: i64,
    /// Reported stale, not back since.
    pub stale: bool,
}

/// What changed for one node.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// Silent since `last_ms` for longer than `stale_after` at `clock_ms`.
    Stale {
        tenant: String,
        node_id: String,
        region: Option<String>,
        last_ms: i64,
        clock_ms: i64,
    },
    /// Reported again at `back_ms` after a silence that started at `since_ms`.
    Back {
        tenant: String,
        node_id: String,
        region: Option<String>,
        since_ms: i64,
        back_ms: i64,
    },
}

/// The nodes of one partition.
#[derive(Debug, Clone)]
pub struct NodeSilence {
    stale_after_ms: i64,
    nodes: BTreeMap<(String, String), Seen>,
    /// The clock's latest value: it never goes back.
    clock_ms: i64,
    /// The latest heartbeat of any node.
    latest_ms: Option<i64>,
}

impl NodeSilence {
    pub fn new(stale_after_ms: i64) -> Self {
        NodeSilence {
            stale_after_ms: stale_after_ms.max(0),
            nodes: BTreeMap::new(),
            clock_ms: i64::MIN,
            latest_ms: None,
        }
    }

    /// The latest heartbeat of any node seen or restored: the partition's
    /// own clock, which a stream that stops does not move.
    pub fn latest_ms(&self) -> Option<i64> {
        self.latest_ms
    }

    pub fn stale_after_ms(&self) -> i64 {
        self.stale_after_ms
    }

    /// Rebuild from the rollups, after every node's [`NodeSilence::restore`]:
    /// `clock_ms` is the partition's clock when its last window was
    /// decided. Whoever was silent past `stale_after` by then was reported
    /// then (a window's decisions are durable before its file), so counts
    /// as stale: its comeback is reported. Silences noticed later (by an
    /// idle clock) are noticed again by the next [`NodeSilence::advance`],
    /// under the same names, so a decision keyed by them is not made twice.
    pub fn restored_at(&mut self, clock_ms: i64) {
        // An idle close moved the files' watermark past the heartbeats:
        // the clock was never past the latest of them.
        let clock_ms = clock_ms.min(self.latest_ms.unwrap_or(clock_ms));
        self.clock_ms = self.clock_ms.max(clock_ms);
        for e in self.nodes.values_mut() {
            e.stale = clock_ms.saturating_sub(e.last_ms) > self.stale_after_ms;
        }
    }

    /// Rebuild from the rollups: a node's latest heartbeat, as read back.
    pub fn restore(&mut self, tenant: &str, node_id: &str, region: Option<&str>, last_ms: i64) {
        self.latest_ms = self.latest_ms.max(Some(last_ms));
        let e = self
            .nodes
            .entry((tenant.to_string(), node_id.to_string()))
            .or_insert(Seen {
                region: region.map(str::to_string),
                last_ms,
                stale: false,
            });
        if last_ms >= e.last_ms {
            e.last_ms = last_ms;
            e.region = region.map(str::to_string).or(e.region.take());
        }
    }

    /// A node reported in a closed window, its latest heartbeat there at
    /// `last_ms`. A node reported stale comes back.
    pub fn seen(
        &mut self,
        tenant: &str,
        node_id: &str,
        region: Option<&str>,
        last_ms: i64,
        out: &mut Vec<Change>,
    ) {
        self.latest_ms = self.latest_ms.max(Some(last_ms));
        let key = (tenant.to_string(), node_id.to_string());
        match self.nodes.get_mut(&key) {
            Some(e) => {
                if e.stale && last_ms > e.last_ms {
                    out.push(Change::Back {
                        tenant: key.0.clone(),
                        node_id: key.1.clone(),
                        region: region.map(str::to_string).or(e.region.clone()),
                        since_ms: e.last_ms,
                        back_ms: last_ms,
                    });
                    e.stale = false;
                }
                if last_ms >= e.last_ms {
                    e.last_ms = last_ms;
                    if let Some(r) = region {
                        e.region = Some(r.to_string());
                    }
                }
            }
            None => {
                self.nodes.insert(
                    key,
                    Seen {
                        region: region.map(str::to_string),
                        last_ms,
                        stale: false,
                    },
                );
            }
        }
    }

    /// The partition's clock is `clock_ms` (its watermark at a window's
    /// close, or its idle clock): every node silent longer than
    /// `stale_after` and not yet reported is reported stale, once.
    pub fn advance(&mut self, clock_ms: i64, out: &mut Vec<Change>) {
        self.clock_ms = self.clock_ms.max(clock_ms);
        let clock = self.clock_ms;
        for ((tenant, node_id), e) in &mut self.nodes {
            if !e.stale && clock.saturating_sub(e.last_ms) > self.stale_after_ms {
                e.stale = true;
                out.push(Change::Stale {
                    tenant: tenant.clone(),
                    node_id: node_id.clone(),
                    region: e.region.clone(),
                    last_ms: e.last_ms,
                    clock_ms: clock,
                });
            }
        }
    }

    /// Forget nodes silent for longer than `horizon_ms` (already reported
    /// stale): the state stays the size of the live fleet. One that reports
    /// again later is a new node, without a `Back`.
    pub fn forget_older_than(&mut self, horizon_ms: i64) {
        let clock = self.clock_ms;
        self.nodes
            .retain(|_, e| !(e.stale && clock.saturating_sub(e.last_ms) > horizon_ms));
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    pub fn get(&self, tenant: &str, node_id: &str) -> Option<&Seen> {
        self.nodes.get(&(tenant.to_string(), node_id.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1000;

    fn names(changes: &[Change]) -> Vec<String> {
        changes
            .iter()
            .map(|c| match c {
                Change::Stale {
                    node_id, last_ms, ..
                } => format!("stale {node_id} @{}", last_ms / S),
                Change::Back {
                    node_id,
                    since_ms,
                    back_ms,
                    ..
                } => format!("back {node_id} {}..{}", since_ms / S, back_ms / S),
            })
            .collect()
    }

    #[test]
    fn a_node_that_stops_is_stale_once_and_back_once() {
        let mut s = NodeSilence::new(30 * S);
        let mut out = Vec::new();
        for t in (0..=60).step_by(10) {
            s.seen("acme", "a", Some("r"), t * S, &mut out);
            if t <= 20 {
                s.seen("acme", "b", Some("r"), t * S, &mut out);
            }
            s.advance(t * S, &mut out);
        }
        assert_eq!(
            names(&out),
            ["stale b @20"],
            "b: silent from 20 s, over 30 s at 60 s"
        );
        // More windows without b: nothing more.
        for t in (70..=200).step_by(10) {
            s.seen("acme", "a", Some("r"), t * S, &mut out);
            s.advance(t * S, &mut out);
        }
        assert_eq!(out.len(), 1);
        s.seen("acme", "b", Some("r"), 210 * S, &mut out);
        s.advance(210 * S, &mut out);
        assert_eq!(names(&out), ["stale b @20", "back b 20..210"]);
        // Exactly at stale_after is not stale.
        let mut t = NodeSilence::new(30 * S);
        let mut none = Vec::new();
        t.seen("acme", "c", None, 0, &mut none);
        t.advance(30 * S, &mut none);
        assert!(none.is_empty());
    }

    #[test]
    fn a_restored_partition_names_the_same_changes() {
        // Before a crash: b went stale.
        let mut before = NodeSilence::new(30 * S);
        let mut first = Vec::new();
        before.seen("acme", "b", None, 20 * S, &mut first);
        before.seen("acme", "a", None, 60 * S, &mut first);
        before.advance(60 * S, &mut first);
        // After: the same nodes read back from the files.
        let mut after = NodeSilence::new(30 * S);
        after.restore("acme", "b", None, 20 * S);
        after.restore("acme", "a", None, 60 * S);
        after.restore("acme", "a", None, 50 * S);
        // Restored at a clock before b's silence passed 30 s: b is noticed again.
        after.restored_at(45 * S);
        let mut again = Vec::new();
        after.advance(70 * S, &mut again);
        let strip = |c: &[Change]| {
            c.iter()
                .map(|c| match c {
                    Change::Stale {
                        tenant,
                        node_id,
                        last_ms,
                        ..
                    } => (tenant.clone(), node_id.clone(), *last_ms),
                    Change::Back { .. } => unreachable!("no node came back"),
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(
            strip(&first),
            strip(&again),
            "same node, same last heartbeat"
        );
        assert_eq!(after.get("acme", "a").map(|e| e.last_ms), Some(60 * S));

        // A file's clock past every heartbeat (an idle close): the clock
        // was the latest heartbeat, no one is stale.
        let mut idle = NodeSilence::new(30 * S);
        idle.restore("acme", "a", None, 60 * S);
        idle.restored_at(200 * S);
        assert_eq!(idle.get("acme", "a").map(|e| e.stale), Some(false));

        // Restored at a clock past b's silence: it was reported then; not
        // again, and its comeback is.
        let mut later = NodeSilence::new(30 * S);
        later.restore("acme", "b", None, 20 * S);
        later.restore("acme", "a", None, 60 * S);
        later.restored_at(60 * S);
        let mut out = Vec::new();
        later.advance(70 * S, &mut out);
        assert!(out.is_empty(), "{out:?}");
        later.seen("acme", "b", None, 80 * S, &mut out);
        assert_eq!(names(&out), ["back b 20..80"]);
    }

    #[test]
    fn the_clock_never_goes_back_and_tenants_are_apart() {
        let mut s = NodeSilence::new(10 * S);
        let mut out = Vec::new();
        s.seen("acme", "n", None, 0, &mut out);
        s.seen("globex", "n", None, 15 * S, &mut out);
        s.advance(20 * S, &mut out);
        s.advance(5 * S, &mut out);
        assert_eq!(names(&out), ["stale n @0"]);
        assert!(matches!(&out[0], Change::Stale { tenant, .. } if tenant == "acme"));
        s.advance(26 * S, &mut out);
        assert_eq!(out.len(), 2, "globex's n: silent 11 s at 26 s");
        s.forget_older_than(20 * S);
        assert_eq!(s.len(), 1, "acme's n, silent 26 s, is forgotten");
    }
}
