//! The harness itself: tools are found or clearly missing, components start and stop without
//! leaving processes behind, and the sample events are what the function expects.

use std::process::Command;
use std::time::Duration;

use defender_partner_e2e::emulator::Emulator;
use defender_partner_e2e::process::{ChildProcess, descendants_of, is_alive};
use defender_partner_e2e::stack::guid;
use defender_partner_e2e::{Moto, events, moto, tools};
use defender_partner_testkit::scenario;

#[test]
fn a_missing_tool_is_an_error_that_says_how_to_install_it() {
    let error = tools::require_tool("no-such-tool-defender-e2e").unwrap_err();
    let message = error.to_string();
    assert!(message.contains("no-such-tool-defender-e2e"), "{message}");
    assert!(message.contains("scripts/venv"), "{message}");
}

#[test]
fn a_dropped_child_takes_its_descendants_with_it() {
    let mut command = Command::new("sh");
    // A grandchild in a process group of its own, as cargo lambda watch makes them.
    command.args(["-c", "setsid sleep 300 & sleep 300 & echo started; wait"]);
    let child = ChildProcess::spawn("sleeper", command).unwrap();
    let pid = child.pid() as i32;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while descendants_of(pid).len() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the sleepers never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let descendants = descendants_of(pid);
    drop(child);
    assert!(!is_alive(pid), "the child survived its drop");
    for descendant in descendants {
        assert!(!is_alive(descendant), "descendant {descendant} survived");
    }
}

#[tokio::test]
async fn moto_starts_serves_dynamodb_and_secrets_and_stops() {
    let moto = Moto::start().await.expect("moto starts");
    let pid = moto.pid() as i32;
    let dynamodb = moto.dynamodb().await;
    moto::create_registry_table(&dynamodb, "harness-check")
        .await
        .unwrap();
    let ttl = dynamodb
        .describe_time_to_live()
        .table_name("harness-check")
        .send()
        .await
        .unwrap();
    assert_eq!(
        ttl.time_to_live_description()
            .and_then(|d| d.attribute_name()),
        Some("expires_at")
    );
    let secrets = moto.secretsmanager().await;
    let arn = moto::create_secret(&secrets, "harness/check", r#"{"a":"b"}"#)
        .await
        .unwrap();
    moto::put_secret_value(&secrets, &arn, r#"{"a":"c"}"#)
        .await
        .unwrap();
    let value = secrets
        .get_secret_value()
        .secret_id("harness/check")
        .send()
        .await
        .unwrap();
    assert_eq!(value.secret_string(), Some(r#"{"a":"c"}"#));
    drop(moto);
    assert!(!is_alive(pid), "moto_server survived its drop");
}

#[tokio::test]
async fn the_emulator_starts_from_a_written_scenario_and_stops() {
    let client_id = guid();
    let tenant = guid();
    let mut scenario = scenario::empty(3600);
    scenario.tenants.push(scenario::tenant(
        &tenant,
        "Harness check",
        scenario::read_grants(&client_id),
    ));
    let emulator = Emulator::start(&scenario).await.expect("emulator starts");
    let pid = emulator.pid() as i32;
    assert!(emulator.base_url().starts_with("http://127.0.0.1:"));
    emulator.clear_requests().await.unwrap();
    assert!(emulator.token_requests().await.unwrap().is_empty());
    drop(emulator);
    assert!(!is_alive(pid), "the emulator survived its drop");
}

#[test]
fn the_sample_http_event_is_an_iam_authorized_post_tokens() {
    use aws_lambda_events::apigw::ApiGatewayV2httpRequest;
    let event =
        events::post_tokens(&serde_json::json!({"tenant": guid(), "api": "graph"})).unwrap();
    let request: ApiGatewayV2httpRequest = serde_json::from_value(event).unwrap();
    assert_eq!(request.route_key.as_deref(), Some("POST /tokens"));
    assert_eq!(request.raw_path.as_deref(), Some("/tokens"));
    assert_eq!(request.request_context.http.method, "POST");
    let iam = request
        .request_context
        .authorizer
        .and_then(|authorizer| authorizer.iam)
        .expect("an IAM authorizer");
    assert!(iam.user_arn.is_some());
    let body: serde_json::Value = serde_json::from_str(request.body.as_deref().unwrap()).unwrap();
    assert_eq!(body["api"], "graph");
}

#[test]
fn the_sample_direct_events_name_a_tenant_and_an_api() {
    for name in ["mint-token-direct.json", "mint-token-direct-v1.json"] {
        let event = events::load(name).unwrap();
        assert!(event["tenant"].is_string(), "{name}");
        assert!(
            ["m365d", "mde", "graph"].contains(&event["api"].as_str().unwrap_or("")),
            "{name}"
        );
    }
}

#[tokio::test]
async fn cargo_lambda_watch_runs_a_function_reports_its_errors_and_stops() {
    use defender_partner_e2e::LambdaWatch;
    let env = vec![
        ("PROBE_SETTING".to_owned(), "from-the-harness".to_owned()),
        ("RUST_LOG".to_owned(), "debug".to_owned()),
    ];
    let watch = LambdaWatch::start(
        "defender-partner-e2e",
        "e2e-probe-function",
        &env,
        &serde_json::json!({}),
    )
    .await
    .expect("cargo lambda watch starts the probe function");
    let pid = watch.pid() as i32;

    let answer = watch
        .invoke(&serde_json::json!({ "hello": "world", "log": "marker-5d1f" }))
        .await
        .expect("the probe answers");
    assert_eq!(answer["echo"]["hello"], "world");
    assert_eq!(answer["env"]["PROBE_SETTING"], "from-the-harness");

    let error = watch
        .invoke(&serde_json::json!({ "fail": "tenant_not_registered" }))
        .await
        .expect_err("the probe fails as asked");
    assert_eq!(error.error_type, "tenant_not_registered");
    assert!(error.error_message.contains("as asked"), "{error}");

    // The function's own output (tracing and stderr) reaches the capture.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while watch.logs().text().matches("marker-5d1f").count() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the function's log lines were not captured:\n{}",
            watch.logs().tail(40)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let descendants = descendants_of(pid);
    assert!(!descendants.is_empty(), "the function runs below the watch");
    drop(watch);
    assert!(!is_alive(pid), "cargo lambda watch survived its drop");
    for descendant in descendants {
        assert!(
            !is_alive(descendant),
            "process {descendant} survived the watch"
        );
    }
}
