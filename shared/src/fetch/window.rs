//! The arithmetic of a pair's checkpoint window, free of I/O so that each rule is tested on its
//! own: which range a query reads, when an answer holds all of it, how an unordered source's
//! range is split and sized, how a newest-first source narrows, where the next window starts,
//! where a Graph source's first run starts after its retiring predecessor, and how long a run
//! holds its lease.
//!
//! Times are the APIs' literals in the checkpoint (`OpenWindow`), parsed where compared.

use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::time::Instant;

use crate::defender::time::parse_api_time;
use crate::store::OpenWindow;

/// The narrowest time range an unordered source's query is split to; below it, links.
pub(super) const MIN_SPLIT: chrono::Duration = chrono::Duration::milliseconds(1);
/// Lambda's longest timeout: a lease never needs to outlast more than this of a run.
const LONGEST_INVOCATION: Duration = Duration::from_secs(900);
/// A lease outlives its run's deadline by this much, for clocks that differ between instances.
const LEASE_MARGIN: Duration = Duration::from_secs(60);

/// Until when a run whose deadline is `deadline` holds its pair: past the deadline (the run is
/// over by then, finished or killed), so that no other run starts while it may still write.
pub(super) fn lease_until(
    now: DateTime<Utc>,
    deadline: Instant,
    monotonic_now: Instant,
) -> DateTime<Utc> {
    let left = deadline
        .saturating_duration_since(monotonic_now)
        .min(LONGEST_INVOCATION);
    now + span(left + LEASE_MARGIN)
}

/// A configured duration as a span of time (a setting too large for one counts as none).
pub(super) fn span(duration: Duration) -> chrono::Duration {
    chrono::Duration::from_std(duration).unwrap_or_default()
}

/// The range `(lower, bound)` the next query of `window` reads: from the query's floor (else the
/// window's low end) up to the cursor (else the window's upper bound).
pub(super) fn query_range(window: &OpenWindow, low: &str) -> (String, String) {
    let bound = window
        .cursor
        .clone()
        .unwrap_or_else(|| window.upper.clone());
    let lower = window.floor.clone().unwrap_or_else(|| low.to_owned());
    (lower, bound)
}

/// Whether an answer of `returned` records holds all of its query: a short page without a link
/// (a server may cut a page below `$top` and say so with a link).
pub(super) fn answered_whole(returned: usize, top: u32, has_next_link: bool) -> bool {
    returned < top as usize && !has_next_link
}

/// What comes after an unordered source's answer to one query of its window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum UnorderedStep {
    /// Not whole, and the range is too narrow to split (many records at one instant): the
    /// answer's link is followed, and kept in the checkpoint.
    FollowLink,
    /// Not whole: the upper part of the range, from `floor`, is read again.
    Split { floor: DateTime<Utc> },
    /// Whole, and the window goes on below it: the next query reads down from the range's lower
    /// bound, to `floor` (a range sized for this one's density) or to the window's low end.
    Below { floor: Option<DateTime<Utc>> },
    /// The whole window answered.
    WindowDone,
}

/// Graph documents no order, and its links page by position: a record that changes while a
/// chain is followed shifts the rest, and one is skipped. So a query counts as complete only
/// when one answer holds all of it; otherwise its time range is split in two and read again
/// (the ledger drops what was delivered), never paged by `$skip` or by links.
pub(super) fn after_unordered(
    window: &OpenWindow,
    low: &str,
    (lower_at, bound_at): (DateTime<Utc>, DateTime<Utc>),
    returned: usize,
    top: u32,
    has_next_link: bool,
) -> UnorderedStep {
    let width = bound_at - lower_at;
    let whole = answered_whole(returned, top, has_next_link);
    if !whole && width <= MIN_SPLIT {
        return UnorderedStep::FollowLink;
    }
    if !whole {
        return UnorderedStep::Split {
            floor: bound_at - width / 2,
        };
    }
    if window.floor.is_none() && window.next.is_none() {
        return UnorderedStep::WindowDone;
    }
    let floor = next_floor(
        lower_at,
        Some(next_width(width, returned, top)),
        parse_api_time(low),
    );
    let reached_low = window.floor.as_deref().unwrap_or(low) == low;
    if floor.is_none() && reached_low {
        UnorderedStep::WindowDone
    } else {
        UnorderedStep::Below { floor }
    }
}

/// The width of an unordered source's next query after one of `width` answered `returned`
/// records completely: sized to fill about four fifths of a page at the density just seen
/// (between half and four times the width), so that few answers come back full and are read
/// again split.
pub(super) fn next_width(width: chrono::Duration, returned: usize, top: u32) -> chrono::Duration {
    let target = f64::from(top) * 0.8;
    let factor = if returned == 0 {
        4.0
    } else {
        (target / returned as f64).clamp(0.5, 4.0)
    };
    let micros = (width.num_microseconds().unwrap_or(i64::MAX / 8) as f64 * factor) as i64;
    chrono::Duration::microseconds(micros.max(1))
}

/// The next query's lower bound below `cursor` for an unordered source: one `span` down, or the
/// rest of the window (`None`) when that reaches its low end.
pub(super) fn next_floor(
    cursor: DateTime<Utc>,
    span: Option<chrono::Duration>,
    low: Option<DateTime<Utc>>,
) -> Option<DateTime<Utc>> {
    let floor = cursor - span?;
    match low {
        Some(low) if floor <= low => None,
        _ => Some(floor),
    }
}

/// A newest-first source's cursor after a page whose oldest record is `oldest`: narrowed to it
/// when that is below the query's `bound` and new; `None` when the whole page shares the bound's
/// time, which is then stepped over by position (`$skip`).
pub(super) fn narrowed_cursor(
    oldest: Option<&str>,
    cursor: Option<&str>,
    bound: &str,
) -> Option<String> {
    oldest
        .filter(|oldest| Some(*oldest) != cursor && parse_api_time(oldest) < parse_api_time(bound))
        .map(str::to_owned)
}

/// Where the next window starts once one up to `upper` is done: an overlap before its upper
/// bound, for records that became visible late, never before this window's `low`.
pub(super) fn next_low(
    upper: DateTime<Utc>,
    overlap: chrono::Duration,
    low: Option<DateTime<Utc>>,
) -> DateTime<Utc> {
    (upper - overlap).max(low.unwrap_or(upper - overlap))
}

/// Where a Graph source's first run starts after its retiring predecessor: an overlap before
/// where the predecessor had got to, never earlier than the look-back.
pub(super) fn migration_start(
    predecessor_low: DateTime<Utc>,
    overlap: chrono::Duration,
    lookback: DateTime<Utc>,
) -> DateTime<Utc> {
    (predecessor_low - overlap).max(lookback)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    fn window(cursor: Option<&str>, floor: Option<&str>, next: Option<&str>) -> OpenWindow {
        OpenWindow {
            upper: "2026-12-01T12:00:00Z".into(),
            cursor: cursor.map(str::to_owned),
            floor: floor.map(str::to_owned),
            next: next.map(str::to_owned),
        }
    }

    const LOW: &str = "2026-12-01T00:00:00Z";

    #[test]
    fn a_migration_starts_an_overlap_before_the_retiring_checkpoint() {
        let low = at("2026-12-01T10:00:00Z");
        let overlap = chrono::Duration::seconds(300);
        let lookback = low - chrono::Duration::days(7);
        assert_eq!(
            migration_start(low, overlap, lookback),
            low - overlap,
            "not the look-back: the history is not fetched again"
        );
        // A retiring checkpoint older than the look-back is not followed past it.
        assert_eq!(
            migration_start(lookback - chrono::Duration::days(30), overlap, lookback),
            lookback
        );
    }

    #[test]
    fn the_next_range_is_sized_for_the_density_just_seen() {
        let hour = chrono::Duration::hours(1);
        // 20 of 50 in an hour: two hours fill 40.
        assert_eq!(next_width(hour, 20, 50), hour * 2);
        assert_eq!(next_width(hour, 0, 50), hour * 4);
        let dense = next_width(hour, 49, 50);
        assert!(dense > hour / 2 && dense < hour, "{dense}");
        assert_eq!(next_width(hour, 500, 50), hour / 2);
    }

    #[test]
    fn the_next_query_goes_one_span_down_or_to_the_windows_end() {
        let cursor = at("2026-12-01T10:00:00Z");
        let hour = chrono::Duration::hours(1);
        assert_eq!(
            next_floor(cursor, Some(hour), Some(cursor - chrono::Duration::days(1))),
            Some(cursor - hour)
        );
        assert_eq!(next_floor(cursor, Some(hour), Some(cursor - hour)), None);
        assert_eq!(next_floor(cursor, None, Some(cursor - hour)), None);
    }

    #[test]
    fn a_lease_outlives_the_deadline_and_never_much_more_than_a_timeout() {
        let now = Utc::now();
        let monotonic = Instant::now();
        let until = lease_until(now, monotonic + Duration::from_secs(600), monotonic);
        assert_eq!((until - now).num_seconds(), 660);
        let until = lease_until(now, monotonic + Duration::from_secs(86_400), monotonic);
        assert_eq!(
            (until - now).num_seconds(),
            960,
            "capped at Lambda's 15 minutes"
        );
        let until = lease_until(now, monotonic, monotonic + Duration::from_secs(5));
        assert_eq!(
            (until - now).num_seconds(),
            60,
            "a deadline past still leaves the margin"
        );
    }

    #[test]
    fn a_query_reads_from_its_floor_or_the_low_end_up_to_the_cursor_or_the_upper_bound() {
        assert_eq!(
            query_range(&window(None, None, None), LOW),
            (LOW.to_owned(), "2026-12-01T12:00:00Z".to_owned())
        );
        assert_eq!(
            query_range(
                &window(
                    Some("2026-12-01T11:00:00Z"),
                    Some("2026-12-01T10:00:00Z"),
                    None
                ),
                LOW
            ),
            (
                "2026-12-01T10:00:00Z".to_owned(),
                "2026-12-01T11:00:00Z".to_owned()
            )
        );
    }

    #[test]
    fn only_a_short_page_without_a_link_is_whole() {
        assert!(answered_whole(49, 50, false));
        assert!(!answered_whole(50, 50, false));
        assert!(
            !answered_whole(10, 50, true),
            "a server may cut a page short"
        );
    }

    #[test]
    fn an_incomplete_answer_is_split_until_too_narrow_then_its_link_is_followed() {
        let fresh = window(None, None, None);
        let (lower, bound) = (at(LOW), at("2026-12-01T12:00:00Z"));
        assert_eq!(
            after_unordered(&fresh, LOW, (lower, bound), 50, 50, true),
            UnorderedStep::Split {
                floor: at("2026-12-01T06:00:00Z")
            }
        );
        let instant = at("2026-12-01T06:00:00Z");
        assert_eq!(
            after_unordered(&fresh, LOW, (instant, instant + MIN_SPLIT), 50, 50, true),
            UnorderedStep::FollowLink
        );
    }

    #[test]
    fn a_whole_answer_ends_the_window_or_reads_on_below_it() {
        let (lower, bound) = (at(LOW), at("2026-12-01T12:00:00Z"));
        assert_eq!(
            after_unordered(&window(None, None, None), LOW, (lower, bound), 3, 50, false),
            UnorderedStep::WindowDone,
            "the whole window in one answer"
        );
        // The upper half answered whole with 20 of 50: the next range below is twice as wide.
        let split = window(None, Some("2026-12-01T10:00:00Z"), None);
        assert_eq!(
            after_unordered(
                &split,
                LOW,
                (at("2026-12-01T10:00:00Z"), bound),
                20,
                50,
                false
            ),
            UnorderedStep::Below {
                floor: Some(at("2026-12-01T06:00:00Z"))
            }
        );
        // Sized past the low end: down to it.
        let sparse = window(None, Some("2026-12-01T02:00:00Z"), None);
        assert_eq!(
            after_unordered(
                &sparse,
                LOW,
                (at("2026-12-01T02:00:00Z"), bound),
                0,
                50,
                false
            ),
            UnorderedStep::Below { floor: None }
        );
        // The last range, down to the low end, answered whole.
        let last = window(Some("2026-12-01T02:00:00Z"), Some(LOW), None);
        assert_eq!(
            after_unordered(
                &last,
                LOW,
                (lower, at("2026-12-01T02:00:00Z")),
                5,
                50,
                false
            ),
            UnorderedStep::WindowDone
        );
    }

    #[test]
    fn a_newest_first_page_narrows_to_its_oldest_record_or_is_stepped_over() {
        let bound = "2026-12-01T12:00:00Z";
        assert_eq!(
            narrowed_cursor(Some("2026-12-01T11:00:00Z"), None, bound).as_deref(),
            Some("2026-12-01T11:00:00Z")
        );
        assert_eq!(narrowed_cursor(Some(bound), None, bound), None, "same time");
        assert_eq!(
            narrowed_cursor(
                Some("2026-12-01T11:00:00Z"),
                Some("2026-12-01T11:00:00Z"),
                bound
            ),
            None,
            "no progress"
        );
        assert_eq!(narrowed_cursor(None, None, bound), None);
    }

    #[test]
    fn the_next_window_overlaps_the_last_but_never_starts_before_its_low() {
        let upper = at("2026-12-01T12:00:00Z");
        let overlap = chrono::Duration::minutes(5);
        assert_eq!(
            next_low(upper, overlap, Some(at(LOW))),
            at("2026-12-01T11:55:00Z")
        );
        assert_eq!(next_low(upper, overlap, Some(upper)), upper);
        assert_eq!(next_low(upper, overlap, None), at("2026-12-01T11:55:00Z"));
        assert_eq!(span(Duration::from_secs(300)), overlap);
    }
}
