//! The `Timespan` of `runHuntingQuery` (reference §12): ISO 8601 `start/end`, `duration/end`,
//! `start/duration`, a duration alone (back from now) or a start alone (up to now); absent, the
//! last 30 days. Durations take weeks, days, hours, minutes and seconds (`P30D`, `PT12H`,
//! `P1DT2H30M`, `P2W`); years and months have no fixed length and are refused.

use crate::defender::time::{self, TICKS_PER_SECOND};

const DAY: i64 = 86_400 * TICKS_PER_SECOND;

/// The default window: 30 days.
pub(crate) const DEFAULT_DAYS: i64 = 30;

/// `[lo, hi]` in ticks, or the message of the 400.
pub(crate) fn window(timespan: Option<&str>, now: i64) -> Result<(i64, i64), String> {
    let Some(text) = timespan.map(str::trim).filter(|text| !text.is_empty()) else {
        return Ok((now - DEFAULT_DAYS * DAY, now));
    };
    let invalid = || {
        format!(
            "The Timespan '{text}' is not valid: use ISO 8601 (P30D, start/end, P30D/end, start/P30D, or a start time)."
        )
    };
    let (lo, hi) = match text.split_once('/') {
        None => match duration(text) {
            Some(span) => (now - span?, now),
            None => (instant(text).ok_or_else(invalid)?, now),
        },
        Some((first, second)) => match (duration(first), duration(second)) {
            (Some(span), None) => {
                let end = instant(second).ok_or_else(invalid)?;
                (end - span?, end)
            }
            (None, Some(span)) => {
                let start = instant(first).ok_or_else(invalid)?;
                (start, start + span?)
            }
            (None, None) => (
                instant(first).ok_or_else(invalid)?,
                instant(second).ok_or_else(invalid)?,
            ),
            (Some(_), Some(_)) => return Err(invalid()),
        },
    };
    if lo > hi {
        return Err(format!(
            "The Timespan '{text}' is not valid: its start is after its end."
        ));
    }
    Ok((lo, hi))
}

fn instant(text: &str) -> Option<i64> {
    time::parse_literal(text.trim())
}

/// `Some` when `text` is a duration (starts with `P`): its ticks, or why it is refused.
fn duration(text: &str) -> Option<Result<i64, String>> {
    let text = text.trim();
    let rest = text.strip_prefix('P').or_else(|| text.strip_prefix('p'))?;
    Some(parse_duration(rest).ok_or_else(|| {
        format!(
            "The Timespan duration '{text}' is not valid: the emulator reads ISO 8601 durations of weeks, days, hours, minutes and seconds (P30D, PT12H, P1DT2H30M, P2W)."
        )
    }))
}

fn parse_duration(rest: &str) -> Option<i64> {
    let mut ticks: f64 = 0.0;
    let mut in_time = false;
    let mut number = String::new();
    let mut any = false;
    for c in rest.chars() {
        match c.to_ascii_uppercase() {
            'T' if !in_time && number.is_empty() => in_time = true,
            c if c.is_ascii_digit() || c == '.' || c == ',' => {
                number.push(if c == ',' { '.' } else { c });
            }
            unit => {
                let value: f64 = number.parse().ok()?;
                number.clear();
                let seconds = match (in_time, unit) {
                    (false, 'W') => 7.0 * 86_400.0,
                    (false, 'D') => 86_400.0,
                    (true, 'H') => 3_600.0,
                    (true, 'M') => 60.0,
                    (true, 'S') => 1.0,
                    // Years and months (`P1Y`, `P1M`) have no fixed length.
                    _ => return None,
                };
                ticks += value * seconds * TICKS_PER_SECOND as f64;
                any = true;
            }
        }
    }
    (any && number.is_empty() && ticks.is_finite() && ticks < 1e18).then_some(ticks as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 17_700_000_000_000_000;

    fn at(text: &str) -> i64 {
        time::parse_literal(text).unwrap()
    }

    #[test]
    fn every_documented_form() {
        assert_eq!(window(None, NOW).unwrap(), (NOW - 30 * DAY, NOW));
        assert_eq!(window(Some("P90D"), NOW).unwrap(), (NOW - 90 * DAY, NOW));
        assert_eq!(window(Some("PT12H"), NOW).unwrap(), (NOW - DAY / 2, NOW));
        assert_eq!(
            window(Some("P1DT2H30M"), NOW).unwrap().0,
            NOW - DAY - 9_000 * TICKS_PER_SECOND
        );
        assert_eq!(window(Some("P2W"), NOW).unwrap().0, NOW - 14 * DAY);
        let (start, end) = (at("2024-02-01T08:00:00Z"), at("2024-02-15T08:00:00Z"));
        assert_eq!(
            window(Some("2024-02-01T08:00:00Z/2024-02-15T08:00:00Z"), NOW).unwrap(),
            (start, end)
        );
        assert_eq!(
            window(Some("P30D/2024-02-15T08:00:00Z"), NOW).unwrap(),
            (end - 30 * DAY, end)
        );
        assert_eq!(
            window(Some("2024-02-01T08:00:00Z/P30D"), NOW).unwrap(),
            (start, start + 30 * DAY)
        );
        assert_eq!(
            window(Some("2024-02-01T08:00:00Z"), NOW).unwrap(),
            (start, NOW)
        );
    }

    #[test]
    fn refuses_what_it_cannot_place() {
        for text in [
            "P1Y",
            "P1M",
            "P",
            "PT",
            "P1X",
            "30 days",
            "P1D/P2D",
            "2024-02-15T08:00:00Z/2024-02-01T08:00:00Z",
            "yesterday/P1D",
        ] {
            assert!(window(Some(text), NOW).is_err(), "{text}");
        }
    }
}
