//! A person's browser sent to Microsoft and back, as both browser flows do it: the onboarding
//! (`consent`: admin consent, then the administrator's sign-in) and the user sign-in (`signin`).
//! What they share lives here, once: the service key (`key`), the signed single-use `state` of
//! each purpose (`state`), PKCE verifiers and OIDC nonces derived rather than stored (`pkce`),
//! Microsoft's redirect back read with bounds (`query`), and the pages with their security
//! headers (`page`). Each flow keeps its own claims, rules and wording.

pub mod key;
pub mod page;
pub mod pkce;
pub mod query;
pub mod state;

pub use page::{CallbackAnswer, Page, answer_callback, escape};
pub use query::{CallbackError, CallbackQuery, Refusal};
pub use state::{Purpose, SignedState, StateError, StateSigner};
