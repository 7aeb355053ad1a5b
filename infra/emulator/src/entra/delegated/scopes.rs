//! The `scope` of a delegated request: OpenID scopes plus the scopes of one resource
//! (`{resource}/{name}`, `{resource}/.default`, a bare name for Graph, or the calling app's own
//! API as `api://{client_id}/{name}`).

use crate::entra::directory::{Tenant, normalize_guid};
use crate::entra::errors::EntraError;
use crate::entra::resources::{self, Resource};

/// Scope values of sign-in that name no resource.
pub(crate) const OIDC_SCOPES: [&str; 4] = ["openid", "profile", "email", "offline_access"];

/// Whom the access token is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    /// One of the Microsoft APIs.
    Api(&'static Resource),
    /// The calling app itself (a token the app's own API, e.g. a middle tier, receives).
    OwnApp,
}

#[derive(Debug, Clone)]
pub(crate) struct ScopeRequest {
    /// The resource as the client named it: the token's `aud`.
    pub named: String,
    pub target: Target,
    /// Explicit scope names (not `.default`).
    pub scopes: Vec<String>,
    pub default: bool,
    /// OpenID scopes asked, lower-case.
    pub oidc: Vec<String>,
    /// Only OpenID scopes were asked (a sign-in for the ID token): Entra then answers an access
    /// token for Microsoft Graph carrying those scopes, and no consent to an API is needed.
    pub identity_only: bool,
}

impl ScopeRequest {
    pub(crate) fn wants(&self, oidc: &str) -> bool {
        self.oidc.iter().any(|s| s == oidc)
    }

    /// The scopes granted for this request: the consented ones for an API (empty: consent
    /// missing), the asked ones for the app's own API.
    pub(crate) fn granted(&self, tenant: &Tenant, client_id: &str, user_oid: &str) -> Vec<String> {
        if self.identity_only {
            return self
                .oidc
                .iter()
                .filter(|scope| *scope != "offline_access")
                .cloned()
                .collect();
        }
        match self.target {
            Target::Api(resource) => tenant.delegated_scopes(client_id, resource, user_oid),
            Target::OwnApp if self.scopes.is_empty() => vec!["access_as_user".to_owned()],
            Target::OwnApp => self.scopes.clone(),
        }
    }

    /// The answer's `scope`: each granted scope under the resource name, then OpenID scopes.
    pub(crate) fn answer_scope(&self, granted: &[String]) -> String {
        if self.identity_only {
            return self.oidc.join(" ");
        }
        let mut items: Vec<String> = granted
            .iter()
            .map(|scope| format!("{}/{scope}", self.named))
            .collect();
        items.extend(self.oidc.iter().cloned());
        items.join(" ")
    }

    /// Explicit scopes asked but not granted.
    pub(crate) fn missing<'a>(&'a self, granted: &[String]) -> Vec<&'a str> {
        self.scopes
            .iter()
            .filter(|asked| !granted.iter().any(|g| g.eq_ignore_ascii_case(asked)))
            .map(String::as_str)
            .collect()
    }
}

fn own_app(resource: &str, client_id: &str) -> bool {
    let bare = resource
        .strip_prefix("api://")
        .unwrap_or(resource)
        .to_ascii_lowercase();
    normalize_guid(&bare).is_some_and(|id| id == client_id)
}

/// Parses a delegated `scope` for the app `client_id` (lower-case GUID).
pub(crate) fn parse_scope(scope: &str, client_id: &str) -> Result<ScopeRequest, EntraError> {
    let mut oidc = Vec::new();
    let mut found: Option<(String, Target)> = None;
    let mut scopes: Vec<String> = Vec::new();
    let mut default = false;
    for item in scope.split_whitespace() {
        let lower = item.to_ascii_lowercase();
        if OIDC_SCOPES.contains(&lower.as_str()) {
            if !oidc.contains(&lower) {
                oidc.push(lower);
            }
            continue;
        }
        let (resource, name) = match item.rsplit_once('/') {
            Some((resource, name)) => (resource.trim_end_matches('/').to_owned(), name),
            // A bare scope name is a Microsoft Graph scope, as at Entra.
            None => (resources::GRAPH.uris[0].to_owned(), item),
        };
        if resource.is_empty() || name.is_empty() {
            return Err(EntraError::invalid_scope(scope));
        }
        let target = if own_app(&resource, client_id) {
            Target::OwnApp
        } else {
            match resources::find(&resource) {
                Some(found) => Target::Api(found),
                None => {
                    return Err(EntraError::new(
                        axum::http::StatusCode::BAD_REQUEST,
                        "invalid_resource",
                        500011,
                        format!(
                            "The resource principal named {} was not found in the tenant.",
                            crate::entra::errors::clip(&resource)
                        ),
                    ));
                }
            }
        };
        match &found {
            None => found = Some((resource, target)),
            Some((_, known)) if *known == target => {}
            Some(_) => return Err(EntraError::scope_with_several_resources(scope)),
        }
        if name.eq_ignore_ascii_case(".default") {
            default = true;
        } else if !scopes.iter().any(|s| s.eq_ignore_ascii_case(name)) {
            scopes.push(name.to_owned());
        }
    }
    let Some((named, target)) = found else {
        if oidc.iter().any(|scope| scope == "openid") {
            return Ok(ScopeRequest {
                named: resources::GRAPH.uris[0].to_owned(),
                target: Target::Api(&resources::GRAPH),
                scopes,
                default,
                oidc,
                identity_only: true,
            });
        }
        return Err(EntraError::invalid_scope(scope));
    };
    Ok(ScopeRequest {
        named,
        target,
        scopes,
        default,
        oidc,
        identity_only: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const APP: &str = "11111111-1111-4111-8111-111111111111";

    #[test]
    fn parses_resources_scopes_and_oidc() {
        let request = parse_scope(
            "openid offline_access https://api.security.microsoft.com/Incident.Read",
            APP,
        )
        .unwrap();
        assert_eq!(request.named, "https://api.security.microsoft.com");
        assert_eq!(request.target, Target::Api(&resources::M365_DEFENDER));
        assert_eq!(request.scopes, ["Incident.Read"]);
        assert!(request.wants("openid") && request.wants("offline_access"));
        let own = parse_scope(&format!("api://{APP}/access_as_user"), APP).unwrap();
        assert_eq!(own.target, Target::OwnApp);
        let default = parse_scope("https://graph.microsoft.com/.default", APP).unwrap();
        assert!(default.default && default.scopes.is_empty());
        let bare = parse_scope("SecurityIncident.Read.All", APP).unwrap();
        assert_eq!(bare.target, Target::Api(&resources::GRAPH));
        let code = |scope: &str| parse_scope(scope, APP).unwrap_err().code;
        assert_eq!(code("offline_access"), 70011);
        let identity = parse_scope("openid profile", APP).unwrap();
        assert!(identity.identity_only);
        assert_eq!(identity.answer_scope(&[]), "openid profile");
        assert_eq!(code("https://example.com/x"), 500011);
        assert_eq!(
            code("https://graph.microsoft.com/.default https://api.security.microsoft.com/x"),
            700022
        );
    }
}
