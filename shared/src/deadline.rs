//! The invocation's deadline as the Lambda Runtime API states it (`Lambda-Runtime-Deadline-Ms`,
//! milliseconds since the Unix epoch), turned into a point on the monotonic clock; and that
//! deadline carried through one invocation's work, so that every retry loop and wait below a
//! handler (token requests, consent proofs) stops in time for the function to answer, without
//! each layer having to be handed it.

use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

/// What a function keeps for itself after the work it bounds: shaping and sending the answer.
pub const ANSWER_MARGIN: Duration = Duration::from_secs(2);

tokio::task_local! {
    static INVOCATION_DEADLINE: Instant;
}

/// Runs `work` with `deadline` as the invocation's deadline (see [`remaining`]).
pub async fn within<F: Future>(deadline: Instant, work: F) -> F::Output {
    INVOCATION_DEADLINE.scope(deadline, work).await
}

/// Runs a handler's `work` so that it ends [`ANSWER_MARGIN`] before the invocation's deadline
/// (`Lambda-Runtime-Deadline-Ms`): what it has not finished by then is cut, and `on_timeout`
/// is the answer.
pub async fn answer_before<F: Future>(
    deadline_ms: u64,
    work: F,
    on_timeout: impl FnOnce() -> F::Output,
) -> F::Output {
    let deadline = monotonic_deadline(deadline_ms)
        .checked_sub(ANSWER_MARGIN)
        .unwrap_or_else(Instant::now);
    match tokio::time::timeout_at(deadline, within(deadline, work)).await {
        Ok(output) => output,
        Err(_) => on_timeout(),
    }
}

/// The current invocation's deadline, when the work runs [`within`] one.
pub fn invocation_deadline() -> Option<Instant> {
    INVOCATION_DEADLINE.try_with(|deadline| *deadline).ok()
}

/// `own`, shortened to what is left of the invocation (if any): the bound of a retry loop.
pub fn bounded(own: Duration) -> Duration {
    match invocation_deadline() {
        Some(deadline) => own.min(deadline.saturating_duration_since(Instant::now())),
        None => own,
    }
}

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

    #[tokio::test(start_paused = true)]
    async fn work_within_a_deadline_sees_only_what_is_left() {
        assert_eq!(bounded(Duration::from_secs(20)), Duration::from_secs(20));
        let deadline = Instant::now() + Duration::from_secs(5);
        let seen = within(deadline, async { bounded(Duration::from_secs(20)) }).await;
        assert_eq!(seen, Duration::from_secs(5));
        let shorter = within(deadline, async { bounded(Duration::from_secs(1)) }).await;
        assert_eq!(shorter, Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_comes_before_the_deadline_whatever_the_work_does() {
        // A local runtime's deadline (the timeout itself): 10 s, of which 2 s are the margin.
        let started = Instant::now();
        let answer = answer_before(
            10_000,
            async {
                tokio::time::sleep(Duration::from_secs(60)).await;
                "finished"
            },
            || "cut",
        )
        .await;
        assert_eq!(answer, "cut");
        assert_eq!(started.elapsed(), Duration::from_secs(8));
        let quick = answer_before(10_000, async { "finished" }, || "cut").await;
        assert_eq!(quick, "finished");
    }

    #[test]
    fn a_local_runtime_sending_the_timeout_itself_gets_that_timeout() {
        assert_eq!(time_left(600_000, NOW_MS), Duration::from_secs(600));
        assert_eq!(time_left(0, NOW_MS), Duration::ZERO);
    }
}
