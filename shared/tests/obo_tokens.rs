//! On-behalf-of end to end inside one process: the real `OboProvider` against the emulator's
//! demo scenario (Contoso's analyst and MFA user, Fabrikam's analyst without consent) on a
//! loopback port.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use defender_emulator::{CredentialKind, Fault, FaultMatch, UserTokenRequest, demo};
use defender_partner::ErrorCode;
use defender_partner::api::DefenderApi;
use defender_partner::config::ENV_TOKEN_DEADLINE_SECONDS;
use defender_partner::entra::{OboError, OboProvider, TokenClient};
use defender_partner::tenant_id::TenantId;
use defender_partner_testkit::World;
use defender_partner_testkit::control::delay;
use defender_partner_testkit::logs::Captured;
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;

use defender_partner::CallerError;
/// The on-behalf-of provider of a function on a [`World`] of the demo scenario.
struct Fixture {
    world: World,
    provider: OboProvider,
}

impl Fixture {
    async fn start() -> Fixture {
        let credential =
            json!({"client_id": demo::CLIENT_ID, "client_secret": demo::CLIENT_SECRET}).to_string();
        Fixture::start_with(credential).await
    }

    async fn start_with(credential: String) -> Fixture {
        // Every test logs into the capture, installed before any of them logs anything.
        logs();
        let world = World::builder()
            .credential_json(credential)
            .setting(ENV_TOKEN_DEADLINE_SECONDS, "10")
            .start()
            .await
            .unwrap();
        let services = &world.services;
        let provider = OboProvider::new(
            TokenClient::new(services.http.clone(), services.settings.endpoints.clone()),
            services.credentials.clone(),
            services.settings.token.clone(),
        );
        Fixture { world, provider }
    }

    /// A user token as the calling app would receive it (`aud` = our app unless said).
    fn user_token(
        &self,
        tenant: &str,
        user: &str,
        audience: Option<&str>,
        expires_in: Option<i64>,
    ) -> SecretString {
        let minted = self
            .world
            .emulator
            .handle()
            .mint_user_token(&UserTokenRequest {
                tenant: tenant.into(),
                client_id: demo::CLIENT_ID.into(),
                user: user.into(),
                audience: audience.map(str::to_owned),
                scopes: vec![],
                mfa: false,
                expires_in_seconds: expires_in,
            })
            .unwrap();
        SecretString::from(minted.access_token)
    }

    async fn exchange(
        &self,
        tenant: &str,
        api: DefenderApi,
        user_token: &SecretString,
    ) -> Result<defender_partner::entra::DelegatedToken, OboError> {
        self.provider
            .token(
                &TenantId::parse(tenant).unwrap(),
                api,
                user_token,
                self.world.services.settings.required_scopes(api),
            )
            .await
    }

    /// Requests that reached the token endpoint.
    fn token_requests(&self) -> usize {
        self.world.emulator.handle().token_requests().len()
    }

    /// On-behalf-of exchanges the emulator answered with a token.
    fn obo_grants(&self) -> Vec<defender_emulator::DelegatedTokenRecord> {
        self.world
            .emulator
            .handle()
            .delegated_tokens()
            .into_iter()
            .filter(|record| record.grant == "on_behalf_of")
            .collect()
    }
}

fn claims(token: &SecretString) -> serde_json::Value {
    use base64::Engine;
    let payload = token.expose_secret().split('.').nth(1).unwrap().to_owned();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap()
}

#[tokio::test]
async fn exchanges_a_user_token_and_caches_it_per_user() {
    let fixture = Fixture::start().await;
    let analyst = fixture.user_token(
        demo::CONTOSO_TENANT_ID,
        demo::CONTOSO_ANALYST_UPN,
        None,
        None,
    );
    let token = fixture
        .exchange(demo::CONTOSO_TENANT_ID, DefenderApi::M365d, &analyst)
        .await
        .unwrap();
    assert_eq!(token.tenant.as_str(), demo::CONTOSO_TENANT_ID);
    assert_eq!(token.user_oid, demo::CONTOSO_ANALYST_OID);
    assert_eq!(token.upn.as_deref(), Some(demo::CONTOSO_ANALYST_UPN));
    assert!(
        token.scopes.contains(&"Incident.Read".to_owned()),
        "{:?}",
        token.scopes
    );
    assert!(token.expires_at() > chrono::Utc::now() + chrono::Duration::minutes(50));
    let delegated = claims(token.access_token());
    assert_eq!(delegated["aud"], "https://api.security.microsoft.com");
    assert_eq!(delegated["oid"], demo::CONTOSO_ANALYST_OID);
    assert_eq!(delegated["tid"], demo::CONTOSO_TENANT_ID);
    assert!(delegated.get("roles").is_none());
    assert_ne!(
        token.access_token().expose_secret(),
        analyst.expose_secret()
    );
    assert_eq!(fixture.token_requests(), 1);
    assert_eq!(fixture.obo_grants().len(), 1);

    // The same user token again: from the cache.
    let again = fixture
        .exchange(demo::CONTOSO_TENANT_ID, DefenderApi::M365d, &analyst)
        .await
        .unwrap();
    let fresh_assertion = fixture.user_token(
        demo::CONTOSO_TENANT_ID,
        demo::CONTOSO_ANALYST_UPN,
        None,
        None,
    );
    let third = fixture
        .exchange(
            demo::CONTOSO_TENANT_ID,
            DefenderApi::M365d,
            &fresh_assertion,
        )
        .await
        .unwrap();
    assert_eq!(
        again.access_token().expose_secret(),
        token.access_token().expose_secret(),
        "the same user token is a cache hit"
    );
    // Another token of the same user is exchanged: only Entra can tell that it is genuine.
    assert_eq!(third.user_oid, demo::CONTOSO_ANALYST_OID);
    assert_eq!(fixture.token_requests(), 2, "one exchange per user token");

    // A forged token naming the analyst (claims copied, signature not Entra's) never gets the
    // analyst's cached token: it goes to Entra, which refuses it.
    let mut parts: Vec<&str> = analyst.expose_secret().split('.').collect();
    parts[2] = "Zm9yZ2VkLXNpZ25hdHVyZQ";
    let forged = SecretString::from(parts.join("."));
    let refused = fixture
        .exchange(demo::CONTOSO_TENANT_ID, DefenderApi::M365d, &forged)
        .await
        .expect_err("a forged user token gets nothing");
    assert_eq!(refused.code(), ErrorCode::AssertionInvalid, "{refused}");
    assert_eq!(fixture.token_requests(), 3);

    // Another user of the same tenant gets their own token, never the analyst's.
    let helpdesk = fixture.user_token(
        demo::CONTOSO_TENANT_ID,
        demo::CONTOSO_NO_ROLE_UPN,
        None,
        None,
    );
    let theirs = fixture
        .exchange(demo::CONTOSO_TENANT_ID, DefenderApi::M365d, &helpdesk)
        .await
        .unwrap();
    assert_eq!(theirs.user_oid, demo::CONTOSO_NO_ROLE_OID);
    assert_eq!(
        claims(theirs.access_token())["oid"],
        demo::CONTOSO_NO_ROLE_OID
    );
    assert_ne!(
        theirs.access_token().expose_secret(),
        token.access_token().expose_secret()
    );
    assert_eq!(fixture.token_requests(), 4);

    // Another API for the same user is another entry, with that API's scopes.
    let graph = fixture
        .exchange(demo::CONTOSO_TENANT_ID, DefenderApi::Graph, &analyst)
        .await
        .unwrap();
    assert_eq!(graph.scopes, vec!["SecurityIncident.Read.All"]);
    assert_eq!(fixture.token_requests(), 5);
    let grants = fixture.obo_grants();
    assert_eq!(grants.len(), 4, "the forged exchange was refused");
    assert!(
        grants
            .iter()
            .all(|grant| grant.client_id == demo::CLIENT_ID)
    );
    fixture.world.shutdown().await;
}

#[tokio::test]
async fn bad_user_tokens_are_refused_before_entra_is_called() {
    let fixture = Fixture::start().await;
    let for_another_app = fixture.user_token(
        demo::CONTOSO_TENANT_ID,
        demo::CONTOSO_ANALYST_UPN,
        Some("https://api.security.microsoft.com"),
        None,
    );
    let error = fixture
        .exchange(
            demo::CONTOSO_TENANT_ID,
            DefenderApi::M365d,
            &for_another_app,
        )
        .await
        .unwrap_err();
    assert_eq!(error.code(), ErrorCode::UserTokenWrongAudience);

    let fabrikam = fixture.user_token(
        demo::FABRIKAM_TENANT_ID,
        demo::FABRIKAM_ANALYST_UPN,
        None,
        None,
    );
    let error = fixture
        .exchange(demo::CONTOSO_TENANT_ID, DefenderApi::M365d, &fabrikam)
        .await
        .unwrap_err();
    assert_eq!(error.code(), ErrorCode::UserTokenWrongTenant);
    assert!(error.to_string().contains(demo::FABRIKAM_TENANT_ID));

    let expired = fixture.user_token(
        demo::CONTOSO_TENANT_ID,
        demo::CONTOSO_ANALYST_UPN,
        None,
        Some(-60),
    );
    let error = fixture
        .exchange(demo::CONTOSO_TENANT_ID, DefenderApi::M365d, &expired)
        .await
        .unwrap_err();
    assert_eq!(error.code(), ErrorCode::UserTokenExpired);

    let error = fixture
        .exchange(
            demo::CONTOSO_TENANT_ID,
            DefenderApi::M365d,
            &SecretString::from("not-a-jwt"),
        )
        .await
        .unwrap_err();
    assert_eq!(error.code(), ErrorCode::UserTokenInvalid);

    assert_eq!(fixture.token_requests(), 0, "Entra ID was never called");
    fixture.world.shutdown().await;
}

#[tokio::test]
async fn consent_and_mfa_errors_reach_the_caller_typed() {
    let fixture = Fixture::start().await;
    let fabrikam = fixture.user_token(
        demo::FABRIKAM_TENANT_ID,
        demo::FABRIKAM_ANALYST_UPN,
        None,
        None,
    );
    let error = fixture
        .exchange(demo::FABRIKAM_TENANT_ID, DefenderApi::M365d, &fabrikam)
        .await
        .unwrap_err();
    assert_eq!(error.code(), ErrorCode::UserConsentMissing);
    assert!(error.to_string().contains("AADSTS65001"), "{error}");

    let secops = fixture.user_token(
        demo::CONTOSO_TENANT_ID,
        demo::CONTOSO_MFA_USER_UPN,
        None,
        None,
    );
    let error = fixture
        .exchange(demo::CONTOSO_TENANT_ID, DefenderApi::M365d, &secops)
        .await
        .unwrap_err();
    assert_eq!(error.code(), ErrorCode::InteractionRequired);
    assert!(error.to_string().contains("AADSTS50076"), "{error}");
    let challenge = error.claims_challenge().expect("a claims challenge");
    // Exactly what the emulator sent: read the raw answer of the same exchange.
    let raw = reqwest::Client::new()
        .post(format!(
            "{}/{}/oauth2/v2.0/token",
            fixture.world.emulator.base_url(),
            demo::CONTOSO_TENANT_ID
        ))
        .form(&[
            ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
            ("assertion", secops.expose_secret()),
            ("requested_token_use", "on_behalf_of"),
            ("scope", "https://api.security.microsoft.com/.default"),
            ("client_id", demo::CLIENT_ID),
            ("client_secret", demo::CLIENT_SECRET),
        ])
        .send()
        .await
        .unwrap()
        .json::<serde_json::Value>()
        .await
        .unwrap();
    assert_eq!(raw["error"], "interaction_required");
    assert_eq!(raw["claims"].as_str(), Some(challenge));
    assert!(challenge.contains("capolids"));

    // Failures are not cached: the analyst still gets a token afterwards.
    let analyst = fixture.user_token(
        demo::CONTOSO_TENANT_ID,
        demo::CONTOSO_ANALYST_UPN,
        None,
        None,
    );
    fixture
        .exchange(demo::CONTOSO_TENANT_ID, DefenderApi::Mde, &analyst)
        .await
        .unwrap();
    fixture.world.shutdown().await;
}

#[tokio::test]
async fn concurrent_callers_for_one_user_share_one_exchange() {
    let fixture = Arc::new(Fixture::start().await);
    fixture
        .world
        .emulator
        .handle()
        .push_fault(delay(FaultMatch::Token, 300, 1))
        .unwrap();
    let analyst = fixture.user_token(
        demo::CONTOSO_TENANT_ID,
        demo::CONTOSO_ANALYST_UPN,
        None,
        None,
    );
    let callers: Vec<_> = (0..8)
        .map(|_| {
            let fixture = fixture.clone();
            let analyst = analyst.clone();
            tokio::spawn(async move {
                fixture
                    .exchange(demo::CONTOSO_TENANT_ID, DefenderApi::Mde, &analyst)
                    .await
                    .unwrap()
                    .access_token()
                    .expose_secret()
                    .to_owned()
            })
        })
        .collect();
    let mut tokens = Vec::new();
    for caller in callers {
        tokens.push(caller.await.unwrap());
    }
    assert_eq!(
        fixture.token_requests(),
        1,
        "one exchange for eight callers"
    );
    assert!(tokens.iter().all(|token| token == &tokens[0]));
}

#[tokio::test]
async fn throttling_is_retried_or_passed_on_with_its_wait() {
    let fixture = Fixture::start().await;
    let throttle = |retry_after: u64| Fault::throttle(FaultMatch::Token, retry_after, 1);
    let analyst = fixture.user_token(
        demo::CONTOSO_TENANT_ID,
        demo::CONTOSO_ANALYST_UPN,
        None,
        None,
    );
    // A wait that fits in the deadline: retried after it, then a token.
    fixture
        .world
        .emulator
        .handle()
        .push_fault(throttle(1))
        .unwrap();
    fixture
        .exchange(demo::CONTOSO_TENANT_ID, DefenderApi::M365d, &analyst)
        .await
        .unwrap();
    assert_eq!(fixture.token_requests(), 2);
    // A wait past the deadline: the throttle is handed back with Microsoft's wait.
    fixture
        .world
        .emulator
        .handle()
        .push_fault(throttle(120))
        .unwrap();
    let error = fixture
        .exchange(demo::CONTOSO_TENANT_ID, DefenderApi::Graph, &analyst)
        .await
        .unwrap_err();
    assert_eq!(error.code(), ErrorCode::Throttled);
    assert_eq!(error.retry_after(), Some(Duration::from_secs(120)));
    fixture.world.shutdown().await;
}

#[tokio::test]
async fn a_certificate_credential_exchanges_with_a_client_assertion() {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
    let certificate = rcgen::CertificateParams::new(vec!["defender-partner-obo".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let fixture = Fixture::start_with(
        json!({"client_id": demo::CLIENT_ID, "certificate_pem": certificate.pem(), "private_key_pem": key.serialize_pem()})
            .to_string(),
    )
    .await;
    let handle = fixture.world.emulator.handle();
    handle
        .set_certificates(
            demo::CLIENT_ID,
            &[serde_json::from_value(json!({"pem": certificate.pem()})).unwrap()],
        )
        .unwrap();
    handle.set_secrets(demo::CLIENT_ID, vec![]).unwrap();
    let analyst = fixture.user_token(
        demo::CONTOSO_TENANT_ID,
        demo::CONTOSO_ANALYST_UPN,
        None,
        None,
    );
    let token = fixture
        .exchange(demo::CONTOSO_TENANT_ID, DefenderApi::M365d, &analyst)
        .await
        .unwrap();
    assert_eq!(token.user_oid, demo::CONTOSO_ANALYST_OID);
    let requests = handle.token_requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].credential, Some(CredentialKind::Assertion));
    assert_eq!(requests[0].status, 200);
    fixture.world.shutdown().await;
}

/// Everything any test of this binary logged, at TRACE, every crate (HTTP client included). One
/// process-wide subscriber, installed before the first test starts its fixture, so that no
/// callsite is ever registered without it.
fn logs() -> &'static Captured {
    static CAPTURED: OnceLock<Captured> = OnceLock::new();
    CAPTURED.get_or_init(|| {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::set_global_default(subscriber).unwrap();
        captured
    })
}

#[tokio::test(flavor = "current_thread")]
async fn no_user_or_delegated_token_reaches_the_logs() {
    let fixture = Fixture::start().await;
    let mut secrets: Vec<String> = vec![demo::CLIENT_SECRET.to_owned()];
    let analyst = fixture.user_token(
        demo::CONTOSO_TENANT_ID,
        demo::CONTOSO_ANALYST_UPN,
        None,
        None,
    );
    let secops = fixture.user_token(
        demo::CONTOSO_TENANT_ID,
        demo::CONTOSO_MFA_USER_UPN,
        None,
        None,
    );
    let fabrikam = fixture.user_token(
        demo::FABRIKAM_TENANT_ID,
        demo::FABRIKAM_ANALYST_UPN,
        None,
        None,
    );
    let wrong_app = fixture.user_token(
        demo::CONTOSO_TENANT_ID,
        demo::CONTOSO_ANALYST_UPN,
        Some("https://graph.microsoft.com"),
        None,
    );
    for user_token in [&analyst, &secops, &fabrikam, &wrong_app] {
        secrets.push(user_token.expose_secret().to_owned());
    }
    for api in DefenderApi::ALL {
        let token = fixture
            .exchange(demo::CONTOSO_TENANT_ID, api, &analyst)
            .await
            .unwrap();
        secrets.push(token.access_token().expose_secret().to_owned());
        tracing::debug!(?token, "the token's Debug is redacted");
    }
    for (tenant, user_token) in [
        (demo::CONTOSO_TENANT_ID, &secops),
        (demo::FABRIKAM_TENANT_ID, &fabrikam),
        (demo::CONTOSO_TENANT_ID, &wrong_app),
        (demo::CONTOSO_TENANT_ID, &fabrikam),
    ] {
        let error = fixture
            .exchange(tenant, DefenderApi::M365d, user_token)
            .await
            .unwrap_err();
        tracing::warn!(error = %error, debug = ?error, "exchange refused");
    }
    fixture.world.shutdown().await;

    let logs = logs().text();
    assert!(
        logs.contains("delegated token handed out"),
        "the run was logged"
    );
    assert!(logs.contains("exchange refused"));
    for secret in &secrets {
        assert!(
            !logs.contains(secret.as_str()),
            "a token or secret reached the logs"
        );
        if let Some(signature) = secret.split('.').nth(2) {
            assert!(
                !logs.contains(signature),
                "a token signature reached the logs"
            );
        }
    }
}
