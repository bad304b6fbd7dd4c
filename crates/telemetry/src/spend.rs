//! One gate answer across workers and instances (`[spend]`).
//!
//! Each worker publishes, for every partition it owns, the spend of each
//! team in that partition to a compacted topic (`topics.spend`): a
//! [`TeamRecord`] (the month to date of the partition's closed windows and
//! its open windows) keyed `team/<tenant>/<team>/<topic>/<partition>`,
//! published when it changes, and a [`PartitionRecord`] (watermark, next
//! offset, who publishes it) keyed `partition/<topic>/<partition>`, every
//! interval. A key names a partition, not an owner, so the partition's
//! next owner (after a rebalance, a kill, a scale-out) overwrites its
//! predecessor's records and nothing is counted twice; compaction keeps
//! the latest record per key.
//!
//! Every instance reads the whole topic into a [`SpendView`]; the gate
//! answers a team's spend from the sum over its partitions, and says how
//! fresh the sum is: the oldest watermark among the partitions it sums,
//! and when each was last published ([`TeamSpend`]).
//!
//! This module holds the record format and the view; the Kafka ends are
//! the pipeline's publisher and the process's reader.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};
use tollgate_rollup::month_start_ms;
use tollgate_window::Totals;

use crate::live::OpenWindow;

/// One open window of a team in one partition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireWindow {
    pub start_ms: i64,
    pub end_ms: i64,
    pub totals: Totals,
}

/// A team's spend in one partition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeamRecord {
    pub tenant: String,
    /// `None`: usage without a team tag.
    pub team: Option<String>,
    pub topic: String,
    pub partition: i32,
    /// First instant of the UTC month of `month_to_date` (ms).
    pub month_start_ms: i64,
    /// The partition's windows of that month closed so far (written or
    /// being written; a restore recounts them from the rollup files).
    pub month_to_date: Totals,
    /// The partition's open windows with usage of the team.
    pub open: Vec<WireWindow>,
}

/// Where one partition is, and who owns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartitionRecord {
    pub topic: String,
    pub partition: i32,
    pub watermark_ms: Option<i64>,
    /// The next offset the owner reads.
    pub offset: Option<i64>,
    /// Wall clock of the publish (ms).
    pub published_ms: i64,
    /// The owner: instance id and worker.
    pub owner: String,
}

/// A record of the spend topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SpendRecord {
    Team(TeamRecord),
    Partition(PartitionRecord),
}

/// The record format's version, in the `v` header of every record.
pub const SPEND_RECORD_VERSION: &str = "1";

impl SpendRecord {
    /// The record's key: what compaction keeps one of.
    pub fn key(&self) -> String {
        match self {
            SpendRecord::Team(t) => team_key(&t.tenant, t.team.as_deref(), &t.topic, t.partition),
            SpendRecord::Partition(p) => partition_key(&p.topic, p.partition),
        }
    }
}

/// `team/<tenant>/<team>/<topic>/<partition>` (an untagged team is empty).
/// Tenant and team names never hold `/` (`tollgate_event::check_name`).
pub fn team_key(tenant: &str, team: Option<&str>, topic: &str, partition: i32) -> String {
    format!("team/{tenant}/{}/{topic}/{partition}", team.unwrap_or(""))
}

pub fn partition_key(topic: &str, partition: i32) -> String {
    format!("partition/{topic}/{partition}")
}

/// What the gate reads of a team: summed over the partitions that have
/// usage of it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TeamSpend {
    /// Month to date: closed windows of the month plus open ones.
    pub month: Totals,
    /// The newest open window (summed over partitions).
    pub window: Option<OpenWindow>,
    /// Partitions summed.
    pub partitions: usize,
    /// The oldest watermark among them: every event of the team up to it
    /// is in the sum (`None`: a partition without a watermark yet).
    pub watermark_ms: Option<i64>,
    /// The oldest of their owners' last publishes (ms).
    pub published_ms: Option<i64>,
}

/// The whole spend topic as last read: the latest record per key.
#[derive(Debug, Clone, Default)]
pub struct SpendView {
    /// Wall clock when the view was built (ms).
    pub as_of_ms: i64,
    records: BTreeMap<String, Arc<SpendRecord>>,
}

impl SpendView {
    pub fn new(as_of_ms: i64, records: BTreeMap<String, Arc<SpendRecord>>) -> Self {
        SpendView { as_of_ms, records }
    }

    /// Records held.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The team's spend in the month starting at `month_ms`.
    pub fn team(&self, tenant: &str, team: Option<&str>, month_ms: i64) -> TeamSpend {
        let prefix = format!("team/{tenant}/{}/", team.unwrap_or(""));
        let mut out = TeamSpend::default();
        let mut open: BTreeMap<i64, OpenWindow> = BTreeMap::new();
        let mut watermark: Option<Option<i64>> = None;
        for (_, r) in self.records.range(prefix.clone()..) {
            let SpendRecord::Team(t) = &**r else { break };
            // Keys sort by tenant and team first: the team's records are
            // one run (and an exact match, not a longer name).
            if t.tenant != tenant || t.team.as_deref() != team {
                break;
            }
            out.partitions += 1;
            if t.month_start_ms == month_ms {
                out.month.add(&t.month_to_date);
            }
            for w in &t.open {
                let totals = w.totals;
                if month_start_ms(w.start_ms) == month_ms {
                    out.month.add(&totals);
                }
                open.entry(w.start_ms)
                    .or_insert(OpenWindow {
                        start_ms: w.start_ms,
                        end_ms: w.end_ms,
                        totals: Totals::default(),
                    })
                    .totals
                    .add(&totals);
            }
            let p = self.records.get(&partition_key(&t.topic, t.partition));
            let (wm, published) = match p.map(|p| &**p) {
                Some(SpendRecord::Partition(p)) => (p.watermark_ms, Some(p.published_ms)),
                _ => (None, None),
            };
            watermark = Some(match watermark {
                None => wm,
                Some(seen) => seen.zip(wm).map(|(a, b)| a.min(b)),
            });
            out.published_ms = match (out.published_ms, published) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        out.watermark_ms = watermark.flatten();
        out.window = open.into_values().next_back();
        out
    }
}

/// The process's spend view, shared by the reader (one writer) and the
/// gate (many readers).
#[derive(Debug, Default)]
pub struct SharedSpend {
    enabled: AtomicBool,
    loaded: AtomicBool,
    view: RwLock<Arc<SpendView>>,
}

impl SharedSpend {
    /// A reader runs: the gate answers from the view (and denies until it
    /// is loaded).
    pub fn enable(&self) {
        self.enabled.store(true, Ordering::Release);
    }

    /// The reader has read the topic up to where it ended when it started.
    pub fn set_loaded(&self) {
        self.loaded.store(true, Ordering::Release);
    }

    pub fn loaded(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }

    pub fn publish(&self, view: SpendView) {
        *self.view.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(view);
    }

    /// The view, if a reader runs.
    pub fn snapshot(&self) -> Option<Arc<SpendView>> {
        if !self.enabled.load(Ordering::Acquire) {
            return None;
        }
        Some(self.view.read().unwrap_or_else(|p| p.into_inner()).clone())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn totals(cost: f64, events: u64) -> Totals {
        Totals {
            events,
            cost_usd: cost,
            ..Totals::default()
        }
    }

    fn team(
        tenant: &str,
        team: Option<&str>,
        partition: i32,
        month: f64,
        open: &[(i64, f64)],
    ) -> SpendRecord {
        SpendRecord::Team(TeamRecord {
            tenant: tenant.into(),
            team: team.map(str::to_string),
            topic: "t.inference".into(),
            partition,
            month_start_ms: 0,
            month_to_date: totals(month, 1),
            open: open
                .iter()
                .map(|&(start_ms, cost)| WireWindow {
                    start_ms,
                    end_ms: start_ms + 60_000,
                    totals: totals(cost, 1),
                })
                .collect(),
        })
    }

    fn partition(p: i32, wm: Option<i64>, published_ms: i64) -> SpendRecord {
        SpendRecord::Partition(PartitionRecord {
            topic: "t.inference".into(),
            partition: p,
            watermark_ms: wm,
            offset: Some(10),
            published_ms,
            owner: "a-w0".into(),
        })
    }

    fn view(records: Vec<SpendRecord>) -> SpendView {
        SpendView::new(
            1,
            records
                .into_iter()
                .map(|r| (r.key(), Arc::new(r)))
                .collect(),
        )
    }

    #[test]
    fn a_team_is_summed_over_its_partitions_with_the_oldest_watermark() {
        let v = view(vec![
            team("acme", Some("ai"), 0, 10.0, &[(60_000, 1.0)]),
            team("acme", Some("ai"), 2, 5.0, &[(60_000, 2.0), (120_000, 4.0)]),
            // Names that share a prefix, another tenant, untagged usage.
            team("acme", Some("ai-lab"), 0, 100.0, &[]),
            team("acme", None, 1, 1000.0, &[]),
            team("globex", Some("ai"), 0, 7.0, &[]),
            partition(0, Some(500), 40),
            partition(2, Some(300), 50),
        ]);
        let s = v.team("acme", Some("ai"), 0);
        assert_eq!(s.partitions, 2);
        assert!((s.month.cost_usd - 22.0).abs() < 1e-9, "{s:?}");
        assert_eq!(s.month.events, 5);
        let w = s.window.unwrap();
        assert_eq!((w.start_ms, w.totals.cost_usd), (120_000, 4.0));
        assert_eq!((s.watermark_ms, s.published_ms), (Some(300), Some(40)));
        assert!((v.team("acme", None, 0).month.cost_usd - 1000.0).abs() < 1e-9);
        assert!((v.team("globex", Some("ai"), 0).month.cost_usd - 7.0).abs() < 1e-9);
        assert_eq!(v.team("initech", Some("ai"), 0), TeamSpend::default());
        // Another month: only its open windows would count.
        assert_eq!(v.team("acme", Some("ai"), 1).month.events, 0);
    }

    #[test]
    fn a_partition_without_a_watermark_makes_the_team_unknown_fresh() {
        let v = view(vec![
            team("acme", Some("ai"), 0, 1.0, &[]),
            team("acme", Some("ai"), 1, 1.0, &[]),
            partition(0, Some(500), 40),
            partition(1, None, 41),
        ]);
        assert_eq!(v.team("acme", Some("ai"), 0).watermark_ms, None);
    }

    #[test]
    fn records_round_trip_and_keys_name_the_partition_not_the_owner() {
        for r in [
            team("acme", Some("ai"), 3, 1.5, &[(0, 0.5)]),
            partition(3, Some(9), 1),
        ] {
            let text = serde_json::to_string(&r).unwrap();
            assert_eq!(serde_json::from_str::<SpendRecord>(&text).unwrap(), r);
        }
        assert_eq!(
            team("acme", None, 3, 0.0, &[]).key(),
            "team/acme//t.inference/3"
        );
        assert_eq!(partition(3, None, 0).key(), "partition/t.inference/3");
        assert!(serde_json::from_str::<SpendRecord>(r#"{"type":"team","tenant":"a"}"#).is_err());
    }
}
