//! The scenario file: which apps exist, which tenants exist and what each tenant granted.
//!
//! These types are plain data so that a scenario can be written by hand, loaded, changed by
//! tests and serialized back. The running emulator builds its own indexed copy from it
//! (`directory.rs`), after [`Scenario::validate`] has rejected anything it could not serve.

use std::collections::HashSet;
use std::fmt;
use std::path::Path;

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::certificates::Certificate;
use crate::directory::{TenantSegment, normalize_guid};
use crate::resources;

/// Microsoft usually answers `expires_in: 3599`.
const DEFAULT_TOKEN_LIFETIME_SECONDS: u64 = 3599;

/// The whole emulated directory, as loaded from JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// `expires_in` of every issued token. Small values let tests exercise token refresh.
    #[serde(default = "default_token_lifetime")]
    pub token_lifetime_seconds: u64,
    /// Delay between an accepted admin consent and its grants taking effect (0: at once).
    #[serde(default)]
    pub consent_propagation_ms: u64,
    /// App registrations (the partner's multi-tenant apps).
    #[serde(default)]
    pub apps: Vec<AppConfig>,
    /// Customer tenants and what each one consented to.
    #[serde(default)]
    pub tenants: Vec<TenantConfig>,
}

/// One app registration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppConfig {
    /// Application (client) id, a GUID.
    pub client_id: String,
    #[serde(default)]
    pub display_name: String,
    /// A disabled app gets AADSTS7000112 in every tenant.
    #[serde(default)]
    pub disabled: bool,
    #[serde(default)]
    pub secrets: Vec<SecretConfig>,
    #[serde(default)]
    pub certificates: Vec<CertificateConfig>,
    /// Redirect URIs registered on the app, for the admin consent links.
    #[serde(default)]
    pub redirect_uris: Vec<String>,
    /// The API permissions the registration lists: what an admin consent grants.
    #[serde(default)]
    pub required_permissions: Vec<RequiredPermissionConfig>,
}

/// A client secret of an app.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretConfig {
    pub value: String,
    /// Absent means the secret never expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<DateTime<Utc>>,
}

// The secret value must not reach logs even through a `{:?}` of the whole scenario.
impl fmt::Debug for SecretConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretConfig")
            .field("value", &"<redacted>")
            .field("expires", &self.expires)
            .finish()
    }
}

/// A certificate credential of an app: the public certificate only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateConfig {
    /// PEM text with one `CERTIFICATE` block (an RSA key).
    pub pem: String,
}

/// A customer tenant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    /// Tenant id, a GUID; becomes the `tid` claim.
    pub id: String,
    #[serde(default)]
    pub display_name: String,
    /// Verified domains; any of them may stand for the tenant in a URL.
    #[serde(default)]
    pub domains: Vec<String>,
    /// Application permissions granted by the tenant's admin. An app with no grant here is
    /// not consented in this tenant.
    #[serde(default)]
    pub grants: Vec<GrantConfig>,
    /// `tenant_region_scope` of the OpenID metadata (`NA`, `EU`, `USGov`, ...).
    #[serde(default = "default_region_scope")]
    pub region_scope: String,
    /// Incidents and alerts the data APIs serve for this tenant (none when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<crate::defender::DataConfig>,
}

/// Consent of one app to one resource in one tenant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantConfig {
    pub client_id: String,
    /// Any known identifier of the resource: its URI, an alias or its first-party app id.
    pub resource: String,
    /// Empty = consented without any application permission: tokens carry no `roles` claim.
    #[serde(default)]
    pub roles: Vec<String>,
}

/// Application permissions an app registration asks for on one resource
/// (`requiredResourceAccess`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequiredPermissionConfig {
    /// Any known identifier of the resource.
    pub resource: String,
    #[serde(default)]
    pub roles: Vec<String>,
}

fn default_token_lifetime() -> u64 {
    DEFAULT_TOKEN_LIFETIME_SECONDS
}

fn default_region_scope() -> String {
    "NA".to_owned()
}

impl Scenario {
    /// Parses and validates a scenario.
    pub fn from_json(text: &str) -> anyhow::Result<Scenario> {
        let scenario: Scenario = serde_json::from_str(text).context("scenario is not valid")?;
        scenario.validate()?;
        Ok(scenario)
    }

    /// Reads, parses and validates a scenario file.
    pub fn from_file(path: &Path) -> anyhow::Result<Scenario> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read scenario file {}", path.display()))?;
        Scenario::from_json(&text).with_context(|| format!("in scenario file {}", path.display()))
    }

    /// The built-in demo: one app, Contoso (everything granted), Fabrikam (M365 Defender only),
    /// Northwind and Woodgrove (no consent; Woodgrove is the one the demo onboards).
    pub fn demo() -> Scenario {
        // The file is part of the crate and covered by a unit test, so this cannot fail at run time.
        Scenario::from_json(include_str!("../scenarios/demo.json"))
            .expect("the built-in demo scenario is valid")
    }

    /// Rejects what the emulator could not serve consistently: malformed ids, duplicates,
    /// unknown resources, certificates that do not parse.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.token_lifetime_seconds == 0 {
            bail!("token_lifetime_seconds must be at least 1");
        }
        crate::consent::validate_propagation(self.consent_propagation_ms)?;
        let mut client_ids = HashSet::new();
        for app in &self.apps {
            app.validate()?;
            if !client_ids.insert(normalize_guid(&app.client_id).unwrap_or_default()) {
                bail!("app {} appears twice", app.client_id);
            }
        }
        let mut tenant_ids = HashSet::new();
        let mut domains = HashSet::new();
        for tenant in &self.tenants {
            tenant.validate()?;
            if !tenant_ids.insert(normalize_guid(&tenant.id).unwrap_or_default()) {
                bail!("tenant {} appears twice", tenant.id);
            }
            for domain in &tenant.domains {
                if !domains.insert(domain.to_ascii_lowercase()) {
                    bail!("domain {domain} belongs to two tenants");
                }
            }
        }
        Ok(())
    }
}

impl AppConfig {
    pub(crate) fn validate(&self) -> anyhow::Result<()> {
        if normalize_guid(&self.client_id).is_none() {
            bail!("app client_id {:?} is not a GUID", self.client_id);
        }
        for secret in &self.secrets {
            if secret.value.is_empty() {
                bail!("app {} has an empty secret value", self.client_id);
            }
        }
        for (index, certificate) in self.certificates.iter().enumerate() {
            Certificate::from_pem(&certificate.pem)
                .with_context(|| format!("app {} certificate #{index}", self.client_id))?;
        }
        crate::consent::validate_app(self)?;
        Ok(())
    }
}

impl TenantConfig {
    pub(crate) fn validate(&self) -> anyhow::Result<()> {
        if normalize_guid(&self.id).is_none() {
            bail!("tenant id {:?} is not a GUID", self.id);
        }
        for domain in &self.domains {
            if !matches!(TenantSegment::classify(domain), TenantSegment::Domain(_)) {
                bail!("tenant {}: {domain:?} is not a domain name", self.id);
            }
        }
        for grant in &self.grants {
            grant
                .validate()
                .with_context(|| format!("tenant {}", self.id))?;
        }
        if let Some(data) = &self.data {
            data.validate()
                .with_context(|| format!("tenant {}", self.id))?;
        }
        Ok(())
    }
}

impl GrantConfig {
    pub(crate) fn validate(&self) -> anyhow::Result<()> {
        if normalize_guid(&self.client_id).is_none() {
            bail!("grant client_id {:?} is not a GUID", self.client_id);
        }
        if resources::find(&self.resource).is_none() {
            bail!(
                "grant resource {:?} is not a resource the emulator knows ({})",
                self.resource,
                resources::known_uris().join(", ")
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_has_one_app_and_four_tenants() {
        let demo = Scenario::demo();
        assert_eq!(demo.apps.len(), 1);
        assert_eq!(
            demo.apps[0].secrets[0].value,
            "demo-secret-not-for-production"
        );
        let names: Vec<&str> = demo
            .tenants
            .iter()
            .map(|t| t.display_name.as_str())
            .collect();
        assert_eq!(names, ["Contoso", "Fabrikam", "Northwind", "Woodgrove"]);
        assert_eq!(demo.tenants[0].grants.len(), 3);
        assert_eq!(demo.tenants[1].grants.len(), 1);
        assert!(demo.tenants[2].grants.is_empty());
        assert!(demo.tenants[3].grants.is_empty());
        assert_eq!(demo.apps[0].required_permissions.len(), 3);
        assert_eq!(demo.consent_propagation_ms, 0);
    }

    #[test]
    fn defaults_fill_optional_fields() {
        let scenario = Scenario::from_json(
            r#"{"apps":[{"client_id":"11111111-1111-4111-8111-111111111111"}],
                "tenants":[{"id":"22222222-2222-4222-8222-222222222222"}]}"#,
        )
        .unwrap();
        assert_eq!(scenario.token_lifetime_seconds, 3599);
        assert!(!scenario.apps[0].disabled);
        assert_eq!(scenario.tenants[0].region_scope, "NA");
    }

    #[test]
    fn round_trips_through_json() {
        let demo = Scenario::demo();
        let text = serde_json::to_string(&demo).unwrap();
        assert_eq!(Scenario::from_json(&text).unwrap(), demo);
    }

    #[test]
    fn secret_expiry_is_rfc3339() {
        let scenario = Scenario::from_json(
            r#"{"apps":[{"client_id":"11111111-1111-4111-8111-111111111111",
                "secrets":[{"value":"s","expires":"2030-01-01T00:00:00Z"}]}]}"#,
        )
        .unwrap();
        let expires = scenario.apps[0].secrets[0].expires.unwrap();
        assert_eq!(expires.to_rfc3339(), "2030-01-01T00:00:00+00:00");
    }

    #[test]
    fn rejects_what_it_cannot_serve() {
        let cases = [
            (r#"{"unknown_field":1}"#, "not valid"),
            (r#"{"token_lifetime_seconds":0}"#, "at least 1"),
            (r#"{"apps":[{"client_id":"not-a-guid"}]}"#, "not a GUID"),
            (
                r#"{"apps":[{"client_id":"11111111-1111-4111-8111-111111111111"},
                            {"client_id":"11111111-1111-4111-8111-111111111111"}]}"#,
                "twice",
            ),
            (r#"{"tenants":[{"id":"contoso"}]}"#, "not a GUID"),
            (
                r#"{"tenants":[{"id":"22222222-2222-4222-8222-222222222222","domains":["contoso"]}]}"#,
                "not a domain",
            ),
            (
                r#"{"tenants":[{"id":"22222222-2222-4222-8222-222222222222","domains":["a.example"]},
                               {"id":"33333333-3333-4333-8333-333333333333","domains":["A.example"]}]}"#,
                "two tenants",
            ),
            (
                r#"{"tenants":[{"id":"22222222-2222-4222-8222-222222222222","grants":[
                    {"client_id":"11111111-1111-4111-8111-111111111111","resource":"https://example.com"}]}]}"#,
                "not a resource",
            ),
            (
                r#"{"apps":[{"client_id":"11111111-1111-4111-8111-111111111111",
                    "certificates":[{"pem":"not a certificate"}]}]}"#,
                "certificate",
            ),
        ];
        for (text, expected) in cases {
            let error = format!("{:#}", Scenario::from_json(text).unwrap_err());
            assert!(error.contains(expected), "{text}: {error}");
        }
    }

    #[test]
    fn debug_output_hides_secret_values() {
        let demo = Scenario::demo();
        let debug = format!("{demo:?}");
        assert!(!debug.contains("demo-secret-not-for-production"));
    }
}
