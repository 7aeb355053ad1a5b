//! `template.yaml` against the code it deploys (cfn-lint, run by scripts/test, checks the
//! CloudFormation side): every setting it passes is one the functions read, every parameter
//! value it allows is one they accept, and the HTTP route stays IAM-protected.

use std::collections::HashMap;

use defender_partner::config::Settings;
use defender_partner_e2e::tools;

fn template() -> String {
    std::fs::read_to_string(tools::workspace_root().join("template.yaml"))
        .expect("template.yaml is readable")
}

/// `AllowedValues: [a, b]` of parameter `name`.
fn allowed_values(template: &str, name: &str) -> Vec<String> {
    let lines: Vec<&str> = template.lines().collect();
    let start = lines
        .iter()
        .position(|line| line.trim_end() == format!("  {name}:"))
        .unwrap_or_else(|| panic!("parameter {name} is missing"));
    let line = lines[start + 1..]
        .iter()
        .take_while(|line| line.starts_with("    "))
        .find(|line| line.trim_start().starts_with("AllowedValues:"))
        .unwrap_or_else(|| panic!("parameter {name} has no AllowedValues"));
    let list = line
        .split_once('[')
        .and_then(|(_, rest)| rest.split_once(']'))
        .map(|(list, _)| list)
        .unwrap_or_else(|| panic!("AllowedValues of {name} is not a [list]"));
    list.split(',')
        .map(|value| value.trim().to_owned())
        .collect()
}

/// The `DP_*` variables the template sets on a function.
fn dp_variables(template: &str) -> Vec<(String, String)> {
    template
        .lines()
        .filter_map(|line| {
            let (key, value) = line.trim().split_once(':')?;
            key.starts_with("DP_")
                .then(|| (key.to_owned(), value.trim().to_owned()))
        })
        .collect()
}

#[test]
fn every_setting_in_the_template_is_one_the_code_reads() {
    let config_source =
        std::fs::read_to_string(tools::workspace_root().join("shared/src/config.rs"))
            .expect("shared/src/config.rs is readable");
    let variables = dp_variables(&template());
    assert!(
        variables.len() >= 4,
        "too few DP_ variables found: {variables:?}"
    );
    for (name, _) in variables {
        assert!(
            config_source.contains(&format!("\"{name}\"")),
            "template.yaml sets {name}, which shared/src/config.rs never reads"
        );
    }
}

#[test]
fn every_allowed_parameter_value_makes_a_valid_configuration() {
    let template = template();
    let clouds = allowed_values(&template, "Cloud");
    let endpoints = allowed_values(&template, "TokenEndpointVersion");
    assert_eq!(clouds, ["public", "gcc", "gcc-high", "dod"]);
    assert_eq!(endpoints, ["v2", "v1"]);
    for cloud in &clouds {
        for endpoint in &endpoints {
            let env: HashMap<&str, &str> = [
                ("DP_CLOUD", cloud.as_str()),
                ("DP_TOKEN_ENDPOINT", endpoint.as_str()),
                (
                    "DP_CREDENTIAL_SECRET_ID",
                    "arn:aws:secretsmanager:us-east-1:123456789012:secret:app-AbCdEf",
                ),
                ("DP_TABLE_NAME", "defender-partner-RegistryTable-1ABC"),
                ("AWS_LAMBDA_FUNCTION_NAME", "defender-partner-mint-token"),
                ("RUST_LOG", "info"),
            ]
            .into_iter()
            .collect();
            let settings = Settings::from_lookup(|name| env.get(name).map(|v| (*v).to_owned()));
            assert!(
                settings.is_ok(),
                "Cloud={cloud} TokenEndpointVersion={endpoint}: {:?}",
                settings.err()
            );
        }
    }
}

#[test]
fn the_http_api_has_no_open_route() {
    let template = template();
    for required in [
        "EnableIamAuthorizer: true",
        "DefaultAuthorizer: AWS_IAM",
        "Authorizer: AWS_IAM",
        "Path: /tokens",
    ] {
        assert!(
            template.contains(required),
            "template.yaml lacks `{required}`"
        );
    }
    assert!(
        !template.contains("NONE"),
        "template.yaml opens a route (Authorizer: NONE)"
    );
}

#[test]
fn the_function_is_built_from_its_workspace_crate() {
    let template = template();
    assert!(template.contains("BuildMethod: rust-cargolambda"));
    assert!(template.contains("Binary: mint-token"));
    let code_uri = template
        .lines()
        .find_map(|line| line.trim().strip_prefix("CodeUri: "))
        .expect("the function has a CodeUri");
    let manifest =
        std::fs::read_to_string(tools::workspace_root().join(code_uri).join("Cargo.toml"))
            .unwrap_or_else(|_| panic!("CodeUri {code_uri} is not a crate"));
    assert!(
        manifest.contains("name = \"mint-token\""),
        "CodeUri {code_uri} is not the mint-token crate"
    );
}
