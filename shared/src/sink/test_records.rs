//! Records for the sink adapters' unit tests. The suite every file sink passes, with its
//! trap-laden sample batch, is `defender_partner_testkit::conformance::sink` (run from
//! `shared/tests/`).

use chrono::{DateTime, Utc};
use serde_json::value::RawValue;

use super::{Change, SinkRecord, Source};
use crate::tenant_id::TenantId;

pub(crate) fn fresh_tenant() -> TenantId {
    TenantId::parse(&uuid::Uuid::new_v4().to_string()).expect("a v4 uuid is a tenant id")
}

/// A new record of `source` whose raw text is `raw` (which must be JSON).
pub(crate) fn record(
    tenant: &TenantId,
    source: Source,
    id: &str,
    last_update: &str,
    raw: &str,
) -> SinkRecord {
    SinkRecord {
        tenant_id: tenant.clone(),
        source,
        id: id.to_owned(),
        last_update: last_update.to_owned(),
        last_update_at: DateTime::parse_from_rfc3339(last_update)
            .expect("an RFC 3339 time")
            .with_timezone(&Utc),
        change: Change::New,
        redirected_to: None,
        continues: None,
        change_origin: None,
        raw: RawValue::from_string(raw.to_owned()).expect("raw JSON"),
    }
}

/// Three records of one tenant: two sources, two dates.
pub(crate) fn batch(tenant: &TenantId) -> Vec<SinkRecord> {
    vec![
        record(
            tenant,
            Source::M365dIncidents,
            "924565",
            "2026-11-24T23:59:59.9999999Z",
            r#"{"incidentId":924565,"lastUpdateTime":"2026-11-24T23:59:59.9999999Z"}"#,
        ),
        record(
            tenant,
            Source::M365dIncidents,
            "924566",
            "2026-11-25T00:00:00.0000001Z",
            r#"{"incidentId":924566,"lastUpdateTime":"2026-11-25T00:00:00.0000001Z"}"#,
        ),
        record(
            tenant,
            Source::MdeAlerts,
            "da638000000000000000_-1234567890",
            "2026-11-24T10:00:00Z",
            r#"{"id":"da638000000000000000_-1234567890","lastUpdateTime":"2026-11-24T10:00:00Z"}"#,
        ),
    ]
}
