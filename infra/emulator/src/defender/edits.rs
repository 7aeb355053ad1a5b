//! What was written to a tenant's records: Graph `PATCH`es, comments and simulated portal edits.
//!
//! Records are generated from their index (`data.rs`, `facts.rs`); only the written values are
//! stored, per record, and `facts.rs` lays them over the generated ones, so every API (M365
//! Defender, Defender for Endpoint, Graph) shows the change. Enum values are kept in M365
//! Defender's spelling (`TruePositive`), from which Graph's (`truePositive`) is derived as for
//! generated values.
//!
//! The parsing and validation of an update body (the enums, the allowed properties) is here too,
//! so that the Graph routes and the control API's portal edits accept exactly the same values.

use std::collections::HashMap;

use serde_json::{Map, Value};

use super::data::Rec;
use super::facts::Comment;

/// Written values of one incident.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct IncidentEdit {
    pub status: Option<&'static str>,
    /// `Some(None)`: unassigned.
    pub assigned_to: Option<Option<String>>,
    pub classification: Option<&'static str>,
    pub determination: Option<&'static str>,
    /// Replaces the generated tags as a whole.
    pub custom_tags: Option<Vec<String>>,
    /// Added after the generated comments, oldest first.
    pub comments: Vec<Comment>,
    /// Who made the last change (Graph `lastModifiedBy`).
    pub last_modified_by: Option<String>,
}

/// Written values of one alert.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct AlertEdit {
    pub status: Option<&'static str>,
    pub assigned_to: Option<Option<String>>,
    pub classification: Option<&'static str>,
    pub determination: Option<&'static str>,
    pub custom_details: Option<Map<String, Value>>,
    pub comments: Vec<Comment>,
    /// Set with a status change: the resolution time, or `None` when no longer resolved.
    pub resolved: Option<Option<i64>>,
}

/// Every written record of a tenant.
#[derive(Debug, Default)]
pub(crate) struct Edits {
    pub incidents: HashMap<u32, IncidentEdit>,
    pub alerts: HashMap<Rec, AlertEdit>,
}

impl Edits {
    pub(crate) fn len(&self) -> usize {
        self.incidents.len() + self.alerts.len()
    }
}

/// Which kind of record an update is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Target {
    Incident,
    Alert,
}

impl Target {
    pub(crate) fn entity(self) -> &'static str {
        match self {
            Target::Incident => "microsoft.graph.security.incident",
            Target::Alert => "microsoft.graph.security.alert",
        }
    }
}

/// (Graph spelling, M365 Defender spelling) of `alertClassification`.
pub(crate) const CLASSIFICATIONS: [(&str, &str); 4] = [
    ("unknown", "Unknown"),
    ("falsePositive", "FalsePositive"),
    ("truePositive", "TruePositive"),
    (
        "informationalExpectedActivity",
        "InformationalExpectedActivity",
    ),
];

/// (Graph spelling, M365 Defender spelling) of `alertDetermination` for incidents: the values
/// of the update page, plus the two the v1.0 metadata (and so the SDKs) spell differently
/// (`compromisedAccount`, `confirmedActivity`; reference §11). `unknown` is M365 Defender's
/// `NotAvailable`, as for generated records.
pub(crate) const INCIDENT_DETERMINATIONS: [(&str, &str); 17] = [
    ("unknown", "NotAvailable"),
    ("apt", "Apt"),
    ("malware", "Malware"),
    ("securityPersonnel", "SecurityPersonnel"),
    ("securityTesting", "SecurityTesting"),
    ("unwantedSoftware", "UnwantedSoftware"),
    ("other", "Other"),
    ("multiStagedAttack", "MultiStagedAttack"),
    ("compromisedUser", "CompromisedUser"),
    ("compromisedAccount", "CompromisedAccount"),
    ("phishing", "Phishing"),
    ("maliciousUserActivity", "MaliciousUserActivity"),
    ("notMalicious", "NotMalicious"),
    ("notEnoughDataToValidate", "NotEnoughDataToValidate"),
    ("confirmedUserActivity", "ConfirmedUserActivity"),
    ("confirmedActivity", "ConfirmedActivity"),
    ("lineOfBusinessApplication", "LineOfBusinessApplication"),
];

/// The alert-update page adds these two to the incident values.
const ALERT_ONLY_DETERMINATIONS: [(&str, &str); 2] =
    [("clean", "Clean"), ("insufficientData", "InsufficientData")];

/// Incident statuses a PATCH may set (reference §11: the documented ones).
const INCIDENT_STATUSES: [(&str, &str); 3] = [
    ("active", "Active"),
    ("resolved", "Resolved"),
    ("redirected", "Redirected"),
];

/// Statuses lists return but whose use in an incident PATCH is undocumented: refused (400) so
/// that a client sending them finds out in tests rather than in a customer's tenant.
const UNDOCUMENTED_INCIDENT_STATUSES: [&str; 2] = ["inProgress", "awaitingAction"];

const ALERT_STATUSES: [(&str, &str); 3] = [
    ("new", "New"),
    ("inProgress", "InProgress"),
    ("resolved", "Resolved"),
];

/// Properties the records have but an update may not change.
const INCIDENT_READ_ONLY: [&str; 16] = [
    "id",
    "tenantId",
    "displayName",
    "severity",
    "createdDateTime",
    "lastUpdateDateTime",
    "incidentWebUrl",
    "redirectIncidentId",
    "systemTags",
    "description",
    "summary",
    "priorityScore",
    "lastModifiedBy",
    "resolvingComment",
    "comments",
    "alerts",
];

const ALERT_READ_ONLY: [&str; 22] = [
    "id",
    "providerAlertId",
    "incidentId",
    "severity",
    "serviceSource",
    "detectionSource",
    "productName",
    "detectorId",
    "tenantId",
    "title",
    "description",
    "recommendedActions",
    "category",
    "alertWebUrl",
    "incidentWebUrl",
    "createdDateTime",
    "lastUpdateDateTime",
    "resolvedDateTime",
    "firstActivityDateTime",
    "lastActivityDateTime",
    "comments",
    "evidence",
];

/// A parsed update body: the properties it names.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Update {
    pub status: Option<&'static str>,
    pub assigned_to: Option<Option<String>>,
    pub classification: Option<&'static str>,
    pub determination: Option<&'static str>,
    pub custom_tags: Option<Vec<String>>,
    pub custom_details: Option<Map<String, Value>>,
}

impl Update {
    pub(crate) fn is_empty(&self) -> bool {
        *self == Update::default()
    }
}

/// Graph's type name of an enum property, for messages.
fn enum_type(property: &str) -> &'static str {
    match property {
        "classification" => "microsoft.graph.security.alertClassification",
        "determination" => "microsoft.graph.security.alertDetermination",
        "status" => "microsoft.graph.security.incidentStatus",
        _ => "microsoft.graph.security.alertStatus",
    }
}

/// The stored spelling of an enum value, matched case-insensitively: Graph's own examples send
/// `TruePositive` as well as `truePositive`.
fn enum_value(
    property: &str,
    type_name: &str,
    values: &[(&'static str, &'static str)],
    given: &Value,
) -> Result<&'static str, String> {
    let Some(text) = given.as_str() else {
        return Err(format!(
            "The property '{property}' must be a string (one of {}).",
            accepted(values)
        ));
    };
    values
        .iter()
        .find(|(graph, _)| graph.eq_ignore_ascii_case(text))
        .map(|(_, stored)| *stored)
        .ok_or_else(|| {
            format!(
                "Invalid value '{text}' for the property '{property}' of type '{type_name}'. Accepted values: {}.",
                accepted(values)
            )
        })
}

fn accepted(values: &[(&str, &str)]) -> String {
    values
        .iter()
        .map(|(graph, _)| *graph)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Parses an update body of `target`. `Err` is the message of Graph's 400 `BadRequest`.
pub(crate) fn parse_update(target: Target, body: &Value) -> Result<Update, String> {
    let Some(object) = body.as_object() else {
        return Err("The request body must be a JSON object.".to_owned());
    };
    let mut update = Update::default();
    for (name, value) in object {
        match (target, name.as_str()) {
            (_, "@odata.type") => {
                let wanted = target.entity();
                if value.as_str().map(|t| t.trim_start_matches('#')) != Some(wanted) {
                    return Err(format!(
                        "The @odata.type of the body must be '{wanted}' (or absent)."
                    ));
                }
            }
            (_, "assignedTo") => {
                update.assigned_to = Some(match value {
                    Value::Null => None,
                    Value::String(text) => Some(text.clone()),
                    _ => {
                        return Err("The property 'assignedTo' must be a string or null.".into());
                    }
                });
            }
            (_, "classification") => {
                update.classification =
                    Some(enum_value(name, enum_type(name), &CLASSIFICATIONS, value)?);
            }
            (Target::Incident, "determination") => {
                update.determination = Some(enum_value(
                    name,
                    enum_type(name),
                    &INCIDENT_DETERMINATIONS,
                    value,
                )?);
            }
            (Target::Alert, "determination") => {
                let values: Vec<(&'static str, &'static str)> = INCIDENT_DETERMINATIONS
                    .iter()
                    .chain(ALERT_ONLY_DETERMINATIONS.iter())
                    .copied()
                    .collect();
                update.determination = Some(enum_value(name, enum_type(name), &values, value)?);
            }
            (Target::Incident, "status") => {
                if let Some(text) = value.as_str()
                    && UNDOCUMENTED_INCIDENT_STATUSES
                        .iter()
                        .any(|status| status.eq_ignore_ascii_case(text))
                {
                    return Err(format!(
                        "The incident status '{text}' cannot be set: an update accepts active, resolved or redirected ({} are not documented for updates).",
                        UNDOCUMENTED_INCIDENT_STATUSES.join(" and ")
                    ));
                }
                update.status = Some(enum_value(
                    name,
                    enum_type(name),
                    &INCIDENT_STATUSES,
                    value,
                )?);
            }
            (Target::Alert, "status") => {
                update.status = Some(enum_value(
                    name,
                    "microsoft.graph.security.alertStatus",
                    &ALERT_STATUSES,
                    value,
                )?);
            }
            (Target::Incident, "customTags") => {
                let tags = value
                    .as_array()
                    .and_then(|items| {
                        items
                            .iter()
                            .map(|item| item.as_str().map(str::to_owned))
                            .collect::<Option<Vec<String>>>()
                    })
                    .ok_or("The property 'customTags' must be an array of strings.")?;
                update.custom_tags = Some(tags);
            }
            (Target::Alert, "customDetails") => {
                let details = value
                    .as_object()
                    .ok_or("The property 'customDetails' must be an object.")?;
                update.custom_details = Some(details.clone());
            }
            (Target::Incident, other) if INCIDENT_READ_ONLY.contains(&other) => {
                return Err(read_only(target, other));
            }
            (Target::Alert, other) if ALERT_READ_ONLY.contains(&other) => {
                return Err(read_only(target, other));
            }
            (_, other) => {
                return Err(format!(
                    "The property '{other}' does not exist on type '{}'. Make sure to only use property names that are defined by the type or mark the type as open type.",
                    target.entity()
                ));
            }
        }
    }
    Ok(update)
}

fn read_only(target: Target, property: &str) -> String {
    format!(
        "The property '{property}' of '{}' cannot be updated.",
        target.entity()
    )
}

/// The legacy M365 Defender rule (reference §11): a determination other than `unknown` only
/// with the classification `truePositive`. `classification` is the one the incident would have
/// after the update. `Err` is the message of the 400.
pub(crate) fn check_determination_rule(
    determination: &'static str,
    classification: &'static str,
) -> Result<(), String> {
    if determination == "NotAvailable" || classification == "TruePositive" {
        return Ok(());
    }
    let graph = |values: &[(&'static str, &'static str)], stored: &str| {
        values
            .iter()
            .find(|(_, s)| *s == stored)
            .map_or("unknown", |(g, _)| *g)
    };
    Err(format!(
        "The determination '{}' can be set only with the classification 'truePositive' (the incident's classification would be '{}'). Send the classification truePositive in the same update, or leave the determination unknown.",
        graph(&INCIDENT_DETERMINATIONS, determination),
        graph(&CLASSIFICATIONS, classification),
    ))
}

/// Applies an update to an incident's edit. `now` stamps nothing here; the caller moves the
/// last-update time.
pub(crate) fn apply_to_incident(edit: &mut IncidentEdit, update: &Update, by: &str) {
    if let Some(status) = update.status {
        edit.status = Some(status);
    }
    if let Some(assigned) = &update.assigned_to {
        edit.assigned_to = Some(assigned.clone());
    }
    if let Some(classification) = update.classification {
        edit.classification = Some(classification);
    }
    if let Some(determination) = update.determination {
        edit.determination = Some(determination);
    }
    if let Some(tags) = &update.custom_tags {
        edit.custom_tags = Some(tags.clone());
    }
    edit.last_modified_by = Some(by.to_owned());
}

/// Applies an update to an alert's edit; a status change sets or clears the resolution time.
pub(crate) fn apply_to_alert(edit: &mut AlertEdit, update: &Update, now: i64) {
    if let Some(status) = update.status {
        edit.status = Some(status);
        edit.resolved = Some((status == "Resolved").then_some(now));
    }
    if let Some(assigned) = &update.assigned_to {
        edit.assigned_to = Some(assigned.clone());
    }
    if let Some(classification) = update.classification {
        edit.classification = Some(classification);
    }
    if let Some(determination) = update.determination {
        edit.determination = Some(determination);
    }
    if let Some(details) = &update.custom_details {
        edit.custom_details = Some(details.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_every_documented_incident_property() {
        let update = parse_update(
            Target::Incident,
            &json!({"assignedTo": null, "classification": "TruePositive",
                    "determination": "compromisedAccount", "status": "resolved",
                    "customTags": ["a", "b"], "@odata.type": "#microsoft.graph.security.incident"}),
        )
        .unwrap();
        assert_eq!(update.assigned_to, Some(None));
        assert_eq!(update.classification, Some("TruePositive"));
        assert_eq!(update.determination, Some("CompromisedAccount"));
        assert_eq!(update.status, Some("Resolved"));
        assert_eq!(update.custom_tags, Some(vec!["a".into(), "b".into()]));
        // Both spellings of the two renamed determinations.
        for (given, stored) in [
            ("compromisedUser", "CompromisedUser"),
            ("confirmedUserActivity", "ConfirmedUserActivity"),
            ("confirmedActivity", "ConfirmedActivity"),
        ] {
            let update =
                parse_update(Target::Incident, &json!({ "determination": given })).unwrap();
            assert_eq!(update.determination, Some(stored));
        }
    }

    #[test]
    fn refuses_what_is_not_documented() {
        for (target, body, needle) in [
            (
                Target::Incident,
                json!({"status": "inProgress"}),
                "not documented",
            ),
            (
                Target::Incident,
                json!({"status": "awaitingAction"}),
                "not documented",
            ),
            (
                Target::Incident,
                json!({"status": "new"}),
                "Accepted values",
            ),
            (
                Target::Incident,
                json!({"classification": "bad"}),
                "alertClassification",
            ),
            (
                Target::Incident,
                json!({"determination": "clean"}),
                "Accepted values",
            ),
            (
                Target::Incident,
                json!({"customTags": "x"}),
                "array of strings",
            ),
            (Target::Incident, json!({"assignedTo": 3}), "string or null"),
            (
                Target::Incident,
                json!({"severity": "high"}),
                "cannot be updated",
            ),
            (Target::Incident, json!({"colour": "red"}), "does not exist"),
            (
                Target::Incident,
                json!({"customDetails": {}}),
                "does not exist",
            ),
            (
                Target::Alert,
                json!({"status": "active"}),
                "Accepted values",
            ),
            (Target::Alert, json!({"customTags": []}), "does not exist"),
            (Target::Alert, json!({"customDetails": 1}), "an object"),
            (Target::Alert, json!({"title": "x"}), "cannot be updated"),
            (
                Target::Alert,
                json!({"@odata.type": "#microsoft.graph.security.incident"}),
                "@odata.type",
            ),
            (Target::Alert, json!([1]), "JSON object"),
        ] {
            let error = parse_update(target, &body).unwrap_err();
            assert!(error.contains(needle), "{body}: {error}");
        }
        let alert = parse_update(
            Target::Alert,
            &json!({"status": "inProgress", "determination": "insufficientData",
                    "customDetails": {"k": "v"}}),
        )
        .unwrap();
        assert_eq!(alert.status, Some("InProgress"));
        assert_eq!(alert.determination, Some("InsufficientData"));
    }

    #[test]
    fn the_determination_rule_wants_true_positive() {
        assert!(check_determination_rule("Malware", "TruePositive").is_ok());
        assert!(check_determination_rule("NotAvailable", "FalsePositive").is_ok());
        let error = check_determination_rule("Malware", "FalsePositive").unwrap_err();
        assert!(
            error.contains("'malware'") && error.contains("'falsePositive'"),
            "{error}"
        );
    }
}
