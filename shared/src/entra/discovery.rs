//! Resolving a verified domain to its tenant id through the tenant's OpenID metadata, the way
//! Microsoft's own tools do. Results are kept for the life of the process: a domain's tenant
//! does not change.

use std::collections::HashMap;
use std::sync::Mutex;

use serde::Deserialize;

use super::errors::EntraError;
use crate::cloud::CloudEndpoints;
use crate::tenant_id::{TenantId, TenantRef};

pub struct TenantResolver {
    http: reqwest::Client,
    endpoints: CloudEndpoints,
    known: Mutex<HashMap<String, TenantId>>,
}

#[derive(Deserialize)]
struct OpenIdConfiguration {
    issuer: String,
}

impl TenantResolver {
    pub fn new(http: reqwest::Client, endpoints: CloudEndpoints) -> TenantResolver {
        TenantResolver {
            http,
            endpoints,
            known: Mutex::new(HashMap::new()),
        }
    }

    pub async fn resolve(&self, tenant: &TenantRef) -> Result<TenantId, EntraError> {
        let domain = match tenant {
            TenantRef::Id(id) => return Ok(id.clone()),
            TenantRef::Domain(domain) => domain,
        };
        if let Some(id) = self.known.lock().expect("resolver poisoned").get(domain) {
            return Ok(id.clone());
        }
        let url = self
            .endpoints
            .authority_url(domain, "v2.0/.well-known/openid-configuration");
        let response =
            self.http.get(&url).send().await.map_err(|error| {
                EntraError::Transport(format!("tenant discovery failed: {error}"))
            })?;
        let status = response.status().as_u16();
        let body = response
            .bytes()
            .await
            .map_err(|error| EntraError::Transport(format!("tenant discovery failed: {error}")))?;
        if status != 200 {
            return Err(EntraError::from_response(domain, status, None, &body));
        }
        let configuration: OpenIdConfiguration = serde_json::from_slice(&body).map_err(|_| {
            EntraError::MalformedResponse("tenant discovery answered without an issuer".into())
        })?;
        let id = tenant_from_issuer(&configuration.issuer).ok_or_else(|| {
            EntraError::MalformedResponse(format!(
                "tenant discovery issuer {:?} names no tenant id",
                configuration.issuer
            ))
        })?;
        self.known
            .lock()
            .expect("resolver poisoned")
            .insert(domain.clone(), id.clone());
        Ok(id)
    }
}

/// `https://login.microsoftonline.com/{tid}/v2.0` → `{tid}`.
fn tenant_from_issuer(issuer: &str) -> Option<TenantId> {
    issuer
        .split('/')
        .find_map(|segment| TenantId::parse(segment).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_tenant_in_an_issuer() {
        let id = tenant_from_issuer(
            "https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47/v2.0",
        )
        .unwrap();
        assert_eq!(id.as_str(), "72f988bf-86f1-41af-91ab-2d7cd011db47");
        assert!(tenant_from_issuer("https://sts.windows.net/{tenantid}/").is_none());
    }
}
