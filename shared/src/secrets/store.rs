//! The credential in memory: loaded once, reused for a TTL, re-read after a rejection.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

use super::{AppCredential, CredentialError, CredentialSource};
use crate::entra::federated::FederatedAssertions;

pub struct CredentialStore {
    source: Arc<dyn CredentialSource>,
    ttl: Duration,
    // A mutex rather than a lock-free cell: callers that find it stale wait for one read of the
    // source instead of each reading it.
    loaded: Mutex<Option<Loaded>>,
    /// Where an `aws_federated` credential gets its AWS tokens.
    federation: Option<Arc<FederatedAssertions>>,
}

struct Loaded {
    credential: Arc<AppCredential>,
    at: Instant,
}

impl CredentialStore {
    pub fn new(source: Arc<dyn CredentialSource>, ttl: Duration) -> CredentialStore {
        CredentialStore {
            source,
            ttl,
            loaded: Mutex::new(None),
            federation: None,
        }
    }

    /// Lets the store hand out `aws_federated` credentials, with AWS tokens from `federation`.
    pub fn with_federation(mut self, federation: Arc<FederatedAssertions>) -> CredentialStore {
        self.federation = Some(federation);
        self
    }

    /// The credential in force, read from the source when the cached copy is older than the TTL.
    /// If the source fails and a copy is cached, the copy is used (Secrets Manager being briefly
    /// unreachable should not stop token minting).
    pub async fn current(&self) -> Result<Arc<AppCredential>, CredentialError> {
        let mut loaded = self.loaded.lock().await;
        if let Some(current) = loaded.as_ref()
            && current.at.elapsed() < self.ttl
        {
            return Ok(current.credential.clone());
        }
        match self.load().await {
            Ok(credential) => {
                *loaded = Some(Loaded {
                    credential: credential.clone(),
                    at: Instant::now(),
                });
                Ok(credential)
            }
            Err(error) => match loaded.as_ref() {
                Some(stale) => {
                    tracing::warn!(error = %error, "credential re-read failed; using the cached copy");
                    Ok(stale.credential.clone())
                }
                None => Err(error),
            },
        }
    }

    /// Entra refused `rejected`. Returns a different credential to try, if one exists: one that a
    /// concurrent caller already re-read, or a fresh read of the source. `None` when the source
    /// still holds what was refused (nothing to retry with).
    pub async fn reload_after_rejection(
        &self,
        rejected: &Arc<AppCredential>,
    ) -> Result<Option<Arc<AppCredential>>, CredentialError> {
        let mut loaded = self.loaded.lock().await;
        if let Some(current) = loaded.as_ref()
            && !Arc::ptr_eq(&current.credential, rejected)
            && !current.credential.same_material_as(rejected)
        {
            return Ok(Some(current.credential.clone()));
        }
        let fresh = self.load().await?;
        *loaded = Some(Loaded {
            credential: fresh.clone(),
            at: Instant::now(),
        });
        if fresh.same_material_as(rejected) {
            Ok(None)
        } else {
            tracing::info!(source = %self.source.describe(), "app credential was rotated; retrying with the new one");
            Ok(Some(fresh))
        }
    }

    async fn load(&self) -> Result<Arc<AppCredential>, CredentialError> {
        let text = self.source.read().await?;
        AppCredential::from_json_with_federation(&text, self.federation.as_ref())
            .map(Arc::new)
            .map_err(|error| match error {
                CredentialError::Malformed(problem) => {
                    CredentialError::Malformed(format!("{}: {problem}", self.source.describe()))
                }
                other => other,
            })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use async_trait::async_trait;
    use secrecy::SecretString;

    use super::*;
    use crate::secrets::credential::tests::secret_json;

    struct CountingSource {
        reads: AtomicUsize,
        value: std::sync::Mutex<Result<String, String>>,
    }

    impl CountingSource {
        fn new(secret: &str) -> Arc<CountingSource> {
            Arc::new(CountingSource {
                reads: AtomicUsize::new(0),
                value: std::sync::Mutex::new(Ok(secret.to_owned())),
            })
        }
        fn set(&self, value: Result<&str, &str>) {
            *self.value.lock().unwrap() = value.map(str::to_owned).map_err(str::to_owned);
        }
    }

    #[async_trait]
    impl CredentialSource for CountingSource {
        async fn read(&self) -> Result<SecretString, CredentialError> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            // Yield so concurrent callers really overlap.
            tokio::task::yield_now().await;
            match &*self.value.lock().unwrap() {
                Ok(secret) => Ok(secret_json(secret)),
                Err(problem) => Err(CredentialError::Unavailable(problem.clone())),
            }
        }
        fn describe(&self) -> String {
            "test source".into()
        }
    }

    #[tokio::test]
    async fn caches_for_the_ttl_and_shares_one_read() {
        let source = CountingSource::new("one");
        let store = Arc::new(CredentialStore::new(
            source.clone(),
            Duration::from_secs(60),
        ));
        let calls = (0..8).map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.current().await.unwrap() })
        });
        for call in calls {
            call.await.unwrap();
        }
        assert_eq!(source.reads.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn rereads_after_the_ttl_and_survives_a_failed_reread() {
        let source = CountingSource::new("one");
        let store = CredentialStore::new(source.clone(), Duration::from_secs(60));
        let first = store.current().await.unwrap();
        tokio::time::advance(Duration::from_secs(61)).await;
        source.set(Err("AccessDenied"));
        let second = store.current().await.unwrap();
        assert!(
            Arc::ptr_eq(&first, &second),
            "stale copy used while the source fails"
        );
        assert_eq!(source.reads.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn first_read_failure_is_reported() {
        let source = CountingSource::new("one");
        source.set(Err("ResourceNotFoundException"));
        let store = CredentialStore::new(source, Duration::from_secs(60));
        let error = store.current().await.unwrap_err();
        assert!(error.to_string().contains("ResourceNotFoundException"));
    }

    #[tokio::test]
    async fn a_rejection_rereads_once_and_reports_rotation() {
        let source = CountingSource::new("old");
        let store = CredentialStore::new(source.clone(), Duration::from_secs(3600));
        let old = store.current().await.unwrap();
        // Not rotated yet: nothing new to try.
        assert!(store.reload_after_rejection(&old).await.unwrap().is_none());
        source.set(Ok("new"));
        let new = store
            .reload_after_rejection(&old)
            .await
            .unwrap()
            .expect("rotated");
        assert!(!new.same_material_as(&old));
        // A second caller holding the old credential gets the new one without another read.
        let reads = source.reads.load(Ordering::SeqCst);
        let again = store.reload_after_rejection(&old).await.unwrap().unwrap();
        assert!(Arc::ptr_eq(&again, &new));
        assert_eq!(source.reads.load(Ordering::SeqCst), reads);
    }
}
