//! An update request as a caller sends it (direct invocation, the HTTP route's body, an
//! `IncidentUpdateRequested` event's detail), and its validated form. Everything is checked
//! before Microsoft is called, so a refusal costs no call and names the field at fault.

use secrecy::SecretString;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

use super::error::UpdateError;
use super::vocabulary::{CLASSIFICATION, TargetKind};
use crate::tenant_id::TenantId;

/// Longest free text we pass on (assignee, a tag). Defender's own limits are undocumented; these
/// are well above what its portal lets a person type and keep a request from carrying a payload.
const MAX_TEXT: usize = 256;
const MAX_COMMENT: usize = 10_000;
const MAX_TAG_EDITS: usize = 50;
const MAX_KEY: usize = 128;

/// What a caller sends. Unknown fields are refused so that a typo (`"assignTo"`) fails loudly.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateRequestBody {
    pub tenant: Option<String>,
    pub incident_id: Option<String>,
    pub alert_id: Option<String>,
    /// A name or UPN to assign; `null` unassigns; absent leaves the assignment alone.
    #[serde(default, deserialize_with = "present")]
    pub assigned_to: Option<Option<String>>,
    pub status: Option<String>,
    pub classification: Option<String>,
    pub determination: Option<String>,
    #[serde(default)]
    pub add_tags: Vec<String>,
    #[serde(default)]
    pub remove_tags: Vec<String>,
    /// Alerts only: Graph's `customDetails` object, passed as given.
    pub custom_details: Option<Map<String, Value>>,
    pub comment: Option<String>,
    /// Act as this user (their access token for our app): the change is made on their behalf.
    pub user_token: Option<SecretString>,
    /// Act as this user from their stored sign-in.
    pub user_oid: Option<String>,
    /// A caller's key for this change: a retry with the same key gets the first answer.
    pub idempotency_key: Option<String>,
}

/// `Some(None)` for an explicit `null`, `None` for an absent field.
fn present<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(deserializer).map(Some)
}

impl UpdateRequest {
    /// What an idempotency key stands for: the same key with other content is another request.
    /// The analyst's token is left out (a retry may carry a fresh one); its presence is not.
    pub fn fingerprint(&self) -> String {
        let actor = match &self.actor {
            Actor::App => "app".to_owned(),
            Actor::UserToken(_) => "user-token".to_owned(),
            Actor::UserOid(oid) => format!("user-oid:{}", oid.to_ascii_lowercase()),
        };
        let content = serde_json::json!({
            "tenant": self.tenant.to_string(),
            "target": self.target,
            "change": self.change,
            "comment": self.comment,
            "actor": actor,
        });
        let digest =
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, content.to_string().as_bytes());
        digest
            .as_ref()
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect()
    }

    /// The names of the fields this request changes, as a caller wrote them.
    pub fn applied_fields(&self) -> Vec<String> {
        let change = &self.change;
        [
            ("assigned_to", change.assigned_to.is_some()),
            ("status", change.status.is_some()),
            ("classification", change.classification.is_some()),
            ("determination", change.determination.is_some()),
            ("tags", !change.tags.is_empty()),
            ("custom_details", change.custom_details.is_some()),
            ("comment", self.comment.is_some()),
        ]
        .into_iter()
        .filter(|(_, changed)| *changed)
        .map(|(name, _)| name.to_owned())
        .collect()
    }
}

/// An incident or an alert, by its Graph id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Target {
    pub kind: TargetKind,
    pub id: String,
}

impl Target {
    /// Graph path under the API base (`https://graph.microsoft.com`): `v1.0/security/incidents/{id}`.
    pub fn path(&self) -> String {
        format!("v1.0/security/{}/{}", self.kind.collection(), self.id)
    }
}

/// Who the change is made as.
#[derive(Debug, Clone)]
pub enum Actor {
    App,
    UserToken(SecretString),
    UserOid(String),
}

impl Actor {
    pub fn is_user(&self) -> bool {
        !matches!(self, Actor::App)
    }
}

/// The custom tags to add and remove (Graph's PATCH replaces the whole list: see `tags`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TagEdit {
    pub add: Vec<String>,
    pub remove: Vec<String>,
}

impl TagEdit {
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.remove.is_empty()
    }
}

/// The fields to change, already in the spelling sent to Graph.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Change {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub assigned_to: Option<Option<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub classification: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub determination: Option<&'static str>,
    #[serde(skip_serializing_if = "TagEdit::is_empty")]
    pub tags: TagEdit,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub custom_details: Option<Map<String, Value>>,
}

impl Change {
    pub fn is_empty(&self) -> bool {
        self.assigned_to.is_none()
            && self.status.is_none()
            && self.classification.is_none()
            && self.determination.is_none()
            && self.tags.is_empty()
            && self.custom_details.is_none()
    }

    /// The PATCH body for every field but the tags (which need the current list first).
    pub fn patch_body(&self) -> Map<String, Value> {
        let mut body = Map::new();
        if let Some(assignee) = &self.assigned_to {
            body.insert(
                "assignedTo".into(),
                assignee.clone().map(Value::String).unwrap_or(Value::Null),
            );
        }
        for (name, value) in [
            ("status", self.status),
            ("classification", self.classification),
            ("determination", self.determination),
        ] {
            if let Some(value) = value {
                body.insert(name.into(), Value::String(value.into()));
            }
        }
        if let Some(details) = &self.custom_details {
            body.insert("customDetails".into(), Value::Object(details.clone()));
        }
        body
    }
}

/// A request that passed every check.
#[derive(Debug, Clone)]
pub struct UpdateRequest {
    pub tenant: TenantId,
    pub target: Target,
    pub change: Change,
    pub comment: Option<String>,
    pub actor: Actor,
    pub idempotency_key: Option<String>,
}

impl UpdateRequest {
    /// Parses and validates a raw JSON payload.
    pub fn from_json(payload: Value) -> Result<UpdateRequest, UpdateError> {
        let body: UpdateRequestBody = serde_json::from_value(payload).map_err(|error| {
            UpdateError::InvalidRequest(format!(
                "{error}; expected {{\"tenant\", \"incident_id\" or \"alert_id\", and the fields to change}}"
            ))
        })?;
        UpdateRequest::validate(body)
    }

    pub fn validate(body: UpdateRequestBody) -> Result<UpdateRequest, UpdateError> {
        let tenant_text = body
            .tenant
            .as_deref()
            .ok_or_else(|| UpdateError::InvalidRequest("\"tenant\" is required".into()))?;
        let tenant = TenantId::parse(tenant_text)?;
        let target = match (body.incident_id, body.alert_id) {
            (Some(id), None) => Target {
                kind: TargetKind::Incident,
                id: graph_id(&id)?,
            },
            (None, Some(id)) => Target {
                kind: TargetKind::Alert,
                id: graph_id(&id)?,
            },
            _ => {
                return Err(UpdateError::InvalidRequest(
                    "exactly one of \"incident_id\" and \"alert_id\" is required".into(),
                ));
            }
        };
        let kind = target.kind;
        let status = body
            .status
            .map(|given| {
                kind.status_vocabulary().canonical(&given).ok_or_else(|| {
                    UpdateError::StatusInvalid {
                        given: clip(&given),
                        kind: kind.as_str(),
                        accepted: kind.status_vocabulary().listed(),
                    }
                })
            })
            .transpose()?;
        let classification = body
            .classification
            .map(|given| {
                CLASSIFICATION
                    .canonical(&given)
                    .ok_or_else(|| UpdateError::ClassificationInvalid {
                        given: clip(&given),
                        accepted: CLASSIFICATION.listed(),
                    })
            })
            .transpose()?;
        let determination = body
            .determination
            .map(|given| {
                kind.determination(&given)
                    .ok_or_else(|| UpdateError::DeterminationInvalid {
                        given: clip(&given),
                        kind: kind.as_str(),
                    })
            })
            .transpose()?;
        let assigned_to = body
            .assigned_to
            .map(|assignee| {
                assignee
                    .map(|name| free_text("assigned_to", &name))
                    .transpose()
            })
            .transpose()?;
        if body.add_tags.len() > MAX_TAG_EDITS || body.remove_tags.len() > MAX_TAG_EDITS {
            return Err(UpdateError::InvalidRequest(format!(
                "at most {MAX_TAG_EDITS} tags may be added or removed in one request"
            )));
        }
        let tags = TagEdit {
            add: tag_list("add_tags", &body.add_tags)?,
            remove: tag_list("remove_tags", &body.remove_tags)?,
        };
        if let Some(both) = tags.add.iter().find(|tag| tags.remove.contains(tag)) {
            return Err(UpdateError::InvalidRequest(format!(
                "tag {both:?} is both added and removed"
            )));
        }
        if body.custom_details.is_some() && kind == TargetKind::Incident {
            return Err(UpdateError::InvalidRequest(
                "\"custom_details\" applies to alerts only".into(),
            ));
        }
        let comment = body.comment.map(|text| comment_text(&text)).transpose()?;
        let actor = match (body.user_token, body.user_oid) {
            (None, None) => Actor::App,
            (Some(token), None) => Actor::UserToken(token),
            (None, Some(oid)) => Actor::UserOid(free_text("user_oid", &oid)?),
            (Some(_), Some(_)) => {
                return Err(UpdateError::InvalidRequest(
                    "give \"user_token\" or \"user_oid\", not both".into(),
                ));
            }
        };
        let idempotency_key = body
            .idempotency_key
            .map(|key| idempotency_key(&key))
            .transpose()?;
        let change = Change {
            assigned_to,
            status,
            classification,
            determination,
            tags,
            custom_details: body.custom_details,
        };
        if change.is_empty() && comment.is_none() {
            return Err(UpdateError::InvalidRequest(
                "nothing to change: give at least one of assigned_to, status, classification, determination, add_tags, remove_tags, custom_details, comment".into(),
            ));
        }
        Ok(UpdateRequest {
            tenant,
            target,
            change,
            comment,
            actor,
            idempotency_key,
        })
    }
}

/// A Graph id goes into a URL path: only the characters Graph's ids use, so that no id can
/// reach another route (`../`, `?`, `#`, `%2F`).
fn graph_id(id: &str) -> Result<String, UpdateError> {
    let valid = !id.is_empty()
        && id.len() <= MAX_KEY
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !id.starts_with('.');
    if valid {
        Ok(id.to_owned())
    } else {
        Err(UpdateError::InvalidRequest(format!(
            "{:?} is not a Graph incident or alert id (letters, digits, '-', '_', '.')",
            clip(id)
        )))
    }
}

fn free_text(field: &str, text: &str) -> Result<String, UpdateError> {
    let text = text.trim();
    if text.is_empty() || text.chars().count() > MAX_TEXT || text.chars().any(char::is_control) {
        return Err(UpdateError::InvalidRequest(format!(
            "\"{field}\" must be 1 to {MAX_TEXT} characters without control characters"
        )));
    }
    Ok(text.to_owned())
}

fn tag_list(field: &str, tags: &[String]) -> Result<Vec<String>, UpdateError> {
    let mut out: Vec<String> = Vec::with_capacity(tags.len());
    for tag in tags {
        let tag = free_text(field, tag)?;
        if !out.contains(&tag) {
            out.push(tag);
        }
    }
    Ok(out)
}

fn comment_text(text: &str) -> Result<String, UpdateError> {
    let trimmed = text.trim();
    let allowed = |c: char| !c.is_control() || matches!(c, '\n' | '\r' | '\t');
    if trimmed.is_empty() || trimmed.chars().count() > MAX_COMMENT || !trimmed.chars().all(allowed)
    {
        return Err(UpdateError::InvalidRequest(format!(
            "\"comment\" must be 1 to {MAX_COMMENT} characters"
        )));
    }
    Ok(trimmed.to_owned())
}

fn idempotency_key(key: &str) -> Result<String, UpdateError> {
    let valid =
        !key.is_empty() && key.len() <= MAX_KEY && key.chars().all(|c| c.is_ascii_graphic());
    if valid {
        Ok(key.to_owned())
    } else {
        Err(UpdateError::InvalidRequest(format!(
            "\"idempotency_key\" must be 1 to {MAX_KEY} printable ASCII characters"
        )))
    }
}

/// A caller's bad value, shortened for an error message.
fn clip(text: &str) -> String {
    text.chars().filter(|c| !c.is_control()).take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CallerError;
    use serde_json::json;

    const TENANT: &str = "11111111-2222-3333-4444-555555555555";

    fn parse(value: Value) -> Result<UpdateRequest, UpdateError> {
        UpdateRequest::from_json(value)
    }

    #[test]
    fn a_full_incident_update_is_read_into_graph_spellings() {
        let request = parse(json!({
            "tenant": TENANT, "incident_id": "2972395",
            "assigned_to": "analyst@partner.example", "status": "Resolved",
            "classification": "truepositive", "determination": "compromisedUser",
            "add_tags": ["mssp", "mssp"], "remove_tags": ["triage"],
            "comment": "  closed by the SOC  ", "idempotency_key": "ticket-42"
        }))
        .unwrap();
        assert_eq!(request.target.path(), "v1.0/security/incidents/2972395");
        assert_eq!(
            Value::Object(request.change.patch_body()),
            json!({"assignedTo": "analyst@partner.example", "status": "resolved",
                   "classification": "truePositive", "determination": "compromisedAccount"})
        );
        assert_eq!(request.change.tags.add, vec!["mssp"]);
        assert_eq!(request.comment.as_deref(), Some("closed by the SOC"));
        assert!(matches!(request.actor, Actor::App));
        assert_eq!(request.idempotency_key.as_deref(), Some("ticket-42"));
    }

    #[test]
    fn null_unassigns_and_absent_leaves_alone() {
        let unassign =
            parse(json!({"tenant": TENANT, "incident_id": "1", "assigned_to": null})).unwrap();
        assert_eq!(unassign.change.assigned_to, Some(None));
        assert_eq!(
            Value::Object(unassign.change.patch_body()),
            json!({"assignedTo": null})
        );
        let status =
            parse(json!({"tenant": TENANT, "incident_id": "1", "status": "active"})).unwrap();
        assert_eq!(status.change.assigned_to, None);
    }

    #[test]
    fn each_bad_value_is_refused_with_its_own_code() {
        let codes = [
            (
                json!({"tenant": TENANT, "incident_id": "1", "status": "inProgress"}),
                "status_invalid",
            ),
            (
                json!({"tenant": TENANT, "alert_id": "da1", "status": "redirected"}),
                "status_invalid",
            ),
            (
                json!({"tenant": TENANT, "incident_id": "1", "classification": "bad"}),
                "classification_invalid",
            ),
            (
                json!({"tenant": TENANT, "incident_id": "1", "determination": "clean"}),
                "determination_invalid",
            ),
            (
                json!({"tenant": TENANT, "incident_id": "1"}),
                "invalid_request",
            ),
            (
                json!({"tenant": TENANT, "incident_id": "1", "alert_id": "2", "status": "active"}),
                "invalid_request",
            ),
            (
                json!({"tenant": TENANT, "incident_id": "../users", "status": "active"}),
                "invalid_request",
            ),
            (
                json!({"tenant": TENANT, "incident_id": "1%2F..", "status": "active"}),
                "invalid_request",
            ),
            (
                json!({"tenant": TENANT, "incident_id": "1", "assignTo": "x"}),
                "invalid_request",
            ),
            (
                json!({"tenant": TENANT, "incident_id": "1", "custom_details": {}}),
                "invalid_request",
            ),
            (
                json!({"tenant": TENANT, "incident_id": "1", "add_tags": ["a"], "remove_tags": ["a"]}),
                "invalid_request",
            ),
            (
                json!({"tenant": TENANT, "incident_id": "1", "comment": "  "}),
                "invalid_request",
            ),
            (
                json!({"tenant": TENANT, "incident_id": "1", "add_tags": ["bad\u{0}tag"]}),
                "invalid_request",
            ),
            (
                json!({"tenant": TENANT, "incident_id": "1", "status": "active", "user_token": "a", "user_oid": "b"}),
                "invalid_request",
            ),
            (
                json!({"tenant": "not a tenant", "incident_id": "1", "status": "active"}),
                "invalid_tenant_id",
            ),
        ];
        for (payload, code) in codes {
            let error = parse(payload.clone()).unwrap_err();
            assert_eq!(error.code().as_str(), code, "{payload}: {error}");
        }
    }

    #[test]
    fn alerts_take_their_own_statuses_determinations_and_custom_details() {
        let request = parse(json!({
            "tenant": TENANT, "alert_id": "da637551227677560813_-961444813",
            "status": "inprogress", "determination": "insufficientData",
            "custom_details": {"ticket": "42"}, "user_oid": "oid-1"
        }))
        .unwrap();
        assert_eq!(request.target.kind, TargetKind::Alert);
        assert_eq!(
            Value::Object(request.change.patch_body()),
            json!({"status": "inProgress", "determination": "insufficientData",
                   "customDetails": {"ticket": "42"}})
        );
        assert!(request.actor.is_user());
    }
}
