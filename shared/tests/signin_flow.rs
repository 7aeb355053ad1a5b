//! Interactive sign-in end to end inside one process: the real `SignInService` sends a user to the
//! emulator's authorize page, the page's decision comes back as the redirect a browser would
//! follow, the callback redeems the code and keeps the refresh token sealed; `mint-token`'s service
//! then mints for that user from the stored sign-in, rotating the token, until it is revoked.

use defender_emulator::browser::Page;
use defender_emulator::demo;
use defender_partner::ErrorCode;
use defender_partner::config::{
    ENV_SIGNIN_REDIRECT_URI, ENV_STATE_KEY, ENV_TOKEN_DEADLINE_SECONDS, Settings,
};
use defender_partner::minting::{MintError, MintRequest, TokenService};
use defender_partner::signin::{SignInService, StoredSignIns};
use defender_partner::tenant_id::TenantId;
use defender_partner_testkit::World;
use defender_partner_testkit::world::active;
use secrecy::ExposeSecret;
use url::Url;

use defender_partner::CallerError;
const REDIRECT_URI: &str = "http://127.0.0.1/signin/callback";

/// The sign-in service of a function on a [`World`] of the demo scenario, Contoso registered.
struct Fixture {
    world: World,
    signin: SignInService,
}

impl Fixture {
    async fn start() -> Fixture {
        Fixture::start_with(|_| {}).await
    }

    /// As [`Fixture::start`], with the settings adjusted first.
    async fn start_with(adjust: impl FnOnce(&mut Settings) + Send + 'static) -> Fixture {
        let world = World::builder()
            .setting(ENV_STATE_KEY, "a-test-state-key-of-at-least-32-characters")
            .setting(ENV_SIGNIN_REDIRECT_URI, REDIRECT_URI)
            .setting(ENV_TOKEN_DEADLINE_SECONDS, "10")
            .adjust(adjust)
            .tenant(active(demo::CONTOSO_TENANT_ID, "Contoso"))
            .start()
            .await
            .unwrap();
        let signin = SignInService::build(&world.services).await.unwrap();
        Fixture { world, signin }
    }

    /// What the browser does: opens the link, the user picks `user` and decides; answers the
    /// query string Microsoft redirects back with.
    async fn sign_in(&self, user: &str, decision: &str) -> String {
        self.sign_in_as(demo::CONTOSO_TENANT_ID, user, decision)
            .await
    }

    /// As [`Fixture::sign_in`] for a Contoso link, the user signing in at `authority_tenant`.
    async fn sign_in_as(&self, authority_tenant: &str, user: &str, decision: &str) -> String {
        let link = self
            .signin
            .start(demo::CONTOSO_TENANT_ID, Some("m365d"), None)
            .await
            .unwrap();
        assert!(link.url.starts_with(self.world.base_url()));
        let page = Page::open(&link.url).await.unwrap();
        assert_eq!(page.status, 200, "the authorize page is shown");
        let answer = page
            .submit(&[
                ("authority_tenant", authority_tenant),
                ("user", user),
                ("decision", decision),
            ])
            .await
            .unwrap();
        assert_eq!(answer.status, 302);
        let location = Url::parse(&answer.location.unwrap()).unwrap();
        assert_eq!(location.path(), "/signin/callback");
        location.query().unwrap_or("").to_owned()
    }

    /// A fresh `mint-token` service (a cold start): its token cache is empty.
    async fn mint_service(&self) -> TokenService {
        let stored = StoredSignIns::build(&self.world.services).await.unwrap();
        TokenService::new(&self.world.services).with_stored_sign_ins(stored)
    }
}

fn request(user_oid: &str) -> MintRequest {
    MintRequest {
        tenant: Some(demo::CONTOSO_TENANT_ID.into()),
        api: Some("m365d".into()),
        endpoint_version: None,
        user_token: None,
        user_oid: Some(user_oid.into()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_keeps_a_sealed_refresh_token_that_mints_rotates_and_dies_when_revoked() {
    let fixture = Fixture::start().await;
    let query = fixture.sign_in(demo::CONTOSO_ANALYST_UPN, "accept").await;
    let code = Url::parse(&format!("http://x/?{query}"))
        .unwrap()
        .query_pairs()
        .find(|(key, _)| key == "code")
        .map(|(_, value)| value.into_owned())
        .expect("a code");

    let page = fixture.signin.callback(&query).await;
    let html = page.render();
    assert_eq!(page.status, 200, "{html}");
    assert!(html.contains(demo::CONTOSO_ANALYST_UPN), "{html}");
    assert!(html.contains(demo::CONTOSO_TENANT_ID));
    assert!(
        html.contains("Incident.Read"),
        "granted scopes are listed: {html}"
    );
    assert!(!html.contains(&code), "the page never shows the code");
    assert!(!html.contains("eyJ"), "the page never shows a token");

    // Stored, sealed: the refresh token is not readable in the store.
    let contoso = TenantId::parse(demo::CONTOSO_TENANT_ID).unwrap();
    let stored = fixture
        .world
        .services
        .signed_in
        .signed_in_user(&contoso, demo::CONTOSO_ANALYST_OID)
        .await
        .unwrap()
        .expect("the sign-in is kept");
    assert_eq!(stored.user_name.as_deref(), Some(demo::CONTOSO_ANALYST_UPN));

    // The same link works once.
    assert_eq!(fixture.signin.callback(&query).await.status, 409);

    // Minting from the stored sign-in, twice from two cold caches: each redeems and rotates.
    let handle = fixture.world.handle();
    let minted = fixture
        .mint_service()
        .await
        .mint(&request(demo::CONTOSO_ANALYST_OID))
        .await
        .unwrap();
    assert_eq!(minted.user_oid.as_deref(), Some(demo::CONTOSO_ANALYST_OID));
    assert_eq!(minted.user_upn.as_deref(), Some(demo::CONTOSO_ANALYST_UPN));
    assert!(minted.scopes.iter().any(|scope| scope == "Incident.Read"));
    assert!(!minted.access_token.expose_secret().is_empty());
    let after_first = handle
        .refresh_token_counts(demo::CONTOSO_TENANT_ID, demo::CONTOSO_ANALYST_UPN)
        .unwrap();
    assert_eq!(
        (after_first.active, after_first.used),
        (1, 1),
        "rotated once"
    );
    let rotated = fixture
        .world
        .services
        .signed_in
        .signed_in_user(&contoso, demo::CONTOSO_ANALYST_OID)
        .await
        .unwrap()
        .unwrap();
    assert!(
        rotated.version > stored.version,
        "the rotated token was stored"
    );
    fixture
        .mint_service()
        .await
        .mint(&request(demo::CONTOSO_ANALYST_OID))
        .await
        .expect("the rotated token works");
    let after_second = handle
        .refresh_token_counts(demo::CONTOSO_TENANT_ID, demo::CONTOSO_ANALYST_UPN)
        .unwrap();
    assert_eq!((after_second.active, after_second.used), (1, 2));

    // A password reset revokes it: the next mint says sign in again and the sign-in is deleted.
    handle
        .revoke_refresh_tokens(demo::CONTOSO_TENANT_ID, demo::CONTOSO_ANALYST_UPN)
        .unwrap();
    let error = fixture
        .mint_service()
        .await
        .mint(&request(demo::CONTOSO_ANALYST_OID))
        .await
        .unwrap_err();
    assert_eq!(error.code(), ErrorCode::SignInRequired, "{error}");
    assert!(
        fixture
            .world
            .services
            .signed_in
            .signed_in_user(&contoso, demo::CONTOSO_ANALYST_OID)
            .await
            .unwrap()
            .is_none()
    );

    // Someone who never signed in.
    let error = fixture
        .mint_service()
        .await
        .mint(&request(demo::CONTOSO_NO_ROLE_OID))
        .await
        .unwrap_err();
    assert_eq!(error.code(), ErrorCode::SignInRequired);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declined_sign_in_keeps_nothing_and_minting_needs_the_enabled_function() {
    let fixture = Fixture::start().await;
    let query = fixture.sign_in(demo::CONTOSO_ANALYST_UPN, "decline").await;
    let page = fixture.signin.callback(&query).await;
    assert_eq!(page.status, 200);
    assert!(page.render().contains("access_denied"));
    let contoso = TenantId::parse(demo::CONTOSO_TENANT_ID).unwrap();
    assert!(
        fixture
            .world
            .services
            .signed_in
            .signed_in_user(&contoso, demo::CONTOSO_ANALYST_OID)
            .await
            .unwrap()
            .is_none()
    );

    // A forged or tampered state is refused before anything is redeemed.
    assert_eq!(
        fixture
            .signin
            .callback("code=abc&state=v1.xx.yy")
            .await
            .status,
        400
    );
    assert_eq!(fixture.signin.callback("code=abc").await.status, 400);

    // A user_oid is an object id, nothing else.
    for bad in [
        "",
        "analyst@contoso.onmicrosoft.com",
        "../../etc",
        "aaaaaaaa-0000",
    ] {
        let error = fixture
            .mint_service()
            .await
            .mint(&request(bad))
            .await
            .unwrap_err();
        assert_eq!(error.code(), ErrorCode::InvalidRequest, "{bad:?}: {error}");
    }

    // The plain mint-token deployment does not act for stored sign-ins.
    let error = TokenService::new(&fixture.world.services)
        .mint(&request(demo::CONTOSO_ANALYST_OID))
        .await
        .unwrap_err();
    assert!(matches!(error, MintError::StoredSignInDisabled));
    assert_eq!(error.code(), ErrorCode::StoredSignInDisabled);

    // Unregistered tenants get no sign-in link.
    let error = fixture
        .signin
        .start(demo::FABRIKAM_TENANT_ID, None, None)
        .await
        .unwrap_err();
    assert_eq!(error.code(), ErrorCode::TenantNotRegistered);
}

fn request_for(user_oid: &str, api: &str) -> MintRequest {
    MintRequest {
        api: Some(api.into()),
        ..request(user_oid)
    }
}

impl Fixture {
    async fn signed_in_analyst(&self) -> defender_partner::store::SignedInUser {
        let query = self.sign_in(demo::CONTOSO_ANALYST_UPN, "accept").await;
        assert_eq!(self.signin.callback(&query).await.status, 200);
        self.stored_analyst().await.expect("the sign-in is kept")
    }

    async fn stored_analyst(&self) -> Option<defender_partner::store::SignedInUser> {
        let contoso = TenantId::parse(demo::CONTOSO_TENANT_ID).unwrap();
        self.world
            .services
            .signed_in
            .signed_in_user(&contoso, demo::CONTOSO_ANALYST_OID)
            .await
            .unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_mints_for_one_user_never_lose_the_sign_in() {
    let fixture = Fixture::start().await;
    let signed_in = fixture.signed_in_analyst().await;

    // One instance, two APIs at once: each redemption spends the token the other would need, so
    // they take turns, and both rotations are kept.
    let service = fixture.mint_service().await;
    let (for_m365d, for_mde) = (
        request_for(demo::CONTOSO_ANALYST_OID, "m365d"),
        request_for(demo::CONTOSO_ANALYST_OID, "mde"),
    );
    let (m365d, mde) = tokio::join!(service.mint(&for_m365d), service.mint(&for_mde));
    m365d.expect("an M365 Defender token");
    mde.expect("a Defender for Endpoint token");
    let after_one_instance = fixture.stored_analyst().await.expect("still signed in");
    assert_eq!(after_one_instance.version, signed_in.version + 2);

    // Two instances (two cold services) redeem the same stored token at once: Entra accepts it
    // once and refuses the other as spent; the refused one waits for the winner's write and
    // redeems the rotated token instead of deleting the sign-in.
    let (first, second) = (fixture.mint_service().await, fixture.mint_service().await);
    let analyst = request(demo::CONTOSO_ANALYST_OID);
    let (a, b) = tokio::join!(first.mint(&analyst), second.mint(&analyst));
    a.expect("the first instance's token");
    b.expect("the second instance's token");
    let after_two_instances = fixture.stored_analyst().await.expect("still signed in");
    assert_eq!(after_two_instances.version, after_one_instance.version + 2);
    let counts = fixture
        .world
        .emulator
        .handle()
        .refresh_token_counts(demo::CONTOSO_TENANT_ID, demo::CONTOSO_ANALYST_UPN)
        .unwrap();
    assert_eq!(
        counts.active, 1,
        "exactly one live refresh token: {counts:?}"
    );
    assert_eq!(counts.revoked, 0, "{counts:?}");
    fixture
        .mint_service()
        .await
        .mint(&request_for(demo::CONTOSO_ANALYST_OID, "graph"))
        .await
        .expect("the stored sign-in still works");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_sign_in_asks_for_a_new_one_and_is_kept() {
    let fixture = Fixture::start().await;
    let mut stored = fixture.signed_in_analyst().await;
    // As if sealed under another key: the envelope no longer opens.
    let last = stored.sealed_refresh_token.len() - 1;
    stored.sealed_refresh_token[last] ^= 0x55;
    fixture
        .world
        .services
        .signed_in
        .save_sign_in(&stored)
        .await
        .unwrap();

    let error = fixture
        .mint_service()
        .await
        .mint(&request(demo::CONTOSO_ANALYST_OID))
        .await
        .unwrap_err();
    assert_eq!(error.code(), ErrorCode::SignInRequired, "{error}");
    assert!(error.to_string().contains("is kept"), "{error}");
    assert!(
        fixture.stored_analyst().await.is_some(),
        "a key problem never deletes a sign-in"
    );

    // The user's next sign-in replaces it, and minting works again.
    fixture.signed_in_analyst().await;
    fixture
        .mint_service()
        .await
        .mint(&request(demo::CONTOSO_ANALYST_OID))
        .await
        .expect("minting works after a new sign-in");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_link_keeps_nothing() {
    let fixture = Fixture::start_with(|settings| {
        settings.signin.state_ttl = std::time::Duration::from_secs(1);
    })
    .await;
    let query = fixture.sign_in(demo::CONTOSO_ANALYST_UPN, "accept").await;
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let page = fixture.signin.callback(&query).await;
    assert_eq!(page.status, 410, "{}", page.render());
    assert!(page.render().contains("This sign-in link has expired"));
    assert!(fixture.stored_analyst().await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consent_state_is_never_a_sign_in_state() {
    use defender_partner::redirect::{Purpose, StateSigner};
    use defender_partner::signin::SignInState;
    use secrecy::SecretSlice;
    let fixture = Fixture::start().await;
    let query = fixture.sign_in(demo::CONTOSO_ANALYST_UPN, "accept").await;
    let params: std::collections::HashMap<String, String> =
        url::form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect();
    let payload = params["state"].split('.').nth(1).expect("a signed state");
    let claims: SignInState = serde_json::from_slice(
        &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, payload)
            .unwrap(),
    )
    .unwrap();
    // The same claims signed for the consent link (the service key the consent flow uses).
    let consent_signed = StateSigner::new(
        &SecretSlice::from(b"a-test-state-key-of-at-least-32-characters".to_vec()),
        Purpose::ConsentLink,
    )
    .sign(&claims);
    let forged_query = format!("code={}&state={consent_signed}", params["code"]);
    let page = fixture.signin.callback(&forged_query).await;
    assert_eq!(page.status, 400, "{}", page.render());
    assert!(fixture.stored_analyst().await.is_none());
    // The genuine one still works: the refusal spent nothing.
    assert_eq!(fixture.signin.callback(&query).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sign_in_to_another_tenant_keeps_nothing() {
    let fixture = Fixture::start().await;
    // Fabrikam's users may sign in to the app too; but the link was for Contoso.
    fixture
        .world
        .emulator
        .handle()
        .set_delegated_grant(
            demo::FABRIKAM_TENANT_ID,
            &defender_emulator::DelegatedGrantConfig {
                client_id: demo::CLIENT_ID.into(),
                resource: "https://api.security.microsoft.com".into(),
                scopes: vec!["Incident.Read".into()],
                user: None,
            },
        )
        .unwrap();
    let query = fixture
        .sign_in_as(
            demo::FABRIKAM_TENANT_ID,
            demo::FABRIKAM_ANALYST_UPN,
            "accept",
        )
        .await;
    let page = fixture.signin.callback(&query).await;
    let html = page.render();
    // The code is redeemed at the tenant of the link, which refuses a code of another tenant;
    // the `tid` check after redemption is a second line of defence that neither Entra nor the
    // emulator ever reaches.
    assert_eq!(page.status, 403, "{html}");
    assert!(
        html.contains("Signed in to another tenant") || html.contains("did not accept"),
        "{html}"
    );
    let fabrikam = TenantId::parse(demo::FABRIKAM_TENANT_ID).unwrap();
    assert!(
        fixture
            .world
            .services
            .signed_in
            .signed_in_user(&fabrikam, demo::FABRIKAM_ANALYST_OID)
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_stored_sign_ins_a_sign_in_keeps_nothing() {
    // The template's setting when StoredSignInMinting is disabled.
    let fixture = Fixture::start_with(|settings| {
        settings.signin.keep_refresh_tokens = false;
    })
    .await;
    let query = fixture.sign_in(demo::CONTOSO_ANALYST_UPN, "accept").await;
    let page = fixture.signin.callback(&query).await;
    let html = page.render();
    assert_eq!(page.status, 200, "{html}");
    assert!(html.contains(demo::CONTOSO_ANALYST_UPN), "{html}");
    assert!(html.contains("Nothing was kept"), "{html}");
    assert!(fixture.stored_analyst().await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_says_when_the_granted_permissions_are_not_enough() {
    let fixture = Fixture::start().await;
    // Contoso's administrator consented to a permission of the API that reads no incidents.
    fixture
        .world
        .emulator
        .handle()
        .set_delegated_grant(
            demo::CONTOSO_TENANT_ID,
            &defender_emulator::DelegatedGrantConfig {
                client_id: demo::CLIENT_ID.into(),
                resource: "https://api.security.microsoft.com".into(),
                scopes: vec!["Machine.Read".into()],
                user: None,
            },
        )
        .unwrap();
    let query = fixture.sign_in(demo::CONTOSO_ANALYST_UPN, "accept").await;
    let page = fixture.signin.callback(&query).await;
    let html = page.render();
    assert_eq!(page.status, 200, "{html}");
    assert!(html.contains("id=\"scopes-missing\""), "{html}");
    assert!(html.contains("Incident.Read"), "{html}");

    // A full grant shows no such notice.
    let fixture = Fixture::start().await;
    let query = fixture.sign_in(demo::CONTOSO_ANALYST_UPN, "accept").await;
    let html = fixture.signin.callback(&query).await.render();
    assert!(!html.contains("scopes-missing"), "{html}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entra_outage_keeps_the_sign_in() {
    let fixture = Fixture::start_with(|settings| {
        settings.token.deadline = std::time::Duration::from_secs(2);
    })
    .await;
    let before = fixture.signed_in_analyst().await;
    fixture
        .world
        .emulator
        .handle()
        .push_fault(defender_emulator::Fault::status(
            defender_emulator::FaultMatch::Token,
            503,
            1000,
        ))
        .unwrap();
    let error = fixture
        .mint_service()
        .await
        .mint(&request(demo::CONTOSO_ANALYST_OID))
        .await
        .unwrap_err();
    assert_eq!(error.code(), ErrorCode::MicrosoftUnavailable, "{error}");
    let kept = fixture
        .stored_analyst()
        .await
        .expect("an outage deletes nothing");
    assert_eq!(kept.version, before.version, "and rotates nothing");

    fixture.world.handle().clear_faults();
    fixture
        .mint_service()
        .await
        .mint(&request(demo::CONTOSO_ANALYST_OID))
        .await
        .expect("the same sign-in works once Entra is back");
}
