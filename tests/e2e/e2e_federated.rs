//! The secretless credential (`aws_federated`) end to end: the real functions under
//! `cargo lambda watch`, their credential secret in Secrets Manager (moto) holding only
//! `{"client_id", "credential": "aws_federated"}`, and the emulator binary playing AWS STS
//! (`GetWebIdentityToken`, reached through `AWS_ENDPOINT_URL_STS`), the AWS account's OIDC
//! issuer, Entra ID (which takes the AWS token as client assertion when the app's federated
//! credential matches it) and the Defender APIs. The app in Entra has no secret at all.
//!
//! One stack serves every case; the cases run in order, each on tenants of its own so that no
//! case sees another's cached access token. A case that needs a function with no AWS token
//! in memory (a cold start) starts its own `cargo lambda watch`. Run a subset with
//! `E2E_CASES=fleet,expiry cargo test -p defender-partner-e2e --test e2e_federated`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use defender_emulator::{
    CredentialKind, FederatedCredentialConfig, ShortLivedTokens, StsCallCounts, TenantConfig,
    browser, demo,
};
use defender_partner::defender::Source;
use defender_partner::store::{DynamoRegistry, TenantRecord, TenantRegistry, TenantStatus};
use defender_partner::tenant_id::TenantId;
use defender_partner_e2e::fetch::{FetchAws, jwt_like, scheduled_event};
use defender_partner_e2e::leaks::assert_no_leaks;
use defender_partner_e2e::moto;
use defender_partner_e2e::stack::guid;
use defender_partner_e2e::{Cases, FunctionError, LambdaWatch, Stack, events, jwt};
use defender_partner_testkit::control::is_for;
use defender_partner_testkit::scenario::{
    self, ROLE_GRAPH, ROLE_M365D, ROLE_MDE, aws_role_credential,
};
use serde_json::{Value, json};

const MINT: &str = "mint-token";
const CONSENT: &str = "consent-signin";
const FETCH: &str = "fetch-incidents";
const STATE_KEY_SECRET: &str = "defender-partner/consent-state-key";
/// The tenants of the fleet the token case mints for.
const MINT_FLEET: usize = 4;
/// The tenants of the scheduled ingestion run.
const FETCH_FLEET: usize = 6;
/// Records each tenant of the ingestion run holds.
const FETCH_INCIDENTS: u32 = 30;
const FETCH_ALERTS: u32 = 12;
/// How long the AWS token of the expiry case lives (the emulator's override).
const SHORT_AWS_TOKEN_SECONDS: i64 = 6;

/// The customer tenants, each with a part to play. All are consented in Entra (the emulator)
/// to every API except `consent`, which the case of that name onboards.
struct Tenants {
    fleet: Vec<String>,
    wrong_issuer: String,
    wrong_subject: String,
    wrong_audience: String,
    subject_case: String,
    fic_restored: String,
    sts_refused: String,
    expiry_first: String,
    expiry_second: String,
    consent: String,
    /// In a registry table of their own, so that the scheduled run sees exactly them.
    fetch: Vec<String>,
}

impl Tenants {
    fn new() -> Tenants {
        Tenants {
            fleet: (0..MINT_FLEET).map(|_| guid()).collect(),
            wrong_issuer: guid(),
            wrong_subject: guid(),
            wrong_audience: guid(),
            subject_case: guid(),
            fic_restored: guid(),
            sts_refused: guid(),
            expiry_first: guid(),
            expiry_second: guid(),
            consent: guid(),
            fetch: (0..FETCH_FLEET).map(|_| guid()).collect(),
        }
    }

    /// Registered active in the stack's registry (the one mint-token reads).
    fn minted_for(&self) -> Vec<&String> {
        let mut tenants: Vec<&String> = self.fleet.iter().collect();
        tenants.extend([
            &self.wrong_issuer,
            &self.wrong_subject,
            &self.wrong_audience,
            &self.subject_case,
            &self.fic_restored,
            &self.sts_refused,
            &self.expiry_first,
            &self.expiry_second,
        ]);
        tenants
    }

    fn scenario(&self, client_id: &str) -> Vec<TenantConfig> {
        let consented = self.minted_for().into_iter().chain(&self.fetch).map(|id| {
            scenario::tenant(
                id,
                &format!("Customer {}", &id[..8]),
                scenario::read_grants(client_id),
            )
        });
        let never_consented = scenario::tenant(
            &self.consent,
            "Woodgrove (e2e, onboarded by consent)",
            vec![],
        );
        consented.chain([never_consented]).collect()
    }
}

struct Fixture {
    stack: Stack,
    /// mint-token as deployed; the fleet and FIC cases share it (and its cached AWS token).
    mint: LambdaWatch,
    t: Tenants,
}

impl Fixture {
    async fn start() -> anyhow::Result<Fixture> {
        let t = Tenants::new();
        let stack = Stack::start_federated(|client_id| t.scenario(client_id)).await?;
        stack
            .register_active(t.minted_for(), &[ROLE_M365D, ROLE_MDE, ROLE_GRAPH])
            .await?;
        let mint = start_mint_token(&stack).await?;
        Ok(Fixture { stack, mint, t })
    }

    async fn sts_calls(&self) -> StsCallCounts {
        self.stack
            .emulator
            .sts_calls()
            .await
            .expect("GET /_emulator/aws/calls")
    }
}

/// A mint-token process of its own: a cold start, no AWS token in memory. The warm-up payload
/// is refused before any token is asked for, so it costs no STS call.
async fn start_mint_token(stack: &Stack) -> anyhow::Result<LambdaWatch> {
    stack.start_function(MINT, MINT, &[], &json!({})).await
}

/// Invokes mint-token; an access token in the answer is remembered as sensitive.
async fn mint(
    stack: &Stack,
    lambda: &LambdaWatch,
    tenant: &str,
    api: &str,
) -> Result<Value, FunctionError> {
    let answer = lambda
        .invoke(&json!({ "tenant": tenant, "api": api }))
        .await;
    if let Ok(value) = &answer {
        stack.remember_answer(value);
    }
    answer
}

/// The answer is a token for `tenant` and `api`; returns the access token.
#[track_caller]
fn expect_token(answer: Result<Value, FunctionError>, tenant: &str, api: &str) -> String {
    let answer = answer.unwrap_or_else(|error| {
        panic!("expected a token for {tenant}/{api}, got the function error {error}")
    });
    assert_eq!(answer["tenant_id"], tenant, "{answer}");
    assert_eq!(answer["api"], api, "{answer}");
    let token = answer["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("no access_token in the answer for {tenant}/{api}"))
        .to_owned();
    let claims = jwt::claims(&token).expect("the access token is a JWT");
    assert_eq!(claims["tid"], tenant, "{claims}");
    token
}

/// The answer is the function error `code`; returns its message.
#[track_caller]
fn expect_error(answer: Result<Value, FunctionError>, code: &str) -> String {
    match answer {
        Ok(value) => panic!("expected the function error {code}, got a success: {value}"),
        Err(error) => {
            assert_eq!(error.error_type, code, "expected {code}, got {error}");
            error.error_message
        }
    }
}

/// Every token request the emulator saw for `tenant` authenticated the app with an assertion
/// (the AWS token), never a secret; returns how many there were.
async fn assertions_only(stack: &Stack, tenant: &str) -> usize {
    let requests = stack
        .emulator
        .token_requests_for(tenant)
        .await
        .expect("GET /_emulator/requests");
    for request in &requests {
        assert_eq!(
            request.credential,
            Some(CredentialKind::Assertion),
            "{tenant}: a token request without the federated assertion: {request:?}"
        );
        assert_eq!(
            request.client_id.as_deref(),
            Some(stack.client_id.as_str()),
            "{request:?}"
        );
    }
    requests.len()
}

/// An API Gateway HTTP API (2.0) `GET` event for `path?query`, as the function URL delivers it.
fn http_get(path: &str, query: &str) -> Value {
    let mut event = events::load("mint-token-http.json").expect("the sample HTTP event");
    let parameters: BTreeMap<String, String> = url::form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    event["routeKey"] = json!(format!("GET {path}"));
    event["rawPath"] = json!(path);
    event["rawQueryString"] = json!(query);
    event["queryStringParameters"] = json!(parameters);
    event["requestContext"]["routeKey"] = json!(format!("GET {path}"));
    event["requestContext"]["http"]["method"] = json!("GET");
    event["requestContext"]["http"]["path"] = json!(path);
    event["body"] = Value::Null;
    event
}

/// The value of an HTTP answer's header (any case).
fn header<'a>(response: &'a Value, name: &str) -> &'a str {
    response["headers"]
        .as_object()
        .and_then(|headers| {
            headers
                .iter()
                .find(|(key, _)| key.eq_ignore_ascii_case(name))
                .and_then(|(_, value)| value.as_str())
        })
        .unwrap_or("")
}

/// The sources of the fleet run.
const FLEET_SOURCES: &str = "m365d-incidents,graph-incidents,mde-alerts";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn federated_credential_end_to_end() {
    let started = Instant::now();
    let fixture = Arc::new(Fixture::start().await.expect("the stack starts"));
    eprintln!(
        "[e2e] secretless stack started in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let mut cases = Cases::from_env();

    // --- tokens for a fleet of tenants from one AWS token -------------------------------------

    let f = fixture.clone();
    cases
        .run("fleet_mint_costs_one_sts_call", async move {
            let before = f.sts_calls().await;
            let base = f.stack.emulator.base_url().to_owned();
            let http = reqwest::Client::new();
            let mut minted = 0;
            for tenant in &f.t.fleet {
                for (api, path) in [
                    ("m365d", "api/incidents?$top=5"),
                    ("mde", "api/alerts?$top=5"),
                    ("graph", "v1.0/security/incidents?$top=5"),
                ] {
                    let token = expect_token(mint(&f.stack, &f.mint, tenant, api).await, tenant, api);
                    minted += 1;
                    // The token is the real thing: the Defender API answers with it.
                    let response = http
                        .get(format!("{base}/{path}"))
                        .bearer_auth(&token)
                        .send()
                        .await
                        .expect("calling the Defender API");
                    let status = response.status();
                    let body: Value = response.json().await.unwrap_or(Value::Null);
                    assert_eq!(status.as_u16(), 200, "{tenant}/{api} {path}: {body}");
                    assert!(body["value"].is_array(), "{tenant}/{api} {path}: {body}");
                }
                assert_eq!(assertions_only(&f.stack, tenant).await, 3, "{tenant}");
            }
            let after = f.sts_calls().await;
            let calls = after.get_web_identity_token - before.get_web_identity_token;
            eprintln!(
                "[e2e] {minted} tokens for {MINT_FLEET} tenants: {calls} STS GetWebIdentityToken call(s)"
            );
            assert_eq!(calls, 1, "one AWS token serves the whole fleet");
            assert_eq!(after.tokens_issued - before.tokens_issued, 1);
        })
        .await;

    // --- each federated-credential mismatch, typed -------------------------------------------

    let f = fixture.clone();
    cases
        .run("fic_mismatches_are_typed", async move {
            let emulator = &f.stack.emulator;
            let issuer = emulator.aws_issuer();
            let fic = |issuer: &str, subject: &str, audience: &str| FederatedCredentialConfig {
                issuer: issuer.to_owned(),
                subject: subject.to_owned(),
                audiences: vec![audience.to_owned()],
            };
            let role = demo::AWS_ROLE_ARN;
            let audience = demo::FIC_AUDIENCE;
            let case_only = role.replace("defender-partner", "Defender-Partner");
            // (name, the app's credential, fresh tenant, code, what the message must quote)
            let mismatches = [
                (
                    "wrong issuer",
                    fic(
                        "https://other-account.example/aws-issuer/210987654321",
                        role,
                        audience,
                    ),
                    &f.t.wrong_issuer,
                    "federated_issuer_mismatch",
                    vec![issuer.as_str(), "issuer"],
                ),
                (
                    "wrong subject",
                    fic(
                        &issuer,
                        "arn:aws:iam::123456789012:role/someone-else",
                        audience,
                    ),
                    &f.t.wrong_subject,
                    "federated_subject_mismatch",
                    vec![role, "subject"],
                ),
                (
                    "wrong audience",
                    fic(&issuer, role, "api://SomethingElse"),
                    &f.t.wrong_audience,
                    "federated_audience_mismatch",
                    vec![audience, "DP_FEDERATION_AUDIENCE"],
                ),
                (
                    "subject differs in case only",
                    fic(&issuer, &case_only, audience),
                    &f.t.subject_case,
                    "federated_subject_case_mismatch",
                    vec![role, "case"],
                ),
            ];
            let before = f.sts_calls().await;
            // Every refusal is collected first, so that the matching credential is restored
            // even when one is wrong (the later cases need it).
            let mut problems = Vec::new();
            for (name, credential, tenant, code, quoted) in &mismatches {
                emulator
                    .set_federated_credentials(&f.stack.client_id, std::slice::from_ref(credential))
                    .await
                    .expect("PUT federated-credentials");
                match mint(&f.stack, &f.mint, tenant, "m365d").await {
                    Ok(_) => problems.push(format!("{name}: a token was minted")),
                    Err(error) if error.error_type != *code => {
                        problems.push(format!("{name}: expected {code}, got {error}"));
                    }
                    Err(error) => {
                        eprintln!("[e2e] {name}: {code}: {}", error.error_message);
                        for expected in quoted {
                            if !error.error_message.contains(expected) {
                                problems.push(format!(
                                    "{name}: the message does not quote {expected:?}: {}",
                                    error.error_message
                                ));
                            }
                        }
                    }
                }
            }
            emulator
                .set_federated_credentials(&f.stack.client_id, &[aws_role_credential()])
                .await
                .expect("restoring the matching federated credential");
            assert!(problems.is_empty(), "{problems:#?}");

            // Fixed in Entra, minting works again without any change to the function.
            let tenant = &f.t.fic_restored;
            expect_token(
                mint(&f.stack, &f.mint, tenant, "m365d").await,
                tenant,
                "m365d",
            );
            let calls = f.sts_calls().await.get_web_identity_token - before.get_web_identity_token;
            assert!(
                calls <= 1,
                "a refused assertion is not fetched again from STS: {calls} calls for 5 mints"
            );
        })
        .await;

    // --- STS refusing the function's role ----------------------------------------------------

    let f = fixture.clone();
    cases
        .run("sts_refusals_are_typed", async move {
            let cold = start_mint_token(&f.stack).await.expect("a cold mint-token");
            let emulator = &f.stack.emulator;
            let tenant = &f.t.sts_refused;
            emulator
                .set_aws_switches(Some(false), None)
                .await
                .expect("disabling federation");
            let disabled = mint(&f.stack, &cold, tenant, "m365d").await;
            emulator
                .set_aws_switches(Some(true), Some(true))
                .await
                .expect("denying the role");
            let denied = mint(&f.stack, &cold, tenant, "m365d").await;
            emulator
                .set_aws_switches(None, Some(false))
                .await
                .expect("allowing the role again");

            let message = expect_error(disabled, "federation_disabled");
            assert!(
                message.contains("aws iam enable-outbound-web-identity-federation"),
                "{message}"
            );
            let message = expect_error(denied, "federation_denied");
            // The role STS named, and the request's audience and duration: what to fix.
            for expected in [
                demo::AWS_ROLE_ARN,
                "sts:GetWebIdentityToken",
                demo::FIC_AUDIENCE,
                "300 s",
            ] {
                assert!(
                    message.contains(expected),
                    "{expected:?} missing: {message}"
                );
            }
            // Refusals are not remembered: once AWS allows it, the same process mints.
            expect_token(
                mint(&f.stack, &cold, tenant, "m365d").await,
                tenant,
                "m365d",
            );
        })
        .await;

    // --- the AWS token expiring between two tenants ------------------------------------------

    let f = fixture.clone();
    cases
        .run("aws_token_expiry_fetches_a_new_one", async move {
            let cold = start_mint_token(&f.stack).await.expect("a cold mint-token");
            let emulator = &f.stack.emulator;
            emulator
                .shorten_next_sts_tokens(&ShortLivedTokens {
                    count: 1,
                    lifetime_seconds: SHORT_AWS_TOKEN_SECONDS,
                })
                .await
                .expect("shortening the next AWS token");
            let before = f.sts_calls().await;
            let first = &f.t.expiry_first;
            expect_token(mint(&f.stack, &cold, first, "m365d").await, first, "m365d");
            let issued_by = Instant::now();
            let after_first = f.sts_calls().await;
            assert_eq!(
                after_first.tokens_issued - before.tokens_issued,
                1,
                "the first mint fetched the short-lived AWS token"
            );
            // Waiting for a token to expire is the point here, not a timing assertion.
            let expired_at = Duration::from_secs(SHORT_AWS_TOKEN_SECONDS as u64 + 1);
            tokio::time::sleep(expired_at.saturating_sub(issued_by.elapsed())).await;

            // A tenant with no cached access token: the expired AWS token is replaced.
            let second = &f.t.expiry_second;
            expect_token(
                mint(&f.stack, &cold, second, "m365d").await,
                second,
                "m365d",
            );
            let after_second = f.sts_calls().await;
            assert_eq!(
                after_second.tokens_issued - before.tokens_issued,
                2,
                "the second tenant's token needed a second AWS token"
            );
            // The first tenant's access token is still cached: no STS call for it.
            expect_token(mint(&f.stack, &cold, first, "m365d").await, first, "m365d");
            assert_eq!(f.sts_calls().await, after_second);
            let refused: Vec<_> = emulator
                .token_requests()
                .await
                .unwrap()
                .into_iter()
                .filter(|request| is_for(request, first) || is_for(request, second))
                .filter(|request| request.status != 200)
                .collect();
            assert!(
                refused.is_empty(),
                "Entra never received an expired AWS token: {refused:?}"
            );
        })
        .await;

    // --- onboarding by admin consent, proven without a secret ------------------------------

    let f = fixture.clone();
    cases
        .run("consent_is_proven_without_a_secret", async move {
            let state_key = format!(
                "{}{}",
                uuid::Uuid::new_v4().simple(),
                uuid::Uuid::new_v4().simple()
            );
            f.stack.remember_sensitive(&state_key);
            moto::create_secret(&f.stack.secretsmanager, STATE_KEY_SECRET, &state_key)
                .await
                .expect("creating the state key secret");
            let consent = f
                .stack
                .start_function(
                    CONSENT,
                    CONSENT,
                    &[
                        ("DP_STATE_KEY_SECRET_ID", STATE_KEY_SECRET),
                        ("DP_CONSENT_REDIRECT_URI", demo::CONSENT_REDIRECT_URI),
                        ("DP_CONSENT_APIS", "m365d"),
                        ("DP_CONSENT_PROOF_SECONDS", "6"),
                    ],
                    // A callback without a query: answered 400 before any token is asked for.
                    &http_get("/consent/callback", ""),
                )
                .await
                .expect("consent-signin starts");
            let before = f.sts_calls().await;
            let customer_ref = "CRM-SECRETLESS";
            let start = consent
                .invoke(&http_get(
                    "/consent/start",
                    &format!("customer={customer_ref}"),
                ))
                .await
                .expect("/consent/start answers");
            assert_eq!(start["statusCode"], 302, "{start}");
            let link = header(&start, "location").to_owned();
            let callback = browser::consent(&link, &f.t.consent, "accept")
                .await
                .expect("the administrator accepts");
            let next = consent
                .invoke(&http_get(
                    "/consent/callback",
                    &browser::query_of(&callback).unwrap(),
                ))
                .await
                .expect("/consent/callback answers");
            assert_eq!(next["statusCode"], 302, "{next}");
            let signed_in = browser::sign_in(
                header(&next, "location"),
                &scenario::admin_upn(&f.t.consent),
            )
            .await
            .expect("the administrator signs in");
            let page = consent
                .invoke(&http_get(
                    "/consent/callback",
                    &browser::query_of(&signed_in).unwrap(),
                ))
                .await
                .expect("/consent/callback answers");
            let body = page["body"].as_str().unwrap_or_default();
            assert_eq!(page["statusCode"], 200, "{body}");
            assert!(body.contains("Onboarding complete"), "{body}");

            let registry = DynamoRegistry::new(f.stack.dynamodb.clone(), f.stack.table.clone());
            let record = registry
                .get(&TenantId::parse(&f.t.consent).unwrap())
                .await
                .expect("reading the registry")
                .expect("the tenant is recorded");
            assert_eq!(record.status, TenantStatus::Active, "{record:?}");
            assert_eq!(record.customer_ref.as_deref(), Some(customer_ref));
            assert!(
                record.roles.iter().any(|role| role == ROLE_M365D),
                "{record:?}"
            );
            // The proof was a token minted with the AWS token as the app's credential.
            assert!(assertions_only(&f.stack, &f.t.consent).await >= 1);
            let calls = f.sts_calls().await.get_web_identity_token - before.get_web_identity_token;
            assert_eq!(calls, 1, "the cold consent-signin fetched one AWS token");
        })
        .await;

    // --- a scheduled ingestion run over a fleet ----------------------------------------------

    let f = fixture.clone();
    cases
        .run("fleet_fetch_costs_one_sts_call", async move {
            let stack = &f.stack;
            let aws = FetchAws::create(&stack.moto).await.expect("the ingestion resources");
            // A registry of the fleet alone: the run covers exactly these tenants.
            let table = format!("defender-partner-e2e-fleet-{}", &guid()[..8]);
            moto::create_registry_table(&stack.dynamodb, &table).await.unwrap();
            let registry = DynamoRegistry::new(stack.dynamodb.clone(), table.clone());
            let base = stack.emulator.base_url().to_owned();
            for (index, tenant) in f.t.fetch.iter().enumerate() {
                let mut record = TenantRecord::new(
                    TenantId::parse(tenant).unwrap(),
                    format!("Fleet {index}"),
                    TenantStatus::Active,
                );
                record.roles = [ROLE_M365D, ROLE_MDE, ROLE_GRAPH].map(str::to_owned).to_vec();
                registry.upsert(&record).await.unwrap();
                let data = scenario::data(FETCH_INCIDENTS, FETCH_ALERTS, index as u64 + 1, 60);
                stack
                    .emulator
                    .set_data(tenant, &data)
                    .await
                    .expect("setting a tenant's data");
            }
            let mut env: Vec<(String, String)> = aws.function_env();
            env.extend(
                [
                    ("DP_TABLE_NAME", table.as_str()),
                    ("DP_SOURCES", FLEET_SOURCES),
                    ("DP_FETCH_LOOKBACK_HOURS", "48"),
                    ("DP_API_BASE_M365D", base.as_str()),
                    ("DP_API_BASE_MDE", base.as_str()),
                    ("DP_API_BASE_GRAPH", base.as_str()),
                ]
                .map(|(key, value)| (key.to_owned(), value.to_owned())),
            );
            let refs: Vec<(&str, &str)> =
                env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let fetch = stack
                .start_function(FETCH, FETCH, &refs, &json!({ "warm_up": true }))
                .await
                .expect("fetch-incidents starts");

            let before = f.sts_calls().await;
            let run_started = Instant::now();
            let report = fetch
                .invoke(&scheduled_event())
                .await
                .unwrap_or_else(|error| panic!("the scheduled run failed: {error}"));
            let calls = f.sts_calls().await.get_web_identity_token - before.get_web_identity_token;
            let pairs = FETCH_FLEET * FLEET_SOURCES.split(',').count();
            eprintln!(
                "[e2e] scheduled run over {FETCH_FLEET} tenants ({pairs} pairs) in {:.1}s: {calls} STS GetWebIdentityToken call(s)",
                run_started.elapsed().as_secs_f64()
            );
            assert_eq!(report["tenants"], FETCH_FLEET, "{report}");
            assert_eq!(report["pairs"], pairs, "{report}");
            let outcomes = report["outcomes"].as_array().cloned().unwrap_or_default();
            assert_eq!(outcomes.len(), pairs, "{report}");
            for outcome in &outcomes {
                assert_eq!(outcome["result"], "complete", "{outcome}");
            }
            assert_eq!(calls, 1, "one AWS token serves the whole run");

            let lines = aws.sink_lines().await.expect("the bucket reads back");
            for tenant in &f.t.fetch {
                let count = |source: Source| {
                    lines
                        .iter()
                        .filter(|line| line.tenant_id.as_str() == tenant && line.source == source)
                        .count()
                };
                assert_eq!(count(Source::M365dIncidents), FETCH_INCIDENTS as usize, "{tenant}");
                assert_eq!(count(Source::MdeAlerts), FETCH_ALERTS as usize, "{tenant}");
                assert!(count(Source::GraphIncidents) > 0, "{tenant}: no Graph incidents");
                assert_eq!(
                    assertions_only(stack, tenant).await,
                    FLEET_SOURCES.split(',').count(),
                    "{tenant}: one token per API"
                );
            }
        })
        .await;

    // --- nothing secret in any log ------------------------------------------------------------

    let f = fixture.clone();
    cases
        .run("no_aws_token_access_token_or_secret_in_logs", async move {
            let logs = f.stack.logs().text();
            assert!(
                logs.contains("DEBUG"),
                "the functions ran at RUST_LOG=debug, so a leak in a debug log would show"
            );
            // Two AWS tokens of the test's own: their common prefix (header and the first
            // claims) is shared by every token the emulated account signs, the functions' ones
            // included, which the test never sees.
            let one = f.stack.emulator.web_identity_token().await.unwrap();
            let two = f.stack.emulator.web_identity_token().await.unwrap();
            f.stack.remember_token(&one);
            f.stack.remember_token(&two);
            let header = one.split('.').next().unwrap().to_owned();
            let payload_one = one.split('.').nth(1).unwrap();
            let payload_two = two.split('.').nth(1).unwrap();
            let common: String = payload_one
                .chars()
                .zip(payload_two.chars())
                .take_while(|(a, b)| a == b)
                .map(|(a, _)| a)
                .collect();
            assert!(
                common.len() >= 16,
                "too short a shared payload prefix: {common:?}"
            );
            assert!(
                !logs.contains(&header),
                "an AWS token's header is in the logs"
            );
            assert!(
                !logs.contains(&common),
                "an AWS token's payload is in the logs"
            );
            let shapes = jwt_like(&logs);
            assert!(
                shapes.is_empty(),
                "{} JWT-shaped strings in the logs, the first at: {:?}",
                shapes.len(),
                &logs[shapes[0]..(shapes[0] + 40).min(logs.len())]
            );
            let sensitive = f.stack.sensitive();
            assert!(
                sensitive.len() > 10,
                "too few tokens were seen for this check to mean anything"
            );
            assert_no_leaks(&[("function", &logs)], &sensitive);
        })
        .await;

    drop(fixture);
    cases.finish();
    eprintln!(
        "[e2e] e2e_federated took {:.1}s",
        started.elapsed().as_secs_f64()
    );
}
