//! `consent-signin`: onboards a customer tenant, and signs users in.
//! `GET /consent/start?customer=REF[&tenant=ID][&link=v2|adminconsent|legacy]` (IAM-protected)
//! redirects to Microsoft's admin-consent page with a signed single-use `state`;
//! `GET /consent/callback` (public: the app's redirect URI) receives the consent, sends the
//! administrator through a sign-in that proves the tenant, then proves the consent and answers a
//! page. `GET /signin/start?tenant=ID[&api=m365d|mde|graph][&login_hint=UPN]` sends a user to
//! Microsoft's sign-in with a signed single-use `state` and PKCE; `GET /signin/callback` (public)
//! redeems the code and answers who signed in, never a token. Every answer comes before the
//! invocation's deadline.

use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use lambda_runtime::{Diagnostic, LambdaEvent};
use serde_json::Value;

use super::{json_of, lambda_error};
use crate::consent::{ConsentService, LinkKind, pages};
use crate::edge::{self, EdgeError, Invocation};
use crate::runtime::Services;
use crate::secrets::CredentialError;
use crate::signin::SignInService;
use crate::telemetry::metrics::{self, TokenPath};
use crate::{CallerError, ErrorCode, deadline};

/// The routes this function answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallbackRoute {
    ConsentStart,
    ConsentSignin,
    SignInStart,
    SignInCallback,
}

impl CallbackRoute {
    /// The route of a request, matched on the path's last segments (so that API Gateway stages
    /// and function URLs route alike) and with or without a trailing slash.
    pub fn of(method: &str, path: &str) -> Option<CallbackRoute> {
        if method != "GET" {
            return None;
        }
        let path = path.trim_end_matches('/');
        [
            ("/consent/callback", CallbackRoute::ConsentSignin),
            ("/consent/start", CallbackRoute::ConsentStart),
            ("/signin/callback", CallbackRoute::SignInCallback),
            ("/signin/start", CallbackRoute::SignInStart),
        ]
        .into_iter()
        .find_map(|(suffix, route)| path.ends_with(suffix).then_some(route))
    }
}

pub struct CallbackFunction {
    consent: ConsentService,
    signin: SignInService,
}

impl CallbackFunction {
    /// Reads the state signing key and the sign-in keys; once per cold start.
    pub async fn build(services: &Services) -> Result<CallbackFunction, CredentialError> {
        Ok(CallbackFunction::new(
            ConsentService::build(services).await?,
            SignInService::build(services).await?,
        ))
    }

    pub fn new(consent: ConsentService, signin: SignInService) -> CallbackFunction {
        CallbackFunction { consent, signin }
    }

    pub async fn handle(&self, event: LambdaEvent<Value>) -> Result<Value, Diagnostic> {
        self.answer(event.payload, event.context.deadline).await
    }

    /// Answers `payload` before the invocation's deadline (`deadline_ms`, the runtime's
    /// `Lambda-Runtime-Deadline-Ms`). Out of time, a browser sees our error page: nothing was
    /// spent that cannot be retried (the consent's nonce is spent only once the tenant is
    /// proven).
    pub async fn answer(&self, payload: Value, deadline_ms: u64) -> Result<Value, Diagnostic> {
        deadline::answer_before(
            deadline_ms,
            async {
                match Invocation::classify(payload) {
                    Ok(Invocation::Http(request)) => Ok(json_of(self.route(&request).await)),
                    Ok(Invocation::Direct(_)) => Err(lambda_error(&EdgeError::new(
                        ErrorCode::InvalidRequest,
                        "consent-signin answers HTTP API requests only",
                    ))),
                    Err(error) => Ok(json_of(edge::error_response(&error))),
                }
            },
            || Ok(json_of(pages::error("timeout").response())),
        )
        .await
    }

    async fn route(&self, request: &ApiGatewayV2httpRequest) -> ApiGatewayV2httpResponse {
        let (method, path) = edge::route_of(request);
        let query = request.raw_query_string.as_deref().unwrap_or("");
        match CallbackRoute::of(&method, &path) {
            Some(CallbackRoute::ConsentSignin) => self.consent.callback(query).await.response(),
            Some(CallbackRoute::ConsentStart) => self.consent_start(request).await,
            Some(CallbackRoute::SignInCallback) => self.signin.callback(query).await.response(),
            Some(CallbackRoute::SignInStart) => self.signin_start(request).await,
            None => edge::error_response(&EdgeError::new(
                ErrorCode::InvalidRequest,
                format!("no route for {method} {path}"),
            )),
        }
    }

    async fn consent_start(&self, request: &ApiGatewayV2httpRequest) -> ApiGatewayV2httpResponse {
        let parameters = &request.query_string_parameters;
        let link = match parameters
            .first("link")
            .map(str::parse::<LinkKind>)
            .transpose()
        {
            Ok(link) => link,
            Err(problem) => {
                return edge::error_response(&EdgeError::new(ErrorCode::InvalidRequest, problem));
            }
        };
        let Some(customer) = parameters.first("customer") else {
            return edge::error_response(&EdgeError::new(
                ErrorCode::InvalidRequest,
                "customer is missing: /consent/start?customer=<your reference for the customer>",
            ));
        };
        match self
            .consent
            .start(customer, link, parameters.first("tenant"))
            .await
        {
            Ok(link) => edge::redirect_response(&link.url, &json_of(&link)),
            Err(error) => {
                tracing::warn!(code = %error.code(), error = %error, "consent link refused");
                metrics::token_error(TokenPath::ConsentSignin, error.code());
                edge::error_response(&error)
            }
        }
    }

    async fn signin_start(&self, request: &ApiGatewayV2httpRequest) -> ApiGatewayV2httpResponse {
        let parameters = &request.query_string_parameters;
        let Some(tenant) = parameters.first("tenant") else {
            return edge::error_response(&EdgeError::new(
                ErrorCode::InvalidRequest,
                "tenant is missing: /signin/start?tenant=<customer tenant id>[&api=m365d|mde|graph]",
            ));
        };
        match self
            .signin
            .start(
                tenant,
                parameters.first("api"),
                parameters.first("login_hint"),
            )
            .await
        {
            Ok(link) => edge::redirect_response(&link.url, &json_of(&link)),
            Err(error) => {
                tracing::warn!(code = %error.code(), error = %error, "sign-in link refused");
                metrics::token_error(TokenPath::ConsentSignin, error.code());
                edge::error_response(&error)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use aws_lambda_events::encodings::Body;

    use super::*;
    use crate::config::Settings;
    use crate::entry::samples;

    const DEADLINE_MS: u64 = 60_000;

    #[test]
    fn each_sample_event_reaches_its_route() {
        for (sample, route) in [
            ("consent-start-http.json", CallbackRoute::ConsentStart),
            ("consent-callback-http.json", CallbackRoute::ConsentSignin),
            ("signin-start-http.json", CallbackRoute::SignInStart),
            ("signin-callback-http.json", CallbackRoute::SignInCallback),
        ] {
            let Ok(Invocation::Http(request)) = Invocation::classify(samples::event(sample)) else {
                panic!("{sample} is an HTTP API event");
            };
            let (method, path) = edge::route_of(&request);
            assert_eq!(CallbackRoute::of(&method, &path), Some(route), "{sample}");
        }
    }

    #[test]
    fn routes_match_on_the_last_segments_and_only_for_get() {
        for (method, path, route) in [
            (
                "GET",
                "/consent/callback/",
                Some(CallbackRoute::ConsentSignin),
            ),
            (
                "GET",
                "/prod/consent/start",
                Some(CallbackRoute::ConsentStart),
            ),
            (
                "GET",
                "/lambda-url/consent-signin/signin/callback",
                Some(CallbackRoute::SignInCallback),
            ),
            ("GET", "/signin/start//", Some(CallbackRoute::SignInStart)),
            ("POST", "/consent/callback", None),
            ("GET", "/consent", None),
            ("GET", "/consent/callback/extra", None),
            ("GET", "", None),
        ] {
            assert_eq!(CallbackRoute::of(method, path), route, "{method} {path}");
        }
    }

    async fn function() -> CallbackFunction {
        let settings = Settings::from_lookup(|name| match name {
            "DP_CREDENTIAL_JSON" => Some(
                r#"{"client_id": "11111111-1111-4111-8111-111111111111", "client_secret": "x"}"#
                    .into(),
            ),
            "DP_SQLITE_PATH" => Some(":memory:".into()),
            "DP_STATE_KEY" => Some("a-test-state-key-of-at-least-32-characters".into()),
            "DP_CONSENT_REDIRECT_URI" => Some("https://partner.example/consent/callback".into()),
            "DP_SIGNIN_REDIRECT_URI" => Some("https://partner.example/signin/callback".into()),
            _ => None,
        })
        .unwrap();
        let services = Services::build_with_aws(settings, None).await.unwrap();
        CallbackFunction::build(&services).await.unwrap()
    }

    fn http_answer(answer: Result<Value, Diagnostic>) -> (ApiGatewayV2httpResponse, String) {
        let response: ApiGatewayV2httpResponse =
            serde_json::from_value(answer.expect("an HTTP answer, not a function error")).unwrap();
        let body = match &response.body {
            Some(Body::Text(text)) => text.clone(),
            _ => String::new(),
        };
        (response, body)
    }

    fn get(path: &str, query: &str) -> Value {
        let mut event = samples::event("consent-callback-http.json");
        event["rawPath"] = Value::String(path.into());
        event["requestContext"]["http"]["path"] = Value::String(path.into());
        event["rawQueryString"] = Value::String(query.into());
        let parameters: serde_json::Map<String, Value> =
            url::form_urlencoded::parse(query.as_bytes())
                .map(|(name, value)| (name.into_owned(), Value::String(value.into_owned())))
                .collect();
        event["queryStringParameters"] = Value::Object(parameters);
        event
    }

    #[tokio::test]
    async fn the_sample_consent_start_redirects_to_microsoft() {
        let function = function().await;
        let (response, body) = http_answer(
            function
                .answer(samples::event("consent-start-http.json"), DEADLINE_MS)
                .await,
        );
        assert_eq!(response.status_code, 302, "{body}");
        let location = response.headers["location"].to_str().unwrap();
        assert!(
            location.starts_with(
                "https://login.microsoftonline.com/22222222-2222-4222-8222-222222222222/"
            ),
            "{location}"
        );
        let link: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(link["customer_ref"], "CRM-42");
    }

    #[tokio::test]
    async fn callbacks_answer_pages_with_their_security_headers() {
        let function = function().await;
        for (sample, title) in [
            ("consent-callback-http.json", "This link is not valid"),
            (
                "signin-callback-http.json",
                "This sign-in link is not valid",
            ),
        ] {
            let (response, body) =
                http_answer(function.answer(samples::event(sample), DEADLINE_MS).await);
            assert_eq!(response.status_code, 400, "{sample}");
            assert_eq!(response.headers["content-type"], "text/html; charset=utf-8");
            assert_eq!(response.headers["referrer-policy"], "no-referrer");
            assert!(body.contains(title), "{sample}: {body}");
        }
    }

    #[tokio::test]
    async fn a_refused_start_answers_the_codes_json_error() {
        let function = function().await;
        // The sample's tenant is not in this empty registry.
        let (response, body) = http_answer(
            function
                .answer(samples::event("signin-start-http.json"), DEADLINE_MS)
                .await,
        );
        assert_eq!(response.status_code, 404, "{body}");
        assert_eq!(
            serde_json::from_str::<Value>(&body).unwrap()["error"]["code"],
            "tenant_not_registered"
        );
        for (path, query) in [
            ("/consent/start", ""),
            ("/consent/start", "customer=ok&link=implicit"),
            ("/consent/start", "customer=%3Cscript%3E"),
            ("/signin/start", "api=graph"),
        ] {
            let (response, body) =
                http_answer(function.answer(get(path, query), DEADLINE_MS).await);
            assert_eq!(response.status_code, 400, "{path}?{query}: {body}");
            assert_eq!(
                serde_json::from_str::<Value>(&body).unwrap()["error"]["code"],
                "invalid_request"
            );
        }
    }

    #[tokio::test]
    async fn an_unknown_route_names_what_the_function_saw_and_a_direct_call_is_refused() {
        let function = function().await;
        let (response, body) =
            http_answer(function.answer(get("/elsewhere", ""), DEADLINE_MS).await);
        assert_eq!(response.status_code, 400);
        let message = serde_json::from_str::<Value>(&body).unwrap()["error"]["message"].clone();
        assert_eq!(message, "no route for GET /elsewhere");
        let direct = function
            .answer(samples::event("mint-token-direct.json"), DEADLINE_MS)
            .await
            .unwrap_err();
        assert_eq!(direct.error_type, "invalid_request");
    }
}
