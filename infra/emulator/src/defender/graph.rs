//! Microsoft Graph security API (`samples/graph-security-incidents-page.json`):
//!
//! - `GET /v1.0/security/incidents`: `$top` at most 50 (also the default; more is a 400 with
//!   `code: ""`), `$skip` (above 500 is a 400, on alerts too), `$expand=alerts`,
//!   `$orderby` on `lastUpdateDateTime` or `createdDateTime`, `$count=true`, `$filter` on those
//!   times and `status`, `severity`, `assignedTo`, `classification`, `determination`.
//! - `GET /v1.0/security/alerts_v2`: `$top` clamped at 1,000 (also the default), the same options
//!   without `$expand`, `$filter` also on `incidentId` (a string: `incidentId eq '123'`) and
//!   `serviceSource`. Evidence is always included.
//!
//! Newest last update first. `@odata.nextLink` whenever more records remain: the same options
//! plus an opaque `$skiptoken` (the next offset, bound to the query it came from).

use axum::http::StatusCode;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use super::data::{Rec, Scan, Space, TenantData};
use super::errors::ApiError;
use super::facts::{self, AlertFacts, Artifact, Comment, Entity, EntityKind, camel, graph_enum};
use super::odata::{ApiSpec, FieldKind, FieldSpec, Query, TextField};
use super::time::{TICKS_PER_SECOND, ceil_to_unit, format};
use super::{Api, Context, Page, count, cut, link};

/// The largest explicit `$skip` Graph security accepts (reference §10: above 500 is a 400).
/// Skip tokens of next links are not bound by it.
pub(crate) const MAX_SKIP: u64 = 500;

const COMMON_FIELDS: [FieldSpec; 7] = [
    FieldSpec::new("lastUpdateDateTime", FieldKind::Updated),
    FieldSpec::new("createdDateTime", FieldKind::Created),
    FieldSpec::new("status", FieldKind::Text(TextField::Status)),
    FieldSpec::new("severity", FieldKind::Text(TextField::Severity)),
    FieldSpec::new("assignedTo", FieldKind::Text(TextField::AssignedTo)),
    FieldSpec::new("classification", FieldKind::Text(TextField::Classification)),
    FieldSpec::new("determination", FieldKind::Text(TextField::Determination)),
];

pub(crate) const INCIDENTS_SPEC: ApiSpec = ApiSpec {
    entity: "microsoft.graph.security.incident",
    fields: &COMMON_FIELDS,
    max_top: 50,
    default_top: 50,
    clamp_top: false,
    expand: Some("alerts"),
    extra_options: &["$count", "$skiptoken"],
};

const ALERT_FIELDS: [FieldSpec; 9] = [
    COMMON_FIELDS[0],
    COMMON_FIELDS[1],
    COMMON_FIELDS[2],
    COMMON_FIELDS[3],
    COMMON_FIELDS[4],
    COMMON_FIELDS[5],
    COMMON_FIELDS[6],
    FieldSpec::new("incidentId", FieldKind::IncidentId { string: true }),
    FieldSpec::new("serviceSource", FieldKind::Text(TextField::ServiceSource)),
];

pub(crate) const ALERTS_SPEC: ApiSpec = ApiSpec {
    entity: "microsoft.graph.security.alert",
    fields: &ALERT_FIELDS,
    max_top: 1000,
    default_top: 1000,
    clamp_top: true,
    expand: None,
    extra_options: &["$count", "$skiptoken"],
};

fn bad_request(message: &str) -> ApiError {
    ApiError::new(Api::Graph, StatusCode::BAD_REQUEST, "BadRequest", message)
}

/// A stable digest of the options a skip token is bound to.
fn fingerprint(options: &[(String, String)]) -> u64 {
    let mut relevant: Vec<&(String, String)> = options
        .iter()
        .filter(|(name, _)| name != "$skip" && name != "$skiptoken")
        .collect();
    relevant.sort();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for (name, value) in relevant {
        for byte in name
            .bytes()
            .chain([b'='])
            .chain(value.bytes())
            .chain([b'\n'])
        {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    hash
}

fn skiptoken(offset: u64, options: &[(String, String)]) -> String {
    URL_SAFE_NO_PAD.encode(format!("{offset}:{:016x}", fingerprint(options)))
}

/// Where the page starts: the skip token's offset, or `$skip`.
fn offset(query: &Query) -> Result<u64, ApiError> {
    if let Some(token) = &query.skiptoken {
        let text = URL_SAFE_NO_PAD
            .decode(token.trim())
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .ok_or_else(|| bad_request("The $skiptoken is not valid."))?;
        let (offset, digest) = text
            .split_once(':')
            .ok_or_else(|| bad_request("The $skiptoken is not valid."))?;
        if digest != format!("{:016x}", fingerprint(&query.options)) {
            return Err(bad_request(
                "The $skiptoken does not belong to this query: follow @odata.nextLink as it is.",
            ));
        }
        return offset
            .parse()
            .map_err(|_| bad_request("The $skiptoken is not valid."));
    }
    if query.explicit_skip && query.skip > MAX_SKIP {
        return Err(bad_request(&format!(
            "The query specified in the URI is not valid. The value of $skip ('{}') must not exceed {MAX_SKIP}.",
            query.skip
        )));
    }
    Ok(query.skip)
}

/// Which list a page belongs to: its path and its `@odata.context` fragment.
struct Listing {
    path: &'static str,
    metadata: &'static str,
    /// Never send `@odata.nextLink` (the `omit_alerts_v2_next_link` mode).
    omit_next_link: bool,
}

/// Cuts the page, adds `@odata.nextLink` (and `@odata.count`).
fn envelope(
    listing: Listing,
    scans: (Scan<'_>, Option<Scan<'_>>),
    keep: impl Fn(Rec) -> bool + Copy,
    query: &Query,
    context: &Context<'_>,
    render: impl Fn(Rec) -> Value,
) -> Page {
    let Listing {
        path,
        metadata,
        omit_next_link,
    } = listing;
    let (scan, count_scan) = scans;
    let offset = offset(query)?;
    let total = count_scan.map(|scan| count(scan, keep));
    let top = context
        .settings
        .graph_page_cut
        .map_or(query.top, |page_cut| query.top.min(u64::from(page_cut)));
    let (records, more) = cut(scan, keep, offset, top);
    let mut body = json!({
        "@odata.context": format!("{}/v1.0/$metadata#{metadata}", context.base_url),
    });
    if let Some(total) = total {
        body["@odata.count"] = json!(total);
    }
    if more && !records.is_empty() && !omit_next_link {
        let mut options: Vec<(String, String)> = query
            .options
            .iter()
            .filter(|(name, _)| name != "$skip" && name != "$skiptoken")
            .cloned()
            .collect();
        let next = skiptoken(offset + records.len() as u64, &query.options);
        options.push(("$skiptoken".to_owned(), next));
        body["@odata.nextLink"] = json!(link(context.base_url, path, &options));
    }
    body["value"] = Value::Array(records.into_iter().map(render).collect());
    Ok(body)
}

pub(crate) fn incidents_page(data: &TenantData, query: &Query, context: &Context<'_>) -> Page {
    if query.expand
        && data
            .config
            .expand_alerts_fails_above
            .is_some_and(|limit| data.incident_count() > limit)
    {
        tracing::info!(tenant = %data.tenant_id, "expand_alerts_fails_above: answering 500");
        return Err(ApiError::internal(Api::Graph));
    }
    let keep = |record: Rec| match record {
        Rec::Incident(index) => {
            query.matches_text(|field| facts::incident_text(data, index, field, true))
        }
        _ => false,
    };
    let metadata = if query.expand {
        "security/incidents(alerts())"
    } else {
        "security/incidents"
    };
    envelope(
        Listing {
            path: "/v1.0/security/incidents",
            metadata,
            omit_next_link: false,
        },
        (
            data.scan(Space::Incidents, query.window, query.order),
            query
                .count
                .then(|| data.scan(Space::Incidents, query.window, query.order)),
        ),
        keep,
        query,
        context,
        |record| match record {
            Rec::Incident(index) => incident(data, index, context, query.expand),
            _ => Value::Null,
        },
    )
}

pub(crate) fn alerts_page(data: &TenantData, query: &Query, context: &Context<'_>) -> Page {
    let scan = || match query.incident_id {
        None => data.scan_spaces(
            &[Space::Mde, Space::Extra, Space::Graph],
            query.window,
            query.order,
        ),
        Some(id) => {
            let alerts = id
                .and_then(|id| data.incident_index(id))
                .map(|index| data.alerts_of(index))
                .unwrap_or_default();
            data.scan_records(alerts, query.window, query.order)
        }
    };
    let keep = |record: Rec| {
        query.texts.is_empty()
            || query
                .matches_text(|field| facts::alert_text(&facts::alert(data, record), field, true))
    };
    envelope(
        Listing {
            path: "/v1.0/security/alerts_v2",
            metadata: "security/alerts_v2",
            omit_next_link: data.config.omit_alerts_v2_next_link,
        },
        (scan(), query.count.then(scan)),
        keep,
        query,
        context,
        |record| alert(data, &facts::alert(data, record), context),
    )
}

pub(crate) fn comments(comments: &[Comment]) -> Vec<Value> {
    comments
        .iter()
        .map(|comment| {
            json!({
                "comment": comment.text,
                "createdByDisplayName": comment.by_display,
                "createdDateTime": format(comment.at),
            })
        })
        .collect()
}

pub(crate) fn incident(
    data: &TenantData,
    index: u32,
    context: &Context<'_>,
    expand: bool,
) -> Value {
    let facts = facts::incident(data, index);
    let last_modified_by = match (&facts.last_modified_by, &facts.assigned_to) {
        (Some(by), _) => by.clone(),
        (None, Some((upn, _))) if facts.status != "Active" => format!("User-{upn}"),
        _ => format!("API-App:soc-automation@{}", data.domain),
    };
    let mut value = json!({
        "id": facts.id.to_string(),
        "tenantId": context.tenant_id,
        "status": graph_enum(facts.status),
        "incidentWebUrl": format!(
            "https://security.microsoft.com/incident2/{}/overview?tid={}",
            facts.id, context.tenant_id
        ),
        "redirectIncidentId": facts.redirect_to.map(|id| id.to_string()),
        "displayName": facts.name,
        "createdDateTime": format(facts.created),
        "lastUpdateDateTime": format(facts.updated),
        "assignedTo": facts.assigned_to.as_ref().map(|(upn, _)| upn),
        "classification": graph_enum(facts.classification),
        "determination": graph_enum(facts.determination),
        "severity": graph_enum(facts.severity),
        "customTags": facts.tags,
        "systemTags": [],
        "description": facts.description,
        "lastModifiedBy": last_modified_by,
        "resolvingComment": facts.resolving_comment,
        "summary": null,
        "priorityScore": facts.priority_score,
        "comments": comments(&facts.comments),
    });
    if expand {
        value["alerts"] = Value::Array(
            facts
                .alerts
                .iter()
                .map(|record| alert(data, &facts::alert(data, *record), context))
                .collect(),
        );
    }
    value
}

fn user_account(alert: &AlertFacts, domain: Option<&str>) -> Value {
    let user = &alert.user;
    json!({
        "accountName": user.account,
        "domainName": domain,
        "userSid": user.sid,
        "azureAdUserId": user.aad_id,
        "userPrincipalName": user.upn,
        "displayName": user.display,
        "activeDirectoryObjectGuid": null,
        "resourceAccessEvents": [],
    })
}

fn file_details(entity: &Entity, size: u64) -> Value {
    json!({
        "sha1": entity.get("sha1"),
        "sha256": entity.get("sha256"),
        "md5": null,
        "sha256Ac": null,
        "fileName": entity.get("fileName"),
        "filePath": entity.get("filePath"),
        "fileSize": size,
        "filePublisher": null,
        "signer": null,
        "issuer": null,
    })
}

fn evidence(alert: &AlertFacts, domain: &str) -> Vec<Value> {
    let created = format(ceil_to_unit(alert.created + TICKS_PER_SECOND / 8));
    let resolved = alert.status == "Resolved";
    let base = |kind: &str, verdict: &str, roles: &[&str]| {
        json!({
            "@odata.type": format!("#microsoft.graph.security.{kind}"),
            "createdDateTime": created,
            "verdict": verdict,
            "remediationStatus": if resolved { "remediated" } else { "none" },
            "remediationStatusDetails": null,
            "roles": roles,
            "detailedRoles": [],
            "tags": [],
        })
    };
    let machine = alert.device.as_ref().map(|d| d.machine_id.clone());
    let mut list = Vec::new();
    if let Some(device) = &alert.device {
        let mut value = base("deviceEvidence", "suspicious", &["compromised"]);
        value["detailedRoles"] = json!(["PrimaryDevice"]);
        value["tags"] = json!([device.tag]);
        for (key, field) in [
            ("firstSeenDateTime", json!(format(device.first_seen))),
            ("mdeDeviceId", json!(device.machine_id)),
            ("azureAdDeviceId", json!(device.aad_device_id)),
            ("deviceDnsName", json!(device.dns_name)),
            ("hostName", json!(device.host)),
            ("ntDomain", json!("CORP")),
            ("dnsDomain", json!(format!("corp.{domain}"))),
            ("osPlatform", json!(device.os_platform)),
            ("osBuild", json!(device.os_build)),
            ("version", json!(device.version)),
            ("healthStatus", json!("active")),
            ("riskScore", json!(graph_enum(alert.severity))),
            ("rbacGroupId", json!(device.rbac_group_id)),
            ("rbacGroupName", json!(device.rbac_group)),
            ("onboardingStatus", json!("onboarded")),
            ("defenderAvStatus", json!("updated")),
            ("lastIpAddress", json!(device.ip)),
            ("lastExternalIpAddress", json!("192.0.2.14")),
            ("ipInterfaces", json!([device.ip, "127.0.0.1", "::1"])),
            ("vmMetadata", Value::Null),
            (
                "loggedOnUsers",
                json!([{ "accountName": alert.user.account, "domainName": "CORP" }]),
            ),
            ("resourceAccessEvents", json!([])),
        ] {
            value[key] = field;
        }
        list.push(value);
    }
    for entity in facts::entities(alert) {
        let value = match entity.kind {
            EntityKind::User => {
                let mut value = base("userEvidence", "suspicious", &["compromised"]);
                value["stream"] = Value::Null;
                value["userAccount"] = user_account(alert, Some("CORP"));
                value
            }
            EntityKind::Process => {
                let mut value = base("processEvidence", "malicious", &[]);
                value["processId"] = entity.get("processId");
                value["parentProcessId"] = entity.get("parentProcessId");
                value["processCommandLine"] = entity.get("processCommandLine");
                value["processCreationDateTime"] = entity.get("processCreationTime");
                value["parentProcessCreationDateTime"] = entity.get("parentProcessCreationTime");
                value["detectionStatus"] = json!("detected");
                value["mdeDeviceId"] = json!(machine);
                value["imageFile"] = file_details(&entity, 71_680);
                value["parentProcessImageFile"] = json!({
                    "sha1": null, "sha256": null, "md5": null, "sha256Ac": null,
                    "fileName": entity.get("parentProcessFileName"),
                    "filePath": entity.get("parentProcessFilePath"),
                    "fileSize": 323_584, "filePublisher": "Microsoft Corporation",
                    "signer": null, "issuer": null,
                });
                value["userAccount"] = user_account(alert, Some("CORP"));
                value
            }
            EntityKind::File => {
                let mut value = base("fileEvidence", "malicious", &["created"]);
                value["detectionStatus"] = json!(camel(
                    entity.get("detectionStatus").as_str().unwrap_or("Detected")
                ));
                value["mdeDeviceId"] = json!(machine);
                value["fileDetails"] = file_details(&entity, 48_123_904);
                value
            }
            EntityKind::Ip => {
                let mut value = base("ipEvidence", "suspicious", &["destination"]);
                value["ipAddress"] = entity.get("ipAddress");
                value["countryLetterCode"] = json!("NL");
                value["stream"] = Value::Null;
                value["location"] = Value::Null;
                value
            }
            EntityKind::Url => {
                let mut value = base("urlEvidence", "suspicious", &["contextual"]);
                value["url"] = entity.get("url");
                value
            }
            EntityKind::MailBox => {
                let mut value = base("mailboxEvidence", "suspicious", &["destination"]);
                value["displayName"] = json!(alert.user.display);
                value["primaryAddress"] = json!(alert.user.upn);
                value["upn"] = json!(alert.user.upn);
                value["userAccount"] = user_account(alert, None);
                value
            }
            EntityKind::MailMessage => {
                let mut value = base("analyzedMessageEvidence", "malicious", &["contextual"]);
                let Artifact::Mail { url, .. } = alert.kind.artifact else {
                    continue;
                };
                for (key, field) in [
                    ("antiSpamDirection", json!("inbound")),
                    ("attachmentsCount", json!(0)),
                    ("deliveryAction", json!("delivered")),
                    ("deliveryLocation", json!("inbox")),
                    ("language", json!("en")),
                    ("recipientEmailAddress", json!(alert.user.upn)),
                    ("senderIp", json!(alert.ip)),
                    ("subject", entity.get("subject")),
                    (
                        "p2Sender",
                        json!({
                            "displayName": null,
                            "domainName": entity.get("sender").as_str().and_then(|s| s.split('@').nth(1)),
                            "emailAddress": entity.get("sender"),
                        }),
                    ),
                    ("threats", json!(["Phish"])),
                    ("urlCount", json!(1)),
                    ("urls", json!([url])),
                ] {
                    value[key] = field;
                }
                value
            }
        };
        list.push(value);
    }
    list
}

pub(crate) fn alert(data: &TenantData, alert: &AlertFacts, context: &Context<'_>) -> Value {
    let tenant = context.tenant_id;
    let incident_url = alert
        .incident_id
        .map(|id| format!("https://security.microsoft.com/incident2/{id}/overview?tid={tenant}"));
    // Evolvable enum members after `unknownFutureValue` need the Prefer header.
    let hidden = alert.kind.service.evolvable() && !context.unknown_enum_members;
    let (service_source, detection_source) = if hidden {
        ("unknownFutureValue", "unknownFutureValue")
    } else {
        (alert.kind.service.graph(), alert.kind.graph_detection)
    };
    json!({
        "id": alert.graph_id,
        "providerAlertId": alert.provider_id,
        "incidentId": alert.incident_id.map(|id| id.to_string()),
        "status": camel(alert.status),
        "severity": graph_enum(alert.severity),
        "classification": alert.classification.map(graph_enum),
        "determination": alert.determination.map(graph_enum),
        "serviceSource": service_source,
        "detectionSource": detection_source,
        "productName": alert.kind.service.product(),
        "detectorId": alert.detector_id,
        "tenantId": tenant,
        "title": alert.kind.title,
        "description": alert.kind.description,
        "recommendedActions": alert.kind.recommended_actions,
        "category": alert.kind.category,
        "categories": [alert.kind.category],
        "assignedTo": alert.assigned_to.as_ref().map(|(upn, _)| upn),
        "alertWebUrl": format!("https://security.microsoft.com/alerts/{}?tid={tenant}", alert.graph_id),
        "incidentWebUrl": incident_url,
        "actorDisplayName": null,
        "threatDisplayName": alert.kind.threat_name,
        "threatFamilyName": alert.kind.threat_family,
        "mitreTechniques": alert.kind.mitre,
        "createdDateTime": format(alert.created),
        "lastUpdateDateTime": format(alert.updated),
        "resolvedDateTime": alert.resolved.map(format),
        "firstActivityDateTime": format(alert.first_activity),
        "lastActivityDateTime": format(alert.last_activity),
        "systemTags": [],
        "alertPolicyId": null,
        "investigationState": camel(alert.investigation_state),
        "comments": comments(&alert.comments),
        "customDetails": alert.custom_details.clone().unwrap_or_default(),
        "evidence": evidence(alert, &data.domain),
        "additionalData": {},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skip_tokens_are_bound_to_their_query() {
        let options = vec![
            ("$top".to_owned(), "5".to_owned()),
            ("$filter".to_owned(), "status eq 'active'".to_owned()),
        ];
        let token = skiptoken(10, &options);
        let mut query = super::super::odata::parse(
            &INCIDENTS_SPEC,
            Some(&format!(
                "$filter=status eq 'active'&$top=5&$skiptoken={token}"
            )),
        )
        .unwrap();
        assert_eq!(offset(&query).unwrap(), 10);
        query.options[0].1 = "status eq 'resolved'".into();
        assert!(offset(&query).is_err());
    }

    #[test]
    fn explicit_skip_is_capped_at_500() {
        for spec in [&INCIDENTS_SPEC, &ALERTS_SPEC] {
            let query = super::super::odata::parse(spec, Some("$top=50&$skip=501")).unwrap();
            assert!(offset(&query).is_err());
            let query = super::super::odata::parse(spec, Some("$top=50&$skip=500")).unwrap();
            assert_eq!(offset(&query).unwrap(), 500);
        }
    }

    #[test]
    fn alerts_top_is_clamped_at_1000() {
        let query = super::super::odata::parse(&ALERTS_SPEC, Some("$top=5000")).unwrap();
        assert_eq!(query.top, 1000);
        let query = super::super::odata::parse(&ALERTS_SPEC, None).unwrap();
        assert_eq!(query.top, 1000);
        assert!(super::super::odata::parse(&INCIDENTS_SPEC, Some("$top=51")).is_err());
    }
}
