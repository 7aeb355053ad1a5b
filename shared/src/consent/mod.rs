//! Onboarding a customer tenant through admin consent: the consent links, what a consent `state`
//! claims, the callback, the proof that consent is real, and the pages the administrator sees.
//! The browser round trip itself (signed states, bounded query, pages' headers) is `redirect`'s.

pub mod admin_sign_in;
pub mod callback;
pub mod links;
pub mod pages;
pub mod proof;
pub mod service;
pub mod state;

pub use crate::redirect::CallbackAnswer;
pub use links::LinkKind;
pub use service::{ConsentError, ConsentLink, ConsentService};
pub use state::{ConsentClaims, ConsentState};
