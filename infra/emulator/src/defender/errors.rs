//! Error answers of the data APIs, in each API's shape (`samples/errors.json`):
//! M365 Defender and Defender for Endpoint `{"error":{"code","message","target"}}`,
//! Graph `{"error":{"code","message","innerError":{"date","request-id","client-request-id"}}}`.

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde_json::{Value, json};
use uuid::Uuid;

use super::Api;
use super::odata::QueryError;
use super::time;

/// `Content-Type` of M365 Defender and Defender for Endpoint answers (SW capture).
pub(crate) const ODATA_JSON: &str =
    "application/json; odata.metadata=minimal; odata.streaming=true; charset=utf-8";
/// `Content-Type` of Graph answers.
pub(crate) const GRAPH_JSON: &str = "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8";

/// Why a bearer token was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AuthFailure {
    Missing,
    Malformed,
    BadSignature,
    Expired,
    NotYetValid,
    WrongAudience,
    UnknownTenant,
}

impl AuthFailure {
    pub(crate) fn reason(self) -> &'static str {
        match self {
            AuthFailure::Missing => "no bearer token",
            AuthFailure::Malformed => "the token is not a JWT",
            AuthFailure::BadSignature => "the signature is not the emulator's",
            AuthFailure::Expired => "the token is expired",
            AuthFailure::NotYetValid => "the token is not valid yet",
            AuthFailure::WrongAudience => "the token is for another API",
            AuthFailure::UnknownTenant => "the token's tenant is unknown",
        }
    }

    fn graph_message(self) -> &'static str {
        match self {
            AuthFailure::Missing => "Access token is empty.",
            AuthFailure::Expired => "Lifetime validation failed, the token is expired.",
            AuthFailure::NotYetValid => "Lifetime validation failed, the token is not yet valid.",
            AuthFailure::WrongAudience => "Access token validation failure. Invalid audience.",
            AuthFailure::Malformed | AuthFailure::BadSignature | AuthFailure::UnknownTenant => {
                "Access token validation failure."
            }
        }
    }
}

/// One error answer, rendered in the API's shape.
#[derive(Clone, Debug)]
pub(crate) struct ApiError {
    pub api: Api,
    pub status: StatusCode,
    pub code: String,
    pub message: String,
    /// Sent as `Retry-After` (seconds).
    pub retry_after: Option<u64>,
    /// Graph's `details: []` (the `$top` refusal has it).
    pub details: bool,
}

impl ApiError {
    pub(crate) fn new(
        api: Api,
        status: StatusCode,
        code: &str,
        message: impl Into<String>,
    ) -> Self {
        ApiError {
            api,
            status,
            code: code.to_owned(),
            message: message.into(),
            retry_after: None,
            details: false,
        }
    }

    pub(crate) fn unauthorized(api: Api, failure: AuthFailure) -> Self {
        match api {
            Api::Graph => ApiError::new(
                api,
                StatusCode::UNAUTHORIZED,
                "InvalidAuthenticationToken",
                failure.graph_message(),
            ),
            _ => ApiError::new(
                api,
                StatusCode::UNAUTHORIZED,
                "Unauthorized",
                "Unauthorized",
            ),
        }
    }

    pub(crate) fn forbidden(api: Api, required: &[&str], present: &[String]) -> Self {
        let message = match api {
            Api::Graph => format!(
                "Missing application roles. API required roles: {}. Application roles present: {}.",
                required.join(","),
                present.join(",")
            ),
            _ => {
                let mut required: Vec<&str> = required.to_vec();
                required.reverse();
                format!(
                    "The application does not have any of the required application permissions ({}) to access the resource.",
                    required.join(", ")
                )
            }
        };
        ApiError::new(api, StatusCode::FORBIDDEN, "Forbidden", message)
    }

    /// A delegated token without any of the delegated permissions the call needs.
    pub(crate) fn forbidden_scopes(api: Api, required: &[&str], present: &[String]) -> Self {
        let message = match api {
            Api::Graph => format!(
                "Missing scope permissions on the request. API requires one of '{}'. Scopes on the request '{}'.",
                required.join(", "),
                present.join(", ")
            ),
            _ => format!(
                "The user token does not have any of the required delegated permissions ({}) to access the resource.",
                required.join(", ")
            ),
        };
        ApiError::new(api, StatusCode::FORBIDDEN, "Forbidden", message)
    }

    /// A delegated call whose user holds no portal role that allows it.
    pub(crate) fn forbidden_user(api: Api) -> Self {
        let message = match api {
            Api::Graph => "The signed-in user does not have a role that allows this operation (e.g. Security Reader).".to_owned(),
            _ => "The user does not have the required permissions to access the resource: a Security Reader or higher role is needed.".to_owned(),
        };
        ApiError::new(api, StatusCode::FORBIDDEN, "Forbidden", message)
    }

    /// A delegated write whose user holds none of the portal roles that allow it: the message
    /// names the roles needed and those held.
    pub(crate) fn forbidden_user_role(api: Api, needed: &[&str], held: &[String]) -> Self {
        let held = if held.is_empty() {
            "none".to_owned()
        } else {
            held.join(", ")
        };
        ApiError::new(
            api,
            StatusCode::FORBIDDEN,
            "Forbidden",
            format!(
                "The signed-in user does not have a role that allows this operation: one of {} is needed (roles held: {held}).",
                needed.join(", ")
            ),
        )
    }

    /// A 400 `BadRequest` of Graph.
    pub(crate) fn graph_bad_request(message: impl Into<String>) -> Self {
        ApiError::new(Api::Graph, StatusCode::BAD_REQUEST, "BadRequest", message)
    }

    /// A 404 of Graph for a record id the tenant does not have.
    pub(crate) fn graph_not_found(message: impl Into<String>) -> Self {
        ApiError::new(Api::Graph, StatusCode::NOT_FOUND, "NotFound", message)
    }

    /// A 429. M365 Defender states the wait in the message; `header` adds `Retry-After`.
    pub(crate) fn throttled(api: Api, seconds: u64, header: bool) -> Self {
        let message = match api {
            Api::Graph => "Too many requests.".to_owned(),
            _ => format!("Rate limit is exceeded. Try again in {seconds} seconds."),
        };
        let mut error = ApiError::new(
            api,
            StatusCode::TOO_MANY_REQUESTS,
            "TooManyRequests",
            message,
        );
        error.retry_after = header.then_some(seconds);
        error
    }

    pub(crate) fn bad_query(api: Api, error: QueryError) -> Self {
        match (api, error) {
            (Api::Graph, QueryError::TopTooLarge { max, given }) => {
                let mut error = ApiError::new(
                    api,
                    StatusCode::BAD_REQUEST,
                    "",
                    format!(
                        "The query specified in the URI is not valid. The limit of '{max}' for Top query has been exceeded. The value from the incoming request is '{given}'."
                    ),
                );
                error.details = true;
                error
            }
            (Api::Graph, QueryError::Filter(message)) => ApiError::new(
                api,
                StatusCode::BAD_REQUEST,
                "BadRequest",
                format!("Invalid filter clause: {message}"),
            ),
            (Api::Graph, QueryError::Option(message)) => ApiError::new(
                api,
                StatusCode::BAD_REQUEST,
                "BadRequest",
                format!("The query specified in the URI is not valid. {message}"),
            ),
            (_, QueryError::TopTooLarge { max, given }) => ApiError::new(
                api,
                StatusCode::BAD_REQUEST,
                "ODataError",
                format!(
                    "Invalid OData URI query: The limit of '{max}' for Top query has been exceeded. The value from the incoming request is '{given}'."
                ),
            ),
            (_, QueryError::Filter(message) | QueryError::Option(message)) => ApiError::new(
                api,
                StatusCode::BAD_REQUEST,
                "ODataError",
                format!("Invalid OData URI query: {message}"),
            ),
        }
    }

    /// The answer of a retired legacy API (MC1220762), or None when it is not retired.
    pub(crate) fn retired(api: Api, retirement: super::Retirement) -> Option<Self> {
        let name = match api {
            Api::M365d => {
                "The Microsoft Defender XDR incidents API (api.security.microsoft.com/api/incidents)"
            }
            Api::Mde => {
                "The Microsoft Defender for Endpoint API (api.securitycenter.microsoft.com/api/alerts)"
            }
            Api::Graph => return None,
        };
        let replacement = match api {
            Api::M365d => "GET https://graph.microsoft.com/v1.0/security/incidents",
            _ => "GET https://graph.microsoft.com/v1.0/security/alerts_v2",
        };
        let message = format!(
            "This API has been retired. {name} was retired on 2027-02-01 (Microsoft 365 message center MC1220762); use the Microsoft Graph security API instead ({replacement})."
        );
        let (status, code) = match retirement {
            super::Retirement::Off => return None,
            super::Retirement::Gone => (StatusCode::GONE, "Gone"),
            super::Retirement::NotFound => (StatusCode::NOT_FOUND, "NotFound"),
            super::Retirement::BadRequest => (StatusCode::BAD_REQUEST, "BadRequest"),
        };
        Some(ApiError::new(api, status, code, message))
    }

    /// A 500 (M365 Defender and MDE send an empty message).
    pub(crate) fn internal(api: Api) -> Self {
        match api {
            Api::Graph => ApiError::new(
                api,
                StatusCode::INTERNAL_SERVER_ERROR,
                "UnknownError",
                "An internal error occurred while processing the request.",
            ),
            _ => ApiError::new(
                api,
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalServerError",
                "",
            ),
        }
    }

    /// An injected fault's answer.
    pub(crate) fn fault(
        api: Api,
        status: StatusCode,
        retry_after: Option<u64>,
        code: Option<&str>,
    ) -> Self {
        let mut error = match status.as_u16() {
            429 => ApiError::throttled(api, retry_after.unwrap_or(60), retry_after.is_some()),
            500 => ApiError::internal(api),
            401 => ApiError::unauthorized(api, AuthFailure::BadSignature),
            403 => ApiError::new(api, status, "Forbidden", "Forbidden"),
            404 => ApiError::new(
                api,
                status,
                if api == Api::Graph {
                    "NotFound"
                } else {
                    "ResourceNotFound"
                },
                "Not found",
            ),
            400 => ApiError::new(api, status, "BadRequest", "Bad request"),
            503 => ApiError::new(api, status, "ServiceUnavailable", "Service unavailable"),
            _ => ApiError::new(
                api,
                status,
                &status
                    .canonical_reason()
                    .unwrap_or("Error")
                    .replace(' ', ""),
                status.canonical_reason().unwrap_or("Error"),
            ),
        };
        // The fault decides the header: none unless it names a wait.
        error.retry_after = retry_after;
        if let Some(code) = code {
            error.code = code.to_owned();
        }
        error
    }

    pub(crate) fn body(&self, request_id: &str, client_request_id: &str) -> Value {
        match self.api {
            Api::Graph => {
                let mut inner = json!({
                    "date": time::format_inner_error_date(Utc::now()),
                    "request-id": request_id,
                    "client-request-id": client_request_id,
                });
                if self.status == StatusCode::TOO_MANY_REQUESTS {
                    inner["code"] = json!("429");
                    inner["status"] = json!("429");
                }
                let mut error = json!({ "code": self.code, "message": self.message });
                if self.details {
                    error["details"] = json!([]);
                }
                error["innerError"] = inner;
                json!({ "error": error })
            }
            _ => json!({ "error": {
                "code": self.code,
                "message": self.message,
                "target": request_id,
            }}),
        }
    }

    /// The answer; `headers` are the request's (for Graph's `client-request-id`).
    pub(crate) fn render(&self, headers: &HeaderMap) -> Response {
        let request_id = Uuid::new_v4().to_string();
        let client_request_id = client_request_id(headers).unwrap_or_else(|| request_id.clone());
        let body = self.body(&request_id, &client_request_id);
        let mut response = json_response(self.api, self.status, &body);
        let response_headers = response.headers_mut();
        if let Some(seconds) = self.retry_after {
            response_headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response_headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if self.api == Api::Graph {
            add_graph_ids(response_headers, &request_id, &client_request_id);
        }
        response
    }
}

fn client_request_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get("client-request-id")
        .and_then(|value| value.to_str().ok())
        .filter(|value| !value.is_empty() && value.len() <= 100)
        .map(str::to_owned)
}

fn add_graph_ids(headers: &mut HeaderMap, request_id: &str, client_request_id: &str) {
    for (name, value) in [
        ("request-id", request_id),
        ("client-request-id", client_request_id),
    ] {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(HeaderName::from_static(name), value);
        }
    }
}

/// A JSON answer with the API's `Content-Type`.
pub(crate) fn json_response(api: Api, status: StatusCode, body: &Value) -> Response {
    let content_type = match api {
        Api::Graph => GRAPH_JSON,
        _ => ODATA_JSON,
    };
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    (status, [(header::CONTENT_TYPE, content_type)], bytes).into_response()
}

/// A successful page; Graph answers also carry `request-id` and `client-request-id`.
pub(crate) fn page_response(api: Api, body: &Value, request: &HeaderMap) -> Response {
    let mut response = json_response(api, StatusCode::OK, body);
    if api == Api::Graph {
        let request_id = Uuid::new_v4().to_string();
        let client_request_id = client_request_id(request).unwrap_or_else(|| request_id.clone());
        add_graph_ids(response.headers_mut(), &request_id, &client_request_id);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_follow_the_samples() {
        let error = ApiError::bad_query(
            Api::Graph,
            QueryError::TopTooLarge {
                max: 50,
                given: 200,
            },
        );
        let body = error.body("r", "c");
        assert_eq!(body["error"]["code"], "");
        assert_eq!(body["error"]["details"], json!([]));
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("The limit of '50' for Top query has been exceeded")
        );
        assert_eq!(body["error"]["innerError"]["client-request-id"], "c");

        let error = ApiError::throttled(Api::M365d, 17, false);
        let body = error.body("t", "t");
        assert_eq!(
            body["error"]["message"],
            "Rate limit is exceeded. Try again in 17 seconds."
        );
        assert_eq!(body["error"]["target"], "t");
        assert_eq!(error.retry_after, None);

        let error = ApiError::forbidden(Api::Mde, &["Alert.Read.All", "Alert.ReadWrite.All"], &[]);
        assert!(
            error
                .message
                .contains("(Alert.ReadWrite.All, Alert.Read.All)")
        );
    }
}
