//! The AWS side of the secretless credential: STS `GetWebIdentityToken` (outbound identity
//! federation), IAM `GetOutboundWebIdentityFederationInfo`, and the account's OIDC issuer that
//! Entra fetches keys from.
//!
//! Both APIs speak the Query protocol on `POST /` (also `/sts`, `/sts/`, `/iam`, `/iam/`, so
//! that `AWS_ENDPOINT_URL_STS` and `AWS_ENDPOINT_URL_IAM` may point at distinct paths).

mod control;
mod ec_key;
mod iam;
mod issuer;
mod query;
mod settings;
mod web_identity_token;
mod xml;

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

pub(crate) use ec_key::EcSigningKey;
pub(crate) use settings::AwsState;
pub use settings::{ShortLivedTokens, StsCallCounts, StsFailure};

use crate::state::Shared;
use query::QueryRequest;
use xml::AwsError;

const STS_VERSION: &str = "2011-06-15";
const IAM_VERSION: &str = "2010-05-08";

pub(crate) fn router() -> Router<Arc<Shared>> {
    let mut router = Router::new();
    for path in ["/", "/sts", "/sts/", "/iam", "/iam/"] {
        router = router.route(path, post(query_api));
    }
    router
        .route(
            "/aws-issuer/{account_id}/.well-known/openid-configuration",
            get(issuer::openid_configuration),
        )
        .route(
            "/aws-issuer/{account_id}/.well-known/jwks.json",
            get(issuer::jwks),
        )
        .merge(control::router())
}

async fn query_api(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let request = QueryRequest::parse(&body);
    let action = request.get("Action").unwrap_or_default();
    let version = request.get("Version").unwrap_or_default();
    match (action, version) {
        ("GetWebIdentityToken", STS_VERSION) => {
            web_identity_token::serve(&shared, &headers, &request).into_response()
        }
        ("GetOutboundWebIdentityFederationInfo", IAM_VERSION) => {
            iam::outbound_federation_info(&shared, &headers).into_response()
        }
        _ => AwsError::sender(
            StatusCode::BAD_REQUEST,
            "InvalidAction",
            format!(
                "Could not find operation {} for version {}",
                crate::entra::errors::clip(action),
                crate::entra::errors::clip(version)
            ),
        )
        .into_response(),
    }
}
