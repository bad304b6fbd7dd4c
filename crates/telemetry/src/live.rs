//! Live state the HTTP API reads: each team's spend in the windows still
//! open and in the current month, and the consumer's health (assignment,
//! broker, lag).
//!
//! The consumer thread owns the truth. It keeps a ledger of the windows it
//! has closed (month totals by team, seeded at start from the rollup files)
//! and, at most every `refresh`, publishes one immutable [`LiveSnapshot`]
//! holding both the ledger and the open windows. When windows close, before
//! their rollup files are written, it publishes the previous snapshot with
//! just those windows moved from "open" to "closed" (cheap: no copy of the
//! ledger or of the other open windows). A window therefore moves from
//! "open" to "closed" inside one snapshot swap, and before any reader can
//! see its file: readers never count it twice or not at all. Readers take
//! an `Arc` and never block the consumer.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use chrono::Utc;
use tollgate_rollup::{month_name, month_start_ms, MonthToDate, RollupError, Tree};
pub use tollgate_window::Totals;
use tollgate_window::{ByTeam, DimsRef, Measures};

/// Month totals per team: tenant → team → month start (ms) → totals.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Ledger {
    teams: ByTeam<BTreeMap<i64, Totals>>,
}

impl Ledger {
    /// The month totals of the rollup files of this and the previous UTC
    /// month in the rollup tree: the seed of the live ledger.
    pub fn from_rollups(rollups: &Tree) -> Result<Self, RollupError> {
        let this = month_start_ms(Utc::now().timestamp_millis());
        let mut files = MonthToDate::new(rollups);
        let mut ledger = Ledger::default();
        for month_ms in [month_start_ms(this - 1), this] {
            let month = month_name(month_ms);
            files.refresh(&month)?;
            for (tenant, team, t) in files.teams(&month) {
                ledger.add_month(tenant, team, month_ms, t);
            }
        }
        Ok(ledger)
    }

    /// Add a month total.
    pub fn add_month(&mut self, tenant: &str, team: Option<&str>, month_ms: i64, t: &Totals) {
        self.slot(tenant, team, month_ms).add(t);
    }

    fn slot(&mut self, tenant: &str, team: Option<&str>, month: i64) -> &mut Totals {
        self.teams.entry(tenant, team).entry(month).or_default()
    }

    /// Teams with any month in the ledger.
    pub fn teams(&self) -> usize {
        self.teams.len()
    }

    /// Drop months before `keep_from_ms`.
    pub fn prune(&mut self, keep_from_ms: i64) {
        self.teams.retain(|months| {
            months.retain(|&m, _| m >= keep_from_ms);
            !months.is_empty()
        });
    }

    pub fn month(&self, tenant: &str, team: Option<&str>, month_ms: i64) -> Totals {
        self.teams
            .get(tenant, team)
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

/// A topic-partition the pipeline reads.
pub type TopicPartition = (Arc<str>, i32);

/// One source partition's window, summed by team: tenant → team → totals
/// (untagged usage under the empty team name, as in [`Ledger`]).
#[derive(Debug, Clone, PartialEq)]
pub struct TeamWindow {
    pub source: TopicPartition,
    pub start_ms: i64,
    pub end_ms: i64,
    /// The worker that published it (its index in the process).
    owner: usize,
    teams: ByTeam<Totals>,
}

impl TeamWindow {
    pub fn new(source: TopicPartition, start_ms: i64, end_ms: i64) -> Self {
        TeamWindow {
            source,
            start_ms,
            end_ms,
            owner: 0,
            teams: ByTeam::default(),
        }
    }

    /// The window of `source` holding `rows`.
    pub fn of_rows<'a>(
        source: TopicPartition,
        start_ms: i64,
        end_ms: i64,
        rows: impl Iterator<Item = (DimsRef<'a>, &'a Measures)>,
    ) -> Self {
        let mut w = TeamWindow::new(source, start_ms, end_ms);
        for (d, m) in rows {
            w.add(d.tenant, d.team, &Totals::of(m));
        }
        w
    }

    pub fn add(&mut self, tenant: &str, team: Option<&str>, t: &Totals) {
        self.teams.entry(tenant, team).add(t);
    }

    fn team(&self, tenant: &str, team: Option<&str>) -> Option<&Totals> {
        self.teams.get(tenant, team)
    }

    fn is(&self, source: &TopicPartition, start_ms: i64) -> bool {
        self.start_ms == start_ms && self.source == *source
    }
}

/// One moment of the live state, of every worker of the process.
///
/// Month totals are `closed` (each worker's ledger when it last published
/// in full; worker 0's starts from the rollup files) plus `closed_since`
/// (windows closed after that): each closed window is in exactly one of the
/// two and never also open. Open windows are kept per source partition and
/// summed when read.
#[derive(Debug, Clone, Default)]
pub struct LiveSnapshot {
    /// Wall clock when it was taken in full (ms); 0 before the first one.
    pub as_of_ms: i64,
    /// By worker: the windows it closed (worker 0: plus the rollup files at
    /// the start of the run).
    closed: Vec<Arc<Ledger>>,
    /// Windows closed after `closed` was copied.
    closed_since: Vec<Arc<TeamWindow>>,
    /// Each source partition's open windows.
    open: Vec<Arc<TeamWindow>>,
}

impl LiveSnapshot {
    pub fn new(as_of_ms: i64, closed: Ledger, open: Vec<TeamWindow>) -> Self {
        LiveSnapshot {
            as_of_ms,
            closed: vec![Arc::new(closed)],
            closed_since: Vec::new(),
            open: open.into_iter().map(Arc::new).collect(),
        }
    }

    /// This snapshot once `closed` have left the open windows for the
    /// month totals; everything else as it was.
    fn after_closing(&self, closed: &[Arc<TeamWindow>]) -> Self {
        let still_open = |w: &&Arc<TeamWindow>| !closed.iter().any(|c| w.is(&c.source, c.start_ms));
        LiveSnapshot {
            as_of_ms: self.as_of_ms,
            closed: self.closed.clone(),
            closed_since: self.closed_since.iter().chain(closed).cloned().collect(),
            open: self.open.iter().filter(still_open).cloned().collect(),
        }
    }

    /// This snapshot with worker `worker`'s part replaced: its ledger, and
    /// its open windows (`open`, all of one worker) in place of what it
    /// published before and of anything published for the same source
    /// partitions (a partition that moved to it in a rebalance).
    fn with_worker(
        &self,
        worker: usize,
        as_of_ms: i64,
        ledger: Ledger,
        open: Vec<TeamWindow>,
    ) -> Self {
        let mut closed = self.closed.clone();
        if closed.len() <= worker {
            closed.resize_with(worker + 1, Default::default);
        }
        closed[worker] = Arc::new(ledger);
        let sources: Vec<&TopicPartition> = open.iter().map(|w| &w.source).collect();
        let others = |w: &&Arc<TeamWindow>| w.owner != worker && !sources.contains(&&w.source);
        let mut kept: Vec<Arc<TeamWindow>> = self.open.iter().filter(others).cloned().collect();
        kept.extend(open.into_iter().map(|mut w| {
            w.owner = worker;
            Arc::new(w)
        }));
        LiveSnapshot {
            as_of_ms,
            closed,
            closed_since: self
                .closed_since
                .iter()
                .filter(|w| w.owner != worker)
                .cloned()
                .collect(),
            open: kept,
        }
    }

    /// A new run of the workers: month totals are `seed` (the rollup files
    /// now, which hold every window written before), the windows still open
    /// stay until their worker publishes again (they were not written), and
    /// closed windows not yet in a file are dropped (the run replays them).
    fn restarted(&self, as_of_ms: i64, seed: Ledger) -> Self {
        LiveSnapshot {
            as_of_ms,
            closed: vec![Arc::new(seed)],
            closed_since: Vec::new(),
            open: self.open.clone(),
        }
    }

    /// The team's open windows (summed over sources), oldest first.
    pub fn open_windows(&self, tenant: &str, team: Option<&str>) -> Vec<OpenWindow> {
        let mut by_start = BTreeMap::new();
        for w in &self.open {
            if let Some(t) = w.team(tenant, team) {
                add_open(&mut by_start, w, t);
            }
        }
        by_start.into_values().collect()
    }

    /// The team's month to date: closed windows plus open ones of that month.
    pub fn month(&self, tenant: &str, team: Option<&str>, month_ms: i64) -> Totals {
        let mut total = Totals::default();
        for ledger in &self.closed {
            total.add(&ledger.month(tenant, team, month_ms));
        }
        for w in self.closed_since.iter().chain(&self.open) {
            if month_start_ms(w.start_ms) == month_ms {
                if let Some(t) = w.team(tenant, team) {
                    total.add(t);
                }
            }
        }
        total
    }

    /// Every team's open windows (summed over sources), for summaries:
    /// `(tenant, team, window)` ordered by tenant, team and window start.
    pub fn all_open(&self) -> Vec<(&str, Option<&str>, OpenWindow)> {
        let mut teams: BTreeMap<(&str, Option<&str>), BTreeMap<i64, OpenWindow>> = BTreeMap::new();
        for w in &self.open {
            for (tenant, team, t) in w.teams.iter() {
                add_open(teams.entry((tenant, team)).or_default(), w, t);
            }
        }
        teams
            .into_iter()
            .flat_map(|((tenant, team), ws)| ws.into_values().map(move |w| (tenant, team, w)))
            .collect()
    }
}

fn add_open(by_start: &mut BTreeMap<i64, OpenWindow>, w: &TeamWindow, t: &Totals) {
    by_start
        .entry(w.start_ms)
        .or_insert(OpenWindow {
            start_ms: w.start_ms,
            end_ms: w.end_ms,
            totals: Totals::default(),
        })
        .totals
        .add(t);
}

/// Consumer health, written by the workers and librdkafka's statistics.
#[derive(Debug, Default)]
pub struct Health {
    /// By worker index.
    workers: Mutex<Vec<WorkerHealth>>,
    /// At least one broker connection is up (librdkafka statistics).
    pub broker_up: AtomicBool,
    /// Wall clock (ms) of the last statistics report; 0 = none yet.
    pub stats_at_ms: AtomicI64,
}

#[derive(Debug, Default, Clone)]
struct WorkerHealth {
    /// Partitions assigned to this worker.
    assigned: usize,
    /// The worker is inside its poll loop (not retrying a failure).
    running: bool,
    /// Messages not yet read (high watermark − position) per topic-partition
    /// this worker fetches, as of its last statistics report.
    lag: BTreeMap<(String, i32), i64>,
}

impl Health {
    fn with<T>(&self, f: impl FnOnce(&mut Vec<WorkerHealth>) -> T) -> T {
        f(&mut self.workers.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// The process runs `n` workers (each then reports as `0..n`).
    pub fn set_workers(&self, n: usize) {
        self.with(|w| w.resize_with(n.max(1), WorkerHealth::default));
    }

    /// Worker `worker` has `assigned` partitions and is (or is not) in its
    /// poll loop.
    pub fn report(&self, worker: usize, assigned: usize, running: bool) {
        self.with(|w| {
            if w.len() <= worker {
                w.resize_with(worker + 1, WorkerHealth::default);
            }
            w[worker].assigned = assigned;
            w[worker].running = running;
            if !running {
                w[worker].lag.clear();
            }
        });
    }

    /// Worker `worker`'s lag by partition, from its statistics.
    pub fn set_lag(&self, worker: usize, lag: BTreeMap<(String, i32), i64>) {
        self.with(|w| {
            if w.len() <= worker {
                w.resize_with(worker + 1, WorkerHealth::default);
            }
            w[worker].lag = lag;
        });
    }

    /// Partitions assigned to the process's workers.
    pub fn assigned(&self) -> usize {
        self.with(|w| w.iter().map(|h| h.assigned).sum())
    }

    /// Every worker is inside its poll loop.
    pub fn running(&self) -> bool {
        self.with(|w| !w.is_empty() && w.iter().all(|h| h.running))
    }

    pub fn total_lag(&self) -> i64 {
        self.with(|w| {
            w.iter()
                .flat_map(|h| h.lag.values())
                .filter(|&&l| l > 0)
                .sum()
        })
    }

    /// The partition's unread messages at the last report, if reported.
    pub fn backlog(&self, topic: &str, partition: i32) -> Option<i64> {
        let key = (topic.to_string(), partition);
        self.with(|w| w.iter().find_map(|h| h.lag.get(&key).copied()))
    }

    pub fn lag_by_partition(&self) -> Vec<((String, i32), i64)> {
        self.with(|w| {
            let mut all: BTreeMap<(String, i32), i64> = BTreeMap::new();
            for h in w.iter() {
                for (k, v) in &h.lag {
                    all.insert(k.clone(), *v);
                }
            }
            all.into_iter().collect()
        })
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
    /// Whether the month totals were read from the rollups
    /// ([`SEED_LOADING`], [`SEED_LOADED`], [`SEED_FAILED`]).
    seed_state: std::sync::atomic::AtomicU8,
}

const SEED_LOADING: u8 = 0;
const SEED_LOADED: u8 = 1;
const SEED_FAILED: u8 = 2;

/// Why the live view cannot be judged on yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NotLoaded {
    #[error("the month's spend is still being read from the rollups; retry shortly")]
    Loading,
    #[error(
        "the month's spend could not be read from the rollups (the cause is in the server log)"
    )]
    Failed,
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
            seed_state: std::sync::atomic::AtomicU8::new(SEED_LOADING),
        }
    }

    /// Is the month's spend known (seeded from the rollups)? A gate must
    /// not judge on a ledger that is still empty because it is loading.
    pub fn loaded(&self) -> Result<(), NotLoaded> {
        match self.seed_state.load(std::sync::atomic::Ordering::Acquire) {
            SEED_LOADED => Ok(()),
            SEED_FAILED => Err(NotLoaded::Failed),
            _ => Err(NotLoaded::Loading),
        }
    }

    /// The rollups could not be read: readers are told so until a seed
    /// succeeds.
    pub fn seed_failed(&self) {
        self.seed_state
            .store(SEED_FAILED, std::sync::atomic::Ordering::Release);
    }

    pub fn snapshot(&self) -> Arc<LiveSnapshot> {
        self.snapshot
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The month totals read from the rollups: the seed of the next run's
    /// ledger, and, until a consumer has published, what readers see (so a
    /// reader never sees an empty month that is only not loaded yet).
    ///
    /// Called before each run of the workers: readers then see the month of
    /// the files (which hold every window written so far) and the windows
    /// still open, not the ledgers of the run before (whose windows are in
    /// those files now).
    pub fn set_seed(&self, ledger: Ledger) {
        let now = Utc::now().timestamp_millis();
        self.update(|s| s.restarted(now, ledger.clone()));
        *self.seed.lock().unwrap_or_else(|p| p.into_inner()) = ledger;
        self.seed_state
            .store(SEED_LOADED, std::sync::atomic::Ordering::Release);
    }

    pub fn take_seed(&self) -> Ledger {
        self.seed.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Replace the snapshot (tests and tools; the workers [`Self::update`]).
    pub fn publish(&self, s: LiveSnapshot) {
        *self.snapshot.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(s);
    }

    /// Replace the snapshot by `f` of it, under the lock: workers publishing
    /// at the same moment each see the other's part.
    fn update(&self, f: impl FnOnce(&LiveSnapshot) -> LiveSnapshot) {
        let mut current = self.snapshot.write().unwrap_or_else(|p| p.into_inner());
        *current = Arc::new(f(&current));
    }
}

/// One worker's side: the ledger of the windows it closed and when it last
/// published.
pub struct LiveWriter {
    /// The worker's index in the process.
    worker: usize,
    pub ledger: Ledger,
    last: Option<Instant>,
    /// Windows closed since the last publish.
    closed: Vec<Arc<TeamWindow>>,
}

impl LiveWriter {
    /// Worker 0's ledger starts from the seed (the rollup files); the
    /// others' start empty, so the files are counted once.
    pub fn new(live: &Live, worker: usize) -> Self {
        LiveWriter {
            worker,
            ledger: if worker == 0 {
                live.take_seed()
            } else {
                Ledger::default()
            },
            last: None,
            closed: Vec::new(),
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

    /// A window of `source` closed: its rows go to the ledger now, and to
    /// readers with the next [`Self::publish_closed`] or [`Self::publish`].
    pub fn close_window<'a>(
        &mut self,
        source: &TopicPartition,
        start_ms: i64,
        end_ms: i64,
        rows: impl Iterator<Item = (DimsRef<'a>, &'a Measures)>,
    ) {
        let mut w = TeamWindow::of_rows(source.clone(), start_ms, end_ms, rows);
        w.owner = self.worker;
        let month = month_start_ms(start_ms);
        for (tenant, team, t) in w.teams.iter() {
            self.ledger.add_month(tenant, team, month, t);
        }
        self.closed.push(Arc::new(w));
    }

    /// Move the windows closed since the last publish from "open" to
    /// "closed" in the readers' snapshot, leaving the rest as it was: costs
    /// the closed windows' rows, not the whole live state.
    pub fn publish_closed(&mut self, live: &Live) {
        if self.closed.is_empty() {
            return;
        }
        live.update(|s| s.after_closing(&self.closed));
        self.closed.clear();
    }

    /// Publish a snapshot of the ledger and `open` (every partition's open
    /// windows: `(source, start, end, rows)`).
    pub fn publish<'a, W, R>(&mut self, live: &Live, now: Instant, open: W)
    where
        W: Iterator<Item = (TopicPartition, i64, i64, R)>,
        R: Iterator<Item = (DimsRef<'a>, &'a Measures)>,
    {
        self.last = Some(now);
        let as_of_ms = Utc::now().timestamp_millis();
        // Keep this month and the previous one.
        self.ledger
            .prune(month_start_ms(month_start_ms(as_of_ms) - 1));
        let open = open
            .map(|(source, start, end, rows)| TeamWindow::of_rows(source, start, end, rows))
            .collect();
        // The ledger copied here holds every window this worker closed so far.
        self.closed.clear();
        let ledger = self.ledger.clone();
        live.update(|s| s.with_worker(self.worker, as_of_ms, ledger, open));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn readers_see_the_seed_until_a_consumer_publishes() {
        let live = Live::default();
        assert_eq!(live.loaded(), Err(NotLoaded::Loading));
        let mut seed = Ledger::default();
        let month = month_start_ms(1_767_225_600_000);
        let spent = Totals {
            cost_usd: 2003.0,
            events: 7,
            ..Totals::default()
        };
        seed.add_month("acme", Some("ai"), month, &spent);
        live.set_seed(seed.clone());
        assert_eq!(live.loaded(), Ok(()));
        let snap = live.snapshot();
        assert!(snap.as_of_ms > 0);
        assert_eq!(snap.month("acme", Some("ai"), month).cost_usd, 2003.0);
        // A failed read later: readers are told, not shown a stale month.
        live.seed_failed();
        assert_eq!(live.loaded(), Err(NotLoaded::Failed));
        live.set_seed(seed);
        assert_eq!(live.loaded(), Ok(()));
    }

    fn dims<'a>(tenant: &'a str, team: Option<&'a str>) -> DimsRef<'a> {
        DimsRef {
            tenant,
            team,
            environment: None,
            project: None,
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
        let end_ms = now_ms + 60_000;
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
        let mut w = LiveWriter::new(&live, 0);
        let (a, b): (TopicPartition, TopicPartition) = (("t".into(), 0), ("t".into(), 1));
        let (m_a, m_b, m_untagged) = (measures(2.0, 3), measures(1.0, 1), measures(4.0, 2));
        let rows_a = vec![
            (dims("acme", Some("ai")), &m_a),
            (dims("acme", None), &m_untagged),
        ];
        let rows_b = vec![(dims("acme", Some("ai")), &m_b)];
        // The same window open in two source partitions.
        w.publish(
            &live,
            Instant::now(),
            [
                (a.clone(), now_ms, end_ms, rows_a.clone().into_iter()),
                (b.clone(), now_ms, end_ms, rows_b.clone().into_iter()),
            ]
            .into_iter(),
        );
        let s = live.snapshot();
        let open = s.open_windows("acme", Some("ai"));
        assert_eq!(open.len(), 1, "summed over sources: {open:?}");
        assert_eq!((open[0].totals.cost_usd, open[0].end_ms), (3.0, end_ms));
        assert_eq!(s.month("acme", Some("ai"), month).cost_usd, 8.0);
        assert_eq!(s.month("acme", Some("ai"), month).events, 9);
        let all: Vec<_> = s
            .all_open()
            .into_iter()
            .map(|(t, team, w)| (t, team, w.totals.cost_usd))
            .collect();
        assert_eq!(all, [("acme", None, 4.0), ("acme", Some("ai"), 3.0)]);

        // Source a's window closes (with one more row than readers saw): it
        // leaves the open windows and enters the month totals in one swap;
        // source b's window stays open as it was.
        let late = measures(0.5, 1);
        let mut final_a = rows_a.clone();
        final_a.push((dims("acme", Some("ai")), &late));
        w.close_window(&a, now_ms, end_ms, final_a.into_iter());
        assert_eq!(
            live.snapshot().month("acme", Some("ai"), month).cost_usd,
            8.0,
            "not yet published"
        );
        w.publish_closed(&live);
        let s = live.snapshot();
        let open = s.open_windows("acme", Some("ai"));
        assert_eq!(open.len(), 1);
        assert_eq!(open[0].totals.cost_usd, 1.0, "only source b's part is open");
        assert_eq!(s.month("acme", Some("ai"), month).cost_usd, 8.5);
        assert_eq!(s.month("acme", None, month).cost_usd, 4.0);
        assert!(s.open_windows("acme", None).is_empty());
        // Nothing closed since: publishing again changes nothing.
        w.publish_closed(&live);
        assert_eq!(
            live.snapshot().month("acme", Some("ai"), month).cost_usd,
            8.5
        );

        // A full snapshot: the closed window is in the ledger, counted once.
        w.publish(
            &live,
            Instant::now(),
            std::iter::once((b.clone(), now_ms, end_ms, rows_b.into_iter())),
        );
        let s = live.snapshot();
        assert_eq!(s.month("acme", Some("ai"), month).cost_usd, 8.5);
        assert_eq!(s.month("acme", None, month).cost_usd, 4.0);
        assert_eq!(s.month("other", Some("ai"), month).cost_usd, 0.0);
        assert_eq!(s.open_windows("acme", Some("ai")).len(), 1);
    }

    /// Two workers publish their own parts: each full publish replaces only
    /// that worker's ledger and open windows (and windows of a partition
    /// that moved to it), the seed is counted once, and a new run starts
    /// from the files without the ledgers of the run before.
    #[test]
    fn workers_publish_their_own_parts_and_the_seed_counts_once() {
        let live = Live::new(Duration::from_millis(1));
        let now_ms = Utc::now().timestamp_millis();
        let month = month_start_ms(now_ms);
        let (end_ms, spend) = (now_ms + 60_000, |c: f64| Totals {
            cost_usd: c,
            events: 1,
            ..Totals::default()
        });
        let mut seed = Ledger::default();
        seed.add_month("acme", Some("ai"), month, &spend(100.0));
        live.set_seed(seed.clone());
        let (mut w0, mut w1) = (LiveWriter::new(&live, 0), LiveWriter::new(&live, 1));
        let (p0, p1): (TopicPartition, TopicPartition) = (("t".into(), 0), ("t".into(), 1));
        let (m1, m2, m4) = (measures(1.0, 1), measures(2.0, 1), measures(4.0, 1));
        let ai = || dims("acme", Some("ai"));
        let cost = |live: &Live| live.snapshot().month("acme", Some("ai"), month).cost_usd;
        w0.publish(
            &live,
            Instant::now(),
            std::iter::once((p0.clone(), now_ms, end_ms, vec![(ai(), &m1)].into_iter())),
        );
        w1.publish(
            &live,
            Instant::now(),
            std::iter::once((p1.clone(), now_ms, end_ms, vec![(ai(), &m2)].into_iter())),
        );
        assert_eq!(
            cost(&live),
            103.0,
            "the seed once, both workers' open windows"
        );
        // Worker 1 closes its window; worker 0's part is untouched.
        w1.close_window(&p1, now_ms, end_ms, vec![(ai(), &m2)].into_iter());
        w1.publish_closed(&live);
        assert_eq!(cost(&live), 103.0);
        w1.publish(
            &live,
            Instant::now(),
            std::iter::empty::<(
                TopicPartition,
                i64,
                i64,
                std::vec::IntoIter<(DimsRef<'_>, &Measures)>,
            )>(),
        );
        assert_eq!(
            cost(&live),
            103.0,
            "worker 1's ledger holds its closed window"
        );
        assert_eq!(live.snapshot().open_windows("acme", Some("ai")).len(), 1);
        // A rebalance moves partition 0 to worker 1: counted once, by worker 1.
        w1.publish(
            &live,
            Instant::now(),
            std::iter::once((p0.clone(), now_ms, end_ms, vec![(ai(), &m4)].into_iter())),
        );
        assert_eq!(
            cost(&live),
            106.0,
            "100 + 2 closed + 4 open on partition 0 (worker 0's 1 replaced)"
        );
        // A new run: the files now hold the closed window; the seed says so.
        let mut seed = seed;
        seed.add_month("acme", Some("ai"), month, &spend(2.0));
        live.set_seed(seed);
        assert_eq!(
            cost(&live),
            106.0,
            "102 from the files, the open window until its worker publishes"
        );
        let mut w1 = LiveWriter::new(&live, 1);
        w1.publish(
            &live,
            Instant::now(),
            std::iter::once((p0, now_ms, end_ms, vec![(ai(), &m4)].into_iter())),
        );
        assert_eq!(cost(&live), 106.0);
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
        assert!(l.teams.is_empty());
    }
}
