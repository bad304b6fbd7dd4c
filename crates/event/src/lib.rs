//! The Tollgate event contract: decoding and validation of one Kafka message.
//!
//! Pure code, no I/O. [`decode`] turns the bytes of one message into an
//! [`Event`] borrowing from those bytes, or a [`DecodeError`] that says which
//! field is wrong and why. The contract is documented in `schemas/`
//! (the JSON Schemas of the three kinds).

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;

mod fast;

/// Default upper bound for one message, in bytes.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// Longest accepted `event_id`, `region`, `node_id`, model name and tag
/// value, in characters (as JSON Schema's `maxLength` counts them; at most
/// 1 KiB of UTF-8).
pub const MAX_ID_CHARS: usize = 256;

/// Longer than [`MAX_ID_CHARS`] characters (counted only past that many
/// bytes).
pub(crate) fn too_long(s: &str) -> bool {
    s.len() > MAX_ID_CHARS && s.chars().count() > MAX_ID_CHARS
}
/// Largest integer a JSON number can carry exactly (2^53).
const MAX_EXACT_INT: f64 = 9_007_199_254_740_992.0;

/// The three event kinds; each has its own topic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Inference,
    Training,
    Heartbeat,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Inference, Kind::Training, Kind::Heartbeat];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Inference => "inference",
            Kind::Training => "training",
            Kind::Heartbeat => "heartbeat",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        match s {
            "inference" => Some(Kind::Inference),
            "training" => Some(Kind::Training),
            "heartbeat" => Some(Kind::Heartbeat),
            _ => None,
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a message was rejected. The text is what goes into the dead-letter
/// header `tollgate.error`, so it names the field and the rule.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    #[error("message is {size} bytes, larger than the limit of {max} bytes")]
    TooLarge { size: usize, max: usize },
    #[error("not valid JSON for an event: {0}")]
    Json(String),
    #[error("missing required field `{0}`")]
    Missing(&'static str),
    #[error("field `{field}` {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("unknown kind `{0}` (expected inference, training or heartbeat)")]
    UnknownKind(String),
    #[error("event of kind `{found}` on a topic that carries `{expected}` events")]
    KindMismatch { expected: Kind, found: Kind },
    #[error("field `ts` is {ahead_secs} s ahead of the clock, more than the {max_secs} s allowed (window.max_future_secs); is it in microseconds, or is the producer's clock wrong?")]
    Future { ahead_secs: i64, max_secs: i64 },
}

/// A count in a JSON request body or a query string, as JSON Schema's
/// `integer` reads it: `3` and `3.0` alike, never negative, at most 2^53
/// (the largest integer JSON carries exactly). For
/// `#[serde(default, deserialize_with = "tollgate_event::whole::opt")]`
/// and `deserialize_with = "tollgate_event::whole::one"`.
pub mod whole {
    use std::fmt;

    use serde::de::{Deserializer, Error, Visitor};

    const MAX: u64 = 1 << 53;

    /// `text`: also digits in a string (a query string's values are all
    /// text; a JSON body's count must be a number).
    struct Whole {
        text: bool,
    }

    impl Visitor<'_> for Whole {
        type Value = u64;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a non-negative integer of at most 2^53")
        }
        fn visit_u64<E: Error>(self, v: u64) -> Result<u64, E> {
            if v > MAX {
                return Err(E::custom(format_args!("{v} is more than 2^53")));
            }
            Ok(v)
        }
        fn visit_i64<E: Error>(self, v: i64) -> Result<u64, E> {
            u64::try_from(v)
                .map_err(|_| E::custom(format_args!("{v} is negative")))
                .and_then(|v| self.visit_u64(v))
        }
        fn visit_f64<E: Error>(self, v: f64) -> Result<u64, E> {
            if v.fract() == 0.0 && (0.0..=MAX as f64).contains(&v) {
                Ok(v as u64)
            } else {
                Err(E::custom(format_args!(
                    "{v} is not a non-negative integer of at most 2^53"
                )))
            }
        }
        fn visit_str<E: Error>(self, v: &str) -> Result<u64, E> {
            match v.parse::<u64>() {
                Ok(n) if self.text && v.bytes().all(|b| b.is_ascii_digit()) => self.visit_u64(n),
                _ => Err(E::custom(format_args!(
                    "{v:?} is not a non-negative integer"
                ))),
            }
        }
    }

    struct Maybe {
        text: bool,
    }

    impl<'de> Visitor<'de> for Maybe {
        type Value = Option<u64>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a non-negative integer of at most 2^53, or null")
        }
        fn visit_none<E: Error>(self) -> Result<Option<u64>, E> {
            Ok(None)
        }
        fn visit_unit<E: Error>(self) -> Result<Option<u64>, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Option<u64>, D::Error> {
            d.deserialize_any(Whole { text: self.text }).map(Some)
        }
    }

    /// A required count in a JSON body.
    pub fn one<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        d.deserialize_any(Whole { text: false })
    }

    /// An optional count in a JSON body (null is as absent).
    pub fn opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        d.deserialize_option(Maybe { text: false })
    }

    /// An optional count in a query string (digits).
    pub fn opt_text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        d.deserialize_option(Maybe { text: true })
    }
}

/// An event dated further ahead of `now_ms` than `max_ahead_ms` is refused:
/// it would move its partition's watermark past every real event, which
/// would all be late from then on.
pub fn check_not_ahead(ts_ms: i64, now_ms: i64, max_ahead_ms: i64) -> Result<(), DecodeError> {
    let ahead = ts_ms.saturating_sub(now_ms);
    if ahead > max_ahead_ms {
        return Err(DecodeError::Future {
            ahead_secs: ahead / 1000,
            max_secs: max_ahead_ms / 1000,
        });
    }
    Ok(())
}

fn invalid(field: &'static str, reason: impl Into<String>) -> DecodeError {
    DecodeError::Invalid {
        field,
        reason: reason.into(),
    }
}

/// Cost tags carried in `tags`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tags<'a> {
    pub team: Option<Cow<'a, str>>,
    pub environment: Option<Cow<'a, str>>,
    pub project: Option<Cow<'a, str>>,
}

/// Kind-specific fields, validated.
#[derive(Debug, Clone, PartialEq)]
pub enum Body<'a> {
    Inference {
        model: Cow<'a, str>,
        input_tokens: u64,
        output_tokens: u64,
        cached_input_tokens: u64,
        /// Input tokens written to the provider's prompt cache (part of
        /// `input_tokens`, like `cached_input_tokens`).
        cache_write_tokens: u64,
        /// Reasoning ("thinking") tokens: part of `output_tokens`.
        reasoning_tokens: u64,
        duration_ms: f64,
        status: Option<Cow<'a, str>>,
        /// What the provider billed, when the event says: kept instead of
        /// the price book's price.
        cost_usd: Option<f64>,
    },
    Training {
        model: Cow<'a, str>,
        gpu_type: Cow<'a, str>,
        gpu_count: u64,
        duration_hours: f64,
        gpu_utilization: Option<f64>,
        /// As for inference.
        cost_usd: Option<f64>,
    },
    Heartbeat {
        latency_ms: Option<f64>,
        gpu_type: Option<Cow<'a, str>>,
        gpu_utilization: Option<f64>,
        power_watts: Option<f64>,
        uptime_ratio: Option<f64>,
        proof_ok: Option<bool>,
    },
}

/// One validated event, borrowing from the message bytes where it can.
#[derive(Debug, Clone, PartialEq)]
pub struct Event<'a> {
    pub event_id: Cow<'a, str>,
    /// Event time, milliseconds since the Unix epoch (UTC).
    pub ts_ms: i64,
    pub tenant: Cow<'a, str>,
    pub tags: Tags<'a>,
    pub region: Option<Cow<'a, str>>,
    pub node_id: Option<Cow<'a, str>>,
    pub body: Body<'a>,
}

impl Event<'_> {
    pub fn kind(&self) -> Kind {
        match self.body {
            Body::Inference { .. } => Kind::Inference,
            Body::Training { .. } => Kind::Training,
            Body::Heartbeat { .. } => Kind::Heartbeat,
        }
    }

    pub fn model(&self) -> Option<&str> {
        match &self.body {
            Body::Inference { model, .. } | Body::Training { model, .. } => Some(model),
            Body::Heartbeat { .. } => None,
        }
    }
}

/// Limits applied by [`decode`].
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_message_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
        }
    }
}

/// Decode and validate one message read from a topic that carries `topic_kind`
/// events. An explicit `kind` field must agree with the topic.
pub fn decode<'a>(
    bytes: &'a [u8],
    topic_kind: Kind,
    limits: &Limits,
) -> Result<Event<'a>, DecodeError> {
    parse_wire(bytes, limits)?.validate(topic_kind)
}

/// Decode a message whose kind is given by its own `kind` field (HTTP ingest of
/// mixed kinds, tests). A message without `kind` is rejected.
pub fn decode_self_described<'a>(
    bytes: &'a [u8],
    limits: &Limits,
) -> Result<Event<'a>, DecodeError> {
    let wire = parse_wire(bytes, limits)?;
    let kind = match &wire.kind {
        None => return Err(DecodeError::Missing("kind")),
        Some(Text(k)) => Kind::parse(k).ok_or_else(|| DecodeError::UnknownKind(k.to_string()))?,
    };
    wire.validate(kind)
}

fn parse_wire<'a>(bytes: &'a [u8], limits: &Limits) -> Result<Wire<'a>, DecodeError> {
    if bytes.len() > limits.max_message_bytes {
        return Err(DecodeError::TooLarge {
            size: bytes.len(),
            max: limits.max_message_bytes,
        });
    }
    match fast::parse(bytes) {
        Some(wire) => Ok(wire),
        None => serde_json::from_slice(bytes).map_err(|e| DecodeError::Json(e.to_string())),
    }
}

/// The message as it is on the wire, before validation.
#[derive(Deserialize, Default, Debug, PartialEq)]
struct Wire<'a> {
    #[serde(borrow, default)]
    kind: Option<Text<'a>>,
    #[serde(borrow, default)]
    event_id: Option<Text<'a>>,
    #[serde(borrow, default)]
    ts: Option<Ts<'a>>,
    #[serde(borrow, default)]
    tenant: Option<Text<'a>>,
    #[serde(borrow, default)]
    tags: Option<Tags<'a>>,
    #[serde(default)]
    #[allow(dead_code)]
    metadata: Option<IgnoredAny>,
    #[serde(borrow, default, alias = "gen_ai.request.model")]
    model: Option<Text<'a>>,
    #[serde(borrow, default)]
    region: Option<Text<'a>>,
    #[serde(borrow, default)]
    node_id: Option<Text<'a>>,
    #[serde(default, alias = "gen_ai.usage.input_tokens")]
    input_tokens: Option<Num>,
    #[serde(default, alias = "gen_ai.usage.output_tokens")]
    output_tokens: Option<Num>,
    #[serde(default)]
    cached_input_tokens: Option<Num>,
    #[serde(default)]
    cache_write_tokens: Option<Num>,
    #[serde(default)]
    reasoning_tokens: Option<Num>,
    #[serde(default)]
    duration_ms: Option<Num>,
    #[serde(borrow, default)]
    status: Option<Text<'a>>,
    #[serde(borrow, default)]
    gpu_type: Option<Text<'a>>,
    #[serde(default)]
    gpu_count: Option<Num>,
    #[serde(default)]
    duration_hours: Option<Num>,
    #[serde(default)]
    gpu_utilization: Option<Num>,
    #[serde(default)]
    latency_ms: Option<Num>,
    #[serde(default)]
    power_watts: Option<Num>,
    #[serde(default)]
    uptime_ratio: Option<Num>,
    #[serde(default)]
    proof_ok: Option<bool>,
    #[serde(default)]
    cost_usd: Option<Num>,
}

/// Most GPU-hours one training event may hold (`gpu_count ×
/// duration_hours`): with the price book's bounded prices its cost, energy
/// and carbon stay finite numbers.
pub const MAX_GPU_HOURS: f64 = 1e9;

/// Longest inference request one event may hold, in milliseconds (as
/// many GPU-hours as [`MAX_GPU_HOURS`]): its embodied carbon stays finite.
pub const MAX_DURATION_MS: f64 = MAX_GPU_HOURS * 3_600_000.0;

/// Largest provider bill one event may carry (`cost_usd`), USD.
pub const MAX_COST_USD: f64 = 1e15;

/// Longest tenant or team name, in bytes.
pub const MAX_NAME_BYTES: usize = 128;

/// The rule for tenant and team names: 1 to [`MAX_NAME_BYTES`] ASCII
/// letters, digits, `.`, `_` and `-`, starting with a letter or a digit.
/// They are the parts of a decision's subject (`tenant=<t>/team=<x>`), of
/// file and metric labels, and of the tenant a read is scoped to, so they
/// hold no separator (`/`, `=`), no space, no control or look-alike
/// character. The error says what is wrong without echoing the name.
pub fn check_name(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    if s.len() > MAX_NAME_BYTES {
        return Err(format!(
            "is {} bytes, longer than {MAX_NAME_BYTES}",
            s.len()
        ));
    }
    if !s.as_bytes()[0].is_ascii_alphanumeric() {
        return Err("must start with an ASCII letter or digit".into());
    }
    if let Some(pos) = s
        .bytes()
        .position(|b| !(b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')))
    {
        return Err(format!(
            "has a character other than ASCII letters, digits, `.`, `_` and `-` at byte {pos}"
        ));
    }
    Ok(())
}

fn name<'a>(v: Option<Text<'a>>, field: &'static str) -> Result<Cow<'a, str>, DecodeError> {
    let s = required(v, field)?.0;
    check_name(&s).map_err(|why| invalid(field, why))?;
    Ok(s)
}

fn required<T>(v: Option<T>, field: &'static str) -> Result<T, DecodeError> {
    v.ok_or(DecodeError::Missing(field))
}

fn ident<'a>(v: Option<Text<'a>>, field: &'static str) -> Result<Cow<'a, str>, DecodeError> {
    let s = required(v, field)?.0;
    check_text(&s, field)?;
    Ok(s)
}

fn opt_ident<'a>(
    v: Option<Text<'a>>,
    field: &'static str,
) -> Result<Option<Cow<'a, str>>, DecodeError> {
    match v {
        Some(Text(s)) => {
            check_text(&s, field)?;
            Ok(Some(s))
        }
        None => Ok(None),
    }
}

fn check_text(s: &str, field: &'static str) -> Result<(), DecodeError> {
    if s.is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    if too_long(s) {
        return Err(invalid(
            field,
            format!("is longer than {MAX_ID_CHARS} characters"),
        ));
    }
    Ok(())
}

impl<'a> Wire<'a> {
    fn validate(self, topic_kind: Kind) -> Result<Event<'a>, DecodeError> {
        if let Some(Text(k)) = &self.kind {
            let found = Kind::parse(k).ok_or_else(|| DecodeError::UnknownKind(k.to_string()))?;
            if found != topic_kind {
                return Err(DecodeError::KindMismatch {
                    expected: topic_kind,
                    found,
                });
            }
        }
        let event_id = ident(self.event_id, "event_id")?;
        let ts_ms = required(self.ts, "ts")?.to_millis()?;
        let tenant = name(self.tenant, "tenant")?;
        let tags = self.tags.unwrap_or_default();
        if let Some(team) = &tags.team {
            check_name(team).map_err(|why| invalid("tags.team", why))?;
        }
        let region = opt_ident(self.region, "region")?;
        let node_id = opt_ident(self.node_id, "node_id")?;
        let body = match topic_kind {
            Kind::Inference => {
                let input_tokens =
                    required(self.input_tokens, "input_tokens")?.count("input_tokens")?;
                let output_tokens =
                    required(self.output_tokens, "output_tokens")?.count("output_tokens")?;
                let count = |v: Option<Num>, field| v.map_or(Ok(0), |n| n.count(field));
                let cached_input_tokens = count(self.cached_input_tokens, "cached_input_tokens")?;
                let cache_write_tokens = count(self.cache_write_tokens, "cache_write_tokens")?;
                let reasoning_tokens = count(self.reasoning_tokens, "reasoning_tokens")?;
                if cached_input_tokens > input_tokens {
                    return Err(invalid(
                        "cached_input_tokens",
                        format!(
                            "({cached_input_tokens}) is larger than input_tokens ({input_tokens})"
                        ),
                    ));
                }
                if cache_write_tokens > input_tokens - cached_input_tokens {
                    return Err(invalid(
                        "cache_write_tokens",
                        format!(
                            "({cache_write_tokens}) is larger than the input tokens not read from the cache ({})",
                            input_tokens - cached_input_tokens
                        ),
                    ));
                }
                if reasoning_tokens > output_tokens {
                    return Err(invalid(
                        "reasoning_tokens",
                        format!(
                            "({reasoning_tokens}) is larger than output_tokens ({output_tokens})"
                        ),
                    ));
                }
                Body::Inference {
                    model: ident(self.model, "model")?,
                    input_tokens,
                    output_tokens,
                    cached_input_tokens,
                    cache_write_tokens,
                    reasoning_tokens,
                    duration_ms: at_most(
                        required(self.duration_ms, "duration_ms")?.non_negative("duration_ms")?,
                        MAX_DURATION_MS,
                        "duration_ms",
                    )?,
                    status: self.status.map(|t| t.0),
                    cost_usd: opt_non_negative(self.cost_usd, "cost_usd")?
                        .map(|c| at_most(c, MAX_COST_USD, "cost_usd"))
                        .transpose()?,
                }
            }
            Kind::Training => {
                let gpu_count = required(self.gpu_count, "gpu_count")?.count("gpu_count")?;
                if gpu_count == 0 {
                    return Err(invalid("gpu_count", "must be at least 1"));
                }
                let duration_hours = required(self.duration_hours, "duration_hours")?
                    .non_negative("duration_hours")?;
                // Its price and energy are products of these: bounded, they stay finite.
                if gpu_count as f64 * duration_hours > MAX_GPU_HOURS {
                    return Err(invalid(
                        "duration_hours",
                        format!(
                            "× gpu_count is more than {MAX_GPU_HOURS:e} GPU-hours in one event"
                        ),
                    ));
                }
                Body::Training {
                    model: ident(self.model, "model")?,
                    gpu_type: ident(self.gpu_type, "gpu_type")?,
                    gpu_count,
                    duration_hours,
                    gpu_utilization: opt_ratio(self.gpu_utilization, "gpu_utilization")?,
                    cost_usd: opt_non_negative(self.cost_usd, "cost_usd")?
                        .map(|c| at_most(c, MAX_COST_USD, "cost_usd"))
                        .transpose()?,
                }
            }
            Kind::Heartbeat => {
                if self.cost_usd.is_some() {
                    return Err(invalid(
                        "cost_usd",
                        "heartbeats carry no cost (send it on the inference or training event)",
                    ));
                }
                if node_id.is_none() {
                    return Err(DecodeError::Missing("node_id"));
                }
                if region.is_none() {
                    return Err(DecodeError::Missing("region"));
                }
                Body::Heartbeat {
                    latency_ms: opt_non_negative(self.latency_ms, "latency_ms")?,
                    gpu_type: opt_ident(self.gpu_type, "gpu_type")?,
                    gpu_utilization: opt_ratio(self.gpu_utilization, "gpu_utilization")?,
                    power_watts: opt_non_negative(self.power_watts, "power_watts")?,
                    uptime_ratio: opt_ratio(self.uptime_ratio, "uptime_ratio")?,
                    proof_ok: self.proof_ok,
                }
            }
        };
        Ok(Event {
            event_id,
            ts_ms,
            tenant,
            tags,
            region,
            node_id,
            body,
        })
    }
}

fn at_most(x: f64, max: f64, field: &'static str) -> Result<f64, DecodeError> {
    if x > max {
        return Err(invalid(field, format!("is {x}, more than {max:e}")));
    }
    Ok(x)
}

fn opt_non_negative(v: Option<Num>, field: &'static str) -> Result<Option<f64>, DecodeError> {
    v.map(|n| n.non_negative(field)).transpose()
}

fn opt_ratio(v: Option<Num>, field: &'static str) -> Result<Option<f64>, DecodeError> {
    match v {
        None => Ok(None),
        Some(n) => {
            let x = n.non_negative(field)?;
            if x > 1.0 {
                return Err(invalid(
                    field,
                    format!("is {x}, expected a ratio between 0 and 1"),
                ));
            }
            Ok(Some(x))
        }
    }
}

/// Any JSON number, checked by the field that holds it.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Num {
    U(u64),
    I(i64),
    F(f64),
}

impl Num {
    fn as_f64(self) -> f64 {
        match self {
            Num::U(u) => u as f64,
            Num::I(i) => i as f64,
            Num::F(f) => f,
        }
    }

    /// A non-negative integer (a count of tokens or GPUs).
    fn count(self, field: &'static str) -> Result<u64, DecodeError> {
        match self {
            Num::U(u) if u <= 1 << 53 => Ok(u),
            Num::U(u) => Err(invalid(
                field,
                format!("is {u}, more than 2^53 (the largest integer JSON carries exactly)"),
            )),
            Num::I(i) => Err(invalid(
                field,
                format!("is {i}, expected a non-negative integer"),
            )),
            Num::F(f) if f.is_finite() && f >= 0.0 && f.fract() == 0.0 && f <= MAX_EXACT_INT => {
                Ok(f as u64)
            }
            Num::F(f) => Err(invalid(
                field,
                format!("is {f}, expected a non-negative integer"),
            )),
        }
    }

    fn non_negative(self, field: &'static str) -> Result<f64, DecodeError> {
        let x = self.as_f64();
        if !x.is_finite() {
            return Err(invalid(field, "must be a finite number"));
        }
        if x < 0.0 {
            return Err(invalid(
                field,
                format!("is {x}, expected a non-negative number"),
            ));
        }
        Ok(x)
    }
}

impl<'de> Deserialize<'de> for Num {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Num;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a number")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Num, E> {
                Ok(Num::U(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Num, E> {
                Ok(if v >= 0 { Num::U(v as u64) } else { Num::I(v) })
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Num, E> {
                Ok(Num::F(v))
            }
        }
        d.deserialize_any(V)
    }
}

/// A JSON string that borrows from the message when it has no escapes.
#[derive(Debug, PartialEq)]
struct Text<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

/// `ts` as found on the wire: epoch milliseconds or RFC 3339 text.
#[derive(Debug, PartialEq)]
enum Ts<'a> {
    Millis(Num),
    Text(Cow<'a, str>),
}

impl Ts<'_> {
    fn to_millis(&self) -> Result<i64, DecodeError> {
        match self {
            Ts::Millis(n) => {
                let ms = n.count("ts").map_err(|_| {
                    invalid(
                        "ts",
                        "must be epoch milliseconds (a non-negative integer) or RFC 3339 text",
                    )
                })?;
                i64::try_from(ms).map_err(|_| invalid("ts", "is out of range"))
            }
            Ts::Text(s) => parse_rfc3339_millis(s)
                .ok_or_else(|| invalid("ts", format!("`{s}` is not RFC 3339 date-time text"))),
        }
    }
}

/// Parse RFC 3339 (`2026-11-22T05:57:15.123Z`, `...+01:00`) to epoch millis.
pub fn parse_rfc3339_millis(s: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.timestamp_millis())
}

impl<'de: 'a, 'a> Deserialize<'de> for Ts<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Ts<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("epoch milliseconds or an RFC 3339 string")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Ts<'de>, E> {
                Ok(Ts::Millis(Num::U(v)))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Ts<'de>, E> {
                Ok(Ts::Millis(if v >= 0 {
                    Num::U(v as u64)
                } else {
                    Num::I(v)
                }))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Ts<'de>, E> {
                Ok(Ts::Millis(Num::F(v)))
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Ts<'de>, E> {
                Ok(Ts::Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Ts<'de>, E> {
                Ok(Ts::Text(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Tags<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Tags<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object of string tags")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Tags<'de>, A::Error> {
                let mut tags = Tags::default();
                while let Some(key) = map.next_key::<Text<'de>>()? {
                    let key = key.0;
                    let value: Cow<'de, str> =
                        map.next_value::<Text<'de>>().map(|t| t.0).map_err(|_| {
                            de::Error::custom(format_args!("tag `{key}` must be a string"))
                        })?;
                    if too_long(&value) {
                        return Err(de::Error::custom(format_args!(
                            "tag `{key}` is longer than {MAX_ID_CHARS} characters"
                        )));
                    }
                    let slot = match key.as_ref() {
                        "team" => &mut tags.team,
                        "environment" => &mut tags.environment,
                        "project" => &mut tags.project,
                        _ => continue,
                    };
                    if slot.is_some() {
                        return Err(de::Error::custom(format_args!("duplicate tag `{key}`")));
                    }
                    // An empty tag is as good as a missing one.
                    *slot = if value.is_empty() { None } else { Some(value) };
                }
                Ok(tags)
            }
        }
        d.deserialize_map(V)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
