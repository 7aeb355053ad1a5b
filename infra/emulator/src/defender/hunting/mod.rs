//! Advanced hunting through Graph (reference §12): `POST /v1.0/security/runHuntingQuery` with
//! `{"Query": "<KQL>", "Timespan": "P30D"}` over generated per-tenant tables (`tables.rs`), a
//! KQL subset (`kql.rs`, `eval.rs`) and the documented limits (`usage.rs`).
//!
//! Checks in order: token and `ThreatHunting.Read.All` (delegated: the scope and a portal role
//! that reads), the per-tenant call rate, the body and `Timespan`, the query, the CPU quota;
//! then the query "runs" for the tenant's `query_ms` (over `hunting_timeout_ms` it fails with a
//! 504, as Graph's gateway answers) and the answer is written row by row, cut at
//! `hunting_max_rows` as Microsoft cuts results at 100,000 rows (silently: the documented
//! "truncation at the … limit", no error).

mod control;
mod eval;
mod kql;
mod tables;
mod timespan;
mod usage;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use chrono::DateTime;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::config::{DefenderSettings, HuntingConfig, RateLimitMode};
use super::errors::{self, ApiError};
use super::store::lock;
use super::time::{self, TICKS_PER_SECOND};
use super::{Api, Endpoint, authorize};
use crate::state::Shared;
pub(crate) use control::router as control_router;
use eval::Plan;
use tables::{Cell, Column, Source};
pub(crate) use usage::HuntingUsage;

/// The tables a tenant's `hunting.tables` may name.
pub(crate) const TABLE_NAMES: [&str; 4] = [
    "DeviceProcessEvents",
    "DeviceNetworkEvents",
    "EmailEvents",
    "IdentityLogonEvents",
];

pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new().route("/v1.0/security/runHuntingQuery", post(run_hunting_query))
}

/// Fixes the end of a tenant's span when the scenario names none: the load time, to the second.
pub(crate) fn resolve_end(config: &mut HuntingConfig, now: i64) {
    if config.end.is_none() {
        config.end = DateTime::from_timestamp(now.div_euclid(TICKS_PER_SECOND), 0);
    }
}

/// One column of an answer's schema.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HuntingColumn {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
}

/// What a query must produce for a tenant (`POST /_emulator/tenants/{tenant}/hunting/truth`,
/// [`crate::EmulatorHandle::hunting_truth`]): the answer's `schema` and `results` exactly as
/// `runHuntingQuery` sends them (cut at `hunting_max_rows`), whether the cut removed rows, and
/// how many rows the query selects before the cut.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HuntingTruth {
    pub schema: Vec<HuntingColumn>,
    pub results: Vec<Map<String, Value>>,
    pub truncated: bool,
    pub matching_rows: u64,
}

/// A parsed request body.
struct Request {
    query: String,
    timespan: Option<String>,
}

/// `{"Query": "...", "Timespan": "..."}`; names are matched case-insensitively (Graph's own
/// examples send `Query`, clients often `query`).
fn parse_body(body: &[u8]) -> Result<Request, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err("Empty Payload. JSON content expected.".to_owned());
    }
    let value: Value = serde_json::from_slice(body)
        .map_err(|error| format!("Invalid JSON in the request body: {error}"))?;
    let object = value
        .as_object()
        .ok_or("The request body must be a JSON object.")?;
    let mut query = None;
    let mut timespan = None;
    for (name, value) in object {
        match name.to_ascii_lowercase().as_str() {
            "query" => {
                query = Some(
                    value
                        .as_str()
                        .ok_or("The parameter 'Query' must be a string.")?
                        .to_owned(),
                );
            }
            "timespan" => {
                timespan = match value {
                    Value::Null => None,
                    Value::String(text) => Some(text.clone()),
                    _ => return Err("The parameter 'Timespan' must be a string.".to_owned()),
                };
            }
            _ => {
                return Err(format!(
                    "The parameter '{name}' in the request payload is not a valid parameter for the operation 'runHuntingQuery'."
                ));
            }
        }
    }
    let query = query
        .filter(|query| !query.trim().is_empty())
        .ok_or("The parameter 'Query' is required.")?;
    Ok(Request { query, timespan })
}

/// "Now" of hunting: the settings' clock, or the real one.
fn now(settings: &DefenderSettings) -> i64 {
    settings
        .hunting_clock
        .map_or_else(time::now, time::from_datetime)
}

/// A query ready to run: its plan and its `Timespan` window.
struct Prepared {
    plan: Plan,
    lo: i64,
    hi: i64,
}

fn prepare(request: &Request, now: i64) -> Result<Prepared, String> {
    let (lo, hi) = timespan::window(request.timespan.as_deref(), now)?;
    let query = kql::parse(&request.query).map_err(|error| error.to_string())?;
    let plan = Plan::new(&query, now).map_err(|error| error.to_string())?;
    Ok(Prepared { plan, lo, hi })
}

/// The tenant's tables, copied out of its lock.
fn source(shared: &Shared, tenant_id: &str) -> Source {
    let tenant = shared.defender.tenant(tenant_id);
    let data = lock(&tenant);
    let mut config = data.config.hunting.clone().unwrap_or_default();
    resolve_end(&mut config, time::now());
    Source::new(data.config.seed, data.domain.clone(), config)
}

fn schema(columns: &[Column], legacy: bool) -> Vec<Value> {
    let (name, kind) = if legacy {
        ("Name", "Type")
    } else {
        ("name", "type")
    };
    columns
        .iter()
        .map(|column| json!({ name: column.name, kind: column.kind.schema_name() }))
        .collect()
}

/// The answer, written row by row: at most `max_rows` rows are ever held.
fn render(
    prepared: &Prepared,
    source: &Source,
    settings: &DefenderSettings,
    base_url: &str,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(4096);
    let head = json!({
        "@odata.context": format!("{base_url}/v1.0/$metadata#microsoft.graph.security.huntingQueryResults"),
        "schema": schema(&prepared.plan.schema, settings.hunting_legacy_schema),
    });
    let head = serde_json::to_vec(&head).unwrap_or_default();
    // `{...}` without its closing brace, then the results.
    out.extend_from_slice(&head[..head.len().saturating_sub(1)]);
    out.extend_from_slice(b",\"results\":[");
    let max = usize::try_from(settings.hunting_max_rows).unwrap_or(usize::MAX);
    let mut rows = prepared.plan.rows(source, prepared.lo, prepared.hi);
    for (n, row) in rows.by_ref().take(max).enumerate() {
        if n > 0 {
            out.push(b',');
        }
        write_row(&mut out, &prepared.plan.schema, &row);
    }
    if rows.next().is_some() {
        tracing::info!(max, "hunting result cut at the row limit");
    }
    out.extend_from_slice(b"]}");
    out
}

fn write_row(out: &mut Vec<u8>, columns: &[Column], row: &[Cell]) {
    out.push(b'{');
    for (i, (column, cell)) in columns.iter().zip(row).enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let _ = serde_json::to_writer(&mut *out, column.name);
        out.push(b':');
        let _ = serde_json::to_writer(&mut *out, &cell.to_json());
    }
    out.push(b'}');
}

fn row_object(columns: &[Column], row: &[Cell]) -> Map<String, Value> {
    columns
        .iter()
        .zip(row)
        .map(|(column, cell)| (column.name.to_owned(), cell.to_json()))
        .collect()
}

fn bad_request(message: impl Into<String>) -> ApiError {
    ApiError::graph_bad_request(message)
}

/// The CPU quota's 429: the body names the limit, `Retry-After` the end of the cycle.
fn cpu_quota_spent(seconds: u64) -> ApiError {
    let mut error = ApiError::new(
        Api::Graph,
        StatusCode::TOO_MANY_REQUESTS,
        "TooManyRequests",
        format!(
            "CPU quota exceeded: You have exceeded processing resources allocated to this tenant. You can run queries again in {}.",
            clock(seconds)
        ),
    );
    error.retry_after = Some(seconds);
    error
}

/// `hh:mm:ss`.
fn clock(seconds: u64) -> String {
    format!(
        "{:02}:{:02}:{:02}",
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60
    )
}

fn calls_exceeded(per_minute: u32, seconds: u64) -> ApiError {
    let mut error = ApiError::new(
        Api::Graph,
        StatusCode::TOO_MANY_REQUESTS,
        "TooManyRequests",
        format!(
            "Rate limit exceeded: at most {per_minute} advanced hunting calls per minute for this tenant. Try again in {seconds} seconds."
        ),
    );
    error.retry_after = Some(seconds);
    error
}

/// A query past the time limit: Graph's gateway answers 504 `UnknownError` with an empty
/// message (microsoftgraph/microsoft-graph-docs-contrib#1446).
fn timed_out() -> ApiError {
    ApiError::new(Api::Graph, StatusCode::GATEWAY_TIMEOUT, "UnknownError", "")
}

async fn run_hunting_query(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match run(&shared, &headers, &body).await {
        Ok(bytes) => {
            let mut response = errors::page_response(Api::Graph, &Value::Null, &headers);
            *response.body_mut() = axum::body::Body::from(bytes);
            response.headers_mut().remove(header::CONTENT_LENGTH);
            response
        }
        Err(error) => error.render(&headers),
    }
}

async fn run(shared: &Arc<Shared>, headers: &HeaderMap, body: &[u8]) -> Result<Vec<u8>, ApiError> {
    let caller = authorize(shared, Endpoint::GraphHunting, headers)?;
    let tenant = caller.tenant_id;
    let settings = shared.defender.settings();
    if settings.rate_limits == RateLimitMode::On
        && let Some(wait) = shared
            .defender
            .hunting_call(&tenant, settings.hunting_calls_per_minute)
    {
        tracing::info!(%tenant, wait, "hunting calls over the per-minute limit");
        return Err(calls_exceeded(settings.hunting_calls_per_minute, wait));
    }
    let request = parse_body(body).map_err(bad_request)?;
    let prepared = prepare(&request, now(&settings)).map_err(bad_request)?;
    if let Err(wait) = shared.defender.hunting_spend(
        &tenant,
        settings.hunting_cpu_quota,
        Duration::from_secs(u64::from(settings.hunting_cpu_cycle_seconds)),
    ) {
        tracing::info!(%tenant, wait, "hunting CPU quota spent");
        return Err(cpu_quota_spent(wait));
    }
    let source = source(shared, &tenant);
    let running = source.config.query_ms;
    if running > settings.hunting_timeout_ms {
        tokio::time::sleep(Duration::from_millis(settings.hunting_timeout_ms)).await;
        tracing::info!(%tenant, "hunting query timed out");
        return Err(timed_out());
    }
    if running > 0 {
        tokio::time::sleep(Duration::from_millis(running)).await;
    }
    let base_url = shared.base_url.clone();
    let started = Instant::now();
    let bytes =
        tokio::task::spawn_blocking(move || render(&prepared, &source, &settings, &base_url))
            .await
            .map_err(|_| ApiError::internal(Api::Graph))?;
    tracing::info!(%tenant, bytes = bytes.len(), elapsed_ms = started.elapsed().as_millis() as u64, "hunting query answered");
    Ok(bytes)
}

/// What a query must produce for a tenant, without token, limits, quota or faults.
pub(crate) fn truth(
    shared: &Shared,
    tenant_id: &str,
    query: &str,
    timespan: Option<&str>,
) -> Result<HuntingTruth, String> {
    let settings = shared.defender.settings();
    let request = Request {
        query: query.to_owned(),
        timespan: timespan.map(str::to_owned),
    };
    let prepared = prepare(&request, now(&settings))?;
    let source = source(shared, tenant_id);
    let max = usize::try_from(settings.hunting_max_rows).unwrap_or(usize::MAX);
    let columns = &prepared.plan.schema;
    let mut rows = prepared.plan.rows(&source, prepared.lo, prepared.hi);
    let results: Vec<Map<String, Value>> = rows
        .by_ref()
        .take(max)
        .map(|row| row_object(columns, &row))
        .collect();
    let rest = rows.count() as u64;
    Ok(HuntingTruth {
        schema: columns
            .iter()
            .map(|column| HuntingColumn {
                name: column.name.to_owned(),
                kind: column.kind.schema_name().to_owned(),
            })
            .collect(),
        matching_rows: results.len() as u64 + rest,
        truncated: rest > 0,
        results,
    })
}

impl IntoResponse for HuntingTruth {
    fn into_response(self) -> Response {
        axum::Json(self).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_take_query_and_timespan() {
        let request = parse_body(br#"{"Query": "EmailEvents", "Timespan": "P1D"}"#).unwrap();
        assert_eq!(request.query, "EmailEvents");
        assert_eq!(request.timespan.as_deref(), Some("P1D"));
        let request = parse_body(br#"{"query": "EmailEvents", "timespan": null}"#).unwrap();
        assert_eq!(request.timespan, None);
        for body in [
            &b""[..],
            b"{",
            b"[]",
            br#"{}"#,
            br#"{"Query": ""}"#,
            br#"{"Query": 1}"#,
            br#"{"Query": "T", "Timespan": 3}"#,
            br#"{"Query": "T", "Top": 3}"#,
        ] {
            assert!(
                parse_body(body).is_err(),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn clocks_read_as_hours_minutes_seconds() {
        assert_eq!(clock(852), "00:14:12");
        assert_eq!(clock(3_661), "01:01:01");
    }
}
