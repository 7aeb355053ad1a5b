//! The administrator's sign-in that follows an admin consent. Microsoft's consent redirect says
//! which tenant consented, but anyone can forge that redirect; what proves the tenant is an
//! OpenID Connect sign-in of the administrator in the same browser flow: authorization code with
//! PKCE, `openid profile`, a `nonce` bound to the consent's single-use nonce, and an ID token
//! verified in full (see `entra::id_token`). Its `tid` is the tenant recorded.

use secrecy::{ExposeSecret, SecretSlice, SecretString};
use url::Url;

use crate::cloud::CloudEndpoints;
use crate::config::TokenEndpointVersion;
use crate::entra::id_token::{Expected, IdTokenError, IdTokenVerifier, VerifiedIdentity};
use crate::entra::{EntraError, TokenClient};
use crate::redirect::key::derive_key;
use crate::redirect::pkce::{NonceDeriver, PkceDeriver};
use crate::secrets::AppCredential;
use crate::tenant_id::TenantId;

/// What the administrator's sign-in asks for: identity only, no API.
pub const IDENTITY_SCOPE: &str = "openid profile";

/// Derives the sign-in's PKCE verifier and OIDC nonce from the consent attempt's nonce, so
/// nothing waits in the store between the redirect and the callback.
pub struct AdminSignIn {
    pkce: PkceDeriver,
    nonces: NonceDeriver,
}

#[derive(Debug, thiserror::Error)]
pub enum AdminSignInError {
    #[error("the authorization code was not redeemed: {0}")]
    Redeem(#[from] EntraError),
    #[error(transparent)]
    IdToken(#[from] IdTokenError),
}

impl AdminSignIn {
    pub fn new(service_key: &SecretSlice<u8>) -> AdminSignIn {
        AdminSignIn {
            pkce: PkceDeriver::new(&derive_key(
                service_key,
                b"defender-partner consent pkce key v1",
            )),
            nonces: NonceDeriver::new(service_key, b"defender-partner consent oidc nonce key v1"),
        }
    }

    /// The OIDC `nonce` of the attempt `attempt_nonce`.
    pub fn oidc_nonce(&self, attempt_nonce: &str) -> String {
        self.nonces.nonce(attempt_nonce)
    }

    /// Where the browser goes next: Microsoft's sign-in at `authority` (the tenant to prove, or
    /// `organizations` when the consent named none).
    pub fn authorize_url(
        &self,
        endpoints: &CloudEndpoints,
        authority: &str,
        client_id: &str,
        redirect_uri: &Url,
        state: &str,
        attempt_nonce: &str,
    ) -> Url {
        let mut url = Url::parse(&endpoints.authority_url(authority, "oauth2/v2.0/authorize"))
            .expect("authority URLs are valid");
        url.query_pairs_mut()
            .append_pair("client_id", client_id)
            .append_pair("response_type", "code")
            .append_pair("redirect_uri", redirect_uri.as_str())
            .append_pair("response_mode", "query")
            .append_pair("scope", IDENTITY_SCOPE)
            .append_pair("state", state)
            .append_pair("nonce", &self.oidc_nonce(attempt_nonce))
            .append_pair("code_challenge", &self.pkce.challenge(attempt_nonce))
            .append_pair("code_challenge_method", "S256")
            // An administrator already signed in elsewhere picks the account that consented.
            .append_pair("prompt", "select_account");
        url
    }

    /// Redeems the code and verifies the ID token; the identity it proves.
    #[allow(clippy::too_many_arguments)]
    pub async fn prove(
        &self,
        client: &TokenClient,
        verifier: &IdTokenVerifier,
        authority: &str,
        code: &SecretString,
        redirect_uri: &Url,
        credential: &AppCredential,
        attempt_nonce: &str,
        expected_tenant: Option<&TenantId>,
    ) -> Result<VerifiedIdentity, AdminSignInError> {
        let pkce_verifier = self.pkce.verifier(attempt_nonce);
        let form = vec![
            ("grant_type", "authorization_code"),
            ("code", code.expose_secret()),
            ("code_verifier", pkce_verifier.expose_secret()),
            ("redirect_uri", redirect_uri.as_str()),
            ("scope", IDENTITY_SCOPE),
        ];
        let body = client
            .post_grant(authority, TokenEndpointVersion::V2, form, credential)
            .await?;
        let id_token = id_token_of(&body)?;
        let nonce = self.oidc_nonce(attempt_nonce);
        Ok(verifier
            .verify(
                id_token.expose_secret(),
                &Expected {
                    client_id: &credential.client_id,
                    nonce: &nonce,
                    tenant: expected_tenant,
                    consent_admin: true,
                },
            )
            .await?)
    }
}

/// The `id_token` of a token answer; the access token that comes with it is not read.
pub fn id_token_of(body: &[u8]) -> Result<SecretString, IdTokenError> {
    #[derive(serde::Deserialize)]
    struct Answer {
        #[serde(default)]
        id_token: Option<SecretString>,
    }
    serde_json::from_slice::<Answer>(body)
        .ok()
        .and_then(|answer| answer.id_token)
        .ok_or(IdTokenError::Missing)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloud::Cloud;

    fn sign_in(key: &[u8]) -> AdminSignIn {
        AdminSignIn::new(&SecretSlice::from(key.to_vec()))
    }

    #[test]
    fn the_link_asks_for_identity_with_pkce_and_a_nonce_bound_to_the_attempt() {
        let flow = sign_in(b"0123456789abcdef0123456789abcdef");
        let redirect = Url::parse("https://x.example/consent/callback").unwrap();
        let url = flow.authorize_url(
            &CloudEndpoints::for_cloud(Cloud::Public),
            "72f988bf-86f1-41af-91ab-2d7cd011db47",
            "app",
            &redirect,
            "st",
            "attempt-1",
        );
        assert_eq!(
            url.path(),
            "/72f988bf-86f1-41af-91ab-2d7cd011db47/oauth2/v2.0/authorize"
        );
        let params: std::collections::HashMap<String, String> = url
            .query_pairs()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        assert_eq!(params["scope"], "openid profile");
        assert_eq!(params["code_challenge_method"], "S256");
        assert_eq!(params["nonce"], flow.oidc_nonce("attempt-1"));
        assert_ne!(flow.oidc_nonce("attempt-1"), flow.oidc_nonce("attempt-2"));
        // Another service key: another nonce, so a sign-in made for another deployment fails.
        assert_ne!(
            flow.oidc_nonce("attempt-1"),
            sign_in(b"another key of the same length!!").oidc_nonce("attempt-1")
        );
        assert!(
            !url.as_str()
                .contains(flow.pkce.verifier("attempt-1").expose_secret())
        );
    }

    #[test]
    fn an_answer_without_id_token_proves_nothing() {
        assert!(matches!(
            id_token_of(br#"{"access_token":"x","token_type":"Bearer"}"#),
            Err(IdTokenError::Missing)
        ));
        assert!(id_token_of(br#"{"id_token":"a.b.c"}"#).is_ok());
    }
}
