//! `mint-token`'s service with a `user_token`: the on-behalf-of answer a calling workflow gets,
//! and the typed refusals — the registry and the emulator's demo scenario in one process.

use defender_emulator::{UserTokenRequest, demo};
use defender_partner::ErrorCode;
use defender_partner::config::ENV_TOKEN_DEADLINE_SECONDS;
use defender_partner::edge::EdgeError;
use defender_partner::minting::TokenService;
use defender_partner_testkit::World;
use defender_partner_testkit::world::active;
use serde_json::{Value, json};

use defender_partner::CallerError;
/// The token service of a function on a [`World`] of the demo scenario, Contoso and Fabrikam
/// registered.
struct Fixture {
    world: World,
    service: TokenService,
}

impl Fixture {
    async fn start() -> Fixture {
        let world = World::builder()
            .setting(ENV_TOKEN_DEADLINE_SECONDS, "10")
            .tenants(
                [demo::CONTOSO_TENANT_ID, demo::FABRIKAM_TENANT_ID]
                    .map(|tenant| active(tenant, tenant)),
            )
            .start()
            .await
            .unwrap();
        Fixture {
            service: TokenService::new(&world.services),
            world,
        }
    }

    fn user_token(&self, tenant: &str, user: &str) -> String {
        self.world
            .handle()
            .mint_user_token(&UserTokenRequest {
                tenant: tenant.into(),
                client_id: demo::CLIENT_ID.into(),
                user: user.into(),
                audience: None,
                scopes: vec![],
                mfa: false,
                expires_in_seconds: None,
            })
            .unwrap()
            .access_token
    }

    async fn stop(self) {
        self.world.shutdown().await;
    }
}

#[tokio::test]
async fn a_user_token_gets_a_delegated_token_for_that_user() {
    let fixture = Fixture::start().await;
    let user_token = fixture.user_token(demo::CONTOSO_TENANT_ID, demo::CONTOSO_ANALYST_UPN);
    let minted = fixture
        .service
        .mint_json(
            json!({"tenant": demo::CONTOSO_DOMAIN, "api": "m365d", "user_token": user_token}),
        )
        .await
        .unwrap();
    let answer: Value = serde_json::to_value(&minted).unwrap();
    assert_eq!(answer["tenant_id"], demo::CONTOSO_TENANT_ID);
    assert_eq!(answer["user_oid"], demo::CONTOSO_ANALYST_OID);
    assert_eq!(answer["user_upn"], demo::CONTOSO_ANALYST_UPN);
    assert!(
        answer["scopes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|scope| scope == "Incident.Read"),
        "{answer}"
    );
    assert_eq!(
        answer["roles"],
        json!([]),
        "a delegated token has no app roles"
    );
    let token = answer["access_token"].as_str().unwrap();
    assert_ne!(token, user_token, "a new token, for the Defender API");
    // An app-only request for the same tenant still gets the app's token.
    let app = fixture
        .service
        .mint_json(json!({"tenant": demo::CONTOSO_TENANT_ID, "api": "m365d"}))
        .await
        .unwrap();
    let app: Value = serde_json::to_value(&app).unwrap();
    assert!(
        app.get("user_oid").is_none() && app.get("scopes").is_none(),
        "{app}"
    );
    assert_ne!(app["access_token"], answer["access_token"]);
    fixture.stop().await;
}

#[tokio::test]
async fn refusals_reach_the_caller_as_codes() {
    let fixture = Fixture::start().await;
    let analyst = fixture.user_token(demo::CONTOSO_TENANT_ID, demo::CONTOSO_ANALYST_UPN);

    let v1 = fixture
        .service
        .mint_json(json!({"tenant": demo::CONTOSO_TENANT_ID, "api": "m365d",
                          "endpoint_version": "v1", "user_token": analyst}))
        .await
        .unwrap_err();
    assert_eq!(v1.code(), ErrorCode::InvalidRequest);

    let other_tenant = fixture
        .service
        .mint_json(
            json!({"tenant": demo::FABRIKAM_TENANT_ID, "api": "m365d", "user_token": analyst}),
        )
        .await
        .unwrap_err();
    assert_eq!(other_tenant.code(), ErrorCode::UserTokenWrongTenant);

    let garbage = fixture
        .service
        .mint_json(
            json!({"tenant": demo::CONTOSO_TENANT_ID, "api": "m365d", "user_token": "not-a-jwt"}),
        )
        .await
        .unwrap_err();
    assert_eq!(garbage.code(), ErrorCode::UserTokenInvalid);

    let fabrikam = fixture.user_token(demo::FABRIKAM_TENANT_ID, demo::FABRIKAM_ANALYST_UPN);
    let no_consent = fixture
        .service
        .mint_json(
            json!({"tenant": demo::FABRIKAM_TENANT_ID, "api": "m365d", "user_token": fabrikam}),
        )
        .await
        .unwrap_err();
    assert_eq!(no_consent.code(), ErrorCode::UserConsentMissing);
    assert_eq!(
        EdgeError::from(&no_consent).body()["error"].get("claims"),
        None
    );

    // MFA: the claims challenge travels to the caller unchanged, in the HTTP error body too.
    let secops = fixture.user_token(demo::CONTOSO_TENANT_ID, demo::CONTOSO_MFA_USER_UPN);
    let mfa = fixture
        .service
        .mint_json(json!({"tenant": demo::CONTOSO_TENANT_ID, "api": "m365d", "user_token": secops}))
        .await
        .unwrap_err();
    assert_eq!(mfa.code(), ErrorCode::InteractionRequired);
    let challenge = mfa
        .claims_challenge()
        .expect("a claims challenge")
        .to_owned();
    let edge = EdgeError::from(&mfa);
    assert_eq!(edge.body()["error"]["claims"], challenge.as_str());
    assert_eq!(edge.body()["error"]["code"], "interaction_required");

    // Nothing secret in any message.
    for error in [&v1, &other_tenant, &garbage, &no_consent, &mfa] {
        let message = error.to_string();
        for secret in [&analyst, &fabrikam, &secops] {
            assert!(!message.contains(secret.as_str()), "{message}");
        }
        assert!(!message.contains(demo::CLIENT_SECRET), "{message}");
    }
    fixture.stop().await;
}
