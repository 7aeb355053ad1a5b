//! The invocation's deadline as the Lambda Runtime API states it (`Lambda-Runtime-Deadline-Ms`,
//! milliseconds since the Unix epoch), turned into a point on the monotonic clock.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

/// Below this a deadline cannot be an epoch time (it would lie before 1973). Local runtimes send
/// the function's timeout itself there: `cargo lambda watch` 1.9 sends `600000`.
const EPOCH_FLOOR_MS: u64 = 100_000_000_000;

/// How long the invocation has left, from the header's value and the wall clock's now.
pub fn time_left(deadline_ms: u64, now_ms: u64) -> Duration {
    if deadline_ms < EPOCH_FLOOR_MS {
        return Duration::from_millis(deadline_ms);
    }
    Duration::from_millis(deadline_ms.saturating_sub(now_ms))
}

/// The deadline on the monotonic clock, so that a wall-clock step cannot move it.
pub fn monotonic_deadline(deadline_ms: u64) -> Instant {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as u64)
        .unwrap_or(0);
    Instant::now() + time_left(deadline_ms, now_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW_MS: u64 = 1_796_284_378_000;

    #[test]
    fn an_epoch_deadline_leaves_the_difference() {
        assert_eq!(
            time_left(NOW_MS + 600_000, NOW_MS),
            Duration::from_secs(600)
        );
    }

    #[test]
    fn a_deadline_already_past_leaves_nothing() {
        assert_eq!(time_left(NOW_MS - 5, NOW_MS), Duration::ZERO);
    }

    #[test]
    fn a_local_runtime_sending_the_timeout_itself_gets_that_timeout() {
        assert_eq!(time_left(600_000, NOW_MS), Duration::from_secs(600));
        assert_eq!(time_left(0, NOW_MS), Duration::ZERO);
    }
}
