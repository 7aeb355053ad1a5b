//! The secretless credential end to end on the emulator: AWS STS `GetWebIdentityToken` (raw
//! Query requests and the real `aws-sdk-sts`), the AWS issuer's discovery, IAM's federation
//! info, and Entra accepting the AWS JWT through a federated identity credential.

mod common;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use common::*;
use defender_emulator::demo::{
    AWS_ACCOUNT_ID, AWS_ISSUER_PATH, AWS_ROLE_ARN, EMULATOR_URL_PLACEHOLDER, FIC_AUDIENCE,
};
use defender_emulator::{
    CertificateConfig, FederatedCredentialConfig, RunningEmulator, Scenario, ShortLivedTokens,
    StsCallCounts, StsFailure,
};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, decode, encode};
use reqwest::StatusCode;
use serde_json::{Value, json};

const ACCESS_KEY_ID: &str = "AKIDFEDERATEDTEST";
const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

// --- helpers ---------------------------------------------------------------------------------

/// Form fields of a Query request.
type Form<'a> = Vec<(&'a str, &'a str)>;

fn authorization(access_key_id: &str) -> String {
    format!(
        "AWS4-HMAC-SHA256 Credential={access_key_id}/20261203/eu-west-1/sts/aws4_request, \
         SignedHeaders=content-type;host;x-amz-date, Signature=0000"
    )
}

/// A raw Query request, signed (in appearance) by `access_key_id`.
async fn query_as(
    emulator: &RunningEmulator,
    path: &str,
    access_key_id: Option<&str>,
    form: &[(&str, &str)],
) -> Answer {
    let mut request = client()
        .post(format!("{}{path}", emulator.base_url()))
        .form(form);
    if let Some(id) = access_key_id {
        request = request.header("authorization", authorization(id));
    }
    answer(request.send().await.expect("request")).await
}

/// `GetWebIdentityToken` by the test's access key: Entra's audience and RS256 unless `extra`
/// names an audience or an algorithm.
async fn sts(emulator: &RunningEmulator, extra: &[(&str, &str)]) -> Answer {
    let mut form = vec![("Action", "GetWebIdentityToken"), ("Version", "2011-06-15")];
    if !extra.iter().any(|(name, _)| *name == "SigningAlgorithm") {
        form.push(("SigningAlgorithm", "RS256"));
    }
    if !extra.iter().any(|(name, _)| name.starts_with("Audience")) {
        form.push(("Audience.member.1", FIC_AUDIENCE));
    }
    form.extend_from_slice(extra);
    query_as(emulator, "/sts", Some(ACCESS_KEY_ID), &form).await
}

/// The text of the first `<name>` element, unescaped.
fn element(xml: &str, name: &str) -> Option<String> {
    let start = xml.find(&format!("<{name}>"))? + name.len() + 2;
    let end = start + xml[start..].find(&format!("</{name}>"))?;
    Some(
        xml[start..end]
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&apos;", "'")
            .replace("&amp;", "&"),
    )
}

/// A web identity token for the default role and Entra's audience.
async fn aws_jwt(emulator: &RunningEmulator) -> String {
    let answer = sts(emulator, &[]).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    element(&answer.text, "WebIdentityToken").expect("a token")
}

/// Checks the AWS error document and status; returns the message.
fn assert_aws_error(answer: &Answer, status: u16, code: &str) -> String {
    assert_eq!(answer.status.as_u16(), status, "{}", answer.text);
    assert_eq!(answer.headers["content-type"], "text/xml");
    assert!(
        answer.text.starts_with("<ErrorResponse xmlns=\"https://"),
        "{}",
        answer.text
    );
    assert_eq!(element(&answer.text, "Type").as_deref(), Some("Sender"));
    assert_eq!(
        element(&answer.text, "Code").as_deref(),
        Some(code),
        "{}",
        answer.text
    );
    let request_id = element(&answer.text, "RequestId").expect("RequestId");
    assert!(uuid::Uuid::parse_str(&request_id).is_ok());
    element(&answer.text, "Message").expect("Message")
}

fn claims_of(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

/// A v2 client-credentials request for M365 Defender with `assertion` as the credential.
async fn token_with_assertion(emulator: &RunningEmulator, tenant: &str, assertion: &str) -> Answer {
    post_form(
        &format!("{}/{tenant}/oauth2/v2.0/token", emulator.base_url()),
        &[
            ("grant_type", "client_credentials"),
            ("client_id", CLIENT_ID),
            ("client_assertion_type", JWT_BEARER),
            ("client_assertion", assertion),
            ("scope", "https://api.security.microsoft.com/.default"),
        ],
    )
    .await
}

fn fic(issuer: &str, subject: &str, audience: &str) -> FederatedCredentialConfig {
    FederatedCredentialConfig {
        issuer: issuer.to_owned(),
        subject: subject.to_owned(),
        audiences: vec![audience.to_owned()],
    }
}

fn sdk_client(emulator: &RunningEmulator, path: &str) -> aws_sdk_sts::Client {
    let config = aws_sdk_sts::Config::builder()
        .behavior_version(aws_sdk_sts::config::BehaviorVersion::latest())
        .region(aws_sdk_sts::config::Region::new("eu-west-1"))
        .endpoint_url(format!("{}{path}", emulator.base_url()))
        .credentials_provider(aws_sdk_sts::config::Credentials::new(
            ACCESS_KEY_ID,
            "not-a-real-secret",
            None,
            None,
            "test",
        ))
        .build();
    aws_sdk_sts::Client::from_conf(config)
}

// --- STS success -----------------------------------------------------------------------------

#[tokio::test]
async fn sts_token_verifies_with_the_issuers_published_keys() {
    let emulator = start_demo().await;
    let before = Utc::now().timestamp();
    let answer = sts(&emulator, &[("DurationSeconds", "900")]).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    assert_eq!(answer.headers["content-type"], "text/xml");
    assert!(answer.headers.contains_key("x-amzn-requestid"));
    assert!(answer.text.starts_with(
        "<GetWebIdentityTokenResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">"
    ));
    assert!(answer.text.contains("<GetWebIdentityTokenResult>"));
    assert!(element(&answer.text, "RequestId").is_some());
    let token = element(&answer.text, "WebIdentityToken").unwrap();
    let expiration: DateTime<Utc> = element(&answer.text, "Expiration")
        .unwrap()
        .parse()
        .unwrap();

    // OIDC discovery, as a relying party does it.
    let issuer = format!("{}{AWS_ISSUER_PATH}", emulator.base_url());
    let discovery = get(&format!("{issuer}/.well-known/openid-configuration")).await;
    assert_eq!(discovery.status, StatusCode::OK);
    assert_eq!(discovery.body["issuer"], issuer);
    assert_eq!(
        discovery.body["id_token_signing_alg_values_supported"],
        json!(["RS256", "ES384"])
    );
    let jwks_uri = discovery.body["jwks_uri"].as_str().unwrap();
    assert_eq!(jwks_uri, format!("{issuer}/.well-known/jwks.json"));
    let set: JwkSet = serde_json::from_value(get(jwks_uri).await.body).unwrap();
    let header = jsonwebtoken::decode_header(&token).unwrap();
    assert_eq!(header.alg, Algorithm::RS256);
    let jwk = set
        .find(header.kid.as_deref().unwrap())
        .expect("kid published");
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_audience(&[FIC_AUDIENCE]);
    validation.set_issuer(&[&issuer]);
    validation.set_required_spec_claims(&["exp", "iat", "aud", "iss", "sub"]);
    let claims = decode::<Value>(&token, &DecodingKey::from_jwk(jwk).unwrap(), &validation)
        .expect("verifies")
        .claims;

    assert_eq!(claims["iss"], issuer);
    assert_eq!(claims["sub"], AWS_ROLE_ARN);
    assert_eq!(claims["aud"], FIC_AUDIENCE);
    let iat = claims["iat"].as_i64().unwrap();
    assert!(iat >= before);
    assert_eq!(claims["exp"].as_i64(), Some(iat + 900));
    assert_eq!(expiration.timestamp(), iat + 900);
    assert!(uuid::Uuid::parse_str(claims["jti"].as_str().unwrap()).is_ok());
    let aws = &claims["https://sts.amazonaws.com/"];
    assert_eq!(aws["aws_account"], AWS_ACCOUNT_ID);
    assert_eq!(aws["source_region"], "eu-west-1");
    assert_eq!(aws["principal_id"], AWS_ROLE_ARN);
    emulator.shutdown().await;
}

#[tokio::test]
async fn es384_tokens_verify_and_entra_takes_them() {
    let emulator = start_demo().await;
    let answer = sts(&emulator, &[("SigningAlgorithm", "ES384")]).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    let token = element(&answer.text, "WebIdentityToken").unwrap();
    let header = jsonwebtoken::decode_header(&token).unwrap();
    assert_eq!(header.alg, Algorithm::ES384);
    let issuer = emulator.handle().aws_issuer();
    let discovery = get(&format!("{issuer}/.well-known/openid-configuration")).await;
    assert_eq!(
        discovery.body["id_token_signing_alg_values_supported"],
        json!(["RS256", "ES384"])
    );
    let set: JwkSet =
        serde_json::from_value(get(&format!("{issuer}/.well-known/jwks.json")).await.body).unwrap();
    assert_eq!(set.keys.len(), 2);
    let jwk = set
        .find(header.kid.as_deref().unwrap())
        .expect("kid published");
    let mut validation = Validation::new(Algorithm::ES384);
    validation.set_audience(&[FIC_AUDIENCE]);
    validation.set_issuer(&[&issuer]);
    let claims = decode::<Value>(&token, &DecodingKey::from_jwk(jwk).unwrap(), &validation)
        .expect("verifies")
        .claims;
    assert_eq!(claims["sub"], AWS_ROLE_ARN);
    assert_eq!(
        token_with_assertion(&emulator, CONTOSO, &token)
            .await
            .status,
        StatusCode::OK
    );
    emulator.shutdown().await;
}

#[tokio::test]
async fn several_audiences_and_tags_become_claims() {
    let emulator = start_demo().await;
    let answer = sts(
        &emulator,
        &[
            ("Audience.member.1", "api://one"),
            ("Audience.member.2", "api://two"),
            ("Tags.member.1.Key", "team"),
            ("Tags.member.1.Value", "soc"),
        ],
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    let claims = claims_of(&element(&answer.text, "WebIdentityToken").unwrap());
    assert_eq!(claims["aud"], json!(["api://one", "api://two"]));
    assert_eq!(
        claims["https://sts.amazonaws.com/"]["request_tags"]["team"],
        "soc"
    );
    let default = claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap();
    assert_eq!(default, 300, "DurationSeconds defaults to 300");
    emulator.shutdown().await;
}

#[tokio::test]
async fn access_keys_map_to_roles_and_unknown_keys_to_the_default() {
    let mut scenario = Scenario::demo();
    let mapped = "arn:aws:iam::123456789012:role/other-minter";
    scenario
        .aws
        .roles
        .insert("AKIDMAPPED".to_owned(), mapped.to_owned());
    let emulator = start_with(scenario).await;
    let form = [
        ("Action", "GetWebIdentityToken"),
        ("Version", "2011-06-15"),
        ("SigningAlgorithm", "RS256"),
        ("Audience.member.1", FIC_AUDIENCE),
    ];
    for (key, role) in [("AKIDMAPPED", mapped), ("AKIDANYTHING", AWS_ROLE_ARN)] {
        let answer = query_as(&emulator, "/", Some(key), &form).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
        let claims = claims_of(&element(&answer.text, "WebIdentityToken").unwrap());
        assert_eq!(claims["sub"], role);
    }
    emulator.shutdown().await;
}

#[tokio::test]
async fn the_aws_sdk_talks_to_the_emulator_and_entra_takes_its_token() {
    // The demo scenario needs no setup: default role, FIC on the demo app.
    let emulator = start_demo().await;
    let sts = sdk_client(&emulator, "/sts");
    let output = sts
        .get_web_identity_token()
        .audience(FIC_AUDIENCE)
        .signing_algorithm("RS256")
        .duration_seconds(300)
        .send()
        .await
        .expect("GetWebIdentityToken succeeds");
    let token = output.web_identity_token().expect("a token").to_owned();
    let expiration = output.expiration().expect("an expiration");
    let claims = claims_of(&token);
    assert_eq!(claims["sub"], AWS_ROLE_ARN);
    assert_eq!(expiration.secs(), claims["exp"].as_i64().unwrap());

    let answer = token_with_assertion(&emulator, CONTOSO, &token).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    let app_token = claims_of(answer.body["access_token"].as_str().unwrap());
    assert_eq!(app_token["tid"], CONTOSO);
    assert_eq!(app_token["azp"], CLIENT_ID);
    assert_eq!(app_token["azpacr"], "2");
    assert_eq!(app_token["roles"], json!(["Incident.Read.All"]));

    // The SDK reads the emulator's error document into the typed error.
    emulator.handle().set_aws_federation_enabled(false);
    let error = sts
        .get_web_identity_token()
        .audience(FIC_AUDIENCE)
        .signing_algorithm("RS256")
        .send()
        .await
        .expect_err("federation is off");
    let service_error = error.into_service_error();
    assert!(
        service_error.is_outbound_web_identity_federation_disabled_exception(),
        "{service_error:?}"
    );
    emulator.shutdown().await;
}

#[tokio::test]
async fn the_sdk_also_works_against_the_bare_base_url() {
    let emulator = start_demo().await;
    let output = sdk_client(&emulator, "")
        .get_web_identity_token()
        .audience(FIC_AUDIENCE)
        .signing_algorithm("RS256")
        .send()
        .await
        .expect("GetWebIdentityToken on POST /");
    assert!(output.web_identity_token().is_some());
    emulator.shutdown().await;
}

// --- STS errors and switches -----------------------------------------------------------------

#[tokio::test]
async fn sts_validates_its_parameters() {
    let emulator = start_demo().await;
    let eleven: Vec<(String, String)> = (1..=11)
        .map(|i| (format!("Audience.member.{i}"), format!("api://{i}")))
        .collect();
    let eleven: Vec<(&str, &str)> = eleven
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let cases: Vec<(&str, Form, &str)> = vec![
        (
            "duration below 60",
            vec![("DurationSeconds", "59")],
            "greater than or equal to 60",
        ),
        (
            "duration above 3600",
            vec![("DurationSeconds", "3601")],
            "less than or equal to 3600",
        ),
        (
            "duration not a number",
            vec![("DurationSeconds", "ten")],
            "must be a number",
        ),
        (
            "no audience",
            vec![("Audience.member.1", "")],
            "between 1 and 1000",
        ),
        ("eleven audiences", eleven, "less than or equal to 10"),
        (
            "unknown algorithm",
            vec![("SigningAlgorithm", "HS256")],
            "[RS256, ES384]",
        ),
    ];
    for (name, extra, expected) in cases {
        let mut form = vec![("Action", "GetWebIdentityToken"), ("Version", "2011-06-15")];
        if !extra.iter().any(|(n, _)| *n == "SigningAlgorithm") {
            form.push(("SigningAlgorithm", "RS256"));
        }
        if !extra.iter().any(|(n, _)| n.starts_with("Audience")) {
            form.push(("Audience.member.1", FIC_AUDIENCE));
        }
        form.extend(extra);
        let answer = query_as(&emulator, "/sts", Some(ACCESS_KEY_ID), &form).await;
        let message = assert_aws_error(&answer, 400, "ValidationError");
        assert!(message.contains(expected), "{name}: {message}");
    }
    // Missing list and missing algorithm.
    let answer = query_as(
        &emulator,
        "/sts",
        Some(ACCESS_KEY_ID),
        &[
            ("Action", "GetWebIdentityToken"),
            ("Version", "2011-06-15"),
            ("SigningAlgorithm", "RS256"),
        ],
    )
    .await;
    assert!(assert_aws_error(&answer, 400, "ValidationError").contains("'audience'"));
    let answer = query_as(
        &emulator,
        "/sts",
        Some(ACCESS_KEY_ID),
        &[
            ("Action", "GetWebIdentityToken"),
            ("Version", "2011-06-15"),
            ("Audience.member.1", "a"),
        ],
    )
    .await;
    assert!(assert_aws_error(&answer, 400, "ValidationError").contains("'signingAlgorithm'"));
    assert_eq!(emulator.handle().sts_calls().tokens_issued, 0);
    emulator.shutdown().await;
}

#[tokio::test]
async fn sts_needs_a_sigv4_caller_and_a_known_action() {
    let emulator = start_demo().await;
    let form = [
        ("Action", "GetWebIdentityToken"),
        ("Version", "2011-06-15"),
        ("SigningAlgorithm", "RS256"),
        ("Audience.member.1", FIC_AUDIENCE),
    ];
    let answer = query_as(&emulator, "/sts", None, &form).await;
    assert_aws_error(&answer, 403, "MissingAuthenticationToken");

    let answer = query_as(
        &emulator,
        "/sts",
        Some(ACCESS_KEY_ID),
        &[("Action", "AssumeRole"), ("Version", "2011-06-15")],
    )
    .await;
    let message = assert_aws_error(&answer, 400, "InvalidAction");
    assert!(message.contains("AssumeRole"), "{message}");
    let answer = query_as(
        &emulator,
        "/sts",
        Some(ACCESS_KEY_ID),
        &[("Action", "GetWebIdentityToken"), ("Version", "2010-05-08")],
    )
    .await;
    assert_aws_error(&answer, 400, "InvalidAction");
    emulator.shutdown().await;
}

#[tokio::test]
async fn disabled_federation_is_refused_by_sts_and_reported_by_iam() {
    let emulator = start_demo().await;
    let handle = emulator.handle();
    let iam = [
        ("Action", "GetOutboundWebIdentityFederationInfo"),
        ("Version", "2010-05-08"),
    ];
    let info = query_as(&emulator, "/iam", Some(ACCESS_KEY_ID), &iam).await;
    assert_eq!(info.status, StatusCode::OK, "{}", info.text);
    assert!(info.text.starts_with(
        "<GetOutboundWebIdentityFederationInfoResponse xmlns=\"https://iam.amazonaws.com/doc/2010-05-08/\">"
    ));
    assert_eq!(
        element(&info.text, "IssuerIdentifier"),
        Some(handle.aws_issuer())
    );
    assert_eq!(
        handle.aws_issuer(),
        format!("{}{AWS_ISSUER_PATH}", emulator.base_url())
    );
    assert_eq!(
        element(&info.text, "JwtVendingEnabled").as_deref(),
        Some("true")
    );

    handle.set_aws_federation_enabled(false);
    let message = assert_aws_error(
        &sts(&emulator, &[]).await,
        403,
        "OutboundWebIdentityFederationDisabledException",
    );
    assert!(message.contains("not enabled"), "{message}");
    let info = query_as(&emulator, "/iam", Some(ACCESS_KEY_ID), &iam).await;
    assert_aws_error(&info, 404, "FeatureDisabled");
    assert!(
        info.text
            .contains("https://iam.amazonaws.com/doc/2010-05-08/")
    );
    let unsigned = query_as(&emulator, "/iam", None, &iam).await;
    assert_aws_error(&unsigned, 403, "MissingAuthenticationToken");

    handle.set_aws_federation_enabled(true);
    assert_eq!(sts(&emulator, &[]).await.status, StatusCode::OK);
    emulator.shutdown().await;
}

#[tokio::test]
async fn a_denied_role_gets_access_denied() {
    let emulator = start_demo().await;
    emulator.handle().set_aws_role_denied(true);
    let message = assert_aws_error(&sts(&emulator, &[]).await, 403, "AccessDenied");
    assert!(message.contains(AWS_ROLE_ARN), "{message}");
    assert!(message.contains("sts:GetWebIdentityToken"), "{message}");
    emulator.handle().set_aws_role_denied(false);
    assert_eq!(sts(&emulator, &[]).await.status, StatusCode::OK);
    emulator.shutdown().await;
}

#[tokio::test]
async fn a_token_outliving_the_callers_session_is_refused() {
    let emulator = start_demo().await;
    emulator.handle().set_aws_session_remaining(Some(600));
    let answer = sts(&emulator, &[("DurationSeconds", "900")]).await;
    assert_aws_error(&answer, 403, "SessionDurationEscalationException");
    let answer = sts(&emulator, &[("DurationSeconds", "600")]).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    emulator.handle().set_aws_session_remaining(None);
    assert_eq!(
        sts(&emulator, &[("DurationSeconds", "3600")]).await.status,
        StatusCode::OK
    );
    emulator.shutdown().await;
}

#[tokio::test]
async fn too_many_or_too_large_tags_are_refused() {
    let emulator = start_demo().await;
    let tags = |count: usize, value_length: usize| -> Vec<(String, String)> {
        (1..=count)
            .flat_map(|i| {
                [
                    (format!("Tags.member.{i}.Key"), format!("key{i}")),
                    (format!("Tags.member.{i}.Value"), "v".repeat(value_length)),
                ]
            })
            .collect()
    };
    let large = tags(50, 256);
    let large: Vec<(&str, &str)> = large
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    assert_aws_error(
        &sts(&emulator, &large).await,
        400,
        "JWTPayloadSizeExceededException",
    );
    let many = tags(51, 1);
    let many: Vec<(&str, &str)> = many.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    assert_aws_error(&sts(&emulator, &many).await, 400, "ValidationError");
    emulator.shutdown().await;
}

#[tokio::test]
async fn injected_failures_come_first_and_the_sdk_retries_them() {
    let emulator = start_demo().await;
    let handle = emulator.handle();
    let failure = |count, status, code: &str| StsFailure {
        count,
        status,
        code: code.to_owned(),
    };
    handle
        .fail_next_sts_calls(failure(1, 400, "Throttling"))
        .unwrap();
    let message = assert_aws_error(&sts(&emulator, &[]).await, 400, "Throttling");
    assert!(message.contains("Injected"), "{message}");
    handle
        .fail_next_sts_calls(failure(1, 503, "ServiceUnavailable"))
        .unwrap();
    let answer = sts(&emulator, &[]).await;
    assert_eq!(answer.status.as_u16(), 503);
    assert_eq!(element(&answer.text, "Type").as_deref(), Some("Receiver"));
    assert_eq!(sts(&emulator, &[]).await.status, StatusCode::OK);

    // The SDK's standard retry mode takes two throttled answers and succeeds on the third try.
    handle.reset_sts_calls();
    handle
        .fail_next_sts_calls(failure(2, 400, "Throttling"))
        .unwrap();
    let output = sdk_client(&emulator, "/sts")
        .get_web_identity_token()
        .audience(FIC_AUDIENCE)
        .signing_algorithm("RS256")
        .send()
        .await
        .expect("retried to success");
    assert!(output.web_identity_token().is_some());
    assert_eq!(
        handle.sts_calls(),
        StsCallCounts {
            get_web_identity_token: 3,
            tokens_issued: 1
        }
    );
    for bad in [
        failure(0, 400, "Throttling"),
        failure(1, 302, "Moved"),
        failure(1, 500, "a b"),
    ] {
        assert!(handle.fail_next_sts_calls(bad).is_err());
    }
    emulator.shutdown().await;
}

#[tokio::test]
async fn sts_calls_are_counted_and_one_token_serves_several_tenants() {
    let emulator = start_demo().await;
    let handle = emulator.handle();
    assert_eq!(handle.sts_calls(), StsCallCounts::default());
    let token = aws_jwt(&emulator).await;
    handle.set_aws_role_denied(true);
    assert_eq!(sts(&emulator, &[]).await.status, StatusCode::FORBIDDEN);
    handle.set_aws_role_denied(false);
    assert_eq!(
        handle.sts_calls(),
        StsCallCounts {
            get_web_identity_token: 2,
            tokens_issued: 1
        }
    );

    for tenant in [CONTOSO, FABRIKAM, "contoso.com"] {
        let answer = token_with_assertion(&emulator, tenant, &token).await;
        assert_eq!(answer.status, StatusCode::OK, "{tenant}: {}", answer.text);
    }
    // Not consented: the credential is fine, the tenant still refuses.
    let answer = token_with_assertion(&emulator, NORTHWIND, &token).await;
    assert_entra_error(&answer, 400, "unauthorized_client", 700016);
    assert_eq!(handle.sts_calls().tokens_issued, 1);
    assert_eq!(
        handle.issuer_key_fetches(),
        1,
        "the issuer's keys are cached"
    );

    handle.reset_sts_calls();
    assert_eq!(handle.sts_calls(), StsCallCounts::default());
    emulator.shutdown().await;
}

// --- Entra: federated identity credentials ---------------------------------------------------

#[tokio::test]
async fn federated_assertions_work_on_v1_and_v2() {
    let emulator = start_demo().await;
    let token = aws_jwt(&emulator).await;
    let answer = post_form(
        &format!("{}/contoso.com/oauth2/token", emulator.base_url()),
        &[
            ("grant_type", "client_credentials"),
            ("client_id", CLIENT_ID),
            ("client_assertion_type", JWT_BEARER),
            ("client_assertion", &token),
            ("resource", MDE),
        ],
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    let claims = claims_of(answer.body["access_token"].as_str().unwrap());
    assert_eq!(claims["appidacr"], "2");
    assert_eq!(claims["roles"], json!(["Alert.Read.All"]));
    let records = emulator.handle().token_requests();
    assert_eq!(
        records.last().unwrap().credential,
        Some(defender_emulator::CredentialKind::Assertion)
    );
    emulator.shutdown().await;
}

/// A set of federated credentials, an assertion, and the refusal Entra must answer.
struct MismatchCase<'a> {
    name: &'a str,
    credentials: Vec<FederatedCredentialConfig>,
    assertion: &'a str,
    status: u16,
    error: &'a str,
    code: u64,
    /// A value the description must quote.
    quoted: &'a str,
}

#[tokio::test]
async fn each_federated_mismatch_has_its_own_code() {
    let emulator = start_demo().await;
    let handle = emulator.handle();
    let issuer = handle.aws_issuer();
    let token = aws_jwt(&emulator).await;
    let other_audience = {
        let answer = sts(&emulator, &[("Audience.member.1", "api://SomethingElse")]).await;
        element(&answer.text, "WebIdentityToken").unwrap()
    };
    let upper_role = AWS_ROLE_ARN.replace("defender-partner", "Defender-Partner");
    let case = |name, credentials, assertion, (status, error, code), quoted| MismatchCase {
        name,
        credentials,
        assertion,
        status,
        error,
        code,
        quoted,
    };
    const BAD_REQUEST: (u16, &str, u64) = (400, "invalid_request", 70021);
    let unauthorized = |code| (401, "invalid_client", code);
    let github = fic(
        "https://token.actions.githubusercontent.com",
        "repo:x",
        "api://x",
    );
    let someone_else = "arn:aws:iam::123456789012:role/someone-else";
    let cases = vec![
        case(
            "no credentials at all",
            vec![],
            &token,
            BAD_REQUEST,
            "Assertion Issuer",
        ),
        case(
            "nothing in common",
            vec![github],
            &token,
            BAD_REQUEST,
            AWS_ROLE_ARN,
        ),
        case(
            "another issuer",
            vec![fic("https://other.example", AWS_ROLE_ARN, FIC_AUDIENCE)],
            &token,
            unauthorized(700211),
            &issuer,
        ),
        case(
            "another subject",
            vec![fic(&issuer, someone_else, FIC_AUDIENCE)],
            &token,
            unauthorized(700213),
            AWS_ROLE_ARN,
        ),
        case(
            "subject differs in case only",
            vec![fic(&issuer, &upper_role, FIC_AUDIENCE)],
            &token,
            unauthorized(7002138),
            "case-sensitive",
        ),
        case(
            "another audience",
            vec![fic(&issuer, AWS_ROLE_ARN, FIC_AUDIENCE)],
            &other_audience,
            unauthorized(700212),
            "api://SomethingElse",
        ),
    ];
    for MismatchCase {
        name,
        credentials,
        assertion,
        status,
        error,
        code,
        quoted,
    } in cases
    {
        handle
            .set_federated_credentials(CLIENT_ID, &credentials)
            .unwrap();
        let answer = token_with_assertion(&emulator, CONTOSO, assertion).await;
        assert_entra_error(&answer, status, error, code);
        let description = answer.body["error_description"].as_str().unwrap();
        assert!(description.contains(quoted), "{name}: {description}");
        assert!(
            !answer.text.contains(assertion),
            "{name}: echoes the assertion"
        );
    }
    // Back to a matching credential (placeholder form): accepted again.
    handle
        .set_federated_credentials(
            CLIENT_ID,
            &[fic(
                &format!("{EMULATOR_URL_PLACEHOLDER}{AWS_ISSUER_PATH}"),
                AWS_ROLE_ARN,
                FIC_AUDIENCE,
            )],
        )
        .unwrap();
    assert_eq!(
        token_with_assertion(&emulator, CONTOSO, &token)
            .await
            .status,
        StatusCode::OK
    );
    emulator.shutdown().await;
}

#[tokio::test]
async fn an_expired_aws_token_is_refused_and_short_lived_ones_say_so() {
    let emulator = start_demo().await;
    let handle = emulator.handle();
    handle
        .shorten_next_sts_tokens(ShortLivedTokens {
            count: 1,
            lifetime_seconds: -600,
        })
        .unwrap();
    let expired = aws_jwt(&emulator).await;
    let claims = claims_of(&expired);
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        -600
    );
    let answer = token_with_assertion(&emulator, CONTOSO, &expired).await;
    assert_entra_error(&answer, 401, "invalid_client", 700024);
    assert!(!answer.text.contains(&expired));

    // The override is used up: the next token has the asked lifetime.
    let fresh = aws_jwt(&emulator).await;
    let claims = claims_of(&fresh);
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        300
    );
    assert_eq!(
        token_with_assertion(&emulator, CONTOSO, &fresh)
            .await
            .status,
        StatusCode::OK
    );

    // A short positive lifetime shows in the answer's Expiration as well as in `exp`.
    handle
        .shorten_next_sts_tokens(ShortLivedTokens {
            count: 2,
            lifetime_seconds: 5,
        })
        .unwrap();
    for _ in 0..2 {
        let answer = sts(&emulator, &[]).await;
        let claims = claims_of(&element(&answer.text, "WebIdentityToken").unwrap());
        let expiration: DateTime<Utc> = element(&answer.text, "Expiration")
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(
            claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
            5
        );
        assert_eq!(expiration.timestamp(), claims["exp"].as_i64().unwrap());
    }
    let invalid = ShortLivedTokens {
        count: 0,
        lifetime_seconds: 5,
    };
    assert!(handle.shorten_next_sts_tokens(invalid).is_err());
    emulator.shutdown().await;
}

#[tokio::test]
async fn a_forged_or_unsigned_federated_assertion_is_refused() {
    let emulator = start_demo().await;
    let token = aws_jwt(&emulator).await;
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();

    // Same header and claims, signature of other bytes.
    let mut tampered_signature = parts.clone();
    let signature = URL_SAFE_NO_PAD.decode(&parts[2]).unwrap();
    let mut flipped = signature.clone();
    flipped[0] ^= 0xff;
    tampered_signature[2] = URL_SAFE_NO_PAD.encode(flipped);
    let tampered_signature = tampered_signature.join(".");

    // Claims changed after signing (a longer life).
    let mut claims = claims_of(&token);
    claims["exp"] = json!(claims["exp"].as_i64().unwrap() + 100);
    parts[1] = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap());
    let tampered_claims = parts.join(".");

    // Signed with a shared secret instead of the issuer's key.
    let mut header = Header::new(Algorithm::HS256);
    header.kid = jsonwebtoken::decode_header(&token).unwrap().kid;
    let symmetric = encode(
        &header,
        &claims_of(&token),
        &EncodingKey::from_secret(b"guess"),
    )
    .unwrap();

    // Signed by a key the issuer never published.
    let stranger = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("unpublished".to_owned());
    let unknown_key = encode(
        &header,
        &claims_of(&token),
        &EncodingKey::from_rsa_pem(stranger.serialize_pem().as_bytes()).unwrap(),
    )
    .unwrap();

    for (name, assertion) in [
        ("tampered signature", &tampered_signature),
        ("tampered claims", &tampered_claims),
        ("symmetric algorithm", &symmetric),
        ("unpublished key", &unknown_key),
    ] {
        let answer = token_with_assertion(&emulator, CONTOSO, assertion).await;
        assert_entra_error(&answer, 401, "invalid_client", 700027);
        assert!(
            !answer.text.contains(assertion.as_str()),
            "{name}: echoes the assertion"
        );
    }
    // An unknown kid makes the emulator look again (key rotation), once per request.
    assert_eq!(emulator.handle().issuer_key_fetches(), 2);
    emulator.shutdown().await;
}

#[tokio::test]
async fn an_unreachable_or_inconsistent_issuer_fails_the_request() {
    let emulator = start_demo().await;
    let handle = emulator.handle();
    // A port that was free a moment ago: nothing answers there.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/issuer", listener.local_addr().unwrap())
    };
    // The emulator's own issuer path for another account answers 404.
    let missing = format!("{}/aws-issuer/999999999999", emulator.base_url());
    for issuer in [closed, missing] {
        handle
            .set_federated_credentials(CLIENT_ID, &[fic(&issuer, AWS_ROLE_ARN, FIC_AUDIENCE)])
            .unwrap();
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some("k".to_owned());
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
        let now = Utc::now().timestamp();
        let assertion = encode(
            &header,
            &json!({"iss": issuer, "sub": AWS_ROLE_ARN, "aud": FIC_AUDIENCE,
                    "iat": now, "exp": now + 300}),
            &EncodingKey::from_rsa_pem(key.serialize_pem().as_bytes()).unwrap(),
        )
        .unwrap();
        let answer = token_with_assertion(&emulator, CONTOSO, &assertion).await;
        assert_entra_error(&answer, 400, "invalid_client", 50166);
    }
    emulator.shutdown().await;
}

#[tokio::test]
async fn certificate_assertions_still_work_beside_federated_credentials() {
    let emulator = start_demo().await;
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
    let certificate = rcgen::CertificateParams::new(vec!["fed-test".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    emulator
        .handle()
        .set_certificates(
            CLIENT_ID,
            &[CertificateConfig {
                pem: certificate.pem(),
            }],
        )
        .unwrap();
    let url = format!("{}/{CONTOSO}/oauth2/v2.0/token", emulator.base_url());
    let mut header = Header::new(Algorithm::PS256);
    header.x5t_s256 = Some(URL_SAFE_NO_PAD.encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        certificate.der(),
    )));
    let now = Utc::now().timestamp();
    let assertion = encode(
        &header,
        &json!({"aud": url, "iss": CLIENT_ID, "sub": CLIENT_ID, "jti": "1",
                "nbf": now, "iat": now, "exp": now + 300}),
        &EncodingKey::from_rsa_pem(key.serialize_pem().as_bytes()).unwrap(),
    )
    .unwrap();
    let answer = token_with_assertion(&emulator, CONTOSO, &assertion).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    // A self-issued assertion without thumbprint keeps the certificate path's answer.
    let unnamed = encode(
        &Header::new(Algorithm::RS256),
        &json!({"aud": url, "iss": CLIENT_ID, "sub": CLIENT_ID, "exp": now + 300}),
        &EncodingKey::from_rsa_pem(key.serialize_pem().as_bytes()).unwrap(),
    )
    .unwrap();
    let answer = token_with_assertion(&emulator, CONTOSO, &unnamed).await;
    assert_entra_error(&answer, 401, "invalid_client", 700027);
    assert!(answer.text.contains("thumbprint"));
    // And the AWS token next to it.
    let token = aws_jwt(&emulator).await;
    assert_eq!(
        token_with_assertion(&emulator, CONTOSO, &token)
            .await
            .status,
        StatusCode::OK
    );
    emulator.shutdown().await;
}

// --- HTTP control API ------------------------------------------------------------------------

#[tokio::test]
async fn the_control_api_drives_the_aws_switches_and_credentials() {
    let emulator = start_demo().await;
    let base = emulator.base_url().to_owned();
    let http = client();
    let info = get(&format!("{base}/_emulator/aws")).await;
    assert_eq!(info.body["issuer"], format!("{base}{AWS_ISSUER_PATH}"));
    assert_eq!(info.body["sts_endpoint"], format!("{base}/sts"));
    assert_eq!(info.body["default_role_arn"], AWS_ROLE_ARN);

    let put = |path: &str, body: Value| {
        let request = http.put(format!("{base}{path}")).json(&body);
        async move { request.send().await.unwrap().status() }
    };
    assert_eq!(
        put("/_emulator/aws/settings", json!({"role_denied": true})).await,
        StatusCode::NO_CONTENT
    );
    assert_aws_error(&sts(&emulator, &[]).await, 403, "AccessDenied");
    assert_eq!(
        put(
            "/_emulator/aws/settings",
            json!({"role_denied": false, "federation_enabled": false})
        )
        .await,
        StatusCode::NO_CONTENT
    );
    assert_aws_error(
        &sts(&emulator, &[]).await,
        403,
        "OutboundWebIdentityFederationDisabledException",
    );
    assert_eq!(
        put(
            "/_emulator/aws/settings",
            json!({"federation_enabled": true, "session_remaining_seconds": 100})
        )
        .await,
        StatusCode::NO_CONTENT
    );
    assert_aws_error(
        &sts(&emulator, &[]).await,
        403,
        "SessionDurationEscalationException",
    );
    assert_eq!(
        put(
            "/_emulator/aws/settings",
            json!({"session_remaining_seconds": null})
        )
        .await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        put("/_emulator/aws/settings", json!({"unknown": 1})).await,
        StatusCode::BAD_REQUEST
    );

    let short = http
        .post(format!("{base}/_emulator/aws/short-lived-tokens"))
        .json(&json!({"count": 1, "lifetime_seconds": -600}))
        .send()
        .await
        .unwrap();
    assert_eq!(short.status(), StatusCode::NO_CONTENT);
    let expired = aws_jwt(&emulator).await;
    assert_entra_error(
        &token_with_assertion(&emulator, CONTOSO, &expired).await,
        401,
        "invalid_client",
        700024,
    );

    let failure = http
        .post(format!("{base}/_emulator/aws/failures"))
        .json(&json!({"count": 1, "status": 400, "code": "Throttling"}))
        .send()
        .await
        .unwrap();
    assert_eq!(failure.status(), StatusCode::NO_CONTENT);
    assert_aws_error(&sts(&emulator, &[]).await, 400, "Throttling");

    let calls = get(&format!("{base}/_emulator/aws/calls")).await;
    assert_eq!(
        calls.body,
        json!({"get_web_identity_token": 5, "tokens_issued": 1})
    );
    let reset = http
        .delete(format!("{base}/_emulator/aws/calls"))
        .send()
        .await
        .unwrap();
    assert_eq!(reset.status(), StatusCode::NO_CONTENT);
    assert_eq!(emulator.handle().sts_calls(), StsCallCounts::default());

    let path = format!("/_emulator/apps/{CLIENT_ID}/federated-credentials");
    assert_eq!(
        put(&path, json!({"federated_credentials": []})).await,
        StatusCode::NO_CONTENT
    );
    let token = aws_jwt(&emulator).await;
    assert_entra_error(
        &token_with_assertion(&emulator, CONTOSO, &token).await,
        400,
        "invalid_request",
        70021,
    );
    assert_eq!(
        put(
            &path,
            json!({"federated_credentials": [{
                "issuer": format!("{EMULATOR_URL_PLACEHOLDER}{AWS_ISSUER_PATH}"),
                "subject": AWS_ROLE_ARN
            }]})
        )
        .await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        token_with_assertion(&emulator, CONTOSO, &token)
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        put(
            &path,
            json!({"federated_credentials": [{"issuer": "not a url", "subject": "s"}]})
        )
        .await,
        StatusCode::BAD_REQUEST
    );
    let unknown_app = "/_emulator/apps/99999999-9999-4999-8999-999999999999/federated-credentials";
    assert_eq!(
        put(unknown_app, json!({"federated_credentials": []})).await,
        StatusCode::NOT_FOUND
    );
    emulator.shutdown().await;
}
