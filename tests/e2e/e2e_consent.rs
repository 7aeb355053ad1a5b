//! `consent-signin` end to end: the real function under `cargo lambda watch`, reached through
//! the watch's HTTP function URL (`http://127.0.0.1:PORT/lambda-url/consent-signin/...`, which
//! cargo-lambda turns into API Gateway HTTP API 2.0 events), its credential and state-signing
//! key in Secrets Manager and its registry in DynamoDB (both moto), and Microsoft's admin
//! consent played by the Entra emulator (its consent page, its decision form, its redirect).
//!
//! One stack serves every case; each case onboards tenants of its own. The cases follow the
//! customer's administrator through every outcome (accept, then the administrator's sign-in that
//! proves the tenant; decline, replay, forgeries, a forwarded link used for another tenant,
//! squatting, a tenant-bound link, expiry, the legacy link), check the page's security headers,
//! throw a few thousand malformed callbacks at the function, and finally do it all in a real
//! headless Chromium (installed by `scripts/browser`; the test fails without it). Run a subset with
//! `E2E_CASES=browser,fuzz cargo test -p defender-partner-e2e --test e2e_consent`;
//! `E2E_FUZZ_SEED=N` replays one fuzz run.
//!
//! The watch performs no authorization (see `defender_partner_e2e::function_url`), so the
//! IAM-protected `/consent/start` is reachable as a plain GET here.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::Utc;
use defender_emulator::browser::{self, Page};
use defender_emulator::{ConsentDecision, ConsentKind, RequiredPermissionConfig};
use defender_partner::config::{
    ENV_CONSENT_APIS, ENV_CONSENT_PROOF_SECONDS, ENV_CONSENT_REDIRECT_URI,
};
use defender_partner::consent::{ConsentClaims, ConsentState};
use defender_partner::redirect::{Purpose, StateSigner};
use defender_partner::store::{
    AttemptFlow, AttemptStatus, ConsentAttempt, ConsentAttempts, DynamoRegistry, Ownership,
    TenantRecord, TenantRegistry, TenantStatus, stored_now,
};
use defender_partner::tenant_id::TenantId;
use defender_partner_e2e::browser::Browser;
use defender_partner_e2e::function_url::FunctionUrl;
use defender_partner_e2e::leaks::assert_no_leaks;
use defender_partner_e2e::stack::{expiring_in_a_year, guid, new_client_secret};
use defender_partner_e2e::{Cases, Stack};
use defender_partner_testkit::scenario::{self, RESOURCE_M365D, ROLE_M365D};
use reqwest::header::HeaderMap;
use secrecy::SecretSlice;
use serde_json::{Value, json};
use url::Url;

const PACKAGE: &str = "consent-signin";
const FUNCTION: &str = "consent-signin";
/// How long a callback keeps retrying the proof of consent (DP_CONSENT_PROOF_SECONDS).
const PROOF_SECONDS: u64 = 6;

/// The customer tenants: Entra (the emulator) knows them all; none has consented to anything.
struct Tenants {
    v2_accept: String,
    v2_decline: String,
    forged_state: String,
    never_consented: String,
    legacy: String,
    adminconsent: String,
    propagation: String,
    browser_accept: String,
    browser_decline: String,
    /// Consented the app earlier (not through us), not in the registry: a hijack's target.
    consented_elsewhere: String,
    /// Not consented yet: a squatter's target, later onboarded by its own administrator.
    squatted: String,
    bound: String,
    /// Claimed for a customer by an older release (unverified), then really onboarded.
    claimed: String,
}

impl Tenants {
    fn new() -> Tenants {
        Tenants {
            v2_accept: guid(),
            v2_decline: guid(),
            forged_state: guid(),
            never_consented: guid(),
            legacy: guid(),
            adminconsent: guid(),
            propagation: guid(),
            browser_accept: guid(),
            browser_decline: guid(),
            consented_elsewhere: guid(),
            squatted: guid(),
            bound: guid(),
            claimed: guid(),
        }
    }

    fn all(&self) -> Vec<(&'static str, &String)> {
        vec![
            ("v2 accept", &self.v2_accept),
            ("v2 decline", &self.v2_decline),
            ("forged state", &self.forged_state),
            ("never consented", &self.never_consented),
            ("legacy", &self.legacy),
            ("adminconsent", &self.adminconsent),
            ("propagation", &self.propagation),
            ("browser accept", &self.browser_accept),
            ("browser decline", &self.browser_decline),
            ("consented elsewhere", &self.consented_elsewhere),
            ("squatted", &self.squatted),
            ("bound", &self.bound),
            ("claimed", &self.claimed),
        ]
    }
}

/// A user of the tenant without any directory role.
fn user_of(tenant: &str) -> String {
    format!("user@t{}.example", &tenant[..8])
}

/// The stack (moto + emulator) with `cargo lambda watch` running consent-signin, and what the
/// cases share.
struct World {
    stack: Stack,
    _function: FunctionUrl,
    /// `http://127.0.0.1:PORT/lambda-url/consent-signin`
    function_url: String,
    /// `{function_url}/consent/callback`: DP_CONSENT_REDIRECT_URI, registered on the app.
    redirect_uri: String,
    registry: DynamoRegistry,
    /// Follows no redirect: every 302 is asserted.
    http: reqwest::Client,
    tenants: Tenants,
}

/// One HTTP answer.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: HeaderMap,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .unwrap_or("")
    }
}

/// A consent link handed out by `/consent/start`.
struct Started {
    customer_ref: String,
    /// Where the 302 sends the administrator: the emulator's consent page.
    location: Url,
    state: String,
    nonce: String,
}

impl World {
    async fn start() -> Result<World> {
        let client_id = guid();
        let client_secret = new_client_secret();
        let tenants = Tenants::new();

        // The function URL must be known before anything starts: it is the redirect URI the
        // function puts in its links and the one registered on the app.
        let reserved = FunctionUrl::reserve(FUNCTION)?;
        let function_url = reserved.url.clone();
        let redirect_uri = format!("{function_url}/consent/callback");

        let mut app = scenario::app(&client_id, "Contoso SOC (e2e consent)", &[]);
        app.secrets.push(expiring_in_a_year(&client_secret));
        app.redirect_uris.push(redirect_uri.clone());
        app.required_permissions.push(RequiredPermissionConfig {
            resource: RESOURCE_M365D.to_owned(),
            roles: vec![ROLE_M365D.to_owned()],
        });
        let customers = tenants
            .all()
            .into_iter()
            .map(|(label, id)| {
                // One tenant consented the app earlier, outside this partner's onboarding.
                let grants = if *id == tenants.consented_elsewhere {
                    vec![scenario::grant(&client_id, RESOURCE_M365D, &[ROLE_M365D])]
                } else {
                    vec![]
                };
                let mut tenant = scenario::tenant(id, &format!("Customer {label}"), grants);
                tenant.users.push(scenario::user(
                    &guid(),
                    &user_of(id),
                    &format!("User of {label}"),
                    &[],
                ));
                tenant
            })
            .collect();
        let mut scenario = scenario::with(app, customers);
        scenario.token_lifetime_seconds = 3599;
        scenario.consent_propagation_ms = 0;

        let stack = Stack::builder(scenario, &client_id, &client_secret)
            .with_state_key()
            .start()
            .await?;
        let proof_seconds = PROOF_SECONDS.to_string();
        let function = stack
            .start_function_url(
                PACKAGE,
                reserved,
                &[
                    (ENV_CONSENT_REDIRECT_URI, &redirect_uri),
                    (ENV_CONSENT_APIS, "m365d"),
                    (ENV_CONSENT_PROOF_SECONDS, &proof_seconds),
                    // Every level, so that `logs_hold_no_secret` proves that no event payload (a
                    // state, a code: the runtime logs raw events at TRACE) reaches the logs.
                    ("RUST_LOG", "trace"),
                ],
                "/consent/callback",
                400,
            )
            .await?;
        Ok(World {
            registry: stack.registry(),
            stack,
            _function: function,
            function_url,
            redirect_uri,
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(90))
                .build()?,
            tenants,
        })
    }

    fn remember_sensitive(&self, value: &str) {
        self.stack.remember_sensitive(value);
    }

    async fn get(&self, url: &str) -> Answer {
        let response = self.http.get(url).send().await.unwrap_or_else(|error| {
            panic!(
                "GET {url}: {error}\ncargo lambda watch output (tail):\n{}",
                self.stack.logs().tail(40)
            )
        });
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.text().await.unwrap_or_default();
        Answer {
            status,
            headers,
            body,
        }
    }

    fn start_url(&self, customer_ref: &str, link: Option<&str>) -> String {
        self.start_url_for(customer_ref, link, None)
    }

    fn start_url_for(
        &self,
        customer_ref: &str,
        link: Option<&str>,
        tenant: Option<&str>,
    ) -> String {
        let mut url = Url::parse(&format!("{}/consent/start", self.function_url)).unwrap();
        url.query_pairs_mut().append_pair("customer", customer_ref);
        if let Some(link) = link {
            url.query_pairs_mut().append_pair("link", link);
        }
        if let Some(tenant) = tenant {
            url.query_pairs_mut().append_pair("tenant", tenant);
        }
        url.to_string()
    }

    /// `GET /consent/start`: asserts the 302 and its JSON body, and returns the link.
    async fn start_link(&self, customer_ref: &str, link: Option<&str>) -> Started {
        self.start_link_for(customer_ref, link, None).await
    }

    async fn start_link_for(
        &self,
        customer_ref: &str,
        link: Option<&str>,
        tenant: Option<&str>,
    ) -> Started {
        let answer = self
            .get(&self.start_url_for(customer_ref, link, tenant))
            .await;
        assert_eq!(
            answer.status, 302,
            "/consent/start answers a redirect: {answer:?}"
        );
        assert_eq!(answer.header("cache-control"), "no-store");
        let location = Url::parse(answer.header("location")).expect("an absolute Location");
        let body: Value = serde_json::from_str(&answer.body).expect("a JSON body");
        assert_eq!(body["url"], json!(location.as_str()), "{body}");
        assert_eq!(body["customer_ref"], json!(customer_ref), "{body}");
        assert_eq!(body["link"], json!(link.unwrap_or("v2")), "{body}");
        let expires_at: chrono::DateTime<Utc> = body["expires_at"]
            .as_str()
            .and_then(|text| text.parse().ok())
            .unwrap_or_else(|| panic!("expires_at is a time: {body}"));
        assert!(expires_at > Utc::now(), "{body}");
        let params = query_map(&location);
        assert_eq!(params.get("client_id"), Some(&self.stack.client_id));
        assert_eq!(params.get("redirect_uri"), Some(&self.redirect_uri));
        let state = params.get("state").expect("a state").clone();
        self.remember_sensitive(&state);
        let nonce = nonce_of(&state);
        Started {
            customer_ref: customer_ref.to_owned(),
            location,
            state,
            nonce,
        }
    }

    /// The emulator's consent page for a link.
    async fn consent_page(&self, location: &Url) -> Page {
        let page = Page::open(location.as_str())
            .await
            .expect("opening the consent page");
        assert_eq!(page.status, 200, "the consent page: {page:?}");
        assert!(page.html.contains("id=\"accept\""), "{}", page.html);
        assert!(page.html.contains("id=\"decline\""), "{}", page.html);
        page
    }

    /// Submits the consent form as the administrator of `tenant`; returns where the emulator
    /// redirects: our callback with Microsoft's parameters.
    async fn decide(&self, page: &Page, tenant: &str, decision: &str) -> Url {
        let offered = page.options();
        assert!(
            offered.iter().any(|(option, _)| option == tenant),
            "tenant {tenant} is offered on the consent page: {offered:?}"
        );
        let answer = page
            .submit(&[("tenant", tenant), ("decision", decision)])
            .await
            .expect("posting the consent decision");
        assert_eq!(
            answer.status, 302,
            "the decision answers a redirect: {}",
            answer.body
        );
        let location =
            Url::parse(&answer.location.expect("a Location")).expect("an absolute Location");
        assert!(
            location
                .as_str()
                .starts_with(&format!("{}?", self.redirect_uri)),
            "the emulator redirects to our callback: {location}"
        );
        location
    }

    /// A start link, its consent page and the administrator's decision: the callback URL.
    async fn consent(
        &self,
        customer_ref: &str,
        link: Option<&str>,
        tenant: &str,
        decision: &str,
    ) -> (Started, Url) {
        let started = self.start_link(customer_ref, link).await;
        let form = self.consent_page(&started.location).await;
        let callback = self.decide(&form, tenant, decision).await;
        assert_eq!(
            query_map(&callback).get("state"),
            Some(&started.state),
            "Microsoft returns our state unchanged"
        );
        (started, callback)
    }

    async fn tenant(&self, id: &str) -> Option<TenantRecord> {
        self.registry
            .get(&TenantId::parse(id).unwrap())
            .await
            .expect("reading the registry")
    }

    async fn attempt(&self, nonce: &str) -> ConsentAttempt {
        self.registry
            .attempt(nonce)
            .await
            .expect("reading the consent attempt")
            .unwrap_or_else(|| panic!("consent attempt {nonce} is recorded"))
    }

    /// A state the function accepts (signed with its key), for a nonce of our choosing.
    fn sign_state(&self, nonce: &str, customer_ref: &str, expires_in: chrono::Duration) -> String {
        StateSigner::new(
            &SecretSlice::from(self.stack.state_key().as_bytes().to_vec()),
            Purpose::ConsentLink,
        )
        .sign(&ConsentState {
            nonce: nonce.to_owned(),
            expires: (Utc::now() + expires_in).timestamp(),
            claims: ConsentClaims {
                customer_ref: customer_ref.to_owned(),
                link: "v2".into(),
                tenant: None,
            },
        })
    }

    /// The consent callback answered with the next step: a 302 to Microsoft's sign-in, asking
    /// for identity only, with PKCE and a nonce, at `authority`. Returns the sign-in URL.
    fn sign_in_link(&self, answer: &Answer, authority: &str) -> Url {
        assert_eq!(
            answer.status, 302,
            "the consent continues to a sign-in: {answer:?}"
        );
        assert_eq!(answer.header("referrer-policy"), "no-referrer");
        assert_eq!(answer.header("cache-control"), "no-store");
        let location = Url::parse(answer.header("location")).expect("an absolute Location");
        assert!(
            location.as_str().starts_with(&format!(
                "{}/{authority}/oauth2/v2.0/authorize?",
                self.stack.emulator.base_url()
            )),
            "the sign-in is at {authority}: {location}"
        );
        let params = query_map(&location);
        assert_eq!(
            params.get("scope").map(String::as_str),
            Some("openid profile")
        );
        assert_eq!(params.get("redirect_uri"), Some(&self.redirect_uri));
        assert_eq!(
            params.get("code_challenge_method").map(String::as_str),
            Some("S256")
        );
        assert!(
            params.get("nonce").is_some_and(|nonce| nonce.len() >= 32),
            "{params:?}"
        );
        location
    }

    /// Signs in on the emulator's page as `user` at `sign_in`; returns our callback with the code.
    async fn sign_in_as(&self, sign_in: &Url, user: &str) -> Url {
        let location = browser::sign_in(sign_in.as_str(), user)
            .await
            .unwrap_or_else(|error| panic!("signing in as {user}: {error:#}"));
        let location = Url::parse(&location).expect("an absolute Location");
        assert!(
            location
                .as_str()
                .starts_with(&format!("{}?", self.redirect_uri)),
            "the sign-in returns to our callback: {location}"
        );
        let params = query_map(&location);
        if let Some(code) = params.get("code") {
            self.remember_sensitive(code);
        }
        location
    }

    /// The rest of an accepted consent: the callback sends the administrator to sign in at
    /// `tenant`, `user` signs in, and the callback answers. Returns that answer and the URL of
    /// the sign-in's callback.
    async fn complete(&self, callback: &Url, tenant: &str, user: &str) -> (Answer, Url) {
        let first = self.get(callback.as_str()).await;
        let sign_in = self.sign_in_link(&first, tenant);
        let back = self.sign_in_as(&sign_in, user).await;
        (self.get(back.as_str()).await, back)
    }

    /// The callback URL with these query parameters.
    fn callback_url(&self, params: &[(&str, &str)]) -> String {
        let mut url = Url::parse(&self.redirect_uri).unwrap();
        for (key, value) in params {
            url.query_pairs_mut().append_pair(key, value);
        }
        url.to_string()
    }

    async fn emulator_settings(&self, settings: Value) {
        self.stack
            .emulator
            .settings(&settings)
            .await
            .expect("PUT /_emulator/settings");
    }
}

/// The query of a URL as a map; a repeated key fails the test.
fn query_map(url: &Url) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    for (key, value) in url.query_pairs() {
        assert!(
            map.insert(key.to_string(), value.to_string()).is_none(),
            "{key} repeated in {url}"
        );
    }
    map
}

/// The nonce a state carries (its payload is not secret, only signed).
fn nonce_of(state: &str) -> String {
    let parts: Vec<&str> = state.split('.').collect();
    assert_eq!(parts.len(), 3, "v1.<payload>.<mac>: {state}");
    assert_eq!(parts[0], "v1");
    let payload: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).expect("base64url payload"))
            .expect("a JSON payload");
    payload["n"].as_str().expect("a nonce").to_owned()
}

/// `url` with its `state` replaced by `state` (`None`: removed).
fn with_state(url: &Url, state: Option<&str>) -> String {
    let mut changed = url.clone();
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(key, _)| key != "state")
        .map(|(key, value)| (key.into_owned(), value.into_owned()))
        .collect();
    {
        let mut query = changed.query_pairs_mut();
        query.clear();
        for (key, value) in &pairs {
            query.append_pair(key, value);
        }
        if let Some(state) = state {
            query.append_pair("state", state);
        }
    }
    changed.to_string()
}

/// `state` with one character of its payload changed to another of the base64url alphabet.
fn tamper(state: &str) -> String {
    let mut chars: Vec<char> = state.chars().collect();
    let at = state.find('.').unwrap() + 5;
    chars[at] = if chars[at] == 'A' { 'B' } else { 'A' };
    let tampered: String = chars.into_iter().collect();
    assert_ne!(tampered, state);
    tampered
}

/// A page of ours: its status, its `<h1>`, and the headers every page carries.
fn assert_page(answer: &Answer, status: u16, title: &str) {
    assert_eq!(
        answer.status, status,
        "expected {status} {title:?}, got: {answer:?}"
    );
    assert!(
        answer.body.contains(&format!("<h1>{title}</h1>")),
        "expected the page {title:?}, got: {}",
        answer.body
    );
    assert_security_headers(answer);
}

fn assert_security_headers(answer: &Answer) {
    assert_eq!(answer.header("content-type"), "text/html; charset=utf-8");
    let csp = answer.header("content-security-policy");
    assert!(csp.contains("frame-ancestors 'none'"), "CSP: {csp:?}");
    assert!(csp.contains("default-src 'none'"), "CSP: {csp:?}");
    assert!(!csp.contains("script-src"), "no script may run: {csp:?}");
    assert_eq!(answer.header("x-frame-options"), "DENY");
    assert_eq!(answer.header("cache-control"), "no-store");
    assert_eq!(answer.header("referrer-policy"), "no-referrer");
    assert_eq!(answer.header("x-content-type-options"), "nosniff");
}

/// No `code` or `state` of the callback URL appears in the page.
fn assert_no_echo(answer: &Answer, callback: &str) {
    let url = Url::parse(callback).unwrap();
    for (key, value) in url.query_pairs() {
        if (key == "code" || key == "state" || key == "session_state") && value.len() >= 8 {
            assert!(
                !answer.body.contains(value.as_ref()),
                "the page echoes the callback's {key}: {}",
                answer.body
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn consent_callback_end_to_end() {
    let started = Instant::now();
    let world = Arc::new(World::start().await.expect("starting the consent stack"));
    eprintln!(
        "[e2e] stack ready in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let mut cases = Cases::from_env();

    cases
        .run("function_url_routing", function_url_routing(world.clone()))
        .await;
    cases
        .run(
            "v2_accept_then_replay",
            v2_accept_then_replay(world.clone()),
        )
        .await;
    cases.run("v2_decline", v2_decline(world.clone())).await;
    cases
        .run(
            "forged_or_missing_state",
            forged_or_missing_state(world.clone()),
        )
        .await;
    cases
        .run(
            "forged_tenant_is_never_active",
            forged_tenant(world.clone()),
        )
        .await;
    cases
        .run(
            "another_customers_link_cannot_take_a_tenant",
            another_customers_link(world.clone()),
        )
        .await;
    cases.run("squatting", squatting(world.clone())).await;
    cases
        .run(
            "unproven_claim_replaced",
            unproven_claim_replaced(world.clone()),
        )
        .await;
    cases
        .run("tenant_bound_link", tenant_bound_link(world.clone()))
        .await;
    cases
        .run("expired_state", expired_state(world.clone()))
        .await;
    cases
        .run("legacy_link_without_tenant", legacy_link(world.clone()))
        .await;
    cases
        .run("adminconsent_link", adminconsent_link(world.clone()))
        .await;
    cases
        .run("consent_propagation_delay", propagation(world.clone()))
        .await;
    cases
        .run("hostile_decline_is_escaped", hostile_decline(world.clone()))
        .await;
    cases
        .run("fuzz_malformed_callbacks", fuzz(world.clone()))
        .await;
    cases.run("browser", browser(world.clone())).await;
    cases
        .run("logs_hold_no_secret", logs_hold_no_secret(world.clone()))
        .await;

    eprintln!(
        "[e2e] consent cases done in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    cases.finish();
}

/// The watch's function URL routes by suffix; the `/lambda-url/{function}` prefix is stripped
/// from `rawPath`; direct invocations are refused.
async fn function_url_routing(world: Arc<World>) {
    // An unknown path answers the JSON error naming the path the function saw.
    let answer = world
        .get(&format!("{}/elsewhere", world.function_url))
        .await;
    assert_eq!(answer.status, 400, "{answer:?}");
    let body: Value = serde_json::from_str(&answer.body).expect("a JSON error");
    assert_eq!(body["error"]["code"], "invalid_request", "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("GET /elsewhere"), "{message}");
    eprintln!("[e2e] function URL rawPath as the function saw it: {message:?}");

    // A trailing slash still reaches the callback.
    let answer = world
        .get(&format!("{}/consent/callback/", world.function_url))
        .await;
    assert_page(&answer, 400, "This link is not valid");

    // POST is no route.
    let response = world
        .http
        .post(&world.redirect_uri)
        .body("state=x")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);

    // /consent/start without a customer, or with an unknown link kind.
    for query in [
        "",
        "?customer=",
        "?customer=ok&link=implicit",
        "?customer=%3Cscript%3E",
    ] {
        let answer = world
            .get(&format!("{}/consent/start{query}", world.function_url))
            .await;
        assert_eq!(answer.status, 400, "{query}: {answer:?}");
        let body: Value = serde_json::from_str(&answer.body).expect("a JSON error");
        assert_eq!(body["error"]["code"], "invalid_request", "{body}");
    }

    // A direct invocation (lambda:InvokeFunction) is a function error.
    let port = Url::parse(&world.function_url).unwrap().port().unwrap();
    let response = world
        .http
        .post(format!(
            "http://127.0.0.1:{port}/2015-03-31/functions/{FUNCTION}/invocations"
        ))
        .json(&json!({"customer": "CRM-1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 500);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["errorType"], "invalid_request", "{body}");
}

/// Case 1: link → consent page → accept → "Onboarding complete", tenant active with its roles;
/// the same callback again → 409 and nothing changes.
async fn v2_accept_then_replay(world: Arc<World>) {
    let tenant = world.tenants.v2_accept.clone();
    let started = world.start_link("CRM-V2-ACCEPT", None).await;
    assert!(
        started.location.as_str().starts_with(&format!(
            "{}/organizations/v2.0/adminconsent?",
            world.stack.emulator.base_url()
        )),
        "{}",
        started.location
    );
    let params = query_map(&started.location);
    assert_eq!(
        params.get("scope").map(String::as_str),
        Some("https://api.security.microsoft.com/.default")
    );
    assert_eq!(
        world.attempt(&started.nonce).await.status,
        AttemptStatus::Issued
    );

    let form = world.consent_page(&started.location).await;
    assert!(
        form.html.contains(&format!("data-role=\"{ROLE_M365D}\"")),
        "the page lists the permission asked for: {}",
        form.html
    );
    let callback = world.decide(&form, &tenant, "accept").await;
    let params = query_map(&callback);
    assert_eq!(params.get("tenant"), Some(&tenant));
    assert_eq!(
        params.get("admin_consent").map(String::as_str),
        Some("True")
    );
    assert!(!params.contains_key("error"));

    // The consent alone records nothing: the administrator signs in first.
    let (answer, signed_in) = world
        .complete(&callback, &tenant, &scenario::admin_upn(&tenant))
        .await;
    assert_page(&answer, 200, "Onboarding complete");
    assert!(answer.body.contains(&tenant), "{}", answer.body);
    assert!(answer.body.contains("CRM-V2-ACCEPT"), "{}", answer.body);
    assert_no_echo(&answer, signed_in.as_str());
    assert!(
        answer.body.contains(&format!("<li>{ROLE_M365D}</li>")),
        "{}",
        answer.body
    );
    assert_no_echo(&answer, callback.as_str());

    let record = world.tenant(&tenant).await.expect("the tenant is recorded");
    assert_eq!(record.status, TenantStatus::Active, "{record:?}");
    assert_eq!(record.roles, vec![ROLE_M365D.to_owned()], "{record:?}");
    assert_eq!(record.customer_ref.as_deref(), Some("CRM-V2-ACCEPT"));
    assert_eq!(record.status_reason, None);
    assert_eq!(record.ownership, Ownership::AdminSignIn);
    let attempt = world.attempt(&started.nonce).await;
    assert_eq!(attempt.status, AttemptStatus::Completed, "{attempt:?}");
    assert!(
        attempt
            .detail
            .as_deref()
            .is_some_and(|d| d.starts_with("administrator ")),
        "{attempt:?}"
    );
    assert_eq!(
        attempt.tenant_id.as_ref().map(TenantId::as_str),
        Some(tenant.as_str())
    );
    assert_eq!(
        attempt.flow,
        AttemptFlow::Consent {
            customer_ref: "CRM-V2-ACCEPT".into(),
            link: "v2".into(),
        }
    );

    let decisions = world
        .stack
        .emulator
        .consent_decisions()
        .await
        .expect("GET /_emulator/consent/log");
    assert!(
        decisions.iter().any(|decision| decision.tenant == tenant
            && decision.decision == ConsentDecision::Accept
            && decision.kind == ConsentKind::V2),
        "{decisions:?}"
    );

    // Replay of either redirect: refused, nothing changes.
    let again = world.get(callback.as_str()).await;
    assert_page(&again, 409, "This link was already used");
    assert_no_echo(&again, callback.as_str());
    let again = world.get(signed_in.as_str()).await;
    assert_page(&again, 409, "This link was already used");
    assert_eq!(
        world.tenant(&tenant).await,
        Some(record),
        "a replay changes nothing"
    );
    assert_eq!(world.attempt(&started.nonce).await, attempt);
}

/// Case 2: decline → "Consent was not given", nothing recorded but the declined attempt.
async fn v2_decline(world: Arc<World>) {
    let tenant = world.tenants.v2_decline.clone();
    let (started, callback) = world
        .consent("CRM-V2-DECLINE", None, &tenant, "decline")
        .await;
    let params = query_map(&callback);
    assert_eq!(
        params.get("error").map(String::as_str),
        Some("access_denied")
    );
    // Entra's v2 link sends admin_consent=True on a decline too.
    assert_eq!(
        params.get("admin_consent").map(String::as_str),
        Some("True")
    );

    let answer = world.get(callback.as_str()).await;
    assert_page(&answer, 200, "Consent was not given");
    assert!(answer.body.contains("access_denied"), "{}", answer.body);
    assert!(answer.body.contains("AADSTS65004"), "{}", answer.body);
    assert_no_echo(&answer, callback.as_str());
    assert_eq!(
        world.tenant(&tenant).await,
        None,
        "a declined tenant is not recorded"
    );
    let attempt = world.attempt(&started.nonce).await;
    assert_eq!(attempt.status, AttemptStatus::Declined, "{attempt:?}");
    assert_eq!(attempt.detail.as_deref(), Some("access_denied"));
    assert_eq!(attempt.tenant_id, None);

    let again = world.get(callback.as_str()).await;
    assert_page(&again, 409, "This link was already used");
    assert_eq!(world.tenant(&tenant).await, None);
}

/// Case 3a: a changed, missing or foreign-key state is refused (400) without burning the real
/// link, which still completes afterwards.
async fn forged_or_missing_state(world: Arc<World>) {
    let tenant = world.tenants.forged_state.clone();
    let (started, callback) = world
        .consent("CRM-FORGED-STATE", None, &tenant, "accept")
        .await;

    let tampered = with_state(&callback, Some(&tamper(&started.state)));
    let answer = world.get(&tampered).await;
    assert_page(&answer, 400, "This link is not valid");
    assert_no_echo(&answer, &tampered);

    let missing = with_state(&callback, None);
    let answer = world.get(&missing).await;
    assert_page(&answer, 400, "This link is not valid");

    let blank = with_state(&callback, Some("   "));
    let answer = world.get(&blank).await;
    assert_page(&answer, 400, "This link is not valid");

    // The same claims signed with another key.
    let other_key = StateSigner::new(
        &SecretSlice::from(b"another key, not the function's one!".to_vec()),
        Purpose::ConsentLink,
    )
    .sign(&ConsentState {
        nonce: started.nonce.clone(),
        expires: Utc::now().timestamp() + 600,
        claims: ConsentClaims {
            customer_ref: started.customer_ref.clone(),
            link: "v2".into(),
            tenant: None,
        },
    });
    let answer = world.get(&with_state(&callback, Some(&other_key))).await;
    assert_page(&answer, 400, "This link is not valid");

    // A repeated state (one genuine, one forged) is refused before anything is read.
    let repeated = format!("{callback}&state=v1.x.y");
    let answer = world.get(&repeated).await;
    assert_page(&answer, 400, "This link is not valid");

    assert_eq!(
        world.tenant(&tenant).await,
        None,
        "nothing recorded by a forgery"
    );
    assert_eq!(
        world.attempt(&started.nonce).await.status,
        AttemptStatus::Issued,
        "a forgery does not consume the link"
    );

    // The genuine callback still works.
    let (answer, _) = world
        .complete(&callback, &tenant, &scenario::admin_upn(&tenant))
        .await;
    assert_page(&answer, 200, "Onboarding complete");
    let record = world.tenant(&tenant).await.expect("recorded");
    assert_eq!(record.status, TenantStatus::Active);
}

/// Case 3b (attack 1, a forwarded link): a valid state of customer X's link delivered with
/// `tenant=` another organisation's id, one that consented the app earlier but is not in the
/// registry. The callback only sends the browser to sign in *at that tenant*; the attacker is
/// not its administrator, so whatever they do, nothing is recorded: signing in at their own
/// tenant (the code does not redeem there), or as a plain user of the target (no admin role).
async fn forged_tenant(world: Arc<World>) {
    let victim = world.tenants.consented_elsewhere.clone();
    let attacker_tenant = world.tenants.never_consented.clone();
    let started = world.start_link("CRM-EVIL", None).await;
    let forged = world.callback_url(&[
        ("tenant", &victim),
        ("scope", "https://api.security.microsoft.com/.default"),
        ("state", &started.state),
        ("admin_consent", "True"),
    ]);
    let answer = world.get(&forged).await;
    let sign_in = world.sign_in_link(&answer, &victim);
    assert_eq!(
        world.tenant(&victim).await,
        None,
        "a consent alone records nothing"
    );
    assert_eq!(
        world.attempt(&started.nonce).await.status,
        AttemptStatus::Issued
    );

    // The attacker moves the sign-in to their own tenant and signs in there as its admin.
    let elsewhere = Url::parse(&sign_in.as_str().replace(
        &format!("/{victim}/oauth2"),
        &format!("/{attacker_tenant}/oauth2"),
    ))
    .unwrap();
    let back = world
        .sign_in_as(&elsewhere, &scenario::admin_upn(&attacker_tenant))
        .await;
    let answer = world.get(back.as_str()).await;
    assert_page(&answer, 400, "Sign-in was not completed");
    assert_no_echo(&answer, back.as_str());

    // Or signs in at the victim as a plain user of it (an employee, a guest).
    let back = world.sign_in_as(&sign_in, &user_of(&victim)).await;
    let answer = world.get(back.as_str()).await;
    assert_page(&answer, 403, "An administrator must complete this step");

    // Or at `organizations` with their own admin account: a sign-in at another tenant.
    let anywhere = Url::parse(
        &sign_in
            .as_str()
            .replace(&format!("/{victim}/oauth2"), "/organizations/oauth2"),
    )
    .unwrap();
    let back = world
        .sign_in_as(&anywhere, &scenario::admin_upn(&attacker_tenant))
        .await;
    let answer = world.get(back.as_str()).await;
    assert_page(&answer, 400, "Sign-in was not completed");

    assert_eq!(
        world.tenant(&victim).await,
        None,
        "the victim is never recorded"
    );
    assert_eq!(world.tenant(&attacker_tenant).await, None);
    assert_eq!(
        world.attempt(&started.nonce).await.status,
        AttemptStatus::Issued,
        "an unproven callback spends nothing"
    );

    // A malformed tenant with a valid state: refused, nothing spent.
    let url = world.callback_url(&[
        ("tenant", "not-a-tenant"),
        ("state", &started.state),
        ("admin_consent", "True"),
    ]);
    let answer = world.get(&url).await;
    assert_page(&answer, 400, "This link is not valid");
    assert_eq!(
        world.attempt(&started.nonce).await.status,
        AttemptStatus::Issued
    );
}

/// Attack 2 (squatting): customer X's link delivered with a tenant that has not consented yet
/// records nothing (no pending claim); when that tenant's real administrator consents through
/// their own link, the tenant becomes active for *their* customer.
async fn squatting(world: Arc<World>) {
    let tenant = world.tenants.squatted.clone();
    let evil = world.start_link("CRM-SQUATTER", None).await;
    let forged = world.callback_url(&[
        ("tenant", &tenant),
        ("state", &evil.state),
        ("admin_consent", "True"),
    ]);
    let answer = world.get(&forged).await;
    world.sign_in_link(&answer, &tenant);
    assert_eq!(
        world.tenant(&tenant).await,
        None,
        "no claim for the squatter"
    );

    let (_, callback) = world
        .consent("CRM-SQUATTED-OWNER", None, &tenant, "accept")
        .await;
    let (answer, _) = world
        .complete(&callback, &tenant, &scenario::admin_upn(&tenant))
        .await;
    assert_page(&answer, 200, "Onboarding complete");
    let record = world.tenant(&tenant).await.expect("recorded");
    assert_eq!(record.status, TenantStatus::Active);
    assert_eq!(record.customer_ref.as_deref(), Some("CRM-SQUATTED-OWNER"));
    assert_eq!(record.ownership, Ownership::AdminSignIn);
}

/// An unproven claim left by an older release (ownership `unverified`, pending for the
/// squatter) is replaced by the tenant administrator's proven consent.
async fn unproven_claim_replaced(world: Arc<World>) {
    let tenant = world.tenants.claimed.clone();
    let mut claim = TenantRecord::new(
        TenantId::parse(&tenant).unwrap(),
        "CRM-OLD-SQUATTER",
        TenantStatus::Pending,
    );
    claim.customer_ref = Some("CRM-OLD-SQUATTER".into());
    claim.ownership = Ownership::Unverified;
    world.registry.insert(&claim).await.unwrap();
    let (_, callback) = world
        .consent("CRM-REAL-OWNER", None, &tenant, "accept")
        .await;
    let (answer, _) = world
        .complete(&callback, &tenant, &scenario::admin_upn(&tenant))
        .await;
    assert_page(&answer, 200, "Onboarding complete");
    let record = world.tenant(&tenant).await.expect("recorded");
    assert_eq!(record.customer_ref.as_deref(), Some("CRM-REAL-OWNER"));
    assert_eq!(record.ownership, Ownership::AdminSignIn);
    assert_eq!(record.status, TenantStatus::Active);
}

/// A link bound to a tenant (`/consent/start?tenant=`): Microsoft's page is that tenant's, and
/// the callback refuses any other tenant, before any sign-in.
async fn tenant_bound_link(world: Arc<World>) {
    let tenant = world.tenants.bound.clone();
    let started = world.start_link_for("CRM-BOUND", None, Some(&tenant)).await;
    assert!(
        started.location.as_str().starts_with(&format!(
            "{}/{tenant}/v2.0/adminconsent?",
            world.stack.emulator.base_url()
        )),
        "{}",
        started.location
    );
    let other = world.tenants.consented_elsewhere.clone();
    let url = world.callback_url(&[
        ("tenant", &other),
        ("state", &started.state),
        ("admin_consent", "True"),
    ]);
    let answer = world.get(&url).await;
    assert_page(&answer, 403, "This link is for another organisation");
    assert_eq!(
        world.attempt(&started.nonce).await.status,
        AttemptStatus::Issued
    );
    assert_eq!(world.tenant(&other).await, None);

    // A bad tenant at /consent/start is refused.
    let answer = world
        .get(&world.start_url_for("CRM-BOUND", None, Some("not-a-tenant")))
        .await;
    assert_eq!(answer.status, 400, "{answer:?}");

    // The genuine administrator completes it.
    let form = world.consent_page(&started.location).await;
    let callback = world.decide(&form, &tenant, "accept").await;
    let (answer, _) = world
        .complete(&callback, &tenant, &scenario::admin_upn(&tenant))
        .await;
    assert_page(&answer, 200, "Onboarding complete");
    assert_eq!(
        world.tenant(&tenant).await.map(|record| record.status),
        Some(TenantStatus::Active)
    );
}

/// A valid link issued for one customer, used by the real administrator of a tenant already
/// onboarded (proven) for another customer: refused with 409, the record keeps its owner.
async fn another_customers_link(world: Arc<World>) {
    let tenant = world.tenants.v2_accept.clone();
    let before = world
        .tenant(&tenant)
        .await
        .expect("onboarded by v2_accept_then_replay");
    assert_eq!(before.customer_ref.as_deref(), Some("CRM-V2-ACCEPT"));
    let started = world.start_link("CRM-OTHER-CUSTOMER", None).await;
    let url = Url::parse(&world.callback_url(&[
        ("tenant", &tenant),
        ("scope", "https://api.security.microsoft.com/.default"),
        ("state", &started.state),
        ("admin_consent", "True"),
    ]))
    .unwrap();
    let (answer, back) = world
        .complete(&url, &tenant, &scenario::admin_upn(&tenant))
        .await;
    assert_page(&answer, 409, "This tenant is already connected");
    assert_no_echo(&answer, back.as_str());
    assert_eq!(
        world.tenant(&tenant).await,
        Some(before),
        "the owner is unchanged"
    );
    let attempt = world.attempt(&started.nonce).await;
    assert_eq!(attempt.status, AttemptStatus::Declined, "{attempt:?}");
}

/// Case 4: expiry. DP_CONSENT_STATE_TTL_SECONDS is at least 60, so the expired states are made
/// here, signed with the function's own key (read from the same secret): one whose own expiry
/// has passed, and one within its expiry whose stored attempt has expired.
async fn expired_state(world: Arc<World>) {
    let tenant = guid();
    // The state says it expired.
    let state = world.sign_state(
        &guid().replace('-', ""),
        "CRM-EXPIRED",
        chrono::Duration::seconds(-5),
    );
    let url = world.callback_url(&[
        ("tenant", &tenant),
        ("state", &state),
        ("admin_consent", "True"),
    ]);
    let answer = world.get(&url).await;
    assert_page(&answer, 410, "This link has expired");
    assert_no_echo(&answer, &url);

    // The state is in date, but the attempt it names expired (the store's own check).
    let nonce = uuid::Uuid::new_v4().simple().to_string();
    let now = stored_now();
    let attempt = ConsentAttempt {
        nonce: nonce.clone(),
        flow: AttemptFlow::Consent {
            customer_ref: "CRM-EXPIRED".into(),
            link: "v2".into(),
        },
        status: AttemptStatus::Issued,
        tenant_id: None,
        detail: None,
        created_at: now - chrono::Duration::hours(2),
        expires_at: now - chrono::Duration::minutes(1),
        updated_at: now - chrono::Duration::hours(2),
    };
    world
        .registry
        .issue(&attempt)
        .await
        .expect("issuing an attempt");
    let state = world.sign_state(&nonce, "CRM-EXPIRED", chrono::Duration::minutes(10));
    let url = world.callback_url(&[
        ("tenant", &tenant),
        ("state", &state),
        ("admin_consent", "True"),
    ]);
    let answer = world.get(&url).await;
    assert_page(&answer, 410, "This link has expired");
    assert_eq!(
        world.attempt(&nonce).await,
        attempt,
        "an expired attempt is not consumed"
    );

    // A genuinely signed, in-date state for a nonce never issued.
    let state = world.sign_state(
        &guid().replace('-', ""),
        "CRM-NEVER",
        chrono::Duration::minutes(10),
    );
    let url = world.callback_url(&[
        ("tenant", &tenant),
        ("state", &state),
        ("admin_consent", "True"),
    ]);
    let answer = world.get(&url).await;
    assert_page(&answer, 400, "This link is not valid");

    assert_eq!(world.tenant(&tenant).await, None, "nothing recorded");
}

/// Case 5: the legacy link returns no tenant: the administrator signs in at `organizations`,
/// and the ID token's `tid` is the tenant recorded; the legacy `code` is never redeemed.
async fn legacy_link(world: Arc<World>) {
    let tenant = world.tenants.legacy.clone();
    let started = world.start_link("CRM-LEGACY", Some("legacy")).await;
    assert!(
        started.location.as_str().starts_with(&format!(
            "{}/common/oauth2/authorize?",
            world.stack.emulator.base_url()
        )),
        "{}",
        started.location
    );
    let params = query_map(&started.location);
    assert_eq!(
        params.get("response_type").map(String::as_str),
        Some("code")
    );
    assert_eq!(params.get("prompt").map(String::as_str), Some("consent"));
    let form = world.consent_page(&started.location).await;
    let callback = world.decide(&form, &tenant, "accept").await;
    let params = query_map(&callback);
    assert!(!params.contains_key("tenant"), "{callback}");
    let code = params.get("code").expect("a code").clone();
    world.remember_sensitive(&code);

    let (answer, back) = world
        .complete(&callback, "organizations", &scenario::admin_upn(&tenant))
        .await;
    assert_page(&answer, 200, "Onboarding complete");
    assert!(answer.body.contains(&tenant), "{}", answer.body);
    assert_no_echo(&answer, callback.as_str());
    assert_no_echo(&answer, back.as_str());
    let record = world
        .tenant(&tenant)
        .await
        .expect("the tenant the admin proved");
    assert_eq!(record.status, TenantStatus::Active);
    assert_eq!(record.ownership, Ownership::AdminSignIn);
    let attempt = world.attempt(&started.nonce).await;
    assert_eq!(attempt.status, AttemptStatus::Completed, "{attempt:?}");
    assert!(
        matches!(&attempt.flow, AttemptFlow::Consent { link, .. } if link == "legacy"),
        "{attempt:?}"
    );

    let again = world.get(callback.as_str()).await;
    assert_page(&again, 409, "This link was already used");
}

/// The `/adminconsent` link: accept → onboarded.
async fn adminconsent_link(world: Arc<World>) {
    let tenant = world.tenants.adminconsent.clone();
    let (started, callback) = world
        .consent("CRM-ADMINCONSENT", Some("adminconsent"), &tenant, "accept")
        .await;
    assert!(
        started.location.as_str().starts_with(&format!(
            "{}/common/adminconsent?",
            world.stack.emulator.base_url()
        )),
        "{}",
        started.location
    );
    let (answer, _) = world
        .complete(&callback, &tenant, &scenario::admin_upn(&tenant))
        .await;
    assert_page(&answer, 200, "Onboarding complete");
    let record = world.tenant(&tenant).await.expect("recorded");
    assert_eq!(record.status, TenantStatus::Active);
    assert_eq!(record.roles, vec![ROLE_M365D.to_owned()]);
    let attempt = world.attempt(&started.nonce).await;
    assert!(
        matches!(&attempt.flow, AttemptFlow::Consent { link, .. } if link == "adminconsent"),
        "{attempt:?}"
    );
}

/// Consent that takes a while to reach the token service: the callback retries the proof
/// within its window and completes once the grant takes effect. The emulator holds the grant
/// back until the proof has been refused at least once, then releases it.
async fn propagation(world: Arc<World>) {
    let tenant = world.tenants.propagation.clone();
    world
        .emulator_settings(json!({ "consent_propagation_ms": 600_000 }))
        .await;
    let (_, callback) = world
        .consent("CRM-PROPAGATION", None, &tenant, "accept")
        .await;
    let first = world.get(callback.as_str()).await;
    let sign_in = world.sign_in_link(&first, &tenant);
    let back = world
        .sign_in_as(&sign_in, &scenario::admin_upn(&tenant))
        .await;
    let caller = {
        let world = world.clone();
        let url = back.to_string();
        tokio::spawn(async move { world.get(&url).await })
    };
    let waited = Instant::now();
    loop {
        let refused = world
            .stack
            .emulator
            .token_requests_for(&tenant)
            .await
            .expect("the emulator's request log")
            .iter()
            .filter(|request| request.status != 200)
            .count();
        if refused >= 1 {
            break;
        }
        assert!(
            waited.elapsed() < Duration::from_secs(90) && !caller.is_finished(),
            "the callback never asked for a token for {tenant}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Releases the pending grant at once.
    world
        .emulator_settings(json!({ "consent_propagation_ms": 0 }))
        .await;
    let answer = caller.await.expect("the callback request");
    assert_page(&answer, 200, "Onboarding complete");
    let record = world.tenant(&tenant).await.expect("recorded");
    assert_eq!(record.status, TenantStatus::Active, "{record:?}");
    assert_eq!(record.roles, vec![ROLE_M365D.to_owned()]);
}

/// Case 6 (with the headers checked on every page above): a decline whose error and
/// description are markup is shown escaped.
async fn hostile_decline(world: Arc<World>) {
    let started = world.start_link("CRM-HOSTILE", None).await;
    let url = world.callback_url(&[
        ("error", "<script>alert(1)</script>"),
        (
            "error_description",
            "<img src=x onerror=alert(1)> \"quoted\" 'single'",
        ),
        ("state", &started.state),
        ("admin_consent", "True"),
    ]);
    let answer = world.get(&url).await;
    assert_page(&answer, 200, "Consent was not given");
    assert_no_echo(&answer, &url);
    let lower = answer.body.to_ascii_lowercase();
    assert!(!lower.contains("<script"), "{}", answer.body);
    assert!(!lower.contains("<img"), "{}", answer.body);
    assert!(
        answer.body.contains("&lt;img src=x onerror=alert(1)&gt;"),
        "{}",
        answer.body
    );
    assert_eq!(
        world.attempt(&started.nonce).await.status,
        AttemptStatus::Declined
    );
}

/// A small deterministic generator (splitmix64): a failing run is replayed with its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }

    fn b64url(&mut self, len: usize) -> String {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        (0..len)
            .map(|_| ALPHABET[self.below(ALPHABET.len())] as char)
            .collect()
    }
}

fn percent_encode_all(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("%{byte:02X}")).collect()
}

/// One malformed query string.
fn fuzz_query(rng: &mut Rng, good_state: &str) -> String {
    const KEYS: [&str; 12] = [
        "state",
        "tenant",
        "admin_consent",
        "error",
        "error_description",
        "error_subcode",
        "code",
        "session_state",
        "scope",
        "STATE",
        "state[]",
        "",
    ];
    const VALUES: [&str; 16] = [
        "",
        "True",
        "true",
        "False",
        "%",
        "%zz",
        "%E2%82",
        "%00",
        "%FF%FE",
        "72f988bf-86f1-41af-91ab-2d7cd011db47",
        "access_denied",
        "v1..",
        "v1.e30.AAAA",
        "<script>",
        "%0d%0aSet-Cookie:%20x=y",
        "..%2F..%2Fetc%2Fpasswd",
    ];
    let forged_state = |rng: &mut Rng| {
        let payload = json!({
            "n": uuid::Uuid::new_v4().simple().to_string(),
            "c": "CRM-FUZZ",
            "k": "v2",
            "e": Utc::now().timestamp() + 600 - 1200 * (rng.below(2) as i64),
        });
        format!(
            "v1.{}.{}",
            URL_SAFE_NO_PAD.encode(payload.to_string()),
            rng.b64url(43)
        )
    };
    match rng.below(10) {
        // Random bytes, percent-encoded.
        0 => {
            let len = rng.below(300);
            percent_encode_all(&rng.bytes(len))
        }
        // Random printable ASCII (the URL parser encodes what it must).
        1 => {
            let len = rng.below(200);
            (0..len)
                .map(|_| (0x20 + rng.below(0x5f) as u8) as char)
                .collect()
        }
        // Known keys, random values, sometimes repeated.
        2 => {
            let count = 1 + rng.below(8);
            (0..count)
                .map(|_| format!("{}={}", rng.pick(&KEYS), rng.pick(&VALUES)))
                .collect::<Vec<_>>()
                .join("&")
        }
        // Huge values and queries.
        3 => match rng.below(4) {
            0 => format!("state={}&tenant=x&admin_consent=True", "A".repeat(3000)),
            1 => format!("tenant={}&state=s&admin_consent=True", "7".repeat(2100)),
            2 => format!("x={}", "y".repeat(9000)),
            _ => format!(
                "error=access_denied&error_description={}&state={}",
                "d".repeat(2049),
                forged_state(rng)
            ),
        },
        // Valid-looking states with bad MACs, on success shapes.
        4 => format!(
            "tenant={}&scope=https%3A%2F%2Fapi.security.microsoft.com%2F.default&state={}&admin_consent=True",
            guid(),
            forged_state(rng)
        ),
        // Declines (error + admin_consent) with forged states.
        5 => format!(
            "error={}&error_description=AADSTS65004&state={}&admin_consent=True",
            rng.pick(&["access_denied", "permission_denied", "%3Cb%3E", ""]),
            forged_state(rng)
        ),
        // The genuine state of a consumed link with one character changed, or extended.
        6 => {
            let mut chars: Vec<char> = good_state.chars().collect();
            let at = rng.below(chars.len());
            chars[at] = rng.b64url(1).chars().next().unwrap();
            let mut state: String = chars.into_iter().collect();
            if state == good_state {
                state.push('A');
            }
            format!("tenant={}&state={state}&admin_consent=True", guid())
        }
        // A genuine state repeated, or next to another parameter repeated.
        7 => format!(
            "state={good_state}&state={good_state}&tenant={}&admin_consent=True",
            guid()
        ),
        // Incomplete shapes.
        8 => rng
            .pick(&[
                "admin_consent=True",
                "tenant=x",
                "state=x",
                "code=abc",
                "admin_consent=False&tenant=x&state=y",
                "admin_consent=1&code=c&state=y",
                "&&&&",
                "=&=&=",
                "%",
                "?",
            ])
            .to_owned(),
        // Unicode and control characters, raw (the URL parser percent-encodes them).
        _ => {
            let (payload, mac) = (1 + rng.below(60), 1 + rng.below(60));
            format!(
                "state=v1.{}.{}&tenant=ünïcødé\u{0}\u{7}\u{202e}&admin_consent=True&error_description=\u{FEFF}",
                rng.b64url(payload),
                rng.b64url(mac)
            )
        }
    }
}

/// Case 7: thousands of malformed callbacks: every answer is a 4xx, never a 5xx, and the
/// function still serves a real onboarding afterwards.
async fn fuzz(world: Arc<World>) {
    const REQUESTS: usize = 2400;
    const CONCURRENCY: usize = 8;
    let seed = std::env::var("E2E_FUZZ_SEED")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or_else(|| Utc::now().timestamp_nanos_opt().unwrap_or_default() as u64);
    eprintln!("[e2e] fuzz seed {seed} (E2E_FUZZ_SEED={seed} replays it)");

    // A state that was genuine once: its link is consumed first.
    let started = world.start_link("CRM-FUZZ", None).await;
    let consumed = world.callback_url(&[("error", "access_denied"), ("state", &started.state)]);
    assert_page(&world.get(&consumed).await, 200, "Consent was not given");

    let mut rng = Rng(seed);
    let queries: Vec<String> = (0..REQUESTS)
        .map(|_| fuzz_query(&mut rng, &started.state))
        .collect();
    let semaphore = Arc::new(tokio::sync::Semaphore::new(CONCURRENCY));
    let mut tasks = tokio::task::JoinSet::new();
    let fuzz_started = Instant::now();
    for (index, query) in queries.into_iter().enumerate() {
        let permit = semaphore.clone().acquire_owned().await.unwrap();
        let world = world.clone();
        tasks.spawn(async move {
            let _permit = permit;
            let mut url = Url::parse(&world.redirect_uri).unwrap();
            url.set_query(Some(&query));
            let sent = url.to_string();
            let answer = world.get(&sent).await;
            (index, sent, answer)
        });
    }
    let mut statuses: BTreeMap<u16, usize> = BTreeMap::new();
    let mut failures = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let (index, sent, answer) = joined.expect("a fuzz request task");
        *statuses.entry(answer.status).or_default() += 1;
        let ours = answer.body.contains("<h1>This link is not valid</h1>");
        if !(400..500).contains(&answer.status) {
            failures.push(format!(
                "#{index} {sent} → {} {}",
                answer.status, answer.body
            ));
        } else if answer.status == 400 && ours {
            assert_security_headers(&answer);
        }
    }
    eprintln!(
        "[e2e] fuzz: {REQUESTS} requests in {:.1}s, statuses {statuses:?}",
        fuzz_started.elapsed().as_secs_f64()
    );
    assert!(
        failures.is_empty(),
        "{} of {REQUESTS} malformed callbacks were not answered with a 4xx (seed {seed}):\n{}",
        failures.len(),
        failures
            .iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );

    // Still alive, and still correct.
    let answer = world.get(&world.redirect_uri).await;
    assert_page(&answer, 400, "This link is not valid");
    let fresh = world.start_link("CRM-AFTER-FUZZ", None).await;
    assert_eq!(
        world.attempt(&fresh.nonce).await.status,
        AttemptStatus::Issued
    );
}

/// Case 8: the administrator's own browser: headless Chromium follows the start link to the
/// emulator's consent page, picks the tenant, clicks Accept (or Decline), and lands on our page.
async fn browser(world: Arc<World>) {
    let browser = Browser::start().await.expect("starting headless Chromium");
    let accepted = browser_flow(&world, &browser).await;
    // Close the session whether or not the flow passed.
    let closed = browser.close().await;
    let callback = accepted.unwrap_or_else(|error| panic!("{error:#}"));
    closed.expect("closing the browser");
    eprintln!(
        "[e2e] browser onboarding done; callback {}",
        callback.path()
    );
}

async fn browser_flow(world: &World, browser: &Browser) -> Result<Url> {
    let emulator = world.stack.emulator.base_url();

    // Accept for tenant B.
    let tenant = &world.tenants.browser_accept;
    browser
        .goto(&world.start_url("CRM-BROWSER-ACCEPT", None))
        .await?;
    let at = browser.current_url().await?;
    if !at
        .as_str()
        .starts_with(&format!("{emulator}/organizations/v2.0/adminconsent?"))
    {
        bail!("the start link did not lead to the consent page: {at}");
    }
    browser.wait_for("#accept").await?;
    browser.select("#tenant", tenant).await?;
    browser.click("#accept").await?;
    // Our callback sends the administrator on to sign in at that tenant.
    browser
        .wait_for_url_prefix(&format!("{emulator}/{tenant}/oauth2/v2.0/authorize?"))
        .await?;
    browser.wait_for("#user").await?;
    browser
        .select("#user", &scenario::admin_upn(tenant))
        .await?;
    browser.click("#accept").await?;
    let callback = browser.wait_for_url_prefix(&world.redirect_uri).await?;
    let h1 = browser.text_of("h1").await?;
    let main = browser.text_of("main").await?;
    if h1 != "Onboarding complete" || !main.contains(tenant.as_str()) {
        bail!("after Accept the browser shows {h1:?}: {main}");
    }
    let source = browser.source().await?;
    let state = query_map(&callback)
        .get("state")
        .cloned()
        .unwrap_or_default();
    let code = query_map(&callback)
        .get("code")
        .cloned()
        .unwrap_or_default();
    world.remember_sensitive(&code);
    if state.len() < 8 || source.contains(&state) || code.len() < 8 || source.contains(&code) {
        bail!("the callback carries a state and a code and the page shows neither: {source}");
    }
    let record = world.tenant(tenant).await.context("tenant B is recorded")?;
    if record.status != TenantStatus::Active
        || record.roles != vec![ROLE_M365D.to_owned()]
        || record.ownership != Ownership::AdminSignIn
    {
        bail!("tenant B after Accept: {record:?}");
    }

    // Decline for tenant C.
    let declined = &world.tenants.browser_decline;
    browser
        .goto(&world.start_url("CRM-BROWSER-DECLINE", None))
        .await?;
    browser.select("#tenant", declined).await?;
    browser.click("#decline").await?;
    browser.wait_for_url_prefix(&world.redirect_uri).await?;
    let h1 = browser.text_of("h1").await?;
    if h1 != "Consent was not given" {
        bail!(
            "after Decline the browser shows {h1:?}: {}",
            browser.text_of("main").await?
        );
    }
    if let Some(record) = world.tenant(declined).await {
        bail!("a declined tenant was recorded: {record:?}");
    }

    // The accepted callback again (history, a bookmark, a forwarded link): refused.
    browser.goto(callback.as_str()).await?;
    let h1 = browser.text_of("h1").await?;
    if h1 != "This link was already used" {
        bail!(
            "a replayed callback shows {h1:?}: {}",
            browser.text_of("main").await?
        );
    }
    if world.tenant(tenant).await.as_ref() != Some(&record) {
        bail!("the replay changed tenant B's record");
    }
    Ok(callback)
}

/// Neither the app's client secret, the state-signing key, a consent or sign-in `state`, a
/// nonce, a PKCE challenge nor a `code` reached any log, the function running at TRACE.
async fn logs_hold_no_secret(world: Arc<World>) {
    let logs = world.stack.logs().text();
    assert!(
        logs.contains("consent callback answered"),
        "the function's log was captured"
    );
    let sensitive = world.stack.sensitive();
    assert_no_leaks(&[("function", &logs)], &sensitive);
}
