//! The Entra ID side: the live directory of apps and tenants, the token endpoints (client
//! credentials with a secret, a certificate or a federated assertion; the delegated grants),
//! admin consent, signing keys and OpenID metadata, and Entra's error answers.

pub(crate) mod access_token;
pub(crate) mod assertion;
pub(crate) mod certificates;
pub(crate) mod consent;
pub(crate) mod delegated;
pub(crate) mod directory;
pub(crate) mod discovery;
pub(crate) mod errors;
pub(crate) mod federated;
pub(crate) mod keys;
pub(crate) mod request_log;
pub mod resources;
pub(crate) mod token_endpoint;
