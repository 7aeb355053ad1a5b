//! Onboarding a customer tenant through admin consent: signed single-use `state`s, the consent
//! links, the callback, the proof that consent is real, and the pages the administrator sees.

pub mod admin_sign_in;
pub mod callback;
pub mod keys;
pub mod links;
pub mod pages;
pub mod proof;
pub mod service;
pub mod state;

pub use links::LinkKind;
pub use pages::Page;
pub use service::{CallbackAnswer, ConsentError, ConsentLink, ConsentService};
