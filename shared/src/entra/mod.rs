//! Entra ID: client-credentials tokens for customer tenants.
//!
//! `client` speaks the token endpoint (one exchange), `retry` wraps it with backoff that obeys
//! `Retry-After` under an overall deadline, `cache` keeps tokens until shortly before they expire
//! and lets concurrent callers share one request, `claims` reads a token's payload and `roles`
//! checks it, `errors` turns AADSTS answers into typed errors, `assertion` signs the certificate
//! credential's client assertion, `federated` gets the AWS token that replaces any secret in the
//! secretless mode, `discovery` resolves a verified domain to its tenant id.
//! `delegated` exchanges a user's token for a Defender token acting as that user (on-behalf-of);
//! `device_code` signs a user in from a command line without a browser. `id_token` verifies the
//! OpenID Connect ID tokens that tell who signed in, and where.

pub mod assertion;
pub mod cache;
pub mod claims;
pub mod client;
pub mod delegated;
pub mod device_code;
pub mod discovery;
pub mod errors;
pub mod federated;
pub mod id_token;
pub mod provider;
pub mod retry;
pub mod roles;

pub use cache::TokenCache;
pub use claims::TokenClaims;
pub use client::{AccessToken, TokenClient, TokenRequest};
pub use delegated::{DelegatedToken, OboError, OboProvider};
pub use errors::EntraError;
pub use provider::{AppTokenError, AppTokenProvider};
