//! Live state the HTTP API reads: each team's spend in the windows still
//! open and in the current month, and the consumer's health (assignment,
//! broker, lag).
//!
//! The consumer thread owns the truth. It keeps a ledger of the windows it
//! has closed (month totals by team, seeded at start from the rollup files)
//! and, at most every `refresh`, publishes one immutable [`LiveSnapshot`]
//! holding both the ledger and the open windows. A window therefore moves
//! from "open" to "closed" inside one snapshot swap: readers never see it
//! twice or not at all. Readers take an `Arc` and never block the consumer.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use chrono::{Datelike, TimeZone, Utc};
pub use tollgate_window::Totals;
use tollgate_window::{DimsRef, Measures};

/// Start (ms) of the UTC month holding `ms`.
pub fn month_start_ms(ms: i64) -> i64 {
    let Some(t) = Utc.timestamp_millis_opt(ms).single() else {
        return ms;
    };
    Utc.with_ymd_and_hms(t.year(), t.month(), 1, 0, 0, 0)
        .single()
        .map_or(ms, |m| m.timestamp_millis())
}

/// `(tenant, team)`; `team` is `None` for untagged usage.
pub type TeamKey = (String, Option<String>);

type FastMap<K, V> = hashbrown::HashMap<K, V, foldhash::fast::RandomState>;

/// Month totals per team: tenant → team → month start (ms) → totals.
/// Untagged usage (no team) is kept under the empty team name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Ledger {
    tenants: FastMap<String, FastMap<String, BTreeMap<i64, Totals>>>,
}

impl Ledger {
    /// Add the rows of a window starting at `window_start_ms`.
    pub fn add_window<'a>(
        &mut self,
        window_start_ms: i64,
        rows: impl Iterator<Item = (DimsRef<'a>, &'a Measures)>,
    ) {
        let month = month_start_ms(window_start_ms);
        for (d, m) in rows {
            self.slot(d.tenant, d.team, month).add(&Totals::of(m));
        }
    }

    /// Add a month total (seeding from the rollup files).
    pub fn add_month(&mut self, tenant: &str, team: Option<&str>, month_ms: i64, t: &Totals) {
        self.slot(tenant, team, month_ms).add(t);
    }

    fn slot(&mut self, tenant: &str, team: Option<&str>, month: i64) -> &mut Totals {
        // By reference: keys are allocated only for a new tenant or team.
        self.tenants
            .entry_ref(tenant)
            .or_default()
            .entry_ref(team.unwrap_or(""))
            .or_default()
            .entry(month)
            .or_default()
    }

    /// Teams with any month in the ledger.
    pub fn teams(&self) -> usize {
        self.tenants.values().map(|t| t.len()).sum()
    }

    /// Drop months before `keep_from_ms`.
    pub fn prune(&mut self, keep_from_ms: i64) {
        for teams in self.tenants.values_mut() {
            for months in teams.values_mut() {
                months.retain(|&m, _| m >= keep_from_ms);
            }
            teams.retain(|_, months| !months.is_empty());
        }
        self.tenants.retain(|_, teams| !teams.is_empty());
    }

    pub fn month(&self, tenant: &str, team: Option<&str>, month_ms: i64) -> Totals {
        self.tenants
            .get(tenant)
            .and_then(|t| t.get(team.unwrap_or("")))
            .and_then(|m| m.get(&month_ms))
            .copied()
            .unwrap_or_default()
    }
}

/// One open window of a team, summed over source partitions and kinds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct OpenWindow {
    pub start_ms: i64,
    pub end_ms: i64,
    pub totals: Totals,
}

/// One moment of the live state.
#[derive(Debug, Clone, Default)]
pub struct LiveSnapshot {
    /// Wall clock when it was taken (ms); 0 before the first snapshot.
    pub as_of_ms: i64,
    /// Windows closed by this process plus the rollup files at its start.
    pub closed: Ledger,
    /// Open windows per team, by window start.
    pub open: HashMap<TeamKey, BTreeMap<i64, OpenWindow>>,
}

impl LiveSnapshot {
    /// The team's open windows, oldest first.
    pub fn open_windows(&self, tenant: &str, team: Option<&str>) -> Vec<OpenWindow> {
        self.open
            .get(&(tenant.to_string(), team.map(str::to_string)))
            .map(|w| w.values().copied().collect())
            .unwrap_or_default()
    }

    /// The team's month to date: closed windows plus open ones of that month.
    pub fn month(&self, tenant: &str, team: Option<&str>, month_ms: i64) -> Totals {
        let mut t = self.closed.month(tenant, team, month_ms);
        for w in self.open_windows(tenant, team) {
            if month_start_ms(w.start_ms) == month_ms {
                t.add(&w.totals);
            }
        }
        t
    }

    /// Every team with open windows, for summaries: `(tenant, team, window)`.
    pub fn all_open(&self) -> impl Iterator<Item = (&str, Option<&str>, &OpenWindow)> {
        self.open.iter().flat_map(|((tenant, team), ws)| {
            ws.values()
                .map(move |w| (tenant.as_str(), team.as_deref(), w))
        })
    }
}

/// Consumer health, written by the worker and the librdkafka statistics.
#[derive(Debug, Default)]
pub struct Health {
    /// Partitions currently assigned to this member.
    pub assigned: AtomicUsize,
    /// The worker is inside its poll loop (not retrying a failure).
    pub running: AtomicBool,
    /// At least one broker connection is up (librdkafka statistics).
    pub broker_up: AtomicBool,
    /// Wall clock (ms) of the last statistics report; 0 = none yet.
    pub stats_at_ms: AtomicI64,
    /// Messages not yet read (high watermark − position) per assigned
    /// topic-partition, as of the last statistics report.
    pub lag: Mutex<BTreeMap<(String, i32), i64>>,
}

impl Health {
    pub fn total_lag(&self) -> i64 {
        self.lag
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter(|&&l| l > 0)
            .sum()
    }

    /// The partition's unread messages at the last report, if reported.
    pub fn backlog(&self, topic: &str, partition: i32) -> Option<i64> {
        self.lag
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(topic.to_string(), partition))
            .copied()
    }

    pub fn lag_by_partition(&self) -> Vec<((String, i32), i64)> {
        self.lag
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }
}

/// Shared between the consumer thread and the HTTP API.
#[derive(Debug)]
pub struct Live {
    snapshot: RwLock<Arc<LiveSnapshot>>,
    /// Seed of the ledger for the next run of the pipeline (the month totals
    /// of the rollup files, read by the caller before each run).
    seed: Mutex<Ledger>,
    /// How often the consumer publishes; zero: never (no reader).
    pub refresh: Duration,
    pub health: Health,
}

impl Default for Live {
    fn default() -> Self {
        Live::new(Duration::ZERO)
    }
}

impl Live {
    pub fn new(refresh: Duration) -> Self {
        Live {
            snapshot: RwLock::new(Arc::new(LiveSnapshot::default())),
            seed: Mutex::new(Ledger::default()),
            refresh,
            health: Health::default(),
        }
    }

    pub fn snapshot(&self) -> Arc<LiveSnapshot> {
        self.snapshot
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn set_seed(&self, ledger: Ledger) {
        *self.seed.lock().unwrap_or_else(|p| p.into_inner()) = ledger;
    }

    pub(crate) fn take_seed(&self) -> Ledger {
        self.seed.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Replace the snapshot (the consumer does this; tests and tools may too).
    pub fn publish(&self, s: LiveSnapshot) {
        *self.snapshot.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(s);
    }
}

/// The consumer thread's side: the ledger and when it last published.
pub(crate) struct LiveWriter {
    pub ledger: Ledger,
    last: Option<Instant>,
}

impl LiveWriter {
    pub fn new(live: &Live) -> Self {
        LiveWriter {
            ledger: live.take_seed(),
            last: None,
        }
    }

    /// Is anyone reading the live state (`refresh` non-zero)?
    pub fn enabled(&self, live: &Live) -> bool {
        !live.refresh.is_zero()
    }

    pub fn due(&self, live: &Live, now: Instant) -> bool {
        !live.refresh.is_zero()
            && self
                .last
                .is_none_or(|t| now.duration_since(t) >= live.refresh)
    }

    /// Publish a snapshot of the ledger and `open` (every partition's open
    /// windows: `(start, end, rows)`).
    pub fn publish<'a, W, R>(&mut self, live: &Live, now: Instant, open: W)
    where
        W: Iterator<Item = (i64, i64, R)>,
        R: Iterator<Item = (DimsRef<'a>, &'a Measures)>,
    {
        self.last = Some(now);
        let as_of_ms = Utc::now().timestamp_millis();
        // Keep this month and the previous one.
        self.ledger
            .prune(month_start_ms(month_start_ms(as_of_ms) - 1));
        let mut teams: HashMap<TeamKey, BTreeMap<i64, OpenWindow>> = HashMap::new();
        for (start, end, rows) in open {
            for (d, m) in rows {
                let key = (d.tenant.to_string(), d.team.map(str::to_string));
                let w = teams
                    .entry(key)
                    .or_default()
                    .entry(start)
                    .or_insert(OpenWindow {
                        start_ms: start,
                        end_ms: end,
                        totals: Totals::default(),
                    });
                w.totals.add(&Totals::of(m));
            }
        }
        live.publish(LiveSnapshot {
            as_of_ms,
            closed: self.ledger.clone(),
            open: teams,
        });
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn dims<'a>(tenant: &'a str, team: Option<&'a str>) -> DimsRef<'a> {
        DimsRef {
            tenant,
            team,
            environment: None,
            model: Some("m"),
            region: None,
            node_id: None,
        }
    }

    fn measures(cost: f64, events: u64) -> Measures {
        Measures {
            events,
            cost_usd: cost,
            ..Measures::default()
        }
    }

    #[test]
    fn month_start_is_utc_first_of_month() {
        // 2026-11-22T10:00:00Z → 2026-11-01T00:00:00Z
        assert_eq!(month_start_ms(1_795_341_600_000), 1_793_491_200_000);
        assert_eq!(month_start_ms(1_793_491_200_000), 1_793_491_200_000);
    }

    #[test]
    fn a_window_moves_from_open_to_closed_in_one_snapshot() {
        let live = Live::new(Duration::from_millis(1));
        let mut seed = Ledger::default();
        let now_ms = Utc::now().timestamp_millis();
        let month = month_start_ms(now_ms);
        seed.add_month(
            "acme",
            Some("ai"),
            month,
            &Totals {
                cost_usd: 5.0,
                events: 5,
                ..Totals::default()
            },
        );
        live.set_seed(seed);
        let mut w = LiveWriter::new(&live);
        let m = measures(2.0, 3);
        let open_rows = vec![(dims("acme", Some("ai")), &m)];
        w.publish(
            &live,
            Instant::now(),
            std::iter::once((now_ms, now_ms + 60_000, open_rows.clone().into_iter())),
        );
        let s = live.snapshot();
        assert_eq!(s.open_windows("acme", Some("ai")).len(), 1);
        assert_eq!(s.month("acme", Some("ai"), month).cost_usd, 7.0);
        assert_eq!(s.month("acme", Some("ai"), month).events, 8);
        // The window closes: it is in the ledger, no longer open.
        w.ledger.add_window(now_ms, open_rows.into_iter());
        w.publish(
            &live,
            Instant::now(),
            std::iter::empty::<(i64, i64, std::vec::IntoIter<(DimsRef<'_>, &Measures)>)>(),
        );
        let s = live.snapshot();
        assert!(s.open_windows("acme", Some("ai")).is_empty());
        assert_eq!(s.month("acme", Some("ai"), month).cost_usd, 7.0);
        assert_eq!(s.month("acme", None, month).cost_usd, 0.0);
        assert_eq!(s.month("other", Some("ai"), month).cost_usd, 0.0);
    }

    #[test]
    fn old_months_are_pruned() {
        let mut l = Ledger::default();
        l.add_month("t", None, 1000, &Totals::default());
        l.add_month(
            "t",
            None,
            5000,
            &Totals {
                events: 1,
                ..Totals::default()
            },
        );
        l.prune(2000);
        assert_eq!(l.month("t", None, 1000), Totals::default());
        assert_eq!(l.month("t", None, 5000).events, 1);
        l.prune(6000);
        assert!(l.tenants.is_empty());
    }
}
