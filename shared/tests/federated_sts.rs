//! The STS adapter against a wiremock STS on a loopback port: what `GetWebIdentityToken` is
//! asked with (audience, RS256, duration) and how its answers and refusals are typed.

use std::time::Duration;

use defender_partner::entra::federated::{
    StsWebIdentitySource, WebIdentityTokenRequest, WebIdentityTokenSource,
};
use defender_partner::{CallerError, ErrorCode};
use secrecy::ExposeSecret;
use wiremock::matchers::{body_string_contains, method};
use wiremock::{Mock, MockServer, ResponseTemplate};

async fn source(sts: &MockServer) -> StsWebIdentitySource {
    // The endpoint override stands for AWS_ENDPOINT_URL_STS, which aws-config reads into the
    // same place when the configuration is loaded from the environment.
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("eu-west-1"))
        .credentials_provider(aws_sdk_sts::config::Credentials::new(
            "AKIDTEST",
            "test-secret",
            None,
            None,
            "test",
        ))
        .endpoint_url(sts.uri())
        .load()
        .await;
    StsWebIdentitySource::from_sdk_config(&config)
}

fn request() -> WebIdentityTokenRequest {
    WebIdentityTokenRequest {
        audience: "api://AzureADTokenExchange".into(),
        duration: Duration::from_secs(300),
    }
}

#[tokio::test]
async fn asks_for_an_rs256_token_for_the_audience_and_reads_the_answer() {
    let sts = MockServer::start().await;
    Mock::given(method("POST"))
        .and(body_string_contains("Action=GetWebIdentityToken"))
        .and(body_string_contains("SigningAlgorithm=RS256"))
        .and(body_string_contains("DurationSeconds=300"))
        .and(body_string_contains(
            "Audience.member.1=api%3A%2F%2FAzureADTokenExchange",
        ))
        .respond_with(ResponseTemplate::new(200).set_body_string(
            r#"<GetWebIdentityTokenResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <GetWebIdentityTokenResult>
    <WebIdentityToken>eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJpIn0.sig</WebIdentityToken>
    <Expiration>2099-01-01T00:05:00Z</Expiration>
  </GetWebIdentityTokenResult>
  <ResponseMetadata><RequestId>req-1</RequestId></ResponseMetadata>
</GetWebIdentityTokenResponse>"#,
        ))
        .expect(1)
        .mount(&sts)
        .await;
    let token = source(&sts)
        .await
        .web_identity_token(&request())
        .await
        .expect("token");
    assert_eq!(
        token.jwt.expose_secret(),
        "eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJpIn0.sig"
    );
    assert_eq!(token.expires_at.to_rfc3339(), "2099-01-01T00:05:00+00:00");
    assert!(!format!("{token:?}").contains("eyJpc3MiOiJpIn0"));
}

fn sts_error(status: u16, code: &str, message: &str) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_string(format!(
        r#"<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error>
  <RequestId>req-2</RequestId>
</ErrorResponse>"#
    ))
}

#[tokio::test]
async fn refusals_are_typed_with_guidance() {
    let cases = [
        (
            403,
            "OutboundWebIdentityFederationDisabledException",
            "Outbound web identity federation is not enabled",
            ErrorCode::FederationDisabled,
            "aws iam enable-outbound-web-identity-federation",
        ),
        (
            403,
            "AccessDenied",
            "User: arn:aws:sts::123456789012:assumed-role/MintRole/fn is not authorized to perform: sts:GetWebIdentityToken",
            ErrorCode::FederationDenied,
            "arn:aws:sts::123456789012:assumed-role/MintRole/fn",
        ),
        (
            400,
            "SessionDurationEscalationException",
            "too long",
            ErrorCode::FederationRefused,
            "DP_FEDERATION_DURATION_SECONDS",
        ),
    ];
    for (status, code, message, expected, guidance) in cases {
        let sts = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(sts_error(status, code, message))
            .mount(&sts)
            .await;
        let error = source(&sts)
            .await
            .web_identity_token(&request())
            .await
            .unwrap_err();
        assert_eq!(error.code(), expected, "{code}");
        assert!(error.to_string().contains(guidance), "{error}");
        assert!(!error.is_transient());
    }
}
