//! The on-behalf-of exchange in process: a cache miss (decode and check the user's token,
//! exchange it at the loopback emulator, check the answer) against a cache hit (decode, check,
//! cached token), and `mint-token`'s whole path on a hit (registry read included). Run with
//! `scripts/bench-obo`.

use std::time::Instant;

use defender_emulator::{UserTokenRequest, demo};
use defender_partner::api::DefenderApi;
use defender_partner::entra::{OboProvider, TokenClient};
use defender_partner::minting::TokenService;
use defender_partner::tenant_id::TenantId;
use defender_partner_bench::{build_kind, print_latencies};
use defender_partner_testkit::World;
use defender_partner_testkit::world::active;
use secrecy::SecretString;
use serde_json::json;

const ROUNDS: usize = 500;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let world = World::builder()
        .tenant(active(demo::CONTOSO_TENANT_ID, "Contoso"))
        .start()
        .await?;
    let (emulator, services) = (&world.emulator, &world.services);
    let tenant = TenantId::parse(demo::CONTOSO_TENANT_ID)?;
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
    let service = TokenService::new(services);
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
    print_latencies(
        &format!("obo-bench: {ROUNDS} rounds, {} build", build_kind()),
        &mut [
            ("OBO cache miss (exchange at the loopback emulator)", misses),
            ("OBO cache hit", hits),
            ("mint-token service, user_token, cache hit", minted),
        ],
    );
    world.shutdown().await;
    Ok(())
}
