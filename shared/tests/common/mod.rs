//! A running emulator, an embedded registry with sample tenants and the real token service.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use defender_emulator::{EmulatorHandle, Fault, FaultMatch, RunningEmulator, Scenario};
use defender_partner::config::Settings;
use defender_partner::minting::{MintError, MintRequest, MintedToken, TokenService};
use defender_partner::runtime::Services;
use defender_partner::tenant_id::TenantId;
use defender_partner::tenants::{TenantRecord, TenantStatus};
use secrecy::ExposeSecret;
use serde_json::json;

pub const CLIENT_ID: &str = "aaaaaaaa-1111-4111-8111-111111111111";
pub const SECRET: &str = "first-secret-value-Zq8~";
pub const CONTOSO: &str = "bbbbbbbb-2222-4222-8222-222222222222";
pub const FABRIKAM: &str = "cccccccc-3333-4333-8333-333333333333";
pub const NORTHWIND: &str = "dddddddd-4444-4444-8444-444444444444";
pub const GHOST: &str = "eeeeeeee-5555-4555-8555-555555555555";

pub struct Fixture {
    pub emulator: RunningEmulator,
    pub handle: EmulatorHandle,
    pub dir: PathBuf,
    pub service: TokenService,
    pub services: Services,
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
        let emulator =
            defender_emulator::start(scenario(), SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
                .await
                .unwrap();
        let handle = emulator.handle();
        let dir = std::env::temp_dir().join(format!("dp-tokens-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let credential_file = dir.join("credential.json");
        write_secret(&credential_file, SECRET);
        let mut variables: HashMap<String, String> = HashMap::from([
            ("DP_AUTHORITY_HOST".into(), emulator.base_url().to_owned()),
            (
                "DP_CREDENTIAL_FILE".into(),
                credential_file.display().to_string(),
            ),
            (
                "DP_SQLITE_PATH".into(),
                dir.join("registry.sqlite").display().to_string(),
            ),
            ("DP_TOKEN_DEADLINE_SECONDS".into(), "10".into()),
        ]);
        for (name, value) in extra {
            variables.insert((*name).to_owned(), (*value).to_owned());
        }
        let settings = Settings::from_lookup(|name| variables.get(name).cloned()).unwrap();
        let services = Services::build(settings).await.unwrap();
        for (tenant, name, status) in [
            (CONTOSO, "Contoso", TenantStatus::Active),
            (FABRIKAM, "Fabrikam", TenantStatus::Active),
            (NORTHWIND, "Northwind", TenantStatus::Active),
            (GHOST, "Ghost", TenantStatus::Active),
        ] {
            let record = TenantRecord::new(TenantId::parse(tenant).unwrap(), name, status);
            services.registry.upsert(&record).await.unwrap();
        }
        let service = TokenService::new(&services);
        Fixture {
            emulator,
            handle,
            dir,
            service,
            services,
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

    pub async fn stop(self) {
        self.emulator.shutdown().await;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn write_secret(path: &PathBuf, secret: &str) {
    std::fs::write(
        path,
        json!({"client_id": CLIENT_ID, "client_secret": secret}).to_string(),
    )
    .unwrap();
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
    Fault {
        matches: FaultMatch::Token,
        tenant: None,
        status: Some(429),
        retry_after: Some(retry_after),
        count,
        delay_ms: None,
        error: None,
        error_code: None,
    }
}
