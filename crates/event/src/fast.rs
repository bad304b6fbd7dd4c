//! A strict single-pass reader for the common shape of an event: one flat
//! JSON object whose values are strings without escapes, numbers, booleans,
//! `null`, and a `tags` object of such strings. Anything else — escapes,
//! nested values under unknown keys, duplicate keys, unusual numbers, any
//! syntax error — makes it give up (`None`), and the message is decoded by
//! `serde_json`, which also produces the error text. So this is purely an
//! optimisation: whenever it answers, it answers what `serde_json` would
//! (checked by the differential test in `tests.rs`).

use std::borrow::Cow;

use crate::{too_long, Num, Tags, Text, Ts, Wire};

struct Reader<'a> {
    /// The whole message, checked as UTF-8 once up front, so strings are
    /// sliced out of it without a check each.
    s: &'a str,
    b: &'a [u8],
    i: usize,
}

/// Powers of ten exact in f64 (up to 10^15 is all the fast path needs).
const POW10: [f64; 16] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
];

/// Where a string's plain run ends: the index of the first `"`, `\` or
/// control character (below 0x20), eight bytes at a time.
pub(crate) fn string_stop(b: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let mut i = 0;
    while let Some(chunk) = b.get(i..i + 8) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let x = u64::from_le_bytes(word);
        let quote = x ^ (ONES * u64::from(b'"'));
        let slash = x ^ (ONES * u64::from(b'\\'));
        // A byte's high bit is set when it is zero (below 0x20 for `x`); a
        // borrow can only mark bytes after the first true match, and the
        // first one is what we take.
        let hit = ((quote.wrapping_sub(ONES) & !quote)
            | (slash.wrapping_sub(ONES) & !slash)
            | (x.wrapping_sub(ONES * 0x20) & !x))
            & HIGH;
        if hit != 0 {
            return Some(i + (hit.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    let tail = b.get(i..)?;
    let at = tail
        .iter()
        .position(|&c| c == b'"' || c == b'\\' || c < 0x20)?;
    Some(i + at)
}

impl<'a> Reader<'a> {
    fn ws(&mut self) {
        while let Some(&c) = self.b.get(self.i) {
            if matches!(c, b' ' | b'\t' | b'\n' | b'\r') {
                self.i += 1;
            } else {
                break;
            }
        }
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        self.ws();
        if self.peek()? == c {
            self.i += 1;
            Some(())
        } else {
            None
        }
    }

    /// A string without escapes or control characters, borrowed.
    fn string(&mut self) -> Option<&'a str> {
        let (start, end) = self.string_span()?;
        // Both ends are next to an ASCII quote, so on character boundaries.
        self.s.get(start..end)
    }

    /// The bytes of a string without escapes or control characters (keys
    /// are matched against ASCII names as bytes).
    fn raw_string(&mut self) -> Option<&'a [u8]> {
        let (start, end) = self.string_span()?;
        self.b.get(start..end)
    }

    /// Where the next string's contents start and end.
    fn string_span(&mut self) -> Option<(usize, usize)> {
        self.ws();
        if self.peek()? != b'"' {
            return None;
        }
        let start = self.i + 1;
        let rest = self.b.get(start..)?;
        let len = string_stop(rest)?;
        if rest[len] != b'"' {
            return None;
        }
        self.i = start + len + 1;
        Some((start, start + len))
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        if self.b.get(self.i..self.i + word.len())? == word {
            self.i += word.len();
            Some(())
        } else {
            None
        }
    }

    /// One or more decimal digits.
    fn digits(&mut self) -> Option<()> {
        let start = self.i;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.i += 1;
        }
        (self.i > start).then_some(())
    }

    /// A JSON number, strictly by the grammar, as serde_json would type it.
    fn number(&mut self) -> Option<Num> {
        self.ws();
        let start = self.i;
        let neg = self.peek()? == b'-';
        if neg {
            self.i += 1;
        }
        let int_start = self.i;
        let mut mag: u64 = 0;
        match self.peek()? {
            b'0' => self.i += 1,
            b'1'..=b'9' => {
                while let Some(d @ b'0'..=b'9') = self.peek() {
                    // 19 digits always fit in a u64; longer ones go to serde_json.
                    if self.i - int_start >= 19 {
                        return None;
                    }
                    mag = mag * 10 + u64::from(d - b'0');
                    self.i += 1;
                }
            }
            _ => return None,
        }
        let mut float = false;
        // `int.frac` as one integer over 10^frac_digits, while it stays exact.
        let (mut fraction, mut frac_digits) = (mag, 0usize);
        if self.peek() == Some(b'.') {
            self.i += 1;
            let frac_start = self.i;
            while let Some(d @ b'0'..=b'9') = self.peek() {
                // Wraps only past 15 digits, where the fast path is not taken.
                fraction = fraction.wrapping_mul(10).wrapping_add(u64::from(d - b'0'));
                self.i += 1;
            }
            frac_digits = self.i - frac_start;
            if frac_digits == 0 {
                return None;
            }
            float = true;
        }
        let mut exponent = false;
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.i += 1;
            }
            self.digits()?;
            float = true;
            exponent = true;
        }
        // Fewer than 16 significant digits and no exponent: the integer and
        // the power of ten are exact in f64, so one division is correctly
        // rounded, the same value the full parser gives (Clinger's fast path).
        if float && !exponent && self.i - int_start - 1 <= 15 {
            let x = fraction as f64 / POW10[frac_digits];
            return Some(Num::F(if neg { -x } else { x }));
        }
        if float {
            let x: f64 = self.s.get(start..self.i)?.parse().ok()?;
            return x.is_finite().then_some(Num::F(x));
        }
        match (neg, mag) {
            (false, m) => Some(Num::U(m)),
            (true, 0) => None,
            (true, m) => Some(Num::I(0i64.checked_sub_unsigned(m)?)),
        }
    }

    /// `null` → `Ok(None)`; otherwise the value read by `f`.
    fn nullable<T>(&mut self, f: impl FnOnce(&mut Self) -> Option<T>) -> Option<Option<T>> {
        self.ws();
        if self.peek()? == b'n' {
            self.literal(b"null")?;
            return Some(None);
        }
        f(self).map(Some)
    }

    fn text(&mut self) -> Option<Option<Text<'a>>> {
        self.nullable(|r| r.string().map(|s| Text(Cow::Borrowed(s))))
    }

    fn num(&mut self) -> Option<Option<Num>> {
        self.nullable(Self::number)
    }

    fn ts(&mut self) -> Option<Option<Ts<'a>>> {
        self.nullable(|r| match r.peek()? {
            b'"' => r.string().map(|s| Ts::Text(Cow::Borrowed(s))),
            _ => r.number().map(Ts::Millis),
        })
    }

    fn boolean(&mut self) -> Option<Option<bool>> {
        self.nullable(|r| match r.peek()? {
            b't' => r.literal(b"true").map(|()| true),
            b'f' => r.literal(b"false").map(|()| false),
            _ => None,
        })
    }

    /// A scalar under a key nobody reads; nested values give up.
    fn skip_scalar(&mut self) -> Option<()> {
        self.ws();
        match self.peek()? {
            b'"' => self.string().map(drop),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            b'-' | b'0'..=b'9' => self.number().map(drop),
            _ => None,
        }
    }

    fn tags(&mut self) -> Option<Option<Tags<'a>>> {
        self.nullable(|r| {
            r.eat(b'{')?;
            let mut tags = Tags::default();
            let mut seen = [false; 3];
            r.ws();
            if r.peek()? == b'}' {
                r.i += 1;
                return Some(tags);
            }
            loop {
                let key = r.raw_string()?;
                r.eat(b':')?;
                let value = r.string()?;
                if too_long(value) {
                    return None;
                }
                let slot = match key {
                    b"team" => Some(0),
                    b"environment" => Some(1),
                    b"project" => Some(2),
                    _ => None,
                };
                if let Some(k) = slot {
                    if std::mem::replace(&mut seen[k], true) {
                        return None;
                    }
                    let v = (!value.is_empty()).then_some(Cow::Borrowed(value));
                    match k {
                        0 => tags.team = v,
                        1 => tags.environment = v,
                        _ => tags.project = v,
                    }
                }
                r.ws();
                match r.peek()? {
                    b',' => r.i += 1,
                    b'}' => {
                        r.i += 1;
                        return Some(tags);
                    }
                    _ => return None,
                }
            }
        })
    }
}

/// Read the common shape of an event, or `None` to let serde_json decide
/// (invalid UTF-8 included: serde_json names where it is).
pub(crate) fn parse(b: &[u8]) -> Option<Wire<'_>> {
    let s = std::str::from_utf8(b).ok()?;
    let mut r = Reader { s, b, i: 0 };
    let mut w = Wire::default();
    let mut seen = 0u32;
    r.eat(b'{')?;
    r.ws();
    if r.peek()? == b'}' {
        r.i += 1;
    } else {
        loop {
            let key = r.raw_string()?;
            r.eat(b':')?;
            // Each known field (aliases share their field's bit) may appear once.
            let mut bit = |n: u32| -> Option<()> {
                if seen & (1 << n) != 0 {
                    return None;
                }
                seen |= 1 << n;
                Some(())
            };
            // One known field: its bit (aliases share it), its slot, its reader.
            macro_rules! set {
                ($n:expr, $slot:expr, $read:expr) => {{
                    bit($n)?;
                    $slot = $read?;
                }};
            }
            match key {
                b"kind" => set!(0, w.kind, r.text()),
                b"event_id" => set!(1, w.event_id, r.text()),
                b"ts" => set!(2, w.ts, r.ts()),
                b"tenant" => set!(3, w.tenant, r.text()),
                b"tags" => set!(4, w.tags, r.tags()),
                b"model" | b"gen_ai.request.model" => set!(5, w.model, r.text()),
                b"region" => set!(6, w.region, r.text()),
                b"node_id" => set!(7, w.node_id, r.text()),
                b"input_tokens" | b"gen_ai.usage.input_tokens" => set!(8, w.input_tokens, r.num()),
                b"output_tokens" | b"gen_ai.usage.output_tokens" => {
                    set!(9, w.output_tokens, r.num())
                }
                b"cached_input_tokens" => set!(10, w.cached_input_tokens, r.num()),
                b"duration_ms" => set!(11, w.duration_ms, r.num()),
                b"status" => set!(12, w.status, r.text()),
                b"gpu_type" => set!(13, w.gpu_type, r.text()),
                b"gpu_count" => set!(14, w.gpu_count, r.num()),
                b"duration_hours" => set!(15, w.duration_hours, r.num()),
                b"gpu_utilization" => set!(16, w.gpu_utilization, r.num()),
                b"latency_ms" => set!(17, w.latency_ms, r.num()),
                b"power_watts" => set!(18, w.power_watts, r.num()),
                b"uptime_ratio" => set!(19, w.uptime_ratio, r.num()),
                b"proof_ok" => set!(20, w.proof_ok, r.boolean()),
                b"cost_usd" => set!(22, w.cost_usd, r.num()),
                b"cache_write_tokens" => set!(23, w.cache_write_tokens, r.num()),
                b"reasoning_tokens" => set!(24, w.reasoning_tokens, r.num()),
                b"metadata" => {
                    bit(21)?;
                    r.skip_scalar()?;
                }
                // Unknown keys: scalars only here.
                _ => r.skip_scalar()?,
            }
            r.ws();
            match r.peek()? {
                b',' => r.i += 1,
                b'}' => {
                    r.i += 1;
                    break;
                }
                _ => return None,
            }
        }
    }
    r.ws();
    (r.i == b.len()).then_some(w)
}
