//! Scenario pieces in the emulator's own types: the partner's app, customer tenants with their
//! Global Administrator, the grants a consent gives. Every piece starts from the emulator's own
//! defaults (it is read from the smallest JSON the emulator accepts), so a field the emulator
//! adds later needs no edit here.

use defender_emulator::{
    AppConfig, DataConfig, FederatedCredentialConfig, GrantConfig, Scenario, SecretConfig,
    TenantConfig, UserConfig, demo,
};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

/// Resource (App ID URI) of each API, as the emulator and Entra know them.
pub const RESOURCE_M365D: &str = "https://api.security.microsoft.com";
pub const RESOURCE_MDE: &str = "https://api.securitycenter.microsoft.com";
pub const RESOURCE_GRAPH: &str = "https://graph.microsoft.com";

/// The application permission a consenting admin grants for each API in the tests.
pub const ROLE_M365D: &str = "Incident.Read.All";
pub const ROLE_MDE: &str = "Alert.Read.All";
pub const ROLE_GRAPH: &str = "SecurityIncident.Read.All";
/// Graph's second read role: its `alerts_v2` (source `graph-alerts`).
pub const ROLE_GRAPH_ALERTS: &str = "SecurityAlert.Read.All";

fn defaults<T: DeserializeOwned>(minimal: Value) -> T {
    serde_json::from_value(minimal).expect("the emulator accepts its minimal form")
}

/// A scenario with no app and no tenant, whose tokens live `token_lifetime_seconds`.
pub fn empty(token_lifetime_seconds: u64) -> Scenario {
    defaults(json!({ "token_lifetime_seconds": token_lifetime_seconds }))
}

/// A scenario of one app and `tenants`, tokens living an hour.
pub fn with(app: AppConfig, tenants: Vec<TenantConfig>) -> Scenario {
    let mut scenario = empty(3600);
    scenario.apps.push(app);
    scenario.tenants = tenants;
    scenario
}

/// An app registration holding `secrets` (none: a secretless app).
pub fn app(client_id: &str, display_name: &str, secrets: &[&str]) -> AppConfig {
    let mut app: AppConfig = defaults(json!({ "client_id": client_id }));
    app.display_name = display_name.to_owned();
    app.secrets = secrets.iter().map(|value| secret(value)).collect();
    app
}

/// A client secret that never expires.
pub fn secret(value: &str) -> SecretConfig {
    SecretConfig {
        value: value.to_owned(),
        expires: None,
    }
}

/// An app's consent to `resource` in a tenant, with `roles` (none: consented without any
/// application permission).
pub fn grant(client_id: &str, resource: &str, roles: &[&str]) -> GrantConfig {
    GrantConfig {
        client_id: client_id.to_owned(),
        resource: resource.to_owned(),
        roles: roles.iter().map(|role| (*role).to_owned()).collect(),
    }
}

/// The usual grants of a consented tenant: one read role on each of the three APIs.
pub fn read_grants(client_id: &str) -> Vec<GrantConfig> {
    vec![
        grant(client_id, RESOURCE_M365D, &[ROLE_M365D]),
        grant(client_id, RESOURCE_MDE, &[ROLE_MDE]),
        grant(client_id, RESOURCE_GRAPH, &[ROLE_GRAPH]),
    ]
}

/// Every read role of the data the fetch job pulls: incidents and alerts on all three APIs.
pub fn fetch_grants(client_id: &str) -> Vec<GrantConfig> {
    vec![
        grant(client_id, RESOURCE_M365D, &[ROLE_M365D]),
        grant(client_id, RESOURCE_MDE, &[ROLE_MDE]),
        grant(client_id, RESOURCE_GRAPH, &[ROLE_GRAPH, ROLE_GRAPH_ALERTS]),
    ]
}

/// A customer tenant with `grants` and its Global Administrator ([`admin_upn`]), who can
/// complete an onboarding (the sign-in that proves the tenant after an admin consent).
pub fn tenant(id: &str, display_name: &str, grants: Vec<GrantConfig>) -> TenantConfig {
    let mut tenant: TenantConfig = defaults(json!({ "id": id }));
    tenant.display_name = display_name.to_owned();
    tenant.grants = grants;
    tenant.users.push(user(
        &admin_oid(id),
        &admin_upn(id),
        "Tenant administrator",
        &["Global Administrator"],
    ));
    tenant
}

/// Generated data: `incidents` incidents and `mde_alerts` alerts `spacing_seconds` apart, the
/// newest about when it is loaded; `seed` varies every generated value.
pub fn data(incidents: u32, mde_alerts: u32, seed: u64, spacing_seconds: u32) -> DataConfig {
    DataConfig {
        incidents,
        mde_alerts,
        seed,
        spacing_seconds,
        ..DataConfig::default()
    }
}

/// A test user who can sign in, holding `portal_roles`.
pub fn user(oid: &str, upn: &str, display_name: &str, portal_roles: &[&str]) -> UserConfig {
    let mut user: UserConfig = defaults(json!({ "oid": oid, "upn": upn }));
    user.display_name = display_name.to_owned();
    user.portal_roles = portal_roles.iter().map(|role| (*role).to_owned()).collect();
    user
}

/// The Global Administrator of a [`tenant`].
pub fn admin_upn(tenant_id: &str) -> String {
    format!("admin@t{}.example", &tenant_id[..8])
}

/// The administrator's object id: the tenant's own id with a recognisable first group.
pub fn admin_oid(tenant_id: &str) -> String {
    format!("adadadad{}", &tenant_id[8..])
}

/// The federated credential that trusts the emulated AWS account's tokens for the role every
/// function runs as (`demo::AWS_ROLE_ARN`), for Entra's usual audience. The issuer is written
/// with the placeholder for the emulator's URL, which the emulator resolves once it knows its
/// port.
pub fn aws_role_credential() -> FederatedCredentialConfig {
    FederatedCredentialConfig {
        issuer: format!(
            "{}{}",
            demo::EMULATOR_URL_PLACEHOLDER,
            demo::AWS_ISSUER_PATH
        ),
        subject: demo::AWS_ROLE_ARN.to_owned(),
        audiences: vec![demo::FIC_AUDIENCE.to_owned()],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pieces_make_a_scenario_the_emulator_accepts() {
        let client_id = "aaaaaaaa-1111-4111-8111-111111111111";
        let tenant_id = "bbbbbbbb-2222-4222-8222-222222222222";
        let mut app = app(client_id, "kit", &["kit-secret"]);
        app.federated_credentials.push(aws_role_credential());
        let scenario = with(app, vec![tenant(tenant_id, "Kit", fetch_grants(client_id))]);
        let text = serde_json::to_string(&scenario).unwrap();
        let parsed = Scenario::from_json(&text).unwrap();
        assert_eq!(parsed.tenants[0].users[0].upn, "admin@tbbbbbbbb.example");
        assert_eq!(parsed.tenants[0].grants[2].roles.len(), 2);
        assert_eq!(parsed.token_lifetime_seconds, 3600);
    }
}
