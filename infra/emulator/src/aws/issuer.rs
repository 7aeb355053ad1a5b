//! The account's OIDC issuer, `{base}/aws-issuer/{account_id}`: the discovery document and
//! key set a relying party (Entra) reads to verify the account's web identity tokens.
//!
//! Served whether or not federation is enabled: AWS keeps publishing an issuer's keys so that
//! tokens issued before a disable still verify.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::state::Shared;

/// The issuer URL, when `account_id` is the emulated account.
fn issuer_of(shared: &Shared, account_id: &str) -> Option<String> {
    let aws = shared.aws.lock();
    (aws.config.account_id == account_id)
        .then(|| crate::demo::aws_issuer(&shared.base_url, account_id))
}

fn no_such_issuer() -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({ "error": "not_found", "error_description": "No such issuer." })),
    )
        .into_response()
}

/// `GET /aws-issuer/{account_id}/.well-known/openid-configuration`
pub(super) async fn openid_configuration(
    State(shared): State<Arc<Shared>>,
    Path(account_id): Path<String>,
) -> Response {
    let Some(issuer) = issuer_of(&shared, &account_id) else {
        return no_such_issuer();
    };
    Json(json!({
        "issuer": issuer,
        "jwks_uri": format!("{issuer}/.well-known/jwks.json"),
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256", "ES384"],
        "claims_supported": ["iss", "sub", "aud", "iat", "exp", "jti", "https://sts.amazonaws.com/"],
        "scopes_supported": ["openid"],
    }))
    .into_response()
}

/// `GET /aws-issuer/{account_id}/.well-known/jwks.json`
pub(super) async fn jwks(
    State(shared): State<Arc<Shared>>,
    Path(account_id): Path<String>,
) -> Response {
    if issuer_of(&shared, &account_id).is_none() {
        return no_such_issuer();
    }
    let mut rsa = shared.aws.rsa_key.jwks(None)["keys"][0].take();
    rsa["alg"] = json!("RS256");
    Json(json!({ "keys": [rsa, shared.aws.ec_key.jwk()] })).into_response()
}
