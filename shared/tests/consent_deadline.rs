//! The consent callback and minting within an invocation's deadline, against the in-process
//! emulator with Entra throttling the token endpoint (`Retry-After: 19`): the callback answers
//! before the deadline, the tenant is recorded `pending` with the tenant its administrator
//! proved, and the fetch cycle's re-verification completes it once Entra answers again.

use std::time::Duration;

use defender_emulator::{Fault, FaultMatch, browser, demo};
use defender_partner::ErrorCode;
use defender_partner::config::{
    ENV_CONSENT_PROOF_SECONDS, ENV_CONSENT_REDIRECT_URI, ENV_STATE_KEY, ENV_TOKEN_DEADLINE_SECONDS,
};
use defender_partner::consent::{CallbackAnswer, ConsentService, LinkKind};
use defender_partner::deadline;
use defender_partner::fetch::Reverifier;
use defender_partner::minting::{MintRequest, TokenService};
use defender_partner::store::{Ownership, TenantStatus};
use defender_partner::tenant_id::TenantId;
use defender_partner_testkit::World;
use tokio::time::Instant;

use defender_partner::CallerError;
fn throttled_for(tenant: &str, retry_after: u64) -> Fault {
    Fault::throttle(FaultMatch::Token, retry_after, 1000).for_tenant(tenant)
}

#[tokio::test]
async fn throttled_entra_leaves_a_proven_tenant_pending_before_the_deadline() {
    let world = World::builder()
        .setting(ENV_STATE_KEY, "k".repeat(40))
        .setting(ENV_CONSENT_REDIRECT_URI, demo::CONSENT_REDIRECT_URI_IP)
        .setting(ENV_CONSENT_PROOF_SECONDS, "20")
        .setting(ENV_TOKEN_DEADLINE_SECONDS, "20")
        .start()
        .await
        .unwrap();
    let (emulator, services) = (&world.emulator, &world.services);
    let consent = ConsentService::build(services).await.unwrap();
    let woodgrove = TenantId::parse(demo::WOODGROVE_TENANT_ID).unwrap();

    // The administrator consents (the legacy link: the sign-in is redeemed at `organizations`,
    // which Entra does not throttle here) and signs in.
    let link = consent
        .start("CRM-SLOW", Some(LinkKind::Legacy), None)
        .await
        .unwrap();
    let location = browser::consent(&link.url, demo::WOODGROVE_TENANT_ID, "accept")
        .await
        .unwrap();
    let CallbackAnswer::Redirect(sign_in) = consent
        .callback(&browser::query_of(&location).unwrap())
        .await
    else {
        panic!("the consent continues to the administrator's sign-in");
    };
    let location = browser::sign_in(&sign_in, demo::WOODGROVE_ADMIN_UPN)
        .await
        .unwrap();

    // Entra now throttles every token request for Woodgrove with a wait longer than the
    // invocation has left.
    emulator
        .handle()
        .push_fault(throttled_for(demo::WOODGROVE_TENANT_ID, 19))
        .unwrap();
    let budget = Duration::from_secs(4);
    let started = Instant::now();
    let answer = deadline::within(
        started + budget,
        consent.callback(&browser::query_of(&location).unwrap()),
    )
    .await;
    let took = started.elapsed();
    let page = answer.page().expect("a page");
    assert_eq!(page.status, 202, "{}", page.title);
    assert_eq!(page.title, "Almost done");
    assert!(
        took < budget + Duration::from_millis(500),
        "the callback answered after {took:?}, past its {budget:?} deadline"
    );
    let record = services
        .registry
        .get(&woodgrove)
        .await
        .unwrap()
        .expect("the proven tenant is recorded");
    assert_eq!(record.status, TenantStatus::Pending, "{record:?}");
    assert_eq!(record.ownership, Ownership::AdminSignIn);
    assert_eq!(record.customer_ref.as_deref(), Some("CRM-SLOW"));
    assert!(
        record
            .status_reason
            .as_deref()
            .is_some_and(|reason| reason.starts_with("throttled")),
        "{record:?}"
    );

    // mint-token under the same throttling answers at once with the wait, not after it.
    let minting = TokenService::new(services);
    let request = MintRequest {
        tenant: Some(demo::CONTOSO_TENANT_ID.to_owned()),
        api: Some("m365d".to_owned()),
        endpoint_version: None,
        user_token: None,
        user_oid: None,
    };
    emulator
        .handle()
        .push_fault(throttled_for(demo::CONTOSO_TENANT_ID, 19))
        .unwrap();
    services
        .registry
        .upsert(&defender_partner::store::TenantRecord::new(
            TenantId::parse(demo::CONTOSO_TENANT_ID).unwrap(),
            "Contoso",
            TenantStatus::Active,
        ))
        .await
        .unwrap();
    let started = Instant::now();
    let error = deadline::within(started + Duration::from_secs(3), minting.mint(&request))
        .await
        .unwrap_err();
    assert_eq!(error.code(), ErrorCode::Throttled);
    assert_eq!(error.retry_after(), Some(Duration::from_secs(19)));
    assert!(started.elapsed() < Duration::from_secs(3));

    // Entra answers again: the fetch cycle's re-verification completes the onboarding.
    emulator.handle().clear_faults();
    let cycle = Reverifier {
        tokens: services.tokens.clone(),
        settings: services.settings.proof(),
    };
    let record = cycle
        .prove(
            &woodgrove,
            &services.settings.consent.apis,
            services.registry.as_ref(),
        )
        .await
        .unwrap();
    assert_eq!(record.status, TenantStatus::Active, "{record:?}");
    assert_eq!(record.ownership, Ownership::AdminSignIn);
    world.shutdown().await;
}
