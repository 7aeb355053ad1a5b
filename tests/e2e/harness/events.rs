//! The sample events in `infra/events/`: the same files a developer feeds to
//! `cargo lambda invoke --data-file`, used by the tests so that they stay true.

use anyhow::{Context, Result};
use serde_json::Value;

use crate::tools;

/// Reads `infra/events/{name}`.
pub fn load(name: &str) -> Result<Value> {
    let path = tools::workspace_root()
        .join("infra")
        .join("events")
        .join(name);
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// An API Gateway HTTP API (payload 2.0, IAM-authorized) event for `POST /tokens` carrying
/// `body` as its JSON body, built from `infra/events/mint-token-http.json`.
pub fn post_tokens(body: &Value) -> Result<Value> {
    let mut event = load("mint-token-http.json")?;
    event["body"] = Value::String(body.to_string());
    event["isBase64Encoded"] = Value::Bool(false);
    Ok(event)
}

/// As [`post_tokens`], with a raw body text (for malformed JSON).
pub fn post_tokens_raw(body: &str) -> Result<Value> {
    let mut event = load("mint-token-http.json")?;
    event["body"] = Value::String(body.to_owned());
    event["isBase64Encoded"] = Value::Bool(false);
    Ok(event)
}
