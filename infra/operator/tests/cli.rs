//! `dp-operator` as an operator runs it: the real binary, the embedded store, the emulator.

mod common;

use common::Operator;
use defender_emulator::demo;
use serde_json::json;

#[tokio::test]
async fn an_operator_onboards_verifies_lists_and_offboards() {
    let operator = Operator::on_demo().await;
    let emulator = &operator.world.emulator;

    let link = operator
        .json(&["--json", "consent-link", "--customer", "CRM-1042"])
        .await;
    let url = link["url"].as_str().unwrap();
    assert!(
        url.starts_with(&format!(
            "{}/organizations/v2.0/adminconsent?",
            emulator.base_url()
        )),
        "{url}"
    );
    assert!(url.contains(demo::CLIENT_ID));
    assert_eq!(link["customer_ref"], "CRM-1042");
    let legacy = operator
        .json(&[
            "--json",
            "consent-link",
            "--customer",
            "CRM-1042",
            "--link",
            "legacy",
        ])
        .await;
    assert!(
        legacy["url"]
            .as_str()
            .unwrap()
            .contains("/common/oauth2/authorize?")
    );
    operator
        .fails(
            &["consent-link", "--customer", "<script>"],
            "customer reference",
        )
        .await;
    operator
        .fails(
            &["consent-link", "--customer", "x", "--link", "implicit"],
            "unknown consent link",
        )
        .await;

    // Contoso consented in the emulator: proven and active. Woodgrove did not: pending.
    let contoso = operator
        .json(&[
            "--json",
            "tenants",
            "verify",
            demo::CONTOSO_TENANT_ID,
            "--customer",
            "CRM-C",
        ])
        .await;
    assert_eq!(contoso["status"], "active");
    // The default consent proves Graph.
    assert_eq!(contoso["roles"], json!(["SecurityIncident.Read.All"]));
    let woodgrove = operator
        .json(&[
            "--json",
            "tenants",
            "verify",
            demo::WOODGROVE_TENANT_ID,
            "--customer",
            "CRM-W",
        ])
        .await;
    assert_eq!(woodgrove["status"], "pending");
    assert!(
        woodgrove["status_reason"]
            .as_str()
            .unwrap()
            .starts_with("not_consented")
    );
    operator
        .fails(
            &["tenants", "verify", "ffffffff-6666-4666-8666-666666666666"],
            "not registered",
        )
        .await;
    operator
        .fails(&["tenants", "verify", "contoso.com"], "GUID")
        .await;

    let listed = operator.json(&["--json", "tenants", "list"]).await;
    assert_eq!(listed.as_array().unwrap().len(), 2);
    let text = operator.run(&["tenants", "list"], &[]).await;
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains(demo::CONTOSO_TENANT_ID) && text.contains("active") && text.contains("CRM-C"),
        "{text}"
    );

    let offboarded = operator
        .json(&["--json", "tenants", "offboard", demo::CONTOSO_TENANT_ID])
        .await;
    assert_eq!(offboarded["status"], "offboarded");
    operator
        .fails(
            &[
                "tenants",
                "offboard",
                "ffffffff-6666-4666-8666-666666666666",
            ],
            "not registered",
        )
        .await;
}
