//! Times as the Defender APIs write them: UTC, `Z`, 0 to 7 fraction digits with trailing zeros
//! trimmed. Internally a time is a count of 100 ns ticks since the Unix epoch (the APIs' own
//! precision), so that a time written out and parsed back is the same number.
//!
//! Stored times (created, last update) are multiples of 1/300 s, as SQL `datetime` rounds them
//! (`.0733333`, `.29`); event times use the full 100 ns precision.

use chrono::{DateTime, NaiveDate, Utc};

pub(crate) const TICKS_PER_SECOND: i64 = 10_000_000;
/// Stored times are multiples of 1/300 s: "units".
pub(crate) const UNITS_PER_SECOND: i64 = 300;
/// .NET ticks (since 0001-01-01) at the Unix epoch: MDE alert ids embed them.
const DOTNET_EPOCH_TICKS: i64 = 621_355_968_000_000_000;

/// Ticks of a number of 1/300 s units, rounded to the nearest tick (as SQL rounds).
pub(crate) fn units_to_ticks(units: i64) -> i64 {
    let seconds = units.div_euclid(UNITS_PER_SECOND);
    let rest = units.rem_euclid(UNITS_PER_SECOND);
    seconds * TICKS_PER_SECOND + (rest * TICKS_PER_SECOND + UNITS_PER_SECOND / 2) / UNITS_PER_SECOND
}

pub(crate) fn from_datetime(time: DateTime<Utc>) -> i64 {
    time.timestamp() * TICKS_PER_SECOND + i64::from(time.timestamp_subsec_nanos() / 100)
}

pub(crate) fn now() -> i64 {
    from_datetime(Utc::now())
}

/// The first 1/300 s boundary at or after `ticks`.
pub(crate) fn ceil_to_unit(ticks: i64) -> i64 {
    let seconds = ticks.div_euclid(TICKS_PER_SECOND);
    let rest = ticks.rem_euclid(TICKS_PER_SECOND);
    // Smallest unit count whose tick value is >= rest.
    let mut units = rest * UNITS_PER_SECOND / TICKS_PER_SECOND;
    while units_to_ticks(units) < rest {
        units += 1;
    }
    seconds * TICKS_PER_SECOND + units_to_ticks(units)
}

/// `2026-01-01T00:00:00.0733333Z`: fraction trimmed of trailing zeros, absent when zero.
pub(crate) fn format(ticks: i64) -> String {
    let seconds = ticks.div_euclid(TICKS_PER_SECOND);
    let fraction = ticks.rem_euclid(TICKS_PER_SECOND);
    let date = DateTime::from_timestamp(seconds, 0).unwrap_or_default();
    let mut text = date.format("%Y-%m-%dT%H:%M:%S").to_string();
    if fraction != 0 {
        let digits = format!("{fraction:07}");
        text.push('.');
        text.push_str(digits.trim_end_matches('0'));
    }
    text.push('Z');
    text
}

/// Graph's `innerError.date`: no fraction, no zone.
pub(crate) fn format_inner_error_date(time: DateTime<Utc>) -> String {
    time.format("%Y-%m-%dT%H:%M:%S").to_string()
}

/// An OData `DateTimeOffset` literal (`2020-06-03T18:04:29.4633333Z`, any fraction length up to
/// 9 digits, `Z` or `±hh:mm`) or a bare date (`2018-11-22`, midnight UTC, as MDE's examples use).
pub(crate) fn parse_literal(text: &str) -> Option<i64> {
    if text.len() == 10 {
        let date = NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()?;
        return Some(from_datetime(date.and_hms_opt(0, 0, 0)?.and_utc()));
    }
    let parsed = DateTime::parse_from_rfc3339(text).ok()?;
    Some(from_datetime(parsed.with_timezone(&Utc)))
}

pub(crate) fn dotnet_ticks(ticks: i64) -> i64 {
    ticks + DOTNET_EPOCH_TICKS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_fractions_look_like_sql_datetime() {
        let base = parse_literal("2026-01-01T00:00:00Z").unwrap();
        assert_eq!(
            format(base + units_to_ticks(1)),
            "2026-01-01T00:00:00.0033333Z"
        );
        assert_eq!(
            format(base + units_to_ticks(2)),
            "2026-01-01T00:00:00.0066667Z"
        );
        assert_eq!(format(base + units_to_ticks(87)), "2026-01-01T00:00:00.29Z");
        assert_eq!(format(base + units_to_ticks(300)), "2026-01-01T00:00:01Z");
        assert_eq!(
            format(base + units_to_ticks(-1)),
            "2025-12-31T23:59:59.9966667Z"
        );
    }

    #[test]
    fn formats_and_parses_back_every_fraction_length() {
        for text in [
            "2020-06-03T18:04:29.4633333Z",
            "2020-06-03T18:04:29.29Z",
            "2020-06-03T18:04:29.15034Z",
            "2020-06-03T18:04:59Z",
            "2020-06-03T18:04:29.1Z",
        ] {
            assert_eq!(format(parse_literal(text).unwrap()), text);
        }
        assert_eq!(
            parse_literal("2020-06-03T20:04:29+02:00"),
            parse_literal("2020-06-03T18:04:29Z")
        );
        assert_eq!(
            parse_literal("2018-11-22"),
            parse_literal("2018-11-22T00:00:00Z")
        );
        assert_eq!(parse_literal("2018-11-22T00:00:00"), None);
        assert_eq!(parse_literal("yesterday"), None);
    }

    #[test]
    fn ceil_to_unit_lands_on_a_stored_time() {
        let base = parse_literal("2026-01-01T00:00:00Z").unwrap();
        assert_eq!(ceil_to_unit(base), base);
        assert_eq!(ceil_to_unit(base + 1), base + units_to_ticks(1));
        assert_eq!(
            ceil_to_unit(base + units_to_ticks(299) + 1),
            base + TICKS_PER_SECOND
        );
    }

    #[test]
    fn dotnet_ticks_match_the_documented_alert_id() {
        // da637472900382838869 is 2021-01-26T20:33:58.2838869Z.
        let ticks = parse_literal("2021-01-26T20:33:58.2838869Z").unwrap();
        assert_eq!(dotnet_ticks(ticks), 637_472_900_382_838_869);
    }
}
