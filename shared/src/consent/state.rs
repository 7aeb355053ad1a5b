//! What a consent `state` claims: whom the link was handed out for and which link it was. The
//! consent link's `state` and the administrator's sign-in `state` that follows it carry the same
//! claims, each signed for its own [`Purpose`](crate::redirect::Purpose).

use serde::{Deserialize, Serialize};

use crate::redirect::SignedState;

/// A consent step's signed `state`.
pub type ConsentState = SignedState<ConsentClaims>;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsentClaims {
    /// The partner's reference for the customer.
    #[serde(rename = "c")]
    pub customer_ref: String,
    /// Which link was handed out (`v2`, `adminconsent`, `legacy`).
    #[serde(rename = "k")]
    pub link: String,
    /// The tenant this state is bound to: the one a tenant-bound link was issued for, or (in
    /// the administrator's sign-in after a consent) the one the administrator must prove.
    #[serde(rename = "t", default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use secrecy::SecretSlice;

    use super::*;
    use crate::redirect::{Purpose, StateSigner};

    fn state(tenant: Option<&str>) -> ConsentState {
        SignedState {
            nonce: "n0nce".into(),
            expires: Utc::now().timestamp() + 600,
            claims: ConsentClaims {
                customer_ref: "CRM-1".into(),
                link: "v2".into(),
                tenant: tenant.map(str::to_owned),
            },
        }
    }

    #[test]
    fn the_wire_names_are_those_links_in_flight_carry() {
        let json =
            serde_json::to_value(state(Some("72f988bf-86f1-41af-91ab-2d7cd011db47"))).unwrap();
        let mut names: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        names.sort_unstable();
        assert_eq!(names, ["c", "e", "k", "n", "t"]);
        assert_eq!(json["c"], "CRM-1");
        assert_eq!(json["k"], "v2");
    }

    #[test]
    fn a_bound_tenant_is_signed_too_and_an_unbound_state_still_reads() {
        let signer = StateSigner::new(
            &SecretSlice::from(b"0123456789abcdef0123456789abcdef".to_vec()),
            Purpose::ConsentLink,
        );
        let bound = state(Some("72f988bf-86f1-41af-91ab-2d7cd011db47"));
        let read: ConsentState = signer
            .verify(Some(&signer.sign(&bound)), Utc::now())
            .unwrap();
        assert_eq!(read, bound);
        let read: ConsentState = signer
            .verify(Some(&signer.sign(&state(None))), Utc::now())
            .unwrap();
        assert_eq!(read.claims.tenant, None);
    }
}
