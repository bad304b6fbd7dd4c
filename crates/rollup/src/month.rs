//! UTC months as the rollup tree names them (`date=YYYY-MM-DD` partitions,
//! `month_to_date`, the live ledger).

use chrono::{Datelike, TimeZone, Utc};

/// `YYYY-MM` of the UTC month holding `ms`.
///
/// ```
/// assert_eq!(tollgate_rollup::month_name(1_767_571_200_000), "2026-01");
/// ```
pub fn month_name(ms: i64) -> String {
    Utc.timestamp_millis_opt(ms)
        .single()
        .map(|t| t.format("%Y-%m").to_string())
        .unwrap_or_default()
}

/// Start (ms) of the UTC month holding `ms`.
///
/// ```
/// // 2026-01-05T00:00Z → 2026-01-01T00:00Z
/// assert_eq!(tollgate_rollup::month_start_ms(1_767_571_200_000), 1_767_225_600_000);
/// ```
pub fn month_start_ms(ms: i64) -> i64 {
    let Some(t) = Utc.timestamp_millis_opt(ms).single() else {
        return ms;
    };
    Utc.with_ymd_and_hms(t.year(), t.month(), 1, 0, 0, 0)
        .single()
        .map_or(ms, |m| m.timestamp_millis())
}
