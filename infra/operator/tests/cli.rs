//! `dp-operator` as an operator runs it: the real binary, the embedded store, the emulator.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Output;

use defender_emulator::{Scenario, demo};
use serde_json::{Value, json};

struct Operator {
    base_url: String,
    dir: PathBuf,
}

impl Operator {
    async fn run(&self, args: &[&str]) -> Output {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_dp-operator"))
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("DP_AUTHORITY_HOST", &self.base_url)
            .env(
                "DP_CREDENTIAL_JSON",
                json!({"client_id": demo::CLIENT_ID, "client_secret": demo::CLIENT_SECRET})
                    .to_string(),
            )
            .env("DP_SQLITE_PATH", self.dir.join("registry.sqlite"))
            .env("DP_STATE_KEY_FILE", self.dir.join("state-key"))
            .env("DP_CONSENT_REDIRECT_URI", demo::CONSENT_REDIRECT_URI)
            .env("DP_CONSENT_PROOF_SECONDS", "0")
            .output()
            .await
            .expect("dp-operator runs")
    }

    async fn json(&self, args: &[&str]) -> Value {
        let output = self.run(args).await;
        assert!(
            output.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).unwrap_or_else(|error| {
            panic!(
                "{args:?}: {error}: {}",
                String::from_utf8_lossy(&output.stdout)
            )
        })
    }

    async fn fails(&self, args: &[&str], expected: &str) {
        let output = self.run(args).await;
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?} succeeded");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}

#[tokio::test]
async fn an_operator_onboards_verifies_lists_and_offboards() {
    let emulator =
        defender_emulator::start(Scenario::demo(), SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
            .await
            .unwrap();
    let dir = std::env::temp_dir().join(format!("dp-operator-{}", uuid::Uuid::new_v4()));
    let operator = Operator {
        base_url: emulator.base_url().to_owned(),
        dir: dir.clone(),
    };

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
    let text = operator.run(&["tenants", "list"]).await;
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

    emulator.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}
