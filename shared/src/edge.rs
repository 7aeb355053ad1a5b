//! Shaping answers at the edge: API Gateway HTTP API (payload 2.0) responses with the JSON error
//! body every route shares, and recognising whether a function was invoked over HTTP.

use std::time::Duration;

use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use aws_lambda_events::encodings::Body;
use aws_lambda_events::http::{HeaderMap, HeaderValue};
use base64::Engine;
use serde_json::{Value, json};

use crate::{CallerError, ErrorCode};

/// An error as a caller sees it, as a value: a stable code and a message that carries no secret.
/// The edge makes its own (a missing parameter) and takes any other [`CallerError`] as one.
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
        error_body(self)
    }
}

impl std::fmt::Display for EdgeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl CallerError for EdgeError {
    fn code(&self) -> ErrorCode {
        self.code
    }

    fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    fn claims_challenge(&self) -> Option<&str> {
        self.claims.as_deref()
    }
}

impl<E: CallerError + ?Sized> From<&E> for EdgeError {
    fn from(error: &E) -> Self {
        EdgeError {
            code: error.code(),
            message: error.to_string(),
            retry_after: error.retry_after(),
            claims: error.claims_challenge().map(str::to_owned),
        }
    }
}

/// Whole seconds to wait, rounded up: a caller that waits this long is not early.
fn wait_seconds(wait: Duration) -> u64 {
    wait.as_secs_f64().ceil() as u64
}

/// `{"error": {"code", "message"[, "retry_after_seconds"][, "claims"]}}`
fn error_body(error: &(impl CallerError + ?Sized)) -> Value {
    let mut body = json!({"code": error.code().as_str(), "message": error.to_string()});
    if let Some(wait) = error.retry_after() {
        body["retry_after_seconds"] = json!(wait_seconds(wait));
    }
    if let Some(claims) = error.claims_challenge() {
        body["claims"] = json!(claims);
    }
    json!({ "error": body })
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
    uncached_response(status, headers, body.to_string())
}

/// An answer that no cache keeps and no browser second-guesses the type of; `headers` add
/// what the body needs (its type, a page's policies).
pub(crate) fn uncached_response(
    status: u16,
    mut headers: HeaderMap,
    body: String,
) -> ApiGatewayV2httpResponse {
    headers.insert("cache-control", HeaderValue::from_static("no-store"));
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    let mut response = ApiGatewayV2httpResponse::default();
    response.status_code = i64::from(status);
    response.headers = headers;
    response.body = Some(Body::Text(body));
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

/// Who called an `AWS_IAM` route, as API Gateway verified it (the signer's ARN), for audit
/// records; `http:unauthenticated` on a route without IAM authorisation.
pub fn iam_caller(request: &ApiGatewayV2httpRequest) -> String {
    iam_user_arn(request)
        .unwrap_or("http:unauthenticated")
        .to_owned()
}

/// The signer's ARN API Gateway verified on an `AWS_IAM` route (`authorizer.iam.userArn`).
pub fn iam_user_arn(request: &ApiGatewayV2httpRequest) -> Option<&str> {
    request
        .request_context
        .authorizer
        .as_ref()
        .and_then(|authorizer| authorizer.iam.as_ref())
        .and_then(|iam| iam.user_arn.as_deref())
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

/// A refusal as an HTTP caller sees it: the code's status, `Retry-After` when Microsoft said how
/// long to wait, and the JSON error body.
pub fn error_response(error: &(impl CallerError + ?Sized)) -> ApiGatewayV2httpResponse {
    let mut response = json_response(error.code().http_status(), &error_body(error));
    if let Some(wait) = error.retry_after() {
        response
            .headers
            .insert("retry-after", wait_seconds(wait).into());
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
    fn any_caller_error_answers_alike_as_a_value_and_over_http() {
        let registry = crate::store::RegistryError::Unavailable("timeout".into());
        let edge = EdgeError::from(&registry);
        assert_eq!(edge.code, ErrorCode::RegistryUnavailable);
        assert_eq!(edge.message, registry.to_string());
        let response = error_response(&registry);
        assert_eq!(response.status_code, 503);
        assert!(!response.headers.contains_key("retry-after"));
        let Some(Body::Text(body)) = response.body else {
            panic!("text body")
        };
        assert_eq!(serde_json::from_str::<Value>(&body).unwrap(), edge.body());
    }

    #[test]
    fn a_claims_challenge_reaches_the_body_unchanged() {
        let mut error = EdgeError::new(ErrorCode::InteractionRequired, "MFA needed");
        error.claims = Some(r#"{"access_token":{"acrs":{"essential":true}}}"#.into());
        let body = error.body();
        assert_eq!(
            body["error"]["claims"],
            r#"{"access_token":{"acrs":{"essential":true}}}"#
        );
        assert_eq!(error_response(&error).status_code, 401);
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
