//! The Entra endpoints as a client sees them: tokens, errors, certificates, discovery.

mod common;

use aws_lc_rs::digest;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::Utc;
use common::*;
use defender_emulator::{CertificateConfig, SecretConfig};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use reqwest::StatusCode;
use serde_json::{Value, json};

#[tokio::test]
async fn v2_token_carries_every_claim_and_verifies() {
    let emulator = start_demo().await;
    let answer = token_v2(&emulator, CONTOSO, M365D).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    assert_eq!(
        answer.headers["cache-control"].to_str().unwrap(),
        "no-store, no-cache"
    );
    let body = &answer.body;
    assert_eq!(body["token_type"], "Bearer");
    let expires_in = body["expires_in"].as_i64().expect("an integer");
    assert_eq!(expires_in, 3599);
    assert_eq!(body["ext_expires_in"].as_i64(), Some(expires_in));
    assert!(body.get("expires_on").is_none());
    assert!(body.get("refresh_token").is_none());

    let issuer = format!("{}/{CONTOSO}/v2.0", emulator.base_url());
    let claims = verify_token(
        &emulator,
        body["access_token"].as_str().unwrap(),
        M365D,
        &issuer,
    )
    .await;
    assert_eq!(claims["aud"], M365D);
    assert_eq!(claims["iss"], issuer);
    assert_eq!(claims["tid"], CONTOSO);
    assert_eq!(claims["roles"], json!(["Incident.Read.All"]));
    assert_eq!(claims["azp"], CLIENT_ID);
    assert_eq!(claims["azpacr"], "1");
    assert!(claims.get("appid").is_none());
    assert_eq!(claims["idtyp"], "app");
    assert_eq!(claims["ver"], "2.0");
    assert_eq!(claims["idp"], format!("https://sts.windows.net/{CONTOSO}/"));
    let oid = claims["oid"].as_str().unwrap();
    assert!(uuid::Uuid::parse_str(oid).is_ok());
    assert_eq!(claims["sub"], oid);
    let iat = claims["iat"].as_i64().unwrap();
    assert_eq!(claims["nbf"].as_i64(), Some(iat));
    assert_eq!(claims["exp"].as_i64(), Some(iat + expires_in));
    assert!(claims["uti"].as_str().is_some_and(|uti| !uti.is_empty()));
    assert!(claims["jti"].as_str().is_some_and(|jti| !jti.is_empty()));
    emulator.shutdown().await;
}

#[tokio::test]
async fn v1_token_uses_string_numbers_and_the_sts_issuer() {
    let emulator = start_demo().await;
    let alias = "https://securitycenter.onmicrosoft.com/windowsatpservice";
    let answer = token_v1(&emulator, "contoso.com", alias).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    let body = &answer.body;
    assert_eq!(body["token_type"], "Bearer");
    for field in ["expires_in", "ext_expires_in", "expires_on", "not_before"] {
        let text = body[field]
            .as_str()
            .unwrap_or_else(|| panic!("{field} is a string"));
        assert!(text.parse::<i64>().is_ok(), "{field} = {text}");
    }
    assert_eq!(body["expires_in"], "3599");
    assert_eq!(body["resource"], alias);

    let issuer = format!("https://sts.windows.net/{CONTOSO}/");
    let claims = verify_token(
        &emulator,
        body["access_token"].as_str().unwrap(),
        alias,
        &issuer,
    )
    .await;
    assert_eq!(claims["tid"], CONTOSO);
    assert_eq!(claims["appid"], CLIENT_ID);
    assert_eq!(claims["appidacr"], "1");
    assert!(claims.get("azp").is_none());
    assert_eq!(claims["ver"], "1.0");
    assert_eq!(claims["roles"], json!(["Alert.Read.All"]));
    let expires_on: i64 = body["expires_on"].as_str().unwrap().parse().unwrap();
    assert_eq!(claims["exp"].as_i64(), Some(expires_on));
    let not_before: i64 = body["not_before"].as_str().unwrap().parse().unwrap();
    assert_eq!(claims["nbf"].as_i64(), Some(not_before));
    emulator.shutdown().await;
}

fn claims_of(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

#[tokio::test]
async fn a_domain_stands_for_the_tenant() {
    let emulator = start_demo().await;
    for tenant in ["contoso.onmicrosoft.com", "CONTOSO.onmicrosoft.COM"] {
        let answer = token_v2(&emulator, tenant, GRAPH).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
        let claims = claims_of(answer.body["access_token"].as_str().unwrap());
        assert_eq!(claims["tid"], CONTOSO);
        assert_eq!(
            claims["iss"],
            format!("{}/{CONTOSO}/v2.0", emulator.base_url())
        );
        assert_eq!(claims["roles"], json!(["SecurityIncident.Read.All"]));
    }
    emulator.shutdown().await;
}

#[tokio::test]
async fn us_government_hosts_are_the_same_resources() {
    let emulator = start_demo().await;
    for (resource, role) in [
        ("https://api-gov.security.microsoft.us", "Incident.Read.All"),
        (
            "https://api-gcc.securitycenter.microsoft.us",
            "Alert.Read.All",
        ),
        ("https://graph.microsoft.us", "SecurityIncident.Read.All"),
    ] {
        let answer = token_v2(&emulator, CONTOSO, resource).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
        let claims = claims_of(answer.body["access_token"].as_str().unwrap());
        assert_eq!(claims["aud"], resource);
        assert_eq!(claims["roles"], json!([role]));
    }
    emulator.shutdown().await;
}

#[tokio::test]
async fn roles_are_absent_when_nothing_is_granted() {
    let emulator = start_demo().await;
    // Fabrikam consented to M365 Defender only: Graph and MDE tokens carry no roles.
    for resource in [GRAPH, MDE] {
        let answer = token_v2(&emulator, FABRIKAM, resource).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
        let claims = claims_of(answer.body["access_token"].as_str().unwrap());
        assert_eq!(claims["tid"], FABRIKAM);
        assert!(claims.get("roles").is_none(), "{claims}");
    }
    emulator.shutdown().await;
}

#[tokio::test]
async fn the_service_principal_is_stable_per_tenant() {
    let emulator = start_demo().await;
    let oid = |answer: common::Answer| {
        claims_of(answer.body["access_token"].as_str().unwrap())["oid"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let first = oid(token_v2(&emulator, CONTOSO, M365D).await);
    let again = oid(token_v1(&emulator, "contoso.com", GRAPH).await);
    let other = oid(token_v2(&emulator, FABRIKAM, M365D).await);
    assert_eq!(first, again);
    assert_ne!(first, other);
    emulator.shutdown().await;
}

struct ErrorCase {
    name: &'static str,
    path: String,
    form: Vec<(&'static str, String)>,
    status: u16,
    error: &'static str,
    code: u64,
}

fn v2_form(client_id: &str, secret: &str, scope: &str) -> Vec<(&'static str, String)> {
    vec![
        ("grant_type", "client_credentials".to_owned()),
        ("client_id", client_id.to_owned()),
        ("client_secret", secret.to_owned()),
        ("scope", scope.to_owned()),
    ]
}

fn without(mut form: Vec<(&'static str, String)>, name: &str) -> Vec<(&'static str, String)> {
    form.retain(|(field, _)| *field != name);
    form
}

#[tokio::test]
async fn every_refusal_has_its_entra_code() {
    let emulator = start_demo().await;
    let m365d_scope = format!("{M365D}/.default");
    let good = v2_form(CLIENT_ID, SECRET, &m365d_scope);
    let v2 = |tenant: &str| format!("/{tenant}/oauth2/v2.0/token");
    let case = |name, path: String, form, status, error, code| ErrorCase {
        name,
        path,
        form,
        status,
        error,
        code,
    };
    let cases = vec![
        case(
            "malformed tenant",
            v2("contoso"),
            good.clone(),
            400,
            "invalid_request",
            900023,
        ),
        case(
            "common",
            v2("common"),
            good.clone(),
            400,
            "invalid_request",
            9001023,
        ),
        case(
            "organizations",
            v2("organizations"),
            good.clone(),
            400,
            "invalid_request",
            9001023,
        ),
        case(
            "consumers",
            v2("consumers"),
            good.clone(),
            400,
            "invalid_request",
            9001023,
        ),
        case(
            "unknown domain",
            v2("unknown.example"),
            good.clone(),
            400,
            "invalid_tenant",
            90002,
        ),
        case(
            "unknown tenant id",
            v2("99999999-9999-4999-8999-999999999999"),
            good.clone(),
            400,
            "invalid_tenant",
            90002,
        ),
        case(
            "unknown client",
            v2(CONTOSO),
            v2_form("99999999-9999-4999-8999-999999999999", SECRET, &m365d_scope),
            400,
            "unauthorized_client",
            700016,
        ),
        case(
            "not consented",
            v2(NORTHWIND),
            good.clone(),
            400,
            "unauthorized_client",
            700016,
        ),
        case(
            "unknown resource",
            v2(CONTOSO),
            v2_form(CLIENT_ID, SECRET, "https://management.azure.com/.default"),
            400,
            "invalid_resource",
            500011,
        ),
        case(
            "the sample's scope typo",
            v2(CONTOSO),
            v2_form(
                CLIENT_ID,
                SECRET,
                "https://api.security.microsoft.com.default",
            ),
            400,
            "invalid_scope",
            70011,
        ),
        case(
            "delegated scope",
            v2(CONTOSO),
            v2_form(CLIENT_ID, SECRET, "https://graph.microsoft.com/User.Read"),
            400,
            "invalid_scope",
            70011,
        ),
        case(
            "two resources",
            v2(CONTOSO),
            v2_form(
                CLIENT_ID,
                SECRET,
                &format!("{M365D}/.default {GRAPH}/.default"),
            ),
            400,
            "invalid_scope",
            700022,
        ),
        case(
            "wrong secret",
            v2(CONTOSO),
            v2_form(CLIENT_ID, "wrong-secret-value", &m365d_scope),
            401,
            "invalid_client",
            7000215,
        ),
        case(
            "missing grant_type",
            v2(CONTOSO),
            without(good.clone(), "grant_type"),
            400,
            "invalid_request",
            900144,
        ),
        case(
            "unsupported grant_type",
            v2(CONTOSO),
            {
                let mut form = without(good.clone(), "grant_type");
                form.push(("grant_type", "password".to_owned()));
                form
            },
            400,
            "unsupported_grant_type",
            70003,
        ),
        case(
            "missing client_id",
            v2(CONTOSO),
            without(good.clone(), "client_id"),
            400,
            "invalid_request",
            900144,
        ),
        case(
            "missing scope",
            v2(CONTOSO),
            without(good.clone(), "scope"),
            400,
            "invalid_request",
            900144,
        ),
        case(
            "v1 resource on v2",
            v2(CONTOSO),
            {
                let mut form = good.clone();
                form.push(("resource", M365D.to_owned()));
                form
            },
            400,
            "invalid_request",
            901002,
        ),
        case(
            "missing resource (v1)",
            format!("/{CONTOSO}/oauth2/token"),
            without(good.clone(), "scope"),
            400,
            "invalid_request",
            900144,
        ),
        case(
            "no credential",
            v2(CONTOSO),
            without(good.clone(), "client_secret"),
            401,
            "invalid_client",
            7000218,
        ),
    ];
    for case in cases {
        let form: Vec<(&str, &str)> = case.form.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let answer = post_form(&format!("{}{}", emulator.base_url(), case.path), &form).await;
        assert_entra_error(&answer, case.status, case.error, case.code);
        assert!(
            !answer.text.contains(SECRET),
            "{}: echoes the secret",
            case.name
        );
        assert!(
            !answer.text.contains("wrong-secret-value"),
            "{}: echoes the secret",
            case.name
        );
    }
    emulator.shutdown().await;
}

#[tokio::test]
async fn get_on_a_token_endpoint_is_refused() {
    let emulator = start_demo().await;
    let answer = get(&format!(
        "{}/{CONTOSO}/oauth2/v2.0/token",
        emulator.base_url()
    ))
    .await;
    assert_entra_error(&answer, 400, "invalid_request", 900561);
    emulator.shutdown().await;
}

#[tokio::test]
async fn expired_and_disabled_apps_are_refused() {
    let emulator = start_demo().await;
    let handle = emulator.handle();
    handle
        .set_secrets(
            CLIENT_ID,
            vec![SecretConfig {
                value: SECRET.to_owned(),
                expires: Some("2020-01-01T00:00:00Z".parse().unwrap()),
            }],
        )
        .unwrap();
    let answer = token_v2(&emulator, CONTOSO, M365D).await;
    assert_entra_error(&answer, 401, "invalid_client", 7000222);
    assert!(!answer.text.contains(SECRET));

    handle.set_app_disabled(CLIENT_ID, true).unwrap();
    let answer = token_v2(&emulator, CONTOSO, M365D).await;
    assert_entra_error(&answer, 400, "unauthorized_client", 7000112);
    emulator.shutdown().await;
}

#[tokio::test]
async fn the_client_request_id_comes_back_as_correlation_id() {
    let emulator = start_demo().await;
    let correlation = "0f0e0d0c-0b0a-4908-8706-050403020100";
    let response = client()
        .post(format!(
            "{}/{NORTHWIND}/oauth2/v2.0/token",
            emulator.base_url()
        ))
        .header("client-request-id", correlation)
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", CLIENT_ID),
            ("client_secret", SECRET),
            ("scope", "https://api.security.microsoft.com/.default"),
        ])
        .send()
        .await
        .unwrap();
    let answer = answer(response).await;
    assert_entra_error(&answer, 400, "unauthorized_client", 700016);
    assert_eq!(answer.body["correlation_id"], correlation);
    emulator.shutdown().await;
}

#[tokio::test]
async fn metadata_resolves_a_domain_to_the_tenant_id() {
    let emulator = start_demo().await;
    let base = emulator.base_url();
    let answer = get(&format!(
        "{base}/fabrikam.onmicrosoft.com/v2.0/.well-known/openid-configuration"
    ))
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    let body = &answer.body;
    assert_eq!(body["issuer"], format!("{base}/{FABRIKAM}/v2.0"));
    assert_eq!(
        body["token_endpoint"],
        format!("{base}/{FABRIKAM}/oauth2/v2.0/token")
    );
    assert_eq!(
        body["jwks_uri"],
        format!("{base}/{FABRIKAM}/discovery/v2.0/keys")
    );
    assert_eq!(
        body["authorization_endpoint"],
        format!("{base}/{FABRIKAM}/oauth2/v2.0/authorize")
    );
    assert_eq!(body["tenant_region_scope"], "NA");

    let v1 = get(&format!(
        "{base}/contoso.com/.well-known/openid-configuration"
    ))
    .await;
    assert_eq!(
        v1.body["issuer"],
        format!("https://sts.windows.net/{CONTOSO}/")
    );

    let unknown = get(&format!(
        "{base}/unknown.example/v2.0/.well-known/openid-configuration"
    ))
    .await;
    assert_entra_error(&unknown, 400, "invalid_tenant", 90002);
    let malformed = get(&format!(
        "{base}/contoso/v2.0/.well-known/openid-configuration"
    ))
    .await;
    assert_entra_error(&malformed, 400, "invalid_request", 900023);
    emulator.shutdown().await;
}

#[tokio::test]
async fn keys_are_published_under_every_path() {
    let emulator = start_demo().await;
    let base = emulator.base_url();
    let mut kids = Vec::new();
    for path in [
        "common/discovery/v2.0/keys",
        "contoso.com/discovery/v2.0/keys",
        "33333333-3333-4333-8333-333333333333/discovery/keys",
    ] {
        let answer = get(&format!("{base}/{path}")).await;
        assert_eq!(answer.status, StatusCode::OK, "{path}: {}", answer.text);
        let key = &answer.body["keys"][0];
        for field in ["kty", "use", "kid", "n", "e"] {
            assert!(key[field].is_string(), "{path}: {field}");
        }
        assert_eq!(key["kty"], "RSA");
        assert_eq!(key["use"], "sig");
        kids.push(key["kid"].as_str().unwrap().to_owned());
    }
    assert!(kids.windows(2).all(|pair| pair[0] == pair[1]));
    let unknown = get(&format!("{base}/unknown.example/discovery/v2.0/keys")).await;
    assert_entra_error(&unknown, 400, "invalid_tenant", 90002);
    emulator.shutdown().await;
}

// --- certificate credentials ------------------------------------------------------------------

struct TestCertificate {
    pem: String,
    der: Vec<u8>,
    key_pem: String,
}

/// A throw-away RSA key and self-signed certificate.
fn test_certificate() -> TestCertificate {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
    let certificate = rcgen::CertificateParams::new(vec!["emulator-test".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    TestCertificate {
        pem: certificate.pem(),
        der: certificate.der().to_vec(),
        key_pem: key.serialize_pem(),
    }
}

enum Thumbprint {
    Sha256,
    Sha1,
}

fn assertion(
    signer: &TestCertificate,
    named: &TestCertificate,
    alg: Algorithm,
    thumbprint: Thumbprint,
    aud: &str,
    nbf: i64,
    exp: i64,
) -> String {
    let mut header = Header::new(alg);
    match thumbprint {
        Thumbprint::Sha256 => {
            header.x5t_s256 =
                Some(URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, &named.der)));
        }
        Thumbprint::Sha1 => {
            header.x5t = Some(URL_SAFE_NO_PAD.encode(digest::digest(
                &digest::SHA1_FOR_LEGACY_USE_ONLY,
                &named.der,
            )));
        }
    }
    let claims = json!({
        "aud": aud,
        "iss": CLIENT_ID,
        "sub": CLIENT_ID,
        "jti": uuid::Uuid::new_v4().to_string(),
        "nbf": nbf,
        "iat": nbf,
        "exp": exp,
    });
    encode(
        &header,
        &claims,
        &EncodingKey::from_rsa_pem(signer.key_pem.as_bytes()).unwrap(),
    )
    .unwrap()
}

async fn post_assertion(url: &str, assertion: &str) -> common::Answer {
    let (name, value) = if url.ends_with("/v2.0/token") {
        ("scope", "https://api.security.microsoft.com/.default")
    } else {
        ("resource", "https://api.security.microsoft.com")
    };
    post_form(
        url,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", CLIENT_ID),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("client_assertion", assertion),
            (name, value),
        ],
    )
    .await
}

#[tokio::test]
async fn certificate_assertions_are_verified() {
    let emulator = start_demo().await;
    let registered = test_certificate();
    let stranger = test_certificate();
    emulator
        .handle()
        .set_certificates(
            CLIENT_ID,
            &[CertificateConfig {
                pem: registered.pem.clone(),
            }],
        )
        .unwrap();
    let base = emulator.base_url();
    let v2_url = format!("{base}/{CONTOSO}/oauth2/v2.0/token");
    let now = Utc::now().timestamp();

    // PS256 + x5t#S256, addressed to the v2 endpoint: the recommended form.
    let good = assertion(
        &registered,
        &registered,
        Algorithm::PS256,
        Thumbprint::Sha256,
        &v2_url,
        now - 30,
        now + 540,
    );
    let answer = post_assertion(&v2_url, &good).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    let claims = claims_of(answer.body["access_token"].as_str().unwrap());
    assert_eq!(claims["azpacr"], "2");
    assert_eq!(claims["roles"], json!(["Incident.Read.All"]));

    // RS256 + SHA-1 x5t, tenant named by domain, v1 endpoint and v1 audience.
    let v1_url = format!("{base}/contoso.com/oauth2/token");
    let legacy = assertion(
        &registered,
        &registered,
        Algorithm::RS256,
        Thumbprint::Sha1,
        &v1_url,
        now - 30,
        now + 540,
    );
    let answer = post_assertion(&v1_url, &legacy).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    assert_eq!(
        claims_of(answer.body["access_token"].as_str().unwrap())["appidacr"],
        "2"
    );

    let refusals = [
        (
            "signed by another key",
            assertion(
                &stranger,
                &registered,
                Algorithm::PS256,
                Thumbprint::Sha256,
                &v2_url,
                now - 30,
                now + 540,
            ),
            700027,
        ),
        (
            "unknown thumbprint",
            assertion(
                &stranger,
                &stranger,
                Algorithm::PS256,
                Thumbprint::Sha256,
                &v2_url,
                now - 30,
                now + 540,
            ),
            700027,
        ),
        (
            "expired",
            assertion(
                &registered,
                &registered,
                Algorithm::PS256,
                Thumbprint::Sha256,
                &v2_url,
                now - 1200,
                now - 600,
            ),
            700024,
        ),
        (
            "not valid yet",
            assertion(
                &registered,
                &registered,
                Algorithm::PS256,
                Thumbprint::Sha256,
                &v2_url,
                now + 900,
                now + 1200,
            ),
            700024,
        ),
        (
            "lifetime over an hour",
            assertion(
                &registered,
                &registered,
                Algorithm::PS256,
                Thumbprint::Sha256,
                &v2_url,
                now - 30,
                now + 7200,
            ),
            700024,
        ),
        (
            "another tenant's audience",
            assertion(
                &registered,
                &registered,
                Algorithm::PS256,
                Thumbprint::Sha256,
                &format!("{base}/{FABRIKAM}/oauth2/v2.0/token"),
                now - 30,
                now + 540,
            ),
            700027,
        ),
        ("not a JWT", "not-a-jwt".to_owned(), 700027),
    ];
    for (name, assertion, code) in refusals {
        let answer = post_assertion(&v2_url, &assertion).await;
        assert_entra_error(&answer, 401, "invalid_client", code);
        assert!(
            !answer.text.contains(&assertion),
            "{name}: echoes the assertion"
        );
    }

    // A secret and an assertion together are ambiguous.
    let answer = post_form(
        &v2_url,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", CLIENT_ID),
            ("client_secret", SECRET),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("client_assertion", &good),
            ("scope", "https://api.security.microsoft.com/.default"),
        ],
    )
    .await;
    assert_entra_error(&answer, 401, "invalid_client", 7000218);
    emulator.shutdown().await;
}
