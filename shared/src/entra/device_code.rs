//! Device code sign-in (reference §8): a command line without a browser shows the user a code
//! and a URL, the user signs in elsewhere, and the command polls the token endpoint until Entra
//! ID hands over a token that acts for that user.
//!
//! Polls go through the same token request as every other grant (`TokenClient::exchange`, the
//! app's client credential included). The poller waits `interval` between polls, 5 s more after
//! each `slow_down`, and stops on `authorization_declined`, `expired_token`,
//! `bad_verification_code`, or once `expires_in` has passed. Waiting goes through an injectable
//! sleep so that tests do not wait in real time.

use std::future::Future;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::claims::decode_payload_as;
use super::client::{AccessToken, TokenClient};
use super::delegated::UserClaims;
use super::errors::EntraError;
use crate::config::TokenEndpointVersion;
use crate::secrets::{AppCredential, CredentialError};
use crate::tenant_id::TenantId;
use crate::{CallerError, ErrorCode};

/// The device code grant of the token endpoint.
pub const DEVICE_CODE_GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:device_code";

/// What a `slow_down` answer adds to the polling interval (RFC 8628 §3.5).
pub const SLOW_DOWN_STEP: Duration = Duration::from_secs(5);

/// Never poll more often than this, whatever `interval` says: a zero would hammer Entra.
const MIN_INTERVAL: Duration = Duration::from_secs(1);

/// RFC 8628's default when Entra leaves `interval` out.
const DEFAULT_INTERVAL_SECONDS: u64 = 5;

/// A started device code flow. `Debug` never shows the device code.
#[derive(Debug)]
pub struct DeviceCode {
    /// What the poller presents; a credential until it is redeemed.
    pub device_code: SecretString,
    /// What the user types on the verification page (public by design).
    pub user_code: String,
    pub verification_uri: String,
    pub expires_in: Duration,
    pub interval: Duration,
    /// Microsoft's instructions for the user, to print as they are.
    pub message: String,
}

#[derive(Deserialize)]
struct DeviceCodeResponse {
    device_code: SecretString,
    user_code: String,
    verification_uri: String,
    expires_in: u64,
    #[serde(default)]
    interval: Option<u64>,
    #[serde(default)]
    message: Option<String>,
}

/// The user's sign-in: a delegated token and what it says of the user. `Debug` never shows
/// the token.
#[derive(Debug, Clone)]
pub struct DeviceSignIn {
    pub token: SecretString,
    pub expires_at: DateTime<Utc>,
    /// `tid`, `oid`, `upn` / `preferred_username`, `scp`.
    pub claims: UserClaims,
}

/// Why the sign-in did not complete.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceCodeError {
    #[error(
        "the user declined the sign-in on the verification page: run the sign-in again if that was a mistake"
    )]
    Declined,
    #[error(
        "the code expired before the user signed in (after {} s): run the sign-in again and enter the code sooner",
        .after.as_secs()
    )]
    Expired { after: Duration },
    #[error(
        "Entra ID does not recognise the device code (another app or tenant, or already used): run the sign-in again"
    )]
    BadVerificationCode,
    #[error(
        "the user signed in to tenant {got}, not to tenant {asked}: sign in with an account of tenant {asked}"
    )]
    TenantMismatch { asked: String, got: String },
    #[error("Entra ID's device code answer is unusable: {0}")]
    MalformedResponse(String),
    #[error(transparent)]
    Entra(#[from] EntraError),
    #[error(transparent)]
    Credential(#[from] CredentialError),
}

impl CallerError for DeviceCodeError {
    fn code(&self) -> ErrorCode {
        match self {
            DeviceCodeError::Declined => ErrorCode::DeviceCodeDeclined,
            DeviceCodeError::Expired { .. } => ErrorCode::DeviceCodeExpired,
            DeviceCodeError::BadVerificationCode => ErrorCode::DeviceCodeInvalid,
            DeviceCodeError::TenantMismatch { .. } => ErrorCode::TokenTenantMismatch,
            DeviceCodeError::MalformedResponse(_) => ErrorCode::MicrosoftUnavailable,
            DeviceCodeError::Entra(error) => error.code(),
            DeviceCodeError::Credential(error) => error.code(),
        }
    }
}

/// What one poll learnt.
enum Poll {
    Done(DeviceSignIn),
    /// Not yet: poll again after at least this long.
    Wait(Duration),
    Slower,
}

/// Starts and completes device code sign-ins for one app.
pub struct DeviceCodeClient {
    client: TokenClient,
}

impl DeviceCodeClient {
    pub fn new(client: TokenClient) -> DeviceCodeClient {
        DeviceCodeClient { client }
    }

    /// `POST {authority}/{tenant}/oauth2/v2.0/devicecode` with `client_id` and `scope`.
    pub async fn start(
        &self,
        tenant: &str,
        client_id: &str,
        scope: &str,
    ) -> Result<DeviceCode, DeviceCodeError> {
        let url = self
            .client
            .endpoints()
            .authority_url(tenant, "oauth2/v2.0/devicecode");
        let answer = crate::http::read(
            self.client
                .http()
                .post(&url)
                .header("Accept", "application/json")
                .form(&[("client_id", client_id), ("scope", scope)])
                .send()
                .await,
        )
        .await
        .map_err(EntraError::Transport)?;
        if answer.status != 200 {
            return Err(EntraError::from_response(
                tenant,
                answer.status,
                answer.retry_after,
                &answer.body,
            )
            .into());
        }
        let parsed: DeviceCodeResponse = serde_json::from_slice(&answer.body).map_err(|error| {
            // serde names the field at fault, never the device code.
            DeviceCodeError::MalformedResponse(format!("not a device code answer ({error})"))
        })?;
        let interval = parsed.interval.unwrap_or(DEFAULT_INTERVAL_SECONDS);
        Ok(DeviceCode {
            message: parsed.message.unwrap_or_else(|| {
                format!(
                    "To sign in, open {} and enter the code {}.",
                    parsed.verification_uri, parsed.user_code
                )
            }),
            device_code: parsed.device_code,
            user_code: parsed.user_code,
            verification_uri: parsed.verification_uri,
            expires_in: Duration::from_secs(parsed.expires_in),
            interval: Duration::from_secs(interval),
        })
    }

    /// Polls until the user has signed in, declined, or the code has expired, sleeping with
    /// tokio's timer.
    pub async fn poll(
        &self,
        tenant: &str,
        code: &DeviceCode,
        credential: &AppCredential,
    ) -> Result<DeviceSignIn, DeviceCodeError> {
        self.poll_with(tenant, code, credential, tokio::time::sleep)
            .await
    }

    /// [`DeviceCodeClient::poll`] with `sleep` doing the waiting. Time passed is the larger of
    /// the clock's and the waits', so that a fake `sleep` still reaches the expiry.
    pub async fn poll_with<S, F>(
        &self,
        tenant: &str,
        code: &DeviceCode,
        credential: &AppCredential,
        mut sleep: S,
    ) -> Result<DeviceSignIn, DeviceCodeError>
    where
        S: FnMut(Duration) -> F,
        F: Future<Output = ()>,
    {
        let started = Instant::now();
        let mut waited = Duration::ZERO;
        let mut interval = code.interval.max(MIN_INTERVAL);
        let mut wait = interval;
        loop {
            sleep(wait).await;
            waited += wait;
            let passed = waited.max(started.elapsed());
            if passed >= code.expires_in {
                return Err(DeviceCodeError::Expired { after: passed });
            }
            match self.poll_once(tenant, code, credential).await? {
                Poll::Done(sign_in) => return Ok(sign_in),
                Poll::Wait(at_least) => wait = interval.max(at_least),
                Poll::Slower => {
                    interval += SLOW_DOWN_STEP;
                    wait = interval;
                }
            }
        }
    }

    async fn poll_once(
        &self,
        tenant: &str,
        code: &DeviceCode,
        credential: &AppCredential,
    ) -> Result<Poll, DeviceCodeError> {
        let form = vec![
            ("grant_type", DEVICE_CODE_GRANT_TYPE),
            ("device_code", code.device_code.expose_secret()),
        ];
        let error = match self
            .client
            .exchange(tenant, TokenEndpointVersion::V2, form, credential)
            .await
        {
            Ok(token) => return Ok(Poll::Done(signed_in(tenant, token)?)),
            Err(error) => error,
        };
        let device_flow_error = match &error {
            EntraError::Rejected { error, .. } => error.as_str(),
            _ => "",
        };
        match device_flow_error {
            "authorization_pending" => Ok(Poll::Wait(Duration::ZERO)),
            "slow_down" => Ok(Poll::Slower),
            "authorization_declined" => Err(DeviceCodeError::Declined),
            "expired_token" => Err(DeviceCodeError::Expired {
                after: code.expires_in,
            }),
            "bad_verification_code" => Err(DeviceCodeError::BadVerificationCode),
            // Throttling and outages: keep polling while the code lives.
            _ if error.is_retryable() => Ok(Poll::Wait(error.retry_after().unwrap_or_default())),
            _ => Err(error.into()),
        }
    }
}

/// The token's user claims, checked: a user's token (`oid`, `scp`) for the tenant asked when
/// it was asked by id.
fn signed_in(tenant: &str, token: AccessToken) -> Result<DeviceSignIn, DeviceCodeError> {
    let claims: UserClaims = decode_payload_as(token.token.expose_secret())
        .map_err(|error| DeviceCodeError::MalformedResponse(error.to_string()))?;
    if claims.oid.as_deref().is_none_or(str::is_empty) || claims.scp.is_none() {
        return Err(DeviceCodeError::MalformedResponse(
            "the token is not a user's delegated token (no oid or scp)".to_owned(),
        ));
    }
    if let Ok(asked) = TenantId::parse(tenant)
        && !claims.tid.eq_ignore_ascii_case(asked.as_str())
    {
        return Err(DeviceCodeError::TenantMismatch {
            asked: asked.to_string(),
            got: claims.tid.chars().take(64).collect(),
        });
    }
    Ok(DeviceSignIn {
        token: token.token,
        expires_at: token.expires_at,
        claims,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    use serde_json::json;
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

    use super::*;
    use crate::cloud::{Cloud, CloudEndpoints};
    use crate::entra::claims::fake_jwt;

    const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
    const APP: &str = "11111111-1111-4111-8111-111111111111";
    const SECRET: &str = "unit-test-client-secret-value";
    const DEVICE_CODE: &str = "DAQABAAEAAA-the-device-code-itself";
    const OID: &str = "aaaaaaaa-0000-4000-8000-000000000001";

    /// Answers the token endpoint's polls in order, the last answer repeating.
    struct Script {
        answers: Vec<ResponseTemplate>,
        next: AtomicUsize,
    }

    impl Respond for Script {
        fn respond(&self, _: &Request) -> ResponseTemplate {
            let index = self.next.fetch_add(1, Ordering::SeqCst);
            self.answers[index.min(self.answers.len() - 1)].clone()
        }
    }

    fn device_flow(error: &str) -> ResponseTemplate {
        ResponseTemplate::new(400).set_body_json(json!({
            "error": error, "error_description": "AADSTS70016: text that must not matter",
            "error_codes": [70016], "trace_id": "trace-1",
        }))
    }

    fn user_token(tid: &str) -> String {
        fake_jwt(&json!({
            "tid": tid, "oid": OID, "upn": "analyst@contoso.example",
            "scp": "Incident.Read AdvancedHunting.Read", "aud": "https://api.security.microsoft.com",
        }))
    }

    fn signed_in(token: &str) -> ResponseTemplate {
        ResponseTemplate::new(200).set_body_json(json!({
            "token_type": "Bearer", "expires_in": 3599, "access_token": token,
            "scope": "https://api.security.microsoft.com/.default",
        }))
    }

    async fn server(answers: Vec<ResponseTemplate>) -> MockServer {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path(format!("/{TENANT}/oauth2/v2.0/token")))
            .respond_with(Script {
                answers,
                next: AtomicUsize::new(0),
            })
            .mount(&server)
            .await;
        server
    }

    fn client(server: &MockServer) -> DeviceCodeClient {
        let endpoints = CloudEndpoints::for_cloud(Cloud::Public)
            .with_authority(url::Url::parse(&server.uri()).unwrap());
        DeviceCodeClient::new(TokenClient::new(reqwest::Client::new(), endpoints))
    }

    fn credential() -> AppCredential {
        AppCredential::from_json(&SecretString::from(
            json!({"client_id": APP, "client_secret": SECRET}).to_string(),
        ))
        .unwrap()
    }

    fn code(expires_in: u64, interval: u64) -> DeviceCode {
        DeviceCode {
            device_code: SecretString::from(DEVICE_CODE),
            user_code: "ABCD2345".into(),
            verification_uri: "https://microsoft.com/devicelogin".into(),
            expires_in: Duration::from_secs(expires_in),
            interval: Duration::from_secs(interval),
            message: "enter the code".into(),
        }
    }

    /// Polls with a sleep that only records how long it was asked to wait.
    async fn poll(
        server: &MockServer,
        code: &DeviceCode,
    ) -> (Result<DeviceSignIn, DeviceCodeError>, Vec<u64>) {
        let waits = Arc::new(Mutex::new(Vec::new()));
        let recorded = waits.clone();
        let result = client(server)
            .poll_with(TENANT, code, &credential(), move |wait: Duration| {
                recorded.lock().unwrap().push(wait.as_secs());
                std::future::ready(())
            })
            .await;
        let waits = waits.lock().unwrap().clone();
        (result, waits)
    }

    async fn polls(server: &MockServer) -> Vec<String> {
        server
            .received_requests()
            .await
            .unwrap()
            .iter()
            .map(|request| String::from_utf8_lossy(&request.body).into_owned())
            .collect()
    }

    #[tokio::test]
    async fn start_reads_microsofts_answer_and_hides_the_device_code() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path(format!("/{TENANT}/oauth2/v2.0/devicecode")))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "device_code": DEVICE_CODE, "user_code": "ABCD2345",
                "verification_uri": "https://microsoft.com/devicelogin",
                "expires_in": 900, "interval": 5,
                "message": "To sign in, use a web browser to open the page https://microsoft.com/devicelogin and enter the code ABCD2345 to authenticate.",
            })))
            .mount(&server)
            .await;
        let scope = "https://api.security.microsoft.com/.default";
        let code = client(&server).start(TENANT, APP, scope).await.unwrap();
        assert_eq!(code.user_code, "ABCD2345");
        assert_eq!(code.device_code.expose_secret(), DEVICE_CODE);
        assert_eq!(code.expires_in, Duration::from_secs(900));
        assert_eq!(code.interval, Duration::from_secs(5));
        assert!(code.message.contains("ABCD2345"));
        assert!(!format!("{code:?}").contains(DEVICE_CODE));
        let sent = polls(&server).await.remove(0);
        assert!(sent.contains(&format!("client_id={APP}")), "{sent}");
        assert!(sent.contains("scope=https%3A%2F%2Fapi.security.microsoft.com%2F.default"));
        assert!(
            !sent.contains("client_secret"),
            "the start is public: {sent}"
        );
    }

    #[tokio::test]
    async fn start_types_entras_refusal() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(400).set_body_json(json!({
                "error": "invalid_tenant", "error_codes": [90002],
            })))
            .mount(&server)
            .await;
        let error = client(&server)
            .start(TENANT, APP, "x/.default")
            .await
            .unwrap_err();
        assert_eq!(error.code(), ErrorCode::TenantUnknown);
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(200).set_body_string("{\"user_code\": 1}"))
            .mount(&server)
            .await;
        let error = client(&server)
            .start(TENANT, APP, "x/.default")
            .await
            .unwrap_err();
        assert_eq!(error.code(), ErrorCode::MicrosoftUnavailable);
    }

    #[tokio::test]
    async fn polls_at_the_interval_until_the_user_signs_in() {
        let token = user_token(TENANT);
        let server = server(vec![
            device_flow("authorization_pending"),
            device_flow("authorization_pending"),
            signed_in(&token),
        ])
        .await;
        let (result, waits) = poll(&server, &code(900, 5)).await;
        let sign_in = result.unwrap();
        assert_eq!(waits, [5, 5, 5]);
        assert_eq!(sign_in.token.expose_secret(), token);
        assert_eq!(sign_in.claims.tid, TENANT);
        assert_eq!(sign_in.claims.oid.as_deref(), Some(OID));
        assert_eq!(sign_in.claims.user_name(), Some("analyst@contoso.example"));
        assert_eq!(
            sign_in.claims.scopes(),
            ["Incident.Read", "AdvancedHunting.Read"]
        );
        assert!(sign_in.expires_at > Utc::now() + chrono::Duration::seconds(3500));
        assert!(!format!("{sign_in:?}").contains(&token));
        let sent = polls(&server).await;
        assert_eq!(sent.len(), 3);
        for body in sent {
            assert!(
                body.contains("grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Adevice_code")
            );
            assert!(
                body.contains(&format!("device_code={DEVICE_CODE}")),
                "{body}"
            );
            assert!(body.contains(&format!("client_id={APP}")), "{body}");
            assert!(
                body.contains(&format!("client_secret={SECRET}")),
                "the app's credential goes with every poll: {body}"
            );
        }
    }

    #[tokio::test]
    async fn slow_down_adds_five_seconds_for_good() {
        let server = server(vec![
            device_flow("authorization_pending"),
            device_flow("slow_down"),
            device_flow("authorization_pending"),
            device_flow("slow_down"),
            signed_in(&user_token(TENANT)),
        ])
        .await;
        let (result, waits) = poll(&server, &code(900, 2)).await;
        result.unwrap();
        assert_eq!(waits, [2, 2, 7, 7, 12]);
    }

    #[tokio::test]
    async fn a_zero_interval_still_waits_a_second() {
        let server = server(vec![signed_in(&user_token(TENANT))]).await;
        let (result, waits) = poll(&server, &code(900, 0)).await;
        result.unwrap();
        assert_eq!(waits, [1]);
    }

    #[tokio::test]
    async fn throttling_is_waited_out_while_the_code_lives() {
        let server = server(vec![
            ResponseTemplate::new(429).insert_header("Retry-After", "30"),
            ResponseTemplate::new(503),
            signed_in(&user_token(TENANT)),
        ])
        .await;
        let (result, waits) = poll(&server, &code(900, 5)).await;
        result.unwrap();
        assert_eq!(waits, [5, 30, 5]);
    }

    #[tokio::test]
    async fn the_final_answers_end_the_polling_with_their_codes() {
        for (error, expected) in [
            ("authorization_declined", ErrorCode::DeviceCodeDeclined),
            ("expired_token", ErrorCode::DeviceCodeExpired),
            ("bad_verification_code", ErrorCode::DeviceCodeInvalid),
        ] {
            let server = server(vec![
                device_flow("authorization_pending"),
                device_flow(error),
                device_flow("authorization_pending"),
            ])
            .await;
            let (result, waits) = poll(&server, &code(900, 5)).await;
            let failure = result.unwrap_err();
            assert_eq!(failure.code(), expected, "{error}");
            assert_eq!(waits.len(), 2, "{error}: no poll after the final answer");
            let message = failure.to_string();
            assert!(!message.contains(DEVICE_CODE) && !message.contains(SECRET));
            assert!(!message.contains("text that must not matter"), "{message}");
        }
    }

    #[tokio::test]
    async fn polling_stops_once_expires_in_has_passed() {
        let server = server(vec![device_flow("authorization_pending")]).await;
        let (result, waits) = poll(&server, &code(12, 5)).await;
        assert_eq!(
            result.unwrap_err(),
            DeviceCodeError::Expired {
                after: Duration::from_secs(15)
            }
        );
        assert_eq!(waits, [5, 5, 5]);
        assert_eq!(polls(&server).await.len(), 2, "no poll past the expiry");
    }

    #[tokio::test]
    async fn other_refusals_keep_entras_type() {
        let server = server(vec![ResponseTemplate::new(401).set_body_json(json!({
            "error": "invalid_client", "error_codes": [7000215],
        }))])
        .await;
        let (result, _) = poll(&server, &code(900, 5)).await;
        assert_eq!(result.unwrap_err().code(), ErrorCode::CredentialInvalid);
    }

    #[tokio::test]
    async fn a_token_that_is_not_the_users_or_the_tenants_is_refused() {
        let app_token = fake_jwt(&json!({"tid": TENANT, "roles": ["Incident.Read.All"]}));
        let app_server = server(vec![signed_in(&app_token)]).await;
        let (result, _) = poll(&app_server, &code(900, 5)).await;
        let error = result.unwrap_err();
        assert_eq!(error.code(), ErrorCode::MicrosoftUnavailable);
        assert!(!error.to_string().contains(&app_token));

        let other = user_token("0e3e2e88-8caf-41ca-b4da-e3b33b6c52ec");
        let other_server = server(vec![signed_in(&other)]).await;
        let (result, _) = poll(&other_server, &code(900, 5)).await;
        assert_eq!(result.unwrap_err().code(), ErrorCode::TokenTenantMismatch);
    }
}
