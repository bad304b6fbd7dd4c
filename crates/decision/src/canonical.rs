//! Canonical JSON in the style of RFC 8785 (JCS): object members sorted by
//! their UTF-16 code units, no insignificant whitespace, strings escaped as
//! `serde_json` escapes them (which is what JCS prescribes), and floating
//! point numbers in the ECMAScript shortest round-trip form.
//!
//! One deviation, on purpose: integers that fit `i64`/`u64` are written
//! exactly, even above 2^53 where JCS would round them through a double.
//! Token counts are integers and must never be rounded.

use serde_json::{Number, Value};
use std::cmp::Ordering;

/// The canonical serialization of `value`.
pub fn to_string(value: &Value) -> String {
    let mut out = String::with_capacity(256);
    write(value, &mut out);
    out
}

/// Append the canonical serialization of `value` to `out`.
pub fn write(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => number(n, out),
        Value::String(s) => string(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => write_map(map, out),
    }
}

/// Append the canonical serialization of a JSON object.
pub fn write_map(map: &serde_json::Map<String, Value>, out: &mut String) {
    let mut members: Vec<(&String, &Value)> = map.iter().collect();
    members.sort_by(|a, b| utf16_cmp(a.0, b.0));
    out.push('{');
    for (i, (k, v)) in members.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        string(k, out);
        out.push(':');
        write(v, out);
    }
    out.push('}');
}

fn utf16_cmp(a: &str, b: &str) -> Ordering {
    if a.is_ascii() && b.is_ascii() {
        return a.cmp(b);
    }
    a.encode_utf16().cmp(b.encode_utf16())
}

/// Append `s` as a canonical JSON string.
pub fn string(s: &str, out: &mut String) {
    if !s.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\') {
        out.push('"');
        out.push_str(s);
        out.push('"');
        return;
    }
    // serde_json escapes exactly `"`, `\` and control characters, with the
    // short forms \b \f \n \r \t and lowercase \u00xx otherwise: JCS's rules.
    // Serializing a &str cannot fail.
    out.push_str(&serde_json::to_string(s).unwrap_or_default());
}

fn number(n: &Number, out: &mut String) {
    if let Some(i) = n.as_i64() {
        out.push_str(&i.to_string());
    } else if let Some(u) = n.as_u64() {
        out.push_str(&u.to_string());
    } else if let Some(f) = n.as_f64() {
        es_number(f, out);
    }
}

/// ECMAScript `Number::toString` for a finite double (JSON has no others).
pub fn es_number(f: f64, out: &mut String) {
    if f == 0.0 || !f.is_finite() {
        // -0 serializes as 0; non-finite numbers cannot occur in JSON.
        out.push('0');
        return;
    }
    if f < 0.0 {
        out.push('-');
    }
    let mut buf = ryu::Buffer::new();
    let shortest = buf.format_finite(f.abs());
    // Split ryu's output into significant digits and a decimal exponent `n`
    // such that value = 0.d1d2d3... × 10^n (ECMAScript's k digits and n).
    let (mantissa, exp) = match shortest.split_once('e') {
        Some((m, e)) => (m, e.parse::<i32>().unwrap_or(0)),
        None => (shortest, 0),
    };
    let (int_part, frac_part) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let frac_part = frac_part.trim_end_matches('0');
    let mut digits = String::with_capacity(int_part.len() + frac_part.len());
    digits.push_str(int_part);
    digits.push_str(frac_part);
    let mut n = exp + int_part.len() as i32;
    let leading = digits.len() - digits.trim_start_matches('0').len();
    n -= leading as i32;
    let digits = digits.trim_matches('0');
    let k = digits.len() as i32;
    if k <= n && n <= 21 {
        out.push_str(digits);
        out.extend(std::iter::repeat_n('0', (n - k) as usize));
    } else if 0 < n && n <= 21 {
        out.push_str(&digits[..n as usize]);
        out.push('.');
        out.push_str(&digits[n as usize..]);
    } else if -6 < n && n <= 0 {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', (-n) as usize));
        out.push_str(digits);
    } else {
        out.push_str(&digits[..1]);
        if k > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        out.push('e');
        out.push(if n > 0 { '+' } else { '-' });
        out.push_str(&(n - 1).abs().to_string());
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn es(f: f64) -> String {
        let mut s = String::new();
        es_number(f, &mut s);
        s
    }

    #[test]
    fn numbers_follow_ecmascript() {
        // Vectors from RFC 8785 appendix B and ECMAScript's Number::toString.
        let cases: &[(f64, &str)] = &[
            (0.0, "0"),
            (-0.0, "0"),
            (1.0, "1"),
            (-1.5, "-1.5"),
            (0.1 + 0.2, "0.30000000000000004"),
            (1e21, "1e+21"),
            (1e20, "100000000000000000000"),
            (123456789012345680000.0, "123456789012345680000"),
            (1e-6, "0.000001"),
            (1e-7, "1e-7"),
            (1.5e-7, "1.5e-7"),
            (5e-324, "5e-324"),
            (1.7976931348623157e308, "1.7976931348623157e+308"),
            (9007199254740992.0, "9007199254740992"),
            (295147905179352830000.0, "295147905179352830000"),
            (0.000001234, "0.000001234"),
            (333333333.3333333, "333333333.3333333"),
            (4.5, "4.5"),
            (2e-3, "0.002"),
        ];
        for (f, want) in cases {
            assert_eq!(es(*f), *want, "{f:e}");
        }
    }

    #[test]
    fn members_are_sorted_by_utf16_and_whitespace_is_gone() {
        let v: Value = serde_json::from_str(
            r#"{ "b": [1, 2.5, "x\n"], "a": {"\ufb33": 3, "\u20ac": 1, "\ud83d\ude00": 2, "z": null}, "A": true }"#,
        )
        .unwrap();
        assert_eq!(
            to_string(&v),
            "{\"A\":true,\"a\":{\"z\":null,\"€\":1,\"😀\":2,\"\u{fb33}\":3},\"b\":[1,2.5,\"x\\n\"]}"
        );
    }

    #[test]
    fn canonical_form_is_a_fixed_point() {
        let v = json!({"cost": 0.1 + 0.7, "big": u64::MAX, "neg": -3, "tiny": 1e-9, "s": "é\u{1}"});
        let once = to_string(&v);
        let again = to_string(&serde_json::from_str(&once).unwrap());
        assert_eq!(once, again);
        assert!(once.contains("\\u0001"), "{once}");
    }
}
