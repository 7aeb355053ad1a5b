//! Retrying a token request: exponential backoff with jitter for outages, exactly the
//! `Retry-After` Microsoft asked for when throttled, and never past the overall deadline.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use tokio::time::Instant;

use super::errors::EntraError;
use crate::CallerError;
use crate::secrets::{AppCredential, CredentialError, CredentialStore};

/// [`with_retries`] with the current app credential; when Entra refuses the credential itself,
/// it is re-read once (a rotated secret may already be in place) and the request retried with
/// the new one. `attempt` builds the request's retry closure for a given credential.
pub async fn with_credential_retries<T, E, A, F, Fut>(
    credentials: &CredentialStore,
    deadline: Duration,
    attempt: A,
) -> Result<T, E>
where
    A: Fn(Arc<AppCredential>) -> F,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, EntraError>>,
    E: From<EntraError> + From<CredentialError>,
{
    let credential = credentials.current().await?;
    match with_retries(deadline, attempt(credential.clone())).await {
        Err(error) if error.is_credential_rejection() => {
            match credentials.reload_after_rejection(&credential).await? {
                Some(rotated) => Ok(with_retries(deadline, attempt(rotated)).await?),
                None => Err(error.into()),
            }
        }
        other => Ok(other?),
    }
}

/// Runs `attempt` until it succeeds, fails for good, or the next wait would cross `deadline`.
/// A throttled answer whose `Retry-After` does not fit in what is left is returned as is, so the
/// caller can pass the wait on.
pub async fn with_retries<T, F, Fut>(deadline: Duration, attempt: F) -> Result<T, EntraError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, EntraError>>,
{
    // Never past the invocation's own deadline either, when there is one.
    let deadline = crate::deadline::bounded(deadline);
    let started = Instant::now();
    let backoff = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(250))
        .with_max_delay(Duration::from_secs(8))
        .with_jitter()
        .with_max_times(10);
    let retrying = attempt
        .retry(backoff)
        .sleep(tokio::time::sleep)
        .when(EntraError::is_retryable)
        .adjust(move |error: &EntraError, planned: Option<Duration>| {
            let planned = planned?;
            let wait = error.retry_after().unwrap_or(planned);
            (started.elapsed() + wait < deadline).then_some(wait)
        })
        .notify(|error: &EntraError, wait: Duration| {
            tracing::warn!(code = %error.code(), wait_ms = wait.as_millis() as u64, "token request failed; retrying");
        });
    match tokio::time::timeout(deadline, retrying).await {
        Ok(result) => result,
        Err(_) => Err(EntraError::DeadlineExceeded(deadline)),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::entra::errors::Trace;

    fn throttled(seconds: u64) -> EntraError {
        EntraError::Throttled {
            retry_after: Some(Duration::from_secs(seconds)),
            trace: Trace::default(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn obeys_retry_after_then_succeeds() {
        let calls = Arc::new(AtomicUsize::new(0));
        let started = Instant::now();
        let counter = calls.clone();
        let result = with_retries(Duration::from_secs(30), move || {
            let counter = counter.clone();
            async move {
                match counter.fetch_add(1, Ordering::SeqCst) {
                    0 | 1 => Err(throttled(3)),
                    _ => Ok("token"),
                }
            }
        })
        .await;
        assert_eq!(result.unwrap(), "token");
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        // Two waits of exactly Retry-After, no earlier retry.
        assert!(started.elapsed() >= Duration::from_secs(6));
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_past_the_deadline_returns_the_throttle() {
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = calls.clone();
        let result: Result<(), _> = with_retries(Duration::from_secs(10), move || {
            counter.fetch_add(1, Ordering::SeqCst);
            async { Err(throttled(60)) }
        })
        .await;
        let error = result.unwrap_err();
        assert_eq!(error.retry_after(), Some(Duration::from_secs(60)));
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "no retry earlier than Retry-After"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn permanent_errors_are_not_retried() {
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = calls.clone();
        let result: Result<(), _> = with_retries(Duration::from_secs(10), move || {
            counter.fetch_add(1, Ordering::SeqCst);
            async {
                Err(EntraError::CredentialInvalid {
                    trace: Trace::default(),
                })
            }
        })
        .await;
        assert!(matches!(result, Err(EntraError::CredentialInvalid { .. })));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn outages_back_off_until_the_deadline() {
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = calls.clone();
        let started = Instant::now();
        let result: Result<(), _> = with_retries(Duration::from_secs(5), move || {
            counter.fetch_add(1, Ordering::SeqCst);
            async {
                Err(EntraError::Unavailable {
                    retry_after: None,
                    trace: Trace::default(),
                })
            }
        })
        .await;
        assert!(result.unwrap_err().is_retryable());
        assert!(calls.load(Ordering::SeqCst) > 1);
        assert!(started.elapsed() <= Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn a_hung_attempt_ends_at_the_deadline() {
        let result: Result<(), _> = with_retries(Duration::from_secs(2), || async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok(())
        })
        .await;
        assert!(matches!(result, Err(EntraError::DeadlineExceeded(_))));
    }
}
