//! One tenant's part of a hunt: a slot from the tenant's hunting budget, the app's token
//! (`ThreatHunting.Read.All`), `POST /security/runHuntingQuery`, and the answer streamed into
//! result parts as it arrives. What Microsoft answered decides what happens next: finished (with
//! rows, a timeout or a missing permission), requeued for later (throttled, the CPU quota, an
//! outage), or the query refused (which is the same in every tenant: the hunt fails).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use secrecy::ExposeSecret;
use serde_json::Value;
use serde_json::value::RawValue;
use url::Url;

use super::answer::{AnswerItem, AnswerStream};
use super::output::{HuntOutput, ObjectKind, PartWriter, part_key, schema_key};
use crate::api::DefenderApi;
use crate::defender::limiter::Limiter;
use crate::entra::AppTokenProvider;
use crate::entra::roles::RoleRequirement;
use crate::store::TenantHuntStatus;
use crate::tenant_id::TenantId;
use crate::{CallerError, ErrorCode};

/// The permission advanced hunting needs (reference §12).
pub const HUNTING_ROLE: &str = "ThreatHunting.Read.All";
/// Under Graph's base (the host), as the other Graph paths are.
const HUNTING_PATH: &str = "v1.0/security/runHuntingQuery";
/// Microsoft's row cap per answer: an answer this long was cut.
pub const DEFAULT_ROW_CAP: u64 = 100_000;
/// Microsoft's CPU quota is counted per 15-minute cycle.
pub const CPU_CYCLE: Duration = Duration::from_secs(15 * 60);
/// How long a tenant waits in this invocation for a slot of its own budget before the message
/// is put back instead.
const SLOT_WAIT: Duration = Duration::from_secs(20);
/// When Microsoft throttles or fails without saying for how long.
const DEFAULT_RETRY: Duration = Duration::from_secs(60);
const OUTAGE_RETRY: Duration = Duration::from_secs(30);
/// Rows of a saved hunt compared with the ones seen before, per store round.
const DETECTION_BATCH: usize = 100;

/// Where a saved hunt's rows go to be compared with the ones seen before: it answers how many
/// were new (and announced them).
#[async_trait]
pub trait NewRows: Send + Sync {
    /// `rows` are `(hash, line)` pairs.
    async fn offer(&self, tenant: &TenantId, rows: Vec<(String, String)>) -> Result<u64, String>;
}

/// One tenant's query.
pub struct TenantRun<'a> {
    pub hunt_id: &'a str,
    pub tenant: &'a TenantId,
    pub customer_ref: Option<&'a str>,
    pub query: &'a str,
    pub timespan: Option<&'a str>,
    pub new_rows: Option<&'a dyn NewRows>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Finished {
        status: TenantHuntStatus,
        rows: u64,
        truncated: bool,
        parts: u32,
        new_rows: Option<u64>,
        error_code: Option<ErrorCode>,
        error: Option<String>,
    },
    /// Try this tenant again after `after`.
    Requeue {
        after: Duration,
        code: ErrorCode,
        reason: String,
    },
    /// Microsoft refused the query itself (HTTP 400).
    QueryInvalid { code: String, message: String },
}

impl Verdict {
    fn ended(status: TenantHuntStatus, code: ErrorCode, error: String) -> Verdict {
        Verdict::Finished {
            status,
            rows: 0,
            truncated: false,
            parts: 0,
            new_rows: None,
            error_code: Some(code),
            error: Some(error),
        }
    }
}

pub struct HuntRunner {
    http: reqwest::Client,
    graph_base: Url,
    tokens: Arc<AppTokenProvider>,
    limiter: Arc<Limiter>,
    output: Arc<dyn HuntOutput>,
    row_cap: u64,
    requirement: RoleRequirement,
}

impl HuntRunner {
    /// `http` must allow Microsoft's 3 minutes per query and the download after them.
    pub fn new(
        http: reqwest::Client,
        graph_base: Url,
        tokens: Arc<AppTokenProvider>,
        limiter: Arc<Limiter>,
        output: Arc<dyn HuntOutput>,
        row_cap: u64,
    ) -> HuntRunner {
        HuntRunner {
            http,
            graph_base,
            tokens,
            limiter,
            output,
            row_cap,
            requirement: RoleRequirement::parse(HUNTING_ROLE).expect("the role parses"),
        }
    }

    pub fn output(&self) -> &Arc<dyn HuntOutput> {
        &self.output
    }

    fn url(&self) -> Url {
        let base = self.graph_base.as_str().trim_end_matches('/');
        Url::parse(&format!("{base}/{HUNTING_PATH}")).expect("Graph's base is a URL")
    }

    pub async fn run(&self, run: &TenantRun<'_>) -> Verdict {
        if let Err(wait) = self.limiter.acquire_hunting(run.tenant, SLOT_WAIT).await {
            return Verdict::Requeue {
                after: wait,
                code: ErrorCode::Throttled,
                reason: "our own budget of 45 hunting calls a minute for this tenant is spent"
                    .into(),
            };
        }
        let token = match self
            .tokens
            .token(run.tenant, DefenderApi::Graph, None, &self.requirement)
            .await
        {
            Ok(token) => token,
            Err(error) if error.code() == ErrorCode::RolesMissing => {
                return Verdict::ended(
                    TenantHuntStatus::RolesMissing,
                    ErrorCode::RolesMissing,
                    roles_missing(run, &error.to_string()),
                );
            }
            Err(error) if error.code().is_transient() => {
                return Verdict::Requeue {
                    after: error.retry_after().unwrap_or(DEFAULT_RETRY),
                    code: error.code(),
                    reason: error.to_string(),
                };
            }
            Err(error) => {
                return Verdict::ended(TenantHuntStatus::Failed, error.code(), error.to_string());
            }
        };
        let mut body = serde_json::json!({ "Query": run.query });
        if let Some(timespan) = run.timespan {
            body["Timespan"] = Value::String(timespan.to_owned());
        }
        let sent = self
            .http
            .post(self.url())
            .bearer_auth(token.token.expose_secret())
            .header("Accept", "application/json")
            .json(&body)
            .send()
            .await;
        let response = match sent {
            Ok(response) => response,
            Err(error) if error.is_timeout() => {
                return Verdict::ended(
                    TenantHuntStatus::TimedOut,
                    ErrorCode::HuntTimedOut,
                    "no answer within the time a query may take (Microsoft stops a query after 3 minutes)".into(),
                );
            }
            Err(error) => {
                return Verdict::Requeue {
                    after: OUTAGE_RETRY,
                    code: ErrorCode::MicrosoftUnavailable,
                    reason: crate::http::describe_transport_error(&error),
                };
            }
        };
        if response.status().as_u16() != 200 {
            let answer = crate::http::read(Ok(response)).await;
            return match answer {
                Ok(answer) => {
                    if answer.status == 401 {
                        // Revoked or expired between cache and call: the next attempt mints anew.
                        self.tokens.invalidate(run.tenant, DefenderApi::Graph).await;
                    }
                    classify(answer.status, answer.retry_after, &answer.body, run)
                }
                Err(described) => Verdict::Requeue {
                    after: OUTAGE_RETRY,
                    code: ErrorCode::MicrosoftUnavailable,
                    reason: described,
                },
            };
        }
        self.stream(AnswerStream::from_response(response), run)
            .await
    }

    /// Writes the rows out as they arrive; only one part and a few rows are ever in memory.
    pub async fn stream(&self, mut answer: AnswerStream, run: &TenantRun<'_>) -> Verdict {
        let mut writer = PartWriter::default();
        let (mut rows, mut parts, mut new_rows) = (0u64, 0u32, 0u64);
        let mut schema = Vec::new();
        let mut pending: Vec<(String, String)> = Vec::new();
        let mut failure: Option<String> = None;
        while let Some(item) = answer.items.recv().await {
            let row = match item {
                AnswerItem::Schema(columns) => {
                    schema = columns;
                    continue;
                }
                AnswerItem::Row(row) => row,
            };
            rows += 1;
            let line = annotate(&row, run.tenant, run.customer_ref);
            if let Some(filter) = run.new_rows {
                pending.push((row_hash(&row), line.clone()));
                if pending.len() >= DETECTION_BATCH {
                    match filter.offer(run.tenant, std::mem::take(&mut pending)).await {
                        Ok(count) => new_rows += count,
                        Err(error) => {
                            failure = Some(error);
                            break;
                        }
                    }
                }
            }
            if let Some(part) = writer.write_line(&line) {
                parts += 1;
                if let Err(error) = self.put_part(run, parts, part).await {
                    failure = Some(error);
                    break;
                }
            }
        }
        let parsed = answer.finish().await;
        if let Some(error) = failure {
            return Verdict::Requeue {
                after: OUTAGE_RETRY,
                code: ErrorCode::HuntResultsUnavailable,
                reason: error,
            };
        }
        if let Err(error) = parsed {
            return Verdict::Requeue {
                after: OUTAGE_RETRY,
                code: ErrorCode::MicrosoftUnavailable,
                reason: format!("the answer broke off after {rows} rows: {error}"),
            };
        }
        if let Some(part) = writer.take() {
            parts += 1;
            if let Err(error) = self.put_part(run, parts, part).await {
                return Verdict::Requeue {
                    after: OUTAGE_RETRY,
                    code: ErrorCode::HuntResultsUnavailable,
                    reason: error,
                };
            }
        }
        if let Some(filter) = run.new_rows
            && !pending.is_empty()
        {
            match filter.offer(run.tenant, pending).await {
                Ok(count) => new_rows += count,
                Err(error) => {
                    return Verdict::Requeue {
                        after: OUTAGE_RETRY,
                        code: ErrorCode::HuntResultsUnavailable,
                        reason: error,
                    };
                }
            }
        }
        let schema = serde_json::to_vec(&schema).expect("a schema serialises");
        if let Err(error) = self
            .output
            .put(
                &schema_key(run.hunt_id, run.tenant),
                schema.into(),
                ObjectKind::Json,
            )
            .await
        {
            return Verdict::Requeue {
                after: OUTAGE_RETRY,
                code: ErrorCode::HuntResultsUnavailable,
                reason: error,
            };
        }
        Verdict::Finished {
            status: TenantHuntStatus::Succeeded,
            rows,
            truncated: rows >= self.row_cap,
            parts,
            new_rows: run.new_rows.map(|_| new_rows),
            error_code: None,
            error: None,
        }
    }

    async fn put_part(
        &self,
        run: &TenantRun<'_>,
        number: u32,
        body: bytes::Bytes,
    ) -> Result<(), String> {
        self.output
            .put(
                &part_key(run.hunt_id, run.tenant, number),
                body,
                ObjectKind::GzipNdjson,
            )
            .await
    }
}

fn roles_missing(run: &TenantRun<'_>, detail: &str) -> String {
    format!(
        "{detail}. Hunting needs {HUNTING_ROLE}: add it to the app's permissions and have the customer's administrator consent again (dp-operator consent-link --customer {} --tenant {})",
        run.customer_ref.unwrap_or("<customer>"),
        run.tenant
    )
}

/// What a refusal from Microsoft means for this tenant.
fn classify(
    status: u16,
    retry_after: Option<Duration>,
    body: &[u8],
    run: &TenantRun<'_>,
) -> Verdict {
    let body: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let (code, message) = crate::writeback::graph::error_of(&body);
    match status {
        400 => Verdict::QueryInvalid { code, message },
        401 => Verdict::Requeue {
            after: Duration::from_secs(1),
            code: ErrorCode::MicrosoftUnavailable,
            reason: "Graph refused the token (HTTP 401); a fresh one is minted".into(),
        },
        403 => Verdict::ended(
            TenantHuntStatus::RolesMissing,
            ErrorCode::RolesMissing,
            roles_missing(run, &format!("Graph refused the query (HTTP 403 {code})")),
        ),
        // The CPU quota lasts until its 15-minute cycle ends: wait for that, not a loop.
        429 if is_cpu_quota(&message) => Verdict::Requeue {
            after: retry_after.unwrap_or(CPU_CYCLE),
            code: ErrorCode::Throttled,
            reason: format!("CPU quota spent for this cycle: {message}"),
        },
        429 => Verdict::Requeue {
            after: retry_after.unwrap_or(DEFAULT_RETRY),
            code: ErrorCode::Throttled,
            reason: format!("throttled: {message}"),
        },
        // Graph's gateway answers a query past 3 minutes with 504 (and an empty message).
        408 | 504 => Verdict::ended(
            TenantHuntStatus::TimedOut,
            ErrorCode::HuntTimedOut,
            format!(
                "the query ran past Microsoft's 3 minutes in this tenant (HTTP {status}); narrow it or shorten the timespan"
            ),
        ),
        500..=599 => Verdict::Requeue {
            after: retry_after.unwrap_or(OUTAGE_RETRY),
            code: ErrorCode::MicrosoftUnavailable,
            reason: format!("Graph failed (HTTP {status} {code})"),
        },
        _ => Verdict::ended(
            TenantHuntStatus::Failed,
            ErrorCode::MicrosoftUnavailable,
            format!("Graph answered HTTP {status} {code}: {message}"),
        ),
    }
}

fn is_cpu_quota(message: &str) -> bool {
    let message = message.to_ascii_lowercase();
    message.contains("cpu") || message.contains("processing resources")
}

/// The row as Microsoft wrote it, with `tenant_id` and `customer_ref` in front, on one line.
pub fn annotate(row: &RawValue, tenant: &TenantId, customer_ref: Option<&str>) -> String {
    let raw = row.get().trim();
    let head = format!(
        "{{\"tenant_id\":{},\"customer_ref\":{}",
        Value::String(tenant.to_string()),
        customer_ref.map_or(Value::Null, |customer| Value::String(customer.to_owned()))
    );
    let line = match raw.strip_prefix('{') {
        Some(rest) if rest.trim_start().starts_with('}') => format!("{head}}}"),
        Some(rest) => format!("{head},{rest}"),
        // Not an object (never seen from Graph): kept whole under `value`.
        None => format!("{head},\"value\":{raw}}}"),
    };
    // Whitespace between tokens may hold line breaks; inside strings they are escaped.
    if line.contains(['\n', '\r']) {
        line.replace(['\n', '\r'], " ")
    } else {
        line
    }
}

/// A row's identity across runs: the SHA-256 of its canonical JSON (keys sorted), so a
/// re-ordered or re-spaced answer does not make an old row new.
pub fn row_hash(row: &RawValue) -> String {
    let canonical = serde_json::from_str::<Value>(row.get())
        .map(|value| value.to_string())
        .unwrap_or_else(|_| row.get().to_owned());
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, canonical.as_bytes());
    digest
        .as_ref()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(text: &str) -> Box<RawValue> {
        RawValue::from_string(text.to_owned()).unwrap()
    }

    fn tenant() -> TenantId {
        TenantId::parse("72f988bf-86f1-41af-91ab-2d7cd011db47").unwrap()
    }

    fn run_for(tenant: &TenantId) -> TenantRun<'_> {
        TenantRun {
            hunt_id: "h",
            tenant,
            customer_ref: Some("contoso"),
            query: "q",
            timespan: None,
            new_rows: None,
        }
    }

    #[test]
    fn rows_keep_their_columns_and_gain_the_tenant_and_customer() {
        let line = annotate(
            &raw("{\"B\":1,\n \"A\":\"x\\ny\"}"),
            &tenant(),
            Some("contoso"),
        );
        assert_eq!(
            line,
            r#"{"tenant_id":"72f988bf-86f1-41af-91ab-2d7cd011db47","customer_ref":"contoso","B":1,  "A":"x\ny"}"#
        );
        let parsed: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(parsed["A"], "x\ny");
        assert_eq!(
            annotate(&raw("{ }"), &tenant(), None),
            r#"{"tenant_id":"72f988bf-86f1-41af-91ab-2d7cd011db47","customer_ref":null}"#
        );
    }

    #[test]
    fn a_rows_hash_ignores_key_order_and_spacing() {
        assert_eq!(
            row_hash(&raw(r#"{"a":1,"b":"x"}"#)),
            row_hash(&raw(r#"{ "b": "x", "a": 1 }"#))
        );
        assert_ne!(row_hash(&raw(r#"{"a":1}"#)), row_hash(&raw(r#"{"a":2}"#)));
    }

    #[test]
    fn microsofts_refusals_are_classified() {
        let tenant = tenant();
        let run = run_for(&tenant);
        let body = |code: &str, message: &str| {
            serde_json::to_vec(&serde_json::json!({"error": {"code": code, "message": message}}))
                .unwrap()
        };
        assert_eq!(
            classify(
                400,
                None,
                &body("BadRequest", "Syntax error near 'wher'"),
                &run
            ),
            Verdict::QueryInvalid {
                code: "BadRequest".into(),
                message: "Syntax error near 'wher'".into()
            }
        );
        let cpu = body(
            "TooManyRequests",
            "CPU quota exceeded: You have exceeded processing resources allocated to this tenant.",
        );
        assert!(matches!(
            classify(429, Some(Duration::from_secs(600)), &cpu, &run),
            Verdict::Requeue { after, .. } if after == Duration::from_secs(600)
        ));
        assert!(matches!(
            classify(429, None, &cpu, &run),
            Verdict::Requeue { after, .. } if after == CPU_CYCLE
        ));
        let rate = body(
            "TooManyRequests",
            "Rate limit exceeded. Try again in 12 seconds.",
        );
        assert!(matches!(
            classify(429, None, &rate, &run),
            Verdict::Requeue { after, .. } if after == DEFAULT_RETRY
        ));
        assert!(matches!(
            classify(504, None, &body("UnknownError", ""), &run),
            Verdict::Finished {
                status: TenantHuntStatus::TimedOut,
                error_code: Some(ErrorCode::HuntTimedOut),
                ..
            }
        ));
        match classify(403, None, &body("Forbidden", "no"), &run) {
            Verdict::Finished {
                status: TenantHuntStatus::RolesMissing,
                error: Some(error),
                ..
            } => assert!(
                error.contains("ThreatHunting.Read.All") && error.contains("consent-link"),
                "{error}"
            ),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            classify(503, None, b"", &run),
            Verdict::Requeue {
                code: ErrorCode::MicrosoftUnavailable,
                ..
            }
        ));
    }
}
