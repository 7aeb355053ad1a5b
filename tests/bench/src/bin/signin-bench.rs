//! Minting from a stored sign-in, in process: a cache miss (read the sealed refresh token, open
//! it, redeem it at the loopback emulator, seal the rotated one, write it back conditionally)
//! against a cache hit, and the sign-in callback itself (state check, code redemption with PKCE,
//! sealing, first write). Embedded store (SQLite) and the embedded key; KMS adds one
//! `Decrypt` and one `GenerateDataKey` round trip per miss in AWS. Run with `scripts/bench-signin`.

use std::time::Instant;

use anyhow::bail;
use defender_emulator::{browser, demo};
use defender_partner::api::DefenderApi;
use defender_partner::config::{ENV_SIGNIN_REDIRECT_URI, ENV_STATE_KEY};
use defender_partner::signin::{SignInService, StoredSignIns};
use defender_partner::tenant_id::TenantId;
use defender_partner_bench::{build_kind, print_latencies};
use defender_partner_testkit::World;
use defender_partner_testkit::world::active;

const ROUNDS: usize = 300;
const SIGN_INS: usize = 100;
const REDIRECT_URI: &str = "http://127.0.0.1/signin/callback";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let world = World::builder()
        .setting(ENV_STATE_KEY, "a-bench-state-key-of-at-least-32-characters")
        .setting(ENV_SIGNIN_REDIRECT_URI, REDIRECT_URI)
        .tenant(active(demo::CONTOSO_TENANT_ID, "Contoso"))
        .start()
        .await?;
    let services = &world.services;
    let tenant = TenantId::parse(demo::CONTOSO_TENANT_ID)?;
    let signin = SignInService::build(services).await?;

    let mut callbacks = Vec::with_capacity(SIGN_INS);
    for _ in 0..SIGN_INS {
        let query = authorize(&signin).await?;
        let started = Instant::now();
        let page = signin.callback(&query).await;
        callbacks.push(started.elapsed());
        if page.status != 200 {
            bail!("the sign-in callback answered {}", page.status);
        }
    }

    let required = services.settings.required_scopes(DefenderApi::M365d);
    let mut misses = Vec::with_capacity(ROUNDS);
    let mut hits = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        // A fresh service is a cold start: its token cache is empty, so the next call redeems.
        let stored = StoredSignIns::build(services).await?;
        let started = Instant::now();
        stored
            .token(
                &tenant,
                DefenderApi::M365d,
                demo::CONTOSO_ANALYST_OID,
                required,
            )
            .await?;
        misses.push(started.elapsed());
        let started = Instant::now();
        stored
            .token(
                &tenant,
                DefenderApi::M365d,
                demo::CONTOSO_ANALYST_OID,
                required,
            )
            .await?;
        hits.push(started.elapsed());
    }

    print_latencies(
        &format!(
            "signin-bench: {SIGN_INS} sign-ins, {ROUNDS} mint rounds, {} build",
            build_kind()
        ),
        &mut [
            (
                "sign-in callback (check state, redeem code + PKCE, seal, store)",
                callbacks,
            ),
            (
                "stored sign-in, cache miss (open, redeem, rotate, reseal)",
                misses,
            ),
            ("stored sign-in, cache hit", hits),
        ],
    );
    world.shutdown().await;
    Ok(())
}

/// What the browser does before the callback: follows the sign-in link, and the analyst accepts
/// on the emulator's page; answers the query Microsoft redirects back with.
async fn authorize(signin: &SignInService) -> anyhow::Result<String> {
    let link = signin
        .start(demo::CONTOSO_TENANT_ID, Some("m365d"), None)
        .await?;
    browser::query_of(&browser::sign_in(&link.url, demo::CONTOSO_ANALYST_UPN).await?)
}
