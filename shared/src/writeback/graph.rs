//! One write-back exchange with Graph: a call slot from the tenant's limiter (the fetch's
//! budget), the request with our request id as `client-request-id`, and the answer classified.
//! Whether a failed call may have been applied matters for comments (which Microsoft does not
//! de-duplicate), so a transport failure says whether the request left us.

use std::sync::Arc;
use std::time::Duration;

use reqwest::Method;
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use url::Url;

use crate::api::DefenderApi;
use crate::defender::limiter::Limiter;
use crate::tenant_id::TenantId;

/// What came back from one exchange.
#[derive(Debug)]
pub enum Exchange {
    /// Microsoft answered.
    Answered {
        status: u16,
        body: Value,
        retry_after: Option<Duration>,
        request_id: Option<String>,
    },
    /// The request never reached Microsoft (no connection): nothing was applied.
    NotSent(String),
    /// The request left, its answer did not arrive (timeout, connection cut): it may have
    /// been applied.
    AnswerLost(String),
    /// Our own limiter has no slot in time.
    NoSlot(Duration),
}

/// One request to Graph, on behalf of one write-back request.
pub struct GraphCall<'a> {
    pub tenant: &'a TenantId,
    pub token: &'a SecretString,
    pub method: Method,
    /// Under the API base, built from validated ids only (see `request::graph_id`).
    pub path: &'a str,
    pub body: Option<&'a Value>,
    /// Ours, sent as `client-request-id` (Graph echoes it in its logs).
    pub request_id: &'a str,
}

pub struct GraphWriter {
    http: reqwest::Client,
    base: Url,
    limiter: Arc<Limiter>,
}

impl GraphWriter {
    pub fn new(http: reqwest::Client, graph_base: Url, limiter: Arc<Limiter>) -> GraphWriter {
        GraphWriter {
            http,
            base: graph_base,
            limiter,
        }
    }

    /// `{graph base}/{path}`.
    fn url(&self, path: &str) -> Url {
        let base = self.base.as_str().trim_end_matches('/');
        Url::parse(&format!("{base}/{}", path.trim_start_matches('/')))
            .expect("Graph's base is a URL")
    }

    pub async fn exchange(&self, call: &GraphCall<'_>, max_wait: Duration) -> Exchange {
        if let Err(wait) = self
            .limiter
            .acquire(call.tenant, DefenderApi::Graph, max_wait)
            .await
        {
            return Exchange::NoSlot(wait);
        }
        let mut request = self
            .http
            .request(call.method.clone(), self.url(call.path))
            .bearer_auth(call.token.expose_secret())
            .header("Accept", "application/json")
            .header("client-request-id", call.request_id);
        if let Some(body) = call.body {
            request = request.json(body);
        }
        match request.send().await {
            Err(error) if error.is_connect() => {
                Exchange::NotSent(crate::http::describe_transport_error(&error))
            }
            Err(error) => Exchange::AnswerLost(crate::http::describe_transport_error(&error)),
            Ok(response) => match crate::http::read(Ok(response)).await {
                Err(described) => Exchange::AnswerLost(described),
                Ok(answer) => Exchange::Answered {
                    status: answer.status,
                    // An empty or non-JSON body (204, a proxy's page) reads as null.
                    body: serde_json::from_slice(&answer.body).unwrap_or(Value::Null),
                    retry_after: answer.retry_after,
                    request_id: answer.request_id,
                },
            },
        }
    }
}

/// Graph's `error.code` and `error.message`, shortened.
pub fn error_of(body: &Value) -> (String, String) {
    let field = |name: &str| {
        body.get("error")
            .and_then(|error| error.get(name))
            .and_then(Value::as_str)
            .map(|text| text.chars().filter(|c| !c.is_control()).take(300).collect())
            .unwrap_or_default()
    };
    (field("code"), field("message"))
}
