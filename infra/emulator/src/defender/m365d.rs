//! M365 Defender: `GET /api/incidents` (`samples/m365d-incidents-page.json`).
//!
//! `$top` at most 100 (also the default), `$skip`, `$filter` on `lastUpdateTime`, `createdTime`,
//! `status`, `severity`, `assignedTo`, `classification`, `determination`; `$orderby` on the two
//! times is accepted too. Newest last update first. Every incident carries its `alerts`.
//! `@odata.nextLink` only with the `m365d_next_link` setting: clients page with `$skip`.

use serde_json::{Map, Value, json};

use super::data::{Rec, Space, TenantData};
use super::facts::{self, AlertFacts, Entity};
use super::odata::{ApiSpec, FieldKind, FieldSpec, Query, TextField};
use super::time::format;
use super::{Context, Page, cut, link};

pub(crate) const SPEC: ApiSpec = ApiSpec {
    entity: "microsoft.windowsDefenderATP.api.Incident",
    fields: &[
        FieldSpec::new("lastUpdateTime", FieldKind::Updated),
        FieldSpec::new("createdTime", FieldKind::Created),
        FieldSpec::new("status", FieldKind::Text(TextField::Status)),
        FieldSpec::new("severity", FieldKind::Text(TextField::Severity)),
        FieldSpec::new("assignedTo", FieldKind::Text(TextField::AssignedTo)),
        FieldSpec::new("classification", FieldKind::Text(TextField::Classification)),
        FieldSpec::new("determination", FieldKind::Text(TextField::Determination)),
    ],
    max_top: 100,
    default_top: 100,
    clamp_top: false,
    expand: None,
    extra_options: &[],
};

/// Every key of an M365 Defender alert entity; those that do not apply are null.
const ENTITY_KEYS: [&str; 30] = [
    "sha1",
    "sha256",
    "fileName",
    "filePath",
    "processId",
    "processCommandLine",
    "processCreationTime",
    "parentProcessId",
    "parentProcessCreationTime",
    "ipAddress",
    "url",
    "accountName",
    "domainName",
    "userSid",
    "aadUserId",
    "userPrincipalName",
    "mailboxDisplayName",
    "mailboxAddress",
    "clusterBy",
    "sender",
    "recipient",
    "subject",
    "deliveryAction",
    "securityGroupId",
    "securityGroupName",
    "registryHive",
    "registryKey",
    "registryValueType",
    "registryValue",
    "deviceId",
];

pub(crate) fn page(data: &TenantData, query: &Query, context: &Context<'_>) -> Page {
    let keep = |record: Rec| match record {
        Rec::Incident(index) => {
            query.matches_text(|field| facts::incident_text(data, index, field, false))
        }
        _ => false,
    };
    let scan = data.scan(Space::Incidents, query.window, query.order);
    let (records, more) = cut(scan, keep, query.skip, query.top);
    let value: Vec<Value> = records
        .iter()
        .filter_map(|record| match record {
            Rec::Incident(index) => Some(incident(data, *index, context)),
            _ => None,
        })
        .collect();
    let mut body = json!({
        "@odata.context": format!("{}/api/$metadata#Incidents", context.base_url),
        "value": value,
    });
    if more && context.settings.m365d_next_link {
        let mut options: Vec<(String, String)> = query
            .options
            .iter()
            .filter(|(name, _)| name != "$skip")
            .cloned()
            .collect();
        options.push((
            "$skip".to_owned(),
            (query.skip + records.len() as u64).to_string(),
        ));
        body["@odata.nextLink"] = json!(link(context.base_url, "/api/incidents", &options));
    }
    Ok(body)
}

fn incident(data: &TenantData, index: u32, context: &Context<'_>) -> Value {
    let facts = facts::incident(data, index);
    let comments: Vec<Value> = facts
        .comments
        .iter()
        .map(|comment| {
            json!({
                "comment": comment.text,
                "createdBy": comment.by,
                "createdTime": format(comment.at),
            })
        })
        .collect();
    let alerts: Vec<Value> = facts
        .alerts
        .iter()
        .map(|alert| self::alert(&facts::alert(data, *alert)))
        .collect();
    json!({
        "incidentId": facts.id,
        "incidentUri": format!(
            "https://security.microsoft.com/incidents/{}?tid={}",
            facts.id, context.tenant_id
        ),
        "redirectIncidentId": facts.redirect_to,
        "incidentName": facts.name,
        "createdTime": format(facts.created),
        "lastUpdateTime": format(facts.updated),
        "assignedTo": facts.assigned_to.as_ref().map(|(upn, _)| upn),
        "classification": facts.classification,
        "determination": facts.determination,
        "detectionSource": null,
        "status": facts.status,
        "severity": facts.severity,
        "tags": facts.tags,
        "comments": comments,
        "alerts": alerts,
    })
}

fn entity(entity: &Entity, device_id: Option<&str>) -> Value {
    let mut object = Map::new();
    object.insert("entityType".into(), json!(entity.kind.name()));
    for key in ENTITY_KEYS {
        object.insert(key.into(), entity.get(key));
    }
    object.insert("deviceId".into(), json!(device_id));
    Value::Object(object)
}

fn alert(alert: &AlertFacts) -> Value {
    let device_id = alert.device.as_ref().map(|d| d.machine_id.as_str());
    let devices: Vec<Value> = alert
        .device
        .iter()
        .map(|device| {
            json!({
                "mdatpDeviceId": device.machine_id,
                "aadDeviceId": device.aad_device_id,
                "deviceDnsName": device.dns_name,
                "osPlatform": device.os_platform,
                "version": device.version,
                "osProcessor": "x64",
                "osBuild": device.os_build,
                "healthStatus": "Active",
                "riskScore": alert.severity,
                "rbacGroupName": device.rbac_group,
                "rbacGroupId": device.rbac_group_id,
                "firstSeen": format(device.first_seen),
                "tags": [],
                "defenderAvStatus": "Updated",
                "onboardingStatus": "Onboarded",
                "vmMetadata": null,
            })
        })
        .collect();
    let entities: Vec<Value> = facts::entities(alert)
        .iter()
        .map(|e| entity(e, device_id))
        .collect();
    json!({
        "alertId": alert.id,
        "providerAlertId": alert.provider_id,
        "incidentId": alert.incident_id,
        "serviceSource": alert.kind.service.m365d(),
        "creationTime": format(alert.created),
        "lastUpdatedTime": format(alert.updated),
        "resolvedTime": alert.resolved.map(format),
        "firstActivity": format(alert.first_activity),
        "lastActivity": format(alert.last_activity),
        "title": alert.kind.title,
        "description": alert.kind.description,
        "category": alert.kind.category,
        "status": alert.status,
        "severity": alert.severity,
        "investigationId": alert.investigation_id,
        "investigationState": alert.investigation_state,
        "classification": alert.classification,
        "determination": alert.determination,
        "detectionSource": alert.kind.detection,
        "detectorId": alert.detector_id,
        "assignedTo": alert.assigned_to.as_ref().map(|(upn, _)| upn),
        "actorName": null,
        "threatFamilyName": alert.kind.threat_family,
        "mitreTechniques": alert.kind.mitre,
        "devices": devices,
        "entities": entities,
    })
}
