//! The AWS token in memory: fetched once, reused until shortly before it expires, and shared by
//! every concurrent token request, so a fleet run of N tenants costs one STS call, not N.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use secrecy::SecretString;
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::{
    FederatedIdentity, FederationContext, FederationError, WebIdentityTokenRequest,
    WebIdentityTokenSource,
};
use crate::CallerError;

/// How long before its expiry a token is replaced: a minute, or half its life when shorter, so
/// Entra ID never receives a token that expires in flight and a short token is still reused.
pub fn refresh_margin(lifetime: Duration) -> Duration {
    Duration::from_secs(60).min(lifetime / 2)
}

/// One AWS token, ready to send as `client_assertion`. `Debug` never shows the JWT.
pub struct FederatedAssertion {
    jwt: SecretString,
    /// Read without verification, for messages; `None` if the payload could not be read.
    identity: Option<FederatedIdentity>,
    audience: String,
    expires_at: DateTime<Utc>,
    refresh_at: Instant,
    valid_until: Instant,
    /// How close to its expiry the token is still handed out when STS fails.
    fallback_margin: Duration,
}

impl FederatedAssertion {
    /// Both clocks are asked: the monotonic one may stand still while a Lambda sandbox is
    /// frozen between invocations, the wall clock does not.
    fn is_fresh(&self) -> bool {
        Instant::now() < self.refresh_at && Utc::now() < self.wall_refresh_at()
    }

    fn is_still_usable(&self) -> bool {
        let margin = self.fallback_margin;
        Instant::now() + margin < self.valid_until
            && Utc::now() + chrono::Duration::from_std(margin).unwrap_or_default() < self.expires_at
    }

    fn wall_refresh_at(&self) -> DateTime<Utc> {
        let margin = self.valid_until.saturating_duration_since(self.refresh_at);
        self.expires_at - chrono::Duration::from_std(margin).unwrap_or_default()
    }
}

impl FederatedAssertion {
    pub fn jwt(&self) -> &SecretString {
        &self.jwt
    }

    pub fn identity(&self) -> Option<&FederatedIdentity> {
        self.identity.as_ref()
    }

    pub fn expires_at(&self) -> DateTime<Utc> {
        self.expires_at
    }

    /// The values Entra ID compares with the FIC, for its error messages.
    pub fn context(&self) -> FederationContext {
        FederationContext {
            issuer: self.identity.as_ref().map(|identity| identity.iss.clone()),
            subject: self.identity.as_ref().map(|identity| identity.sub.clone()),
            audience: Some(self.audience.clone()),
        }
    }
}

impl fmt::Debug for FederatedAssertion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FederatedAssertion")
            .field("identity", &self.identity)
            .field("audience", &self.audience)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

pub struct FederatedAssertions {
    source: Arc<dyn WebIdentityTokenSource>,
    request: WebIdentityTokenRequest,
    // A mutex held across the STS call rather than a lock-free cell: callers that find the
    // token stale wait for the one call in flight instead of each making their own.
    current: Mutex<Option<Arc<FederatedAssertion>>>,
}

impl FederatedAssertions {
    pub fn new(
        source: Arc<dyn WebIdentityTokenSource>,
        request: WebIdentityTokenRequest,
    ) -> FederatedAssertions {
        FederatedAssertions {
            source,
            request,
            current: Mutex::new(None),
        }
    }

    pub fn request(&self) -> &WebIdentityTokenRequest {
        &self.request
    }

    /// The token in force, from STS when the cached one is close to expiry. If STS fails while
    /// the cached token is still valid, that token is used: a brief STS outage should not stop
    /// token minting.
    pub async fn current(&self) -> Result<Arc<FederatedAssertion>, FederationError> {
        let mut current = self.current.lock().await;
        if let Some(cached) = current.as_ref()
            && cached.is_fresh()
        {
            return Ok(cached.clone());
        }
        match self.fetch().await {
            Ok(fresh) => {
                *current = Some(fresh.clone());
                Ok(fresh)
            }
            Err(error) => match current.as_ref() {
                Some(cached) if cached.is_still_usable() => {
                    tracing::warn!(code = %error.code(), error = %error, "STS refresh failed; using the cached AWS token");
                    Ok(cached.clone())
                }
                _ => Err(error),
            },
        }
    }

    /// Entra ID found `rejected` outside its valid time: forget it (unless a concurrent caller
    /// already replaced it) so the next call asks STS.
    pub async fn discard(&self, rejected: &Arc<FederatedAssertion>) {
        let mut current = self.current.lock().await;
        if current
            .as_ref()
            .is_some_and(|cached| Arc::ptr_eq(cached, rejected))
        {
            *current = None;
        }
    }

    async fn fetch(&self) -> Result<Arc<FederatedAssertion>, FederationError> {
        let token = self.source.web_identity_token(&self.request).await?;
        let now = Utc::now();
        let lifetime = (token.expires_at - now)
            .to_std()
            .ok()
            .filter(|lifetime| !lifetime.is_zero())
            .ok_or_else(|| FederationError::ArrivedExpired {
                expires_at: token.expires_at.to_rfc3339(),
                now: now.to_rfc3339(),
            })?;
        let identity = {
            use secrecy::ExposeSecret;
            FederatedIdentity::from_jwt(token.jwt.expose_secret())
        };
        let identity = match identity {
            Ok(identity) => Some(identity),
            Err(error) => {
                tracing::warn!(error = %error, "the AWS token's payload could not be read; sending it anyway");
                None
            }
        };
        let now = Instant::now();
        Ok(Arc::new(FederatedAssertion {
            jwt: token.jwt,
            identity,
            audience: self.request.audience.clone(),
            expires_at: token.expires_at,
            refresh_at: now + (lifetime - refresh_margin(lifetime)),
            valid_until: now + lifetime,
            // Entra must still find it valid when the request reaches it.
            fallback_margin: refresh_margin(lifetime) / 2,
        }))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use async_trait::async_trait;
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    use super::*;
    use crate::ErrorCode;
    use crate::entra::federated::WebIdentityToken;

    pub const ISSUER: &str = "https://0f1e2d3c-aaaa.tokens.sts.global.api.aws";
    pub const ROLE_ARN: &str = "arn:aws:iam::123456789012:role/defender-partner-MintToken";

    pub fn aws_jwt(serial: usize) -> String {
        let payload = serde_json::json!({
            "iss": ISSUER, "sub": ROLE_ARN, "aud": "api://AzureADTokenExchange", "jti": serial,
        });
        format!(
            "{}.{}.signature-{serial}",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","typ":"JWT"}"#),
            URL_SAFE_NO_PAD.encode(payload.to_string())
        )
    }

    /// Counts STS calls; answers with a token of `lifetime`, or fails once told to.
    pub struct CountingSts {
        pub calls: AtomicUsize,
        pub lifetime: Duration,
        pub failure: std::sync::Mutex<Option<FederationError>>,
    }

    impl CountingSts {
        pub fn new(lifetime: Duration) -> Arc<CountingSts> {
            Arc::new(CountingSts {
                calls: AtomicUsize::new(0),
                lifetime,
                failure: std::sync::Mutex::new(None),
            })
        }

        pub fn calls(&self) -> usize {
            self.calls.load(Ordering::SeqCst)
        }
    }

    #[async_trait]
    impl WebIdentityTokenSource for CountingSts {
        async fn web_identity_token(
            &self,
            _request: &WebIdentityTokenRequest,
        ) -> Result<WebIdentityToken, FederationError> {
            let serial = self.calls.fetch_add(1, Ordering::SeqCst);
            // Yield so concurrent callers really overlap with the call in flight.
            tokio::task::yield_now().await;
            if let Some(failure) = self.failure.lock().unwrap().clone() {
                return Err(failure);
            }
            Ok(WebIdentityToken {
                jwt: SecretString::from(aws_jwt(serial)),
                expires_at: Utc::now() + chrono::Duration::from_std(self.lifetime).unwrap(),
            })
        }
    }

    pub fn request() -> WebIdentityTokenRequest {
        WebIdentityTokenRequest {
            audience: "api://AzureADTokenExchange".into(),
            duration: Duration::from_secs(300),
        }
    }

    #[test]
    fn the_margin_is_a_minute_or_half_the_life() {
        assert_eq!(
            refresh_margin(Duration::from_secs(300)),
            Duration::from_secs(60)
        );
        assert_eq!(
            refresh_margin(Duration::from_secs(60)),
            Duration::from_secs(30)
        );
        assert_eq!(
            refresh_margin(Duration::from_secs(3600)),
            Duration::from_secs(60)
        );
    }

    #[tokio::test]
    async fn concurrent_callers_share_one_sts_call() {
        let sts = CountingSts::new(Duration::from_secs(300));
        let assertions = Arc::new(FederatedAssertions::new(sts.clone(), request()));
        let callers: Vec<_> = (0..32)
            .map(|_| {
                let assertions = assertions.clone();
                tokio::spawn(async move { assertions.current().await.unwrap() })
            })
            .collect();
        let mut tokens = Vec::new();
        for caller in callers {
            tokens.push(caller.await.unwrap());
        }
        assert_eq!(sts.calls(), 1);
        assert!(tokens.iter().all(|token| Arc::ptr_eq(token, &tokens[0])));
        let context = tokens[0].context();
        assert_eq!(context.issuer.as_deref(), Some(ISSUER));
        assert_eq!(context.subject.as_deref(), Some(ROLE_ARN));
        assert_eq!(
            context.audience.as_deref(),
            Some("api://AzureADTokenExchange")
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_frozen_monotonic_clock_does_not_keep_an_expiring_token() {
        // Tokio's clock is paused, as a frozen sandbox's monotonic clock may stand still; the
        // wall clock moves on past the refresh point of a 2 s token (margin 1 s).
        let sts = CountingSts::new(Duration::from_secs(2));
        let assertions = FederatedAssertions::new(sts.clone(), request());
        assertions.current().await.unwrap();
        std::thread::sleep(Duration::from_millis(1200));
        assertions.current().await.unwrap();
        assert_eq!(sts.calls(), 2, "the wall clock said it was time");
        // And STS failing then: the old token is too close to its expiry to be handed out.
        *sts.failure.lock().unwrap() = Some(FederationError::Malformed("down".into()));
        std::thread::sleep(Duration::from_millis(1800));
        assert!(assertions.current().await.is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn a_token_is_replaced_a_minute_before_it_expires() {
        let sts = CountingSts::new(Duration::from_secs(300));
        let assertions = FederatedAssertions::new(sts.clone(), request());
        let first = assertions.current().await.unwrap();
        tokio::time::advance(Duration::from_secs(200)).await;
        assert!(Arc::ptr_eq(&first, &assertions.current().await.unwrap()));
        assert_eq!(sts.calls(), 1);
        tokio::time::advance(Duration::from_secs(45)).await;
        let second = assertions.current().await.unwrap();
        assert!(!Arc::ptr_eq(&first, &second));
        assert_eq!(sts.calls(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn an_sts_outage_uses_the_still_valid_token_then_reports() {
        let sts = CountingSts::new(Duration::from_secs(300));
        let assertions = FederatedAssertions::new(sts.clone(), request());
        let first = assertions.current().await.unwrap();
        *sts.failure.lock().unwrap() = Some(FederationError::Unavailable("Throttling".into()));
        tokio::time::advance(Duration::from_secs(250)).await;
        assert!(Arc::ptr_eq(&first, &assertions.current().await.unwrap()));
        tokio::time::advance(Duration::from_secs(60)).await;
        let error = assertions.current().await.unwrap_err();
        assert_eq!(error.code(), ErrorCode::CredentialUnavailable);
    }

    #[tokio::test]
    async fn a_token_that_arrives_expired_is_a_clock_problem_not_an_outage() {
        let sts = CountingSts::new(Duration::ZERO);
        let assertions = FederatedAssertions::new(sts.clone(), request());
        let error = assertions.current().await.unwrap_err();
        assert_eq!(error.code(), ErrorCode::ClientAssertionExpired);
        assert!(error.to_string().contains("clock"), "{error}");
    }

    #[tokio::test]
    async fn a_discarded_token_is_fetched_again_once() {
        let sts = CountingSts::new(Duration::from_secs(300));
        let assertions = FederatedAssertions::new(sts.clone(), request());
        let first = assertions.current().await.unwrap();
        assertions.discard(&first).await;
        let second = assertions.current().await.unwrap();
        assert_eq!(sts.calls(), 2);
        // A late caller discarding the old token does not throw away the new one.
        assertions.discard(&first).await;
        assert!(Arc::ptr_eq(&second, &assertions.current().await.unwrap()));
        assert_eq!(sts.calls(), 2);
    }

    #[tokio::test]
    async fn debug_never_shows_the_jwt() {
        let sts = CountingSts::new(Duration::from_secs(300));
        let assertions = FederatedAssertions::new(sts, request());
        let token = assertions.current().await.unwrap();
        let debug = format!("{token:?}");
        assert!(!debug.contains("signature-0"), "{debug}");
        assert!(debug.contains(ROLE_ARN), "{debug}");
    }
}
