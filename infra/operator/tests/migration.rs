//! `dp-operator migration` as an operator runs it before 2027-02-01: the real binary, the
//! embedded store, the emulator's demo tenants.

mod common;

use common::Operator;
use defender_emulator::{GrantConfig, demo};
use serde_json::{Value, json};

/// What the migration tests ask of the operator.
impl Operator {
    /// The JSON report and whether the command exited 0.
    async fn migration(&self, args: &[&str], sources: &str) -> (Value, bool) {
        let mut all = vec!["--json", "migration"];
        all.extend_from_slice(args);
        let output = self.run(&all, &[("DP_SOURCES", sources)]).await;
        let report = serde_json::from_slice(&output.stdout).unwrap_or_else(|error| {
            panic!(
                "{error}: {}\n{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            )
        });
        (report, output.status.success())
    }

    async fn verify(&self, tenant: &str, customer: &str) -> Value {
        let output = self
            .run(
                &[
                    "--json",
                    "tenants",
                    "verify",
                    tenant,
                    "--customer",
                    customer,
                ],
                &[],
            )
            .await;
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).unwrap()
    }
}

fn tenant<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|tenant| tenant["tenant_id"] == id)
        .unwrap_or_else(|| panic!("{id} missing from {report}"))
}

#[tokio::test]
async fn migration_reports_each_tenant_and_issues_the_consent_links_needed() {
    let operator = Operator::on_demo().await;
    let emulator = &operator.world.emulator;
    // The default consent proves Graph: Contoso granted the incident role only; Fabrikam
    // consented to M365 Defender only, so its Graph proof leaves it pending.
    let contoso = operator.verify(demo::CONTOSO_TENANT_ID, "CRM-C").await;
    assert_eq!(contoso["status"], "active");
    assert_eq!(contoso["roles"], json!(["SecurityIncident.Read.All"]));
    let fabrikam = operator.verify(demo::FABRIKAM_TENANT_ID, "CRM-F").await;
    assert_eq!(fabrikam["status"], "pending");

    // A deployment still on the retiring sources.
    let retiring = "m365d-incidents,mde-alerts";
    let (report, success) = operator.migration(&[], retiring).await;
    assert!(!success, "tenants need action: the exit status says so");
    assert_eq!(report["retirement_date"], "2027-02-01");
    assert_eq!(
        report["retiring_sources"],
        json!(["m365d-incidents", "mde-alerts"])
    );
    assert_eq!(report["graph_sources"], "graph-incidents,graph-alerts");
    assert_eq!(report["needs_action"], 2);
    let c = tenant(&report, demo::CONTOSO_TENANT_ID);
    assert_eq!(
        c["retiring"],
        json!([
            {"source": "m365d-incidents", "successor": "graph-incidents", "retires": "2027-02-01"},
            {"source": "mde-alerts", "successor": "graph-alerts", "retires": "2027-02-01"},
        ])
    );
    assert_eq!(
        c["graph_permissions"],
        json!([
            {"source": "graph-incidents", "roles": "SecurityIncident.Read.All|SecurityIncident.ReadWrite.All", "granted": true},
            {"source": "graph-alerts", "roles": "SecurityAlert.Read.All|SecurityAlert.ReadWrite.All", "granted": false},
        ])
    );
    assert_eq!(c["action"], "new_consent");
    assert!(c.get("consent_link").is_none(), "no link unless asked");
    assert_eq!(
        tenant(&report, demo::FABRIKAM_TENANT_ID)["action"],
        "new_consent"
    );

    // The text form says the same, with the action spelled out.
    let text = operator
        .run(&["migration"], &[("DP_SOURCES", retiring)])
        .await;
    assert!(!text.status.success());
    let text = String::from_utf8_lossy(&text.stdout);
    for expected in [
        "after 2027-02-01 (MC1220762)",
        "m365d-incidents (retiring 2027-02-01 -> graph-incidents)",
        "SecurityAlert.Read.All|SecurityAlert.ReadWrite.All missing (graph-alerts)",
        "new consent link needed",
        "2 of 2 tenant(s) need action before 2027-02-01.",
    ] {
        assert!(
            text.contains(expected),
            "{expected:?} missing from:\n{text}"
        );
    }

    // --issue-links: one link per tenant needing consent, bound to it, asking for Graph.
    let (report, success) = operator.migration(&["--issue-links"], retiring).await;
    assert!(!success);
    for (id, customer) in [
        (demo::CONTOSO_TENANT_ID, "CRM-C"),
        (demo::FABRIKAM_TENANT_ID, "CRM-F"),
    ] {
        let link = &tenant(&report, id)["consent_link"];
        assert_eq!(link["tenant_id"], id, "{report}");
        assert_eq!(link["customer_ref"], customer);
        let url = link["url"].as_str().unwrap();
        assert!(url.contains("graph.microsoft.com"), "{url}");
    }

    // Contoso's administrator grants the alert role; re-verified, Contoso is ready to switch.
    emulator
        .handle()
        .set_grant(
            demo::CONTOSO_TENANT_ID,
            &GrantConfig {
                client_id: demo::CLIENT_ID.to_owned(),
                resource: "https://graph.microsoft.com".to_owned(),
                roles: vec![
                    "SecurityIncident.Read.All".to_owned(),
                    "SecurityAlert.Read.All".to_owned(),
                ],
            },
        )
        .unwrap();
    operator.verify(demo::CONTOSO_TENANT_ID, "CRM-C").await;
    let (report, _) = operator.migration(&[], retiring).await;
    let c = tenant(&report, demo::CONTOSO_TENANT_ID);
    assert_eq!(c["graph_permissions_granted"], true);
    assert_eq!(c["action"], "switch_sources");

    // Switched to Graph, with Fabrikam gone: nothing left to do, exit status 0.
    let output = operator
        .run(&["tenants", "offboard", demo::FABRIKAM_TENANT_ID], &[])
        .await;
    assert!(output.status.success());
    let (report, success) = operator
        .migration(&[], "graph-incidents,graph-alerts")
        .await;
    assert!(success, "{report}");
    assert_eq!(report["needs_action"], 0);
    assert_eq!(report["retiring_sources"], json!([]));
    assert_eq!(tenant(&report, demo::CONTOSO_TENANT_ID)["action"], "none");
    assert_eq!(report["tenants"].as_array().unwrap().len(), 1);
}
