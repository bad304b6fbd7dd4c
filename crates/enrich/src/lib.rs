//! Cost, energy and carbon enrichment (pure, no I/O).
//!
//! Formulas (also in the README, "Configuration"):
//! - inference cost: `(input − cached − cache_write)/1000 × price_in + cached/1000 × price_cached
//!   + cache_write/1000 × price_cache_write + (output − reasoning)/1000 × price_out
//!   + reasoning/1000 × price_reasoning`, at the rates of the entry's highest tier whose
//!   `above_input_tokens` the request's input tokens exceed (the whole request at that tier)
//! - training cost: `gpu_count × duration_hours × price_per_hour(gpu_type)`
//! - inference energy: `(input + output)/1000 × energy_wh_per_1k(model)`
//! - training energy: `gpu_count × hours × watts(gpu_type) × utilization × PUE`
//! - carbon: `energy_wh / 1000 × intensity(region)` g CO2e (SCI: O = E × I)
//! - embodied carbon (SCI: M): `gpu_hours × embodied_g_per_hour(gpu_type)` for training,
//!   `duration_ms / 3 600 000 × embodied_g_per_gpu_hour` (one GPU for the request's time) for
//!   inference; SCI per request is `(O + M) / requests`
//! - an event's own `cost_usd` (a provider's bill) replaces the cost above
//!
//! The [`PriceBook`] comes from the pipeline config; [`Defaults`] (from the
//! environment) price whatever the book does not match.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

type FastMap<K, V> = HashMap<K, V, foldhash::fast::FixedState>;

use serde::Deserialize;
use tollgate_event::{Body, Event};

/// Prices and factors used when the price book has no matching entry.
/// Read from the environment by [`Defaults::from_lookup`].
#[derive(Debug, Clone, PartialEq)]
pub struct Defaults {
    pub cost_per_1k_input_tokens: f64,
    pub cost_per_1k_output_tokens: f64,
    pub compute_cost_per_hour: f64,
    pub energy_wh_per_1k_tokens: f64,
    pub carbon_intensity_g_per_kwh: f64,
}

impl Default for Defaults {
    fn default() -> Self {
        Defaults {
            cost_per_1k_input_tokens: 0.001,
            cost_per_1k_output_tokens: 0.002,
            compute_cost_per_hour: 1.00,
            energy_wh_per_1k_tokens: 0.3,
            carbon_intensity_g_per_kwh: 400.0,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum EnrichConfigError {
    #[error("environment variable {name}={value:?} is not a non-negative number")]
    BadEnv { name: &'static str, value: String },
    #[error("price book: {0}")]
    Book(String),
}

impl Defaults {
    /// The environment variables that set the defaults.
    pub const ENV: [&'static str; 5] = [
        "COST_PER_1K_INPUT_TOKENS",
        "COST_PER_1K_OUTPUT_TOKENS",
        "COMPUTE_COST_PER_HOUR",
        "ENERGY_WH_PER_1K_TOKENS",
        "CARBON_INTENSITY_G_PER_KWH",
    ];

    /// Build defaults from a variable lookup (normally `std::env::var`), falling
    /// back to the built-in values for unset variables. A set but malformed
    /// variable is an error, not silently ignored.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, EnrichConfigError> {
        let mut d = Defaults::default();
        let slots: [&mut f64; 5] = [
            &mut d.cost_per_1k_input_tokens,
            &mut d.cost_per_1k_output_tokens,
            &mut d.compute_cost_per_hour,
            &mut d.energy_wh_per_1k_tokens,
            &mut d.carbon_intensity_g_per_kwh,
        ];
        for (name, slot) in Self::ENV.into_iter().zip(slots) {
            if let Some(value) = lookup(name) {
                match value.trim().parse::<f64>() {
                    Ok(x) if x.is_finite() && x >= 0.0 => *slot = x,
                    _ => return Err(EnrichConfigError::BadEnv { name, value }),
                }
            }
        }
        Ok(d)
    }
}

/// Prices for model names matching `pattern` (`*` matches any run of
/// characters), effective from `effective_from` (UTC date, inclusive) until
/// `effective_to` (UTC date, exclusive).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ModelPrice {
    pub pattern: String,
    #[serde(default)]
    pub effective_from: Option<String>,
    #[serde(default)]
    pub effective_to: Option<String>,
    pub input_per_1k: f64,
    pub output_per_1k: f64,
    /// Price of cached input tokens; the input price when absent.
    #[serde(default)]
    pub cached_input_per_1k: Option<f64>,
    /// Price of input tokens written to the cache; the input price when absent.
    #[serde(default)]
    pub cache_write_per_1k: Option<f64>,
    /// Price of reasoning tokens; the output price when absent.
    #[serde(default)]
    pub reasoning_per_1k: Option<f64>,
    #[serde(default)]
    pub energy_wh_per_1k: Option<f64>,
    /// Higher rates for long requests: a request with more input tokens
    /// than a tier's `above_input_tokens` is priced, all of it, at the
    /// highest such tier's rates.
    #[serde(default)]
    pub tiers: Vec<PriceTier>,
}

/// The rates of a model entry for requests above a size (see [`ModelPrice::tiers`]).
/// Absent optional prices follow the tier's own input and output prices.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PriceTier {
    pub above_input_tokens: u64,
    pub input_per_1k: f64,
    pub output_per_1k: f64,
    #[serde(default)]
    pub cached_input_per_1k: Option<f64>,
    #[serde(default)]
    pub cache_write_per_1k: Option<f64>,
    #[serde(default)]
    pub reasoning_per_1k: Option<f64>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GpuPrice {
    pub gpu_type: String,
    /// Only in this region; an entry without one prices every region that
    /// has no entry of its own.
    #[serde(default)]
    pub region: Option<String>,
    pub price_per_hour: f64,
    pub watts: f64,
    /// Embodied emissions per GPU-hour (g CO2e); the book's
    /// `embodied_g_per_gpu_hour` when absent.
    #[serde(default)]
    pub embodied_g_per_hour: Option<f64>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RegionIntensity {
    pub region: String,
    pub carbon_intensity_g_per_kwh: f64,
}

fn default_pue() -> f64 {
    1.2
}
fn default_gpu_watts() -> f64 {
    400.0
}

/// The price book section of the pipeline config.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PriceBook {
    #[serde(default)]
    pub models: Vec<ModelPrice>,
    #[serde(default)]
    pub gpus: Vec<GpuPrice>,
    #[serde(default)]
    pub regions: Vec<RegionIntensity>,
    /// Power usage effectiveness of the data centres (training energy).
    #[serde(default = "default_pue")]
    pub pue: f64,
    /// Board power for GPU types the book does not list.
    #[serde(default = "default_gpu_watts")]
    pub default_gpu_watts: f64,
    /// Embodied emissions (SCI's M) per GPU-hour, g CO2e, for GPU types
    /// without their own figure and for inference (0: not counted).
    #[serde(default)]
    pub embodied_g_per_gpu_hour: f64,
}

impl Default for PriceBook {
    fn default() -> Self {
        PriceBook {
            models: vec![],
            gpus: vec![],
            regions: vec![],
            pue: default_pue(),
            default_gpu_watts: default_gpu_watts(),
            embodied_g_per_gpu_hour: 0.0,
        }
    }
}

/// The unit economics added to every event.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Enriched {
    pub cost_usd: f64,
    /// Cost per unit of work: per request (inference), per GPU-hour
    /// (training), 0 for heartbeats.
    pub unit_cost_usd: f64,
    pub energy_wh: f64,
    pub carbon_g: f64,
    /// Embodied emissions of the hardware for this work (SCI's M), g CO2e.
    pub embodied_g: f64,
    pub gpu_hours: f64,
    /// Inference `duration_ms`, training duration in ms, heartbeat `latency_ms`.
    pub duration_ms: Option<f64>,
}

#[derive(Debug, Clone, Copy)]
struct Rates {
    /// Epoch millis from which these rates apply.
    from_ms: i64,
    /// Epoch millis from which they no longer do.
    to_ms: i64,
    /// The book entry (index in `PriceBook::models`); `None`: the defaults.
    entry: Option<usize>,
    input: f64,
    cached: f64,
    cache_write: f64,
    output: f64,
    reasoning: f64,
    energy: f64,
}

impl Rates {
    fn defaults(d: &Defaults) -> Rates {
        Rates {
            from_ms: i64::MIN,
            to_ms: i64::MAX,
            entry: None,
            input: d.cost_per_1k_input_tokens,
            cached: d.cost_per_1k_input_tokens,
            cache_write: d.cost_per_1k_input_tokens,
            output: d.cost_per_1k_output_tokens,
            reasoning: d.cost_per_1k_output_tokens,
            energy: d.energy_wh_per_1k_tokens,
        }
    }

    /// These rates with a tier's prices.
    fn with_tier(self, t: &PriceTier) -> Rates {
        Rates {
            input: t.input_per_1k,
            cached: t.cached_input_per_1k.unwrap_or(t.input_per_1k),
            cache_write: t.cache_write_per_1k.unwrap_or(t.input_per_1k),
            output: t.output_per_1k,
            reasoning: t.reasoning_per_1k.unwrap_or(t.output_per_1k),
            ..self
        }
    }
}

/// The price book in force, shared by every [`Enricher`] of a process
/// (each worker's and the API's): a reload replaces it, and each enricher
/// takes the new one at its next [`Enricher::refresh`]. Generation 0 is the
/// book the enrichers were built with.
#[derive(Debug, Default)]
pub struct SharedBook {
    generation: AtomicU64,
    book: RwLock<Option<Arc<PriceBook>>>,
}

impl SharedBook {
    /// Put `book` in force (validate it with [`Enricher::new`] first);
    /// returns its generation.
    pub fn replace(&self, book: PriceBook) -> u64 {
        let mut slot = self.book.write().unwrap_or_else(|p| p.into_inner());
        *slot = Some(Arc::new(book));
        self.generation.fetch_add(1, Ordering::AcqRel) + 1
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn current(&self) -> (u64, Option<Arc<PriceBook>>) {
        let slot = self.book.read().unwrap_or_else(|p| p.into_inner());
        (self.generation(), slot.clone())
    }
}

/// Applies a price book and defaults to events. Caches the rates resolved per
/// model name, so the pattern scan runs once per distinct model.
#[derive(Debug)]
pub struct Enricher {
    book: PriceBook,
    defaults: Defaults,
    /// Per model name: the matching book entries, newest first, then the defaults.
    model_cache: FastMap<Box<str>, Vec<Rates>>,
    /// By (lower-case GPU type, region or `None` for every region): the
    /// entry's index in `book.gpus` (the last listed of equals).
    gpu: FastMap<(String, Option<String>), usize>,
    region: FastMap<String, f64>,
    /// The [`SharedBook`] generation this enricher prices with.
    generation: u64,
}

fn parse_date_ms(s: &str) -> Option<i64> {
    let d = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()?;
    Some(d.and_hms_opt(0, 0, 0)?.and_utc().timestamp_millis())
}

/// The largest price, power or intensity a book may hold: with events'
/// bounded sizes (`tollgate_event::MAX_GPU_HOURS`, token counts below
/// 2^53) every product stays a finite number.
pub const MAX_RATE: f64 = 1e9;

fn in_range(v: f64) -> bool {
    v.is_finite() && (0.0..=MAX_RATE).contains(&v)
}

/// `*`-glob match, case-sensitive.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let tail: Vec<&str> = parts.collect();
    let Some((last, middle)) = tail.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

impl Enricher {
    pub fn new(book: PriceBook, defaults: Defaults) -> Result<Self, EnrichConfigError> {
        let bad = |what: String| Err(EnrichConfigError::Book(what));
        for m in &book.models {
            let prices = [
                ("input_per_1k", Some(m.input_per_1k)),
                ("output_per_1k", Some(m.output_per_1k)),
                ("cached_input_per_1k", m.cached_input_per_1k),
                ("cache_write_per_1k", m.cache_write_per_1k),
                ("reasoning_per_1k", m.reasoning_per_1k),
                ("energy_wh_per_1k", m.energy_wh_per_1k),
            ];
            let tiers = m.tiers.iter().flat_map(|t| {
                [
                    ("tiers.input_per_1k", Some(t.input_per_1k)),
                    ("tiers.output_per_1k", Some(t.output_per_1k)),
                    ("tiers.cached_input_per_1k", t.cached_input_per_1k),
                    ("tiers.cache_write_per_1k", t.cache_write_per_1k),
                    ("tiers.reasoning_per_1k", t.reasoning_per_1k),
                ]
            });
            for (name, v) in prices.into_iter().chain(tiers) {
                if v.is_some_and(|v| !in_range(v)) {
                    return bad(format!(
                        "model `{}`: {name} must be a number from 0 to {MAX_RATE:e}",
                        m.pattern
                    ));
                }
            }
            let mut sizes: Vec<u64> = m.tiers.iter().map(|t| t.above_input_tokens).collect();
            sizes.sort_unstable();
            if sizes.first() == Some(&0) || sizes.windows(2).any(|w| w[0] == w[1]) {
                return bad(format!(
                    "model `{}`: each tier needs its own above_input_tokens, at least 1",
                    m.pattern
                ));
            }
            let mut dates = [None, None];
            for (i, (name, d)) in [
                ("effective_from", &m.effective_from),
                ("effective_to", &m.effective_to),
            ]
            .into_iter()
            .enumerate()
            {
                if let Some(d) = d {
                    match parse_date_ms(d) {
                        Some(ms) => dates[i] = Some(ms),
                        None => {
                            return bad(format!(
                                "model `{}`: {name} `{d}` is not a YYYY-MM-DD date",
                                m.pattern
                            ))
                        }
                    }
                }
            }
            if let [Some(from), Some(to)] = dates {
                if to <= from {
                    return bad(format!(
                        "model `{}`: effective_to must be after effective_from",
                        m.pattern
                    ));
                }
            }
        }
        if !(in_range(book.pue) && book.pue >= 1.0) {
            return bad(format!(
                "pue must be a number from 1 to {MAX_RATE:e}, got {}",
                book.pue
            ));
        }
        let embodied = std::iter::once((
            "embodied_g_per_gpu_hour",
            Some(book.embodied_g_per_gpu_hour),
        ))
        .chain(
            book.gpus
                .iter()
                .map(|g| ("gpus.embodied_g_per_hour", g.embodied_g_per_hour)),
        );
        for (name, v) in embodied {
            if v.is_some_and(|v| !(v.is_finite() && v >= 0.0)) {
                return bad(format!("{name} must be a non-negative number"));
            }
        }
        let gpu = book
            .gpus
            .iter()
            .enumerate()
            .map(|(i, g)| ((g.gpu_type.to_ascii_lowercase(), g.region.clone()), i))
            .collect();
        let region = book
            .regions
            .iter()
            .map(|r| (r.region.clone(), r.carbon_intensity_g_per_kwh))
            .collect();
        Ok(Enricher {
            book,
            defaults,
            model_cache: FastMap::default(),
            gpu,
            region,
            generation: 0,
        })
    }

    /// Take the shared book if it was replaced since this enricher was
    /// built (one atomic load when it was not). A book that does not build
    /// is skipped and the one in use stays (the reload validated it).
    pub fn refresh(&mut self, shared: &SharedBook) {
        if shared.generation() == self.generation {
            return;
        }
        let (generation, book) = shared.current();
        self.generation = generation;
        if let Some(book) = book {
            if let Ok(mut next) = Enricher::new((*book).clone(), self.defaults.clone()) {
                next.generation = generation;
                *self = next;
            }
        }
    }

    pub fn book(&self) -> &PriceBook {
        &self.book
    }

    pub fn defaults(&self) -> &Defaults {
        &self.defaults
    }

    fn resolve_model(&self, model: &str) -> Vec<Rates> {
        let d = &self.defaults;
        // The most specific matching pattern (most literal characters; the
        // first listed among equals) owns the model; its entries differ by date.
        let specificity = |p: &str| p.chars().filter(|&c| c != '*').count();
        let best = self
            .book
            .models
            .iter()
            .filter(|m| glob_match(&m.pattern, model))
            .fold(None::<&str>, |best, m| match best {
                Some(b) if specificity(b) >= specificity(&m.pattern) => Some(b),
                _ => Some(&m.pattern),
            });
        let mut rates: Vec<Rates> = self
            .book
            .models
            .iter()
            .enumerate()
            .filter(|(_, m)| Some(m.pattern.as_str()) == best)
            .map(|(i, m)| Rates {
                from_ms: m
                    .effective_from
                    .as_deref()
                    .and_then(parse_date_ms)
                    .unwrap_or(i64::MIN),
                to_ms: m
                    .effective_to
                    .as_deref()
                    .and_then(parse_date_ms)
                    .unwrap_or(i64::MAX),
                entry: Some(i),
                input: m.input_per_1k,
                cached: m.cached_input_per_1k.unwrap_or(m.input_per_1k),
                cache_write: m.cache_write_per_1k.unwrap_or(m.input_per_1k),
                output: m.output_per_1k,
                reasoning: m.reasoning_per_1k.unwrap_or(m.output_per_1k),
                energy: m.energy_wh_per_1k.unwrap_or(d.energy_wh_per_1k_tokens),
            })
            .collect();
        // Newest effective date first; among equal dates the first listed wins (stable sort).
        rates.sort_by_key(|r| std::cmp::Reverse(r.from_ms));
        rates.push(Rates::defaults(d));
        rates
    }

    fn model_rates(&mut self, model: &str, ts_ms: i64) -> Rates {
        let list = match self.model_cache.get(model) {
            Some(list) => list,
            None => {
                let rates = self.resolve_model(model);
                self.model_cache.entry(model.into()).or_insert(rates)
            }
        };
        // The newest entry in force; the last (the defaults) always is.
        list.iter()
            .find(|r| r.from_ms <= ts_ms && ts_ms < r.to_ms)
            .or(list.last())
            .copied()
            .unwrap_or(Rates::defaults(&self.defaults))
    }

    /// The tier of `entry` that prices a request of `input_tokens` (its
    /// index), if any: the highest one the request is above.
    pub fn tier(entry: &ModelPrice, input_tokens: u64) -> Option<usize> {
        entry
            .tiers
            .iter()
            .enumerate()
            .filter(|(_, t)| input_tokens > t.above_input_tokens)
            .max_by_key(|(_, t)| t.above_input_tokens)
            .map(|(i, _)| i)
    }

    /// The rates for one request: the entry's, or its tier's.
    fn request_rates(&mut self, model: &str, ts_ms: i64, input_tokens: u64) -> Rates {
        let r = self.model_rates(model, ts_ms);
        let tier = r
            .entry
            .and_then(|i| self.book.models.get(i))
            .and_then(|m| Some(&m.tiers[Self::tier(m, input_tokens)?]));
        match tier {
            Some(t) => r.with_tier(t),
            None => r,
        }
    }

    /// The book entry that prices `model` at `ts_ms` (`None`: no entry is
    /// in force, the defaults price it).
    pub fn model_entry(&mut self, model: &str, ts_ms: i64) -> Option<&ModelPrice> {
        let i = self.model_rates(model, ts_ms).entry?;
        self.book.models.get(i)
    }

    /// The book entry that prices `gpu_type` in `region` (`None`: the
    /// defaults): the region's own entry, else the one for every region.
    pub fn gpu_entry(&self, gpu_type: &str, region: Option<&str>) -> Option<&GpuPrice> {
        let gpu = gpu_type.to_ascii_lowercase();
        region
            .and_then(|r| self.gpu.get(&(gpu.clone(), Some(r.to_string()))))
            .or_else(|| self.gpu.get(&(gpu, None)))
            .and_then(|&i| self.book.gpus.get(i))
    }

    /// Grid intensity for a region (g CO2e per kWh).
    pub fn intensity(&self, region: Option<&str>) -> f64 {
        region
            .and_then(|r| self.region.get(r).copied())
            .unwrap_or(self.defaults.carbon_intensity_g_per_kwh)
    }

    pub fn enrich(&mut self, e: &Event<'_>) -> Enriched {
        let (cost_usd, unit_cost_usd, energy_wh, gpu_hours, embodied_g, duration_ms) = match &e.body
        {
            Body::Inference {
                model,
                input_tokens,
                output_tokens,
                cached_input_tokens,
                cache_write_tokens,
                reasoning_tokens,
                duration_ms,
                cost_usd,
                ..
            } => {
                let r = self.request_rates(model, e.ts_ms, *input_tokens);
                // The decoder checked that the parts fit in their wholes.
                let plain_input =
                    input_tokens.saturating_sub(cached_input_tokens + cache_write_tokens);
                let plain_output = output_tokens.saturating_sub(*reasoning_tokens);
                // A provider's bill on the event wins over the book.
                let cost = cost_usd.unwrap_or_else(|| {
                    (plain_input as f64 * r.input
                        + *cached_input_tokens as f64 * r.cached
                        + *cache_write_tokens as f64 * r.cache_write
                        + plain_output as f64 * r.output
                        + *reasoning_tokens as f64 * r.reasoning)
                        / 1000.0
                });
                let energy = (input_tokens + output_tokens) as f64 / 1000.0 * r.energy;
                let embodied = duration_ms / 3_600_000.0 * self.book.embodied_g_per_gpu_hour;
                (cost, cost, energy, 0.0, embodied, Some(*duration_ms))
            }
            Body::Training {
                gpu_type,
                gpu_count,
                duration_hours,
                gpu_utilization,
                cost_usd,
                ..
            } => {
                let entry = self.gpu_entry(gpu_type, e.region.as_deref());
                let (price, watts) = entry.map(|g| (g.price_per_hour, g.watts)).unwrap_or((
                    self.defaults.compute_cost_per_hour,
                    self.book.default_gpu_watts,
                ));
                let embodied_per_hour = entry
                    .and_then(|g| g.embodied_g_per_hour)
                    .unwrap_or(self.book.embodied_g_per_gpu_hour);
                let gpu_hours = *gpu_count as f64 * duration_hours;
                let cost = cost_usd.unwrap_or(gpu_hours * price);
                let energy = gpu_hours * watts * gpu_utilization.unwrap_or(1.0) * self.book.pue;
                // Below a GPU-nanohour there is no rate to speak of (and
                // with the event's bounded cost, the quotient stays finite).
                let unit = if gpu_hours >= 1e-9 {
                    cost / gpu_hours
                } else {
                    0.0
                };
                (
                    cost,
                    unit,
                    energy,
                    gpu_hours,
                    gpu_hours * embodied_per_hour,
                    Some(duration_hours * 3_600_000.0),
                )
            }
            Body::Heartbeat { latency_ms, .. } => (0.0, 0.0, 0.0, 0.0, 0.0, *latency_ms),
        };
        let carbon_g = energy_wh / 1000.0 * self.intensity(e.region.as_deref());
        Enriched {
            cost_usd,
            unit_cost_usd,
            energy_wh,
            carbon_g,
            embodied_g,
            gpu_hours,
            duration_ms,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
