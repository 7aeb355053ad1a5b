//! The consent callback's handler time without network: how long `ConsentService::callback`
//! takes to refuse a forged link, refuse a replay, and record a decline (embedded SQLite store),
//! and how long issuing a link takes. The success path needs a token from Entra, so it is timed
//! against the loopback emulator and reported apart. Run with `scripts/bench-consent`.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use defender_emulator::{Scenario, demo};
use defender_partner::config::Settings;
use defender_partner::consent::ConsentService;
use defender_partner::runtime::Services;
use serde_json::json;

const ROUNDS: usize = 500;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let emulator =
        defender_emulator::start(Scenario::demo(), SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
            .await?;
    let dir = std::env::temp_dir().join(format!("dp-consent-bench-{}", uuid::Uuid::new_v4()));
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
            "DP_STATE_KEY_FILE",
            dir.join("state-key").display().to_string(),
        ),
        (
            "DP_CONSENT_REDIRECT_URI",
            demo::CONSENT_REDIRECT_URI_IP.to_owned(),
        ),
    ];
    let lookup = |name: &str| {
        variables
            .iter()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value.clone())
    };
    let services = Services::build(Settings::from_lookup(lookup)?).await?;
    let consent = ConsentService::build(&services).await?;

    let mut issue = Vec::with_capacity(ROUNDS);
    let mut forged = Vec::with_capacity(ROUNDS);
    let mut declined = Vec::with_capacity(ROUNDS);
    let mut replayed = Vec::with_capacity(ROUNDS);
    for round in 0..ROUNDS {
        let started = Instant::now();
        let link = consent.start(&format!("BENCH-{round}"), None).await?;
        issue.push(started.elapsed());
        let state = url::Url::parse(&link.url)?
            .query_pairs()
            .find(|(key, _)| key == "state")
            .map(|(_, value)| value.into_owned())
            .unwrap_or_default();
        let encoded: String = url::form_urlencoded::byte_serialize(state.as_bytes()).collect();
        let decline = format!(
            "error=access_denied&error_description=AADSTS65004%3A+declined&state={encoded}&admin_consent=True"
        );
        let mut tampered = state.clone();
        tampered.pop();
        tampered.push(if state.ends_with('A') { 'B' } else { 'A' });
        let forged_query = format!(
            "tenant={}&state={tampered}&admin_consent=True",
            demo::CONTOSO_TENANT_ID
        );

        let started = Instant::now();
        let page = consent.callback(&forged_query).await;
        forged.push(started.elapsed());
        assert_eq!(page.status, 400);
        let started = Instant::now();
        let page = consent.callback(&decline).await;
        declined.push(started.elapsed());
        assert_eq!(page.status, 200);
        let started = Instant::now();
        let page = consent.callback(&decline).await;
        replayed.push(started.elapsed());
        assert_eq!(page.status, 409);
    }
    let mut success = Vec::new();
    for round in 0..50 {
        let link = consent.start(&format!("BENCH-OK-{round}"), None).await?;
        let state = url::Url::parse(&link.url)?
            .query_pairs()
            .find(|(key, _)| key == "state")
            .map(|(_, value)| value.into_owned())
            .unwrap_or_default();
        let encoded: String = url::form_urlencoded::byte_serialize(state.as_bytes()).collect();
        let query = format!(
            "tenant={}&state={encoded}&admin_consent=True",
            demo::CONTOSO_TENANT_ID
        );
        let started = Instant::now();
        let page = consent.callback(&query).await;
        success.push(started.elapsed());
        if round == 0 {
            assert_eq!(page.status, 200, "{}", page.title);
        }
    }
    println!("consent-bench: {ROUNDS} rounds, embedded SQLite store, 2026 build (release)");
    println!("{:<44} {:>9} {:>9} {:>9}", "path", "median", "p90", "max");
    report("issue a link (sign state, store nonce)", &mut issue);
    report("callback: forged state refused", &mut forged);
    report("callback: decline recorded", &mut declined);
    report("callback: replay refused", &mut replayed);
    report("callback: consent proven (loopback Entra)", &mut success);
    emulator.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}

fn report(name: &str, samples: &mut [Duration]) {
    samples.sort();
    let at = |fraction: f64| samples[((samples.len() - 1) as f64 * fraction) as usize];
    let micros = |duration: Duration| format!("{:.0} µs", duration.as_secs_f64() * 1e6);
    println!(
        "{name:<44} {:>9} {:>9} {:>9}",
        micros(at(0.5)),
        micros(at(0.9)),
        micros(samples[samples.len() - 1])
    );
}
