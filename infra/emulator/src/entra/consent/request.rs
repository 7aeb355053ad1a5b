//! The parameters of a consent link and their validation. The consent page carries them in
//! hidden fields and the decision is checked again from them, so a hand-made POST cannot do
//! what the link could not.

use std::collections::HashMap;

use super::grants::{ConsentKind, ResourceGrant};
use super::page::ConsentError;
use super::redirect;
use crate::entra::directory::{Directory, RegisteredApp, TenantLookup};
use crate::entra::resources;

/// Scope values of sign-in that may accompany `.default` scopes and grant nothing here.
const OIDC_SCOPES: [&str; 4] = ["openid", "profile", "email", "offline_access"];

/// Form or query values by name: the first non-blank value of each name wins.
pub(crate) fn first_values(encoded: &[u8]) -> HashMap<String, String> {
    let mut values = HashMap::new();
    for (name, value) in url::form_urlencoded::parse(encoded) {
        if !value.trim().is_empty() {
            values
                .entry(name.into_owned())
                .or_insert_with(|| value.into_owned());
        }
    }
    values
}

/// A consent link as followed (from the URL) or as posted back (from the hidden fields).
#[derive(Debug, Clone)]
pub(crate) struct ConsentLink {
    pub kind: ConsentKind,
    /// The `{tenant}` path segment of the link, as sent.
    pub authority_tenant: String,
    pub client_id: Option<String>,
    pub redirect_uri: Option<String>,
    pub state: Option<String>,
    pub scope: Option<String>,
    pub response_type: Option<String>,
    pub prompt: Option<String>,
}

impl ConsentLink {
    pub(crate) fn from_values(
        kind: ConsentKind,
        authority_tenant: &str,
        values: &HashMap<String, String>,
    ) -> ConsentLink {
        let value = |name: &str| values.get(name).cloned();
        ConsentLink {
            kind,
            authority_tenant: authority_tenant.to_owned(),
            client_id: value("client_id"),
            redirect_uri: value("redirect_uri"),
            state: value("state"),
            scope: value("scope"),
            response_type: value("response_type"),
            prompt: value("prompt"),
        }
    }

    /// The hidden fields of the consent page's form.
    pub(crate) fn hidden_fields(&self) -> Vec<(&'static str, String)> {
        let mut fields = vec![
            ("kind", self.kind.as_str().to_owned()),
            ("authority_tenant", self.authority_tenant.clone()),
        ];
        for (name, value) in [
            ("client_id", &self.client_id),
            ("redirect_uri", &self.redirect_uri),
            ("state", &self.state),
            ("scope", &self.scope),
            ("response_type", &self.response_type),
            ("prompt", &self.prompt),
        ] {
            if let Some(value) = value {
                fields.push((name, value.clone()));
            }
        }
        fields
    }
}

/// A link that passed every check.
#[derive(Debug)]
pub(crate) struct ValidLink {
    /// Lower-case client id.
    pub client_id: String,
    pub app_name: String,
    /// As requested (it matched a registered one).
    pub redirect_uri: String,
    /// The tenant GUID when the link names a tenant rather than `organizations`/`common`.
    pub fixed_tenant: Option<String>,
    /// What accepting grants, per resource.
    pub grants: Vec<ResourceGrant>,
}

/// Checks a link in the order that decides which error the admin sees first.
pub(crate) fn validate(
    directory: &Directory,
    link: &ConsentLink,
) -> Result<ValidLink, ConsentError> {
    let segment = link.authority_tenant.as_str();
    let fixed_tenant = match directory.lookup_tenant(segment) {
        TenantLookup::Found(tenant) => Some(tenant.id.clone()),
        TenantLookup::MultiTenant => {
            let segment = segment.to_ascii_lowercase();
            if segment == "consumers" || (link.kind == ConsentKind::V2 && segment == "common") {
                return Err(ConsentError::new(
                    90130,
                    format!(
                        "Application '{}' is not supported over the /common or /consumers \
                         endpoints. Please use the /organizations or tenant-specific endpoint.",
                        link.client_id.as_deref().unwrap_or("")
                    ),
                ));
            }
            None
        }
        TenantLookup::Unknown => {
            return Err(ConsentError::new(
                90002,
                format!(
                    "Tenant '{segment}' not found. Check to make sure you have the correct \
                     tenant ID and are signing into the correct cloud."
                ),
            ));
        }
        TenantLookup::Malformed => {
            return Err(ConsentError::new(
                900023,
                format!(
                    "Specified tenant identifier '{segment}' is neither a valid DNS name, nor \
                     a valid external domain."
                ),
            ));
        }
    };
    let client_id = link
        .client_id
        .as_deref()
        .ok_or_else(|| missing("client_id"))?;
    let app = directory.app(client_id).ok_or_else(|| {
        ConsentError::new(
            700016,
            format!(
                "Application with identifier '{client_id}' was not found in the directory \
                 '{segment}'. This can happen if the application has not been installed by the \
                 administrator of the tenant or consented to by any user in the tenant. You may \
                 have sent your authentication request to the wrong tenant."
            ),
        )
    })?;
    let redirect_uri = link
        .redirect_uri
        .as_deref()
        .ok_or_else(|| missing("redirect_uri"))?;
    if !app
        .redirect_uris
        .iter()
        .any(|registered| redirect::matches(registered, redirect_uri))
    {
        return Err(ConsentError::new(
            50011,
            format!(
                "The redirect URI '{redirect_uri}' specified in the request does not match the \
                 redirect URIs configured for the application '{}'. Make sure the redirect URI \
                 sent in the request matches one added to your application in the Azure portal.",
                app.client_id
            ),
        ));
    }
    if app.disabled {
        return Err(ConsentError::new(
            7000112,
            format!(
                "Application '{}'({}) is disabled.",
                app.client_id, app.display_name
            ),
        ));
    }
    let grants = match link.kind {
        ConsentKind::V2 => scope_grants(
            app,
            link.scope.as_deref().ok_or_else(|| missing("scope"))?,
            segment,
        )?,
        ConsentKind::Legacy => {
            check_legacy(link)?;
            app_grants(app)?
        }
        ConsentKind::AdminConsent => app_grants(app)?,
    };
    Ok(ValidLink {
        client_id: app.client_id.clone(),
        app_name: app.display_name.clone(),
        redirect_uri: redirect_uri.to_owned(),
        fixed_tenant,
        grants,
    })
}

pub(crate) fn missing(name: &str) -> ConsentError {
    ConsentError::new(
        900144,
        format!("The request body must contain the following parameter: '{name}'."),
    )
}

fn invalid_request(message: impl Into<String>) -> ConsentError {
    ConsentError::new(90023, message)
}

fn check_legacy(link: &ConsentLink) -> Result<(), ConsentError> {
    let response_type = link
        .response_type
        .as_deref()
        .ok_or_else(|| missing("response_type"))?;
    if !response_type.split_whitespace().any(|item| item == "code") {
        return Err(invalid_request(format!(
            "The emulator serves /oauth2/authorize as an admin consent link only: \
             response_type must be 'code', not '{response_type}'."
        )));
    }
    match link.prompt.as_deref() {
        Some("consent" | "admin_consent") => Ok(()),
        other => Err(invalid_request(format!(
            "The emulator serves /oauth2/authorize as an admin consent link only: prompt must \
             be 'consent' or 'admin_consent', not '{}'.",
            other.unwrap_or("")
        ))),
    }
}

/// v2: the app's required roles on each `{resource}/.default` of the scope.
fn scope_grants(
    app: &RegisteredApp,
    scope: &str,
    tenant: &str,
) -> Result<Vec<ResourceGrant>, ConsentError> {
    const DEFAULT: &str = "/.default";
    let invalid_scope = || {
        ConsentError::new(
            70011,
            format!(
                "The provided value for the input parameter 'scope' is not valid. The scope \
                 '{scope}' is not valid: application permissions are asked as \
                 '{{resource}}/.default'."
            ),
        )
    };
    let mut grants: Vec<ResourceGrant> = Vec::new();
    for item in scope.split_whitespace() {
        if OIDC_SCOPES.contains(&item.to_ascii_lowercase().as_str()) {
            continue;
        }
        let named = item
            .len()
            .checked_sub(DEFAULT.len())
            .and_then(|cut| {
                let suffix = item.get(cut..)?;
                suffix.eq_ignore_ascii_case(DEFAULT).then(|| &item[..cut])
            })
            .map(|resource| resource.trim_end_matches('/'))
            .filter(|resource| !resource.is_empty())
            .ok_or_else(invalid_scope)?;
        let resource = resources::find(named).ok_or_else(|| {
            ConsentError::new(
                500011,
                format!(
                    "The resource principal named {named} was not found in the tenant named \
                     {tenant}. This can happen if the application has not been installed by the \
                     administrator of the tenant or consented to by any user in the tenant."
                ),
            )
        })?;
        if grants.iter().any(|grant| grant.resource == resource) {
            continue;
        }
        let roles = required_roles(app, resource).ok_or_else(|| {
            ConsentError::new(
                650056,
                format!(
                    "Misconfigured application. The client has not listed any permissions for \
                     '{named}' in the requested permissions in the client's application \
                     registration."
                ),
            )
        })?;
        grants.push(ResourceGrant {
            resource,
            named: named.to_owned(),
            roles,
        });
    }
    if grants.is_empty() {
        return Err(invalid_scope());
    }
    Ok(grants)
}

/// `/adminconsent` and legacy: every permission the app registration lists.
fn app_grants(app: &RegisteredApp) -> Result<Vec<ResourceGrant>, ConsentError> {
    let mut grants: Vec<ResourceGrant> = Vec::new();
    for required in &app.required_permissions {
        let Some(resource) = resources::find(&required.resource) else {
            continue;
        };
        if grants.iter().any(|grant| grant.resource == resource) {
            continue;
        }
        grants.push(ResourceGrant {
            resource,
            named: required.resource.clone(),
            roles: required_roles(app, resource).unwrap_or_default(),
        });
    }
    if grants.is_empty() {
        return Err(ConsentError::new(
            650056,
            format!(
                "Misconfigured application. The client '{}' has not listed any permissions in \
                 the requested permissions in the client's application registration.",
                app.client_id
            ),
        ));
    }
    Ok(grants)
}

/// The roles the app registration lists for the resource (under any of its names), without
/// repeats; `None` when it lists none for it.
fn required_roles(app: &RegisteredApp, resource: &resources::Resource) -> Option<Vec<String>> {
    let mut listed = false;
    let mut roles: Vec<String> = Vec::new();
    for required in &app.required_permissions {
        if resources::find(&required.resource) != Some(resource) {
            continue;
        }
        listed = true;
        for role in &required.roles {
            if !roles.contains(role) {
                roles.push(role.clone());
            }
        }
    }
    listed.then_some(roles)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_non_blank_value_wins() {
        let values = first_values(b"state=&state=a%20b&state=c&client_id=x");
        assert_eq!(values["state"], "a b");
        assert_eq!(values["client_id"], "x");
        assert!(!values.contains_key("scope"));
    }
}
