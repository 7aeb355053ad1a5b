//! Minting from a stored sign-in, in process: a cache miss (read the sealed refresh token, open
//! it, redeem it at the loopback emulator, seal the rotated one, write it back conditionally)
//! against a cache hit, and the sign-in callback itself (state check, code redemption with PKCE,
//! sealing, first write). Embedded store (SQLite) and the embedded key; KMS adds one
//! `Decrypt` and one `GenerateDataKey` round trip per miss in AWS. Run with `scripts/bench-signin`.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use defender_emulator::{Scenario, demo};
use defender_partner::api::DefenderApi;
use defender_partner::config::Settings;
use defender_partner::runtime::Services;
use defender_partner::signin::{SignInService, StoredSignIns};
use defender_partner::tenant_id::TenantId;
use defender_partner::tenants::{TenantRecord, TenantStatus};
use serde_json::json;
use url::Url;

const ROUNDS: usize = 300;
const SIGN_INS: usize = 100;
const REDIRECT_URI: &str = "http://127.0.0.1/signin/callback";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let emulator =
        defender_emulator::start(Scenario::demo(), SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
            .await?;
    let dir = std::env::temp_dir().join(format!("dp-signin-bench-{}", uuid::Uuid::new_v4()));
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
        (
            "DP_STATE_KEY",
            "a-bench-state-key-of-at-least-32-characters".to_owned(),
        ),
        ("DP_SIGNIN_REDIRECT_URI", REDIRECT_URI.to_owned()),
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
    let signin = SignInService::build(&services).await?;
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;

    let mut callbacks = Vec::with_capacity(SIGN_INS);
    for _ in 0..SIGN_INS {
        let query = authorize(&signin, &browser, emulator.base_url()).await?;
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
        let stored = StoredSignIns::build(&services).await?;
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

    println!(
        "signin-bench: {SIGN_INS} sign-ins, {ROUNDS} mint rounds, {} build",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    );
    println!("{:<62} {:>9} {:>9} {:>9}", "path", "median", "p90", "max");
    for (name, samples) in [
        (
            "sign-in callback (check state, redeem code + PKCE, seal, store)",
            &mut callbacks,
        ),
        (
            "stored sign-in, cache miss (open, redeem, rotate, reseal)",
            &mut misses,
        ),
        ("stored sign-in, cache hit", &mut hits),
    ] {
        samples.sort();
        let at = |fraction: f64| samples[((samples.len() - 1) as f64 * fraction) as usize];
        println!(
            "{name:<62} {:>9} {:>9} {:>9}",
            micros(at(0.5)),
            micros(at(0.9)),
            micros(samples[samples.len() - 1])
        );
    }
    emulator.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// What the browser does before the callback: follows the sign-in link, and the analyst accepts
/// on the emulator's page; answers the query Microsoft redirects back with.
async fn authorize(
    signin: &SignInService,
    browser: &reqwest::Client,
    emulator: &str,
) -> anyhow::Result<String> {
    let link = signin
        .start(demo::CONTOSO_TENANT_ID, Some("m365d"), None)
        .await?;
    let url = Url::parse(&link.url)?;
    let mut form: Vec<(String, String)> = url.query_pairs().into_owned().collect();
    form.extend([
        ("authority_tenant".into(), demo::CONTOSO_TENANT_ID.into()),
        ("user".into(), demo::CONTOSO_ANALYST_UPN.into()),
        ("decision".into(), "accept".into()),
    ]);
    let answer = browser
        .post(format!("{emulator}/_emulator/signin/decision"))
        .form(&form)
        .send()
        .await?;
    let location = answer
        .headers()
        .get("location")
        .and_then(|value| value.to_str().ok())
        .context("the emulator's decision did not redirect")?;
    Ok(Url::parse(location)?.query().unwrap_or("").to_owned())
}

fn micros(duration: Duration) -> String {
    format!("{:.0} µs", duration.as_secs_f64() * 1e6)
}
