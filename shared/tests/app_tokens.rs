//! The token path end to end inside one process: the real `TokenService` and
//! `AppTokenProvider` against the Entra emulator on a loopback port, with an embedded registry.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use defender_emulator::{FaultMatch, SecretConfig};
use defender_partner::ErrorCode;
use defender_partner::minting::{MintRequest, TokenService};
use defender_partner::store::TenantStatus;
use defender_partner::tenant_id::TenantId;
use defender_partner_testkit::control::delay;
use secrecy::ExposeSecret;
use serde_json::json;

use defender_partner::CallerError;
#[tokio::test]
async fn mints_verified_tokens_for_each_api_on_both_endpoints() {
    let fixture = Fixture::start(&[]).await;
    for (api, resource, role) in [
        (
            "m365d",
            "https://api.security.microsoft.com",
            "Incident.Read.All",
        ),
        (
            "mde",
            "https://api.securitycenter.microsoft.com",
            "Alert.ReadWrite.All",
        ),
        (
            "graph",
            "https://graph.microsoft.com",
            "SecurityIncident.Read.All",
        ),
    ] {
        let token = fixture.mint(CONTOSO, api).await.unwrap();
        assert_eq!(token.tenant_id, CONTOSO);
        assert_eq!(token.resource, resource);
        assert_eq!(token.roles, vec![role]);
        assert!(token.expires_in > 3500 && token.expires_in <= 3600);
        let claims = claims(&token);
        assert_eq!(claims["tid"], CONTOSO);
        assert_eq!(claims["aud"], resource);
        assert_eq!(claims["ver"], "2.0");
    }
    let v1 = fixture
        .service
        .mint(&MintRequest {
            tenant: Some(CONTOSO.into()),
            api: Some("m365d".into()),
            endpoint_version: Some("v1".into()),
            user_token: None,
            user_oid: None,
        })
        .await
        .unwrap();
    assert_eq!(claims(&v1)["ver"], "1.0");
    assert_eq!(claims(&v1)["appid"], CLIENT_ID);
    fixture.stop().await;
}

#[tokio::test]
async fn v1_can_be_the_configured_default() {
    let fixture = Fixture::start(&[("DP_TOKEN_ENDPOINT", "v1")]).await;
    let token = fixture.mint(CONTOSO, "graph").await.unwrap();
    assert_eq!(claims(&token)["ver"], "1.0");
    fixture.stop().await;
}

#[tokio::test]
async fn a_verified_domain_resolves_to_its_tenant() {
    let fixture = Fixture::start(&[]).await;
    let token = fixture.mint("Contoso.Example.com", "m365d").await.unwrap();
    assert_eq!(token.tenant_id, CONTOSO);
    let unknown = fixture
        .mint("unknown.example.org", "m365d")
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), ErrorCode::TenantUnknown);
    fixture.stop().await;
}

#[tokio::test]
async fn tokens_are_cached_and_concurrent_callers_share_one_request() {
    let fixture = Arc::new(Fixture::start(&[]).await);
    // Slow the first token answer so every caller arrives while it is in flight.
    fixture
        .handle
        .push_fault(delay(FaultMatch::Token, 300, 1))
        .unwrap();
    let callers: Vec<_> = (0..12)
        .map(|_| {
            let fixture = fixture.clone();
            tokio::spawn(async move { fixture.mint(CONTOSO, "m365d").await.unwrap() })
        })
        .collect();
    let mut tokens = Vec::new();
    for caller in callers {
        tokens.push(caller.await.unwrap());
    }
    assert_eq!(
        fixture.token_requests(),
        1,
        "one request for twelve callers"
    );
    assert!(
        tokens
            .iter()
            .all(|token| token.access_token.expose_secret()
                == tokens[0].access_token.expose_secret())
    );
    fixture.mint(CONTOSO, "m365d").await.unwrap();
    assert_eq!(fixture.token_requests(), 1, "served from the cache");
    fixture.mint(CONTOSO, "mde").await.unwrap();
    assert_eq!(fixture.token_requests(), 2, "another API is another key");
    Arc::into_inner(fixture).unwrap().stop().await;
}

#[tokio::test]
async fn a_token_inside_the_refresh_margin_is_replaced() {
    // Tokens shorter than the setting serve half their life (here 2 s: one second), then are
    // replaced; they are no longer fetched again for every call.
    let fixture = Fixture::start(&[("DP_TOKEN_REFRESH_AHEAD_SECONDS", "600")]).await;
    fixture.handle.set_token_lifetime(2).unwrap();
    fixture.mint(CONTOSO, "m365d").await.unwrap();
    fixture.mint(CONTOSO, "m365d").await.unwrap();
    assert_eq!(fixture.token_requests(), 1, "reused within half its life");
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    fixture.mint(CONTOSO, "m365d").await.unwrap();
    assert_eq!(fixture.token_requests(), 2, "replaced past half its life");
    fixture.stop().await;
}

#[tokio::test]
async fn the_registry_decides_who_gets_tokens() {
    let fixture = Fixture::start(&[]).await;
    let unregistered = "ffffffff-6666-4666-8666-666666666666";
    assert_eq!(
        fixture
            .mint(unregistered, "m365d")
            .await
            .unwrap_err()
            .code(),
        ErrorCode::TenantNotRegistered
    );
    for status in [
        TenantStatus::Pending,
        TenantStatus::Revoked,
        TenantStatus::Offboarded,
    ] {
        fixture
            .world
            .services
            .registry
            .set_status(&TenantId::parse(CONTOSO).unwrap(), status, None)
            .await
            .unwrap();
        let error = fixture.mint(CONTOSO, "m365d").await.unwrap_err();
        assert_eq!(error.code(), ErrorCode::TenantNotActive);
        assert!(error.to_string().contains(status.as_str()));
    }
    assert_eq!(
        fixture.token_requests(),
        0,
        "refused before asking Entra ID"
    );
    fixture.stop().await;
}

#[tokio::test]
async fn bad_requests_are_refused_with_codes() {
    let fixture = Fixture::start(&[]).await;
    let cases = [
        (
            json!({"tenant": "common", "api": "m365d"}),
            ErrorCode::InvalidTenantId,
        ),
        (
            json!({"tenant": "not a tenant", "api": "m365d"}),
            ErrorCode::InvalidTenantId,
        ),
        (
            json!({"tenant": CONTOSO, "api": "sentinel"}),
            ErrorCode::UnknownApi,
        ),
        (json!({"api": "m365d"}), ErrorCode::InvalidRequest),
        (json!({"tenant": CONTOSO}), ErrorCode::InvalidRequest),
        (
            json!({"tenant": CONTOSO, "api": "m365d", "tenantId": "x"}),
            ErrorCode::InvalidRequest,
        ),
        (
            json!({"tenant": CONTOSO, "api": "m365d", "endpoint_version": "v9"}),
            ErrorCode::InvalidRequest,
        ),
        (json!([1, 2]), ErrorCode::InvalidRequest),
        (
            json!({"tenant": 42, "api": "m365d"}),
            ErrorCode::InvalidRequest,
        ),
    ];
    for (payload, code) in cases {
        let error = fixture
            .service
            .mint_json(payload.clone())
            .await
            .unwrap_err();
        assert_eq!(error.code(), code, "{payload}");
    }
    fixture.stop().await;
}

#[tokio::test]
async fn entra_refusals_reach_the_caller_typed() {
    let fixture = Fixture::start(&[]).await;
    assert_eq!(
        fixture.mint(NORTHWIND, "m365d").await.unwrap_err().code(),
        ErrorCode::NotConsented
    );
    assert_eq!(
        fixture.mint(GHOST, "m365d").await.unwrap_err().code(),
        ErrorCode::TenantUnknown
    );
    let missing = fixture.mint(FABRIKAM, "m365d").await.unwrap_err();
    assert_eq!(missing.code(), ErrorCode::RolesMissing);
    assert!(missing.to_string().contains("Incident.Read.All"));
    fixture.handle.set_app_disabled(CLIENT_ID, true).unwrap();
    assert_eq!(
        fixture.mint(CONTOSO, "m365d").await.unwrap_err().code(),
        ErrorCode::AppDisabled
    );
    fixture.stop().await;
}

#[tokio::test]
async fn a_token_without_the_roles_is_not_cached_so_a_new_consent_works_at_once() {
    let fixture = Fixture::start(&[]).await;
    assert_eq!(
        fixture.mint(FABRIKAM, "m365d").await.unwrap_err().code(),
        ErrorCode::RolesMissing
    );
    fixture
        .handle
        .set_grant(
            FABRIKAM,
            &serde_json::from_value(json!({"client_id": CLIENT_ID, "resource": "https://api.security.microsoft.com", "roles": ["Incident.ReadWrite.All"]})).unwrap(),
        )
        .unwrap();
    let token = fixture.mint(FABRIKAM, "m365d").await.unwrap();
    assert_eq!(token.roles, vec!["Incident.ReadWrite.All"]);
    fixture.stop().await;
}

#[tokio::test]
async fn wrong_and_expired_secrets_are_typed() {
    let fixture = Fixture::start(&[]).await;
    fixture
        .handle
        .set_secrets(
            CLIENT_ID,
            vec![SecretConfig {
                value: "another".into(),
                expires: None,
            }],
        )
        .unwrap();
    let wrong = fixture.mint(CONTOSO, "m365d").await.unwrap_err();
    assert_eq!(wrong.code(), ErrorCode::CredentialInvalid);
    assert!(wrong.to_string().contains("VALUE"));
    fixture
        .handle
        .set_secrets(
            CLIENT_ID,
            vec![SecretConfig {
                value: SECRET.into(),
                expires: Some(chrono::Utc::now() - chrono::Duration::days(1)),
            }],
        )
        .unwrap();
    assert_eq!(
        fixture.mint(CONTOSO, "m365d").await.unwrap_err().code(),
        ErrorCode::CredentialExpired
    );
    fixture.stop().await;
}

#[tokio::test]
async fn a_rotated_secret_heals_without_a_restart() {
    let fixture = Fixture::start(&[]).await;
    fixture.mint(CONTOSO, "m365d").await.unwrap();
    // The operator rotates: Entra knows only the new secret, the store holds it too, but the
    // function still has the old one cached (TTL 300 s).
    fixture
        .handle
        .set_secrets(
            CLIENT_ID,
            vec![SecretConfig {
                value: "rotated-secret-Qw3".into(),
                expires: None,
            }],
        )
        .unwrap();
    fixture.write_secret("rotated-secret-Qw3");
    let token = fixture.mint(CONTOSO, "mde").await.unwrap();
    assert_eq!(token.tenant_id, CONTOSO);
    let statuses: Vec<u16> = fixture
        .handle
        .token_requests()
        .iter()
        .map(|record| record.status)
        .collect();
    assert_eq!(
        statuses,
        vec![200, 401, 200],
        "one refusal, one re-read, one success"
    );
    fixture.stop().await;
}

#[tokio::test]
async fn throttling_is_obeyed_then_succeeds() {
    let fixture = Fixture::start(&[]).await;
    fixture.handle.push_fault(throttle(2, 1)).unwrap();
    let token = fixture.mint(CONTOSO, "m365d").await.unwrap();
    assert_eq!(token.tenant_id, CONTOSO);
    let requests = fixture.handle.token_requests();
    assert_eq!(requests.len(), 3);
    for pair in requests.windows(2) {
        let gap = pair[1].at - pair[0].at;
        assert!(
            gap >= chrono::Duration::milliseconds(950),
            "retried before Retry-After: {gap}"
        );
    }
    fixture.stop().await;
}

#[tokio::test]
async fn a_throttle_longer_than_the_deadline_is_passed_on() {
    let fixture = Fixture::start(&[("DP_TOKEN_DEADLINE_SECONDS", "3")]).await;
    fixture.handle.push_fault(throttle(1000, 1)).unwrap();
    let error = fixture.mint(CONTOSO, "m365d").await.unwrap_err();
    assert_eq!(error.code(), ErrorCode::Throttled);
    assert!(fixture.token_requests() <= 4, "no faster than Retry-After");
    fixture.handle.clear_faults();
    fixture.handle.push_fault(throttle(1, 120)).unwrap();
    let error = fixture.mint(CONTOSO, "mde").await.unwrap_err();
    assert_eq!(error.retry_after(), Some(Duration::from_secs(120)));
    fixture.stop().await;
}

#[tokio::test]
async fn outages_are_retried_then_reported() {
    let fixture = Fixture::start(&[("DP_TOKEN_DEADLINE_SECONDS", "2")]).await;
    let mut outage = throttle(1, 0);
    outage.status = Some(503);
    outage.retry_after = None;
    fixture.handle.push_fault(outage.clone()).unwrap();
    fixture.mint(CONTOSO, "m365d").await.unwrap();
    outage.count = 10_000;
    fixture.handle.push_fault(outage).unwrap();
    assert_eq!(
        fixture.mint(CONTOSO, "graph").await.unwrap_err().code(),
        ErrorCode::MicrosoftUnavailable
    );
    fixture.stop().await;
}

struct TestCertificate {
    pem: String,
    key_pem: String,
}

fn test_certificate() -> TestCertificate {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
    let certificate = rcgen::CertificateParams::new(vec!["defender-partner-test".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    TestCertificate {
        pem: certificate.pem(),
        key_pem: key.serialize_pem(),
    }
}

#[tokio::test]
async fn a_certificate_credential_mints_with_ps256_and_rs256() {
    let fixture = Fixture::start(&[]).await;
    let certificate = test_certificate();
    fixture
        .handle
        .set_certificates(
            CLIENT_ID,
            &[serde_json::from_value(json!({"pem": certificate.pem})).unwrap()],
        )
        .unwrap();
    fixture.handle.set_secrets(CLIENT_ID, vec![]).unwrap();
    for (api, algorithm) in [("m365d", "PS256"), ("mde", "RS256")] {
        fixture.world.write_credential_file(
            &json!({"client_id": CLIENT_ID, "certificate_pem": certificate.pem, "private_key_pem": certificate.key_pem, "signing_algorithm": algorithm}).to_string(),
        );
        // A fresh service so the new credential file is read.
        let services = fixture.world.new_instance().await.unwrap();
        let token = TokenService::new(&services)
            .mint(&MintRequest {
                tenant: Some(CONTOSO.into()),
                api: Some(api.into()),
                endpoint_version: None,
                user_token: None,
                user_oid: None,
            })
            .await
            .unwrap_or_else(|error| panic!("{algorithm}: {error}"));
        assert_eq!(token.tenant_id, CONTOSO);
    }
    let assertions = fixture
        .handle
        .token_requests()
        .iter()
        .filter(|record| record.status == 200)
        .count();
    assert_eq!(assertions, 2);
    // Another key than the registered certificate's: refused as an invalid credential.
    let other = test_certificate();
    fixture.world.write_credential_file(
        &json!({"client_id": CLIENT_ID, "certificate_pem": certificate.pem, "private_key_pem": other.key_pem}).to_string(),
    );
    let services = fixture.world.new_instance().await.unwrap();
    let error = TokenService::new(&services)
        .mint(&MintRequest {
            tenant: Some(CONTOSO.into()),
            api: Some("graph".into()),
            endpoint_version: None,
            user_token: None,
            user_oid: None,
        })
        .await
        .unwrap_err();
    assert_eq!(error.code(), ErrorCode::CredentialInvalid);
    fixture.stop().await;
}
