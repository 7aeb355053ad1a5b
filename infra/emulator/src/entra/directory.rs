//! The live directory: apps and tenants as the endpoints read them and the control API changes
//! them. Ids are stored lower-case so that every lookup is case-insensitive, as Entra's are.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::entra::certificates::Certificate;
use crate::entra::resources::{self, Resource};
use crate::handle::ControlError;
use crate::scenario::{
    AppConfig, CertificateConfig, DelegatedGrantConfig, DelegatedSettings,
    FederatedCredentialConfig, GrantConfig, RequiredPermissionConfig, Scenario, SecretConfig,
    TenantConfig, UserConfig,
};

/// What the `{tenant}` part of a URL is, before looking anything up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TenantSegment {
    Id(String),
    Domain(String),
    /// `common`, `organizations`, `consumers`: no single tenant.
    MultiTenant(String),
    Malformed,
}

impl TenantSegment {
    pub(crate) fn classify(segment: &str) -> TenantSegment {
        let lower = segment.to_ascii_lowercase();
        if let Some(id) = normalize_guid(&lower) {
            return TenantSegment::Id(id);
        }
        if matches!(lower.as_str(), "common" | "organizations" | "consumers") {
            return TenantSegment::MultiTenant(lower);
        }
        if is_domain_name(&lower) {
            return TenantSegment::Domain(lower);
        }
        TenantSegment::Malformed
    }
}

/// Lower-case hyphenated form of a GUID, or `None` when the text is not one.
pub(crate) fn normalize_guid(text: &str) -> Option<String> {
    // Uuid::parse_str also takes braces and URNs; Entra ids are the plain 36-character form.
    if text.len() != 36 {
        return None;
    }
    Uuid::parse_str(text).ok().map(|id| id.to_string())
}

fn is_domain_name(text: &str) -> bool {
    text.len() <= 253
        && text.contains('.')
        && text.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

/// How a `{tenant}` URL segment resolved.
pub(crate) enum TenantLookup<'a> {
    Found(&'a Tenant),
    MultiTenant,
    Unknown,
    Malformed,
}

pub(crate) struct Directory {
    pub token_lifetime_seconds: u64,
    /// Delay before the grants of an accepted admin consent take effect.
    pub consent_propagation_ms: u64,
    /// Lifetimes of the delegated flows.
    pub delegated: DelegatedSettings,
    apps: Vec<RegisteredApp>,
    tenants: Vec<Tenant>,
}

pub(crate) struct RegisteredApp {
    pub client_id: String,
    pub display_name: String,
    pub disabled: bool,
    pub secrets: Vec<SecretConfig>,
    pub certificates: Vec<Certificate>,
    pub redirect_uris: Vec<String>,
    pub required_permissions: Vec<RequiredPermissionConfig>,
    pub allow_public_client_flows: bool,
    pub federated_credentials: Vec<FederatedCredentialConfig>,
}

pub(crate) struct Tenant {
    pub id: String,
    pub display_name: String,
    pub domains: Vec<String>,
    pub region_scope: String,
    grants: Vec<Grant>,
    pub users: Vec<User>,
    delegated_grants: Vec<DelegatedGrant>,
}

/// A test user; ids lower-case.
#[derive(Debug, Clone)]
pub(crate) struct User {
    pub oid: String,
    pub upn: String,
    pub display_name: String,
    pub portal_roles: Vec<String>,
    pub mfa_required: bool,
    pub mfa_registered: bool,
}

struct DelegatedGrant {
    client_id: String,
    resource: &'static Resource,
    scopes: Vec<String>,
    /// The user's oid; `None`: every user of the tenant.
    user: Option<String>,
}

struct Grant {
    client_id: String,
    resource: &'static Resource,
    roles: Vec<String>,
}

/// Whether a secret matched, for the two distinct AADSTS answers.
pub(crate) enum SecretCheck {
    Valid,
    Expired,
    Wrong,
}

impl Directory {
    pub(crate) fn from_scenario(scenario: &Scenario) -> anyhow::Result<Directory> {
        scenario.validate()?;
        let mut directory = Directory {
            token_lifetime_seconds: scenario.token_lifetime_seconds,
            consent_propagation_ms: scenario.consent_propagation_ms,
            delegated: scenario.delegated,
            apps: Vec::new(),
            tenants: Vec::new(),
        };
        for app in &scenario.apps {
            directory.apps.push(RegisteredApp::from_config(app)?);
        }
        for tenant in &scenario.tenants {
            directory.tenants.push(Tenant::from_config(tenant)?);
        }
        Ok(directory)
    }

    pub(crate) fn lookup_tenant(&self, segment: &str) -> TenantLookup<'_> {
        match TenantSegment::classify(segment) {
            TenantSegment::Id(id) => self
                .tenants
                .iter()
                .find(|t| t.id == id)
                .map_or(TenantLookup::Unknown, TenantLookup::Found),
            TenantSegment::Domain(domain) => self
                .tenants
                .iter()
                .find(|t| t.domains.contains(&domain))
                .map_or(TenantLookup::Unknown, TenantLookup::Found),
            TenantSegment::MultiTenant(_) => TenantLookup::MultiTenant,
            TenantSegment::Malformed => TenantLookup::Malformed,
        }
    }

    /// Every tenant, in scenario order (then added ones).
    pub(crate) fn tenants(&self) -> &[Tenant] {
        &self.tenants
    }

    /// The tenant id a segment stands for, if it names a known tenant.
    pub(crate) fn tenant_id_of(&self, segment: &str) -> Option<String> {
        match self.lookup_tenant(segment) {
            TenantLookup::Found(tenant) => Some(tenant.id.clone()),
            _ => None,
        }
    }

    pub(crate) fn app(&self, client_id: &str) -> Option<&RegisteredApp> {
        let client_id = normalize_guid(client_id)?;
        self.apps.iter().find(|app| app.client_id == client_id)
    }

    fn app_mut(&mut self, client_id: &str) -> Result<&mut RegisteredApp, ControlError> {
        let wanted = normalize_guid(client_id);
        self.apps
            .iter_mut()
            .find(|app| Some(&app.client_id) == wanted.as_ref())
            .ok_or_else(|| ControlError::NotFound(format!("no app {client_id}")))
    }

    pub(crate) fn tenant_mut(&mut self, segment: &str) -> Result<&mut Tenant, ControlError> {
        let id = self
            .tenant_id_of(segment)
            .ok_or_else(|| ControlError::NotFound(format!("no tenant {segment}")))?;
        self.tenants
            .iter_mut()
            .find(|tenant| tenant.id == id)
            .ok_or_else(|| ControlError::NotFound(format!("no tenant {segment}")))
    }

    pub(crate) fn add_app(&mut self, config: &AppConfig) -> Result<(), ControlError> {
        config.validate().map_err(ControlError::invalid)?;
        let app = RegisteredApp::from_config(config).map_err(ControlError::invalid)?;
        if self.app(&app.client_id).is_some() {
            return Err(ControlError::Conflict(format!(
                "app {} already exists",
                app.client_id
            )));
        }
        self.apps.push(app);
        Ok(())
    }

    pub(crate) fn set_secrets(
        &mut self,
        client_id: &str,
        secrets: Vec<SecretConfig>,
    ) -> Result<(), ControlError> {
        if secrets.iter().any(|secret| secret.value.is_empty()) {
            return Err(ControlError::Invalid("a secret value is empty".to_owned()));
        }
        self.app_mut(client_id)?.secrets = secrets;
        Ok(())
    }

    pub(crate) fn set_certificates(
        &mut self,
        client_id: &str,
        certificates: &[CertificateConfig],
    ) -> Result<(), ControlError> {
        let parsed = certificates
            .iter()
            .map(|certificate| Certificate::from_pem(&certificate.pem))
            .collect::<anyhow::Result<Vec<_>>>()
            .map_err(ControlError::invalid)?;
        self.app_mut(client_id)?.certificates = parsed;
        Ok(())
    }

    /// Replaces the app's federated identity credentials.
    pub(crate) fn set_federated_credentials(
        &mut self,
        client_id: &str,
        credentials: Vec<FederatedCredentialConfig>,
    ) -> Result<(), ControlError> {
        crate::scenario::validate_federated_credentials(&credentials)
            .map_err(ControlError::invalid)?;
        self.app_mut(client_id)?.federated_credentials = credentials;
        Ok(())
    }

    pub(crate) fn set_app_disabled(
        &mut self,
        client_id: &str,
        disabled: bool,
    ) -> Result<(), ControlError> {
        self.app_mut(client_id)?.disabled = disabled;
        Ok(())
    }

    pub(crate) fn add_tenant(&mut self, config: &TenantConfig) -> Result<(), ControlError> {
        config.validate().map_err(ControlError::invalid)?;
        let tenant = Tenant::from_config(config).map_err(ControlError::invalid)?;
        if self.tenants.iter().any(|t| t.id == tenant.id) {
            return Err(ControlError::Conflict(format!(
                "tenant {} already exists",
                tenant.id
            )));
        }
        if let Some(domain) = tenant
            .domains
            .iter()
            .find(|domain| self.tenant_id_of(domain).is_some())
        {
            return Err(ControlError::Conflict(format!(
                "domain {domain} already belongs to a tenant"
            )));
        }
        self.tenants.push(tenant);
        Ok(())
    }

    pub(crate) fn set_grant(
        &mut self,
        tenant_segment: &str,
        config: &GrantConfig,
    ) -> Result<(), ControlError> {
        config.validate().map_err(ControlError::invalid)?;
        let grant = Grant::from_config(config).map_err(ControlError::invalid)?;
        let tenant = self.tenant_mut(tenant_segment)?;
        tenant
            .grants
            .retain(|g| !(g.client_id == grant.client_id && g.resource == grant.resource));
        tenant.grants.push(grant);
        Ok(())
    }

    /// Removes every grant of the app: the tenant no longer knows it (AADSTS700016).
    pub(crate) fn revoke_consent(
        &mut self,
        tenant_segment: &str,
        client_id: &str,
    ) -> Result<(), ControlError> {
        let client_id = normalize_guid(client_id)
            .ok_or_else(|| ControlError::Invalid(format!("{client_id} is not a GUID")))?;
        let tenant = self.tenant_mut(tenant_segment)?;
        tenant.grants.retain(|g| g.client_id != client_id);
        Ok(())
    }
}

impl RegisteredApp {
    fn from_config(config: &AppConfig) -> anyhow::Result<RegisteredApp> {
        Ok(RegisteredApp {
            client_id: normalize_guid(&config.client_id)
                .ok_or_else(|| anyhow::anyhow!("app client_id is not a GUID"))?,
            display_name: config.display_name.clone(),
            disabled: config.disabled,
            secrets: config.secrets.clone(),
            certificates: config
                .certificates
                .iter()
                .map(|certificate| Certificate::from_pem(&certificate.pem))
                .collect::<anyhow::Result<_>>()?,
            redirect_uris: config.redirect_uris.clone(),
            required_permissions: config.required_permissions.clone(),
            allow_public_client_flows: config.allow_public_client_flows,
            federated_credentials: config.federated_credentials.clone(),
        })
    }

    pub(crate) fn check_secret(&self, presented: &str, now: DateTime<Utc>) -> SecretCheck {
        let mut matching = self
            .secrets
            .iter()
            .filter(|secret| secret.value == presented)
            .peekable();
        if matching.peek().is_none() {
            return SecretCheck::Wrong;
        }
        if matching.any(|secret| secret.expires.is_none_or(|expires| expires > now)) {
            SecretCheck::Valid
        } else {
            SecretCheck::Expired
        }
    }
}

impl Tenant {
    fn from_config(config: &TenantConfig) -> anyhow::Result<Tenant> {
        Ok(Tenant {
            id: normalize_guid(&config.id)
                .ok_or_else(|| anyhow::anyhow!("tenant id is not a GUID"))?,
            display_name: config.display_name.clone(),
            domains: config
                .domains
                .iter()
                .map(|domain| domain.to_ascii_lowercase())
                .collect(),
            region_scope: config.region_scope.clone(),
            grants: config
                .grants
                .iter()
                .map(Grant::from_config)
                .collect::<anyhow::Result<_>>()?,
            users: config.users.iter().map(User::from_config).collect(),
            delegated_grants: Vec::new(),
        })
        .and_then(|mut tenant| {
            for grant in &config.delegated_grants {
                tenant
                    .set_delegated_grant(grant)
                    .map_err(|error| anyhow::anyhow!("{error}"))?;
            }
            Ok(tenant)
        })
    }

    /// The user named by oid or upn (case-insensitive).
    pub(crate) fn user(&self, name: &str) -> Option<&User> {
        let oid = normalize_guid(&name.to_ascii_lowercase());
        self.users
            .iter()
            .find(|user| Some(&user.oid) == oid.as_ref() || user.upn.eq_ignore_ascii_case(name))
    }

    pub(crate) fn user_mut(&mut self, name: &str) -> Result<&mut User, ControlError> {
        let oid = self
            .user(name)
            .map(|user| user.oid.clone())
            .ok_or_else(|| {
                ControlError::NotFound(format!("no user {name} in tenant {}", self.id))
            })?;
        self.users
            .iter_mut()
            .find(|user| user.oid == oid)
            .ok_or_else(|| ControlError::NotFound(format!("no user {name}")))
    }

    pub(crate) fn add_user(&mut self, config: &UserConfig) -> Result<(), ControlError> {
        config.validate().map_err(ControlError::invalid)?;
        let user = User::from_config(config);
        if self.user(&user.oid).is_some() || self.user(&user.upn).is_some() {
            return Err(ControlError::Conflict(format!(
                "user {} already exists in tenant {}",
                user.upn, self.id
            )));
        }
        self.users.push(user);
        Ok(())
    }

    /// Sets or replaces the delegated grant of (app, resource, user or everyone).
    pub(crate) fn set_delegated_grant(
        &mut self,
        config: &DelegatedGrantConfig,
    ) -> Result<(), ControlError> {
        config.validate().map_err(ControlError::invalid)?;
        let user = match &config.user {
            Some(name) => Some(
                self.user(name)
                    .ok_or_else(|| {
                        ControlError::NotFound(format!("no user {name} in tenant {}", self.id))
                    })?
                    .oid
                    .clone(),
            ),
            None => None,
        };
        let grant = DelegatedGrant {
            client_id: normalize_guid(&config.client_id.to_ascii_lowercase()).unwrap_or_default(),
            resource: resources::find(&config.resource)
                .ok_or_else(|| ControlError::Invalid("unknown resource".to_owned()))?,
            scopes: config.scopes.clone(),
            user,
        };
        self.delegated_grants.retain(|g| {
            !(g.client_id == grant.client_id
                && g.resource == grant.resource
                && g.user == grant.user)
        });
        self.delegated_grants.push(grant);
        Ok(())
    }

    /// Adds scopes to one user's consent (what accepting the sign-in page does).
    pub(crate) fn add_user_consent(
        &mut self,
        client_id: &str,
        resource: &'static Resource,
        user_oid: &str,
        scopes: &[String],
    ) {
        let existing = self.delegated_grants.iter_mut().find(|g| {
            g.client_id == client_id
                && g.resource == resource
                && g.user.as_deref() == Some(user_oid)
        });
        match existing {
            Some(grant) => {
                for scope in scopes {
                    if !grant.scopes.iter().any(|s| s.eq_ignore_ascii_case(scope)) {
                        grant.scopes.push(scope.clone());
                    }
                }
            }
            None => self.delegated_grants.push(DelegatedGrant {
                client_id: client_id.to_owned(),
                resource,
                scopes: scopes.to_vec(),
                user: Some(user_oid.to_owned()),
            }),
        }
    }

    /// Removes the app's delegated grants (of one user, or all of them).
    pub(crate) fn revoke_delegated_grants(&mut self, client_id: &str, user_oid: Option<&str>) {
        self.delegated_grants.retain(|g| {
            !(g.client_id == client_id && user_oid.is_none_or(|oid| g.user.as_deref() == Some(oid)))
        });
    }

    /// Delegated scopes the user may use through the app on the resource: the tenant-wide
    /// (admin) consent plus the user's own, without repeats.
    pub(crate) fn delegated_scopes(
        &self,
        client_id: &str,
        resource: &Resource,
        user_oid: &str,
    ) -> Vec<String> {
        let mut scopes: Vec<String> = Vec::new();
        for grant in self.delegated_grants.iter().filter(|g| {
            g.client_id == client_id
                && g.resource == resource
                && g.user.as_deref().is_none_or(|oid| oid == user_oid)
        }) {
            for scope in &grant.scopes {
                if !scopes.iter().any(|s| s.eq_ignore_ascii_case(scope)) {
                    scopes.push(scope.clone());
                }
            }
        }
        scopes
    }

    /// An app is in a tenant once the tenant granted it anything, even an empty set of roles.
    pub(crate) fn has_consented(&self, client_id: &str) -> bool {
        self.grants.iter().any(|g| g.client_id == client_id)
    }

    /// Roles granted to the app on the resource, in grant order, without repeats.
    pub(crate) fn roles(&self, client_id: &str, resource: &Resource) -> Vec<String> {
        let mut roles: Vec<String> = Vec::new();
        for grant in self
            .grants
            .iter()
            .filter(|g| g.client_id == client_id && g.resource == resource)
        {
            for role in &grant.roles {
                if !roles.contains(role) {
                    roles.push(role.clone());
                }
            }
        }
        roles
    }
}

impl User {
    fn from_config(config: &UserConfig) -> User {
        User {
            oid: normalize_guid(&config.oid.to_ascii_lowercase()).unwrap_or_default(),
            upn: config.upn.clone(),
            display_name: config.display_name.clone(),
            portal_roles: config.portal_roles.clone(),
            mfa_required: config.mfa_required,
            mfa_registered: config.mfa_registered,
        }
    }
}

impl Grant {
    fn from_config(config: &GrantConfig) -> anyhow::Result<Grant> {
        Ok(Grant {
            client_id: normalize_guid(&config.client_id)
                .ok_or_else(|| anyhow::anyhow!("grant client_id is not a GUID"))?,
            resource: resources::find(&config.resource)
                .ok_or_else(|| anyhow::anyhow!("unknown resource {}", config.resource))?,
            roles: config.roles.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_tenant_segments() {
        assert_eq!(
            TenantSegment::classify("22222222-2222-4222-8222-22222222222A"),
            TenantSegment::Id("22222222-2222-4222-8222-22222222222a".to_owned())
        );
        assert_eq!(
            TenantSegment::classify("Contoso.OnMicrosoft.com"),
            TenantSegment::Domain("contoso.onmicrosoft.com".to_owned())
        );
        assert_eq!(
            TenantSegment::classify("Common"),
            TenantSegment::MultiTenant("common".to_owned())
        );
        for malformed in [
            "contoso",
            "a..b",
            "-a.com",
            "a_b.com",
            "{22222222-2222-4222-8222-222222222222}",
            "",
        ] {
            assert_eq!(
                TenantSegment::classify(malformed),
                TenantSegment::Malformed,
                "{malformed}"
            );
        }
    }

    #[test]
    fn resolves_tenants_by_id_or_domain() {
        let directory = Directory::from_scenario(&Scenario::demo()).unwrap();
        let contoso = "22222222-2222-4222-8222-222222222222";
        assert_eq!(directory.tenant_id_of(contoso).as_deref(), Some(contoso));
        assert_eq!(
            directory.tenant_id_of("CONTOSO.com").as_deref(),
            Some(contoso)
        );
        assert_eq!(directory.tenant_id_of("unknown.example"), None);
    }

    #[test]
    fn secret_expiry_needs_every_match_expired() {
        let mut directory = Directory::from_scenario(&Scenario::demo()).unwrap();
        let client_id = "11111111-1111-4111-8111-111111111111";
        let past = "2000-01-01T00:00:00Z".parse().unwrap();
        let future = "2100-01-01T00:00:00Z".parse().unwrap();
        let secret = |value: &str, expires| SecretConfig {
            value: value.to_owned(),
            expires: Some(expires),
        };
        directory
            .set_secrets(
                client_id,
                vec![secret("a", past), secret("a", future), secret("b", past)],
            )
            .unwrap();
        let app = directory.app(client_id).unwrap();
        let now = Utc::now();
        assert!(matches!(app.check_secret("a", now), SecretCheck::Valid));
        assert!(matches!(app.check_secret("b", now), SecretCheck::Expired));
        assert!(matches!(app.check_secret("c", now), SecretCheck::Wrong));
    }
}
