//! Interactive sign-in end to end with the real binaries: a headless Chromium opens
//! `consent-signin`'s `/signin/start` (under `cargo lambda watch`, over its function URL), signs
//! in on the emulator's page and lands on our result page; the refresh token is then sealed with
//! a KMS data key (moto's KMS) in the registry table (moto's DynamoDB). The real `mint-token`
//! mints delegated tokens from that stored sign-in, rotating the refresh token on each use, and
//! answers `sign_in_required` (deleting the sign-in) once the emulator revokes it.
//!
//! One stack serves every case; the cases run in order, and the ones that need a stored sign-in
//! make it first if an earlier case did not. Run a subset with
//! `E2E_CASES=browser,rotation cargo test -p defender-partner-e2e --test e2e_signin`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use aws_sdk_dynamodb::types::AttributeValue;
use defender_emulator::{Scenario, demo};
use defender_partner::config::{
    ENV_CONSENT_REDIRECT_URI, ENV_MINT_FROM_SIGNIN, ENV_SIGNIN_REDIRECT_URI,
};
use defender_partner::store::TenantStatus;
use defender_partner_e2e::browser::Browser;
use defender_partner_e2e::function_url::FunctionUrl;
use defender_partner_e2e::leaks::assert_no_leaks;
use defender_partner_e2e::{Cases, FunctionError, LambdaWatch, Stack, events, jwt};
use defender_partner_testkit::scenario::{ROLE_GRAPH, ROLE_M365D, ROLE_MDE};
use serde_json::{Value, json};
use tokio::sync::OnceCell;
use url::Url;

const CONSENT_CALLBACK: &str = "consent-signin";
const MINT_TOKEN: &str = "mint-token";
const M365D_RESOURCE: &str = "https://api.security.microsoft.com";

/// The stack (moto with a KMS key and the state key, the emulator on the demo scenario with our
/// function URL registered as a redirect URI), consent-signin over HTTP and mint-token by
/// invoke.
struct World {
    stack: Stack,
    signin_function: FunctionUrl,
    mint_token: LambdaWatch,
    /// Follows no redirect: every 302 is asserted.
    http: reqwest::Client,
    /// The analyst's sign-in through the browser, made once.
    analyst: OnceCell<BrowserSignIn>,
}

/// What the browser saw at the end of a sign-in.
#[derive(Debug, Clone)]
struct BrowserSignIn {
    callback: Url,
    status_title: String,
    who: String,
    tenant: String,
    scopes: String,
    source: String,
}

/// The sign-in item of a user as DynamoDB holds it.
struct StoredItem {
    version: u64,
    sealed: Vec<u8>,
    user_name: Option<String>,
    scopes: String,
}

impl World {
    async fn start() -> Result<World> {
        let reserved = FunctionUrl::reserve(CONSENT_CALLBACK)?;
        let signin_redirect = format!("{}/signin/callback", reserved.url);
        let consent_redirect = format!("{}/consent/callback", reserved.url);

        let mut scenario = Scenario::demo();
        scenario.apps[0]
            .redirect_uris
            .extend([signin_redirect.clone(), consent_redirect.clone()]);
        let stack = Stack::builder(scenario, demo::CLIENT_ID, demo::CLIENT_SECRET)
            .with_state_key()
            .with_kms_key()
            .start()
            .await?;
        let redirects = [
            (ENV_CONSENT_REDIRECT_URI, consent_redirect.as_str()),
            (ENV_SIGNIN_REDIRECT_URI, signin_redirect.as_str()),
        ];
        let signin_function = stack
            .start_function_url(
                CONSENT_CALLBACK,
                reserved,
                &redirects,
                "/signin/callback",
                400,
            )
            .await?;
        let mut mint_env = redirects.to_vec();
        mint_env.push((ENV_MINT_FROM_SIGNIN, "true"));
        let mint_token = stack
            .start_function(MINT_TOKEN, MINT_TOKEN, &mint_env, &json!({}))
            .await?;
        for tenant in [demo::CONTOSO_TENANT_ID, demo::FABRIKAM_TENANT_ID] {
            stack
                .register(
                    tenant,
                    TenantStatus::Active,
                    &[ROLE_M365D, ROLE_MDE, ROLE_GRAPH],
                )
                .await?;
        }
        Ok(World {
            stack,
            signin_function,
            mint_token,
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(90))
                .build()?,
            analyst: OnceCell::new(),
        })
    }

    fn remember_sensitive(&self, value: &str) {
        self.stack.remember_sensitive(value);
    }

    fn signin_start_url(&self, tenant: &str, api: &str) -> String {
        format!(
            "{}/signin/start?tenant={tenant}&api={api}",
            self.signin_function.url()
        )
    }

    fn callback_prefix(&self) -> String {
        format!("{}/signin/callback", self.signin_function.url())
    }

    /// The analyst's sign-in through the browser, made on first use.
    async fn analyst_signed_in(&self) -> &BrowserSignIn {
        self.analyst
            .get_or_init(|| async {
                let browser = Browser::start().await.expect("starting headless Chromium");
                let signed_in = self
                    .browser_sign_in(&browser, demo::CONTOSO_ANALYST_UPN, "accept", false)
                    .await;
                let closed = browser.close().await;
                let signed_in = signed_in.expect("the analyst signs in through the browser");
                closed.expect("closing the browser");
                signed_in
            })
            .await
    }

    /// Opens `/signin/start` for Contoso (M365 Defender) in the browser, picks `user` on the
    /// emulator's page, ticks MFA when `mfa`, presses `decision`, and reads our result page.
    async fn browser_sign_in(
        &self,
        browser: &Browser,
        user: &str,
        decision: &str,
        mfa: bool,
    ) -> Result<BrowserSignIn> {
        browser
            .goto(&self.signin_start_url(demo::CONTOSO_TENANT_ID, "m365d"))
            .await?;
        let at = browser.current_url().await?;
        if !at.as_str().starts_with(self.stack.emulator.base_url()) {
            bail!("/signin/start did not lead to the emulator's sign-in page but to {at}");
        }
        let params: HashMap<String, String> = at.query_pairs().into_owned().collect();
        for name in ["state", "code_challenge", "nonce"] {
            if let Some(value) = params.get(name) {
                self.remember_sensitive(value);
            }
        }
        if params.get("code_challenge_method").map(String::as_str) != Some("S256") {
            bail!("the authorize link lacks an S256 PKCE challenge: {at}");
        }
        browser.wait_for(&format!("#{decision}")).await?;
        browser.select("#user", user).await?;
        if mfa {
            browser.click("#mfa").await?;
        }
        browser.click(&format!("#{decision}")).await?;
        let callback = browser.wait_for_url_prefix(&self.callback_prefix()).await?;
        for (name, value) in callback.query_pairs() {
            if name == "code" || name == "state" {
                self.remember_sensitive(&value);
            }
        }
        let status_title = browser.text_of("h1").await?;
        let text_or_empty = |css: &'static str| async move {
            match browser.client().find(fantoccini::Locator::Css(css)).await {
                Ok(element) => element.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            }
        };
        Ok(BrowserSignIn {
            callback,
            who: text_or_empty("#who").await,
            tenant: text_or_empty("#tenant").await,
            scopes: text_or_empty("#scopes").await,
            source: browser.source().await?,
            status_title,
        })
    }

    /// GET through the function URL: (status, body).
    async fn get(&self, url: &str) -> (u16, String) {
        let response = self
            .http
            .get(url)
            .send()
            .await
            .unwrap_or_else(|error| panic!("GET {url}: {error}"));
        let status = response.status().as_u16();
        (status, response.text().await.unwrap_or_default())
    }

    /// mint-token invoked directly for a stored sign-in; a token in the answer is remembered.
    async fn mint_for(
        &self,
        tenant: &str,
        api: &str,
        user_oid: &str,
    ) -> Result<Value, FunctionError> {
        let answer = self
            .mint_token
            .invoke(&json!({ "tenant": tenant, "api": api, "user_oid": user_oid }))
            .await;
        if let Ok(value) = &answer
            && let Some(token) = value["access_token"].as_str()
        {
            self.remember_sensitive(token);
        }
        answer
    }

    /// The user's sign-in item, if any.
    async fn stored(&self, tenant: &str, user_oid: &str) -> Option<StoredItem> {
        let item = self
            .stack
            .dynamodb
            .get_item()
            .table_name(&self.stack.table)
            .key("pk", AttributeValue::S(format!("SIGNIN#{tenant}")))
            .key("sk", AttributeValue::S(format!("USER#{user_oid}")))
            .consistent_read(true)
            .send()
            .await
            .expect("DynamoDB (moto) answers")
            .item?;
        Some(StoredItem {
            version: item["version"].as_n().unwrap().parse().unwrap(),
            sealed: item["refresh_token"].as_b().unwrap().as_ref().to_vec(),
            user_name: item
                .get("user_name")
                .and_then(|value| value.as_s().ok())
                .cloned(),
            scopes: item["scopes"].as_s().unwrap().clone(),
        })
    }

    /// The emulator's count of the user's refresh tokens: active, used (rotated), revoked.
    async fn refresh_tokens(&self, tenant: &str, user: &str) -> Value {
        self.http
            .get(format!(
                "{}/_emulator/tenants/{tenant}/users/{user}/refresh_tokens",
                self.stack.emulator.base_url()
            ))
            .send()
            .await
            .expect("the emulator answers")
            .json()
            .await
            .expect("refresh token counts")
    }

    /// The user signs out everywhere (an administrator revokes their sessions).
    async fn revoke_refresh_tokens(&self, tenant: &str, user: &str) -> u64 {
        let answer: Value = self
            .http
            .delete(format!(
                "{}/_emulator/tenants/{tenant}/users/{user}/refresh_tokens",
                self.stack.emulator.base_url()
            ))
            .send()
            .await
            .expect("the emulator answers")
            .json()
            .await
            .expect("a revocation answer");
        answer["revoked"].as_u64().unwrap_or_default()
    }

    /// `GET /api/incidents?$top=1` of the M365 Defender API with `token`.
    async fn list_incidents(&self, token: &str) -> u16 {
        self.http
            .get(format!("{}/api/incidents", self.stack.emulator.base_url()))
            .query(&[("$top", "1")])
            .bearer_auth(token)
            .send()
            .await
            .expect("the Defender API answers")
            .status()
            .as_u16()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sign_in_end_to_end() {
    let started = Instant::now();
    let world = Arc::new(World::start().await.expect("starting the sign-in stack"));
    eprintln!(
        "[e2e] sign-in stack up in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let mut cases = Cases::from_env();
    cases.run("browser", browser(world.clone())).await;
    cases
        .run("sealed_with_kms", sealed_with_kms(world.clone()))
        .await;
    cases.run("rotation", rotation(world.clone())).await;
    cases
        .run("replayed_and_forged_callbacks", replay(world.clone()))
        .await;
    cases.run("no_sign_in", no_sign_in(world.clone())).await;
    cases.run("revoked", revoked(world.clone())).await;
    cases
        .run("logs_hold_no_secret", logs_hold_no_secret(world.clone()))
        .await;
    eprintln!(
        "[e2e] sign-in cases done in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    cases.finish();
}

/// The analyst signs in through a real browser and sees who signed in and what was granted, never
/// a token or code; a declined sign-in and an MFA user without MFA keep nothing.
async fn browser(world: Arc<World>) {
    let signed_in = world.analyst_signed_in().await.clone();
    assert_eq!(signed_in.status_title, "Signed in", "{}", signed_in.source);
    assert!(
        signed_in.who.contains(demo::CONTOSO_ANALYST_UPN),
        "{:?}",
        signed_in.who
    );
    assert_eq!(signed_in.tenant, demo::CONTOSO_TENANT_ID);
    assert!(
        signed_in.scopes.contains("Incident.Read"),
        "the page lists what was granted: {:?}",
        signed_in.scopes
    );
    assert!(
        signed_in.source.contains("may now act as you"),
        "the page says the sign-in was kept: {}",
        signed_in.source
    );
    for (name, value) in signed_in.callback.query_pairs() {
        if name == "code" || name == "state" {
            assert!(
                !signed_in.source.contains(value.as_ref()),
                "the result page shows the {name}"
            );
        }
    }
    assert!(
        !signed_in.source.contains("eyJ"),
        "the result page holds something shaped like a token: {}",
        signed_in.source
    );
    let stored = world
        .stored(demo::CONTOSO_TENANT_ID, demo::CONTOSO_ANALYST_OID)
        .await
        .expect("the analyst's sign-in is stored");
    assert_eq!(stored.user_name.as_deref(), Some(demo::CONTOSO_ANALYST_UPN));
    assert!(stored.scopes.contains("Incident.Read"), "{}", stored.scopes);

    let browser = Browser::start().await.expect("starting headless Chromium");
    let declined = world
        .browser_sign_in(&browser, demo::CONTOSO_NO_ROLE_UPN, "decline", false)
        .await;
    let without_mfa = world
        .browser_sign_in(&browser, demo::CONTOSO_MFA_USER_UPN, "accept", false)
        .await;
    let closed = browser.close().await;
    let declined = declined.expect("the declined sign-in reaches our page");
    let without_mfa = without_mfa.expect("the MFA user's sign-in reaches our page");
    closed.expect("closing the browser");

    assert_eq!(
        declined.status_title, "Sign-in was not completed",
        "{}",
        declined.source
    );
    assert!(
        declined.source.contains("access_denied"),
        "{}",
        declined.source
    );
    // Entra sends the user back with `interaction_required` and says why; the page passes the
    // reason on.
    assert_eq!(
        without_mfa.status_title, "Sign-in was not completed",
        "{}",
        without_mfa.source
    );
    assert!(
        without_mfa.source.contains("interaction_required")
            && without_mfa.source.contains("multi-factor authentication"),
        "{}",
        without_mfa.source
    );
    for user in [demo::CONTOSO_NO_ROLE_OID, demo::CONTOSO_MFA_USER_OID] {
        assert!(
            world.stored(demo::CONTOSO_TENANT_ID, user).await.is_none(),
            "nothing is kept for {user}"
        );
    }
}

/// The stored refresh token is an envelope whose data key only KMS opens, and only with the
/// encryption context of this tenant and user.
async fn sealed_with_kms(world: Arc<World>) {
    world.analyst_signed_in().await;
    let stored = world
        .stored(demo::CONTOSO_TENANT_ID, demo::CONTOSO_ANALYST_OID)
        .await
        .expect("the analyst's sign-in is stored");
    let sealed = &stored.sealed;
    assert_eq!(&sealed[..4], b"DPS1", "the envelope's magic");
    let wrapped_len = u16::from_be_bytes([sealed[4], sealed[5]]) as usize;
    let wrapped = sealed[6..6 + wrapped_len].to_vec();

    let decrypt = |tenant: &str, user: &str| {
        world
            .stack
            .kms()
            .decrypt()
            .ciphertext_blob(aws_sdk_kms::primitives::Blob::new(wrapped.clone()))
            .encryption_context("purpose", "refresh-token")
            .encryption_context("tenant", tenant)
            .encryption_context("user", user)
            .send()
    };
    let opened = decrypt(demo::CONTOSO_TENANT_ID, demo::CONTOSO_ANALYST_OID)
        .await
        .expect("KMS opens the data key with the tenant and user as context");
    assert_eq!(
        opened.plaintext().map(|key| key.as_ref().len()),
        Some(32),
        "an AES-256 data key"
    );
    let other_user = decrypt(demo::CONTOSO_TENANT_ID, demo::CONTOSO_MFA_USER_OID).await;
    assert!(
        other_user.is_err(),
        "KMS must refuse the data key under another user's context"
    );
    let other_tenant = decrypt(demo::FABRIKAM_TENANT_ID, demo::CONTOSO_ANALYST_OID).await;
    assert!(
        other_tenant.is_err(),
        "KMS must refuse the data key under another tenant's context"
    );
}

/// mint-token mints for the signed-in analyst without a new sign-in; each redemption rotates the
/// refresh token (a new sealed item version, the old token used up at Entra); a second mint for
/// the same API is a cache hit that touches nothing.
async fn rotation(world: Arc<World>) {
    world.analyst_signed_in().await;
    let (tenant, oid) = (demo::CONTOSO_TENANT_ID, demo::CONTOSO_ANALYST_OID);
    let before = world.stored(tenant, oid).await.expect("a stored sign-in");
    let counts_before = world.refresh_tokens(tenant, oid).await;

    let answer = world
        .mint_for(tenant, "m365d", oid)
        .await
        .unwrap_or_else(|error| panic!("a delegated token from the stored sign-in: {error}"));
    assert_eq!(answer["tenant_id"], tenant, "{answer}");
    assert_eq!(answer["user_oid"], oid, "{answer}");
    assert_eq!(answer["user_upn"], demo::CONTOSO_ANALYST_UPN, "{answer}");
    let token = answer["access_token"].as_str().expect("a token").to_owned();
    let claims = jwt::claims(&token).expect("a JWT");
    assert_eq!(claims["aud"], M365D_RESOURCE, "{claims}");
    assert_eq!(claims["oid"], oid, "{claims}");
    assert!(claims["scp"].as_str().is_some_and(|scp| !scp.is_empty()));
    assert_eq!(
        world.list_incidents(&token).await,
        200,
        "the analyst reads incidents with their own rights"
    );

    let after = world.stored(tenant, oid).await.expect("still stored");
    assert_eq!(after.version, before.version + 1, "rotated once");
    assert_ne!(
        after.sealed, before.sealed,
        "the new refresh token is sealed"
    );
    let counts_after = world.refresh_tokens(tenant, oid).await;
    assert_eq!(
        counts_after["used"].as_u64().unwrap(),
        counts_before["used"].as_u64().unwrap() + 1,
        "Entra saw the old refresh token used up: {counts_before} → {counts_after}"
    );
    assert_eq!(counts_after["active"], counts_before["active"]);

    let again = world
        .mint_for(tenant, "m365d", oid)
        .await
        .expect("a second mint");
    assert_eq!(again["access_token"], answer["access_token"], "a cache hit");
    assert_eq!(
        world.stored(tenant, oid).await.expect("stored").version,
        after.version,
        "a cache hit redeems nothing"
    );

    // Another API needs another redemption, which rotates again.
    let mde = world
        .mint_for(tenant, "mde", oid)
        .await
        .unwrap_or_else(|error| panic!("a delegated MDE token: {error}"));
    assert_eq!(mde["user_oid"], oid, "{mde}");
    assert_ne!(mde["access_token"], answer["access_token"]);
    assert_eq!(
        world.stored(tenant, oid).await.expect("stored").version,
        after.version + 1
    );
}

/// The callback a browser already used answers "already used"; a changed state is refused; both
/// keep nothing more.
async fn replay(world: Arc<World>) {
    let signed_in = world.analyst_signed_in().await.clone();
    let (tenant, oid) = (demo::CONTOSO_TENANT_ID, demo::CONTOSO_ANALYST_OID);
    let version = world.stored(tenant, oid).await.expect("stored").version;

    let (status, body) = world.get(signed_in.callback.as_str()).await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body.contains("This sign-in link was already used"),
        "{body}"
    );

    let mut forged = signed_in.callback.clone();
    let pairs: Vec<(String, String)> = signed_in
        .callback
        .query_pairs()
        .map(|(name, value)| {
            let value = if name == "state" {
                format!("{value}x")
            } else {
                value.into_owned()
            };
            (name.into_owned(), value)
        })
        .collect();
    forged.query_pairs_mut().clear().extend_pairs(&pairs);
    let (status, body) = world.get(forged.as_str()).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("This sign-in link is not valid"), "{body}");

    assert_eq!(
        world.stored(tenant, oid).await.expect("stored").version,
        version,
        "neither callback touched the stored sign-in"
    );
}

/// A user who never signed in gets `sign_in_required`, on invoke and over HTTP (401).
async fn no_sign_in(world: Arc<World>) {
    let error = world
        .mint_for(
            demo::FABRIKAM_TENANT_ID,
            "m365d",
            demo::FABRIKAM_ANALYST_OID,
        )
        .await
        .expect_err("no sign-in, no token");
    assert_eq!(error.error_type, "sign_in_required", "{error}");

    let response = world
        .mint_token
        .invoke(
            &events::post_tokens(&json!({
                "tenant": demo::FABRIKAM_TENANT_ID,
                "api": "m365d",
                "user_oid": demo::FABRIKAM_ANALYST_OID,
            }))
            .expect("the sample event loads"),
        )
        .await
        .expect("the HTTP route answers");
    assert_eq!(response["statusCode"], 401, "{response}");
    let body: Value = serde_json::from_str(response["body"].as_str().unwrap_or_default())
        .expect("a JSON error body");
    assert_eq!(body["error"]["code"], "sign_in_required", "{body}");
}

/// Once the user's sessions are revoked, the next redemption fails with `invalid_grant`:
/// mint-token answers `sign_in_required` and deletes the dead sign-in.
async fn revoked(world: Arc<World>) {
    world.analyst_signed_in().await;
    let (tenant, oid) = (demo::CONTOSO_TENANT_ID, demo::CONTOSO_ANALYST_OID);
    assert!(world.stored(tenant, oid).await.is_some());
    assert!(
        world.revoke_refresh_tokens(tenant, oid).await >= 1,
        "the emulator revoked the analyst's refresh token"
    );

    // Graph has not been minted for this user yet: no cached token hides the revocation.
    let error = world
        .mint_for(tenant, "graph", oid)
        .await
        .expect_err("a revoked sign-in mints nothing");
    assert_eq!(error.error_type, "sign_in_required", "{error}");
    assert!(
        world.stored(tenant, oid).await.is_none(),
        "the dead sign-in is deleted"
    );
    let error = world
        .mint_for(tenant, "graph", oid)
        .await
        .expect_err("still nothing");
    assert_eq!(error.error_type, "sign_in_required", "{error}");
}

/// No token, code, state, client secret or state key in the functions' or the emulator's output.
async fn logs_hold_no_secret(world: Arc<World>) {
    let sensitive = world.stack.sensitive();
    assert!(
        sensitive.len() > 4,
        "the cases saw codes and tokens to look for"
    );
    assert_no_leaks(
        &[
            ("functions", &world.stack.logs().text()),
            ("emulator", &world.stack.emulator.logs().text()),
            ("moto", &world.stack.moto.logs().text()),
        ],
        &sensitive,
    );
}
