//! Defender for Endpoint: `GET /api/alerts` (`samples/mde-alerts-page.json`).
//!
//! `$top` at most 10,000 (also the default), `$skip`, `$expand=evidence`, `$orderby` on
//! `lastUpdateTime` or `alertCreationTime`, `$filter` on those two, `incidentId` (a number),
//! `status`, `severity`, `assignedTo`, `classification`, `determination`, `id`.
//! Newest last update first. Never an `@odata.nextLink`: clients page with `$skip` or by time.

use serde_json::{Map, Value, json};

use super::data::{Rec, Space, TenantData};
use super::facts::{self, AlertFacts, Artifact, Entity, EntityKind};
use super::odata::{ApiSpec, FieldKind, FieldSpec, Query, TextField};
use super::time::format;
use super::{Context, Page, cut};

pub(crate) const SPEC: ApiSpec = ApiSpec {
    entity: "microsoft.windowsDefenderATP.api.PublicAlert",
    fields: &[
        FieldSpec::new("lastUpdateTime", FieldKind::Updated),
        FieldSpec::new("alertCreationTime", FieldKind::Created),
        FieldSpec::new("incidentId", FieldKind::IncidentId { string: false }),
        FieldSpec::new("status", FieldKind::Text(TextField::Status)),
        FieldSpec::new("severity", FieldKind::Text(TextField::Severity)),
        FieldSpec::new("assignedTo", FieldKind::Text(TextField::AssignedTo)),
        FieldSpec::new("classification", FieldKind::Text(TextField::Classification)),
        FieldSpec::new("determination", FieldKind::Text(TextField::Determination)),
        FieldSpec::new("id", FieldKind::Text(TextField::Id)),
    ],
    max_top: 10_000,
    default_top: 10_000,
    clamp_top: false,
    expand: Some("evidence"),
    extra_options: &[],
};

/// Every key of an MDE evidence item; those that do not apply are null.
const EVIDENCE_KEYS: [&str; 23] = [
    "sha1",
    "sha256",
    "fileName",
    "filePath",
    "processId",
    "processCommandLine",
    "processCreationTime",
    "parentProcessId",
    "parentProcessCreationTime",
    "parentProcessFileName",
    "parentProcessFilePath",
    "ipAddress",
    "url",
    "registryKey",
    "registryHive",
    "registryValueType",
    "registryValue",
    "accountName",
    "domainName",
    "userSid",
    "aadUserId",
    "userPrincipalName",
    "detectionStatus",
];

pub(crate) fn page(data: &TenantData, query: &Query, context: &Context<'_>) -> Page {
    let scan = match query.incident_id {
        None => data.scan(Space::Mde, query.window, query.order),
        Some(id) => {
            let alerts = id
                .and_then(|id| data.incident_index(id))
                .map(|index| data.alerts_of(index))
                .unwrap_or_default()
                .into_iter()
                .filter(|alert| matches!(alert, Rec::Mde(_)))
                .collect();
            data.scan_records(alerts, query.window, query.order)
        }
    };
    let keep = |record: Rec| {
        query.texts.is_empty()
            || query
                .matches_text(|field| facts::alert_text(&facts::alert(data, record), field, false))
    };
    let (records, _) = cut(scan, keep, query.skip, query.top);
    let value: Vec<Value> = records
        .iter()
        .map(|record| alert(&facts::alert(data, *record), context, query.expand))
        .collect();
    Ok(json!({
        "@odata.context": format!("{}/api/$metadata#Alerts", context.base_url),
        "value": value,
    }))
}

fn evidence(entity: &Entity, created: i64) -> Option<Value> {
    if matches!(entity.kind, EntityKind::MailBox | EntityKind::MailMessage) {
        return None;
    }
    let mut object = Map::new();
    object.insert("entityType".into(), json!(entity.kind.name()));
    object.insert("evidenceCreationTime".into(), json!(format(created)));
    for key in EVIDENCE_KEYS {
        object.insert(key.into(), entity.get(key));
    }
    Some(Value::Object(object))
}

fn alert(alert: &AlertFacts, context: &Context<'_>, expand: bool) -> Value {
    let device = alert.device.as_ref();
    // Network detections name no user (EM shows `relatedUser: null`).
    let related_user = match alert.kind.artifact {
        Artifact::Network { .. } => Value::Null,
        _ => json!({ "userName": alert.user.account, "domainName": "CORP" }),
    };
    let mut value = json!({
        "id": alert.id,
        "incidentId": alert.incident_id,
        "investigationId": alert.investigation_id,
        "assignedTo": alert.assigned_to.as_ref().map(|(upn, _)| upn),
        "severity": alert.severity,
        "status": alert.status,
        "classification": alert.classification,
        "determination": alert.determination,
        "investigationState": alert.investigation_state,
        "detectionSource": alert.kind.detection,
        "detectorId": alert.detector_id,
        "category": alert.kind.category,
        "threatFamilyName": alert.kind.threat_family,
        "title": alert.kind.title,
        "description": alert.kind.description,
        "alertCreationTime": format(alert.created),
        "firstEventTime": format(alert.first_activity),
        "lastEventTime": format(alert.last_activity),
        "lastUpdateTime": format(alert.updated),
        "resolvedTime": alert.resolved.map(format),
        "machineId": device.map(|d| d.machine_id.as_str()),
        "computerDnsName": device.map(|d| d.dns_name.as_str()),
        "rbacGroupName": device.map(|d| d.rbac_group),
        "aadTenantId": context.tenant_id,
        "threatName": alert.kind.threat_name,
        "mitreTechniques": alert.kind.mitre,
        "relatedUser": related_user,
        "comments": alert.comments.iter().map(|comment| json!({
            "comment": comment.text,
            "createdBy": comment.by,
            "createdTime": format(comment.at),
        })).collect::<Vec<_>>(),
    });
    if expand {
        // Evidence is recorded shortly after the alert.
        let created = super::time::ceil_to_unit(alert.created + 2_500_000);
        value["evidence"] = Value::Array(
            facts::entities(alert)
                .iter()
                .filter_map(|entity| evidence(entity, created))
                .collect(),
        );
    }
    value
}
