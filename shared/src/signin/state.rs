//! What a sign-in `state` claims: the tenant the user is sent to and the API the sign-in is for.
//! On the wire it keeps the names of the consent `state` it was first written with (`c`, `k`,
//! `t`), so that links in flight across a deployment stay valid.

use serde::{Deserialize, Serialize};

use crate::api::DefenderApi;
use crate::redirect::SignedState;
use crate::tenant_id::TenantId;

/// A sign-in's signed `state`.
pub type SignInState = SignedState<SignInClaims>;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "WireClaims", try_from = "WireClaims")]
pub struct SignInClaims {
    pub tenant: TenantId,
    pub api: DefenderApi,
}

/// Tells a sign-in's `k` from a consent link's kind.
const API_PREFIX: &str = "signin:";

#[derive(Serialize, Deserialize)]
struct WireClaims {
    /// The tenant.
    c: String,
    /// `signin:<api>`.
    k: String,
    /// The tenant again (the consent `state`'s bound tenant).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    t: Option<String>,
}

impl From<SignInClaims> for WireClaims {
    fn from(claims: SignInClaims) -> Self {
        WireClaims {
            c: claims.tenant.to_string(),
            k: format!("{API_PREFIX}{}", claims.api.code()),
            t: Some(claims.tenant.to_string()),
        }
    }
}

impl TryFrom<WireClaims> for SignInClaims {
    type Error = String;

    fn try_from(wire: WireClaims) -> Result<Self, Self::Error> {
        let api = wire
            .k
            .strip_prefix(API_PREFIX)
            .and_then(|code| code.parse::<DefenderApi>().ok())
            .ok_or("not a sign-in state")?;
        let tenant = TenantId::parse(&wire.c).map_err(|error| error.to_string())?;
        Ok(SignInClaims { tenant, api })
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use secrecy::SecretSlice;

    use super::*;
    use crate::redirect::{Purpose, StateError, StateSigner};

    const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";

    fn signer() -> StateSigner {
        StateSigner::new(
            &SecretSlice::from(b"0123456789abcdef0123456789abcdef".to_vec()),
            Purpose::UserSignIn,
        )
    }

    #[test]
    fn keeps_the_wire_form_of_links_in_flight() {
        let state = SignInState {
            nonce: "n0nce".into(),
            expires: Utc::now().timestamp() + 600,
            claims: SignInClaims {
                tenant: TenantId::parse(TENANT).unwrap(),
                api: DefenderApi::Graph,
            },
        };
        let json = serde_json::to_value(&state).unwrap();
        assert_eq!(json["c"], TENANT);
        assert_eq!(json["k"], "signin:graph");
        assert_eq!(json["t"], TENANT);
        let signer = signer();
        let read: SignInState = signer
            .verify(Some(&signer.sign(&state)), Utc::now())
            .unwrap();
        assert_eq!(read, state);
    }

    #[test]
    fn a_state_without_a_sign_in_api_or_tenant_is_malformed() {
        let signer = signer();
        let expires = Utc::now().timestamp() + 600;
        for (c, k) in [
            (TENANT, "v2"),
            (TENANT, "signin:sentinel"),
            ("not-a-tenant", "signin:m365d"),
        ] {
            let state = SignedState {
                nonce: "n".to_owned(),
                expires,
                claims: WireClaims {
                    c: c.into(),
                    k: k.into(),
                    t: None,
                },
            };
            assert_eq!(
                signer
                    .verify::<SignInClaims>(Some(&signer.sign(&state)), Utc::now())
                    .unwrap_err(),
                StateError::Malformed,
                "{c} {k}"
            );
        }
    }
}
