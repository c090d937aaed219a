//! The deployment's local time: China Standard Time, shown and parsed.

use chrono::{DateTime, FixedOffset, NaiveDateTime, Offset, TimeZone, Utc};

/// China Standard Time, the deployment's local time.
pub fn cst() -> FixedOffset {
    const EIGHT_HOURS: i32 = 8 * 3600;
    // Within ±24 h, so always Some; UTC is the fallback the type needs.
    FixedOffset::east_opt(EIGHT_HOURS).unwrap_or(Utc.fix())
}

/// `2026-11-26 21:30:05.123 +08:00`.
pub fn format_time(t: &DateTime<Utc>) -> String {
    t.with_timezone(&cst())
        .format("%Y-%m-%d %H:%M:%S%.3f %:z")
        .to_string()
}

/// A `datetime-local` form value (`2026-11-26T08:30`, seconds optional),
/// read as China Standard Time.
pub fn parse_local_time(s: &str) -> Option<DateTime<Utc>> {
    let naive = NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M")
        .or_else(|_| NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S"))
        .ok()?;
    cst()
        .from_local_datetime(&naive)
        .single()
        .map(|t| t.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_times_are_china_standard_time() {
        let t = parse_local_time("2026-11-26T08:30").unwrap();
        assert_eq!(t.to_rfc3339(), "2026-11-26T00:30:00+00:00");
        assert!(parse_local_time("2026-11-26T08:30:15").is_some());
        assert!(parse_local_time("yesterday").is_none());
    }
}
