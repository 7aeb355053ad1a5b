//! `/_emulator/aws/...`: the AWS switches and counters for tests that run the emulator as a
//! process (the in-process handle has the same operations).

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post, put};
use serde::Deserialize;
use serde_json::json;

use super::{ShortLivedTokens, StsFailure};
use crate::control::{done, handle, parse};
use crate::state::Shared;

pub(super) fn router() -> Router<Arc<Shared>> {
    Router::new()
        .route("/_emulator/aws", get(info))
        .route("/_emulator/aws/settings", put(set_settings))
        .route(
            "/_emulator/aws/short-lived-tokens",
            post(short_lived_tokens),
        )
        .route("/_emulator/aws/failures", post(fail_next_calls))
        .route("/_emulator/aws/calls", get(calls).delete(reset_calls))
}

async fn info(State(shared): State<Arc<Shared>>) -> Json<serde_json::Value> {
    let handle = handle(shared);
    Json(json!({
        "issuer": handle.aws_issuer(),
        "sts_endpoint": format!("{}/sts", handle.base_url()),
        "iam_endpoint": format!("{}/iam", handle.base_url()),
        "default_role_arn": handle.aws_default_role_arn(),
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    federation_enabled: Option<bool>,
    role_denied: Option<bool>,
    /// `null` lifts the limit; absent leaves it as it is.
    #[serde(default, deserialize_with = "present")]
    session_remaining_seconds: Option<Option<u64>>,
}

/// Tells an explicit `null` (`Some(None)`) from an absent field (`None`).
fn present<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Option<u64>>, D::Error> {
    Option::<u64>::deserialize(deserializer).map(Some)
}

async fn set_settings(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    done(parse::<Settings>(&body).map(|settings| {
        let handle = handle(shared);
        if let Some(enabled) = settings.federation_enabled {
            handle.set_aws_federation_enabled(enabled);
        }
        if let Some(denied) = settings.role_denied {
            handle.set_aws_role_denied(denied);
        }
        if let Some(remaining) = settings.session_remaining_seconds {
            handle.set_aws_session_remaining(remaining);
        }
    }))
}

async fn short_lived_tokens(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    done(
        parse::<ShortLivedTokens>(&body)
            .and_then(|short| handle(shared).shorten_next_sts_tokens(short)),
    )
}

async fn fail_next_calls(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    done(parse::<StsFailure>(&body).and_then(|failure| handle(shared).fail_next_sts_calls(failure)))
}

async fn calls(State(shared): State<Arc<Shared>>) -> Json<super::StsCallCounts> {
    Json(handle(shared).sts_calls())
}

async fn reset_calls(State(shared): State<Arc<Shared>>) -> StatusCode {
    handle(shared).reset_sts_calls();
    StatusCode::NO_CONTENT
}
