//! The three ways a change request reaches `update-incident`, decoded into one request and the
//! caller it came from:
//! - the `AWS_IAM` HTTP routes `PATCH /tenants/{tenant}/incidents/{id}`,
//!   `POST /tenants/{tenant}/incidents/{id}/comments` (and the same under `alerts/{id}`): the
//!   caller is the IAM principal API Gateway authenticated;
//! - an `IncidentUpdateRequested` event from the partner's bus: the caller is the event's source
//!   and account, and the event's id is the default idempotency key (EventBridge delivers at least
//!   once and Lambda retries asynchronous invocations: the same event is applied once);
//! - a direct invocation (`lambda:InvokeFunction`, Step Functions): the payload is the request.
//!   Lambda does not tell a function who invoked it; IAM decides who may.
//!
//! Each also names the principal whose mapping (`dp-operator callers`) scopes the request: the
//! IAM principal over HTTP, and `direct-invoke` for the other two, neither of which carries an
//! identity anyone verified (an event's `source` is whatever its sender wrote).

use aws_lambda_events::apigw::ApiGatewayV2httpRequest;
use serde_json::{Map, Value};

use crate::callers::Caller;
use crate::edge::{self, Invocation};
use crate::writeback::UpdateError;
use crate::writeback::events::DETAIL_TYPE_REQUESTED;

/// How the request arrived: decides the shape of the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    Http,
    Event,
    Direct,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    pub arrival: Arrival,
    pub payload: Value,
    /// Who asked, as audited (the signer's full ARN, `events:SOURCE@ACCOUNT`, `direct-invoke`).
    pub caller: String,
    /// Whose mapping scopes the request.
    pub principal: Caller,
}

/// The caller recorded for a direct invocation: the name its mapping goes by, as for every
/// function (`hunt` records the same).
pub const DIRECT_CALLER: &str = crate::callers::DIRECT_INVOKE;

/// Fields a comment route takes besides the comment.
const COMMENT_ROUTE_FIELDS: [&str; 4] = ["comment", "user_token", "user_oid", "idempotency_key"];

pub fn decode(payload: Value) -> Result<Decoded, UpdateError> {
    if payload.get("detail-type").is_some() && payload.get("detail").is_some() {
        return from_event(payload);
    }
    match Invocation::classify(payload)
        .map_err(|error| UpdateError::InvalidRequest(error.message))?
    {
        Invocation::Direct(payload) => Ok(Decoded {
            arrival: Arrival::Direct,
            payload,
            caller: DIRECT_CALLER.to_owned(),
            principal: Caller::DirectInvoke,
        }),
        Invocation::Http(request) => from_http(&request),
    }
}

fn from_event(event: Value) -> Result<Decoded, UpdateError> {
    let text = |name: &str| event.get(name).and_then(Value::as_str).unwrap_or_default();
    if text("detail-type") != DETAIL_TYPE_REQUESTED {
        return Err(UpdateError::InvalidRequest(format!(
            "events of type {:?} are not change requests; send \"{DETAIL_TYPE_REQUESTED}\"",
            text("detail-type").chars().take(64).collect::<String>()
        )));
    }
    let caller = format!("events:{}@{}", text("source"), text("account"));
    let mut detail = match event.get("detail") {
        Some(Value::Object(detail)) => detail.clone(),
        _ => {
            return Err(UpdateError::InvalidRequest(
                "the event's detail must be the change request object".into(),
            ));
        }
    };
    if !detail.contains_key("idempotency_key") && !text("id").is_empty() {
        detail.insert(
            "idempotency_key".into(),
            Value::String(format!("event:{}", text("id"))),
        );
    }
    Ok(Decoded {
        arrival: Arrival::Event,
        payload: Value::Object(detail),
        caller,
        principal: Caller::DirectInvoke,
    })
}

fn from_http(request: &ApiGatewayV2httpRequest) -> Result<Decoded, UpdateError> {
    let path = request.raw_path.as_deref().unwrap_or_default();
    let method = request.request_context.http.method.as_str();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (tenant, collection, id, comments) = match segments.as_slice() {
        ["tenants", tenant, collection, id] => (*tenant, *collection, *id, false),
        ["tenants", tenant, collection, id, "comments"] => (*tenant, *collection, *id, true),
        _ => return Err(no_route(method, path)),
    };
    let id_field = match collection {
        "incidents" => "incident_id",
        "alerts" => "alert_id",
        _ => return Err(no_route(method, path)),
    };
    match (method, comments) {
        ("PATCH", false) | ("POST", true) => {}
        _ => return Err(no_route(method, path)),
    }
    let mut body = match edge::json_body(request)
        .map_err(|error| UpdateError::InvalidRequest(error.message))?
    {
        Value::Object(body) => body,
        _ => {
            return Err(UpdateError::InvalidRequest(
                "the request body must be a JSON object".into(),
            ));
        }
    };
    for (name, segment) in [("tenant", tenant), (id_field, id)] {
        let value = decode_segment(segment);
        // The path names the target; a body naming another is a caller's mistake, not a choice.
        if let Some(given) = body.get(name)
            && given.as_str() != Some(value.as_str())
        {
            return Err(UpdateError::InvalidRequest(format!(
                "\"{name}\" in the body differs from the path"
            )));
        }
        body.insert(name.into(), Value::String(value));
    }
    if comments {
        refuse_other_fields(&body, id_field)?;
    }
    if !body.contains_key("idempotency_key")
        && let Some(key) = request
            .headers
            .get("idempotency-key")
            .and_then(|value| value.to_str().ok())
    {
        body.insert("idempotency_key".into(), Value::String(key.to_owned()));
    }
    Ok(Decoded {
        arrival: Arrival::Http,
        payload: Value::Object(body),
        caller: edge::iam_caller(request),
        principal: Caller::from_user_arn(edge::iam_user_arn(request)),
    })
}

/// Path segments arrive percent-encoded; the request's validation refuses anything that is not
/// a plain id after decoding.
fn decode_segment(segment: &str) -> String {
    url::form_urlencoded::parse(format!("x={segment}").as_bytes())
        .next()
        .map(|(_, value)| value.into_owned())
        .unwrap_or_default()
}

fn refuse_other_fields(body: &Map<String, Value>, id_field: &str) -> Result<(), UpdateError> {
    match body.keys().find(|name| {
        !COMMENT_ROUTE_FIELDS.contains(&name.as_str()) && *name != "tenant" && *name != id_field
    }) {
        Some(name) => Err(UpdateError::InvalidRequest(format!(
            "the comments route takes a comment only; send \"{name}\" with PATCH"
        ))),
        None => Ok(()),
    }
}

fn no_route(method: &str, path: &str) -> UpdateError {
    UpdateError::InvalidRequest(format!(
        "no route {method} {}: use PATCH /tenants/{{tenant}}/incidents/{{id}}, POST /tenants/{{tenant}}/incidents/{{id}}/comments, or the same under alerts/{{id}}",
        path.chars().take(120).collect::<String>()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CallerError;
    use serde_json::json;

    const TENANT: &str = "11111111-2222-3333-4444-555555555555";

    fn http(method: &str, path: &str, body: Value) -> Value {
        json!({
            "version": "2.0",
            "routeKey": format!("{method} /tenants/{{tenant}}/incidents/{{id}}"),
            "rawPath": path,
            "rawQueryString": "",
            "headers": {"content-type": "application/json", "idempotency-key": "hdr-1"},
            "requestContext": {
                "accountId": "123456789012", "apiId": "api", "domainName": "x", "domainPrefix": "x",
                "requestId": "r", "routeKey": "x", "stage": "$default", "time": "07/Dec/2026:10:00:00 +0000",
                "timeEpoch": 0,
                "http": {"method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "10.0.0.1", "userAgent": "t"},
                "authorizer": {"iam": {"accessKey": "AKIA", "accountId": "123456789012", "callerId": "AROA:soar",
                    "userArn": "arn:aws:sts::123456789012:assumed-role/soar/session", "userId": "AROA:soar"}}
            },
            "body": body.to_string(),
            "isBase64Encoded": false
        })
    }

    #[test]
    fn the_http_route_names_tenant_target_and_caller() {
        let decoded = decode(http(
            "PATCH",
            &format!("/tenants/{TENANT}/incidents/42"),
            json!({"status": "resolved"}),
        ))
        .unwrap();
        assert_eq!(decoded.arrival, Arrival::Http);
        assert_eq!(
            decoded.caller,
            "arn:aws:sts::123456789012:assumed-role/soar/session"
        );
        // Scoped by the role the session belongs to.
        assert_eq!(
            decoded.principal,
            Caller::Iam("arn:aws:iam::123456789012:role/soar".into())
        );
        assert_eq!(
            decoded.payload,
            json!({"status": "resolved", "tenant": TENANT, "incident_id": "42", "idempotency_key": "hdr-1"})
        );
        let alert = decode(http(
            "POST",
            &format!("/tenants/{TENANT}/alerts/da1/comments"),
            json!({"comment": "seen"}),
        ))
        .unwrap();
        assert_eq!(alert.payload["alert_id"], "da1");
    }

    #[test]
    fn wrong_routes_and_mismatched_bodies_are_refused() {
        for (method, path, body) in [
            ("POST", format!("/tenants/{TENANT}/incidents/42"), json!({})),
            (
                "PATCH",
                format!("/tenants/{TENANT}/incidents/42/comments"),
                json!({}),
            ),
            ("PATCH", format!("/tenants/{TENANT}/users/42"), json!({})),
            (
                "PATCH",
                format!("/tenants/{TENANT}/incidents/42"),
                json!({"incident_id": "43"}),
            ),
            (
                "PATCH",
                format!("/tenants/{TENANT}/incidents/42"),
                json!({"tenant": "other"}),
            ),
            (
                "POST",
                format!("/tenants/{TENANT}/incidents/42/comments"),
                json!({"comment": "x", "status": "resolved"}),
            ),
            (
                "PATCH",
                format!("/tenants/{TENANT}/incidents/42"),
                json!([1]),
            ),
        ] {
            let error = decode(http(method, &path, body.clone())).unwrap_err();
            assert_eq!(
                error.code().as_str(),
                "invalid_request",
                "{method} {path} {body}"
            );
        }
    }

    #[test]
    fn an_encoded_slash_in_the_path_stays_inside_the_id_and_is_refused_later() {
        let decoded = decode(http(
            "PATCH",
            &format!("/tenants/{TENANT}/incidents/..%2Fusers"),
            json!({"status": "active"}),
        ))
        .unwrap();
        assert_eq!(decoded.payload["incident_id"], "../users");
        let error = crate::writeback::UpdateRequest::from_json(decoded.payload).unwrap_err();
        assert_eq!(error.code().as_str(), "invalid_request");
    }

    #[test]
    fn an_event_is_applied_once_by_its_id() {
        let event = json!({
            "version": "0", "id": "6a7e8feb-b491-4cf7-a9f1-bf3703467718",
            "detail-type": "IncidentUpdateRequested", "source": "partner.soar",
            "account": "123456789012", "time": "2026-12-07T10:00:00Z", "region": "eu-west-1",
            "resources": [], "detail": {"tenant": TENANT, "incident_id": "42", "status": "resolved"}
        });
        let decoded = decode(event.clone()).unwrap();
        assert_eq!(decoded.arrival, Arrival::Event);
        assert_eq!(decoded.caller, "events:partner.soar@123456789012");
        // Anyone allowed to put events on the bus writes any source: no identity to scope by.
        assert_eq!(decoded.principal, Caller::DirectInvoke);
        assert_eq!(
            decoded.payload["idempotency_key"],
            "event:6a7e8feb-b491-4cf7-a9f1-bf3703467718"
        );
        let mut other = event;
        other["detail-type"] = json!("Scheduled Event");
        assert!(decode(other).is_err());
    }

    #[test]
    fn the_sample_events_decode_to_valid_requests() {
        use crate::entry::samples::event;
        for (name, arrival) in [
            ("update-incident-http.json", Arrival::Http),
            ("update-incident-event.json", Arrival::Event),
            ("update-incident-direct.json", Arrival::Direct),
        ] {
            let decoded = decode(event(name)).unwrap();
            assert_eq!(decoded.arrival, arrival, "{name}");
            let request = crate::writeback::UpdateRequest::from_json(decoded.payload)
                .unwrap_or_else(|error| panic!("{name}: {error}"));
            assert!(request.idempotency_key.is_some(), "{name}");
        }
    }

    #[test]
    fn a_direct_invocation_is_the_request() {
        let decoded =
            decode(json!({"tenant": TENANT, "incident_id": "42", "status": "active"})).unwrap();
        assert_eq!(decoded.arrival, Arrival::Direct);
        assert_eq!(decoded.caller, DIRECT_CALLER);
        assert_eq!(decoded.principal, Caller::DirectInvoke);
    }
}
