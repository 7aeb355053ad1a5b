//! API time values: parsed with any fraction length (0–7 digits, trimmed zeros), written as
//! OData literals with 7 digits so no precision is lost in a filter.

use chrono::{DateTime, Timelike, Utc};

pub fn parse_api_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text.trim())
        .ok()
        .map(|time| time.with_timezone(&Utc))
}

/// `2026-11-25T05:12:09.1234567Z`
pub fn odata_literal(time: &DateTime<Utc>) -> String {
    format!(
        "{}.{:07}Z",
        time.format("%Y-%m-%dT%H:%M:%S"),
        time.nanosecond() % 1_000_000_000 / 100
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_fraction_length() {
        for text in [
            "2026-01-01T00:00:59Z",
            "2026-01-01T00:00:59.29Z",
            "2026-01-01T00:00:59.15034Z",
            "2026-01-01T00:00:59.9089383Z",
            "2026-01-01T00:00:59.4633333Z",
        ] {
            let parsed = parse_api_time(text).unwrap();
            assert_eq!(
                parse_api_time(&odata_literal(&parsed)).unwrap(),
                parsed,
                "{text}"
            );
        }
        assert!(parse_api_time("2022-07-14T06:22:45").is_none());
        assert!(parse_api_time("yesterday").is_none());
    }

    #[test]
    fn literals_have_seven_digits() {
        let time = parse_api_time("2026-01-01T00:00:59.29Z").unwrap();
        assert_eq!(odata_literal(&time), "2026-01-01T00:00:59.2900000Z");
    }
}
