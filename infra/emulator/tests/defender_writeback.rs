//! Graph write-back (reference §11): `PATCH /v1.0/security/incidents/{id}`,
//! `PATCH /v1.0/security/alerts_v2/{id}`, their comment `POST`s and single `GET`s; validation,
//! permissions (app roles, delegated scopes and portal roles), last-update times, faults
//! (before applying, and answers lost after applying) and the control side (truth, portal edits,
//! write counters).

mod common;
mod defender_common;

use std::time::Duration;

use common::*;
use defender_common::*;
use defender_emulator::{
    AfterApply, DataConfig, DefenderSettingsPatch, Fault, FaultMatch, GrantConfig, RunningEmulator,
    Scenario, UserTokenRequest,
};
use serde_json::{Value, json};

const READ_WRITE: [&str; 4] = [
    "SecurityIncident.Read.All",
    "SecurityIncident.ReadWrite.All",
    "SecurityAlert.Read.All",
    "SecurityAlert.ReadWrite.All",
];

fn writeback_data() -> DataConfig {
    DataConfig {
        graph_alerts: 18,
        ..data(30, 40)
    }
}

/// Contoso with data, its app holding the Graph ReadWrite roles.
fn writable() -> Scenario {
    let mut scenario = scenario(writeback_data());
    for grant in &mut scenario.tenants[0].grants {
        if grant.resource == GRAPH {
            grant.roles = READ_WRITE.iter().map(|r| (*r).to_owned()).collect();
        }
    }
    scenario
}

async fn start_writable() -> RunningEmulator {
    start_with(writable()).await
}

async fn send(
    emulator: &RunningEmulator,
    method: reqwest::Method,
    token: &str,
    path: &str,
    body: Option<&Value>,
) -> Answer {
    let mut request = client()
        .request(method, format!("{}{path}", emulator.base_url()))
        .bearer_auth(token);
    if let Some(body) = body {
        request = request.json(body);
    }
    answer(request.send().await.expect("request")).await
}

async fn patch(emulator: &RunningEmulator, token: &str, path: &str, body: Value) -> Answer {
    send(emulator, reqwest::Method::PATCH, token, path, Some(&body)).await
}

async fn post(emulator: &RunningEmulator, token: &str, path: &str, body: Value) -> Answer {
    send(emulator, reqwest::Method::POST, token, path, Some(&body)).await
}

fn comment(text: &str) -> Value {
    json!({"@odata.type": "microsoft.graph.security.alertComment", "comment": text})
}

/// An incident that is not merged (merged ones have no alerts), by the list.
async fn some_incident(emulator: &RunningEmulator, token: &str) -> Value {
    let list = api(emulator, Some(token), "/v1.0/security/incidents?$top=50").await;
    values(&list)
        .iter()
        .find(|incident| incident["status"] != "redirected")
        .cloned()
        .expect("an incident")
}

async fn some_alert(emulator: &RunningEmulator, token: &str, source: &str) -> Value {
    let list = api(
        emulator,
        Some(token),
        &format!("/v1.0/security/alerts_v2?$filter=serviceSource eq '{source}'"),
    )
    .await;
    values(&list).first().cloned().expect("an alert")
}

async fn user_token(emulator: &RunningEmulator, user: &str, scopes: &[&str]) -> String {
    emulator
        .handle()
        .mint_user_token(&UserTokenRequest {
            tenant: CONTOSO.to_owned(),
            client_id: CLIENT_ID.to_owned(),
            user: user.to_owned(),
            audience: Some(GRAPH.to_owned()),
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
            mfa: true,
            expires_in_seconds: None,
        })
        .unwrap()
        .access_token
}

fn message(answer: &Answer) -> &str {
    answer.body["error"]["message"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn an_incident_update_changes_every_property_and_moves_the_last_update() {
    let emulator = start_writable().await;
    let token = contoso_token(&emulator, GRAPH).await;
    let incident = some_incident(&emulator, &token).await;
    let id = incident["id"].as_str().unwrap();
    let before = time(&incident["lastUpdateDateTime"]);

    let updated = patch(
        &emulator,
        &token,
        &format!("/v1.0/security/incidents/{id}"),
        json!({"assignedTo": "kai@contoso.com", "classification": "truePositive",
               "determination": "malware", "status": "resolved",
               "customTags": ["Demo", "Two-way"]}),
    )
    .await;
    assert_eq!(updated.status, 200, "{}", updated.text);
    assert_eq!(updated.body["id"], id);
    assert_eq!(updated.body["assignedTo"], "kai@contoso.com");
    assert_eq!(updated.body["classification"], "truePositive");
    assert_eq!(updated.body["determination"], "malware");
    assert_eq!(updated.body["status"], "resolved");
    assert_eq!(updated.body["customTags"], json!(["Demo", "Two-way"]));
    assert_eq!(
        updated.body["lastModifiedBy"],
        format!("API-App:{CLIENT_ID}")
    );
    assert!(
        updated.body["@odata.context"]
            .as_str()
            .unwrap()
            .ends_with("$metadata#security/incidents/$entity")
    );
    let after = time(&updated.body["lastUpdateDateTime"]);
    assert!(after > before, "{before} -> {after}");

    // The next list filtered on the last update sees the change, with the same values.
    let filter = format!(
        "/v1.0/security/incidents?$filter=lastUpdateDateTime gt {}",
        incident["lastUpdateDateTime"].as_str().unwrap()
    );
    let changed = api(&emulator, Some(&token), &filter).await;
    let listed = values(&changed)
        .iter()
        .find(|record| record["id"] == id)
        .expect("the updated incident is listed");
    assert_eq!(listed["customTags"], json!(["Demo", "Two-way"]));
    assert_eq!(
        listed["lastUpdateDateTime"],
        updated.body["lastUpdateDateTime"]
    );
    // Filters on the written values see them.
    let by_status = api(
        &emulator,
        Some(&token),
        "/v1.0/security/incidents?$filter=assignedTo eq 'kai@contoso.com'",
    )
    .await;
    assert_eq!(values(&by_status).len(), 1, "{}", by_status.text);

    // GET of the single record agrees, and M365 Defender shows the same incident changed.
    let single = api(
        &emulator,
        Some(&token),
        &format!("/v1.0/security/incidents/{id}"),
    )
    .await;
    assert_eq!(single.status, 200, "{}", single.text);
    assert_eq!(single.body["status"], "resolved");
    let m365d = contoso_token(&emulator, M365D).await;
    let legacy = api(
        &emulator,
        Some(&m365d),
        "/api/incidents?$filter=assignedTo eq 'kai@contoso.com'",
    )
    .await;
    assert_eq!(values(&legacy)[0]["classification"], "TruePositive");
    assert_eq!(values(&legacy)[0]["tags"], json!(["Demo", "Two-way"]));

    // null unassigns; an update leaves what it does not name.
    let unassigned = patch(
        &emulator,
        &token,
        &format!("/v1.0/security/incidents/{id}"),
        json!({"assignedTo": null}),
    )
    .await;
    assert_eq!(unassigned.status, 200, "{}", unassigned.text);
    assert_eq!(unassigned.body["assignedTo"], Value::Null);
    assert_eq!(unassigned.body["status"], "resolved");
    assert!(time(&unassigned.body["lastUpdateDateTime"]) > after);
    emulator.shutdown().await;
}

#[tokio::test]
async fn every_change_gets_a_strictly_later_last_update() {
    let emulator = start_writable().await;
    let token = contoso_token(&emulator, GRAPH).await;
    let incident = some_incident(&emulator, &token).await;
    let path = format!(
        "/v1.0/security/incidents/{}",
        incident["id"].as_str().unwrap()
    );
    let mut last = time(&incident["lastUpdateDateTime"]);
    for n in 0..5 {
        let answer = patch(
            &emulator,
            &token,
            &path,
            json!({"customTags": [n.to_string()]}),
        )
        .await;
        let now = time(&answer.body["lastUpdateDateTime"]);
        assert!(now > last, "{last} -> {now}");
        last = now;
    }
    // An empty update changes nothing, so it moves nothing.
    let empty = patch(&emulator, &token, &path, json!({})).await;
    assert_eq!(empty.status, 200);
    assert_eq!(time(&empty.body["lastUpdateDateTime"]), last);
    emulator.shutdown().await;
}

#[tokio::test]
async fn updates_are_validated_like_graph() {
    let emulator = start_writable().await;
    let token = contoso_token(&emulator, GRAPH).await;
    let incident = some_incident(&emulator, &token).await;
    let id = incident["id"].as_str().unwrap();
    let path = format!("/v1.0/security/incidents/{id}");
    for (body, needle) in [
        (
            json!({"status": "inProgress"}),
            "not documented for updates",
        ),
        (
            json!({"status": "awaitingAction"}),
            "not documented for updates",
        ),
        (json!({"status": "closed"}), "incidentStatus"),
        (json!({"classification": "maybe"}), "alertClassification"),
        (json!({"determination": "clean"}), "alertDetermination"),
        (json!({"customTags": "one"}), "array of strings"),
        (json!({"assignedTo": 7}), "string or null"),
        (json!({"severity": "high"}), "cannot be updated"),
        (
            json!({"owner": "me"}),
            "does not exist on type 'microsoft.graph.security.incident'",
        ),
        (json!(["not", "an", "object"]), "JSON object"),
    ] {
        let refused = patch(&emulator, &token, &path, body.clone()).await;
        assert_graph_error(&refused, 400, "BadRequest");
        assert!(
            message(&refused).contains(needle),
            "{body}: {}",
            refused.text
        );
    }
    let not_json = client()
        .patch(format!("{}{path}", emulator.base_url()))
        .bearer_auth(&token)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(not_json.status(), 400);
    // Nothing of the refused updates was applied.
    let truth = emulator.handle().incident_truth(CONTOSO, id).unwrap();
    assert_eq!(truth["lastUpdateDateTime"], incident["lastUpdateDateTime"]);

    // Both spellings of the renamed determinations, and enum values in any case.
    for (determination, shown) in [
        ("compromisedAccount", "compromisedAccount"),
        ("compromisedUser", "compromisedUser"),
        ("confirmedActivity", "confirmedActivity"),
        ("ConfirmedUserActivity", "confirmedUserActivity"),
    ] {
        let answer = patch(
            &emulator,
            &token,
            &path,
            json!({"classification": "TruePositive", "determination": determination}),
        )
        .await;
        assert_eq!(answer.status, 200, "{}", answer.text);
        assert_eq!(answer.body["determination"], shown);
        assert_eq!(answer.body["classification"], "truePositive");
    }
    emulator.shutdown().await;
}

#[tokio::test]
async fn the_legacy_determination_rule_is_enforced_unless_turned_off() {
    let emulator = start_writable().await;
    let token = contoso_token(&emulator, GRAPH).await;
    let incident = some_incident(&emulator, &token).await;
    let path = format!(
        "/v1.0/security/incidents/{}",
        incident["id"].as_str().unwrap()
    );

    let refused = patch(
        &emulator,
        &token,
        &path,
        json!({"classification": "falsePositive", "determination": "notMalicious"}),
    )
    .await;
    assert_graph_error(&refused, 400, "BadRequest");
    assert!(
        message(&refused).contains("only with the classification 'truePositive'"),
        "{}",
        refused.text
    );
    // unknown is always allowed; truePositive in the same update, or already set, allows any.
    let unknown = patch(
        &emulator,
        &token,
        &path,
        json!({"classification": "falsePositive", "determination": "unknown"}),
    )
    .await;
    assert_eq!(unknown.status, 200, "{}", unknown.text);
    assert_eq!(unknown.body["determination"], "unknown");
    let set_tp = patch(
        &emulator,
        &token,
        &path,
        json!({"classification": "truePositive"}),
    )
    .await;
    assert_eq!(set_tp.status, 200);
    let malware = patch(
        &emulator,
        &token,
        &path,
        json!({"determination": "malware"}),
    )
    .await;
    assert_eq!(malware.status, 200, "{}", malware.text);

    // Off: any pair is accepted.
    emulator
        .handle()
        .patch_defender_settings(&DefenderSettingsPatch {
            incident_determination_rule: Some(false),
            ..DefenderSettingsPatch::default()
        })
        .unwrap();
    let accepted = patch(
        &emulator,
        &token,
        &path,
        json!({"classification": "falsePositive", "determination": "notMalicious"}),
    )
    .await;
    assert_eq!(accepted.status, 200, "{}", accepted.text);
    assert_eq!(accepted.body["determination"], "notMalicious");
    // Through the HTTP control API as well.
    let on = client()
        .put(format!("{}/_emulator/settings", emulator.base_url()))
        .body(r#"{"incident_determination_rule": true}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(on.status(), 204);
    assert!(
        emulator
            .handle()
            .defender_settings()
            .incident_determination_rule
    );
    emulator.shutdown().await;
}

#[tokio::test]
async fn comments_are_appended_never_deduplicated() {
    let emulator = start_writable().await;
    let token = contoso_token(&emulator, GRAPH).await;
    let incident = some_incident(&emulator, &token).await;
    let id = incident["id"].as_str().unwrap();
    let generated = incident["comments"].as_array().unwrap().len();
    let path = format!("/v1.0/security/incidents/{id}/comments");

    let first = post(&emulator, &token, &path, comment("Contained by the SOC.")).await;
    assert_eq!(first.status, 200, "{}", first.text);
    let list = first.body["value"].as_array().unwrap();
    assert_eq!(list.len(), generated + 1);
    let added = list.last().unwrap();
    assert_eq!(added["comment"], "Contained by the SOC.");
    assert_eq!(
        added["createdByDisplayName"],
        "Partner SOC connector (demo)"
    );
    assert!(added["createdDateTime"].is_string());
    assert!(
        first.body["@odata.context"]
            .as_str()
            .unwrap()
            .ends_with(&format!("security/incidents('{id}')/comments"))
    );

    // A retried POST adds a second copy, as at Microsoft.
    let again = post(&emulator, &token, &path, comment("Contained by the SOC.")).await;
    assert_eq!(again.body["value"].as_array().unwrap().len(), generated + 2);

    // The comments show in the incident, which moved.
    let single = api(
        &emulator,
        Some(&token),
        &format!("/v1.0/security/incidents/{id}"),
    )
    .await;
    let comments = single.body["comments"].as_array().unwrap();
    assert_eq!(comments.len(), generated + 2);
    assert_eq!(
        single.body["lastUpdateDateTime"],
        comments.last().unwrap()["createdDateTime"]
    );
    assert!(time(&single.body["lastUpdateDateTime"]) > time(&incident["lastUpdateDateTime"]));

    for (body, needle) in [
        (json!({"comment": ""}), "must not be empty"),
        (json!({}), "is required"),
        (json!({"comment": "x", "createdBy": "me"}), "does not exist"),
        (
            json!({"@odata.type": "microsoft.graph.security.incident", "comment": "x"}),
            "alertComment",
        ),
    ] {
        let refused = post(&emulator, &token, &path, body.clone()).await;
        assert_graph_error(&refused, 400, "BadRequest");
        assert!(
            message(&refused).contains(needle),
            "{body}: {}",
            refused.text
        );
    }
    emulator.shutdown().await;
}

#[tokio::test]
async fn alerts_are_updated_and_commented_moving_their_incident() {
    let emulator = start_writable().await;
    let token = contoso_token(&emulator, GRAPH).await;
    for source in [
        "microsoftDefenderForEndpoint",
        "microsoftDefenderForIdentity",
    ] {
        let alert = some_alert(&emulator, &token, source).await;
        let id = alert["id"].as_str().unwrap();
        let incident_id = alert["incidentId"].as_str().unwrap();
        let incident_before = emulator
            .handle()
            .incident_truth(CONTOSO, incident_id)
            .unwrap();
        let path = format!("/v1.0/security/alerts_v2/{id}");

        let updated = patch(
            &emulator,
            &token,
            &path,
            json!({"status": "resolved", "assignedTo": "kai@contoso.com",
                   "classification": "falsePositive", "determination": "clean",
                   "customDetails": {"ticket": "INC-42"}}),
        )
        .await;
        assert_eq!(updated.status, 200, "{}", updated.text);
        assert_eq!(updated.body["id"], id);
        assert_eq!(updated.body["status"], "resolved");
        assert_eq!(updated.body["classification"], "falsePositive");
        assert_eq!(updated.body["determination"], "clean");
        assert_eq!(updated.body["customDetails"], json!({"ticket": "INC-42"}));
        assert_eq!(
            updated.body["resolvedDateTime"],
            updated.body["lastUpdateDateTime"]
        );
        assert!(time(&updated.body["lastUpdateDateTime"]) > time(&alert["lastUpdateDateTime"]));
        let incident_after = emulator
            .handle()
            .incident_truth(CONTOSO, incident_id)
            .unwrap();
        assert_eq!(
            incident_after["lastUpdateDateTime"], updated.body["lastUpdateDateTime"],
            "the incident moves with its alert"
        );
        assert!(
            time(&incident_after["lastUpdateDateTime"])
                > time(&incident_before["lastUpdateDateTime"])
        );

        let reopened = patch(&emulator, &token, &path, json!({"status": "inProgress"})).await;
        assert_eq!(reopened.body["status"], "inProgress");
        assert_eq!(reopened.body["resolvedDateTime"], Value::Null);

        let commented = post(
            &emulator,
            &token,
            &format!("{path}/comments"),
            comment("False positive: lab device."),
        )
        .await;
        assert_eq!(commented.status, 200, "{}", commented.text);
        let last = commented.body["value"]
            .as_array()
            .unwrap()
            .last()
            .unwrap()
            .clone();
        assert_eq!(last["comment"], "False positive: lab device.");
        let single = api(&emulator, Some(&token), &path).await;
        assert_eq!(single.status, 200, "{}", single.text);
        assert_eq!(
            single.body["comments"].as_array().unwrap().last().unwrap(),
            &last
        );
    }
    for (body, needle) in [
        (json!({"status": "active"}), "alertStatus"),
        (json!({"customTags": ["x"]}), "does not exist"),
        (json!({"customDetails": "x"}), "an object"),
        (json!({"title": "x"}), "cannot be updated"),
    ] {
        let alert = some_alert(&emulator, &token, "microsoftDefenderForEndpoint").await;
        let refused = patch(
            &emulator,
            &token,
            &format!("/v1.0/security/alerts_v2/{}", alert["id"].as_str().unwrap()),
            body.clone(),
        )
        .await;
        assert_graph_error(&refused, 400, "BadRequest");
        assert!(
            message(&refused).contains(needle),
            "{body}: {}",
            refused.text
        );
    }
    emulator.shutdown().await;
}

#[tokio::test]
async fn unknown_records_are_404() {
    let emulator = start_writable().await;
    let token = contoso_token(&emulator, GRAPH).await;
    for (method, path) in [
        (reqwest::Method::GET, "/v1.0/security/incidents/999999"),
        (reqwest::Method::PATCH, "/v1.0/security/incidents/abc"),
        (reqwest::Method::POST, "/v1.0/security/incidents/0/comments"),
        (
            reqwest::Method::GET,
            "/v1.0/security/alerts_v2/ea00000000-0000",
        ),
        (reqwest::Method::PATCH, "/v1.0/security/alerts_v2/x"),
        (
            reqwest::Method::POST,
            "/v1.0/security/alerts_v2/fa1/comments",
        ),
    ] {
        let body = if method == reqwest::Method::PATCH {
            json!({"status": "resolved"})
        } else {
            comment("x")
        };
        let body = (method != reqwest::Method::GET).then_some(&body);
        let answer = send(&emulator, method, &token, path, body).await;
        assert_graph_error(&answer, 404, "NotFound");
    }
    emulator.shutdown().await;
}

#[tokio::test]
async fn writes_need_the_read_write_roles() {
    // The demo app holds only SecurityIncident.Read.All on Graph in Contoso.
    let emulator = start_with(scenario(writeback_data())).await;
    let token = contoso_token(&emulator, GRAPH).await;
    let incident = some_incident(&emulator, &token).await;
    let id = incident["id"].as_str().unwrap();
    for (method, path) in [
        (
            reqwest::Method::PATCH,
            format!("/v1.0/security/incidents/{id}"),
        ),
        (
            reqwest::Method::POST,
            format!("/v1.0/security/incidents/{id}/comments"),
        ),
    ] {
        let answer = send(&emulator, method, &token, &path, Some(&comment("x"))).await;
        assert_graph_error(&answer, 403, "Forbidden");
        assert!(
            message(&answer).contains("SecurityIncident.ReadWrite.All"),
            "{}",
            answer.text
        );
    }
    // Reading one record needs only the read role.
    let read = api(
        &emulator,
        Some(&token),
        &format!("/v1.0/security/incidents/{id}"),
    )
    .await;
    assert_eq!(read.status, 200, "{}", read.text);

    // The incident ReadWrite role does not open alerts_v2 writes.
    emulator
        .handle()
        .set_grant(
            CONTOSO,
            &GrantConfig {
                client_id: CLIENT_ID.to_owned(),
                resource: GRAPH.to_owned(),
                roles: vec![
                    "SecurityIncident.ReadWrite.All".to_owned(),
                    "SecurityAlert.Read.All".to_owned(),
                ],
            },
        )
        .unwrap();
    let token = contoso_token(&emulator, GRAPH).await;
    let alert = some_alert(&emulator, &token, "microsoftDefenderForEndpoint").await;
    let alert_path = format!("/v1.0/security/alerts_v2/{}", alert["id"].as_str().unwrap());
    let refused = patch(
        &emulator,
        &token,
        &alert_path,
        json!({"status": "resolved"}),
    )
    .await;
    assert_graph_error(&refused, 403, "Forbidden");
    assert!(message(&refused).contains("SecurityAlert.ReadWrite.All"));
    let refused = post(
        &emulator,
        &token,
        &format!("{alert_path}/comments"),
        comment("x"),
    )
    .await;
    assert_graph_error(&refused, 403, "Forbidden");
    let allowed = patch(
        &emulator,
        &token,
        &format!("/v1.0/security/incidents/{id}"),
        json!({"status": "active"}),
    )
    .await;
    assert_eq!(allowed.status, 200, "{}", allowed.text);
    emulator.shutdown().await;
}

#[tokio::test]
async fn delegated_writes_need_the_scope_and_a_portal_role_that_writes() {
    let emulator = start_writable().await;
    let app = contoso_token(&emulator, GRAPH).await;
    let incident = some_incident(&emulator, &app).await;
    let path = format!(
        "/v1.0/security/incidents/{}",
        incident["id"].as_str().unwrap()
    );

    // The Security Reader has the scope but not a role that writes.
    let reader = user_token(
        &emulator,
        "analyst@contoso.onmicrosoft.com",
        &["SecurityIncident.ReadWrite.All"],
    )
    .await;
    let refused = patch(&emulator, &reader, &path, json!({"status": "resolved"})).await;
    assert_graph_error(&refused, 403, "Forbidden");
    assert!(
        message(&refused).contains("Security Operator")
            && message(&refused).contains("roles held: Security Reader"),
        "{}",
        refused.text
    );
    // ...but reads with it.
    let read = api(&emulator, Some(&reader), &path).await;
    assert_eq!(read.status, 200, "{}", read.text);

    // The Security Operator without the write scope.
    let read_scope = user_token(
        &emulator,
        "secops@contoso.onmicrosoft.com",
        &["SecurityIncident.Read.All"],
    )
    .await;
    let refused = patch(&emulator, &read_scope, &path, json!({"status": "resolved"})).await;
    assert_graph_error(&refused, 403, "Forbidden");
    assert!(message(&refused).contains("Missing scope permissions"));

    // With both: allowed, and the records name the user.
    let operator = user_token(
        &emulator,
        "secops@contoso.onmicrosoft.com",
        &["SecurityIncident.ReadWrite.All"],
    )
    .await;
    let updated = patch(&emulator, &operator, &path, json!({"status": "resolved"})).await;
    assert_eq!(updated.status, 200, "{}", updated.text);
    assert_eq!(
        updated.body["lastModifiedBy"],
        "User-secops@contoso.onmicrosoft.com"
    );
    let commented = post(
        &emulator,
        &operator,
        &format!("{path}/comments"),
        comment("Reviewed."),
    )
    .await;
    assert_eq!(commented.status, 200, "{}", commented.text);
    let last = commented.body["value"].as_array().unwrap().last().unwrap();
    assert_eq!(
        last["createdByDisplayName"],
        "secops@contoso.onmicrosoft.com"
    );

    // No portal role at all; a Global Administrator may write.
    let helpdesk = user_token(
        &emulator,
        "helpdesk@contoso.onmicrosoft.com",
        &["SecurityIncident.ReadWrite.All"],
    )
    .await;
    let refused = patch(&emulator, &helpdesk, &path, json!({})).await;
    assert!(
        message(&refused).contains("roles held: none"),
        "{}",
        refused.text
    );
    let admin = user_token(
        &emulator,
        "admin@contoso.onmicrosoft.com",
        &["SecurityIncident.ReadWrite.All"],
    )
    .await;
    assert_eq!(patch(&emulator, &admin, &path, json!({})).await.status, 200);
    emulator.shutdown().await;
}

#[tokio::test]
async fn server_faults_come_before_the_write_is_applied() {
    let emulator = start_writable().await;
    let handle = emulator.handle();
    let token = contoso_token(&emulator, GRAPH).await;
    let incident = some_incident(&emulator, &token).await;
    let id = incident["id"].as_str().unwrap();
    let path = format!("/v1.0/security/incidents/{id}");

    handle
        .push_fault(Fault::status(FaultMatch::GraphIncidentWrite, 503, 1).for_tenant("contoso.com"))
        .unwrap();
    handle
        .push_fault(Fault::throttle(FaultMatch::GraphComments, 9, 1))
        .unwrap();
    let unavailable = patch(&emulator, &token, &path, json!({"customTags": ["x"]})).await;
    assert_graph_error(&unavailable, 503, "ServiceUnavailable");
    let throttled = post(&emulator, &token, &format!("{path}/comments"), comment("x")).await;
    assert_graph_error(&throttled, 429, "TooManyRequests");
    assert_eq!(throttled.headers["retry-after"], "9");
    // Neither was applied.
    let truth = handle.incident_truth(CONTOSO, id).unwrap();
    assert_eq!(truth["lastUpdateDateTime"], incident["lastUpdateDateTime"]);
    assert_eq!(truth["comments"], incident["comments"]);

    // graph_writes takes every write route; the list is not affected.
    handle
        .push_fault(Fault::status(FaultMatch::GraphWrites, 500, 2))
        .unwrap();
    assert_eq!(
        api(&emulator, Some(&token), "/v1.0/security/incidents")
            .await
            .status,
        200
    );
    let alert = some_alert(&emulator, &token, "microsoftDefenderForEndpoint").await;
    let alert_path = format!("/v1.0/security/alerts_v2/{}", alert["id"].as_str().unwrap());
    assert_eq!(
        patch(&emulator, &token, &alert_path, json!({}))
            .await
            .status,
        500
    );
    assert_eq!(
        post(
            &emulator,
            &token,
            &format!("{alert_path}/comments"),
            comment("x")
        )
        .await
        .status,
        500
    );
    assert!(handle.pending_faults().is_empty());

    // The counters saw every write, refused ones included.
    let calls = handle.data_api_calls(CONTOSO);
    assert_eq!(calls.graph_incident_update.requests, 1);
    assert_eq!(calls.graph_incident_update.failed, 1);
    assert_eq!(calls.graph_incident_comments.throttled, 1);
    assert_eq!(calls.graph_alert_update.failed, 1);
    assert_eq!(calls.graph_alert_comments.failed, 1);
    assert_eq!(calls.writes(), 4);
    emulator.shutdown().await;
}

#[tokio::test]
async fn a_dropped_answer_still_applies_the_write() {
    let emulator = start_writable().await;
    let handle = emulator.handle();
    let token = contoso_token(&emulator, GRAPH).await;
    let incident = some_incident(&emulator, &token).await;
    let id = incident["id"].as_str().unwrap();
    let path = format!("/v1.0/security/incidents/{id}");

    handle
        .push_fault_after_apply(
            Fault::served(FaultMatch::GraphIncidentWrite, 1),
            AfterApply::Drop,
        )
        .unwrap();
    let sent = client()
        .patch(format!("{}{path}", emulator.base_url()))
        .bearer_auth(&token)
        .json(&json!({"customTags": ["applied"]}))
        .send()
        .await;
    // Not even a status line arrives: the connection closes.
    assert!(sent.is_err(), "the answer must not arrive: {sent:?}");
    let truth = handle.incident_truth(CONTOSO, id).unwrap();
    assert_eq!(truth["customTags"], json!(["applied"]));
    assert!(time(&truth["lastUpdateDateTime"]) > time(&incident["lastUpdateDateTime"]));
    // One PATCH reached the emulator.
    assert_eq!(
        handle
            .data_api_calls(CONTOSO)
            .graph_incident_update
            .requests,
        1
    );

    // The retry of a comment adds a second copy: comments are not idempotent.
    handle
        .push_fault_after_apply(
            Fault::served(FaultMatch::GraphComments, 1),
            AfterApply::Drop,
        )
        .unwrap();
    let comments_path = format!("{path}/comments");
    let first = client()
        .post(format!("{}{comments_path}", emulator.base_url()))
        .bearer_auth(&token)
        .json(&comment("Isolated."))
        .send()
        .await;
    assert!(first.is_err());
    let retry = post(&emulator, &token, &comments_path, comment("Isolated.")).await;
    assert_eq!(retry.status, 200);
    let copies = retry.body["value"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["comment"] == "Isolated.")
        .count();
    assert_eq!(copies, 2);
    emulator.shutdown().await;
}

#[tokio::test]
async fn a_delayed_answer_times_the_client_out_after_the_write() {
    let emulator = start_writable().await;
    let token = contoso_token(&emulator, GRAPH).await;
    let alert = some_alert(&emulator, &token, "microsoftDefenderForEndpoint").await;
    let id = alert["id"].as_str().unwrap();
    // Over HTTP, as an end-to-end test queues it.
    let queued = client()
        .post(format!("{}/_emulator/faults", emulator.base_url()))
        .body(r#"{"match":"graph_alert_write","after_apply":"delay","delay_ms":3000}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(queued.status(), 200);
    let pending: Value = queued.json().await.unwrap();
    assert_eq!(pending["pending"][0]["after_apply"], "delay");

    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let error = impatient
        .patch(format!(
            "{}/v1.0/security/alerts_v2/{id}",
            emulator.base_url()
        ))
        .bearer_auth(&token)
        .json(&json!({"status": "resolved"}))
        .send()
        .await
        .expect_err("the client gives up first");
    assert!(error.is_timeout(), "{error}");
    let truth = emulator.handle().alert_truth(CONTOSO, id).unwrap();
    assert_eq!(truth["status"], "resolved");
    emulator.shutdown().await;
}

#[tokio::test]
async fn after_apply_faults_are_validated() {
    let emulator = start_writable().await;
    for body in [
        r#"{"match":"graph_incidents","after_apply":"drop"}"#,
        r#"{"match":"graph_writes","after_apply":"drop","status":503}"#,
        r#"{"match":"graph_writes","after_apply":"drop","delay_ms":10}"#,
        r#"{"match":"graph_writes","after_apply":"delay"}"#,
        r#"{"match":"graph_writes","after_apply":"later"}"#,
    ] {
        let refused = client()
            .post(format!("{}/_emulator/faults", emulator.base_url()))
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), 400, "{body}");
    }
    emulator.shutdown().await;
}

#[tokio::test]
async fn the_control_api_reads_the_truth_and_edits_like_the_portal() {
    let emulator = start_writable().await;
    let base = emulator.base_url().to_owned();
    let token = contoso_token(&emulator, GRAPH).await;
    let incident = some_incident(&emulator, &token).await;
    let id = incident["id"].as_str().unwrap();

    let truth = get(&format!(
        "{base}/_emulator/tenants/contoso.com/incidents/{id}"
    ))
    .await;
    assert_eq!(truth.status, 200, "{}", truth.text);
    assert_eq!(
        truth.body["lastUpdateDateTime"],
        incident["lastUpdateDateTime"]
    );
    assert_eq!(truth.body["comments"], incident["comments"]);

    // An analyst edits the incident in the portal.
    let edited = client()
        .post(format!("{base}/_emulator/tenants/contoso.com/incidents/{id}/portal-edit"))
        .body(r#"{"status":"resolved","customTags":["Portal"],"comment":"Closed in the portal.","by":"ana@contoso.com"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(edited.status(), 200);
    let edited: Value = edited.json().await.unwrap();
    assert_eq!(edited["status"], "resolved");
    assert_eq!(edited["customTags"], json!(["Portal"]));
    assert_eq!(edited["lastModifiedBy"], "User-ana@contoso.com");
    let last = edited["comments"].as_array().unwrap().last().unwrap();
    assert_eq!(last["comment"], "Closed in the portal.");
    assert_eq!(last["createdByDisplayName"], "ana@contoso.com");
    assert!(time(&edited["lastUpdateDateTime"]) > time(&incident["lastUpdateDateTime"]));
    // The partner's next poll sees it.
    let next = api(
        &emulator,
        Some(&token),
        &format!(
            "/v1.0/security/incidents?$filter=lastUpdateDateTime gt {}",
            incident["lastUpdateDateTime"].as_str().unwrap()
        ),
    )
    .await;
    assert!(values(&next).iter().any(|record| record["id"] == id));

    // An empty portal edit still moves the last update.
    let touched = emulator
        .handle()
        .portal_edit_incident(CONTOSO, id, &json!({}))
        .unwrap();
    assert!(time(&touched["lastUpdateDateTime"]) > time(&edited["lastUpdateDateTime"]));
    // Portal edits are validated, without the determination rule.
    let refused = client()
        .post(format!(
            "{base}/_emulator/tenants/contoso.com/incidents/{id}/portal-edit"
        ))
        .body(r#"{"status":"closed"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    assert!(
        emulator
            .handle()
            .portal_edit_incident(
                CONTOSO,
                id,
                &json!({"classification": "falsePositive", "determination": "notMalicious"})
            )
            .is_ok()
    );
    let missing = get(&format!(
        "{base}/_emulator/tenants/contoso.com/incidents/999999"
    ))
    .await;
    assert_eq!(missing.status, 404);

    // Alerts too.
    let alert = some_alert(&emulator, &token, "microsoftDefenderForIdentity").await;
    let alert_id = alert["id"].as_str().unwrap();
    let alert_edit = emulator
        .handle()
        .portal_edit_alert(
            CONTOSO,
            alert_id,
            &json!({"status": "inProgress", "comment": "Looking."}),
        )
        .unwrap();
    assert_eq!(alert_edit["status"], "inProgress");
    let alert_truth = get(&format!(
        "{base}/_emulator/tenants/{CONTOSO}/alerts/{alert_id}"
    ))
    .await;
    assert_eq!(alert_truth.body["status"], "inProgress");
    assert_eq!(
        alert_truth.body["comments"]
            .as_array()
            .unwrap()
            .last()
            .unwrap()["comment"],
        "Looking."
    );

    // The data view counts records with written values; portal edits are not API calls.
    let data = get(&format!("{base}/_emulator/tenants/contoso.com/data")).await;
    assert_eq!(data.body["edited_records"], 2);
    let calls = get(&format!("{base}/_emulator/data/calls?tenant=contoso.com")).await;
    assert_eq!(calls.body["calls"]["graph_incident_update"]["requests"], 0);
    emulator.shutdown().await;
}

#[tokio::test]
async fn write_counters_tell_how_many_writes_reached_microsoft() {
    let emulator = start_writable().await;
    let token = contoso_token(&emulator, GRAPH).await;
    let incident = some_incident(&emulator, &token).await;
    let path = format!(
        "/v1.0/security/incidents/{}",
        incident["id"].as_str().unwrap()
    );
    emulator.handle().clear_data_api_calls();
    patch(&emulator, &token, &path, json!({"status": "resolved"})).await;
    post(&emulator, &token, &format!("{path}/comments"), comment("x")).await;
    api(&emulator, Some(&token), &path).await;
    let calls = get(&format!(
        "{}/_emulator/data/calls?tenant=contoso.com",
        emulator.base_url()
    ))
    .await;
    let calls = &calls.body["calls"];
    assert_eq!(calls["graph_incident_update"]["requests"], 1);
    assert_eq!(calls["graph_incident_update"]["ok"], 1);
    assert_eq!(calls["graph_incident_comments"]["requests"], 1);
    assert_eq!(calls["graph_incident_get"]["requests"], 1);
    assert_eq!(calls["graph_alert_update"]["requests"], 0);
    emulator.shutdown().await;
}
