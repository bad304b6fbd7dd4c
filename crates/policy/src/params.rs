//! `$name` parameters in policy SQL.
//!
//! Configured parameters (`[params]` in the policy file, overridden from the
//! pipeline config) are constant for the life of the process: they are
//! written into the SQL as literals before it is planned, once. Window
//! parameters ([`WINDOW_PARAMS`]) change with every window and stay
//! placeholders in the plan, bound per evaluation. Any other `$name` is an
//! error at load.

use std::collections::BTreeMap;

use datafusion::scalar::ScalarValue;

/// Bound for every evaluation, from the closed window.
pub const WINDOW_PARAMS: &[(&str, &str)] = &[
    (
        "window_start",
        "timestamp(ms, UTC): window start (inclusive)",
    ),
    ("window_end", "timestamp(ms, UTC): window end (exclusive)"),
    ("window_start_ms", "int64: window start, epoch milliseconds"),
    ("window_end_ms", "int64: window end, epoch milliseconds"),
    (
        "window_date",
        "string YYYY-MM-DD: UTC date of the window start (matches history.date)",
    ),
    (
        "month_start",
        "timestamp(ms, UTC): first instant of the window's UTC month",
    ),
    (
        "month_start_date",
        "string YYYY-MM-DD: first day of the window's UTC month",
    ),
    ("kind", "string: inference, training or heartbeat"),
    (
        "source",
        "string: <topic>/<partition> the window was kept for",
    ),
];

/// Window parameters with few distinct values (one per kind, one per
/// partition, one per month): a plan that reads no other window parameter
/// is kept and reused, keyed by their values.
pub const PLAN_KEY_PARAMS: [&str; 4] = ["kind", "source", "month_start", "month_start_date"];

pub fn is_window_param(name: &str) -> bool {
    WINDOW_PARAMS.iter().any(|(n, _)| *n == name)
}

/// Values of [`WINDOW_PARAMS`] for one window.
pub fn window_values(
    kind: &str,
    source: &str,
    start_ms: i64,
    end_ms: i64,
) -> Vec<(&'static str, ScalarValue)> {
    let ts = |ms: i64| ScalarValue::TimestampMillisecond(Some(ms), Some("UTC".into()));
    let start = chrono::DateTime::from_timestamp_millis(start_ms).unwrap_or_default();
    let date = start.date_naive();
    let month_first = date.with_day0(0).unwrap_or(date);
    let month_start_ms = month_first
        .and_hms_opt(0, 0, 0)
        .map(|t| t.and_utc().timestamp_millis())
        .unwrap_or(start_ms);
    vec![
        ("window_start", ts(start_ms)),
        ("window_end", ts(end_ms)),
        ("window_start_ms", ScalarValue::Int64(Some(start_ms))),
        ("window_end_ms", ScalarValue::Int64(Some(end_ms))),
        (
            "window_date",
            ScalarValue::Utf8(Some(date.format("%Y-%m-%d").to_string())),
        ),
        ("month_start", ts(month_start_ms)),
        (
            "month_start_date",
            ScalarValue::Utf8(Some(month_first.format("%Y-%m-%d").to_string())),
        ),
        ("kind", ScalarValue::Utf8(Some(kind.to_owned()))),
        ("source", ScalarValue::Utf8(Some(source.to_owned()))),
    ]
}

use chrono::Datelike;

/// A configured parameter as a SQL literal.
pub fn literal(name: &str, v: &toml::Value) -> Result<String, String> {
    Ok(match v {
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(f) if f.is_finite() => format!("CAST({f:?} AS DOUBLE)"),
        toml::Value::Float(_) => return Err(format!("parameter {name}: not a finite number")),
        toml::Value::Boolean(b) => if *b { "TRUE" } else { "FALSE" }.to_owned(),
        toml::Value::String(s) => format!("'{}'", s.replace('\'', "''")),
        toml::Value::Array(items) if !items.is_empty() => {
            let lits: Result<Vec<_>, _> = items
                .iter()
                .map(|i| match i {
                    toml::Value::Array(_) | toml::Value::Table(_) => {
                        Err(format!("parameter {name}: lists must hold plain values"))
                    }
                    other => literal(name, other),
                })
                .collect();
            format!("({})", lits?.join(", "))
        }
        toml::Value::Array(_) => return Err(format!("parameter {name}: empty list")),
        _ => {
            return Err(format!(
                "parameter {name}: use a number, string, boolean or list"
            ))
        }
    })
}

/// Replace configured `$name`s in `sql` by literals. Quoted strings,
/// quoted identifiers and comments are left alone.
pub fn substitute(sql: &str, params: &BTreeMap<String, toml::Value>) -> Result<String, String> {
    let b = sql.as_bytes();
    let mut out = String::with_capacity(sql.len());
    let mut i = 0;
    let mut copied = 0;
    while i < b.len() {
        match b[i] {
            q @ (b'\'' | b'"') => {
                i += 1;
                while i < b.len() && b[i] != q {
                    i += 1;
                }
                i += 1;
            }
            b'-' if b.get(i + 1) == Some(&b'-') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i + 1 < b.len() && !(b[i] == b'*' && b[i + 1] == b'/') {
                    i += 1;
                }
                i += 2;
            }
            b'$' => {
                let start = i + 1;
                let mut end = start;
                while end < b.len() && (b[end].is_ascii_alphanumeric() || b[end] == b'_') {
                    end += 1;
                }
                let name = &sql[start..end];
                if name.is_empty() || name.as_bytes()[0].is_ascii_digit() {
                    return Err(format!(
                        "`${name}`: positional parameters are not supported; use a named `$name` declared under [params]"
                    ));
                }
                if let Some(v) = params.get(name) {
                    out.push_str(&sql[copied..i]);
                    out.push_str(&literal(name, v)?);
                    copied = end;
                } else if !is_window_param(name) {
                    let known: Vec<&str> = params
                        .keys()
                        .map(String::as_str)
                        .chain(WINDOW_PARAMS.iter().map(|(n, _)| *n))
                        .collect();
                    return Err(format!(
                        "unknown parameter `${name}`; declare it under [params] (known: {})",
                        known.join(", ")
                    ));
                }
                i = end;
            }
            _ => i += 1,
        }
    }
    out.push_str(&sql[copied.min(sql.len())..]);
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn params() -> BTreeMap<String, toml::Value> {
        toml::from_str("limit = 100.5\nname = \"o'k\"\nregions = [\"a\", \"b\"]\nn = 3").unwrap()
    }

    #[test]
    fn substitutes_configured_and_keeps_window_params() {
        let sql = "SELECT '$limit' AS s, $limit AS l, $n, $name -- $nope\nFROM t WHERE r IN $regions AND ts >= $window_start /* $x */";
        assert_eq!(
            substitute(sql, &params()).unwrap(),
            "SELECT '$limit' AS s, CAST(100.5 AS DOUBLE) AS l, 3, 'o''k' -- $nope\nFROM t WHERE r IN ('a', 'b') AND ts >= $window_start /* $x */"
        );
    }

    #[test]
    fn unknown_and_positional_parameters_are_errors() {
        let e = substitute("SELECT $limt", &params()).unwrap_err();
        assert!(
            e.contains("unknown parameter `$limt`") && e.contains("limit"),
            "{e}"
        );
        assert!(substitute("SELECT $1", &params())
            .unwrap_err()
            .contains("positional"));
    }

    #[test]
    fn window_values_name_the_month() {
        // 2026-11-22T10:00:00Z
        let v = window_values("inference", "t/0", 1_795_341_600_000, 1_795_341_660_000);
        let get = |n: &str| v.iter().find(|(k, _)| *k == n).unwrap().1.to_string();
        assert_eq!(get("month_start_date"), "2026-11-01");
        assert_eq!(get("window_date"), "2026-11-22");
        assert_eq!(
            v.iter().find(|(k, _)| *k == "month_start").unwrap().1,
            ScalarValue::TimestampMillisecond(Some(1_793_491_200_000), Some("UTC".into()))
        );
        assert_eq!(v.len(), WINDOW_PARAMS.len());
    }
}
