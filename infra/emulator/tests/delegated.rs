//! Delegated access: the authorize page (sign-in + consent), authorization code + PKCE, refresh
//! token rotation and revocation, on-behalf-of, device code, and the data APIs' checks of
//! delegated tokens (scopes and portal roles).

mod common;

use std::collections::HashMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::*;
use defender_emulator::RunningEmulator;
use defender_emulator::browser::Page;
use defender_emulator::demo::{
    CONTOSO_ANALYST_OID, CONTOSO_ANALYST_UPN, CONTOSO_MFA_USER_UPN, CONTOSO_NO_ROLE_UPN,
    CONTOSO_TENANT_ID, FABRIKAM_ANALYST_UPN, SIGNIN_REDIRECT_URI, WOODGROVE_ADMIN_OID,
    WOODGROVE_ADMIN_UPN, WOODGROVE_ANALYST_UPN, WOODGROVE_TENANT_ID,
};
use reqwest::StatusCode;
use reqwest::header::LOCATION;
use serde_json::{Value, json};
use url::Url;

const CALLBACK: &str = "http://localhost:8400/signin/callback";
const STATE: &str = "st-delegated-1";
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk-emulator-test";
const M365D_READ: &str = "https://api.security.microsoft.com/Incident.Read";
const DEVICE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";
const OBO_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

fn challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        verifier.as_bytes(),
    ))
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn token_url(emulator: &RunningEmulator, tenant: &str) -> String {
    format!("{}/{tenant}/oauth2/v2.0/token", emulator.base_url())
}

/// The authorize link's parameters.
fn link_params(scope: &str) -> Vec<(&'static str, String)> {
    vec![
        ("client_id", CLIENT_ID.to_owned()),
        ("response_type", "code".to_owned()),
        ("redirect_uri", CALLBACK.to_owned()),
        ("scope", scope.to_owned()),
        ("state", STATE.to_owned()),
        ("code_challenge", challenge(VERIFIER)),
        ("code_challenge_method", "S256".to_owned()),
        ("nonce", "n-1".to_owned()),
    ]
}

fn authorize_url(emulator: &RunningEmulator, tenant: &str, params: &[(&str, String)]) -> String {
    let mut url = Url::parse(&format!(
        "{}/{tenant}/oauth2/v2.0/authorize",
        emulator.base_url()
    ))
    .unwrap();
    url.query_pairs_mut()
        .extend_pairs(params.iter().map(|(k, v)| (*k, v.as_str())));
    url.to_string()
}

fn query_of(location: &str) -> HashMap<String, String> {
    Url::parse(location)
        .unwrap()
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// Opens the sign-in page of a link and submits its form as a browser would; returns the
/// redirect's query.
async fn decide(
    emulator: &RunningEmulator,
    tenant: &str,
    scope: &str,
    user: &str,
    decision: &str,
    mfa: bool,
) -> HashMap<String, String> {
    let page = Page::open(&authorize_url(emulator, tenant, &link_params(scope)))
        .await
        .unwrap();
    assert_eq!(page.status, StatusCode::OK, "{}", page.html);
    let mut fields = vec![("user", user), ("decision", decision)];
    if mfa {
        fields.push(("mfa", "true"));
    }
    let response = page.submit(&fields).await.unwrap();
    assert_eq!(response.status, StatusCode::FOUND);
    let location = response.location.expect("a Location");
    assert!(location.starts_with(CALLBACK), "{location}");
    query_of(&location)
}

async fn code_for(emulator: &RunningEmulator, scope: &str, user: &str, mfa: bool) -> String {
    let query = decide(emulator, CONTOSO, scope, user, "accept", mfa).await;
    assert_eq!(query["state"], STATE);
    query["code"].clone()
}

async fn redeem(emulator: &RunningEmulator, code: &str, verifier: &str) -> Answer {
    post_form(
        &token_url(emulator, CONTOSO),
        &[
            ("grant_type", "authorization_code"),
            ("client_id", CLIENT_ID),
            ("client_secret", SECRET),
            ("code", code),
            ("redirect_uri", CALLBACK),
            ("code_verifier", verifier),
            ("scope", M365D_READ),
        ],
    )
    .await
}

async fn refresh(emulator: &RunningEmulator, token: &str, scope: Option<&str>) -> Answer {
    let mut form = vec![
        ("grant_type", "refresh_token"),
        ("client_id", CLIENT_ID),
        ("client_secret", SECRET),
        ("refresh_token", token),
    ];
    if let Some(scope) = scope {
        form.push(("scope", scope));
    }
    post_form(&token_url(emulator, CONTOSO), &form).await
}

/// The claims of a token, unverified.
fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

/// A user token for the demo app itself, minted by the control API.
async fn user_token(emulator: &RunningEmulator, request: &Value) -> String {
    let answer = post_json(emulator, "/_emulator/delegated/tokens", request).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    answer.body["access_token"].as_str().unwrap().to_owned()
}

async fn post_json(emulator: &RunningEmulator, path: &str, body: &Value) -> Answer {
    answer(
        client()
            .post(format!("{}{path}", emulator.base_url()))
            .json(body)
            .send()
            .await
            .unwrap(),
    )
    .await
}

async fn put_json(emulator: &RunningEmulator, path: &str, body: &Value) -> Answer {
    answer(
        client()
            .put(format!("{}{path}", emulator.base_url()))
            .json(body)
            .send()
            .await
            .unwrap(),
    )
    .await
}

async fn obo(emulator: &RunningEmulator, tenant: &str, assertion: &str, resource: &str) -> Answer {
    post_form(
        &token_url(emulator, tenant),
        &[
            ("grant_type", OBO_GRANT),
            ("client_id", CLIENT_ID),
            ("client_secret", SECRET),
            ("assertion", assertion),
            ("requested_token_use", "on_behalf_of"),
            ("scope", &format!("{resource}/.default")),
        ],
    )
    .await
}

async fn data_call(emulator: &RunningEmulator, path: &str, token: &str) -> Answer {
    answer(
        client()
            .get(format!("{}{path}", emulator.base_url()))
            .bearer_auth(token)
            .send()
            .await
            .unwrap(),
    )
    .await
}

// --- authorization code + PKCE ------------------------------------------------------------

#[tokio::test]
async fn the_sign_in_page_lists_the_tenants_users_with_stable_ids() {
    let emulator = start_demo().await;
    let scope = format!("openid offline_access {M365D_READ}");
    let page = get(&authorize_url(
        &emulator,
        "contoso.com",
        &link_params(&scope),
    ))
    .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text);
    for needle in [
        r#"<form method="post" action="/_emulator/signin/decision">"#,
        r#"<select id="user" name="user">"#,
        &format!(
            r#"<option value="{CONTOSO_ANALYST_UPN}" data-oid="{CONTOSO_ANALYST_OID}" data-tenant="{CONTOSO_TENANT_ID}" selected>"#
        ),
        CONTOSO_MFA_USER_UPN,
        "MFA required",
        r#"id="mfa" name="mfa" value="true""#,
        r#"<button id="accept" type="submit" name="decision" value="accept">"#,
        r#"<button id="decline" type="submit" name="decision" value="decline">"#,
        r#"<input type="hidden" name="authority_tenant" value="contoso.com">"#,
        r#"<li class="scope" data-scope="Incident.Read">"#,
    ] {
        assert!(page.text.contains(needle), "{needle} in {}", page.text);
    }
    let csp = page.headers["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("form-action 'self' http://localhost:8400"),
        "{csp}"
    );

    let mut hinted = link_params(&scope);
    hinted.push(("login_hint", CONTOSO_NO_ROLE_UPN.to_owned()));
    let page = get(&authorize_url(&emulator, CONTOSO, &hinted)).await;
    assert!(
        page.text
            .contains(&format!(r#"value="{CONTOSO_NO_ROLE_UPN}" data-oid"#))
    );
    assert!(
        page.text.contains(&format!(
            "000000000003\" data-tenant=\"{CONTOSO_TENANT_ID}\" selected>"
        )),
        "{}",
        page.text
    );
}

#[tokio::test]
async fn an_identity_sign_in_at_organizations_names_the_users_own_tenant() {
    // What onboarding does after an admin consent: `openid profile` only, at `organizations`,
    // redeemed there too; the ID token carries the nonce, the user's tenant and `wids`.
    let emulator = start_demo().await;
    let page = get(&authorize_url(
        &emulator,
        "organizations",
        &link_params("openid profile"),
    ))
    .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text);
    assert!(page.text.contains(WOODGROVE_ADMIN_UPN) && page.text.contains(CONTOSO_ANALYST_UPN));
    let consumers = get(&authorize_url(
        &emulator,
        "consumers",
        &link_params("openid"),
    ))
    .await;
    assert_eq!(consumers.status, StatusCode::BAD_REQUEST);
    for (user, admin) in [(WOODGROVE_ADMIN_UPN, true), (WOODGROVE_ANALYST_UPN, false)] {
        let query = decide(
            &emulator,
            "organizations",
            "openid profile",
            user,
            "accept",
            false,
        )
        .await;
        let answer = post_form(
            &token_url(&emulator, "organizations"),
            &[
                ("grant_type", "authorization_code"),
                ("client_id", CLIENT_ID),
                ("client_secret", SECRET),
                ("code", &query["code"]),
                ("redirect_uri", CALLBACK),
                ("code_verifier", VERIFIER),
                ("scope", "openid profile"),
            ],
        )
        .await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
        let id = claims(answer.body["id_token"].as_str().unwrap());
        assert_eq!(id["tid"], WOODGROVE_TENANT_ID);
        assert_eq!(
            id["iss"],
            format!("{}/{WOODGROVE_TENANT_ID}/v2.0", emulator.base_url())
        );
        assert_eq!(id["nonce"], "n-1");
        assert_eq!(id["aud"], CLIENT_ID);
        let wids = id["wids"].as_array().unwrap();
        assert_eq!(
            wids.contains(&json!("62e90394-69f5-4237-9190-012177145e10")),
            admin,
            "{user}: {wids:?}"
        );
        if admin {
            assert_eq!(id["oid"], WOODGROVE_ADMIN_OID);
        }
        assert_eq!(answer.body["scope"], "openid profile");
    }
}

#[tokio::test]
async fn accept_gives_a_code_that_redeems_once_with_the_right_verifier() {
    let emulator = start_demo().await;
    let scope = format!("openid profile offline_access {M365D_READ}");
    let query = decide(
        &emulator,
        CONTOSO,
        &scope,
        CONTOSO_ANALYST_UPN,
        "accept",
        false,
    )
    .await;
    assert_eq!(query["state"], STATE);
    assert!(query.contains_key("session_state"));
    let code = &query["code"];

    let wrong = redeem(
        &emulator,
        code,
        "another-verifier-another-verifier-another-verifier",
    )
    .await;
    assert_entra_error(&wrong, 400, "invalid_grant", 501481);

    let missing = post_form(
        &token_url(&emulator, CONTOSO),
        &[
            ("grant_type", "authorization_code"),
            ("client_id", CLIENT_ID),
            ("client_secret", SECRET),
            ("code", code),
            ("redirect_uri", CALLBACK),
        ],
    )
    .await;
    assert_entra_error(&missing, 400, "invalid_request", 900144);

    let no_secret = post_form(
        &token_url(&emulator, CONTOSO),
        &[
            ("grant_type", "authorization_code"),
            ("client_id", CLIENT_ID),
            ("code", code),
            ("redirect_uri", CALLBACK),
            ("code_verifier", VERIFIER),
        ],
    )
    .await;
    assert_entra_error(&no_secret, 401, "invalid_client", 7000218);

    let other_redirect = post_form(
        &token_url(&emulator, CONTOSO),
        &[
            ("grant_type", "authorization_code"),
            ("client_id", CLIENT_ID),
            ("client_secret", SECRET),
            ("code", code),
            ("redirect_uri", SIGNIN_REDIRECT_URI),
            ("code_verifier", VERIFIER),
        ],
    )
    .await;
    assert_entra_error(&other_redirect, 400, "invalid_grant", 70000);

    let ok = redeem(&emulator, code, VERIFIER).await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text);
    assert_eq!(ok.body["token_type"], "Bearer");
    assert_eq!(ok.body["expires_in"], 3599);
    let granted = ok.body["scope"].as_str().unwrap();
    assert!(granted.contains(M365D_READ), "{granted}");
    assert!(granted.contains("offline_access") && granted.contains("openid"));
    assert!(ok.body["refresh_token"].is_string());
    let access = ok.body["access_token"].as_str().unwrap();
    let issuer = format!("{}/{CONTOSO}/v2.0", emulator.base_url());
    let claims = verify_token(&emulator, access, M365D, &issuer).await;
    let scp: Vec<&str> = claims["scp"].as_str().unwrap().split(' ').collect();
    assert!(scp.contains(&"Incident.Read"), "{scp:?}");
    assert_eq!(claims["oid"], CONTOSO_ANALYST_OID);
    assert_eq!(claims["upn"], CONTOSO_ANALYST_UPN);
    assert_eq!(claims["preferred_username"], CONTOSO_ANALYST_UPN);
    assert_eq!(claims["tid"], CONTOSO);
    assert_eq!(claims["azp"], CLIENT_ID);
    assert_eq!(claims["appid"], CLIENT_ID);
    assert_eq!(claims["idtyp"], "user");
    assert_eq!(claims["azpacr"], "1");
    assert!(claims.get("roles").is_none());
    for claim in ["iat", "nbf", "exp"] {
        assert!(claims[claim].is_i64(), "{claim}");
    }
    let id_token = ok.body["id_token"].as_str().unwrap();
    let id = verify_token(&emulator, id_token, CLIENT_ID, &issuer).await;
    assert_eq!(id["nonce"], "n-1");
    assert_eq!(id["oid"], CONTOSO_ANALYST_OID);

    let again = redeem(&emulator, code, VERIFIER).await;
    assert_entra_error(&again, 400, "invalid_grant", 54005);
    let unknown = redeem(&emulator, "0.Anot-a-code", VERIFIER).await;
    assert_entra_error(&unknown, 400, "invalid_grant", 70000);
}

#[tokio::test]
async fn without_offline_access_and_openid_there_is_no_refresh_or_id_token() {
    let emulator = start_demo().await;
    let code = code_for(&emulator, M365D_READ, CONTOSO_ANALYST_UPN, false).await;
    let ok = redeem(&emulator, &code, VERIFIER).await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text);
    assert!(ok.body.get("refresh_token").is_none());
    assert!(ok.body.get("id_token").is_none());
}

#[tokio::test]
async fn decline_redirects_access_denied_with_the_state() {
    let emulator = start_demo().await;
    let query = decide(
        &emulator,
        CONTOSO,
        M365D_READ,
        CONTOSO_ANALYST_UPN,
        "decline",
        false,
    )
    .await;
    assert_eq!(query["error"], "access_denied");
    assert!(
        query["error_description"].starts_with("AADSTS65004: "),
        "{query:?}"
    );
    assert_eq!(query["state"], STATE);
    assert!(!query.contains_key("code"));
}

#[tokio::test]
async fn an_mfa_user_must_complete_mfa_on_the_page() {
    let emulator = start_demo().await;
    let query = decide(
        &emulator,
        CONTOSO,
        M365D_READ,
        CONTOSO_MFA_USER_UPN,
        "accept",
        false,
    )
    .await;
    assert_eq!(query["error"], "interaction_required");
    assert!(
        query["error_description"].starts_with("AADSTS50076: "),
        "{query:?}"
    );
    assert_eq!(query["state"], STATE);

    let code = code_for(&emulator, M365D_READ, CONTOSO_MFA_USER_UPN, true).await;
    let ok = redeem(&emulator, &code, VERIFIER).await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text);
    let claims = claims(ok.body["access_token"].as_str().unwrap());
    assert_eq!(claims["amr"], json!(["pwd", "mfa"]));
}

#[tokio::test]
async fn bad_links_show_the_error_page_or_redirect_an_error() {
    let emulator = start_demo().await;
    let mut params = link_params(M365D_READ);
    params[2].1 = "https://evil.example/signin/callback".to_owned();
    let page = get(&authorize_url(&emulator, CONTOSO, &params)).await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    assert!(
        page.text
            .contains(r#"<span id="error-code">AADSTS50011</span>"#)
    );
    let page = get(&authorize_url(
        &emulator,
        "unknown.example",
        &link_params(M365D_READ),
    ))
    .await;
    assert!(page.text.contains("AADSTS90002"));

    let params: Vec<(&str, String)> = link_params(M365D_READ)
        .into_iter()
        .filter(|(name, _)| *name != "code_challenge")
        .collect();
    let response = no_redirects()
        .get(authorize_url(&emulator, CONTOSO, &params))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FOUND);
    let query = query_of(response.headers()[LOCATION].to_str().unwrap());
    assert_eq!(query["error"], "invalid_request");
    assert_eq!(query["state"], STATE);
}

#[tokio::test]
async fn an_expired_code_is_refused() {
    let emulator = start_demo().await;
    let set = put_json(
        &emulator,
        "/_emulator/settings",
        &json!({"authorization_code_lifetime_seconds": 0}),
    )
    .await;
    assert_eq!(set.status, StatusCode::NO_CONTENT, "{}", set.text);
    let code = code_for(&emulator, M365D_READ, CONTOSO_ANALYST_UPN, false).await;
    let expired = redeem(&emulator, &code, VERIFIER).await;
    assert_entra_error(&expired, 400, "invalid_grant", 70008);
}

// --- refresh tokens -----------------------------------------------------------------------

async fn first_refresh_token(emulator: &RunningEmulator) -> String {
    let code = code_for(
        emulator,
        &format!("offline_access {M365D_READ}"),
        CONTOSO_ANALYST_UPN,
        false,
    )
    .await;
    let ok = redeem(emulator, &code, VERIFIER).await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text);
    ok.body["refresh_token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn refresh_tokens_rotate_and_an_old_one_is_refused() {
    let emulator = start_demo().await;
    let first = first_refresh_token(&emulator).await;
    let second = refresh(&emulator, &first, None).await;
    assert_eq!(second.status, StatusCode::OK, "{}", second.text);
    let second_token = second.body["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(second_token, first);
    assert_eq!(
        claims(second.body["access_token"].as_str().unwrap())["aud"],
        M365D
    );

    let reused = refresh(&emulator, &first, None).await;
    assert_entra_error(&reused, 400, "invalid_grant", 70000);

    // A refresh token is good for another consented resource too.
    let mde = refresh(&emulator, &second_token, Some(&format!("{MDE}/.default"))).await;
    assert_eq!(mde.status, StatusCode::OK, "{}", mde.text);
    let mde_claims = claims(mde.body["access_token"].as_str().unwrap());
    assert_eq!(mde_claims["aud"], MDE);
    assert_eq!(mde_claims["scp"], "Alert.Read");

    let counts = get(&format!(
        "{}/_emulator/tenants/contoso.com/users/{CONTOSO_ANALYST_UPN}/refresh_tokens",
        emulator.base_url()
    ))
    .await;
    assert_eq!(counts.body, json!({"active": 1, "used": 2, "revoked": 0}));

    let no_secret = post_form(
        &token_url(&emulator, CONTOSO),
        &[
            ("grant_type", "refresh_token"),
            ("client_id", CLIENT_ID),
            ("refresh_token", mde.body["refresh_token"].as_str().unwrap()),
        ],
    )
    .await;
    assert_entra_error(&no_secret, 401, "invalid_client", 7000218);
}

#[tokio::test]
async fn revoked_refresh_tokens_answer_50173() {
    let emulator = start_demo().await;
    let token = first_refresh_token(&emulator).await;
    let revoked = answer(
        client()
            .delete(format!(
                "{}/_emulator/tenants/{CONTOSO}/users/{CONTOSO_ANALYST_OID}/refresh_tokens",
                emulator.base_url()
            ))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(revoked.body, json!({"revoked": 1}));
    let refused = refresh(&emulator, &token, None).await;
    assert_entra_error(&refused, 400, "invalid_grant", 50173);
}

#[tokio::test]
async fn expired_refresh_tokens_answer_700082() {
    let emulator = start_demo().await;
    emulator
        .handle()
        .set_delegated_settings(defender_emulator::DelegatedSettings {
            refresh_token_lifetime_seconds: 0,
            ..emulator.handle().delegated_settings()
        });
    let token = first_refresh_token(&emulator).await;
    let refused = refresh(&emulator, &token, None).await;
    assert_entra_error(&refused, 400, "invalid_grant", 700082);
}

// --- on-behalf-of -------------------------------------------------------------------------

#[tokio::test]
async fn obo_exchanges_a_signed_in_users_token_for_the_api() {
    let emulator = start_demo().await;
    // The user's token for the app itself, from a real sign-in.
    let scope = format!("api://{CLIENT_ID}/access_as_user");
    let code = code_for(&emulator, &scope, CONTOSO_ANALYST_UPN, false).await;
    let own = redeem(&emulator, &code, VERIFIER).await;
    assert_eq!(own.status, StatusCode::OK, "{}", own.text);
    let assertion = own.body["access_token"].as_str().unwrap();
    assert_eq!(claims(assertion)["aud"], format!("api://{CLIENT_ID}"));

    let exchanged = obo(&emulator, CONTOSO, assertion, M365D).await;
    assert_eq!(exchanged.status, StatusCode::OK, "{}", exchanged.text);
    let issuer = format!("{}/{CONTOSO}/v2.0", emulator.base_url());
    let token = exchanged.body["access_token"].as_str().unwrap();
    let claims = verify_token(&emulator, token, M365D, &issuer).await;
    assert_eq!(claims["scp"], "Incident.Read AdvancedHunting.Read");
    assert_eq!(claims["oid"], CONTOSO_ANALYST_OID);
    assert_eq!(claims["upn"], CONTOSO_ANALYST_UPN);
    assert_eq!(claims["tid"], CONTOSO);
    assert_eq!(
        exchanged.body["scope"],
        format!("{M365D}/Incident.Read {M365D}/AdvancedHunting.Read")
    );

    // A minted token with the bare client id as audience works too.
    let minted = user_token(
        &emulator,
        &json!({"tenant": CONTOSO, "client_id": CLIENT_ID, "user": CONTOSO_ANALYST_UPN,
                "audience": CLIENT_ID}),
    )
    .await;
    let exchanged = obo(&emulator, CONTOSO, &minted, GRAPH).await;
    assert_eq!(exchanged.status, StatusCode::OK, "{}", exchanged.text);

    let log = get(&format!("{}/_emulator/delegated/log", emulator.base_url())).await;
    let grants: Vec<&str> = log.body["delegated_tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["grant"].as_str().unwrap())
        .collect();
    assert_eq!(
        grants,
        [
            "authorization_code",
            "on_behalf_of",
            "control",
            "on_behalf_of"
        ]
    );
}

#[tokio::test]
async fn obo_refuses_assertions_for_another_audience_tenant_or_signer() {
    let emulator = start_demo().await;
    let for_api = user_token(
        &emulator,
        &json!({"tenant": CONTOSO, "client_id": CLIENT_ID, "user": CONTOSO_ANALYST_UPN,
                "audience": M365D, "scopes": ["Incident.Read"]}),
    )
    .await;
    let refused = obo(&emulator, CONTOSO, &for_api, M365D).await;
    assert_entra_error(&refused, 400, "invalid_grant", 50013);

    let fabrikam_user = user_token(
        &emulator,
        &json!({"tenant": FABRIKAM, "client_id": CLIENT_ID, "user": FABRIKAM_ANALYST_UPN}),
    )
    .await;
    let refused = obo(&emulator, CONTOSO, &fabrikam_user, M365D).await;
    assert_entra_error(&refused, 400, "invalid_grant", 50013);

    // Signed by someone else: same claims, forged signature.
    let good = user_token(
        &emulator,
        &json!({"tenant": CONTOSO, "client_id": CLIENT_ID, "user": CONTOSO_ANALYST_UPN}),
    )
    .await;
    let mut parts: Vec<&str> = good.split('.').collect();
    parts[2] = "c2lnbmF0dXJl";
    let refused = obo(&emulator, CONTOSO, &parts.join("."), M365D).await;
    assert_entra_error(&refused, 400, "invalid_grant", 50013);
    // A Contoso user's token presented at another tenant's endpoint.
    let refused = obo(&emulator, NORTHWIND, &good, M365D).await;
    assert_entra_error(&refused, 400, "invalid_grant", 50013);

    // An app-only token is not a user assertion.
    let app = token_v2(&emulator, CONTOSO, M365D).await;
    let app_token = app.body["access_token"].as_str().unwrap();
    let refused = obo(&emulator, CONTOSO, app_token, M365D).await;
    assert_entra_error(&refused, 400, "invalid_grant", 50013);
}

#[tokio::test]
async fn obo_refuses_an_expired_assertion() {
    let emulator = start_demo().await;
    let expired = user_token(
        &emulator,
        &json!({"tenant": CONTOSO, "client_id": CLIENT_ID, "user": CONTOSO_ANALYST_UPN,
                "expires_in_seconds": -60}),
    )
    .await;
    let refused = obo(&emulator, CONTOSO, &expired, M365D).await;
    assert_entra_error(&refused, 400, "invalid_grant", 500133);
}

#[tokio::test]
async fn obo_without_consent_answers_65001() {
    let emulator = start_demo().await;
    // Fabrikam never consented to delegated permissions.
    let fabrikam_user = user_token(
        &emulator,
        &json!({"tenant": FABRIKAM, "client_id": CLIENT_ID, "user": FABRIKAM_ANALYST_UPN}),
    )
    .await;
    let refused = obo(&emulator, FABRIKAM, &fabrikam_user, M365D).await;
    assert_entra_error(&refused, 400, "invalid_grant", 65001);

    // Contoso's consent withdrawn, then given to one user only.
    let assertion = user_token(
        &emulator,
        &json!({"tenant": CONTOSO, "client_id": CLIENT_ID, "user": CONTOSO_ANALYST_UPN}),
    )
    .await;
    let removed = answer(
        client()
            .delete(format!(
                "{}/_emulator/tenants/{CONTOSO}/delegated_grants/{CLIENT_ID}",
                emulator.base_url()
            ))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(removed.status, StatusCode::NO_CONTENT);
    assert_entra_error(
        &obo(&emulator, CONTOSO, &assertion, M365D).await,
        400,
        "invalid_grant",
        65001,
    );
    let granted = put_json(
        &emulator,
        &format!("/_emulator/tenants/{CONTOSO}/delegated_grants"),
        &json!({"client_id": CLIENT_ID, "resource": M365D, "scopes": ["Incident.ReadWrite"],
                "user": CONTOSO_ANALYST_UPN}),
    )
    .await;
    assert_eq!(granted.status, StatusCode::NO_CONTENT, "{}", granted.text);
    let ok = obo(&emulator, CONTOSO, &assertion, M365D).await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text);
    assert_eq!(
        claims(ok.body["access_token"].as_str().unwrap())["scp"],
        "Incident.ReadWrite"
    );
}

#[tokio::test]
async fn obo_for_an_mfa_user_returns_the_claims_challenge() {
    let emulator = start_demo().await;
    let without_mfa = user_token(
        &emulator,
        &json!({"tenant": CONTOSO, "client_id": CLIENT_ID, "user": CONTOSO_MFA_USER_UPN}),
    )
    .await;
    let refused = obo(&emulator, CONTOSO, &without_mfa, M365D).await;
    assert_entra_error(&refused, 400, "interaction_required", 50076);
    let challenge: Value = serde_json::from_str(refused.body["claims"].as_str().unwrap()).unwrap();
    assert_eq!(challenge["access_token"]["capolids"]["essential"], true);
    // The same challenge every time: clients pass it back unchanged.
    let again = obo(&emulator, CONTOSO, &without_mfa, M365D).await;
    assert_eq!(again.body["claims"], refused.body["claims"]);

    let with_mfa = user_token(
        &emulator,
        &json!({"tenant": CONTOSO, "client_id": CLIENT_ID, "user": CONTOSO_MFA_USER_UPN,
                "mfa": true}),
    )
    .await;
    let ok = obo(&emulator, CONTOSO, &with_mfa, M365D).await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text);

    // Not registered for MFA: 50079. Then MFA no longer required: the plain token passes.
    let set = put_json(
        &emulator,
        &format!("/_emulator/tenants/{CONTOSO}/users/{CONTOSO_MFA_USER_UPN}/mfa"),
        &json!({"mfa_required": true, "mfa_registered": false}),
    )
    .await;
    assert_eq!(set.status, StatusCode::NO_CONTENT, "{}", set.text);
    let refused = obo(&emulator, CONTOSO, &without_mfa, M365D).await;
    assert_entra_error(&refused, 400, "interaction_required", 50079);
    assert!(refused.body["claims"].is_string());
    emulator
        .handle()
        .set_user_mfa(CONTOSO, CONTOSO_MFA_USER_UPN, false, None)
        .unwrap();
    let ok = obo(&emulator, CONTOSO, &without_mfa, M365D).await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text);
}

// --- device code --------------------------------------------------------------------------

async fn device_start(emulator: &RunningEmulator, scope: &str) -> Answer {
    post_form(
        &format!("{}/{CONTOSO}/oauth2/v2.0/devicecode", emulator.base_url()),
        &[("client_id", CLIENT_ID), ("scope", scope)],
    )
    .await
}

async fn device_poll(emulator: &RunningEmulator, device_code: &str) -> Answer {
    post_form(
        &token_url(emulator, CONTOSO),
        &[
            ("grant_type", DEVICE_GRANT),
            ("client_id", CLIENT_ID),
            ("device_code", device_code),
        ],
    )
    .await
}

#[tokio::test]
async fn device_code_pending_slow_down_then_success() {
    let emulator = start_demo().await;
    let started = device_start(&emulator, &format!("offline_access {M365D_READ}")).await;
    assert_eq!(started.status, StatusCode::OK, "{}", started.text);
    let body = &started.body;
    let device_code = body["device_code"].as_str().unwrap();
    let user_code = body["user_code"].as_str().unwrap();
    assert_eq!(
        body["verification_uri"],
        format!("{}/devicelogin", emulator.base_url())
    );
    assert_eq!(body["expires_in"], 900);
    assert_eq!(body["interval"], 5);
    assert!(body["message"].as_str().unwrap().contains(user_code));

    let pending = device_poll(&emulator, device_code).await;
    assert_entra_error(&pending, 400, "authorization_pending", 70016);
    let too_fast = device_poll(&emulator, device_code).await;
    assert_eq!(too_fast.status, StatusCode::BAD_REQUEST);
    assert_eq!(too_fast.body["error"], "slow_down", "{}", too_fast.text);

    let page = get(&format!(
        "{}/devicelogin?user_code={user_code}",
        emulator.base_url()
    ))
    .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text);
    for needle in [
        r#"id="user""#,
        r#"id="accept""#,
        r#"id="decline""#,
        r#"id="mfa""#,
    ] {
        assert!(page.text.contains(needle), "{needle}");
    }
    let approved = post_json(
        &emulator,
        &format!("/_emulator/device/{user_code}"),
        &json!({"decision": "approve", "user": CONTOSO_ANALYST_UPN}),
    )
    .await;
    assert_eq!(approved.status, StatusCode::NO_CONTENT, "{}", approved.text);

    let ok = device_poll(&emulator, device_code).await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text);
    let claims = claims(ok.body["access_token"].as_str().unwrap());
    assert_eq!(claims["oid"], CONTOSO_ANALYST_OID);
    assert_eq!(claims["azpacr"], "0");
    // Public client: its refresh token refreshes without a credential.
    let refreshed = post_form(
        &token_url(&emulator, CONTOSO),
        &[
            ("grant_type", "refresh_token"),
            ("client_id", CLIENT_ID),
            ("refresh_token", ok.body["refresh_token"].as_str().unwrap()),
        ],
    )
    .await;
    assert_eq!(refreshed.status, StatusCode::OK, "{}", refreshed.text);

    let redeemed = device_poll(&emulator, device_code).await;
    assert_entra_error(&redeemed, 400, "invalid_grant", 54005);
}

#[tokio::test]
async fn device_code_declined_on_the_page() {
    let emulator = start_demo().await;
    let started = device_start(&emulator, M365D_READ).await;
    let device_code = started.body["device_code"].as_str().unwrap();
    let user_code = started.body["user_code"].as_str().unwrap();
    let entry = get(&format!("{}/devicelogin", emulator.base_url())).await;
    assert!(entry.text.contains(r#"id="user-code""#));
    let result = answer(
        client()
            .post(format!("{}/_emulator/device/decision", emulator.base_url()))
            .form(&[
                ("user_code", user_code),
                ("user", CONTOSO_ANALYST_UPN),
                ("decision", "decline"),
            ])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(result.status, StatusCode::OK);
    assert!(
        result
            .text
            .contains(r#"id="result" data-decision="decline""#)
    );
    let declined = device_poll(&emulator, device_code).await;
    assert_entra_error(&declined, 400, "authorization_declined", 70000);
}

#[tokio::test]
async fn device_code_expired_and_unknown() {
    let emulator = start_demo().await;
    let set = put_json(
        &emulator,
        "/_emulator/settings",
        &json!({"device_code_lifetime_seconds": 0}),
    )
    .await;
    assert_eq!(set.status, StatusCode::NO_CONTENT);
    let started = device_start(&emulator, M365D_READ).await;
    assert_eq!(started.body["expires_in"], 0);
    let expired = device_poll(&emulator, started.body["device_code"].as_str().unwrap()).await;
    assert_entra_error(&expired, 400, "expired_token", 70019);
    let unknown = device_poll(&emulator, "DAQABAAEAAAnot-a-code").await;
    assert_entra_error(&unknown, 400, "bad_verification_code", 70000);
}

#[tokio::test]
async fn device_code_for_an_mfa_user_approved_without_mfa_needs_interaction() {
    let emulator = start_demo().await;
    let handle = emulator.handle();
    let started = device_start(&emulator, M365D_READ).await;
    let user_code = started.body["user_code"].as_str().unwrap();
    handle
        .decide_device_code(
            user_code,
            &defender_emulator::DeviceDecision {
                decision: defender_emulator::DeviceVerdict::Approve,
                user: Some(CONTOSO_MFA_USER_UPN.to_owned()),
                mfa: false,
            },
        )
        .unwrap();
    let refused = device_poll(&emulator, started.body["device_code"].as_str().unwrap()).await;
    assert_entra_error(&refused, 400, "interaction_required", 50076);
    assert!(refused.body["claims"].is_string());
}

// --- the data APIs with delegated tokens --------------------------------------------------

async fn obo_token(emulator: &RunningEmulator, user: &str, resource: &str) -> String {
    let assertion = user_token(
        emulator,
        &json!({"tenant": CONTOSO, "client_id": CLIENT_ID, "user": user}),
    )
    .await;
    let exchanged = obo(emulator, CONTOSO, &assertion, resource).await;
    assert_eq!(exchanged.status, StatusCode::OK, "{}", exchanged.text);
    exchanged.body["access_token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn data_apis_take_delegated_tokens_and_check_the_users_portal_role() {
    let emulator = start_demo().await;
    let analyst = obo_token(&emulator, CONTOSO_ANALYST_UPN, M365D).await;
    let ok = data_call(&emulator, "/api/incidents?$top=2", &analyst).await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text);
    assert_eq!(ok.body["value"].as_array().unwrap().len(), 2);
    let mde = obo_token(&emulator, CONTOSO_ANALYST_UPN, MDE).await;
    assert_eq!(
        data_call(&emulator, "/api/alerts?$top=1", &mde)
            .await
            .status,
        StatusCode::OK
    );

    let helpdesk = obo_token(&emulator, CONTOSO_NO_ROLE_UPN, M365D).await;
    let forbidden = data_call(&emulator, "/api/incidents", &helpdesk).await;
    assert_eq!(
        forbidden.status,
        StatusCode::FORBIDDEN,
        "{}",
        forbidden.text
    );
    assert_eq!(forbidden.body["error"]["code"], "Forbidden");

    // Given a reader role, the same token passes: the role is read at call time.
    emulator
        .handle()
        .set_user_portal_roles(CONTOSO, CONTOSO_NO_ROLE_UPN, vec!["Security Reader".into()])
        .unwrap();
    let ok = data_call(&emulator, "/api/incidents?$top=1", &helpdesk).await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text);

    // Graph alerts_v2 needs SecurityAlert.Read.All: the incident scope is not enough.
    let graph = obo_token(&emulator, CONTOSO_ANALYST_UPN, GRAPH).await;
    let incidents = data_call(&emulator, "/v1.0/security/incidents?$top=1", &graph).await;
    assert_eq!(incidents.status, StatusCode::OK, "{}", incidents.text);
    let alerts = data_call(&emulator, "/v1.0/security/alerts_v2", &graph).await;
    assert_eq!(alerts.status, StatusCode::FORBIDDEN, "{}", alerts.text);

    // A token for another API is still a 401.
    let wrong = data_call(&emulator, "/api/alerts", &analyst).await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
}

// --- scenario and control -----------------------------------------------------------------

#[tokio::test]
async fn users_can_be_added_and_scenarios_are_checked() {
    let emulator = start_demo().await;
    let added = post_json(
        &emulator,
        &format!("/_emulator/tenants/{FABRIKAM}/users"),
        &json!({"oid": "bbbbbbbb-0000-4000-8000-000000000009", "upn": "new@fabrikam.onmicrosoft.com",
                "portal_roles": ["Security Reader"]}),
    )
    .await;
    assert_eq!(added.status, StatusCode::NO_CONTENT, "{}", added.text);
    let twice = post_json(
        &emulator,
        &format!("/_emulator/tenants/{FABRIKAM}/users"),
        &json!({"oid": "bbbbbbbb-0000-4000-8000-000000000009", "upn": "new@fabrikam.onmicrosoft.com"}),
    )
    .await;
    assert_eq!(twice.status, StatusCode::CONFLICT);
    let unknown = put_json(
        &emulator,
        &format!("/_emulator/tenants/{CONTOSO}/users/nobody@contoso.com/mfa"),
        &json!({"mfa_required": true}),
    )
    .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);

    for (text, expected) in [
        (
            r#"{"tenants":[{"id":"22222222-2222-4222-8222-222222222222","users":[{"oid":"x","upn":"a@b.c"}]}]}"#,
            "not a GUID",
        ),
        (
            r#"{"tenants":[{"id":"22222222-2222-4222-8222-222222222222","users":[{"oid":"aaaaaaaa-0000-4000-8000-000000000001","upn":"nobody"}]}]}"#,
            "name@domain",
        ),
        (
            r#"{"tenants":[{"id":"22222222-2222-4222-8222-222222222222","delegated_grants":[{"client_id":"11111111-1111-4111-8111-111111111111","resource":"https://api.security.microsoft.com","scopes":["Incident.Read"],"user":"ghost@contoso.com"}]}]}"#,
            "unknown user",
        ),
        (r#"{"delegated":{"surprise":1}}"#, "not valid"),
    ] {
        let error = format!(
            "{:#}",
            defender_emulator::Scenario::from_json(text).unwrap_err()
        );
        assert!(error.contains(expected), "{text}: {error}");
    }
}

#[tokio::test]
async fn client_credentials_still_work_beside_the_delegated_grants() {
    let emulator = start_demo().await;
    let app = token_v2(&emulator, CONTOSO, M365D).await;
    assert_eq!(app.status, StatusCode::OK);
    let token = app.body["access_token"].as_str().unwrap();
    assert!(claims(token).get("scp").is_none());
    assert_eq!(
        data_call(&emulator, "/api/incidents?$top=1", token)
            .await
            .status,
        StatusCode::OK
    );
    let v1 = post_form(
        &format!("{}/{CONTOSO}/oauth2/token", emulator.base_url()),
        &[("grant_type", "refresh_token"), ("client_id", CLIENT_ID)],
    )
    .await;
    assert_entra_error(&v1, 400, "unsupported_grant_type", 70003);
}
