//! One exchange with the token endpoint.

use std::time::Duration;

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::assertion::sign_assertion;
use super::claims::{TokenClaims, decode_payload};
use super::errors::EntraError;
use crate::cloud::CloudEndpoints;
use crate::config::TokenEndpointVersion;
use crate::secrets::{AppCredential, CredentialKind, FederatedCredential};

const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// The on-behalf-of grant.
pub const OBO_GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// An access token and what we know of it. `Debug` never shows the token.
#[derive(Debug, Clone)]
pub struct AccessToken {
    pub token: SecretString,
    pub token_type: String,
    pub expires_at: DateTime<Utc>,
    pub claims: TokenClaims,
}

impl AccessToken {
    /// Time left before it expires (zero once expired).
    pub fn remaining(&self) -> Duration {
        (self.expires_at - Utc::now())
            .to_std()
            .unwrap_or(Duration::ZERO)
    }
}

/// What to ask the token endpoint for.
#[derive(Debug, Clone, Copy)]
pub struct TokenRequest<'a> {
    /// The tenant's GUID or domain, as it goes in the URL path.
    pub tenant: &'a str,
    /// The API's resource identifier (`https://api.security.microsoft.com`).
    pub resource: &'a str,
    pub version: TokenEndpointVersion,
}

/// Speaks the client-credentials grant of Entra ID's v1 and v2 token endpoints.
#[derive(Clone)]
pub struct TokenClient {
    http: reqwest::Client,
    endpoints: CloudEndpoints,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: SecretString,
    #[serde(default)]
    token_type: Option<String>,
    // v1 sends these as strings, v2 as numbers.
    #[serde(default)]
    expires_in: Option<serde_json::Value>,
}

impl TokenClient {
    pub fn new(http: reqwest::Client, endpoints: CloudEndpoints) -> TokenClient {
        TokenClient { http, endpoints }
    }

    pub fn endpoints(&self) -> &CloudEndpoints {
        &self.endpoints
    }

    pub fn token_url(&self, tenant: &str, version: TokenEndpointVersion) -> String {
        match version {
            TokenEndpointVersion::V2 => self.endpoints.authority_url(tenant, "oauth2/v2.0/token"),
            TokenEndpointVersion::V1 => self.endpoints.authority_url(tenant, "oauth2/token"),
        }
    }

    /// One request, no retry.
    pub async fn request_once(
        &self,
        request: TokenRequest<'_>,
        credential: &AppCredential,
    ) -> Result<AccessToken, EntraError> {
        let scope;
        let mut form: Vec<(&str, &str)> = vec![("grant_type", "client_credentials")];
        match request.version {
            TokenEndpointVersion::V2 => {
                scope = format!("{}/.default", request.resource.trim_end_matches('/'));
                form.push(("scope", &scope));
            }
            TokenEndpointVersion::V1 => form.push(("resource", request.resource)),
        }
        self.exchange(request.tenant, request.version, form, credential)
            .await
    }

    /// One on-behalf-of exchange (v2 endpoint), no retry: `user_token` (a user's token issued
    /// for this app) for a delegated token for `resource`, acting for the same user.
    pub async fn request_on_behalf_of_once(
        &self,
        tenant: &str,
        resource: &str,
        user_token: &SecretString,
        credential: &AppCredential,
    ) -> Result<AccessToken, EntraError> {
        let scope = format!("{}/.default", resource.trim_end_matches('/'));
        let form: Vec<(&str, &str)> = vec![
            ("grant_type", OBO_GRANT_TYPE),
            ("assertion", user_token.expose_secret()),
            ("requested_token_use", "on_behalf_of"),
            ("scope", &scope),
        ];
        self.exchange(tenant, TokenEndpointVersion::V2, form, credential)
            .await
    }

    /// The HTTP client, for the other endpoints of the same authority (device code).
    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Adds the app's client id and credential to `form`, posts it and types the answer. The
    /// hook of every grant: client credentials, on-behalf-of, device code.
    pub(crate) async fn exchange(
        &self,
        tenant: &str,
        version: TokenEndpointVersion,
        form: Vec<(&str, &str)>,
        credential: &AppCredential,
    ) -> Result<AccessToken, EntraError> {
        let body = self.post_grant(tenant, version, form, credential).await?;
        parse_token_response(&body)
    }

    /// Adds the app's client id and credential to `form` and posts it; the body of a 200 answer,
    /// or Entra's error typed. For grants whose answer carries more than an access token
    /// (authorization code, refresh token, device code).
    pub(crate) async fn post_grant(
        &self,
        tenant: &str,
        version: TokenEndpointVersion,
        mut form: Vec<(&str, &str)>,
        credential: &AppCredential,
    ) -> Result<bytes::Bytes, EntraError> {
        let url = self.token_url(tenant, version);
        form.push(("client_id", &credential.client_id));
        match &credential.kind {
            CredentialKind::ClientSecret(secret) => {
                form.push(("client_secret", secret.expose_secret()));
                self.post(&url, tenant, &form).await
            }
            CredentialKind::Certificate(certificate) => {
                // The audience is always the v2 endpoint of the tenant, whichever endpoint is
                // called.
                let audience = self.token_url(tenant, TokenEndpointVersion::V2);
                let assertion = sign_assertion(certificate, &credential.client_id, &audience)?;
                self.post_with_assertion(&url, tenant, form, &assertion)
                    .await
            }
            CredentialKind::AwsFederated(federated) => {
                self.exchange_federated(&url, tenant, form, federated).await
            }
        }
    }

    /// The AWS token as the assertion. One it has held too long (Entra finds it outside its
    /// valid time, e.g. after a clock jump) is discarded and the request made once more with a
    /// fresh token.
    async fn exchange_federated(
        &self,
        url: &str,
        tenant: &str,
        form: Vec<(&str, &str)>,
        federated: &FederatedCredential,
    ) -> Result<bytes::Bytes, EntraError> {
        let assertions = federated.assertions();
        let assertion = assertions.current().await.map_err(EntraError::Federation)?;
        let answer = self
            .post_with_assertion(url, tenant, form.clone(), assertion.jwt())
            .await;
        let (answer, presented) = match answer {
            Err(EntraError::AssertionExpired { .. }) => {
                assertions.discard(&assertion).await;
                let fresh = assertions.current().await.map_err(EntraError::Federation)?;
                let answer = self
                    .post_with_assertion(url, tenant, form, fresh.jwt())
                    .await;
                (answer, fresh.context())
            }
            other => (other, assertion.context()),
        };
        answer.map_err(|error| error.for_federated_assertion(presented))
    }

    async fn post_with_assertion(
        &self,
        url: &str,
        tenant: &str,
        mut form: Vec<(&str, &str)>,
        assertion: &SecretString,
    ) -> Result<bytes::Bytes, EntraError> {
        form.push(("client_assertion_type", ASSERTION_TYPE));
        form.push(("client_assertion", assertion.expose_secret()));
        self.post(url, tenant, &form).await
    }

    async fn post(
        &self,
        url: &str,
        tenant: &str,
        form: &[(&str, &str)],
    ) -> Result<bytes::Bytes, EntraError> {
        let answer = crate::http::read(
            self.http
                .post(url)
                .header("Accept", "application/json")
                .form(form)
                .send()
                .await,
        )
        .await
        .map_err(EntraError::Transport)?;
        let (status, retry_after, body) = (answer.status, answer.retry_after, answer.body);
        if status != 200 {
            return Err(EntraError::from_response(
                tenant,
                status,
                retry_after,
                &body,
            ));
        }
        Ok(body)
    }
}

pub(crate) fn parse_token_response(body: &[u8]) -> Result<AccessToken, EntraError> {
    let parsed: TokenResponse = serde_json::from_slice(body).map_err(|error| {
        EntraError::MalformedResponse(format!(
            "token response is not JSON with access_token ({error})"
        ))
    })?;
    let expires_in = match parsed.expires_in {
        Some(serde_json::Value::Number(number)) => number.as_i64(),
        Some(serde_json::Value::String(text)) => text.trim().parse::<i64>().ok(),
        _ => None,
    }
    .filter(|seconds| *seconds > 0)
    .ok_or_else(|| {
        EntraError::MalformedResponse("token response has no valid expires_in".into())
    })?;
    let claims = decode_payload(parsed.access_token.expose_secret())
        .map_err(|error| EntraError::MalformedResponse(error.to_string()))?;
    Ok(AccessToken {
        token: parsed.access_token,
        token_type: parsed.token_type.unwrap_or_else(|| "Bearer".into()),
        expires_at: Utc::now() + chrono::Duration::seconds(expires_in),
        claims,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::entra::claims::fake_jwt;

    #[test]
    fn parses_v2_and_v1_responses() {
        let jwt = fake_jwt(&json!({"tid": "t", "roles": ["A"]}));
        let v2 = json!({"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599, "access_token": jwt});
        let token = parse_token_response(v2.to_string().as_bytes()).unwrap();
        assert!(token.remaining() > Duration::from_secs(3590));
        assert_eq!(token.claims.roles, vec!["A"]);
        let v1 = json!({"token_type": "Bearer", "expires_in": "4000", "expires_on": "1700000000", "resource": "r", "access_token": jwt});
        let token = parse_token_response(v1.to_string().as_bytes()).unwrap();
        assert!(token.remaining() > Duration::from_secs(3990));
    }

    #[test]
    fn malformed_responses_are_typed_and_do_not_echo_the_token() {
        let jwt = fake_jwt(&json!({"tid": "t"}));
        for body in [
            json!({"access_token": jwt}).to_string(),
            json!({"access_token": jwt, "expires_in": "soon"}).to_string(),
            json!({"access_token": "opaque-token-value", "expires_in": 10}).to_string(),
            "not json".to_owned(),
        ] {
            let error = parse_token_response(body.as_bytes()).unwrap_err();
            assert!(matches!(error, EntraError::MalformedResponse(_)));
            let message = error.to_string();
            assert!(
                !message.contains(&jwt) && !message.contains("opaque-token-value"),
                "{message}"
            );
        }
    }
}
