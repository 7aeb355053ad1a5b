//! `mint-token`: a bearer token for one consented customer tenant and one Defender API.
//! Invoked directly (payload `{"tenant", "api"}`; a refusal is a function error whose
//! `errorType` is its code) or through the IAM-protected HTTP API route `POST /tokens` (a
//! refusal is `{"error": {"code", "message"}}` with the code's HTTP status).
//!
//! The caller is the IAM principal API Gateway authenticated (`requestContext.authorizer.iam`)
//! for a request over HTTP, and `direct-invoke` for a direct invocation, which carries no
//! identity; a caller named in a payload is never believed. Whoever may invoke the function
//! directly can also send an HTTP-shaped event naming any principal: `lambda:InvokeFunction` is
//! for principals trusted with every caller's mapping.

use aws_lambda_events::apigw::ApiGatewayV2httpResponse;
use lambda_runtime::{Diagnostic, LambdaEvent};
use serde_json::Value;

use super::{json_of, lambda_error};
use aws_lambda_events::apigw::ApiGatewayV2httpRequest;

use crate::callers::{Caller, CallerScoping, http_event_trusted};
use crate::edge::{self, EdgeError, Invocation};
use crate::minting::{MintCaller, MintedToken, TokenService};
use crate::runtime::Services;
use crate::secrets::CredentialError;
use crate::signin::StoredSignIns;
use crate::telemetry::metrics::{self, TokenPath};
use crate::{ErrorCode, deadline};

pub struct MintFunction {
    service: TokenService,
    /// The deployment (mint-token, or mint-user-token with stored sign-ins) its metrics name.
    path: TokenPath,
    /// The alias API Gateway invokes (`DP_CALLER_HTTP_QUALIFIER`), if set.
    http_qualifier: Option<String>,
}

impl MintFunction {
    /// The function as the settings deploy it; once per cold start.
    pub async fn build(services: &Services) -> Result<MintFunction, CredentialError> {
        let service = TokenService::new(services).with_caller_scoping(CallerScoping::new(
            services.settings.callers.clone(),
            services.callers.clone(),
        ));
        let mut function = MintFunction::new(service)
            .with_http_qualifier(services.settings.callers.http_qualifier.clone());
        // Only the deployment allowed to act for stored sign-ins reads their sealing keys.
        if services.settings.signin.mint_from_signin {
            function.service = function
                .service
                .with_stored_sign_ins(StoredSignIns::build(services).await?);
            function.path = TokenPath::MintUserToken;
        }
        Ok(function)
    }

    pub fn new(service: TokenService) -> MintFunction {
        MintFunction {
            service,
            path: TokenPath::MintToken,
            http_qualifier: None,
        }
    }

    /// Believes an HTTP event's caller only when invoked through the alias `qualifier`.
    pub fn with_http_qualifier(mut self, qualifier: Option<String>) -> MintFunction {
        self.http_qualifier = qualifier;
        self
    }

    pub async fn handle(&self, event: LambdaEvent<Value>) -> Result<Value, Diagnostic> {
        let invocation = InvocationFacts {
            request_id: Some(event.context.request_id),
            function_arn: event.context.invoked_function_arn,
        };
        self.answer_invocation(event.payload, event.context.deadline, invocation)
            .await
    }

    /// Answers `payload`, an invocation whose deadline is `deadline_ms` (the runtime's
    /// `Lambda-Runtime-Deadline-Ms`).
    pub async fn answer(&self, payload: Value, deadline_ms: u64) -> Result<Value, Diagnostic> {
        self.answer_invocation(payload, deadline_ms, InvocationFacts::default())
            .await
    }

    /// As [`MintFunction::answer`], what Lambda says of the invocation known.
    pub async fn answer_invocation(
        &self,
        payload: Value,
        deadline_ms: u64,
        invocation: InvocationFacts,
    ) -> Result<Value, Diagnostic> {
        let direct = MintCaller {
            caller: Caller::DirectInvoke,
            request_id: invocation.request_id.clone(),
        };
        match Invocation::classify(payload).map_err(|error| lambda_error(&error))? {
            Invocation::Direct(request) => {
                match self.mint_in_time(&direct, request, deadline_ms).await {
                    Ok(token) => Ok(json_of(token)),
                    Err(error) => Err(lambda_error(&refused(self.path, error))),
                }
            }
            Invocation::Http(request) => {
                let caller =
                    if http_event_trusted(self.http_qualifier.as_deref(), &invocation.function_arn)
                    {
                        http_caller(&request)
                    } else {
                        direct
                    };
                let minted = match edge::json_body(&request) {
                    Ok(body) => self.mint_in_time(&caller, body, deadline_ms).await,
                    Err(error) => Err(error),
                };
                let response: ApiGatewayV2httpResponse = match minted {
                    Ok(token) => edge::json_response(200, &json_of(token)),
                    Err(error) => edge::error_response(&refused(self.path, error)),
                };
                Ok(json_of(response))
            }
        }
    }

    /// Mints within the invocation: token requests, `Retry-After` waits and retries end before
    /// the invocation's deadline, which then answers `microsoft_unavailable` (retry later)
    /// instead of Lambda's timeout.
    async fn mint_in_time(
        &self,
        caller: &MintCaller,
        request: Value,
        deadline_ms: u64,
    ) -> Result<MintedToken, EdgeError> {
        deadline::answer_before(
            deadline_ms,
            async {
                self.service
                    .mint_json_for(caller, request)
                    .await
                    .map_err(|error| EdgeError::from(&error))
            },
            || {
                Err(EdgeError::new(
                    ErrorCode::MicrosoftUnavailable,
                    "no token could be minted before this invocation's deadline; retry",
                ))
            },
        )
        .await
    }
}

/// What Lambda says of an invocation: its request id, and the ARN it was invoked through (with
/// the alias, when one was named).
#[derive(Debug, Clone, Default)]
pub struct InvocationFacts {
    pub request_id: Option<String>,
    pub function_arn: String,
}

/// The caller API Gateway authenticated, and the request id its access log carries.
fn http_caller(request: &ApiGatewayV2httpRequest) -> MintCaller {
    MintCaller {
        caller: Caller::from_user_arn(edge::iam_user_arn(request)),
        request_id: request.request_context.request_id.clone(),
    }
}

fn refused(path: TokenPath, error: EdgeError) -> EdgeError {
    tracing::warn!(code = %error.code, error = %error.message, "request refused");
    metrics::token_error(path, error.code);
    error
}

#[cfg(test)]
mod tests {
    use aws_lambda_events::encodings::Body;
    use serde_json::json;

    use super::*;
    use crate::config::Settings;
    use crate::entry::samples;

    /// Far enough ahead for any local runtime's deadline form.
    const DEADLINE_MS: u64 = 60_000;

    async fn function() -> MintFunction {
        function_on(&[]).await.1
    }

    /// The function on an in-memory store, with `settings` besides the credential.
    async fn function_on(settings: &[(&str, &str)]) -> (Services, MintFunction) {
        let settings = Settings::from_lookup(|name| match name {
            "DP_CREDENTIAL_JSON" => Some(
                r#"{"client_id": "11111111-1111-4111-8111-111111111111", "client_secret": "x"}"#
                    .into(),
            ),
            "DP_SQLITE_PATH" => Some(":memory:".into()),
            _ => settings
                .iter()
                .find(|(variable, _)| *variable == name)
                .map(|(_, value)| (*value).to_owned()),
        })
        .unwrap();
        let services = Services::build_with_aws(settings, None).await.unwrap();
        let function = MintFunction::build(&services).await.unwrap();
        (services, function)
    }

    fn http_answer(answer: Result<Value, Diagnostic>) -> (i64, Value) {
        let response: ApiGatewayV2httpResponse =
            serde_json::from_value(answer.expect("an HTTP answer, not a function error")).unwrap();
        assert_eq!(response.headers["content-type"], "application/json");
        assert_eq!(response.headers["cache-control"], "no-store");
        let Some(Body::Text(body)) = response.body else {
            panic!("a JSON body")
        };
        (response.status_code, serde_json::from_str(&body).unwrap())
    }

    #[tokio::test]
    async fn a_direct_refusal_is_a_function_error_typed_with_its_code() {
        let function = function().await;
        // The sample names Contoso, which this empty registry does not hold.
        let unknown = function
            .answer(samples::event("mint-token-direct.json"), DEADLINE_MS)
            .await
            .unwrap_err();
        assert_eq!(unknown.error_type, "tenant_not_registered");
        assert!(
            unknown
                .error_message
                .contains("22222222-2222-4222-8222-222222222222")
        );
        let typo = function
            .answer(
                serde_json::json!({"tenantId": "x", "api": "m365d"}),
                DEADLINE_MS,
            )
            .await
            .unwrap_err();
        assert_eq!(typo.error_type, "invalid_request", "{}", typo.error_message);
    }

    #[tokio::test]
    async fn an_http_refusal_is_a_json_error_with_the_codes_status() {
        let function = function().await;
        let (status, body) = http_answer(
            function
                .answer(samples::event("mint-token-http.json"), DEADLINE_MS)
                .await,
        );
        assert_eq!(status, 404);
        assert_eq!(body["error"]["code"], "tenant_not_registered");
        let mut not_json = samples::event("mint-token-http.json");
        not_json["body"] = Value::String("tenant=x".into());
        let (status, body) = http_answer(function.answer(not_json, DEADLINE_MS).await);
        assert_eq!(status, 400);
        assert_eq!(body["error"]["code"], "invalid_request");
    }

    #[tokio::test]
    async fn the_http_caller_is_the_role_api_gateway_authenticated_and_its_request_id() {
        let Invocation::Http(request) =
            Invocation::classify(samples::event("mint-token-http.json")).unwrap()
        else {
            panic!("an HTTP event")
        };
        let caller = http_caller(&request);
        assert_eq!(
            caller.caller,
            Caller::Iam("arn:aws:iam::123456789012:role/soc-workflow".into())
        );
        assert_eq!(caller.request_id.as_deref(), Some("JKJaXmPLvHcESHA="));
        let mut unsigned = samples::event("mint-token-http.json");
        unsigned["requestContext"]
            .as_object_mut()
            .unwrap()
            .remove("authorizer");
        let Invocation::Http(request) = Invocation::classify(unsigned).unwrap() else {
            panic!("an HTTP event")
        };
        assert_eq!(http_caller(&request).caller, Caller::Anonymous);
    }

    #[tokio::test]
    async fn a_caller_outside_its_mapping_is_refused_before_the_registry_answers() {
        let (services, function) = function_on(&[("DP_CALLER_SCOPE_CACHE_SECONDS", "0")]).await;
        // Once any caller is mapped, the sample's unmapped role and direct invocations are
        // refused, whether or not the tenant is registered.
        crate::store::update_caller_scope(
            services.callers.as_ref(),
            "arn:aws:iam::123456789012:role/other",
            |scope| {
                scope.all_tenants = true;
            },
        )
        .await
        .unwrap();
        let (status, body) = http_answer(
            function
                .answer(samples::event("mint-token-http.json"), DEADLINE_MS)
                .await,
        );
        assert_eq!(status, 403);
        assert_eq!(body["error"]["code"], "caller_not_allowed");
        let direct = function
            .answer(samples::event("mint-token-direct.json"), DEADLINE_MS)
            .await
            .unwrap_err();
        assert_eq!(direct.error_type, "caller_not_allowed");
        assert!(direct.error_message.contains("direct-invoke"));
    }

    #[tokio::test]
    async fn with_an_api_alias_an_http_event_invoked_elsewhere_is_a_direct_invocation() {
        let (services, function) = function_on(&[("DP_CALLER_HTTP_QUALIFIER", "api")]).await;
        // Only the sample's role may mint: an event naming it is believed through the alias only.
        crate::store::update_caller_scope(
            services.callers.as_ref(),
            "arn:aws:iam::123456789012:role/soc-workflow",
            |scope| {
                scope.all_tenants = true;
            },
        )
        .await
        .unwrap();
        let arn = "arn:aws:lambda:us-east-1:123456789012:function:mint-token";
        let answer = |function_arn: String| {
            let invocation = InvocationFacts {
                request_id: Some("lambda-request".into()),
                function_arn,
            };
            function.answer_invocation(
                samples::event("mint-token-http.json"),
                DEADLINE_MS,
                invocation,
            )
        };
        let (status, body) = http_answer(answer(arn.to_owned()).await);
        assert_eq!(
            (status, &body["error"]["code"]),
            (403, &json!("caller_not_allowed"))
        );
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("direct-invoke")
        );
        // Through the alias: the role, which may mint; the (unregistered) tenant answers.
        let (status, body) = http_answer(answer(format!("{arn}:api")).await);
        assert_eq!(
            (status, &body["error"]["code"]),
            (404, &json!("tenant_not_registered"))
        );
    }

    #[tokio::test]
    async fn a_malformed_http_event_is_a_function_error() {
        let mut broken = samples::event("mint-token-http.json");
        broken["requestContext"]["http"]["method"] = Value::Bool(true);
        let error = function()
            .await
            .answer(broken, DEADLINE_MS)
            .await
            .unwrap_err();
        assert_eq!(error.error_type, "invalid_request");
    }
}
