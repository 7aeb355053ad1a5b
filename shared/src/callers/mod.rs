//! Who may act for which tenant: the caller of a `mint-token` or `update-incident` request
//! (`identity`) and the check of its mapping in the store (`scoping`), made before any token is
//! requested or any change claimed.

mod identity;
mod scoping;

pub use identity::{
    Caller, DIRECT_INVOKE, caller_key, http_event_trusted, http_identity_trusted, principal_key,
};
pub use scoping::{Admission, CallerScoping, OUTSIDE_MAPPING, Reach, ScopeError, decide, reach_of};
