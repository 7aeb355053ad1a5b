//! CloudWatch metrics in the Embedded Metric Format (EMF): one JSON line on stdout per fact,
//! which CloudWatch Logs turns into metrics of the namespace [`NAMESPACE`] with no API call and
//! no IAM permission. Only in JSON (Lambda) mode; a laptop's text logs stay readable.
//!
//! Every metric the template's alarms and dashboard read is named here ([`name`]), and every
//! dimension is low-cardinality: a source, a function path, an error code, a status. Never a
//! tenant id: a metric per tenant would cost per tenant and outgrow CloudWatch's dashboards;
//! the per-tenant detail is in the log lines next to these and in `dp-operator status`.
//!
//! Specification: <https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html>

use serde_json::{Map, Value, json};

use crate::ErrorCode;

/// The namespace of the CloudWatch metrics the functions publish.
pub const NAMESPACE: &str = "DefenderPartner";

/// The metric names, as the template's alarms and dashboard spell them.
pub mod name {
    /// A scheduled fetch-incidents run finished (the heartbeat; dimension `Function`).
    pub const FLEET_RUN_COMPLETED: &str = "FleetRunCompleted";
    /// Tenant-source pairs a scheduled run planned, and how many it sent to the queue.
    pub const FLEET_PAIRS: &str = "FleetPairs";
    pub const FLEET_PAIRS_ENQUEUED: &str = "FleetPairsEnqueued";
    /// Pairs of a scheduled run (in-invocation) that failed or were throttled.
    pub const FLEET_PAIR_FAILURES: &str = "FleetPairFailures";
    /// Per pair (dimension `Source`): records delivered, API calls, failure, revocation, lag.
    pub const RECORDS_DELIVERED: &str = "RecordsDelivered";
    pub const API_CALLS: &str = "ApiCalls";
    pub const PAIR_FAILED: &str = "PairFailed";
    pub const PAIR_DROPPED: &str = "PairDropped";
    /// 1 when the pair's run marked its tenant `revoked` (only ever once per tenant: a revoked
    /// tenant is not fetched again).
    pub const TENANT_REVOKED: &str = "TenantRevoked";
    /// Now minus the newest update delivered for the pair; its Maximum is the worst tenant.
    pub const LAG_SECONDS: &str = "LagSeconds";
    /// Microsoft answered 429 (dimension `Source`).
    pub const THROTTLED_ANSWERS: &str = "ThrottledAnswers";
    /// Microsoft answered 206, a partial answer (dimension `Source`).
    pub const PARTIAL_ANSWERS: &str = "PartialAnswers";
    /// A token or credential refusal on a minting path (dimensions `Path` and `Path`+`Code`).
    pub const TOKEN_ERRORS: &str = "TokenErrors";
    /// The part of [`TOKEN_ERRORS`] an operator must act on ([`super::needs_operator`]).
    pub const OPERATOR_ACTION_NEEDED: &str = "OperatorActionNeeded";
    /// Write-back requests (dimension `Result`: done or failed).
    pub const WRITE_BACKS: &str = "WriteBacks";
    /// Hunts finished (dimension `Result`: done or failed).
    pub const HUNTS: &str = "Hunts";
    /// Whole days before the app credential's secret or certificate expires (a gauge;
    /// dimension `Credential` = `app`).
    pub const CREDENTIAL_DAYS_LEFT: &str = "CredentialDaysLeft";
}

/// Where a token or credential error was answered: the value of the `Path` dimension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenPath {
    MintToken,
    MintUserToken,
    ConsentSignin,
    /// A pair of the fleet failed with a code an operator must act on.
    FetchIncidents,
}

impl TokenPath {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenPath::MintToken => "mint-token",
            TokenPath::MintUserToken => "mint-user-token",
            TokenPath::ConsentSignin => "consent-signin",
            TokenPath::FetchIncidents => "fetch-incidents",
        }
    }
}

/// The outcome dimension of write-backs and hunts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finished {
    Done,
    Failed,
}

impl Finished {
    pub fn as_str(self) -> &'static str {
        match self {
            Finished::Done => "done",
            Finished::Failed => "failed",
        }
    }
}

/// Codes no caller can fix: the app's credential, its federation with AWS, or our own
/// registry or key service. Refusals of a caller's request (unknown tenant, bad input, a
/// customer's missing consent) are not among them.
pub fn needs_operator(code: ErrorCode) -> bool {
    let code = code.as_str();
    matches!(
        code,
        "credential_invalid"
            | "credential_expired"
            | "credential_unavailable"
            | "app_disabled"
            | "registry_unavailable"
            | "key_service_unavailable"
    ) || code.starts_with("federation_")
        || code.starts_with("federated_")
}

/// The heartbeat: a scheduled run of fetch-incidents finished. Its alarm fires when none did
/// for three schedule periods.
pub fn fleet_run_completed(pairs: usize, enqueued: usize, failures: usize) {
    emit(
        &[("Function", "fetch-incidents")],
        &[&["Function"]],
        &[
            (name::FLEET_RUN_COMPLETED, 1.0, "Count"),
            (name::FLEET_PAIRS, pairs as f64, "Count"),
            (name::FLEET_PAIRS_ENQUEUED, enqueued as f64, "Count"),
            (name::FLEET_PAIR_FAILURES, failures as f64, "Count"),
        ],
    );
}

/// Per-source counters of a pair's run (records, calls, failures, lag...), also aggregated over
/// every source (dimension `Function` alone) for the fleet-wide alarms.
pub fn per_source(source: &str, values: &[(&str, f64, &str)]) {
    emit(
        &[("Source", source), ("Function", "fetch-incidents")],
        &[&["Source"], &["Function"]],
        values,
    );
}

/// Microsoft answered 429 for `source`.
pub fn throttled_answer(source: &str) {
    per_source(source, &[(name::THROTTLED_ANSWERS, 1.0, "Count")]);
}

/// Microsoft answered 206 for `source`.
pub fn partial_answer(source: &str) {
    per_source(source, &[(name::PARTIAL_ANSWERS, 1.0, "Count")]);
}

/// A request on `path` refused with `code`: counted per path and per path and code, and as
/// [`name::OPERATOR_ACTION_NEEDED`] when the code is one a person must fix.
pub fn token_error(path: TokenPath, code: ErrorCode) {
    emit(
        &[("Path", path.as_str()), ("Code", code.as_str())],
        &[&["Path"], &["Path", "Code"]],
        &[
            (name::TOKEN_ERRORS, 1.0, "Count"),
            (
                name::OPERATOR_ACTION_NEEDED,
                f64::from(u8::from(needs_operator(code))),
                "Count",
            ),
        ],
    );
}

/// A write-back request ended.
pub fn write_back(result: Finished) {
    emit(
        &[("Result", result.as_str())],
        &[&["Result"]],
        &[(name::WRITE_BACKS, 1.0, "Count")],
    );
}

/// A hunt finished.
pub fn hunt(result: Finished) {
    emit(
        &[("Result", result.as_str())],
        &[&["Result"]],
        &[(name::HUNTS, 1.0, "Count")],
    );
}

/// Days before the app credential expires (negative once it has): its alarm fires under 30.
pub fn credential_days_left(days: f64) {
    emit(
        &[("Credential", "app")],
        &[&["Credential"]],
        &[(name::CREDENTIAL_DAYS_LEFT, days, "Count")],
    );
}

/// Writes one EMF line: `dimensions` are the values, `dimension_sets` the combinations
/// CloudWatch aggregates by (each a subset of the dimensions' names).
pub fn emit(dimensions: &[(&str, &str)], dimension_sets: &[&[&str]], values: &[(&str, f64, &str)]) {
    if values.is_empty() {
        return;
    }
    let now = chrono::Utc::now().timestamp_millis();
    #[cfg(test)]
    tests::CAPTURED.with(|lines| {
        lines
            .borrow_mut()
            .push(emf_line(dimensions, dimension_sets, values, now))
    });
    if super::writes_json() {
        println!("{}", emf_line(dimensions, dimension_sets, values, now));
    }
}

/// The lines this thread emitted since the last call, for tests elsewhere in the crate.
#[cfg(test)]
pub(crate) fn take_captured() -> Vec<String> {
    tests::CAPTURED.with(|lines| lines.borrow_mut().drain(..).collect())
}

fn emf_line(
    dimensions: &[(&str, &str)],
    dimension_sets: &[&[&str]],
    values: &[(&str, f64, &str)],
    timestamp_ms: i64,
) -> String {
    let metrics: Vec<Value> = values
        .iter()
        .map(|(name, _, unit)| json!({"Name": name, "Unit": unit}))
        .collect();
    let mut line = Map::new();
    line.insert(
        "_aws".into(),
        json!({
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": dimension_sets,
                "Metrics": metrics,
            }],
        }),
    );
    for (name, value) in dimensions {
        line.insert((*name).into(), json!(value));
    }
    for (name, value, _) in values {
        line.insert((*name).into(), json!(value));
    }
    Value::Object(line).to_string()
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;

    thread_local! {
        /// The lines this thread's calls emitted, whatever the log format.
        pub(super) static CAPTURED: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
    }

    /// The lines `emitting` writes, parsed.
    fn emitted(emitting: impl FnOnce()) -> Vec<Value> {
        CAPTURED.with(|lines| lines.borrow_mut().clear());
        emitting();
        CAPTURED.with(|lines| {
            lines
                .borrow_mut()
                .drain(..)
                .map(|line| parsed(&line))
                .collect()
        })
    }

    /// The one line `emitting` writes, checked against the specification.
    fn one_line(emitting: impl FnOnce()) -> Value {
        let lines = emitted(emitting);
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert_valid_emf(&lines[0]);
        lines[0].clone()
    }

    #[test]
    fn each_fact_is_one_line_with_the_dimensions_its_alarm_names() {
        let heartbeat = one_line(|| fleet_run_completed(9, 0, 1));
        assert_eq!(
            heartbeat["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            json!([["Function"]])
        );
        assert_eq!(heartbeat["Function"], "fetch-incidents");
        assert_eq!(heartbeat[name::FLEET_RUN_COMPLETED], 1.0);
        assert_eq!(heartbeat[name::FLEET_PAIR_FAILURES], 1.0);

        let throttled = one_line(|| throttled_answer("graph-alerts"));
        assert_eq!(
            throttled["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            json!([["Source"], ["Function"]])
        );
        assert_eq!(throttled["Source"], "graph-alerts");
        assert_eq!(throttled[name::THROTTLED_ANSWERS], 1.0);
        assert_eq!(
            one_line(|| partial_answer("graph-alerts"))[name::PARTIAL_ANSWERS],
            1.0
        );

        let refused = one_line(|| token_error(TokenPath::MintToken, ErrorCode::CredentialExpired));
        assert_eq!(refused["Path"], "mint-token");
        assert_eq!(refused["Code"], "credential_expired");
        assert_eq!(refused[name::OPERATOR_ACTION_NEEDED], 1.0);

        let days = one_line(|| credential_days_left(12.0));
        assert_eq!(
            days["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            json!([["Credential"]])
        );
        assert_eq!(days[name::CREDENTIAL_DAYS_LEFT], 12.0);

        assert_eq!(
            one_line(|| write_back(Finished::Failed))["Result"],
            "failed"
        );
        assert_eq!(one_line(|| hunt(Finished::Done))["Result"], "done");
        assert!(
            emitted(|| per_source("graph-alerts", &[])).is_empty(),
            "nothing to say"
        );
    }

    fn parsed(line: &str) -> Value {
        serde_json::from_str(line).expect("an EMF line is one JSON object")
    }

    /// What the specification requires: `_aws` with a millisecond `Timestamp` and metric
    /// directives; every dimension a string member of the root, every metric a number there.
    fn assert_valid_emf(line: &Value) {
        let metadata = &line["_aws"];
        assert!(metadata["Timestamp"].is_i64(), "{line}");
        let directives = metadata["CloudWatchMetrics"].as_array().unwrap();
        assert!(!directives.is_empty());
        for directive in directives {
            assert_eq!(directive["Namespace"], NAMESPACE);
            for set in directive["Dimensions"].as_array().unwrap() {
                let set = set.as_array().unwrap();
                assert!(set.len() <= 30, "at most 30 dimensions per set");
                for dimension in set {
                    let member = &line[dimension.as_str().unwrap()];
                    assert!(
                        member.is_string(),
                        "dimension {dimension} is a string: {line}"
                    );
                }
            }
            let metrics = directive["Metrics"].as_array().unwrap();
            assert!(metrics.len() <= 100, "at most 100 metrics per directive");
            for metric in metrics {
                let name = metric["Name"].as_str().unwrap();
                assert!(line[name].is_number(), "metric {name} is a number: {line}");
                let unit = metric["Unit"].as_str().unwrap();
                assert!(["Count", "Seconds", "None"].contains(&unit), "{unit}");
            }
        }
    }

    #[test]
    fn a_line_carries_its_dimensions_values_and_sets() {
        let line = parsed(&emf_line(
            &[("Source", "graph-incidents")],
            &[&["Source"]],
            &[(name::RECORDS_DELIVERED, 12.0, "Count")],
            1_700_000_000_000,
        ));
        assert_valid_emf(&line);
        assert_eq!(line["_aws"]["Timestamp"], 1_700_000_000_000_i64);
        let directive = &line["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Dimensions"], json!([["Source"]]));
        assert_eq!(
            directive["Metrics"],
            json!([{"Name": "RecordsDelivered", "Unit": "Count"}])
        );
        assert_eq!(line["Source"], "graph-incidents");
        assert_eq!(line["RecordsDelivered"], 12.0);
    }

    #[test]
    fn token_errors_count_per_path_and_per_code_and_flag_what_needs_a_person() {
        for (code, needs) in [
            (ErrorCode::CredentialExpired, 1.0),
            (ErrorCode::FederatedSubjectMismatch, 1.0),
            (ErrorCode::FederationDenied, 1.0),
            (ErrorCode::RegistryUnavailable, 1.0),
            (ErrorCode::TenantNotRegistered, 0.0),
            (ErrorCode::NotConsented, 0.0),
        ] {
            let line = one_line(|| token_error(TokenPath::MintUserToken, code));
            assert_eq!(line[name::TOKEN_ERRORS], 1.0, "{code}");
            assert_eq!(line[name::OPERATOR_ACTION_NEEDED], needs, "{code}");
            assert_eq!(line["Path"], "mint-user-token");
            assert_eq!(line["Code"], code.as_str());
            assert_eq!(
                line["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
                json!([["Path"], ["Path", "Code"]])
            );
        }
    }
}
