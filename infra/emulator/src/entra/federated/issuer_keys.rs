//! The signing keys of outside issuers, read by OIDC discovery
//! (`{iss}/.well-known/openid-configuration` → `jwks_uri`) and cached per issuer.
//!
//! Only issuers named by a federated credential of the requesting app are fetched, so a
//! client cannot make the emulator call arbitrary URLs. A key id missing from the cached set
//! triggers one new fetch, as after a key rotation at the issuer.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use jsonwebtoken::jwk::JwkSet;
use serde::Deserialize;

use super::UnverifiedJwt;
use crate::entra::token_endpoint::{JWT_BEARER, TokenForm};
use crate::state::Shared;

/// A stuck issuer must not hold a token request for long.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// The keys of one issuer, or why they could not be read (for the log only).
#[derive(Clone)]
pub(crate) struct IssuerKeys {
    pub issuer: String,
    pub keys: Result<JwkSet, String>,
}

pub(crate) struct IssuerKeyCache {
    client: reqwest::Client,
    keys: Mutex<HashMap<String, JwkSet>>,
    fetches: Mutex<u64>,
}

impl IssuerKeyCache {
    pub(crate) fn new() -> anyhow::Result<IssuerKeyCache> {
        let client = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(IssuerKeyCache {
            client,
            keys: Mutex::new(HashMap::new()),
            fetches: Mutex::new(0),
        })
    }

    /// Discovery round trips made so far (each reads two documents).
    pub(crate) fn fetches(&self) -> u64 {
        *self.fetches.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn cached(&self, issuer: &str, kid: Option<&str>) -> Option<JwkSet> {
        let keys = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
        let set = keys.get(issuer)?;
        let usable = match kid {
            Some(kid) => set.find(kid).is_some(),
            None => !set.keys.is_empty(),
        };
        usable.then(|| set.clone())
    }

    async fn fetch(&self, issuer: &str) -> Result<JwkSet, String> {
        *self.fetches.lock().unwrap_or_else(PoisonError::into_inner) += 1;
        #[derive(Deserialize)]
        struct Discovery {
            issuer: String,
            jwks_uri: String,
        }
        let discovery_url = format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        );
        let discovery: Discovery = self.get_json(&discovery_url).await?;
        if discovery.issuer != issuer {
            return Err(format!(
                "discovery document names issuer {:?}, not {issuer:?}",
                discovery.issuer
            ));
        }
        let set: JwkSet = self.get_json(&discovery.jwks_uri).await?;
        self.keys
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(issuer.to_owned(), set.clone());
        Ok(set)
    }

    async fn get_json<T: for<'de> Deserialize<'de>>(&self, url: &str) -> Result<T, String> {
        let response = self
            .client
            .get(url)
            .send()
            .await
            .map_err(|error| format!("GET {url}: {error}"))?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!("GET {url}: status {status}"));
        }
        response
            .json()
            .await
            .map_err(|error| format!("GET {url}: {error}"))
    }
}

/// The keys [`super::verify`] will need for this token request: `None` unless the request
/// carries a federated assertion whose issuer a federated credential of the app names.
pub(crate) async fn prefetch(shared: &Shared, form: &TokenForm) -> Option<IssuerKeys> {
    if form.client_assertion_type.as_deref() != Some(JWT_BEARER) {
        return None;
    }
    let jwt = UnverifiedJwt::read(form.client_assertion.as_deref()?)?;
    let client_id = form.client_id.as_deref()?;
    let issuer = jwt.claims.iss.clone()?;
    {
        let directory = shared.directory();
        let app = directory.app(client_id)?;
        if !jwt.is_federated(&app.client_id)
            || !app
                .federated_credentials
                .iter()
                .any(|credential| credential.issuer == issuer)
        {
            return None;
        }
    }
    let cache = &shared.issuer_keys;
    let keys = match cache.cached(&issuer, jwt.header.kid.as_deref()) {
        Some(set) => Ok(set),
        None => cache.fetch(&issuer).await,
    };
    if let Err(reason) = &keys {
        tracing::warn!(issuer, reason, "cannot read the federated issuer's keys");
    }
    Some(IssuerKeys { issuer, keys })
}
