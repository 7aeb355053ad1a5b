//! The main job on embedded defaults: no AWS or Azure account. Starts the Entra emulator on a
//! loopback port, registers sample customer tenants in the embedded SQLite registry, mints a
//! token for each API through the same service `mint-token` runs, and prints what happened.
//! Tokens are shown only with `--show-tokens`.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};

use anyhow::Context;
use defender_emulator::demo;
use defender_partner::api::DefenderApi;
use defender_partner::config::{
    ENV_AUTHORITY_HOST, ENV_CREDENTIAL_JSON, ENV_CREDENTIAL_SECRET_ID, ENV_SQLITE_PATH,
    ENV_TABLE_NAME, Settings,
};
use defender_partner::minting::{MintRequest, TokenService};
use defender_partner::runtime::Services;
use defender_partner::tenant_id::TenantId;
use defender_partner::tenants::{TenantRecord, TenantStatus};
use secrecy::ExposeSecret;

const DEMO_REGISTRY: &str = ".local/demo.sqlite";

struct SampleTenant {
    id: &'static str,
    name: &'static str,
    status: TenantStatus,
    note: &'static str,
}

const SAMPLE_TENANTS: [SampleTenant; 3] = [
    SampleTenant {
        id: demo::CONTOSO_TENANT_ID,
        name: "Contoso",
        status: TenantStatus::Active,
        note: "consented to all three APIs",
    },
    SampleTenant {
        id: demo::FABRIKAM_TENANT_ID,
        name: "Fabrikam",
        status: TenantStatus::Active,
        note: "consented to Microsoft 365 Defender only",
    },
    SampleTenant {
        id: demo::NORTHWIND_TENANT_ID,
        name: "Northwind",
        status: TenantStatus::Pending,
        note: "onboarding not finished",
    },
];

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let show_tokens = std::env::args().skip(1).any(|arg| arg == "--show-tokens");
    if std::env::args()
        .skip(1)
        .any(|arg| arg == "--help" || arg == "-h")
    {
        println!("usage: defender-partner-demo [--show-tokens]");
        return Ok(());
    }
    defender_partner::telemetry::init_with_default(
        defender_partner::telemetry::LogFormat::Text,
        "warn",
    );

    let emulator = defender_emulator::start(
        defender_emulator::Scenario::demo(),
        SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
    )
    .await
    .context("starting the Entra emulator")?;

    let registry_path = std::env::var(ENV_SQLITE_PATH).unwrap_or_else(|_| DEMO_REGISTRY.to_owned());
    // The demo's own settings win over the environment, so a shell configured for AWS still runs
    // the embedded defaults; everything else (cloud, deadlines, roles) is read as usual.
    let overrides: HashMap<&str, String> = HashMap::from([
        (ENV_AUTHORITY_HOST, emulator.base_url().to_owned()),
        (
            ENV_CREDENTIAL_JSON,
            serde_json::json!({"client_id": demo::CLIENT_ID, "client_secret": demo::CLIENT_SECRET})
                .to_string(),
        ),
        (ENV_SQLITE_PATH, registry_path.clone()),
        (ENV_CREDENTIAL_SECRET_ID, String::new()),
        (ENV_TABLE_NAME, String::new()),
        ("DP_CREDENTIAL_FILE", String::new()),
    ]);
    let settings = Settings::from_lookup(|name| match overrides.get(name) {
        Some(value) => Some(value.clone()),
        None => std::env::var(name).ok(),
    })?;
    let services = Services::build(settings).await?;

    println!("defender-partner demo");
    println!("  Entra ID emulator  {}", emulator.base_url());
    println!("  tenant registry    {registry_path} (SQLite)");
    println!();
    println!("Registered customer tenants:");
    for sample in &SAMPLE_TENANTS {
        let mut record = TenantRecord::new(TenantId::parse(sample.id)?, sample.name, sample.status);
        record.customer_ref = Some(format!("DEMO-{}", sample.name.to_uppercase()));
        services.registry.upsert(&record).await?;
        println!(
            "  {}  {:<10} {:<8} {}",
            sample.id, sample.name, sample.status, sample.note
        );
    }
    println!();
    println!("Tokens minted:");
    let service = TokenService::new(&services);
    let mut minted = 0;
    let mut refused = 0;
    for sample in &SAMPLE_TENANTS {
        for api in DefenderApi::ALL {
            let request = MintRequest {
                tenant: Some(sample.id.to_owned()),
                api: Some(api.code().to_owned()),
                endpoint_version: None,
            };
            match service.mint(&request).await {
                Ok(token) => {
                    minted += 1;
                    println!(
                        "  {:<10} {:<6} ok       roles [{}], expires {} (in {} s)",
                        sample.name,
                        api.code(),
                        token.roles.join(", "),
                        token.expires_on.format("%H:%M:%S UTC"),
                        token.expires_in
                    );
                    if show_tokens {
                        println!("      {}", token.access_token.expose_secret());
                    }
                }
                Err(error) => {
                    refused += 1;
                    println!(
                        "  {:<10} {:<6} refused  {}: {}",
                        sample.name,
                        api.code(),
                        error.code(),
                        error
                    );
                }
            }
        }
    }
    println!();
    println!("{minted} tokens minted, {refused} requests refused with a typed error.");
    emulator.shutdown().await;
    Ok(())
}
