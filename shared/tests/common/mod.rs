//! The real token service on a [`World`]: the emulator on a test scenario, the embedded registry
//! with sample tenants.
#![allow(dead_code)]

use defender_emulator::{EmulatorHandle, Fault, FaultMatch, Scenario};
use defender_partner::config::ENV_TOKEN_DEADLINE_SECONDS;
use defender_partner::minting::{MintError, MintRequest, MintedToken, TokenService};
use defender_partner_testkit::world::active;
use defender_partner_testkit::{World, app_credential};
use secrecy::ExposeSecret;
use serde_json::json;

pub const CLIENT_ID: &str = "aaaaaaaa-1111-4111-8111-111111111111";
pub const SECRET: &str = "first-secret-value-Zq8~";
pub const CONTOSO: &str = "bbbbbbbb-2222-4222-8222-222222222222";
pub const FABRIKAM: &str = "cccccccc-3333-4333-8333-333333333333";
pub const NORTHWIND: &str = "dddddddd-4444-4444-8444-444444444444";
pub const GHOST: &str = "eeeeeeee-5555-4555-8555-555555555555";

/// The token service of a function on a [`World`] of the test scenario, its four tenants
/// registered active; the app credential in a file, which a test may rewrite to rotate it.
pub struct Fixture {
    pub world: World,
    pub handle: EmulatorHandle,
    pub service: TokenService,
}

pub fn scenario() -> Scenario {
    let grant = |resource: &str, role: &str| json!({"client_id": CLIENT_ID, "resource": resource, "roles": [role]});
    Scenario::from_json(
        &json!({
            "token_lifetime_seconds": 3600,
            "apps": [{"client_id": CLIENT_ID, "display_name": "test app", "secrets": [{"value": SECRET}]}],
            "tenants": [
                {"id": CONTOSO, "display_name": "Contoso", "domains": ["contoso.example.com"], "grants": [
                    grant("https://api.security.microsoft.com", "Incident.Read.All"),
                    grant("https://api.securitycenter.microsoft.com", "Alert.ReadWrite.All"),
                    grant("https://graph.microsoft.com", "SecurityIncident.Read.All"),
                ]},
                {"id": FABRIKAM, "display_name": "Fabrikam", "grants": [
                    {"client_id": CLIENT_ID, "resource": "https://api.security.microsoft.com", "roles": []}
                ]},
                {"id": NORTHWIND, "display_name": "Northwind", "grants": []},
            ]
        })
        .to_string(),
    )
    .unwrap()
}

impl Fixture {
    pub async fn start(extra: &[(&str, &str)]) -> Fixture {
        let mut world = World::on(scenario())
            .credential_file()
            .setting(ENV_TOKEN_DEADLINE_SECONDS, "10")
            .tenants([
                active(CONTOSO, "Contoso"),
                active(FABRIKAM, "Fabrikam"),
                active(NORTHWIND, "Northwind"),
                active(GHOST, "Ghost"),
            ]);
        for (name, value) in extra {
            world = world.setting(name, *value);
        }
        let world = world.start().await.unwrap();
        Fixture {
            handle: world.handle(),
            service: TokenService::new(&world.services),
            world,
        }
    }

    pub async fn mint(&self, tenant: &str, api: &str) -> Result<MintedToken, MintError> {
        self.service
            .mint(&MintRequest {
                tenant: Some(tenant.into()),
                api: Some(api.into()),
                endpoint_version: None,
                user_token: None,
                user_oid: None,
            })
            .await
    }

    pub fn token_requests(&self) -> usize {
        self.handle.token_requests().len()
    }

    /// Stores `secret` in the credential file, as an operator rotating it does.
    pub fn write_secret(&self, secret: &str) {
        self.world
            .write_credential_file(&app_credential(CLIENT_ID, secret));
    }

    pub async fn stop(self) {
        self.world.shutdown().await;
    }
}

pub fn claims(token: &MintedToken) -> serde_json::Value {
    use base64::Engine;
    let payload = token
        .access_token
        .expose_secret()
        .split('.')
        .nth(1)
        .unwrap()
        .to_owned();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap()
}

pub fn throttle(count: u32, retry_after: u64) -> Fault {
    Fault::throttle(FaultMatch::Token, retry_after, count)
}
