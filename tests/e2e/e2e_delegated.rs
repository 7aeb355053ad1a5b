//! Delegated access end to end: the real `mint-token` under `cargo lambda watch` exchanges a
//! user's token on-behalf-of (moto for the registry and the credential, the emulator binary on
//! its demo scenario for Entra ID and the Defender APIs), and the delegated token then reads
//! the Defender API with that user's own rights.
//!
//! One stack serves every case; the cases run in order. Run a subset with
//! `E2E_CASES=mfa,cache cargo test -p defender-partner-e2e --test e2e_delegated`.

use std::sync::Arc;
use std::time::Instant;

use defender_emulator::{UserTokenRequest, demo};
use defender_partner::store::TenantStatus;
use defender_partner_e2e::leaks::assert_no_leaks;
use defender_partner_e2e::stack::guid;
use defender_partner_e2e::{Cases, FunctionError, LambdaWatch, Stack, events, jwt};
use defender_partner_testkit::scenario::{ROLE_GRAPH, ROLE_M365D, ROLE_MDE};
use serde_json::{Value, json};

const PACKAGE: &str = "mint-token";
const BIN: &str = "mint-token";

struct Fixture {
    stack: Stack,
    lambda: LambdaWatch,
    http: reqwest::Client,
}

/// A user's token for the app, as a calling workflow would hold it.
struct UserToken {
    request: UserTokenRequest,
}

impl UserToken {
    fn for_app(tenant: &str, user: &str) -> UserToken {
        UserToken {
            request: UserTokenRequest {
                tenant: tenant.to_owned(),
                client_id: demo::CLIENT_ID.to_owned(),
                user: user.to_owned(),
                audience: None,
                scopes: vec![],
                mfa: false,
                expires_in_seconds: None,
            },
        }
    }

    fn with_audience(mut self, audience: &str) -> UserToken {
        self.request.audience = Some(audience.to_owned());
        self
    }
}

impl Fixture {
    async fn start() -> anyhow::Result<Fixture> {
        let stack = Stack::start_on_demo_scenario().await?;
        for tenant in [demo::CONTOSO_TENANT_ID, demo::FABRIKAM_TENANT_ID] {
            stack
                .register(
                    tenant,
                    TenantStatus::Active,
                    &[ROLE_M365D, ROLE_MDE, ROLE_GRAPH],
                )
                .await?;
        }
        let lambda = stack.start_function(PACKAGE, BIN, &[], &json!({})).await?;
        Ok(Fixture {
            stack,
            lambda,
            http: reqwest::Client::new(),
        })
    }

    /// A user token minted by the emulator, remembered as sensitive.
    async fn user_token(&self, order: UserToken) -> String {
        let minted = self
            .stack
            .emulator
            .mint_user_token(&order.request)
            .await
            .expect("the emulator mints a user token");
        self.stack.remember_token(&minted.access_token);
        minted.access_token
    }

    /// Invokes mint-token directly with a user token; a token in the answer is remembered.
    async fn mint_for_user(
        &self,
        tenant: &str,
        api: &str,
        user_token: &str,
    ) -> Result<Value, FunctionError> {
        let answer = self
            .lambda
            .invoke(&json!({ "tenant": tenant, "api": api, "user_token": user_token }))
            .await;
        if let Ok(value) = &answer {
            self.stack.remember_answer(value);
        }
        answer
    }

    /// Through the HTTP route (`POST /tokens`): (statusCode, JSON body).
    async fn post_tokens(&self, body: &Value) -> (u16, Value) {
        let response = self
            .lambda
            .invoke(&events::post_tokens(body).expect("the sample event loads"))
            .await
            .unwrap_or_else(|error| panic!("the HTTP route must answer, not fail: {error}"));
        let status = response["statusCode"].as_u64().unwrap_or_default() as u16;
        let body_text = response["body"].as_str().unwrap_or_default();
        let body: Value = serde_json::from_str(body_text)
            .unwrap_or_else(|_| panic!("the HTTP body is not JSON: {body_text:?}"));
        self.stack.remember_answer(&body);
        (status, body)
    }

    /// `GET /api/incidents?$top=1` of the M365 Defender API with `token`: (status, body).
    async fn list_incidents(&self, token: &str) -> (u16, Value) {
        let response = self
            .http
            .get(format!("{}/api/incidents", self.stack.emulator.base_url()))
            .query(&[("$top", "1")])
            .bearer_auth(token)
            .send()
            .await
            .expect("the Defender API answers");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// The on-behalf-of exchange sent straight to the emulator's token endpoint, as
    /// mint-token sends it: Entra's own error answer, for comparison.
    async fn raw_on_behalf_of(&self, tenant: &str, resource: &str, user_token: &str) -> Value {
        let response = self
            .http
            .post(format!(
                "{}/{tenant}/oauth2/v2.0/token",
                self.stack.emulator.base_url()
            ))
            .form(&[
                ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
                ("assertion", user_token),
                ("requested_token_use", "on_behalf_of"),
                ("scope", &format!("{resource}/.default")),
                ("client_id", demo::CLIENT_ID),
                ("client_secret", demo::CLIENT_SECRET),
            ])
            .send()
            .await
            .expect("the token endpoint answers");
        response.json().await.expect("Entra answers JSON")
    }

    /// On-behalf-of exchanges the emulator performed for `user_oid` since the last clear.
    async fn exchanges_for(&self, user_oid: &str) -> usize {
        self.stack
            .emulator
            .delegated_tokens()
            .await
            .unwrap()
            .iter()
            .filter(|record| record.grant == "on_behalf_of" && record.user_oid == user_oid)
            .count()
    }

    /// Neither the token endpoint nor the on-behalf-of grant was reached since the last clear.
    async fn expect_entra_untouched(&self) {
        let requests = self.stack.emulator.token_requests().await.unwrap();
        assert!(
            requests.is_empty(),
            "a refused user token must not reach Entra; it saw {requests:?}"
        );
        let issued = self.stack.emulator.delegated_tokens().await.unwrap();
        assert!(
            issued.iter().all(|record| record.grant != "on_behalf_of"),
            "no on-behalf-of exchange may happen: {issued:?}"
        );
    }

    async fn clear_emulator_logs(&self) {
        self.stack.emulator.clear_requests().await.unwrap();
        self.stack.emulator.clear_delegated_tokens().await.unwrap();
    }
}

#[track_caller]
fn expect_error(answer: Result<Value, FunctionError>, code: &str) -> FunctionError {
    match answer {
        Ok(value) => panic!("expected the function error {code}, got a success: {value}"),
        Err(error) => {
            assert_eq!(error.error_type, code, "{error}");
            assert!(!error.error_message.trim().is_empty(), "{code}: no message");
            error
        }
    }
}

/// A delegated answer for the user `oid` / `upn` in `tenant`, whose token says the same;
/// answers the token.
#[track_caller]
fn expect_delegated(
    answer: Result<Value, FunctionError>,
    tenant: &str,
    oid: &str,
    upn: &str,
    scope: &str,
) -> String {
    let answer = answer.unwrap_or_else(|error| panic!("expected a delegated token, got {error}"));
    assert_eq!(answer["tenant_id"], tenant, "{answer}");
    assert_eq!(answer["user_oid"], oid, "{answer}");
    assert_eq!(answer["user_upn"], upn, "{answer}");
    assert_eq!(
        answer["roles"],
        json!([]),
        "a delegated token has no app roles"
    );
    let scopes: Vec<&str> = answer["scopes"]
        .as_array()
        .map(|items| items.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    assert!(scopes.contains(&scope), "scopes {scopes:?} lack {scope}");
    assert!(
        answer["expires_in"].as_u64().is_some_and(|s| s > 60),
        "{answer}"
    );
    let token = answer["access_token"]
        .as_str()
        .expect("an access_token")
        .to_owned();
    let claims = jwt::claims(&token).expect("the delegated token is a JWT");
    assert_eq!(claims["tid"], tenant);
    assert_eq!(claims["oid"], oid);
    assert!(
        claims["scp"]
            .as_str()
            .is_some_and(|scp| scp.split(' ').any(|s| s == scope)),
        "scp of {claims}"
    );
    token
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delegated_access_end_to_end() {
    let started = Instant::now();
    let fixture = Arc::new(Fixture::start().await.expect("the stack starts"));
    eprintln!(
        "[e2e] stack started in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let mut cases = Cases::from_env();

    let f = fixture.clone();
    cases
        .run("analyst_reads_incidents_as_themselves", async move {
            f.clear_emulator_logs().await;
            let user_token = f
                .user_token(UserToken::for_app(
                    demo::CONTOSO_TENANT_ID,
                    demo::CONTOSO_ANALYST_UPN,
                ))
                .await;
            let token = expect_delegated(
                f.mint_for_user(demo::CONTOSO_TENANT_ID, "m365d", &user_token)
                    .await,
                demo::CONTOSO_TENANT_ID,
                demo::CONTOSO_ANALYST_OID,
                demo::CONTOSO_ANALYST_UPN,
                "Incident.Read",
            );
            assert_ne!(token, user_token, "a new token, for the Defender API");
            assert_eq!(f.exchanges_for(demo::CONTOSO_ANALYST_OID).await, 1);
            let (status, body) = f.list_incidents(&token).await;
            assert_eq!(status, 200, "{body}");
            let incidents = body["value"].as_array().expect("a page of incidents");
            assert_eq!(incidents.len(), 1, "$top=1: {body}");
        })
        .await;

    let f = fixture.clone();
    cases
        .run("user_without_portal_role_gets_the_api_403", async move {
            let user_token = f
                .user_token(UserToken::for_app(
                    demo::CONTOSO_TENANT_ID,
                    demo::CONTOSO_NO_ROLE_UPN,
                ))
                .await;
            // The app may act for the user, so the token is minted...
            let token = expect_delegated(
                f.mint_for_user(demo::CONTOSO_TENANT_ID, "m365d", &user_token)
                    .await,
                demo::CONTOSO_TENANT_ID,
                demo::CONTOSO_NO_ROLE_OID,
                demo::CONTOSO_NO_ROLE_UPN,
                "Incident.Read",
            );
            // ...but the API applies the user's own rights, which do not include reading.
            let (status, body) = f.list_incidents(&token).await;
            assert_eq!(status, 403, "{body}");
            assert!(body.get("value").is_none(), "no data in a refusal: {body}");
        })
        .await;

    let f = fixture.clone();
    cases
        .run(
            "token_for_another_app_is_refused_before_entra",
            async move {
                let other_app = format!("api://{}", guid());
                let user_token = f
                    .user_token(
                        UserToken::for_app(demo::CONTOSO_TENANT_ID, demo::CONTOSO_ANALYST_UPN)
                            .with_audience(&other_app),
                    )
                    .await;
                f.clear_emulator_logs().await;
                let error = expect_error(
                    f.mint_for_user(demo::CONTOSO_TENANT_ID, "mde", &user_token)
                        .await,
                    "user_token_wrong_audience",
                );
                assert!(error.error_message.contains(&other_app), "{error}");
                f.expect_entra_untouched().await;
            },
        )
        .await;

    let f = fixture.clone();
    cases
        .run(
            "token_for_another_tenant_is_refused_before_entra",
            async move {
                let fabrikam_user = f
                    .user_token(UserToken::for_app(
                        demo::FABRIKAM_TENANT_ID,
                        demo::FABRIKAM_ANALYST_UPN,
                    ))
                    .await;
                f.clear_emulator_logs().await;
                let error = expect_error(
                    f.mint_for_user(demo::CONTOSO_TENANT_ID, "mde", &fabrikam_user)
                        .await,
                    "user_token_wrong_tenant",
                );
                assert!(
                    error.error_message.contains(demo::FABRIKAM_TENANT_ID),
                    "{error}"
                );
                f.expect_entra_untouched().await;
            },
        )
        .await;

    let f = fixture.clone();
    cases
        .run(
            "mfa_user_gets_interaction_required_with_microsofts_claims",
            async move {
                let user_token = f
                    .user_token(UserToken::for_app(
                        demo::CONTOSO_TENANT_ID,
                        demo::CONTOSO_MFA_USER_UPN,
                    ))
                    .await;
                let entra = f
                    .raw_on_behalf_of(
                        demo::CONTOSO_TENANT_ID,
                        "https://api.security.microsoft.com",
                        &user_token,
                    )
                    .await;
                assert_eq!(entra["error"], "interaction_required", "{entra}");
                let sent = entra["claims"]
                    .as_str()
                    .expect("Entra sent a claims challenge")
                    .to_owned();

                // Invoked directly: the challenge ends the message, unchanged.
                let error = expect_error(
                    f.mint_for_user(demo::CONTOSO_TENANT_ID, "m365d", &user_token)
                        .await,
                    "interaction_required",
                );
                let passed = error
                    .error_message
                    .split_once(" claims: ")
                    .map(|(_, claims)| claims)
                    .unwrap_or_else(|| panic!("no claims in {error}"));
                assert_eq!(passed.as_bytes(), sent.as_bytes());

                // Through the HTTP route: its own field, unchanged.
                let (status, body) = f
                    .post_tokens(&json!({
                        "tenant": demo::CONTOSO_TENANT_ID, "api": "m365d", "user_token": user_token,
                    }))
                    .await;
                assert_eq!(status, 401, "{body}");
                assert_eq!(body["error"]["code"], "interaction_required", "{body}");
                assert_eq!(
                    body["error"]["claims"].as_str().map(str::as_bytes),
                    Some(sent.as_bytes()),
                    "{body}"
                );
                assert!(body.get("access_token").is_none(), "{body}");
            },
        )
        .await;

    let f = fixture.clone();
    cases
        .run(
            "same_user_twice_is_a_cache_hit_users_never_share",
            async move {
                f.clear_emulator_logs().await;
                let analyst =
                    UserToken::for_app(demo::CONTOSO_TENANT_ID, demo::CONTOSO_ANALYST_UPN);
                let analyst_token = f.user_token(analyst).await;
                let first = expect_delegated(
                    f.mint_for_user(demo::CONTOSO_TENANT_ID, "mde", &analyst_token)
                        .await,
                    demo::CONTOSO_TENANT_ID,
                    demo::CONTOSO_ANALYST_OID,
                    demo::CONTOSO_ANALYST_UPN,
                    "Alert.Read",
                );
                // The same user token again: the cached delegated token.
                let second = expect_delegated(
                    f.mint_for_user(demo::CONTOSO_TENANT_ID, "mde", &analyst_token)
                        .await,
                    demo::CONTOSO_TENANT_ID,
                    demo::CONTOSO_ANALYST_OID,
                    demo::CONTOSO_ANALYST_UPN,
                    "Alert.Read",
                );
                assert_eq!(first, second, "the second mint must come from the cache");
                assert_eq!(f.exchanges_for(demo::CONTOSO_ANALYST_OID).await, 1);
                // Another token of the same user is exchanged (only Entra can tell that it is
                // genuine), so a forged one naming the analyst never reaches the cached token.
                let again = UserToken::for_app(demo::CONTOSO_TENANT_ID, demo::CONTOSO_ANALYST_OID);
                expect_delegated(
                    f.mint_for_user(demo::CONTOSO_TENANT_ID, "mde", &f.user_token(again).await)
                        .await,
                    demo::CONTOSO_TENANT_ID,
                    demo::CONTOSO_ANALYST_OID,
                    demo::CONTOSO_ANALYST_UPN,
                    "Alert.Read",
                );
                assert_eq!(f.exchanges_for(demo::CONTOSO_ANALYST_OID).await, 2);

                // Another user of the same tenant and API: an exchange and a token of their own.
                let helpdesk =
                    UserToken::for_app(demo::CONTOSO_TENANT_ID, demo::CONTOSO_NO_ROLE_UPN);
                let theirs = expect_delegated(
                    f.mint_for_user(
                        demo::CONTOSO_TENANT_ID,
                        "mde",
                        &f.user_token(helpdesk).await,
                    )
                    .await,
                    demo::CONTOSO_TENANT_ID,
                    demo::CONTOSO_NO_ROLE_OID,
                    demo::CONTOSO_NO_ROLE_UPN,
                    "Alert.Read",
                );
                assert_ne!(theirs, first, "users never share a delegated token");
                assert_eq!(f.exchanges_for(demo::CONTOSO_NO_ROLE_OID).await, 1);
                let requests = f.stack.emulator.token_requests().await.unwrap();
                assert_eq!(
                    requests.len(),
                    3,
                    "one exchange per user token: {requests:?}"
                );
            },
        )
        .await;

    let f = fixture.clone();
    cases
        .run("no_token_or_secret_in_any_log", async move {
            let function_logs = f.stack.logs().text();
            let emulator_logs = f.stack.emulator.logs().text();
            assert!(
                function_logs.contains("delegated token handed out"),
                "the function's logs lack its delegated answers: is the capture working?"
            );
            assert!(
                function_logs.contains("DEBUG"),
                "RUST_LOG=debug did not reach the function"
            );
            assert!(
                emulator_logs.contains("delegated token issued"),
                "the emulator's logs lack its exchanges: is the capture working?"
            );
            let mut sensitive = f.stack.sensitive();
            sensitive.push(demo::CLIENT_SECRET.to_owned());
            assert!(
                sensitive.len() > 10,
                "too few tokens were seen for this check to mean anything: {}",
                sensitive.len()
            );
            assert_no_leaks(
                &[("function", &function_logs), ("emulator", &emulator_logs)],
                &sensitive,
            );
        })
        .await;

    drop(fixture);
    cases.finish();
}
