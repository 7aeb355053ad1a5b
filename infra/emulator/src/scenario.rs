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

use crate::entra::certificates::Certificate;
use crate::entra::directory::{TenantSegment, normalize_guid};
use crate::entra::resources;

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
    /// Lifetimes of the delegated flows' codes and refresh tokens (see "Delegated access").
    #[serde(default)]
    pub delegated: DelegatedSettings,
    /// The emulated AWS account: STS `GetWebIdentityToken` and its OIDC issuer.
    #[serde(default)]
    pub aws: AwsConfig,
    /// The legacy Defender APIs answer as after their retirement (2027-02-01): `off`
    /// (default), `gone` (410), `not_found` (404), `bad_request` (400).
    #[serde(default, skip_serializing_if = "is_not_retired")]
    pub retirement: crate::defender::Retirement,
}

fn is_not_retired(retirement: &crate::defender::Retirement) -> bool {
    *retirement == crate::defender::Retirement::Off
}

/// Lifetimes and polling interval of the delegated flows. 0 makes a code or refresh token
/// expire at once, so that tests reach the expiry answers without waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DelegatedSettings {
    /// Life of an authorization code (Entra: about 10 minutes).
    #[serde(default = "default_code_lifetime")]
    pub authorization_code_lifetime_seconds: u64,
    /// Inactivity window of a refresh token: each rotation starts a new one (Entra: 90 days).
    #[serde(default = "default_refresh_lifetime")]
    pub refresh_token_lifetime_seconds: u64,
    /// `expires_in` of a device code (Entra: 15 minutes).
    #[serde(default = "default_device_code_lifetime")]
    pub device_code_lifetime_seconds: u64,
    /// `interval` of a device code: polling sooner answers `slow_down` (Entra: 5 seconds).
    #[serde(default = "default_device_code_interval")]
    pub device_code_interval_seconds: u64,
}

impl Default for DelegatedSettings {
    fn default() -> Self {
        DelegatedSettings {
            authorization_code_lifetime_seconds: default_code_lifetime(),
            refresh_token_lifetime_seconds: default_refresh_lifetime(),
            device_code_lifetime_seconds: default_device_code_lifetime(),
            device_code_interval_seconds: default_device_code_interval(),
        }
    }
}

fn default_code_lifetime() -> u64 {
    600
}

fn default_refresh_lifetime() -> u64 {
    90 * 86_400
}

fn default_device_code_lifetime() -> u64 {
    900
}

fn default_device_code_interval() -> u64 {
    5
}

/// A test user of a tenant, who can sign in on the emulator's pages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// Object id, a GUID: the `oid` claim.
    pub oid: String,
    /// User principal name: the `upn` and `preferred_username` claims.
    pub upn: String,
    #[serde(default)]
    pub display_name: String,
    /// Defender portal / Entra roles (`Security Reader`, `Security Operator`, `Security
    /// Administrator`, `Global Reader`, `Global Administrator`): the data APIs answer 403 to a
    /// delegated call of a user holding none of the roles that allow it.
    #[serde(default)]
    pub portal_roles: Vec<String>,
    /// Conditional Access requires MFA: sign-ins without MFA and OBO exchanges of tokens
    /// without `mfa` in `amr` get `interaction_required` (AADSTS50076).
    #[serde(default)]
    pub mfa_required: bool,
    /// With `mfa_required`: false means the user has not registered MFA yet (AADSTS50079).
    #[serde(default = "yes")]
    pub mfa_registered: bool,
}

fn yes() -> bool {
    true
}

/// Consent to delegated permissions (scopes) of one resource: for every user of the tenant
/// (admin consent) or for one user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DelegatedGrantConfig {
    pub client_id: String,
    /// Any known identifier of the resource.
    pub resource: String,
    /// Delegated permission names (`Incident.Read`, `Alert.Read`, ...).
    #[serde(default)]
    pub scopes: Vec<String>,
    /// The user's oid or upn; absent: admin consent for all users of the tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
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
    /// Entra's "Allow public client flows": the device code grant (and refreshing its tokens)
    /// may then come without a client credential.
    #[serde(default)]
    pub allow_public_client_flows: bool,
    /// Federated identity credentials: external issuers whose JWTs the app accepts as its
    /// client assertion (workload identity federation).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub federated_credentials: Vec<FederatedCredentialConfig>,
}

/// A federated identity credential (FIC) of an app registration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FederatedCredentialConfig {
    /// The external issuer URL, compared exactly (as Entra does).
    pub issuer: String,
    /// The `sub` the assertion must carry, compared case-sensitively.
    pub subject: String,
    /// Accepted `aud` values; Entra allows exactly one.
    #[serde(default = "default_fic_audiences")]
    pub audiences: Vec<String>,
}

fn default_fic_audiences() -> Vec<String> {
    vec![crate::demo::FIC_AUDIENCE.to_owned()]
}

/// Entra's limit of federated identity credentials per app.
const MAX_FEDERATED_CREDENTIALS: usize = 20;

impl FederatedCredentialConfig {
    pub(crate) fn validate(&self) -> anyhow::Result<()> {
        // A placeholder issuer is checked as it will read once the emulator's URL is known.
        let issuer = match self
            .issuer
            .strip_prefix(crate::demo::EMULATOR_URL_PLACEHOLDER)
        {
            Some(rest) => format!("http://127.0.0.1{rest}"),
            None => self.issuer.clone(),
        };
        let issuer = url::Url::parse(&issuer)
            .with_context(|| format!("federated credential issuer {:?}", self.issuer))?;
        if !matches!(issuer.scheme(), "http" | "https") {
            bail!(
                "federated credential issuer {:?} is not an http(s) URL",
                self.issuer
            );
        }
        if self.subject.trim().is_empty() {
            bail!("federated credential subject is empty");
        }
        if self.audiences.len() != 1 || self.audiences[0].trim().is_empty() {
            bail!("a federated credential has exactly one non-empty audience");
        }
        Ok(())
    }
}

/// Validates an app's whole list of federated credentials.
pub(crate) fn validate_federated_credentials(
    credentials: &[FederatedCredentialConfig],
) -> anyhow::Result<()> {
    if credentials.len() > MAX_FEDERATED_CREDENTIALS {
        bail!("an app holds at most {MAX_FEDERATED_CREDENTIALS} federated credentials");
    }
    credentials
        .iter()
        .try_for_each(FederatedCredentialConfig::validate)
}

/// The emulated AWS account. Every field has a default, so `"aws": {}` (or nothing) works.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsConfig {
    /// Twelve digits: the issuer path and the `aws_account` claim.
    #[serde(default = "default_account_id")]
    pub account_id: String,
    /// Access key id (from the SigV4 `Authorization` header) to the role ARN it stands for.
    /// The emulator cannot check signatures; it only reads who the caller claims to be.
    #[serde(default)]
    pub roles: std::collections::BTreeMap<String, String>,
    /// The role of an access key id not listed in `roles`.
    #[serde(default = "default_role_arn")]
    pub default_role_arn: String,
    /// `iam:EnableOutboundWebIdentityFederation` was run: false answers
    /// `OutboundWebIdentityFederationDisabledException`.
    #[serde(default = "yes")]
    pub federation_enabled: bool,
}

impl Default for AwsConfig {
    fn default() -> Self {
        AwsConfig {
            account_id: default_account_id(),
            roles: std::collections::BTreeMap::new(),
            default_role_arn: default_role_arn(),
            federation_enabled: true,
        }
    }
}

fn default_account_id() -> String {
    crate::demo::AWS_ACCOUNT_ID.to_owned()
}

fn default_role_arn() -> String {
    crate::demo::AWS_ROLE_ARN.to_owned()
}

impl AwsConfig {
    pub(crate) fn validate(&self) -> anyhow::Result<()> {
        if self.account_id.len() != 12 || !self.account_id.bytes().all(|b| b.is_ascii_digit()) {
            bail!("aws.account_id {:?} is not twelve digits", self.account_id);
        }
        for arn in self.roles.values().chain([&self.default_role_arn]) {
            if !is_role_arn(arn) {
                bail!("{arn:?} is not an IAM role ARN (arn:aws:iam::ACCOUNT:role/NAME)");
            }
        }
        Ok(())
    }
}

fn is_role_arn(arn: &str) -> bool {
    arn.strip_prefix("arn:aws:iam::")
        .and_then(|rest| rest.split_once(":role/"))
        .is_some_and(|(account, name)| {
            account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit()) && !name.is_empty()
        })
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
    /// Test users who can sign in to the tenant (delegated flows).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<UserConfig>,
    /// Consent to delegated permissions, tenant-wide or per user.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub delegated_grants: Vec<DelegatedGrantConfig>,
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
        crate::entra::consent::validate_propagation(self.consent_propagation_ms)?;
        self.aws.validate()?;
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
        crate::entra::consent::validate_app(self)?;
        validate_federated_credentials(&self.federated_credentials)
            .with_context(|| format!("app {}", self.client_id))?;
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
        let mut oids = HashSet::new();
        let mut upns = HashSet::new();
        for user in &self.users {
            user.validate()
                .with_context(|| format!("tenant {}", self.id))?;
            if !oids.insert(normalize_guid(&user.oid).unwrap_or_default())
                || !upns.insert(user.upn.to_ascii_lowercase())
            {
                bail!("tenant {}: user {} appears twice", self.id, user.upn);
            }
        }
        for grant in &self.delegated_grants {
            grant
                .validate()
                .with_context(|| format!("tenant {}", self.id))?;
            if let Some(user) = &grant.user {
                let known = self.users.iter().any(|u| {
                    u.upn.eq_ignore_ascii_case(user)
                        || normalize_guid(&u.oid) == normalize_guid(&user.to_ascii_lowercase())
                });
                if !known {
                    bail!(
                        "tenant {}: delegated grant for unknown user {user:?}",
                        self.id
                    );
                }
            }
        }
        Ok(())
    }
}

impl UserConfig {
    pub(crate) fn validate(&self) -> anyhow::Result<()> {
        if normalize_guid(&self.oid.to_ascii_lowercase()).is_none() {
            bail!("user oid {:?} is not a GUID", self.oid);
        }
        let valid_upn = self
            .upn
            .split_once('@')
            .is_some_and(|(name, domain)| !name.is_empty() && domain.contains('.'));
        if !valid_upn || self.upn.chars().any(char::is_whitespace) {
            bail!("user upn {:?} is not name@domain", self.upn);
        }
        Ok(())
    }
}

impl DelegatedGrantConfig {
    pub(crate) fn validate(&self) -> anyhow::Result<()> {
        if normalize_guid(&self.client_id.to_ascii_lowercase()).is_none() {
            bail!(
                "delegated grant client_id {:?} is not a GUID",
                self.client_id
            );
        }
        if resources::find(&self.resource).is_none() {
            bail!(
                "delegated grant resource {:?} is not a resource the emulator knows ({})",
                self.resource,
                resources::known_uris().join(", ")
            );
        }
        if self
            .scopes
            .iter()
            .any(|scope| scope.trim().is_empty() || scope.contains(char::is_whitespace))
        {
            bail!("delegated grant scopes must be single words");
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
