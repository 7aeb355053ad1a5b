//! The on-behalf-of exchange in process: a cache miss (decode and check the user's token,
//! exchange it at the loopback emulator, check the answer) against a cache hit (decode, check,
//! cached token), and `mint-token`'s whole path on a hit (registry read included). Run with
//! `scripts/bench-obo`.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use defender_emulator::{Scenario, UserTokenRequest, demo};
use defender_partner::api::DefenderApi;
use defender_partner::config::Settings;
use defender_partner::entra::{OboProvider, TokenClient};
use defender_partner::minting::TokenService;
use defender_partner::runtime::Services;
use defender_partner::tenant_id::TenantId;
use defender_partner::tenants::{TenantRecord, TenantStatus};
use secrecy::SecretString;
use serde_json::json;

const ROUNDS: usize = 500;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let emulator =
        defender_emulator::start(Scenario::demo(), SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
            .await?;
    let dir = std::env::temp_dir().join(format!("dp-obo-bench-{}", uuid::Uuid::new_v4()));
    let variables = [
        ("DP_AUTHORITY_HOST", emulator.base_url().to_owned()),
        (
            "DP_CREDENTIAL_JSON",
            json!({"client_id": demo::CLIENT_ID, "client_secret": demo::CLIENT_SECRET}).to_string(),
        ),
        (
            "DP_SQLITE_PATH",
            dir.join("registry.sqlite").display().to_string(),
        ),
    ];
    let lookup = |name: &str| {
        variables
            .iter()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value.clone())
    };
    let services = Services::build(Settings::from_lookup(lookup)?).await?;
    let tenant = TenantId::parse(demo::CONTOSO_TENANT_ID)?;
    services
        .registry
        .upsert(&TenantRecord::new(
            tenant.clone(),
            "Contoso",
            TenantStatus::Active,
        ))
        .await?;
    let user_token = emulator
        .handle()
        .mint_user_token(&UserTokenRequest {
            tenant: demo::CONTOSO_TENANT_ID.into(),
            client_id: demo::CLIENT_ID.into(),
            user: demo::CONTOSO_ANALYST_UPN.into(),
            audience: None,
            scopes: vec![],
            mfa: false,
            expires_in_seconds: None,
        })
        .map_err(|error| anyhow::anyhow!("user token: {error:?}"))?
        .access_token;
    let secret = SecretString::from(user_token.clone());
    let provider = OboProvider::new(
        TokenClient::new(services.http.clone(), services.settings.endpoints.clone()),
        services.credentials.clone(),
        services.settings.token.clone(),
    );
    let required = services.settings.required_scopes(DefenderApi::M365d);
    let service = TokenService::new(&services);
    let request =
        json!({"tenant": demo::CONTOSO_TENANT_ID, "api": "m365d", "user_token": user_token});

    let mut misses = Vec::with_capacity(ROUNDS);
    let mut hits = Vec::with_capacity(ROUNDS);
    let mut minted = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        provider
            .invalidate(&tenant, DefenderApi::M365d, demo::CONTOSO_ANALYST_OID)
            .await;
        let started = Instant::now();
        provider
            .token(&tenant, DefenderApi::M365d, &secret, required)
            .await?;
        misses.push(started.elapsed());
        let started = Instant::now();
        provider
            .token(&tenant, DefenderApi::M365d, &secret, required)
            .await?;
        hits.push(started.elapsed());
        let started = Instant::now();
        service.mint_json(request.clone()).await?;
        minted.push(started.elapsed());
    }
    println!(
        "obo-bench: {ROUNDS} rounds, {} build",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    );
    println!("{:<52} {:>9} {:>9} {:>9}", "path", "median", "p90", "max");
    for (name, samples) in [
        (
            "OBO cache miss (exchange at the loopback emulator)",
            &mut misses,
        ),
        ("OBO cache hit", &mut hits),
        ("mint-token service, user_token, cache hit", &mut minted),
    ] {
        samples.sort();
        let at = |fraction: f64| samples[((samples.len() - 1) as f64 * fraction) as usize];
        println!(
            "{name:<52} {:>9} {:>9} {:>9}",
            micros(at(0.5)),
            micros(at(0.9)),
            micros(samples[samples.len() - 1])
        );
    }
    emulator.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn micros(duration: Duration) -> String {
    format!("{:.0} µs", duration.as_secs_f64() * 1e6)
}
