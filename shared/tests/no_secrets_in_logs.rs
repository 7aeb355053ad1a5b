//! Tokens and secrets never reach a log: a whole run, successes and every kind of failure,
//! logged at TRACE (every crate, HTTP client included) into a buffer that is then searched.
//! Its own test binary, so the subscriber is the process-wide one.

mod common;

use common::*;
use defender_emulator::SecretConfig;
use defender_partner::minting::MintRequest;
use defender_partner_testkit::logs::Captured;
use secrecy::ExposeSecret;

#[tokio::test(flavor = "current_thread")]
async fn no_token_or_secret_reaches_the_logs() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let fixture = Fixture::start(&[]).await;
    let mut tokens = Vec::new();
    for api in ["m365d", "mde", "graph"] {
        tokens.push(
            fixture
                .mint(CONTOSO, api)
                .await
                .unwrap()
                .access_token
                .expose_secret()
                .to_owned(),
        );
    }
    fixture.mint(FABRIKAM, "m365d").await.unwrap_err();
    fixture.mint(NORTHWIND, "m365d").await.unwrap_err();
    fixture
        .handle
        .set_secrets(
            CLIENT_ID,
            vec![SecretConfig {
                value: "rotated-secret-Lk9".into(),
                expires: None,
            }],
        )
        .unwrap();
    fixture.write_secret("rotated-secret-Lk9");
    tokens.push(
        fixture
            .mint(CONTOSO, "m365d")
            .await
            .map(|t| t.access_token.expose_secret().to_owned())
            .unwrap_or_default(),
    );
    fixture.handle.push_fault(throttle(1, 1)).unwrap();
    tokens.push(
        fixture
            .service
            .mint(&MintRequest {
                tenant: Some(CONTOSO.into()),
                api: Some("graph".into()),
                endpoint_version: Some("v1".into()),
                user_token: None,
                user_oid: None,
            })
            .await
            .unwrap()
            .access_token
            .expose_secret()
            .to_owned(),
    );
    fixture.stop().await;

    let logs = captured.text();
    assert!(
        logs.contains("token handed out"),
        "the run was logged at all"
    );
    for secret in [SECRET, "rotated-secret-Lk9"] {
        assert!(!logs.contains(secret), "a client secret reached the logs");
    }
    for token in tokens.iter().filter(|token| !token.is_empty()) {
        assert!(!logs.contains(token.as_str()), "a token reached the logs");
        // Not even the signature part alone.
        let signature = token.rsplit('.').next().unwrap();
        assert!(!logs.contains(signature));
    }
}
