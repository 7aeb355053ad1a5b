//! Tokens kept until shortly before they expire. Concurrent callers for the same key wait for
//! one request instead of each sending their own; different keys never wait for each other.
//!
//! "Shortly" is the refresh-ahead setting, or half the token's lifetime when that is less: with
//! the setting alone, a token that lives less than the setting (Entra may issue 60-s tokens) would
//! be fetched again before every call.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::client::AccessToken;

/// A token still this far from expiry may be handed out when its refresh fails.
const MINIMUM_USEFUL_LIFETIME: Duration = Duration::from_secs(60);

/// A cached token and how long before its expiry it is replaced (fixed when it was fetched).
struct Cached {
    token: Arc<AccessToken>,
    margin: Duration,
}

type Slot = Arc<tokio::sync::Mutex<Option<Cached>>>;

/// How long before expiry a token that had `lifetime` left when it arrived is replaced: the
/// setting, or half the lifetime if that is less (the AWS-token cache's rule too), so every token
/// serves at least half its life.
pub fn refresh_margin(refresh_ahead: Duration, lifetime: Duration) -> Duration {
    refresh_ahead.min(lifetime / 2)
}

pub struct TokenCache<K> {
    slots: Mutex<HashMap<K, Slot>>,
    refresh_ahead: Duration,
}

impl<K: Eq + Hash + Clone> TokenCache<K> {
    pub fn new(refresh_ahead: Duration) -> TokenCache<K> {
        TokenCache {
            slots: Mutex::new(HashMap::new()),
            refresh_ahead,
        }
    }

    /// The cached token for `key` if it has more than the refresh margin left; otherwise the
    /// result of `fetch` (shared by everyone waiting on the same key). If the refresh fails while
    /// the old token still has a useful life, the old token is returned and the error logged.
    pub async fn get_or_fetch<E, F, Fut>(&self, key: K, fetch: F) -> Result<Arc<AccessToken>, E>
    where
        E: std::fmt::Display,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<AccessToken, E>>,
    {
        self.get_or_fetch_keeping(key, fetch, |_| true).await
    }

    /// As [`TokenCache::get_or_fetch`], handing out the old token only on the errors
    /// `keep_old_on` accepts: a revoked sign-in must not be served on for its last minutes.
    pub async fn get_or_fetch_keeping<E, F, Fut>(
        &self,
        key: K,
        fetch: F,
        keep_old_on: impl FnOnce(&E) -> bool,
    ) -> Result<Arc<AccessToken>, E>
    where
        E: std::fmt::Display,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<AccessToken, E>>,
    {
        let slot = self.slot(key);
        let mut cached = slot.lock().await;
        if let Some(entry) = cached.as_ref()
            && entry.token.remaining() > entry.margin
        {
            return Ok(entry.token.clone());
        }
        match fetch().await {
            Ok(fresh) => {
                let margin = refresh_margin(self.refresh_ahead, fresh.remaining());
                let fresh = Arc::new(fresh);
                *cached = Some(Cached {
                    token: fresh.clone(),
                    margin,
                });
                Ok(fresh)
            }
            // A short-lived token is still useful for half of what was left when its refresh
            // began (a 60-s token: its last 15 s).
            Err(error) => match cached.as_ref() {
                Some(entry)
                    if entry.token.remaining() > MINIMUM_USEFUL_LIFETIME.min(entry.margin / 2)
                        && keep_old_on(&error) =>
                {
                    tracing::warn!(error = %error, "token refresh failed; the cached token is still valid");
                    Ok(entry.token.clone())
                }
                _ => Err(error),
            },
        }
    }

    /// Forgets the token for `key` (after an API refused it).
    pub async fn invalidate(&self, key: &K) {
        let slot = self
            .slots
            .lock()
            .expect("token cache poisoned")
            .get(key)
            .cloned();
        if let Some(slot) = slot {
            *slot.lock().await = None;
        }
    }

    /// Forgets every token whose key `matches` (all of a user's, whatever token they came with).
    pub async fn invalidate_matching(&self, matches: impl Fn(&K) -> bool) {
        let slots: Vec<Slot> = self
            .slots
            .lock()
            .expect("token cache poisoned")
            .iter()
            .filter(|(key, _)| matches(key))
            .map(|(_, slot)| slot.clone())
            .collect();
        for slot in slots {
            *slot.lock().await = None;
        }
    }

    fn slot(&self, key: K) -> Slot {
        let mut slots = self.slots.lock().expect("token cache poisoned");
        if slots.len() >= PRUNE_ABOVE && !slots.contains_key(&key) {
            prune(&mut slots);
        }
        slots.entry(key).or_default().clone()
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.slots.lock().expect("token cache poisoned").len()
    }
}

/// Keys are per user token for on-behalf-of, so a long-lived instance would otherwise keep one
/// slot per token it ever saw.
const PRUNE_ABOVE: usize = 2048;

/// Drops the slots nobody is waiting on whose token is gone or expired.
fn prune<K>(slots: &mut HashMap<K, Slot>) {
    slots.retain(|_, slot| {
        if Arc::strong_count(slot) > 1 {
            return true;
        }
        match slot.try_lock() {
            Ok(entry) => entry
                .as_ref()
                .is_some_and(|entry| entry.token.remaining() > Duration::ZERO),
            Err(_) => true,
        }
    });
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use chrono::Utc;
    use secrecy::SecretString;

    use super::*;
    use crate::entra::claims::TokenClaims;

    fn token(lifetime_seconds: i64) -> AccessToken {
        AccessToken {
            token: SecretString::from("t"),
            token_type: "Bearer".into(),
            expires_at: Utc::now() + chrono::Duration::seconds(lifetime_seconds),
            claims: TokenClaims {
                tid: "t".into(),
                roles: vec![],
                aud: None,
                iss: None,
                exp: None,
                appid: None,
                azp: None,
                oid: None,
                ver: None,
            },
        }
    }

    #[tokio::test]
    async fn concurrent_callers_share_one_fetch() {
        let cache = Arc::new(TokenCache::new(Duration::from_secs(300)));
        let fetches = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..16)
            .map(|_| {
                let cache = cache.clone();
                let fetches = fetches.clone();
                tokio::spawn(async move {
                    cache
                        .get_or_fetch("k", || async {
                            fetches.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            Ok::<_, String>(token(3600))
                        })
                        .await
                        .unwrap()
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn keys_are_independent_and_near_expiry_refreshes() {
        let cache = TokenCache::new(Duration::from_secs(300));
        let fetches = AtomicUsize::new(0);
        let fetch = |lifetime| {
            let fetches = &fetches;
            move || async move {
                fetches.fetch_add(1, Ordering::SeqCst);
                Ok::<_, String>(token(lifetime))
            }
        };
        cache.get_or_fetch("a", fetch(3600)).await.unwrap();
        cache.get_or_fetch("a", fetch(3600)).await.unwrap();
        cache.get_or_fetch("b", fetch(3600)).await.unwrap();
        assert_eq!(fetches.load(Ordering::SeqCst), 2);
        // A token shorter than the setting serves half its life.
        cache.get_or_fetch("c", fetch(200)).await.unwrap();
        cache.get_or_fetch("c", fetch(200)).await.unwrap();
        assert_eq!(fetches.load(Ordering::SeqCst), 3);
        // Past half its life: fetched again.
        cache.get_or_fetch("d", fetch(1)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(600)).await;
        cache.get_or_fetch("d", fetch(1)).await.unwrap();
        assert_eq!(fetches.load(Ordering::SeqCst), 5);
        cache.invalidate(&"a").await;
        cache.get_or_fetch("a", fetch(3600)).await.unwrap();
        assert_eq!(fetches.load(Ordering::SeqCst), 6);
    }

    #[tokio::test]
    async fn invalidate_matching_forgets_every_matching_key_only() {
        let cache = TokenCache::new(Duration::from_secs(300));
        for key in [("alice", 1), ("alice", 2), ("bob", 1)] {
            cache
                .get_or_fetch(key, || async { Ok::<_, String>(token(3600)) })
                .await
                .unwrap();
        }
        cache
            .invalidate_matching(|(user, _)| *user == "alice")
            .await;
        let fetches = AtomicUsize::new(0);
        for key in [("alice", 1), ("alice", 2), ("bob", 1)] {
            cache
                .get_or_fetch(key, || async {
                    fetches.fetch_add(1, Ordering::SeqCst);
                    Ok::<_, String>(token(3600))
                })
                .await
                .unwrap();
        }
        assert_eq!(fetches.load(Ordering::SeqCst), 2, "alice's two, not bob's");
    }

    #[tokio::test]
    async fn expired_and_empty_slots_are_pruned_once_the_cache_is_large() {
        let cache = TokenCache::new(Duration::from_secs(300));
        for index in 0..PRUNE_ABOVE {
            let lifetime = if index % 2 == 0 { 3600 } else { -10 };
            cache
                .get_or_fetch(index, || async { Ok::<_, String>(token(lifetime)) })
                .await
                .unwrap();
        }
        assert_eq!(cache.len(), PRUNE_ABOVE);
        cache
            .get_or_fetch(PRUNE_ABOVE, || async { Ok::<_, String>(token(3600)) })
            .await
            .unwrap();
        assert_eq!(cache.len(), PRUNE_ABOVE / 2 + 1, "the expired half is gone");
        let fetches = AtomicUsize::new(0);
        cache
            .get_or_fetch(0, || async {
                fetches.fetch_add(1, Ordering::SeqCst);
                Ok::<_, String>(token(3600))
            })
            .await
            .unwrap();
        assert_eq!(fetches.load(Ordering::SeqCst), 0, "live tokens are kept");
    }

    #[test]
    fn the_margin_is_the_setting_or_half_the_life() {
        let margin = |ahead, life| {
            refresh_margin(Duration::from_secs(ahead), Duration::from_secs(life)).as_secs()
        };
        assert_eq!(margin(300, 3600), 300);
        assert_eq!(margin(300, 600), 300);
        assert_eq!(margin(300, 599), 299);
        assert_eq!(
            margin(300, 60),
            30,
            "a 60-s token: refreshed after 30 s, not at once"
        );
        assert_eq!(margin(0, 60), 0);
        assert_eq!(margin(300, 0), 0);
    }

    /// A token already inside its refresh margin, as if fetched a while ago.
    async fn seed(cache: &TokenCache<&'static str>, key: &'static str, lifetime: i64) {
        let slot = cache.slot(key);
        *slot.lock().await = Some(Cached {
            token: Arc::new(token(lifetime)),
            margin: Duration::from_secs(300),
        });
    }

    #[tokio::test]
    async fn a_failed_refresh_keeps_a_still_valid_token_but_not_an_expiring_one() {
        let cache = TokenCache::new(Duration::from_secs(300));
        seed(&cache, "a", 200).await;
        let kept = cache
            .get_or_fetch("a", || async {
                Err::<AccessToken, _>("throttled".to_owned())
            })
            .await
            .unwrap();
        assert!(kept.remaining() > Duration::from_secs(100));
        seed(&cache, "b", 30).await;
        let error = cache
            .get_or_fetch("b", || async {
                Err::<AccessToken, _>("throttled".to_owned())
            })
            .await
            .unwrap_err();
        assert_eq!(error, "throttled");
    }

    #[tokio::test]
    async fn a_verdict_is_never_papered_over_with_the_old_token() {
        let cache = TokenCache::new(Duration::from_secs(300));
        seed(&cache, "a", 200).await;
        let error = cache
            .get_or_fetch_keeping(
                "a",
                || async { Err::<AccessToken, _>("revoked".to_owned()) },
                |error| error != "revoked",
            )
            .await
            .unwrap_err();
        assert_eq!(error, "revoked");
    }
}
