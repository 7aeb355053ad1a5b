//! `mint-token` end to end: the real function under `cargo lambda watch`, its credential in
//! Secrets Manager and its tenant registry in DynamoDB (both moto), tokens from the Entra
//! emulator.
//!
//! One stack serves every case (starting it takes seconds); the cases run in order, each on
//! tenants of its own so that no case sees another's cached token. Run a subset with
//! `E2E_CASES=storm,http cargo test -p defender-partner-e2e --test e2e_mint_token`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use defender_emulator::{Endpoint, Fault, FaultMatch, SecretConfig, TenantConfig};
use defender_partner::store::{TenantStatus, update_caller_scope};
use defender_partner::tenant_id::TenantId;
use defender_partner_e2e::leaks::assert_no_leaks;
use defender_partner_e2e::stack::guid;
use defender_partner_e2e::{Cases, FunctionError, LambdaWatch, Stack, events, jwt};
use defender_partner_testkit::scenario::{
    self, RESOURCE_GRAPH, RESOURCE_M365D, RESOURCE_MDE, ROLE_GRAPH, ROLE_M365D, ROLE_MDE,
};
use serde_json::{Value, json};

const PACKAGE: &str = "mint-token";
const BIN: &str = "mint-token";

/// The customer tenants of the scenario, one or more per case.
struct Tenants {
    /// Active and consented to all three APIs.
    main: String,
    /// Active and consented; minted for by its verified domain.
    by_domain: String,
    domain: String,
    v1: String,
    pending: String,
    revoked: String,
    /// Consented in Entra, absent from the registry.
    unregistered: String,
    /// Active in the registry; the app has no grant in the tenant.
    not_consented: String,
    /// Active in the registry; Entra has never heard of it.
    unknown_to_entra: String,
    /// Active; consented without any application permission.
    no_roles: String,
    cache: String,
    rotate: String,
    wrong_secret: String,
    expired_secret: String,
    storm: String,
    long_storm: String,
    http: String,
    /// Caller scoping: minted for by a role mapped to the tenant itself.
    scoped_by_tenant: String,
    /// … by a role mapped to the tenant's customer reference.
    scoped_by_customer: String,
    /// … by no mapped role, until direct invocations are mapped to it.
    scoped_other: String,
}

impl Tenants {
    fn new() -> Tenants {
        Tenants {
            main: guid(),
            by_domain: guid(),
            domain: format!("contoso{}.onmicrosoft.com", &guid()[..8]),
            v1: guid(),
            pending: guid(),
            revoked: guid(),
            unregistered: guid(),
            not_consented: guid(),
            unknown_to_entra: guid(),
            no_roles: guid(),
            cache: guid(),
            rotate: guid(),
            wrong_secret: guid(),
            expired_secret: guid(),
            storm: guid(),
            long_storm: guid(),
            http: guid(),
            scoped_by_tenant: guid(),
            scoped_by_customer: guid(),
            scoped_other: guid(),
        }
    }

    /// Tenants that Entra (the emulator) knows, with the app consented to every API.
    fn consented(&self) -> Vec<&String> {
        vec![
            &self.main,
            &self.by_domain,
            &self.v1,
            &self.pending,
            &self.revoked,
            &self.unregistered,
            &self.cache,
            &self.rotate,
            &self.wrong_secret,
            &self.expired_secret,
            &self.storm,
            &self.long_storm,
            &self.http,
            &self.scoped_by_tenant,
            &self.scoped_by_customer,
            &self.scoped_other,
        ]
    }

    /// Tenants registered as active.
    fn active(&self) -> Vec<&String> {
        let mut active: Vec<&String> = self
            .consented()
            .into_iter()
            .filter(|id| ![&self.pending, &self.revoked, &self.unregistered].contains(id))
            .collect();
        active.extend([&self.not_consented, &self.unknown_to_entra, &self.no_roles]);
        active
    }

    fn scenario(&self, client_id: &str) -> Vec<TenantConfig> {
        let mut tenants: Vec<TenantConfig> = self
            .consented()
            .into_iter()
            .map(|id| {
                let mut tenant = scenario::tenant(
                    id,
                    &format!("Customer {}", &id[..8]),
                    scenario::read_grants(client_id),
                );
                if *id == self.by_domain {
                    tenant.domains.push(self.domain.clone());
                }
                tenant
            })
            .collect();
        tenants.push(scenario::tenant(
            &self.not_consented,
            "Not consented",
            vec![],
        ));
        tenants.push(scenario::tenant(
            &self.no_roles,
            "Consented without roles",
            [RESOURCE_M365D, RESOURCE_MDE, RESOURCE_GRAPH]
                .into_iter()
                .map(|resource| scenario::grant(client_id, resource, &[]))
                .collect(),
        ));
        tenants
    }
}

struct Fixture {
    stack: Stack,
    lambda: LambdaWatch,
    t: Tenants,
}

impl Fixture {
    async fn start() -> anyhow::Result<Fixture> {
        let t = Tenants::new();
        // The grants name the app's client id, which the stack makes.
        let stack = Stack::start_with(|client_id| t.scenario(client_id)).await?;
        stack
            .register_active(t.active(), &[ROLE_M365D, ROLE_MDE, ROLE_GRAPH])
            .await?;
        stack
            .register(&t.pending, TenantStatus::Pending, &[])
            .await?;
        stack
            .register(&t.revoked, TenantStatus::Revoked, &[ROLE_M365D])
            .await?;
        let lambda = stack.start_function(PACKAGE, BIN, &[], &json!({})).await?;
        Ok(Fixture { stack, lambda, t })
    }

    async fn mint(&self, tenant: &str, api: &str) -> Result<Value, FunctionError> {
        self.invoke(json!({ "tenant": tenant, "api": api })).await
    }

    /// Invokes the function directly; every access token returned is remembered as sensitive.
    async fn invoke(&self, payload: Value) -> Result<Value, FunctionError> {
        let answer = self.lambda.invoke(&payload).await;
        if let Ok(value) = &answer {
            self.stack.remember_answer(value);
        }
        answer
    }

    /// Invokes the HTTP route (`POST /tokens`) with `body`; returns (statusCode, JSON body).
    async fn post_tokens(&self, event: Value) -> (u16, Value) {
        let response = self
            .lambda
            .invoke(&event)
            .await
            .unwrap_or_else(|error| panic!("the HTTP route must answer, not fail: {error}"));
        let status = response["statusCode"]
            .as_u64()
            .unwrap_or_else(|| panic!("no statusCode in {response}")) as u16;
        let body_text = response["body"].as_str().unwrap_or_default();
        let body: Value = serde_json::from_str(body_text)
            .unwrap_or_else(|_| panic!("the HTTP body is not JSON: {body_text:?}"));
        self.stack.remember_answer(&body);
        (status, body)
    }
}

/// The answer must be a function error with `code`.
#[track_caller]
fn expect_error(answer: Result<Value, FunctionError>, code: &str) -> FunctionError {
    match answer {
        Ok(value) => panic!("expected the function error {code}, got a success: {value}"),
        Err(error) => {
            assert_eq!(
                error.error_type, code,
                "expected the function error {code}, got {error}"
            );
            assert!(
                !error.error_message.trim().is_empty(),
                "the {code} error has no message"
            );
            error
        }
    }
}

/// A successful answer for `tenant_id` and `api`, whose token carries the tenant and `role`.
#[track_caller]
fn expect_token(
    answer: Result<Value, FunctionError>,
    tenant_id: &str,
    api: &str,
    resource: &str,
    role: &str,
) -> Value {
    let answer = answer.unwrap_or_else(|error| {
        panic!("expected a token for {tenant_id}/{api}, got the function error {error}")
    });
    assert_eq!(answer["token_type"], "Bearer", "{answer}");
    assert_eq!(answer["tenant_id"], tenant_id, "{answer}");
    assert_eq!(answer["api"], api, "{answer}");
    assert_eq!(answer["resource"], resource, "{answer}");
    let roles: Vec<&str> = answer["roles"]
        .as_array()
        .unwrap_or_else(|| panic!("no roles array in the answer"))
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(roles.contains(&role), "roles {roles:?} lack {role}");

    let expires_in = answer["expires_in"]
        .as_i64()
        .unwrap_or_else(|| panic!("expires_in is not an integer"));
    assert!(
        (60..=3600).contains(&expires_in),
        "expires_in {expires_in} is not within the token lifetime"
    );
    let expires_on: DateTime<Utc> = answer["expires_on"]
        .as_str()
        .and_then(|text| DateTime::parse_from_rfc3339(text).ok())
        .map(|time| time.with_timezone(&Utc))
        .unwrap_or_else(|| panic!("expires_on is not RFC 3339"));
    let drift = (expires_on - (Utc::now() + chrono::Duration::seconds(expires_in)))
        .num_seconds()
        .abs();
    assert!(
        drift <= 120,
        "expires_on and expires_in disagree by {drift}s"
    );

    let token = answer["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("no access_token in the answer"));
    let claims = jwt::claims(token).expect("the access token is a JWT");
    assert_eq!(claims["tid"], tenant_id, "tid of the token");
    let token_roles = jwt::roles(&claims);
    assert!(
        token_roles.iter().any(|granted| granted == role),
        "the token's roles {token_roles:?} lack {role}"
    );
    answer
}

/// No token request for `tenant` reached Entra.
async fn expect_no_token_request(fixture: &Fixture, tenant: &str) {
    let requests = fixture
        .stack
        .emulator
        .token_requests_for(tenant)
        .await
        .unwrap();
    assert!(
        requests.is_empty(),
        "a refused request must not reach Entra; it saw {requests:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mint_token_end_to_end() {
    let started = Instant::now();
    let fixture = Arc::new(Fixture::start().await.expect("the stack starts"));
    eprintln!(
        "[e2e] stack started in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let mut cases = Cases::from_env();

    // --- tokens ---------------------------------------------------------------------------

    for (api, resource, role) in [
        ("m365d", RESOURCE_M365D, ROLE_M365D),
        ("mde", RESOURCE_MDE, ROLE_MDE),
        ("graph", RESOURCE_GRAPH, ROLE_GRAPH),
    ] {
        let f = fixture.clone();
        cases
            .run(&format!("{api}_token_for_an_active_tenant"), async move {
                let tenant = &f.t.main;
                expect_token(f.mint(tenant, api).await, tenant, api, resource, role);
                let requests = f.stack.emulator.token_requests_for(tenant).await.unwrap();
                let request = requests
                    .iter()
                    .find(|request| request.resource.as_deref() == Some(resource))
                    .unwrap_or_else(|| panic!("Entra saw no request for {resource}: {requests:?}"));
                assert_eq!(request.endpoint, Endpoint::V2, "the default endpoint is v2");
                assert_eq!(request.status, 200);
                assert_eq!(
                    request.client_id.as_deref(),
                    Some(f.stack.client_id.as_str())
                );
            })
            .await;
    }

    let f = fixture.clone();
    cases
        .run("token_by_verified_domain", async move {
            let answer = expect_token(
                f.mint(&f.t.domain, "m365d").await,
                &f.t.by_domain,
                "m365d",
                RESOURCE_M365D,
                ROLE_M365D,
            );
            assert_eq!(answer["tenant_id"], f.t.by_domain.as_str());
        })
        .await;

    let f = fixture.clone();
    cases
        .run("token_from_the_v1_endpoint", async move {
            let answer = f
                .invoke(json!({ "tenant": f.t.v1, "api": "mde", "endpoint_version": "v1" }))
                .await;
            expect_token(answer, &f.t.v1, "mde", RESOURCE_MDE, ROLE_MDE);
            let requests = f.stack.emulator.token_requests_for(&f.t.v1).await.unwrap();
            assert!(
                requests
                    .iter()
                    .any(|request| request.endpoint == Endpoint::V1),
                "Entra saw no v1 request: {requests:?}"
            );
        })
        .await;

    let f = fixture.clone();
    cases
        .run(
            "same_tenant_and_api_twice_is_one_token_request",
            async move {
                let first = expect_token(
                    f.mint(&f.t.cache, "graph").await,
                    &f.t.cache,
                    "graph",
                    RESOURCE_GRAPH,
                    ROLE_GRAPH,
                );
                let second = expect_token(
                    f.mint(&f.t.cache, "graph").await,
                    &f.t.cache,
                    "graph",
                    RESOURCE_GRAPH,
                    ROLE_GRAPH,
                );
                assert_eq!(
                    first["access_token"], second["access_token"],
                    "the second mint must come from the cache"
                );
                let requests = f
                    .stack
                    .emulator
                    .token_requests_for(&f.t.cache)
                    .await
                    .unwrap();
                assert_eq!(requests.len(), 1, "Entra saw {requests:?}");
            },
        )
        .await;

    // --- refusals of the request ----------------------------------------------------------

    let f = fixture.clone();
    cases
        .run("malformed_tenant_id_is_refused", async move {
            for tenant in ["not a tenant!", "common", "../../etc/passwd", "1234-5678"] {
                expect_error(f.mint(tenant, "m365d").await, "invalid_tenant_id");
            }
            let requests = f.stack.emulator.token_requests().await.unwrap();
            assert!(
                requests.iter().all(|request| request.tenant != "common"),
                "a malformed tenant reached Entra: {requests:?}"
            );
        })
        .await;

    let f = fixture.clone();
    cases
        .run("unknown_api_is_refused", async move {
            expect_error(f.mint(&f.t.main, "sentinel").await, "unknown_api");
        })
        .await;

    let f = fixture.clone();
    cases
        .run("bad_fields_are_invalid_request", async move {
            for payload in [
                json!({ "api": "m365d" }),
                json!({ "tenant": 42, "api": "m365d" }),
                json!({ "tenant": f.t.main, "api": "m365d", "endpoint_version": "v9" }),
                json!([]),
            ] {
                let answer = f.invoke(payload.clone()).await;
                match &answer {
                    Err(error) => assert!(
                        error.error_type == "invalid_request",
                        "{payload} gave {error}, expected invalid_request"
                    ),
                    Ok(value) => panic!("{payload} was accepted: {value}"),
                }
            }
        })
        .await;

    let f = fixture.clone();
    cases
        .run("tenant_not_in_registry_is_refused", async move {
            expect_error(
                f.mint(&f.t.unregistered, "m365d").await,
                "tenant_not_registered",
            );
            expect_no_token_request(&f, &f.t.unregistered).await;
        })
        .await;

    let f = fixture.clone();
    cases
        .run("pending_tenant_is_refused", async move {
            expect_error(f.mint(&f.t.pending, "m365d").await, "tenant_not_active");
            expect_no_token_request(&f, &f.t.pending).await;
        })
        .await;

    let f = fixture.clone();
    cases
        .run("revoked_tenant_is_refused", async move {
            expect_error(f.mint(&f.t.revoked, "mde").await, "tenant_not_active");
            expect_no_token_request(&f, &f.t.revoked).await;
        })
        .await;

    // --- refusals by Entra ----------------------------------------------------------------

    let f = fixture.clone();
    cases
        .run("tenant_without_consent_is_not_consented", async move {
            expect_error(f.mint(&f.t.not_consented, "m365d").await, "not_consented");
        })
        .await;

    let f = fixture.clone();
    cases
        .run("tenant_unknown_to_entra_is_tenant_unknown", async move {
            expect_error(
                f.mint(&f.t.unknown_to_entra, "graph").await,
                "tenant_unknown",
            );
        })
        .await;

    let f = fixture.clone();
    cases
        .run("consent_without_roles_is_roles_missing", async move {
            expect_error(f.mint(&f.t.no_roles, "m365d").await, "roles_missing");
        })
        .await;

    // --- the app credential ---------------------------------------------------------------

    let f = fixture.clone();
    cases
        .run("rotated_secret_is_used_without_a_restart", async move {
            let stack = &f.stack;
            let new_secret = stack.new_secret();
            // Rotation as an operator does it: a new secret in Entra (the old one removed),
            // then the new value in Secrets Manager.
            stack
                .emulator
                .set_app_secrets(
                    &stack.client_id,
                    &[SecretConfig {
                        value: new_secret.clone(),
                        expires: Some(Utc::now() + chrono::Duration::days(365)),
                    }],
                )
                .await
                .unwrap();
            stack.put_secret(&new_secret).await.unwrap();
            stack.set_current_secret(&new_secret);
            expect_token(
                f.mint(&f.t.rotate, "m365d").await,
                &f.t.rotate,
                "m365d",
                RESOURCE_M365D,
                ROLE_M365D,
            );
            // Either the cached old secret was refused once (7000215) and the new one read,
            // or the new one was read straight away: never anything else.
            let requests = stack
                .emulator
                .token_requests_for(&f.t.rotate)
                .await
                .unwrap();
            let (last, earlier) = requests.split_last().expect("Entra saw the mint");
            assert_eq!(last.status, 200, "Entra saw {requests:?}");
            assert!(
                earlier
                    .iter()
                    .all(|request| request.error_code == Some(7_000_215)),
                "Entra saw {requests:?}"
            );
        })
        .await;

    let f = fixture.clone();
    cases
        .run(
            "secret_unknown_to_entra_is_credential_invalid",
            async move {
                let stack = &f.stack;
                let current = stack.current_secret();
                // Entra now holds a secret that Secrets Manager does not.
                let entra_only = stack.new_secret();
                stack
                    .emulator
                    .set_app_secrets(
                        &stack.client_id,
                        &[SecretConfig {
                            value: entra_only,
                            expires: None,
                        }],
                    )
                    .await
                    .unwrap();
                let answer = f.mint(&f.t.wrong_secret, "mde").await;
                // Restore before asserting, so that later cases keep a working credential.
                stack
                    .emulator
                    .set_app_secrets(
                        &stack.client_id,
                        &[SecretConfig {
                            value: current,
                            expires: None,
                        }],
                    )
                    .await
                    .unwrap();
                expect_error(answer, "credential_invalid");
            },
        )
        .await;

    let f = fixture.clone();
    cases
        .run("expired_secret_is_credential_expired", async move {
            let stack = &f.stack;
            let current = stack.current_secret();
            stack
                .emulator
                .set_app_secrets(
                    &stack.client_id,
                    &[SecretConfig {
                        value: current.clone(),
                        expires: Some(Utc::now() - chrono::Duration::days(1)),
                    }],
                )
                .await
                .unwrap();
            let answer = f.mint(&f.t.expired_secret, "graph").await;
            stack
                .emulator
                .set_app_secrets(
                    &stack.client_id,
                    &[SecretConfig {
                        value: current,
                        expires: None,
                    }],
                )
                .await
                .unwrap();
            expect_error(answer, "credential_expired");
        })
        .await;

    // --- throttling -----------------------------------------------------------------------

    let f = fixture.clone();
    cases
        .run("a_short_429_storm_is_ridden_out", async move {
            let emulator = &f.stack.emulator;
            emulator
                .push_fault(&Fault::throttle(FaultMatch::Token, 1, 2).for_tenant(&f.t.storm))
                .await
                .unwrap();
            let started = Instant::now();
            let answer = f.mint(&f.t.storm, "m365d").await;
            let elapsed = started.elapsed();
            emulator.clear_faults().await.unwrap();
            expect_token(answer, &f.t.storm, "m365d", RESOURCE_M365D, ROLE_M365D);
            let requests = emulator.token_requests_for(&f.t.storm).await.unwrap();
            let throttled = requests.iter().filter(|r| r.status == 429).count();
            assert_eq!(throttled, 2, "Entra saw {requests:?}");
            assert_eq!(requests.last().map(|r| r.status), Some(200));
            assert!(
                elapsed >= Duration::from_millis(1900),
                "two Retry-After: 1 answers must cost about two seconds, took {elapsed:?}"
            );
        })
        .await;

    let f = fixture.clone();
    cases
        .run(
            "a_long_429_storm_ends_throttled_at_the_deadline",
            async move {
                let deadline = 3;
                // A second instance of the function with a short overall deadline.
                let short = f
                    .stack
                    .start_function(
                        PACKAGE,
                        BIN,
                        &[("DP_TOKEN_DEADLINE_SECONDS", &deadline.to_string())],
                        &json!({}),
                    )
                    .await
                    .expect("a second watch starts");
                let emulator = &f.stack.emulator;
                emulator
                    .push_fault(
                        &Fault::throttle(FaultMatch::Token, 1, 1000).for_tenant(&f.t.long_storm),
                    )
                    .await
                    .unwrap();
                let started = Instant::now();
                let answer = short
                    .invoke(&json!({ "tenant": f.t.long_storm, "api": "mde" }))
                    .await;
                let elapsed = started.elapsed();
                emulator.clear_faults().await.unwrap();
                if let Ok(value) = &answer {
                    f.stack.remember_answer(value);
                }
                expect_error(answer, "throttled");
                assert!(
                    elapsed <= Duration::from_secs(deadline + 3),
                    "the {deadline}s deadline was not kept: {elapsed:?}"
                );
                let requests = emulator.token_requests_for(&f.t.long_storm).await.unwrap();
                assert!(
                    requests.iter().all(|r| r.status == 429),
                    "Entra saw {requests:?}"
                );
            },
        )
        .await;

    // --- the HTTP route -------------------------------------------------------------------

    let f = fixture.clone();
    cases
        .run("http_route_post_tokens", async move {
            let (status, body) = f
                .post_tokens(
                    events::post_tokens(&json!({ "tenant": f.t.http, "api": "graph" })).unwrap(),
                )
                .await;
            assert_eq!(status, 200, "{body}");
            expect_token(Ok(body), &f.t.http, "graph", RESOURCE_GRAPH, ROLE_GRAPH);

            for (event, expected_status, expected_code) in [
                (
                    events::post_tokens(&json!({ "tenant": f.t.unregistered, "api": "m365d" })),
                    404,
                    "tenant_not_registered",
                ),
                (
                    events::post_tokens(&json!({ "tenant": f.t.pending, "api": "m365d" })),
                    403,
                    "tenant_not_active",
                ),
                (
                    events::post_tokens(&json!({ "tenant": f.t.http, "api": "sentinel" })),
                    400,
                    "unknown_api",
                ),
                (
                    events::post_tokens(&json!({ "tenant": "common", "api": "m365d" })),
                    400,
                    "invalid_tenant_id",
                ),
                (events::post_tokens_raw("{not json"), 400, "invalid_request"),
            ] {
                let (status, body) = f.post_tokens(event.unwrap()).await;
                assert_eq!(status, expected_status, "{body}");
                assert_eq!(body["error"]["code"], expected_code, "{body}");
                assert!(
                    body["error"]["message"]
                        .as_str()
                        .is_some_and(|message| !message.is_empty()),
                    "{body}"
                );
            }
        })
        .await;

    // --- caller scoping --------------------------------------------------------------------

    let f = fixture.clone();
    cases
        .run("callers_are_held_to_their_mappings", async move {
            caller_scoping(&f).await;
        })
        .await;

    // --- last: nothing secret in any log --------------------------------------------------

    let f = fixture.clone();
    cases
        .run("no_token_or_secret_in_the_logs", async move {
            let logs = f.stack.logs().text();
            assert!(
                logs.lines().count() > 10,
                "the function logged almost nothing: is the capture working?\n{logs}"
            );
            // cargo-lambda itself logs at info: DEBUG lines are the function's own.
            assert!(
                logs.contains("DEBUG"),
                "no DEBUG line in the logs: RUST_LOG=debug did not reach the function"
            );
            let sensitive = f.stack.sensitive();
            assert!(
                sensitive.len() > 3,
                "too few tokens and secrets were seen for this check to mean anything"
            );
            assert_no_leaks(&[("function", &logs)], &sensitive);
        })
        .await;

    drop(fixture);
    cases.finish();
}

/// An HTTP API event for `POST /tokens` signed by `user_arn`, with its own request id.
fn signed_by(user_arn: &str, request_id: &str, body: &Value) -> Value {
    let mut event = events::post_tokens(body).unwrap();
    event["requestContext"]["authorizer"]["iam"]["userArn"] = Value::String(user_arn.to_owned());
    event["requestContext"]["requestId"] = Value::String(request_id.to_owned());
    event
}

/// Roles mapped to a tenant or to a customer reference mint for those only; an unmapped role and
/// unmapped direct invocations are refused once any mapping exists, before any token request;
/// every token handed out is logged with its caller and request id.
async fn caller_scoping(f: &Fixture) {
    const ACCOUNT: &str = "123456789012";
    let session = |role: &str| {
        format!(
            "arn:aws:sts::{ACCOUNT}:assumed-role/{role}/run-{}",
            &guid()[..8]
        )
    };
    let role_key = |role: &str| format!("arn:aws:iam::{ACCOUNT}:role/{role}");
    // Its own instance, reading mappings on every request: the shared one keeps them a minute.
    let function = f
        .stack
        .start_function(
            PACKAGE,
            BIN,
            &[("DP_CALLER_SCOPE_CACHE_SECONDS", "0")],
            &json!({}),
        )
        .await
        .expect("a scoped watch starts");
    let post = |user_arn: String, tenant: &str| {
        let request_id = format!("e2e-{}", guid());
        let event = signed_by(
            &user_arn,
            &request_id,
            &json!({ "tenant": tenant, "api": "graph" }),
        );
        let function = &function;
        async move {
            let response = function.invoke(&event).await.expect("an HTTP answer");
            let body: Value =
                serde_json::from_str(response["body"].as_str().unwrap_or_default()).unwrap();
            f.stack.remember_answer(&body);
            (
                response["statusCode"].as_u64().unwrap_or_default(),
                body,
                request_id,
            )
        }
    };

    // No mapping anywhere yet: every caller mints for every tenant (the `mapped` default).
    let (status, body, _) = post(session("anyone"), &f.t.scoped_by_customer).await;
    assert_eq!(status, 200, "{body}");

    let registry = f.stack.registry();
    let by_tenant = TenantId::parse(&f.t.scoped_by_tenant).unwrap();
    update_caller_scope(&registry, &role_key("playbooks"), |scope| {
        scope.tenants.insert(by_tenant.clone());
    })
    .await
    .unwrap();
    // The stack registers each tenant with the customer reference `CRM-` + its first 4 characters.
    let customer = format!("CRM-{}", &f.t.scoped_by_customer[..4]);
    update_caller_scope(&registry, &role_key("enrichment"), |scope| {
        scope.customer_refs.insert(customer.clone());
    })
    .await
    .unwrap();

    let (status, body, request_id) = post(session("playbooks"), &f.t.scoped_by_tenant).await;
    assert_eq!(status, 200, "{body}");
    expect_token(
        Ok(body),
        &f.t.scoped_by_tenant,
        "graph",
        RESOURCE_GRAPH,
        ROLE_GRAPH,
    );
    let handed_out = |logged: &str| {
        logged.lines().any(|line| {
            line.contains("token handed out")
                && line.contains(&role_key("playbooks"))
                && line.contains(&request_id)
        })
    };
    let logged = f
        .stack
        .logs()
        .wait_since(0, Duration::from_secs(5), handed_out)
        .await;
    assert!(
        handed_out(&logged),
        "no log line of the token with its caller and request id {request_id}"
    );
    let (status, body, _) = post(session("enrichment"), &f.t.scoped_by_customer).await;
    assert_eq!(status, 200, "by customer reference: {body}");

    for (role, tenant) in [
        ("playbooks", &f.t.scoped_other),
        ("enrichment", &f.t.scoped_by_tenant),
        ("stranger", &f.t.scoped_other),
        // Not registered at all: the refusal does not tell.
        ("playbooks", &f.t.unregistered),
    ] {
        let (status, body, _) = post(session(role), tenant).await;
        assert_eq!(status, 403, "{role} → {tenant}: {body}");
        assert_eq!(body["error"]["code"], "caller_not_allowed", "{body}");
    }
    expect_error(
        function
            .invoke(&json!({ "tenant": f.t.scoped_other, "api": "graph" }))
            .await,
        "caller_not_allowed",
    );
    expect_no_token_request(f, &f.t.scoped_other).await;

    let other = TenantId::parse(&f.t.scoped_other).unwrap();
    update_caller_scope(&registry, "direct-invoke", |scope| {
        scope.tenants.insert(other.clone());
    })
    .await
    .unwrap();
    let answer = function
        .invoke(&json!({ "tenant": f.t.scoped_other, "api": "graph" }))
        .await;
    if let Ok(value) = &answer {
        f.stack.remember_answer(value);
    }
    expect_token(
        answer,
        &f.t.scoped_other,
        "graph",
        RESOURCE_GRAPH,
        ROLE_GRAPH,
    );
}
