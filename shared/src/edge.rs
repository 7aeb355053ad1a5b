//! Shaping answers at the edge: API Gateway HTTP API (payload 2.0) responses with the JSON error
//! body every route shares, and recognising which kind of event a function was invoked with.

use std::time::Duration;

use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use aws_lambda_events::encodings::Body;
use aws_lambda_events::http::{HeaderMap, HeaderValue};
use base64::Engine;
use serde_json::{Value, json};

use crate::ErrorCode;

/// An error as a caller sees it: a stable code and a message that carries no secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeError {
    pub code: ErrorCode,
    pub message: String,
    pub retry_after: Option<Duration>,
    /// Microsoft's `claims` challenge (MFA / Conditional Access), passed back unchanged so the
    /// calling app can re-prompt its user.
    pub claims: Option<String>,
}

impl EdgeError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> EdgeError {
        EdgeError {
            code,
            message: message.into(),
            retry_after: None,
            claims: None,
        }
    }

    /// `{"error": {"code", "message"}}`
    pub fn body(&self) -> Value {
        let mut error = json!({"code": self.code.as_str(), "message": self.message});
        if let Some(wait) = self.retry_after {
            error["retry_after_seconds"] = json!(wait.as_secs_f64().ceil() as u64);
        }
        if let Some(claims) = &self.claims {
            error["claims"] = json!(claims);
        }
        json!({ "error": error })
    }
}

/// How a function was invoked.
pub enum Invocation {
    /// Through the HTTP API.
    Http(Box<ApiGatewayV2httpRequest>),
    /// Directly (`lambda:InvokeFunction`, Step Functions): the payload is the request.
    Direct(Value),
}

impl Invocation {
    pub fn classify(payload: Value) -> Result<Invocation, EdgeError> {
        let is_http = payload
            .get("requestContext")
            .and_then(|context| context.get("http"))
            .is_some()
            && payload.get("routeKey").is_some();
        if !is_http {
            return Ok(Invocation::Direct(payload));
        }
        serde_json::from_value(payload)
            .map(|request| Invocation::Http(Box::new(request)))
            .map_err(|error| {
                EdgeError::new(
                    ErrorCode::InvalidRequest,
                    format!("malformed HTTP API event: {error}"),
                )
            })
    }
}

/// The JSON body of an HTTP request (`{}` when empty), decoding base64 where API Gateway did.
pub fn json_body(request: &ApiGatewayV2httpRequest) -> Result<Value, EdgeError> {
    let Some(body) = request.body.as_deref() else {
        return Ok(json!({}));
    };
    let bytes = if request.is_base64_encoded {
        base64::engine::general_purpose::STANDARD
            .decode(body)
            .map_err(|_| EdgeError::new(ErrorCode::InvalidRequest, "body is not valid base64"))?
    } else {
        body.as_bytes().to_vec()
    };
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    serde_json::from_slice(&bytes).map_err(|error| {
        EdgeError::new(
            ErrorCode::InvalidRequest,
            format!("body is not JSON: {error}"),
        )
    })
}

/// A JSON response that no cache keeps (it may hold a token).
pub fn json_response(status: u16, body: &Value) -> ApiGatewayV2httpResponse {
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    headers.insert("cache-control", HeaderValue::from_static("no-store"));
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    let mut response = ApiGatewayV2httpResponse::default();
    response.status_code = i64::from(status);
    response.headers = headers;
    response.body = Some(Body::Text(body.to_string()));
    response
}

/// A redirect with a JSON body for callers that do not follow it.
pub fn redirect_response(location: &str, body: &Value) -> ApiGatewayV2httpResponse {
    let mut response = json_response(302, body);
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers.insert("location", value);
    }
    response
}

/// The route a request is for: its method and its path without any stage prefix, matched on the
/// last segments so that API Gateway stages and Lambda function URLs route alike.
pub fn route_of(request: &ApiGatewayV2httpRequest) -> (String, String) {
    let method = request.request_context.http.method.as_str().to_owned();
    let path = request
        .raw_path
        .clone()
        .or_else(|| request.request_context.http.path.clone())
        .unwrap_or_default();
    (method, path)
}

pub fn error_response(error: &EdgeError) -> ApiGatewayV2httpResponse {
    let mut response = json_response(error.code.http_status(), &error.body());
    if let Some(wait) = error.retry_after {
        let seconds = (wait.as_secs_f64().ceil() as u64).to_string();
        if let Ok(value) = HeaderValue::from_str(&seconds) {
            response.headers.insert("retry-after", value);
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direct_payloads_are_not_http() {
        assert!(matches!(
            Invocation::classify(json!({"tenant": "x", "api": "m365d"})).unwrap(),
            Invocation::Direct(_)
        ));
    }

    #[test]
    fn error_responses_carry_code_status_and_retry_after() {
        let mut error = EdgeError::new(ErrorCode::Throttled, "slow down");
        error.retry_after = Some(Duration::from_millis(2100));
        let response = error_response(&error);
        assert_eq!(response.status_code, 429);
        assert_eq!(response.headers["retry-after"], "3");
        assert_eq!(response.headers["cache-control"], "no-store");
        let Some(Body::Text(body)) = response.body else {
            panic!("text body")
        };
        let body: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["error"]["code"], "throttled");
        assert_eq!(body["error"]["message"], "slow down");
        assert_eq!(body["error"]["retry_after_seconds"], 3);
    }
}
