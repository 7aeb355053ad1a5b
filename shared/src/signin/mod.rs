//! Delegated access for a signed-in user: interactive sign-in (authorization code + PKCE),
//! refresh tokens kept sealed per user and tenant, and delegated tokens minted from them.
//! The browser round trip itself (signed states, bounded query, pages' headers) is `redirect`'s.

pub mod callback;
pub mod grants;
pub mod keys;
pub mod pages;
pub mod sealing;
pub mod service;
pub mod state;
pub mod stored;

pub use service::{SignInError, SignInLink, SignInParts, SignInService};
pub use state::{SignInClaims, SignInState};
pub use stored::{StoredSignInError, StoredSignIns};
