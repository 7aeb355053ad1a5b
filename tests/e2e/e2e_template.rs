//! `template.yaml` against the code it deploys (cfn-lint, run by scripts/test, checks the
//! CloudFormation side): every setting it passes is one the functions read, every parameter
//! value it allows makes a configuration they accept, each function is built from its crate and
//! may make the AWS calls the code makes, the HTTP API has exactly one open route (the consent
//! callback), and infra/samconfig.toml and the README's deploy table agree with the parameters.
//!
//! The template is read by indentation (two spaces per level, as it is written), which is enough
//! for the shapes it uses and needs no YAML parser that understands CloudFormation's `!Tags`.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use defender_partner::config::Settings;
use defender_partner::fetch::FetchSettings;
use defender_partner::hunting::settings::HuntSettings;
use defender_partner::sink::SinkSettings;
use defender_partner_e2e::tools;

const FUNCTIONS: [&str; 5] = [
    "mint-token",
    "consent-signin",
    "fetch-incidents",
    "update-incident",
    "hunt",
];
/// API Gateway gives up on an integration after 30 s.
const HTTP_API_TIMEOUT_SECONDS: u64 = 30;

fn template() -> String {
    std::fs::read_to_string(tools::workspace_root().join("template.yaml"))
        .expect("template.yaml is readable")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(tools::workspace_root().join(path))
        .unwrap_or_else(|error| panic!("{path} is not readable: {error}"))
}

fn indent(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

fn is_blank_or_comment(line: &str) -> bool {
    let trimmed = line.trim();
    trimmed.is_empty() || trimmed.starts_with('#')
}

/// The entries of a top-level section (`Parameters`, `Resources`, ...): name → the lines under it.
fn section(template: &str, name: &str) -> BTreeMap<String, Vec<String>> {
    let mut entries = BTreeMap::new();
    let mut inside = false;
    let mut current: Option<(String, Vec<String>)> = None;
    for line in template.lines() {
        if is_blank_or_comment(line) {
            continue;
        }
        if indent(line) == 0 {
            inside = line.trim_end() == format!("{name}:");
            continue;
        }
        if !inside {
            continue;
        }
        if indent(line) == 2 {
            if let Some((entry, lines)) = current.take() {
                entries.insert(entry, lines);
            }
            let entry = line
                .trim()
                .trim_end_matches(':')
                .trim_matches('"')
                .to_owned();
            current = Some((entry, Vec::new()));
        } else if let Some((_, lines)) = current.as_mut() {
            lines.push(line.to_owned());
        }
    }
    if let Some((entry, lines)) = current {
        entries.insert(entry, lines);
    }
    assert!(!entries.is_empty(), "template.yaml has no {name} section");
    entries
}

/// The value of the first `key: value` line at any depth of `block`.
fn value<'a>(block: &'a [String], key: &str) -> Option<&'a str> {
    block.iter().find_map(|line| {
        line.trim()
            .strip_prefix(&format!("{key}:"))
            .map(str::trim)
            .filter(|value| !value.is_empty())
    })
}

/// The lines nested under the first `key:` line of `block`.
fn nested<'a>(block: &'a [String], key: &str) -> &'a [String] {
    let Some(start) = block
        .iter()
        .position(|line| line.trim() == format!("{key}:"))
    else {
        return &[];
    };
    let depth = indent(&block[start]);
    let end = block[start + 1..]
        .iter()
        .position(|line| indent(line) <= depth)
        .map_or(block.len(), |offset| start + 1 + offset);
    &block[start + 1..end]
}

fn unquote(text: &str) -> &str {
    text.trim().trim_matches('"').trim_matches('\'')
}

/// The statements of the first `Statement:` list in `document`, each its lines joined (a
/// `- !If` item is one statement with its branches).
fn statements(document: &[String]) -> Vec<String> {
    let body: Vec<&String> = nested(document, "Statement")
        .iter()
        .filter(|line| !is_blank_or_comment(line))
        .collect();
    let Some(depth) = body.iter().map(|line| indent(line)).min() else {
        return Vec::new();
    };
    let mut found: Vec<Vec<&str>> = Vec::new();
    for line in body {
        if indent(line) == depth && line.trim_start().starts_with("- ") {
            found.push(Vec::new());
        }
        if let Some(statement) = found.last_mut() {
            statement.push(line);
        }
    }
    found.into_iter().map(|lines| lines.join("\n")).collect()
}

/// `[a, b]` → `["a", "b"]`.
fn list(text: &str) -> Vec<String> {
    text.trim()
        .strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
        .unwrap_or_else(|| panic!("{text:?} is not a [list]"))
        .split(',')
        .map(|item| unquote(item).to_owned())
        .collect()
}

struct Template {
    parameters: BTreeMap<String, Vec<String>>,
    resources: BTreeMap<String, Vec<String>>,
    outputs: BTreeMap<String, Vec<String>>,
    mappings: BTreeMap<String, Vec<String>>,
}

impl Template {
    fn load() -> Template {
        let text = template();
        Template {
            parameters: section(&text, "Parameters"),
            resources: section(&text, "Resources"),
            outputs: section(&text, "Outputs"),
            mappings: section(&text, "Mappings"),
        }
    }

    fn resource(&self, name: &str) -> &[String] {
        self.resources
            .get(name)
            .unwrap_or_else(|| panic!("resource {name} is missing"))
    }

    fn resource_type(&self, name: &str) -> &str {
        // The resource's own `Type`, not one of its events'.
        self.resource(name)
            .iter()
            .find(|line| indent(line) == 4)
            .and_then(|line| line.trim().strip_prefix("Type:"))
            .map(str::trim)
            .unwrap_or_else(|| panic!("{name} does not start with its Type"))
    }

    fn resources_of(&self, kind: &str) -> Vec<&str> {
        self.resources
            .keys()
            .map(String::as_str)
            .filter(|name| self.resource_type(name) == kind)
            .collect()
    }

    fn parameter_default(&self, name: &str) -> String {
        let block = &self.parameters[name];
        unquote(
            value(block, "Default").unwrap_or_else(|| panic!("parameter {name} has no Default")),
        )
        .to_owned()
    }

    /// Every value worth trying for a parameter: all of `AllowedValues`; for an `AllowedPattern`
    /// list of names, each name alone and all of them; the bounds of a number; the default.
    fn parameter_values(&self, name: &str) -> Vec<String> {
        let block = &self.parameters[name];
        let mut values = vec![self.parameter_default(name)];
        if let Some(allowed) = value(block, "AllowedValues") {
            values.extend(list(allowed));
        }
        if let Some(pattern) = value(block, "AllowedPattern") {
            // `^ *(a|b|c)( *, *(a|b|c))* *$`: a comma-separated list of names.
            if let Some(rest) = pattern.strip_prefix("^ *(")
                && let Some((names, _)) = rest.split_once(')')
            {
                let names: Vec<String> = names.split('|').map(str::to_owned).collect();
                values.push(names.join(", "));
                values.extend(names);
            }
        }
        for bound in ["MinValue", "MaxValue"] {
            if let Some(number) = value(block, bound) {
                values.push(number.to_owned());
            }
        }
        values.dedup();
        values
    }

    /// The `Environment: Variables:` of a function, as written.
    fn environment(&self, function: &str) -> Vec<(String, String)> {
        nested(nested(self.resource(function), "Environment"), "Variables")
            .iter()
            .filter(|line| !is_blank_or_comment(line))
            .map(|line| {
                let (key, value) = line.trim().split_once(':').expect("KEY: value");
                (key.to_owned(), value.trim().to_owned())
            })
            .collect()
    }

    /// The IAM role a function runs as (`Role: !GetAtt {role}.Arn`), a resource of the template.
    fn role_of(&self, function: &str) -> String {
        let role = value(self.resource(function), "Role")
            .and_then(|text| text.strip_prefix("!GetAtt "))
            .and_then(|text| text.strip_suffix(".Arn"))
            .unwrap_or_else(|| panic!("{function} names no Role: !GetAtt <role>.Arn"));
        assert_eq!(
            self.resource_type(role),
            "AWS::IAM::Role",
            "{function}'s role"
        );
        role.to_owned()
    }

    /// The statements of the function role's own policy.
    fn role_statements(&self, function: &str) -> Vec<String> {
        statements(nested(self.resource(&self.role_of(function)), "Policies"))
    }

    /// Everything that grants the function something: its role's policy and the statements of
    /// key policies that allow its role by name.
    fn grants(&self, function: &str) -> String {
        let role = self.role_of(function);
        let mut text = self.role_statements(function).join("\n");
        for key in self.resources_of("AWS::KMS::Key") {
            for statement in statements(nested(self.resource(key), "KeyPolicy")) {
                if statement.contains(&format!("!GetAtt {role}.Arn"))
                    && statement.contains("Effect: Allow")
                {
                    text.push('\n');
                    text.push_str(&statement);
                }
            }
        }
        text
    }

    /// The SAM function resources as (binary, resource): a binary may be deployed more than
    /// once (mint-token is also mint-user-token, with other rights).
    fn deployments(&self) -> Vec<(String, String)> {
        self.resources_of("AWS::Serverless::Function")
            .into_iter()
            .map(|name| {
                let binary = value(self.resource(name), "Binary")
                    .unwrap_or_else(|| panic!("{name} has no BuildProperties: Binary"));
                (binary.to_owned(), name.to_owned())
            })
            .collect()
    }

    /// The function named after `binary` (`${AWS::StackName}-{binary}`).
    fn function(&self, binary: &str) -> String {
        let expected = format!("!Sub ${{AWS::StackName}}-{binary}");
        self.deployments()
            .into_iter()
            .find(|(runs, name)| {
                runs == binary && value(self.resource(name), "FunctionName") == Some(&expected)
            })
            .map(|(_, name)| name)
            .unwrap_or_else(|| panic!("no function named after the {binary} binary"))
    }

    /// What the function would see in Lambda: intrinsic functions replaced by realistic values,
    /// parameters by `parameters` or their defaults, `!If` by its first branch when `conditions`.
    fn lambda_environment(
        &self,
        binary: &str,
        parameters: &HashMap<String, String>,
        conditions: bool,
    ) -> HashMap<String, String> {
        self.deployment_environment(&self.function(binary), binary, parameters, conditions)
    }

    /// As [`Template::lambda_environment`], for the function resource `resource`.
    fn deployment_environment(
        &self,
        resource: &str,
        binary: &str,
        parameters: &HashMap<String, String>,
        conditions: bool,
    ) -> HashMap<String, String> {
        let mut env: HashMap<String, String> = self
            .environment(resource)
            .into_iter()
            .filter_map(|(key, written)| {
                self.resolve(&written, parameters, conditions)
                    .map(|value| (key, value))
            })
            .collect();
        env.insert(
            "AWS_LAMBDA_FUNCTION_NAME".into(),
            format!("defender-partner-{binary}"),
        );
        env
    }

    fn resolve(
        &self,
        written: &str,
        parameters: &HashMap<String, String>,
        conditions: bool,
    ) -> Option<String> {
        if let Some(name) = written.strip_prefix("!Ref ") {
            return self.reference(name.trim(), parameters);
        }
        if let Some(text) = written.strip_prefix("!Sub ") {
            let mut text = unquote(text).to_owned();
            while let Some(start) = text.find("${") {
                let end = start + text[start..].find('}').expect("closed ${");
                let replacement = self
                    .reference(&text[start + 2..end], parameters)
                    .expect("a value");
                text.replace_range(start..=end, &replacement);
            }
            return Some(text);
        }
        if let Some(arguments) = written.strip_prefix("!If ") {
            let arguments = list(arguments);
            assert_eq!(arguments.len(), 3, "!If {arguments:?}");
            return self.resolve(
                &arguments[if conditions { 1 } else { 2 }],
                parameters,
                conditions,
            );
        }
        Some(unquote(written).to_owned())
    }

    fn reference(&self, name: &str, parameters: &HashMap<String, String>) -> Option<String> {
        match name {
            "AWS::NoValue" => return None,
            "AWS::Region" => return Some("us-east-1".into()),
            "AWS::URLSuffix" => return Some("amazonaws.com".into()),
            "AWS::StackName" => return Some("defender-partner".into()),
            _ => {}
        }
        if self.parameters.contains_key(name) {
            return Some(parameters.get(name).cloned().unwrap_or_else(|| {
                match (name, self.parameter_default(name)) {
                    // Empty by default, required in the mode that uses it: a deployer's value.
                    ("ClientId", default) if default.is_empty() => {
                        "11111111-1111-4111-8111-111111111111".into()
                    }
                    (_, default) => default,
                }
            }));
        }
        let lower = name.to_ascii_lowercase();
        Some(match self.resource_type(name) {
            "AWS::SecretsManager::Secret" => {
                format!("arn:aws:secretsmanager:us-east-1:123456789012:secret:{name}-AbCdEf")
            }
            "AWS::DynamoDB::Table" => format!("defender-partner-{name}-1ABC2DEF3GHI"),
            "AWS::S3::Bucket" => format!("defender-partner-{lower}-1abc2def3ghi"),
            "AWS::SQS::Queue" => format!(
                "https://sqs.us-east-1.amazonaws.com/123456789012/defender-partner-{name}-1ABC"
            ),
            "AWS::Events::EventBus" => "defender-partner-records".into(),
            "AWS::ApiGatewayV2::Api" => "a1b2c3d4e5".into(),
            other => panic!("no sample value for a {other} ({name})"),
        })
    }
}

/// Checks the whole configuration a function reads at start.
fn check_configuration(binary: &str, env: &HashMap<String, String>) -> Result<(), String> {
    let lookup = |name: &str| env.get(name).cloned();
    let settings = Settings::from_lookup(lookup).map_err(|error| error.to_string())?;
    match binary {
        "consent-signin" if settings.consent.redirect_uri.is_none() => {
            Err("consent-signin has no DP_CONSENT_REDIRECT_URI".into())
        }
        "fetch-incidents" => {
            FetchSettings::from_lookup(lookup).map_err(|error| error.to_string())?;
            SinkSettings::from_lookup(lookup).map_err(|error| error.to_string())?;
            Ok(())
        }
        "hunt" => {
            HuntSettings::from_lookup(|name| match name {
                // As in Lambda, where the queue and the bucket are required.
                "AWS_LAMBDA_FUNCTION_NAME" => Some("hunt".into()),
                _ => lookup(name),
            })
            .map_err(|error| error.to_string())?;
            Ok(())
        }
        _ => Ok(()),
    }
}

#[test]
fn every_setting_in_the_template_is_one_the_code_reads() {
    let folder = tools::workspace_root().join("shared/src/config");
    let code = std::fs::read_dir(&folder)
        .unwrap_or_else(|error| panic!("{} is not readable: {error}", folder.display()))
        .map(|entry| std::fs::read_to_string(entry.expect("listed").path()).expect("readable"))
        .chain(
            [
                "shared/src/hunting/settings.rs",
                "shared/src/hunting/output.rs",
            ]
            .map(read),
        )
        .collect::<Vec<_>>()
        .join("\n");
    let template = Template::load();
    for (binary, resource) in template.deployments() {
        let environment = template.environment(&resource);
        assert!(
            environment.len() >= 4,
            "{resource}: too few variables found: {environment:?}"
        );
        for (name, _) in environment {
            assert!(
                name == "RUST_LOG" || code.contains(&format!("\"{name}\"")),
                "template.yaml sets {name} on {resource} ({binary}), which the settings code never reads"
            );
        }
    }
}

#[test]
fn every_allowed_parameter_value_makes_a_valid_configuration() {
    let template = Template::load();
    let clouds = value(&template.parameters["Cloud"], "AllowedValues").expect("listed");
    assert_eq!(list(clouds), ["public", "gcc", "gcc-high", "dod"]);
    let mut tried = 0;
    for (binary, function) in template.deployments() {
        let binary = binary.as_str();
        // The defaults, with the conditional variables set and unset.
        for conditions in [true, false] {
            let env =
                template.deployment_environment(&function, binary, &HashMap::new(), conditions);
            check_configuration(binary, &env)
                .unwrap_or_else(|error| panic!("{function} with the defaults: {error}"));
        }
        // Then each value of each parameter the function's variables come from.
        for (variable, written) in template.environment(&function) {
            let Some(parameter) = written.strip_prefix("!Ref ") else {
                continue;
            };
            if !template.parameters.contains_key(parameter) {
                continue;
            }
            for candidate in template.parameter_values(parameter) {
                let chosen = HashMap::from([(parameter.to_owned(), candidate.clone())]);
                let env = template.deployment_environment(&function, binary, &chosen, true);
                check_configuration(binary, &env).unwrap_or_else(|error| {
                    panic!("{function} with {parameter}={candidate:?} ({variable}): {error}")
                });
                tried += 1;
            }
        }
    }
    assert!(tried >= 20, "only {tried} parameter values tried");
    // The two that live on mint-token only are tried there together.
    for cloud in template.parameter_values("Cloud") {
        for endpoint in template.parameter_values("TokenEndpointVersion") {
            let chosen = HashMap::from([
                ("Cloud".to_owned(), cloud.clone()),
                ("TokenEndpointVersion".to_owned(), endpoint.clone()),
            ]);
            let env = template.lambda_environment("mint-token", &chosen, true);
            check_configuration("mint-token", &env).unwrap_or_else(|error| {
                panic!("Cloud={cloud} TokenEndpointVersion={endpoint}: {error}")
            });
        }
    }
}

#[test]
fn the_consent_and_sign_in_callbacks_are_the_only_open_routes() {
    let template = Template::load();
    let text = self::template();
    // Routes made any other way would escape the checks below.
    for other in [
        "AWS::Serverless::HttpApi",
        "AWS::Serverless::Api",
        "Type: HttpApi",
        "Type: Api",
    ] {
        assert!(
            !text.contains(other),
            "template.yaml declares routes with `{other}`"
        );
    }
    let routes: BTreeSet<(String, String, String)> = template
        .resources_of("AWS::ApiGatewayV2::Route")
        .into_iter()
        .map(|name| {
            let block = template.resource(name);
            let key = value(block, "RouteKey").expect("a RouteKey");
            // Left out, AuthorizationType is NONE: every route must say what it is.
            let authorization = value(block, "AuthorizationType")
                .unwrap_or_else(|| panic!("route {key} does not state its AuthorizationType"));
            let target = value(block, "Target").expect("a Target");
            let integration = target
                .trim_start_matches("!Sub integrations/${")
                .trim_end_matches('}');
            let uri =
                value(template.resource(integration), "IntegrationUri").expect("an IntegrationUri");
            // `!GetAtt F.Arn` (the function) or `!Ref F.Alias` (its published alias).
            let function = uri
                .strip_prefix("!GetAtt ")
                .and_then(|rest| rest.strip_suffix(".Arn"))
                .or_else(|| {
                    uri.strip_prefix("!Ref ")
                        .and_then(|rest| rest.strip_suffix(".Alias"))
                })
                .unwrap_or_else(|| panic!("IntegrationUri {uri} names no function"));
            let binary = value(template.resource(function), "Binary").expect("a binary");
            (key.to_owned(), authorization.to_owned(), binary.to_owned())
        })
        .collect();
    let expected: BTreeSet<(String, String, String)> = [
        ("POST /tokens", "AWS_IAM", "mint-token"),
        ("GET /consent/start", "AWS_IAM", "consent-signin"),
        ("GET /consent/callback", "NONE", "consent-signin"),
        ("GET /signin/start", "AWS_IAM", "consent-signin"),
        ("GET /signin/callback", "NONE", "consent-signin"),
        (
            "PATCH /tenants/{tenant}/incidents/{id}",
            "AWS_IAM",
            "update-incident",
        ),
        (
            "POST /tenants/{tenant}/incidents/{id}/comments",
            "AWS_IAM",
            "update-incident",
        ),
        (
            "PATCH /tenants/{tenant}/alerts/{id}",
            "AWS_IAM",
            "update-incident",
        ),
        (
            "POST /tenants/{tenant}/alerts/{id}/comments",
            "AWS_IAM",
            "update-incident",
        ),
        ("POST /hunts", "AWS_IAM", "hunt"),
        ("GET /hunts/{id}", "AWS_IAM", "hunt"),
    ]
    .into_iter()
    .map(|(key, authorization, binary)| (key.into(), authorization.into(), binary.into()))
    .collect();
    assert_eq!(routes, expected);

    // The redirect URI the function sends Microsoft is that route, and the output to register.
    let env = template.lambda_environment("consent-signin", &HashMap::new(), true);
    let redirect = &env["DP_CONSENT_REDIRECT_URI"];
    assert_eq!(
        redirect,
        "https://a1b2c3d4e5.execute-api.us-east-1.amazonaws.com/consent/callback"
    );
    let written = template
        .environment(&template.function("consent-signin"))
        .into_iter()
        .find(|(name, _)| name == "DP_CONSENT_REDIRECT_URI")
        .expect("set")
        .1;
    assert_eq!(
        value(&template.outputs["ConsentCallbackUrl"], "Value"),
        Some(written.as_str()),
        "the ConsentCallbackUrl output differs from DP_CONSENT_REDIRECT_URI"
    );
}

#[test]
fn every_function_is_built_from_its_workspace_crate() {
    let template = Template::load();
    let deployments = template.deployments();
    let binaries: BTreeSet<&str> = deployments
        .iter()
        .map(|(binary, _)| binary.as_str())
        .collect();
    assert_eq!(binaries, FUNCTIONS.into_iter().collect::<BTreeSet<_>>());
    for binary in FUNCTIONS {
        template.function(binary);
    }
    for (binary, name) in deployments {
        let block = template.resource(&name);
        assert_eq!(
            value(block, "BuildMethod"),
            Some("rust-cargolambda"),
            "{name}"
        );
        let code_uri = value(block, "CodeUri").unwrap_or_else(|| panic!("{name} has no CodeUri"));
        assert_eq!(code_uri, format!("functions/{binary}"), "{name}");
        let manifest = read(&format!("{code_uri}/Cargo.toml"));
        assert!(
            manifest.contains(&format!("name = \"{binary}\"")),
            "CodeUri {code_uri} is not the {binary} crate"
        );
    }
}

#[test]
fn the_timeouts_leave_room_for_the_work() {
    let template = Template::load();
    // consent-signin answers the administrator's browser through the HTTP API.
    let consent = template.function("consent-signin");
    let timeout: u64 = value(template.resource(&consent), "Timeout")
        .expect("consent-signin sets its Timeout")
        .parse()
        .expect("a number");
    let env = template.lambda_environment("consent-signin", &HashMap::new(), true);
    let settings = Settings::from_lookup(|name| env.get(name).cloned()).expect("valid");
    assert!(
        timeout < HTTP_API_TIMEOUT_SECONDS,
        "consent-signin Timeout {timeout}"
    );
    assert!(
        settings.consent.proof_window.as_secs() + 5 <= timeout,
        "the proof window ({:?}) does not fit in consent-signin's {timeout} s",
        settings.consent.proof_window
    );

    // fetch-incidents: every allowed timeout leaves paging time after the deadline margin, and
    // the queue's visibility timeout is at least 6 x the function's (AWS's advice).
    let fetch = template.function("fetch-incidents");
    assert_eq!(
        value(template.resource(&fetch), "Timeout"),
        Some("!Ref FetchTimeoutSeconds")
    );
    let margin = FetchSettings::from_lookup(|_| None)
        .expect("defaults")
        .deadline_margin
        .as_secs();
    assert_eq!(
        value(template.resource("FetchQueue"), "VisibilityTimeout"),
        Some("!FindInMap [FetchTimeout, !Ref FetchTimeoutSeconds, QueueVisibilitySeconds]")
    );
    let visibility = &template.mappings["FetchTimeout"];
    let allowed = template.parameter_values("FetchTimeoutSeconds");
    for timeout in &allowed {
        let seconds: u64 = timeout.parse().expect("a number");
        assert!(
            seconds >= 4 * margin,
            "FetchTimeoutSeconds {seconds} barely exceeds the {margin} s margin"
        );
        let row = nested(visibility, &format!("\"{timeout}\""));
        let queue: u64 = value(row, "QueueVisibilitySeconds")
            .unwrap_or_else(|| panic!("Mappings FetchTimeout has no row for {timeout}"))
            .parse()
            .expect("a number");
        assert!(
            queue >= 6 * seconds && queue <= 43_200,
            "visibility {queue} s for a {seconds} s timeout"
        );
    }
}

#[test]
fn the_api_queue_and_schedule_invoke_an_alias_the_code_knows() {
    // Workflows invoke a function's own ARN; API Gateway (and hunt's queue and schedule) invoke
    // the alias `api`, which a grant on the function's own ARN does not reach. The code believes
    // an HTTP event's caller, or takes queue and schedule events, only through that alias
    // (DP_CALLER_HTTP_QUALIFIER): a direct invoker cannot pose as an IAM role.
    let template = Template::load();
    for (binary, permission) in [
        ("mint-token", "MintTokenApiPermission"),
        ("update-incident", "UpdateApiPermission"),
        ("hunt", "HuntApiPermission"),
    ] {
        let function = template.function(binary);
        assert_eq!(
            value(template.resource(&function), "AutoPublishAlias"),
            Some("api"),
            "{binary}"
        );
        let env = template.lambda_environment(binary, &HashMap::new(), true);
        assert_eq!(
            env.get("DP_CALLER_HTTP_QUALIFIER").map(String::as_str),
            Some("api"),
            "{binary}"
        );
        assert_eq!(
            value(template.resource(permission), "FunctionName"),
            Some(format!("!Ref {function}.Alias").as_str()),
            "{permission}"
        );
        let settings = Settings::from_lookup(|name| env.get(name).cloned()).expect("valid");
        assert_eq!(settings.callers.http_qualifier.as_deref(), Some("api"));
    }
    assert_eq!(
        value(template.resource("HuntQueueEventSource"), "FunctionName"),
        Some("!Ref HuntFunction.Alias")
    );
    // mint-user-token has no route and no alias: an HTTP-shaped event sent to it can only be a
    // direct invoker's, so no alias it could come through is believed.
    let user_tokens = "MintUserTokenFunction";
    assert_eq!(
        value(template.resource(user_tokens), "AutoPublishAlias"),
        None
    );
    let env: HashMap<String, String> = template.environment(user_tokens).into_iter().collect();
    assert_eq!(
        env.get("DP_CALLER_HTTP_QUALIFIER").map(String::as_str),
        Some("api")
    );
}

#[test]
fn a_fetch_batch_runs_in_one_round() {
    // The queue's batch is the number of pairs an invocation runs at once by default: one
    // more, and the last pair of every batch runs alone in a second round.
    let template = Template::load();
    let batch: usize = value(template.resource("FetchQueueEventSource"), "BatchSize")
        .expect("the fetch queue's BatchSize")
        .parse()
        .expect("a number");
    let settings = FetchSettings::from_lookup(|_| None).expect("defaults");
    assert_eq!(batch, settings.concurrency);
    assert_eq!(
        settings.concurrency as u64,
        defender_partner::config::DEFAULT_CONCURRENCY
    );
}

/// The AWS calls in the library (`client.<operation>()`), as IAM actions.
fn aws_calls_in_the_code() -> BTreeSet<String> {
    let mut calls = BTreeSet::new();
    let mut stack = vec![tools::workspace_root().join("shared/src")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("readable") {
            let path = entry.expect("an entry").path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|extension| extension != "rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("readable");
            let code = text.split("#[cfg(test)]").next().unwrap_or_default();
            let sdks: BTreeSet<&str> = code
                .match_indices("aws_sdk_")
                .map(|(at, _)| {
                    let rest = &code[at + "aws_sdk_".len()..];
                    let end = rest
                        .find(|c: char| !c.is_ascii_alphanumeric())
                        .unwrap_or(rest.len());
                    &rest[..end]
                })
                .collect();
            let operations = client_operations(code);
            if operations.is_empty() || sdks.is_empty() {
                continue;
            }
            let [sdk] = sdks.into_iter().collect::<Vec<_>>()[..] else {
                panic!(
                    "{}: calls AWS through more or fewer than one SDK crate",
                    path.display()
                );
            };
            let service = match sdk {
                "eventbridge" => "events",
                "dynamodb" | "s3" | "sqs" | "secretsmanager" | "sts" | "kms" => sdk,
                other => panic!("{}: unknown SDK aws_sdk_{other}", path.display()),
            };
            for operation in operations {
                calls.insert(format!("{service}:{}", iam_action(&operation)));
            }
        }
    }
    calls
}

/// `client` followed by `.operation()` (maybe across a line break).
fn client_operations(code: &str) -> Vec<String> {
    let mut operations = Vec::new();
    for (at, _) in code.match_indices("client") {
        let rest = code[at + "client".len()..].trim_start();
        let Some(rest) = rest.strip_prefix('.') else {
            continue;
        };
        let end = rest
            .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
            .unwrap_or(rest.len());
        if end > 0 && rest[end..].starts_with("()") && !matches!(&rest[..end], "clone" | "config") {
            operations.push(rest[..end].to_owned());
        }
    }
    operations
}

/// `send_message_batch` → `SendMessage` (SQS batches are authorized as their single action).
fn iam_action(operation: &str) -> String {
    let pascal: String = operation
        .split('_')
        .map(|word| {
            let mut chars = word.chars();
            chars
                .next()
                .map(|first| first.to_ascii_uppercase().to_string() + chars.as_str())
                .unwrap_or_default()
        })
        .collect();
    match pascal.as_str() {
        "SendMessageBatch" | "DeleteMessageBatch" | "ChangeMessageVisibilityBatch" => {
            pascal.trim_end_matches("Batch").to_owned()
        }
        // Authorized per item, as the PutItem and UpdateItem it holds (the hunts' store).
        "TransactWriteItems" => "PutItem".to_owned(),
        _ => pascal,
    }
}

#[test]
fn every_aws_call_of_the_code_is_granted_and_on_the_resources_named() {
    let template = Template::load();
    let calls = aws_calls_in_the_code();
    assert!(calls.len() >= 8, "too few AWS calls found: {calls:?}");
    let policies: BTreeMap<String, String> = template
        .deployments()
        .into_iter()
        .map(|(_, function)| {
            let policy = template.grants(&function);
            (function, policy)
        })
        .collect();
    for call in &calls {
        assert!(
            policies
                .values()
                .any(|policy| policy.contains(call.as_str())),
            "the code calls {call}, which no function in template.yaml may do"
        );
    }
    // Each resource a function is told about (a secret, the table, the bucket, the queue, the
    // bus) is one its policy names, or one whose own policy names the function's role (a key).
    for (function, policy) in &policies {
        let role = template.role_of(function);
        for (variable, written) in template.environment(function) {
            let resources: Vec<&str> = written
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == ':'))
                .filter(|word| template.resources.contains_key(*word))
                .filter(|word| template.resource_type(word) != "AWS::ApiGatewayV2::Api")
                .collect();
            for resource in resources {
                assert!(
                    [
                        format!("!Ref {resource}"),
                        format!("!GetAtt {resource}.Arn"),
                        format!("${{{resource}.Arn}}"),
                    ]
                    .iter()
                    .any(|form| policy.contains(form.as_str()))
                        || template
                            .resource(resource)
                            .join("\n")
                            .contains(&format!("!GetAtt {role}.Arn")),
                    "{function} is given {resource} in {variable} but its policy never names it"
                );
            }
        }
    }
}

#[test]
fn samconfig_overrides_only_parameters_the_template_has() {
    let template = Template::load();
    let samconfig = read("infra/samconfig.toml");
    let mut seen = 0;
    for line in samconfig.lines() {
        let item = line.trim().trim_end_matches(',');
        let Some(pair) = item
            .strip_prefix('"')
            .and_then(|rest| rest.strip_suffix('"'))
        else {
            continue;
        };
        let Some((name, chosen)) = pair.split_once('=') else {
            continue;
        };
        let block = template
            .parameters
            .get(name)
            .unwrap_or_else(|| panic!("samconfig.toml overrides {name}, not a template parameter"));
        if let Some(allowed) = value(block, "AllowedValues") {
            assert!(
                list(allowed).iter().any(|value| value == chosen),
                "samconfig.toml sets {name}={chosen}, outside its AllowedValues"
            );
        }
        seen += 1;
    }
    assert!(
        seen >= 10,
        "only {seen} overrides found in infra/samconfig.toml"
    );
}

#[test]
fn the_readme_lists_every_parameter_and_output() {
    let template = Template::load();
    let readme = read("README.md");
    for name in template.parameters.keys() {
        assert!(
            readme.contains(&format!("| `{name}` |")),
            "README.md's deploy table lacks the parameter {name}"
        );
    }
    for name in template.outputs.keys() {
        assert!(
            readme.contains(&format!("`{name}`")),
            "README.md does not mention the output {name}"
        );
    }
}

#[test]
fn only_mint_user_token_may_open_stored_sign_ins() {
    let template = Template::load();
    let policy_of = |function: &str| template.grants(function);
    let user_tokens = "MintUserTokenFunction";
    assert_eq!(
        value(template.resource(user_tokens), "Binary"),
        Some("mint-token")
    );
    assert_eq!(
        value(template.resource(user_tokens), "Condition"),
        Some("MintsFromSignIns")
    );
    let env: HashMap<String, String> = template.environment(user_tokens).into_iter().collect();
    assert_eq!(env["DP_MINT_FROM_SIGNIN"], "\"true\"");
    let opener = policy_of(user_tokens);
    assert!(opener.contains("kms:Decrypt"), "{opener}");
    assert!(opener.contains("dynamodb:DeleteItem"), "{opener}");
    // Its writes are confined to the sign-in partitions, the prefix the store uses.
    assert!(
        opener.contains("dynamodb:LeadingKeys") && opener.contains("\"SIGNIN#*\""),
        "{opener}"
    );
    assert!(
        read("shared/src/store/dynamo_signed_in.rs")
            .contains("const SIGNIN_PREFIX: &str = \"SIGNIN#\";"),
        "the sign-in partition prefix changed in the code but not in template.yaml"
    );

    // update-incident writes only in the write-back partitions, the prefix the store uses.
    let writer = policy_of(&template.function("update-incident"));
    assert!(
        writer.contains("dynamodb:PutItem") && writer.contains("\"WRITEBACK#*\""),
        "{writer}"
    );
    assert!(
        read("shared/src/store/dynamo_updates.rs")
            .contains("pub const WRITEBACK_PREFIX: &str = \"WRITEBACK#\";"),
        "the write-back partition prefix changed in the code but not in template.yaml"
    );

    // The functions that hold callers to their mapping read it, and are told the mode.
    for resource in [
        template.function("mint-token"),
        user_tokens.to_owned(),
        template.function("update-incident"),
        template.function("hunt"),
    ] {
        let function = &resource;
        let policy = policy_of(&resource);
        assert!(
            policy.contains("dynamodb:BatchGetItem") && policy.contains("\"CALLER#*\""),
            "{function} cannot read the callers' mappings: {policy}"
        );
        assert!(
            template
                .environment(&resource)
                .iter()
                .any(|(name, value)| name == "DP_CALLER_SCOPING" && value == "!Ref CallerScoping"),
            "{function} is not given DP_CALLER_SCOPING"
        );
    }
    assert!(
        read("shared/src/store/dynamo_callers.rs")
            .contains("pub const CALLER_PREFIX: &str = \"CALLER#\";"),
        "the caller partition prefix changed in the code but not in template.yaml"
    );

    // hunt writes only in the hunting partitions and under hunts/ in the bucket.
    let hunter = policy_of(&template.function("hunt"));
    assert!(
        hunter.contains("dynamodb:PutItem") && hunter.contains("\"HUNT#*\""),
        "{hunter}"
    );
    assert!(hunter.contains("${RecordsBucket.Arn}/hunts/*"), "{hunter}");
    assert!(
        read("shared/src/store/dynamo_hunts.rs")
            .contains("pub const HUNT_PREFIX: &str = \"HUNT#\";"),
        "the hunting partition prefix changed in the code but not in template.yaml"
    );

    let mint_token = template.function("mint-token");
    let env: HashMap<String, String> = template.environment(&mint_token).into_iter().collect();
    assert_eq!(env["DP_MINT_FROM_SIGNIN"], "\"false\"");
    for function in template
        .deployments()
        .into_iter()
        .map(|(_, function)| function)
        .filter(|function| function != user_tokens)
    {
        let policy = policy_of(&function);
        assert!(
            !policy.contains("kms:Decrypt"),
            "{function} may open sealed refresh tokens"
        );
        assert!(
            !policy.contains("dynamodb:DeleteItem"),
            "{function} may delete registry items"
        );
    }
    // Refresh tokens are kept only when something may use them.
    let consent: HashMap<String, String> = template
        .environment(&template.function("consent-signin"))
        .into_iter()
        .collect();
    assert_eq!(
        consent["DP_SIGNIN_KEEP_REFRESH_TOKENS"],
        "!If [MintsFromSignIns, \"true\", \"false\"]"
    );
}

/// The one alarm action every alarm carries: the stack's topic, or the one AlarmTopicArn names.
const ALARM_ACTIONS: &str = "[!If [UsesExistingAlarmTopic, !Ref AlarmTopicArn, !Ref AlarmTopic]]";

#[test]
fn the_sign_in_key_opens_for_mint_user_token_alone() {
    let template = Template::load();
    let key = template.resource("SignInKey");
    assert_eq!(value(key, "DeletionPolicy"), Some("Retain"));
    assert_eq!(value(key, "UpdateReplacePolicy"), Some("Retain"));
    let all = statements(nested(key, "KeyPolicy"));
    let opener = "!GetAtt MintUserTokenFunctionRole.Arn";
    // The explicit Deny outranks any IAM grant: nobody but mint-user-token's role decrypts.
    let deny = all
        .iter()
        .find(|statement| {
            statement.contains("Effect: Deny") && statement.contains("Action: kms:Decrypt")
        })
        .expect("a Deny of kms:Decrypt");
    assert!(deny.contains("Principal: \"*\""), "{deny}");
    assert!(
        deny.contains("ArnNotEquals:") && deny.contains(&format!("aws:PrincipalArn: {opener}")),
        "{deny}"
    );
    assert!(
        all.iter()
            .any(|statement| statement.contains("Effect: Deny")
                && statement.contains("Principal: \"*\"")
                && statement.contains("kms:ReEncrypt*")),
        "nobody may move a sealed key under another key"
    );
    let allows: Vec<&String> = all
        .iter()
        .filter(|statement| statement.contains("Effect: Allow"))
        .collect();
    for allow in &allows {
        assert!(!allow.contains("kms:*"), "a wildcard grant: {allow}");
        if allow.contains("kms:Decrypt") {
            assert!(
                allow.contains(opener),
                "only mint-user-token decrypts: {allow}"
            );
        }
        if allow.contains(":root") {
            for data in [
                "kms:Decrypt",
                "kms:Encrypt",
                "kms:GenerateDataKey",
                "kms:ReEncrypt",
            ] {
                assert!(
                    !allow.contains(data),
                    "the account administers, never {data}"
                );
            }
        }
    }
    let sealer = allows
        .iter()
        .find(|allow| allow.contains("!GetAtt ConsentSigninFunctionRole.Arn"))
        .expect("consent-signin may seal");
    assert!(sealer.contains("Action: kms:GenerateDataKey"), "{sealer}");
    assert!(!sealer.contains("kms:Decrypt"), "{sealer}");
    // The code makes exactly these KMS calls: GenerateDataKey (seal) and Decrypt (open).
    let calls: Vec<String> = aws_calls_in_the_code()
        .into_iter()
        .filter(|call| call.starts_with("kms:"))
        .collect();
    assert_eq!(calls, ["kms:Decrypt", "kms:GenerateDataKey"]);
}

/// The partitions of the table (shared/src/store/dynamo*.rs; CALLER# and FLEET# for the caller
/// scopes and the fleet run's lease).
const PARTITIONS: [&str; 8] = [
    "TENANT#*",
    "CALLER#*",
    "CONSENT#*",
    "SIGNIN#*",
    "LEDGER#*",
    "FLEET#*",
    "WRITEBACK#*",
    "HUNT#*",
];

#[test]
fn every_table_permission_is_confined_by_leading_keys() {
    let template = Template::load();
    assert!(
        read("shared/src/store/dynamo.rs").contains("const KIND_TENANT: &str = \"tenant\";"),
        "the by-kind index's tenant key changed in the code but not in template.yaml"
    );
    for (_, function) in template.deployments() {
        let on_table: Vec<String> = template
            .role_statements(&function)
            .into_iter()
            .filter(|statement| statement.contains("dynamodb:"))
            .collect();
        assert!(!on_table.is_empty(), "{function} never reaches the table?");
        for statement in on_table {
            let keys = statement
                .lines()
                .find_map(|line| line.trim().strip_prefix("dynamodb:LeadingKeys:"))
                .unwrap_or_else(|| panic!("{function}: no dynamodb:LeadingKeys in {statement}"));
            assert!(
                statement.contains("ForAllValues:"),
                "{function}: every key of a request must match: {statement}"
            );
            let keys = list(keys);
            if statement.contains("/index/by-kind") {
                // On the index the leading key is the index's own partition key, `kind`.
                assert_eq!(keys, ["tenant"], "{function}: {statement}");
            } else {
                for key in &keys {
                    assert!(PARTITIONS.contains(&key.as_str()), "{function}: {key}");
                }
            }
        }
    }
}

#[test]
fn each_function_has_its_own_role_and_writes_only_its_own_logs() {
    let template = Template::load();
    assert!(
        !read("template.yaml").contains("AWSLambdaBasicExecutionRole"),
        "a managed policy may write to every log group of the account"
    );
    for (_, function) in template.deployments() {
        let role = template.role_of(&function);
        let role_block = template.resource(&role).join("\n");
        assert!(!role_block.contains("ManagedPolicyArns"), "{role}");
        assert!(
            role_block.contains("Service: lambda.amazonaws.com"),
            "{role}"
        );
        let log_group = value(
            nested(template.resource(&function), "LoggingConfig"),
            "LogGroup",
        )
        .and_then(|text| text.strip_prefix("!Ref "))
        .unwrap_or_else(|| panic!("{function} names its log group"));
        let logging: Vec<String> = template
            .role_statements(&function)
            .into_iter()
            .filter(|statement| statement.contains("logs:"))
            .collect();
        assert_eq!(logging.len(), 1, "{function}: {logging:?}");
        assert!(
            logging[0].contains(&format!("Resource: !GetAtt {log_group}.Arn")),
            "{function} logs elsewhere than {log_group}: {}",
            logging[0]
        );
        assert!(
            !logging[0].contains("logs:CreateLogGroup"),
            "{}",
            logging[0]
        );
    }
}

#[test]
fn the_secrets_are_read_by_the_functions_roles_alone() {
    let template = Template::load();
    for (secret, policy) in [
        ("AppCredentialSecret", "AppCredentialSecretPolicy"),
        ("StateKeySecret", "StateKeySecretPolicy"),
    ] {
        let block = template.resource(policy);
        assert_eq!(
            template.resource_type(policy),
            "AWS::SecretsManager::ResourcePolicy"
        );
        assert_eq!(
            value(block, "SecretId"),
            Some(format!("!Ref {secret}").as_str())
        );
        assert_eq!(value(block, "BlockPublicPolicy"), Some("true"));
        let deny = statements(nested(block, "ResourcePolicy")).join("\n");
        assert!(
            deny.contains("Effect: Deny")
                && deny.contains("Principal: \"*\"")
                && deny.contains("Action: secretsmanager:GetSecretValue")
                && deny.contains("ArnNotEquals:"),
            "{deny}"
        );
        // Every function told about the secret is among the roles allowed to read it.
        for (_, function) in template.deployments() {
            let told = template
                .environment(&function)
                .iter()
                .any(|(_, written)| written.contains(&format!("!Ref {secret}")));
            if told {
                let role = template.role_of(&function);
                assert!(
                    deny.contains(&format!("!GetAtt {role}.Arn")),
                    "{function} reads {secret} but its policy denies it"
                );
            }
        }
    }
}

#[test]
fn every_alarm_notifies_the_topic() {
    let template = Template::load();
    let alarms = template.resources_of("AWS::CloudWatch::Alarm");
    assert!(alarms.len() >= 20, "{alarms:?}");
    for alarm in alarms {
        assert_eq!(
            value(template.resource(alarm), "AlarmActions"),
            Some(ALARM_ACTIONS),
            "{alarm} notifies nobody"
        );
    }
    let topic = template.resource("AlarmTopic");
    assert_eq!(value(topic, "Condition"), Some("CreatesAlarmTopic"));
    assert_eq!(value(topic, "KmsMasterKeyId"), Some("!Ref AlarmTopicKey"));
    // CloudWatch must be able to use the topic's key, or no notification is ever delivered.
    let key = template.resource("AlarmTopicKey").join("\n");
    assert!(key.contains("Service: cloudwatch.amazonaws.com"), "{key}");
    let email = template.resource("AlarmEmailSubscription");
    assert_eq!(value(email, "Condition"), Some("SubscribesAlarmEmail"));
    assert_eq!(value(email, "Endpoint"), Some("!Ref AlarmEmail"));
    assert_eq!(template.parameter_default("AlarmTopicArn"), "");
    assert_eq!(template.parameter_default("AlarmEmail"), "");
}

#[test]
fn the_heartbeat_fires_when_scheduled_runs_stop() {
    let template = Template::load();
    let heartbeat = template.resource("FetchHeartbeatAlarm");
    assert_eq!(value(heartbeat, "Namespace"), Some("DefenderPartner"));
    assert_eq!(value(heartbeat, "MetricName"), Some("FleetRunCompleted"));
    assert_eq!(value(heartbeat, "TreatMissingData"), Some("breaching"));
    assert_eq!(value(heartbeat, "EvaluationPeriods"), Some("3"));
    assert_eq!(value(heartbeat, "DatapointsToAlarm"), Some("3"));
    assert_eq!(
        value(heartbeat, "ComparisonOperator"),
        Some("LessThanThreshold")
    );
    assert_eq!(
        value(heartbeat, "Period"),
        Some("!FindInMap [FetchPeriod, !Ref FetchEveryMinutes, Seconds]")
    );
    // The period is one schedule period for every value the schedule may take.
    let periods = &template.mappings["FetchPeriod"];
    let minutes =
        list(value(&template.parameters["FetchEveryMinutes"], "AllowedValues").expect("listed"));
    for every in &minutes {
        let at = periods
            .iter()
            .position(|line| unquote(line.trim().trim_end_matches(':')) == every)
            .unwrap_or_else(|| panic!("FetchPeriod lacks {every}"));
        let seconds: u64 = value(&periods[at + 1..at + 2], "Seconds")
            .expect("Seconds")
            .parse()
            .expect("a number");
        assert_eq!(
            seconds,
            every.parse::<u64>().unwrap() * 60,
            "{every} minutes"
        );
        // CloudWatch periods of 60 s and more are whole minutes; 3 of them fit in a day.
        assert!(seconds.is_multiple_of(60) && seconds * 3 <= 86_400);
    }
    let fetch = template.resource("FetchIncidentsFunction");
    assert_eq!(
        value(fetch, "Schedule"),
        Some(
            "!If [HasCustomFetchSchedule, !Ref FetchSchedule, !Sub \"rate(${FetchEveryMinutes} minutes)\"]"
        )
    );
    // A failed scheduled run is not retried asynchronously: the next tick is the retry.
    assert_eq!(
        value(nested(fetch, "EventInvokeConfig"), "MaximumRetryAttempts"),
        Some("0")
    );
}

#[test]
fn the_metrics_the_template_reads_are_the_ones_the_code_writes() {
    let template = template();
    let code = read("shared/src/telemetry/metrics.rs");
    assert!(code.contains("pub const NAMESPACE: &str = \"DefenderPartner\";"));
    let resources = Template::load().resources;
    let mut seen = 0;
    for (name, block) in &resources {
        if value(block, "Namespace") == Some("DefenderPartner") {
            let metric = value(block, "MetricName").expect("a metric");
            assert!(
                code.contains(&format!("= \"{metric}\";")),
                "{name} alarms on {metric}, which the code never writes"
            );
            seen += 1;
        }
    }
    assert!(seen >= 5, "{seen} alarms on the functions' own metrics");
    // The dashboard's own metrics: in SEARCH expressions and in metric rows.
    let dashboard = &template[template.find("OperationsDashboard:").expect("a dashboard")..];
    let searched = dashboard
        .split("{DefenderPartner,")
        .skip(1)
        .filter_map(|rest| rest.split("MetricName=\\\"").nth(1))
        .filter_map(|rest| rest.split('\\').next());
    let listed = dashboard
        .split("\"DefenderPartner\",")
        .skip(1)
        .filter_map(|rest| rest.split('"').nth(1));
    let shown: Vec<&str> = searched.chain(listed).collect();
    assert!(shown.len() >= 10, "{shown:?}");
    for metric in shown {
        assert!(
            code.contains(&format!("= \"{metric}\";")),
            "the dashboard shows {metric}, which the code never writes"
        );
    }
    for title in [
        "Records in",
        "Lag per source",
        "Throttled (429)",
        "Token and credential errors by code",
        "tenants revoked",
        "queues",
        "Dead-letter queues",
        "API 4xx per route",
        "API 5xx per route",
        "Hunts and write-backs",
    ] {
        assert!(dashboard.contains(title), "the dashboard lacks {title}");
    }
}

#[test]
fn every_route_alarms_on_its_5xx_and_the_access_log_joins_the_functions_logs() {
    let template = Template::load();
    let stage = template.resource("HttpApiStage");
    assert_eq!(value(stage, "DetailedMetricsEnabled"), Some("true"));
    let format = nested(stage, "AccessLogSettings").join("");
    for field in [
        "$context.requestId",
        "$context.integration.requestId",
        "$context.identity.userArn",
        "$context.identity.caller",
    ] {
        assert!(format.contains(field), "the access log lacks {field}");
    }
    for route in template.resources_of("AWS::ApiGatewayV2::Route") {
        let key = value(template.resource(route), "RouteKey").expect("a route key");
        let alarm = format!("{route}5xxAlarm");
        let block = template.resource(&alarm);
        assert_eq!(value(block, "MetricName"), Some("5xx"), "{alarm}");
        assert_eq!(value(block, "Namespace"), Some("AWS/ApiGateway"), "{alarm}");
        let dimensions = nested(block, "Dimensions").join("\n");
        assert!(dimensions.contains("Value: !Ref HttpApi"), "{alarm}");
        assert!(dimensions.contains("Value: $default"), "{alarm}");
        assert!(dimensions.contains(&format!("Value: \"{key}\"")), "{alarm}");
        assert_eq!(
            value(block, "Condition"),
            value(template.resource(route), "Condition"),
            "{alarm} exists exactly when its route does"
        );
    }
}

#[test]
fn the_operating_alarms_exist_and_the_registry_survives_a_delete() {
    let template = Template::load();
    for (alarm, metric) in [
        ("FetchQueueAgeAlarm", "ApproximateAgeOfOldestMessage"),
        ("FetchDeadLetterAlarm", "ApproximateNumberOfMessagesVisible"),
        ("HuntDeadLetterAlarm", "ApproximateNumberOfMessagesVisible"),
        ("TenantRevokedAlarm", "TenantRevoked"),
        ("CredentialExpiryAlarm", "CredentialDaysLeft"),
        ("MintTokenCredentialAlarm", "OperatorActionNeeded"),
        ("MintUserTokenCredentialAlarm", "OperatorActionNeeded"),
        ("ConsentSigninCredentialAlarm", "OperatorActionNeeded"),
        ("FetchIncidentsCredentialAlarm", "OperatorActionNeeded"),
        ("MintUserTokenErrorsAlarm", "Errors"),
    ] {
        assert_eq!(
            value(template.resource(alarm), "MetricName"),
            Some(metric),
            "{alarm}"
        );
    }
    let expiry = template.resource("CredentialExpiryAlarm");
    assert_eq!(value(expiry, "Threshold"), Some("30"));
    assert_eq!(
        value(expiry, "ComparisonOperator"),
        Some("LessThanThreshold")
    );
    for alarm in ["MintUserTokenCredentialAlarm", "MintUserTokenErrorsAlarm"] {
        assert_eq!(
            value(template.resource(alarm), "Condition"),
            Some("MintsFromSignIns")
        );
    }
    let table = template.resource("RegistryTable");
    assert_eq!(value(table, "DeletionProtectionEnabled"), Some("true"));
    assert_eq!(value(table, "DeletionPolicy"), Some("Retain"));
    let consent = template.resource("ConsentSigninFunction").join("\n");
    assert!(
        consent.contains(
            "!If [HasConsentReservedConcurrency, !Ref ConsentReservedConcurrency, !Ref AWS::NoValue]"
        ),
        "consent-signin's reserved concurrency follows its parameter"
    );
}

#[test]
fn the_readme_says_what_to_do_when_each_alarm_fires() {
    let template = Template::load();
    let readme = read("README.md");
    let start = readme
        .find("### Alarms: what each means and what to do")
        .expect("README.md has the alarm table");
    let table = &readme[start..];
    let table = &table[..table[4..].find("\n## ").map_or(table.len(), |end| end + 4)];
    for alarm in template.resources_of("AWS::CloudWatch::Alarm") {
        let listed = if alarm.ends_with("5xxAlarm") {
            table.contains("`<Route>5xxAlarm`")
        } else {
            table.contains(&format!("`{alarm}`"))
        };
        assert!(
            listed,
            "README.md's alarm table does not say what to do about {alarm}"
        );
    }
}
