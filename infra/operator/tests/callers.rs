//! `dp-operator callers` as an operator runs it: the real binary on the embedded store; what it
//! writes is what mint-token's check reads.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::Operator;
use defender_emulator::demo;
use defender_partner::callers::{Admission, Caller, CallerScoping};
use defender_partner::config::{CallerScopingMode, CallerScopingSettings};
use defender_partner::tenant_id::TenantId;
use serde_json::json;

const ROLE: &str = "arn:aws:iam::123456789012:role/soc-workflow";

#[tokio::test]
async fn an_operator_scopes_a_caller_then_revokes_it() {
    let operator = Operator::on_demo().await;
    assert_eq!(
        operator.json(&["--json", "callers", "list"]).await,
        json!([])
    );

    // A role given with its path, or as a session of it, is the same caller.
    let allowed = operator
        .json(&[
            "--json",
            "callers",
            "allow",
            "arn:aws:iam::123456789012:role/automation/SOC-Workflow",
            "--tenant",
            demo::CONTOSO_TENANT_ID,
            "--customer",
            "CRM-F",
        ])
        .await;
    assert_eq!(allowed["caller"], ROLE);
    assert_eq!(allowed["tenants"], json!([demo::CONTOSO_TENANT_ID]));
    assert_eq!(allowed["customer_refs"], json!(["CRM-F"]));
    let shown = operator
        .json(&[
            "--json",
            "callers",
            "show",
            "arn:aws:sts::123456789012:assumed-role/soc-workflow/run-17",
        ])
        .await;
    assert_eq!(shown, allowed);
    operator
        .json(&["--json", "callers", "allow", "direct-invoke", "--all"])
        .await;
    let listed = operator.json(&["--json", "callers", "list"]).await;
    let callers: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|scope| scope["caller"].as_str().unwrap())
        .collect();
    assert_eq!(callers, [ROLE, "direct-invoke"]);

    // What mint-token decides on what the operator wrote.
    let scoping = CallerScoping::new(
        CallerScopingSettings {
            mode: CallerScopingMode::Mapped,
            cache_ttl: Duration::ZERO,
            http_qualifier: None,
        },
        Arc::clone(&operator.world.services.callers),
    );
    let contoso = TenantId::parse(demo::CONTOSO_TENANT_ID).unwrap();
    let woodgrove = TenantId::parse(demo::WOODGROVE_TENANT_ID).unwrap();
    let role = Caller::Iam(ROLE.to_owned());
    assert_eq!(
        scoping.check(&role, &contoso, None).await,
        Ok(Admission::Mapping)
    );
    assert_eq!(
        scoping.check(&role, &woodgrove, Some("CRM-F")).await,
        Ok(Admission::Mapping)
    );
    assert!(
        scoping
            .check(&role, &woodgrove, Some("CRM-W"))
            .await
            .is_err()
    );
    let stranger = Caller::Iam("arn:aws:iam::123456789012:role/other".into());
    assert!(
        scoping.check(&stranger, &contoso, None).await.is_err(),
        "once a mapping exists, an unmapped caller is refused"
    );

    // Revoking one tenant, then everything: the caller stays mapped, to nothing.
    let narrowed = operator
        .json(&[
            "--json",
            "callers",
            "revoke",
            ROLE,
            "--tenant",
            demo::CONTOSO_TENANT_ID,
        ])
        .await;
    assert_eq!(narrowed["tenants"], json!([]));
    assert_eq!(narrowed["customer_refs"], json!(["CRM-F"]));
    let revoked = operator.json(&["--json", "callers", "revoke", ROLE]).await;
    assert_eq!(revoked["customer_refs"], json!([]));
    assert!(
        scoping
            .check(&role, &woodgrove, Some("CRM-F"))
            .await
            .is_err()
    );

    operator
        .fails(&["callers", "allow", ROLE], "--tenant, --customer or --all")
        .await;
    operator
        .fails(
            &["callers", "allow", "soc-workflow", "--all"],
            "not an IAM principal ARN",
        )
        .await;
    operator
        .fails(&["callers", "allow", ROLE, "--tenant", "common"], "tenant")
        .await;
    let text = operator.run(&["callers", "list"], &[]).await;
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains(ROLE) && text.contains("direct-invoke"),
        "{text}"
    );
}
