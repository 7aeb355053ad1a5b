//! The consent callback's handler time without network: how long `ConsentService::callback`
//! takes to refuse a forged link, refuse a replay, and record a decline (embedded SQLite store),
//! and how long issuing a link takes. The success path needs Entra (the administrator's sign-in
//! code redeemed, the ID token verified, the consent proven with a token), so it is timed against
//! the loopback emulator and reported apart, step by step. Run with `scripts/bench-consent`.

use std::time::Instant;

use defender_emulator::{browser, demo};
use defender_partner::config::{ENV_CONSENT_REDIRECT_URI, ENV_STATE_KEY_FILE};
use defender_partner::consent::{CallbackAnswer, ConsentService};
use defender_partner_bench::{build_kind, print_latencies};
use defender_partner_testkit::World;

const ROUNDS: usize = 500;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let world = World::builder()
        .folder_setting(ENV_STATE_KEY_FILE, "state-key")
        .setting(ENV_CONSENT_REDIRECT_URI, demo::CONSENT_REDIRECT_URI_IP)
        .start()
        .await?;
    let services = &world.services;
    let consent = ConsentService::build(services).await?;

    let mut issue = Vec::with_capacity(ROUNDS);
    let mut forged = Vec::with_capacity(ROUNDS);
    let mut declined = Vec::with_capacity(ROUNDS);
    let mut replayed = Vec::with_capacity(ROUNDS);
    for round in 0..ROUNDS {
        let started = Instant::now();
        let link = consent.start(&format!("BENCH-{round}"), None, None).await?;
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
        let answer = consent.callback(&forged_query).await;
        forged.push(started.elapsed());
        assert_eq!(answer.page().map(|page| page.status), Some(400));
        let started = Instant::now();
        let answer = consent.callback(&decline).await;
        declined.push(started.elapsed());
        assert_eq!(answer.page().map(|page| page.status), Some(200));
        let started = Instant::now();
        let answer = consent.callback(&decline).await;
        replayed.push(started.elapsed());
        assert_eq!(answer.page().map(|page| page.status), Some(409));
    }
    let mut consented = Vec::new();
    let mut success = Vec::new();
    for round in 0..50 {
        let link = consent
            .start(&format!("BENCH-OK-{round}"), None, None)
            .await?;
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
        let answer = consent.callback(&query).await;
        consented.push(started.elapsed());
        let CallbackAnswer::Redirect(sign_in) = answer else {
            anyhow::bail!("the consent did not continue to the administrator's sign-in");
        };
        let location = browser::sign_in(&sign_in, demo::CONTOSO_ADMIN_UPN).await?;
        let query = browser::query_of(&location)?;
        let started = Instant::now();
        let answer = consent.callback(&query).await;
        success.push(started.elapsed());
        if round == 0 {
            let page = answer.page().expect("a page");
            assert_eq!(page.status, 200, "{}", page.title);
        }
    }
    print_latencies(
        &format!(
            "consent-bench: {ROUNDS} rounds, embedded SQLite store, {} build",
            build_kind()
        ),
        &mut [
            ("issue a link (sign state, store nonce)", issue),
            ("callback: forged state refused", forged),
            ("callback: decline recorded", declined),
            ("callback: replay refused", replayed),
            ("callback: consent answered, sign-in link signed", consented),
            (
                "callback: sign-in code redeemed, ID token verified, consent proven (loopback Entra)",
                success,
            ),
        ],
    );
    world.shutdown().await;
    Ok(())
}
