//! The secretless credential end to end inside the library: app tokens minted for many tenants
//! with the AWS token as client assertion (one STS call for the whole fleet), and Entra ID's
//! federated-credential refusals typed as app-wide configuration errors. Entra ID is a wiremock
//! server on a loopback port; STS is a counting fake behind the token-source port.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::Utc;
use defender_partner::api::DefenderApi;
use defender_partner::cloud::{Cloud, CloudEndpoints};
use defender_partner::config::{TokenEndpointVersion, TokenSettings};
use defender_partner::entra::federated::{
    FederatedAssertions, FederationError, WebIdentityToken, WebIdentityTokenRequest,
    WebIdentityTokenSource,
};
use defender_partner::entra::roles::RoleRequirement;
use defender_partner::entra::{AppTokenProvider, TokenClient};
use defender_partner::secrets::{CredentialStore, FederatedSettingSource};
use defender_partner::tenant_id::TenantId;
use defender_partner::{CallerError, ErrorCode};
use secrecy::SecretString;
use serde_json::json;
use wiremock::matchers::{method, path_regex};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

const CLIENT_ID: &str = "11111111-1111-4111-8111-111111111111";
const ISSUER: &str = "https://0f1e2d3c.tokens.sts.global.api.aws";
const ROLE_ARN: &str = "arn:aws:iam::123456789012:role/defender-partner-MintToken";

fn jwt(claims: serde_json::Value) -> String {
    format!(
        "{}.{}.sig",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    )
}

fn aws_jwt(serial: usize) -> String {
    jwt(
        json!({"iss": ISSUER, "sub": ROLE_ARN, "aud": "api://AzureADTokenExchange", "jti": format!("aws-jti-{serial}")}),
    )
}

struct CountingSts {
    calls: AtomicUsize,
}

#[async_trait]
impl WebIdentityTokenSource for CountingSts {
    async fn web_identity_token(
        &self,
        request: &WebIdentityTokenRequest,
    ) -> Result<WebIdentityToken, FederationError> {
        assert_eq!(request.audience, "api://AzureADTokenExchange");
        let serial = self.calls.fetch_add(1, Ordering::SeqCst);
        // Let concurrent callers pile up behind the call in flight.
        tokio::task::yield_now().await;
        Ok(WebIdentityToken {
            jwt: SecretString::from(aws_jwt(serial)),
            expires_at: Utc::now() + chrono::Duration::seconds(300),
        })
    }
}

struct Fixture {
    entra: MockServer,
    sts: Arc<CountingSts>,
    provider: AppTokenProvider,
}

async fn fixture() -> Fixture {
    let entra = MockServer::start().await;
    let sts = Arc::new(CountingSts {
        calls: AtomicUsize::new(0),
    });
    let federation = Arc::new(FederatedAssertions::new(
        sts.clone(),
        WebIdentityTokenRequest {
            audience: "api://AzureADTokenExchange".into(),
            duration: Duration::from_secs(300),
        },
    ));
    let credentials = Arc::new(
        CredentialStore::new(
            Arc::new(FederatedSettingSource::new(CLIENT_ID)),
            Duration::from_secs(300),
        )
        .with_federation(federation),
    );
    let endpoints = CloudEndpoints::for_cloud(Cloud::Public)
        .with_authority(url::Url::parse(&entra.uri()).unwrap());
    let provider = AppTokenProvider::new(
        TokenClient::new(reqwest::Client::new(), endpoints),
        credentials,
        TokenSettings {
            endpoint_version: TokenEndpointVersion::V2,
            refresh_ahead: Duration::from_secs(300),
            deadline: Duration::from_secs(10),
            http_timeout: Duration::from_secs(5),
        },
    );
    Fixture {
        entra,
        sts,
        provider,
    }
}

fn tenant(index: usize) -> TenantId {
    TenantId::parse(&format!("00000000-0000-4000-8000-{index:012}")).unwrap()
}

/// Answers a token request for the tenant in its path.
fn token_answer(request: &Request) -> ResponseTemplate {
    let tid = request.url.path().split('/').nth(1).unwrap_or_default();
    ResponseTemplate::new(200).set_body_json(json!({
        "token_type": "Bearer",
        "expires_in": 3599,
        "access_token": jwt(json!({"tid": tid, "roles": ["Incident.Read.All"]})),
    }))
}

fn form(request: &Request) -> Vec<(String, String)> {
    url::form_urlencoded::parse(&request.body)
        .into_owned()
        .collect()
}

#[tokio::test]
async fn a_fleet_of_tenants_costs_one_sts_call_and_sends_the_aws_token_as_assertion() {
    let fixture = Arc::new(fixture().await);
    Mock::given(method("POST"))
        .and(path_regex(r"^/[0-9a-f-]+/oauth2/v2.0/token$"))
        .respond_with(token_answer)
        .mount(&fixture.entra)
        .await;

    const TENANTS: usize = 40;
    let requests: Vec<_> = (0..TENANTS)
        .map(|index| {
            let fixture = fixture.clone();
            tokio::spawn(async move {
                fixture
                    .provider
                    .token(
                        &tenant(index),
                        DefenderApi::M365d,
                        None,
                        &RoleRequirement::default_for(DefenderApi::M365d),
                    )
                    .await
            })
        })
        .collect();
    for request in requests {
        request.await.unwrap().expect("token minted");
    }
    assert_eq!(
        fixture.sts.calls.load(Ordering::SeqCst),
        1,
        "one STS call for the fleet"
    );

    let received = fixture.entra.received_requests().await.unwrap();
    assert_eq!(received.len(), TENANTS);
    for request in &received {
        let form = form(request);
        let field = |name: &str| {
            form.iter()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.as_str())
        };
        assert_eq!(field("grant_type"), Some("client_credentials"));
        assert_eq!(field("client_id"), Some(CLIENT_ID));
        assert_eq!(
            field("client_assertion_type"),
            Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
        );
        assert_eq!(field("client_assertion"), Some(aws_jwt(0).as_str()));
        assert_eq!(field("client_secret"), None);
    }
}

fn fic_refusal(code: i64) -> ResponseTemplate {
    ResponseTemplate::new(401).set_body_json(json!({
        "error": "invalid_client",
        "error_description": format!("AADSTS{code}: description text"),
        "error_codes": [code],
        "trace_id": "trace-fic",
        "correlation_id": "corr-fic",
    }))
}

#[tokio::test]
async fn a_fic_mismatch_is_an_app_wide_configuration_error_naming_the_value() {
    let cases = [
        (70021, ErrorCode::FederatedCredentialMissing, ROLE_ARN),
        (700211, ErrorCode::FederatedIssuerMismatch, ISSUER),
        (
            700212,
            ErrorCode::FederatedAudienceMismatch,
            "api://AzureADTokenExchange",
        ),
        (700213, ErrorCode::FederatedSubjectMismatch, ROLE_ARN),
        (7002138, ErrorCode::FederatedSubjectCaseMismatch, ROLE_ARN),
    ];
    for (code, expected, value) in cases {
        let fixture = fixture().await;
        Mock::given(method("POST"))
            .respond_with(fic_refusal(code))
            .mount(&fixture.entra)
            .await;
        let error = fixture
            .provider
            .token(
                &tenant(1),
                DefenderApi::M365d,
                None,
                &RoleRequirement::default_for(DefenderApi::M365d),
            )
            .await
            .unwrap_err();
        assert_eq!(error.code(), expected, "AADSTS{code}");
        assert_ne!(error.code(), ErrorCode::NotConsented);
        let message = error.to_string();
        assert!(message.contains(value), "{value} missing: {message}");
        assert!(!message.contains(&aws_jwt(0)), "the JWT leaked: {message}");
        assert!(!message.contains("aws-jti"), "{message}");
        // Not retried (configuration does not heal by itself): one request, one STS call.
        assert_eq!(fixture.entra.received_requests().await.unwrap().len(), 1);
        assert_eq!(fixture.sts.calls.load(Ordering::SeqCst), 1);
    }
}

/// Refuses the first request as an expired assertion, then answers normally.
struct ExpiredOnce(AtomicUsize);

impl wiremock::Respond for ExpiredOnce {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        if self.0.fetch_add(1, Ordering::SeqCst) == 0 {
            fic_refusal(700024)
        } else {
            token_answer(request)
        }
    }
}

#[tokio::test]
async fn an_expired_aws_token_is_replaced_once() {
    let fixture = fixture().await;
    Mock::given(method("POST"))
        .respond_with(ExpiredOnce(AtomicUsize::new(0)))
        .mount(&fixture.entra)
        .await;
    fixture
        .provider
        .token(
            &tenant(2),
            DefenderApi::M365d,
            None,
            &RoleRequirement::default_for(DefenderApi::M365d),
        )
        .await
        .expect("a fresh AWS token was accepted");
    assert_eq!(fixture.sts.calls.load(Ordering::SeqCst), 2);
    let assertions: Vec<String> = fixture
        .entra
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter_map(|request| {
            form(request)
                .into_iter()
                .find(|(key, _)| key == "client_assertion")
                .map(|(_, value)| value)
        })
        .collect();
    assert_eq!(assertions, vec![aws_jwt(0), aws_jwt(1)]);
}

#[tokio::test]
async fn the_on_behalf_of_exchange_uses_the_aws_token_too() {
    let entra = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(token_answer)
        .mount(&entra)
        .await;
    let sts = Arc::new(CountingSts {
        calls: AtomicUsize::new(0),
    });
    let federation = Arc::new(FederatedAssertions::new(
        sts.clone(),
        WebIdentityTokenRequest {
            audience: "api://AzureADTokenExchange".into(),
            duration: Duration::from_secs(300),
        },
    ));
    let store = CredentialStore::new(
        Arc::new(FederatedSettingSource::new(CLIENT_ID)),
        Duration::from_secs(300),
    )
    .with_federation(federation);
    let credential = store.current().await.unwrap();
    let client = TokenClient::new(
        reqwest::Client::new(),
        CloudEndpoints::for_cloud(Cloud::Public)
            .with_authority(url::Url::parse(&entra.uri()).unwrap()),
    );
    let user_token = SecretString::from(jwt(json!({"tid": "t", "oid": "user"})));
    client
        .request_on_behalf_of_once(
            &tenant(3).to_string(),
            "https://api.security.microsoft.com",
            &user_token,
            &credential,
        )
        .await
        .expect("delegated token");
    let received = entra.received_requests().await.unwrap();
    let form = form(&received[0]);
    let field = |name: &str| {
        form.iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    };
    assert_eq!(
        field("grant_type"),
        Some("urn:ietf:params:oauth:grant-type:jwt-bearer")
    );
    assert_eq!(field("requested_token_use"), Some("on_behalf_of"));
    assert_eq!(field("client_assertion"), Some(aws_jwt(0).as_str()));
    assert_eq!(field("client_secret"), None);
    assert_eq!(sts.calls.load(Ordering::SeqCst), 1);
}
