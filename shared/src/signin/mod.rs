//! Delegated access for a signed-in user: interactive sign-in (authorization code + PKCE),
//! refresh tokens kept sealed per user and tenant, and delegated tokens minted from them.

pub mod callback;
pub mod grants;
pub mod keys;
pub mod pages;
pub mod pkce;
pub mod sealing;
pub mod service;
pub mod stored;

pub use service::{SignInError, SignInLink, SignInParts, SignInService};
pub use stored::{StoredSignInError, StoredSignIns};
