//! The secretless credential: the Lambda's own AWS identity proves the Entra app.
//!
//! AWS STS `GetWebIdentityToken` signs a short-lived OIDC JWT for the role the function runs as;
//! Entra ID accepts it as `client_assertion` when the app registration holds a matching federated
//! identity credential (FIC). `source` is the port that obtains such a JWT (`sts` is its AWS
//! adapter), `assertions` caches it and shares one STS call among concurrent callers, `identity`
//! reads its (unverified) issuer and subject, the values the FIC must match, and `error` types
//! what STS refuses.

mod assertions;
mod error;
mod identity;
mod source;
mod sts;

pub use assertions::{FederatedAssertion, FederatedAssertions, refresh_margin};
pub use error::FederationError;
pub use identity::{FederatedIdentity, FederationContext};
pub use source::{WebIdentityToken, WebIdentityTokenRequest, WebIdentityTokenSource};
pub use sts::StsWebIdentitySource;

/// Entra ID's recommended audience of a federated credential in the public cloud.
pub const DEFAULT_AUDIENCE: &str = "api://AzureADTokenExchange";
/// STS accepts 60–3600 s; 300 s is its default and ours.
pub const DEFAULT_DURATION_SECONDS: u64 = 300;
pub const MIN_DURATION_SECONDS: u64 = 60;
pub const MAX_DURATION_SECONDS: u64 = 3600;
/// Entra ID checks the assertion's RS256 signature against the issuer's JWKS.
pub const SIGNING_ALGORITHM: &str = "RS256";

/// A token source for unit tests elsewhere in the crate: counts calls, never reaches AWS.
#[cfg(test)]
pub(crate) fn assertions_for_tests() -> std::sync::Arc<FederatedAssertions> {
    std::sync::Arc::new(FederatedAssertions::new(
        assertions::tests::CountingSts::new(std::time::Duration::from_secs(300)),
        assertions::tests::request(),
    ))
}
