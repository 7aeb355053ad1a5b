//! The port: something that hands out a signed AWS web identity token.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use secrecy::SecretString;

use super::FederationError;

/// What to ask STS for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebIdentityTokenRequest {
    /// The JWT's `aud`: what the FIC on the Entra app lists.
    pub audience: String,
    /// The JWT's lifetime (60–3600 s).
    pub duration: Duration,
}

/// A signed JWT and when it stops being valid. `Debug` never shows the JWT.
#[derive(Debug, Clone)]
pub struct WebIdentityToken {
    pub jwt: SecretString,
    pub expires_at: DateTime<Utc>,
}

#[async_trait]
pub trait WebIdentityTokenSource: Send + Sync {
    async fn web_identity_token(
        &self,
        request: &WebIdentityTokenRequest,
    ) -> Result<WebIdentityToken, FederationError>;
}
