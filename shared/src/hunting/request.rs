//! A hunt as a caller asks for it: `{query, timespan?, tenants: "all" | [ids] | "<customer
//! tag>", name?}`, validated before anything is queued. `Timespan` takes the forms of reference
//! §12 (ISO 8601): a duration (`P90D`), `start/end`, `duration/end`, `start/duration`, or a start
//! alone; the text is sent to Microsoft as written once it parses.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::HuntError;
use crate::tenant_id::TenantId;

/// Longer queries are refused before any tenant is asked.
pub const MAX_QUERY_CHARS: usize = 30_000;
const MAX_NAME_CHARS: usize = 128;
/// Tenants named explicitly in one hunt.
const MAX_LISTED_TENANTS: usize = 5_000;

/// Which tenants a hunt runs in: every active tenant, the listed ones, or the active tenants of
/// one customer (the registry's `customer_ref`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TenantSelection {
    All,
    Listed(Vec<TenantId>),
    Customer(String),
}

impl TenantSelection {
    fn parse(value: &Value) -> Result<TenantSelection, HuntError> {
        match value {
            Value::String(text) if text.trim().eq_ignore_ascii_case("all") => {
                Ok(TenantSelection::All)
            }
            Value::String(text) if !text.trim().is_empty() => {
                Ok(TenantSelection::Customer(text.trim().to_owned()))
            }
            Value::Object(object) if object.len() == 1 && object.contains_key("customer") => {
                match object
                    .get("customer")
                    .and_then(Value::as_str)
                    .map(str::trim)
                {
                    Some(customer) if !customer.is_empty() => {
                        Ok(TenantSelection::Customer(customer.to_owned()))
                    }
                    _ => Err(invalid("tenants.customer must be a non-empty string")),
                }
            }
            Value::Array(items) if !items.is_empty() => {
                if items.len() > MAX_LISTED_TENANTS {
                    return Err(invalid(format!(
                        "tenants lists {} tenants: at most {MAX_LISTED_TENANTS} (use \"all\" or a customer tag)",
                        items.len()
                    )));
                }
                let mut tenants = Vec::with_capacity(items.len());
                for item in items {
                    let text = item
                        .as_str()
                        .ok_or_else(|| invalid("tenants must list tenant ids as strings"))?;
                    let tenant = TenantId::parse(text)?;
                    if !tenants.contains(&tenant) {
                        tenants.push(tenant);
                    }
                }
                Ok(TenantSelection::Listed(tenants))
            }
            _ => Err(invalid(
                "tenants must be \"all\", a list of tenant ids, or a customer tag",
            )),
        }
    }

    pub fn to_value(&self) -> Value {
        match self {
            TenantSelection::All => Value::String("all".into()),
            TenantSelection::Listed(tenants) => Value::Array(
                tenants
                    .iter()
                    .map(|tenant| Value::String(tenant.to_string()))
                    .collect(),
            ),
            TenantSelection::Customer(customer) => {
                serde_json::json!({ "customer": customer })
            }
        }
    }
}

/// A validated hunt request.
#[derive(Debug, Clone, PartialEq)]
pub struct HuntRequest {
    pub query: String,
    pub timespan: Option<Timespan>,
    pub tenants: TenantSelection,
    pub name: Option<String>,
}

impl HuntRequest {
    /// Reads and validates a request body; unknown fields are refused (a misspelt `timespan`
    /// would otherwise hunt 30 days silently).
    pub fn from_json(body: &Value) -> Result<HuntRequest, HuntError> {
        let object = body
            .as_object()
            .ok_or_else(|| invalid("the request must be a JSON object"))?;
        for field in object.keys() {
            if !["query", "timespan", "tenants", "name"].contains(&field.as_str()) {
                return Err(invalid(format!(
                    "unknown field {field:?}: a hunt has query, timespan, tenants and name"
                )));
            }
        }
        let query = match object.get("query") {
            Some(Value::String(query)) => query.trim().to_owned(),
            _ => return Err(invalid("query is required: the KQL to run in every tenant")),
        };
        if query.is_empty() {
            return Err(invalid("query is empty"));
        }
        let length = query.chars().count();
        if length > MAX_QUERY_CHARS {
            return Err(invalid(format!(
                "query has {length} characters: at most {MAX_QUERY_CHARS}"
            )));
        }
        let timespan = match object.get("timespan") {
            None | Some(Value::Null) => None,
            Some(Value::String(text)) => Some(Timespan::parse(text)?),
            Some(_) => return Err(invalid("timespan must be a string (ISO 8601)")),
        };
        let tenants = TenantSelection::parse(object.get("tenants").ok_or_else(|| {
            invalid("tenants is required: \"all\", a list of tenant ids, or a customer tag")
        })?)?;
        let name = match object.get("name") {
            None | Some(Value::Null) => None,
            Some(Value::String(name)) => Some(display_name(name)?),
            Some(_) => return Err(invalid("name must be a string")),
        };
        Ok(HuntRequest {
            query,
            timespan,
            tenants,
            name,
        })
    }

    pub fn to_json(&self) -> Value {
        let mut body = serde_json::json!({
            "query": self.query,
            "tenants": self.tenants.to_value(),
        });
        if let Some(timespan) = &self.timespan {
            body["timespan"] = Value::String(timespan.as_str().to_owned());
        }
        if let Some(name) = &self.name {
            body["name"] = Value::String(name.clone());
        }
        body
    }
}

fn display_name(name: &str) -> Result<String, HuntError> {
    let name = name.trim();
    if name.is_empty()
        || name.chars().count() > MAX_NAME_CHARS
        || name.chars().any(char::is_control)
    {
        return Err(invalid(format!(
            "name must be 1 to {MAX_NAME_CHARS} printable characters"
        )));
    }
    Ok(name.to_owned())
}

/// A saved hunt's name: it is part of store keys and command lines.
pub fn saved_name(name: &str) -> Result<String, HuntError> {
    let valid = (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric());
    if valid {
        Ok(name.to_owned())
    } else {
        Err(invalid(format!(
            "saved hunt name {name:?}: 1 to 64 letters, digits, '-', '_' or '.', starting with a letter or digit"
        )))
    }
}

fn invalid(message: impl Into<String>) -> HuntError {
    HuntError::InvalidRequest(message.into())
}

/// A `Timespan` Microsoft will accept, as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timespan(String);

impl Timespan {
    pub fn parse(text: &str) -> Result<Timespan, HuntError> {
        let text = text.trim();
        let refuse = |why: &str| HuntError::TimespanInvalid {
            given: text.chars().take(80).collect(),
            why: why.to_owned(),
        };
        if text.is_empty() {
            return Err(refuse("it is empty"));
        }
        match text.split_once('/') {
            None if text.starts_with('P') => {
                duration_seconds(text).map_err(|why| refuse(&why))?;
            }
            None => {
                instant(text).map_err(|why| refuse(&why))?;
            }
            Some((first, second)) => match (first.starts_with('P'), second.starts_with('P')) {
                (true, true) => return Err(refuse("it names two durations and no time")),
                (true, false) => {
                    duration_seconds(first).map_err(|why| refuse(&why))?;
                    instant(second).map_err(|why| refuse(&why))?;
                }
                (false, true) => {
                    instant(first).map_err(|why| refuse(&why))?;
                    duration_seconds(second).map_err(|why| refuse(&why))?;
                }
                (false, false) => {
                    let start = instant(first).map_err(|why| refuse(&why))?;
                    let end = instant(second).map_err(|why| refuse(&why))?;
                    if start >= end {
                        return Err(refuse("its start is not before its end"));
                    }
                }
            },
        }
        Ok(Timespan(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An RFC 3339 time, or a date (midnight UTC).
fn instant(text: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(time) = DateTime::parse_from_rfc3339(text) {
        return Ok(time.with_timezone(&Utc));
    }
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .map(|date| {
            date.and_hms_opt(0, 0, 0)
                .expect("midnight exists")
                .and_utc()
        })
        .map_err(|_| {
            format!("{text:?} is neither an ISO 8601 time (2026-12-01T00:00:00Z) nor a date")
        })
}

/// `P[nW][nD][T[nH][nM][nS]]` in seconds; years and months are refused (their length varies).
fn duration_seconds(text: &str) -> Result<u64, String> {
    let body = text
        .strip_prefix('P')
        .ok_or_else(|| format!("{text:?} is not an ISO 8601 duration"))?;
    let (date_part, time_part) = match body.split_once('T') {
        Some((date, time)) => (date, Some(time)),
        None => (body, None),
    };
    let mut total: u64 = 0;
    let mut any = false;
    let mut add = |part: &str, units: &[(char, u64)]| -> Result<(), String> {
        let mut number = String::new();
        let mut allowed = units.iter();
        for c in part.chars() {
            if c.is_ascii_digit() {
                number.push(c);
                continue;
            }
            // Units in their order, each once.
            let factor = allowed
                .by_ref()
                .find(|(unit, _)| *unit == c)
                .map(|(_, factor)| *factor)
                .ok_or_else(|| {
                    format!("{text:?}: unit {c:?} is not accepted here (use W, D, H, M, S)")
                })?;
            let value: u64 = number
                .parse()
                .map_err(|_| format!("{text:?}: a unit without a number"))?;
            total = total.saturating_add(value.saturating_mul(factor));
            number.clear();
            any = true;
        }
        if number.is_empty() {
            Ok(())
        } else {
            Err(format!("{text:?}: a number without a unit"))
        }
    };
    add(date_part, &[('W', 7 * 86_400), ('D', 86_400)])?;
    if let Some(time) = time_part {
        if time.is_empty() {
            return Err(format!("{text:?}: nothing after T"));
        }
        add(time, &[('H', 3_600), ('M', 60), ('S', 1)])?;
    }
    if !any {
        return Err(format!("{text:?} names no length"));
    }
    if total == 0 {
        return Err(format!("{text:?} is zero long"));
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CallerError;
    use serde_json::json;

    const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";

    #[test]
    fn every_timespan_form_of_the_reference_is_accepted_as_written() {
        for text in [
            "P90D",
            "P30D",
            "PT12H",
            "P1W",
            "P1DT6H30M",
            "2026-11-01T00:00:00Z/2026-11-08T00:00:00Z",
            "P30D/2026-12-01T00:00:00Z",
            "2026-11-01T00:00:00Z/P30D",
            "2026-11-01T00:00:00Z",
            "2026-11-01",
        ] {
            assert_eq!(Timespan::parse(text).unwrap().as_str(), text, "{text}");
        }
    }

    #[test]
    fn a_malformed_timespan_is_refused_with_its_reason() {
        for text in [
            "",
            "30 days",
            "P",
            "P0D",
            "P1M",
            "PT",
            "P5",
            "P1D/P2D",
            "2026-12-01T00:00:00Z/2026-11-01T00:00:00Z",
            "P30D/yesterday",
        ] {
            let error = Timespan::parse(text).unwrap_err();
            assert_eq!(
                error.code(),
                crate::ErrorCode::TimespanInvalid,
                "{text}: {error}"
            );
        }
    }

    #[test]
    fn tenants_are_all_a_list_or_a_customer_tag() {
        let request = |tenants: Value| {
            HuntRequest::from_json(&json!({"query": "EmailEvents | take 1", "tenants": tenants}))
        };
        assert_eq!(request(json!("all")).unwrap().tenants, TenantSelection::All);
        assert_eq!(
            request(json!([TENANT, TENANT.to_uppercase()]))
                .unwrap()
                .tenants,
            TenantSelection::Listed(vec![TenantId::parse(TENANT).unwrap()]),
            "listed once"
        );
        assert_eq!(
            request(json!("contoso")).unwrap().tenants,
            TenantSelection::Customer("contoso".into())
        );
        assert_eq!(
            request(json!({"customer": "fabrikam"})).unwrap().tenants,
            TenantSelection::Customer("fabrikam".into())
        );
        assert_eq!(
            request(json!(["not-a-tenant"])).unwrap_err().code(),
            crate::ErrorCode::InvalidTenantId
        );
        for bad in [json!([]), json!(""), json!(7), json!({"customer": ""})] {
            assert_eq!(
                request(bad.clone()).unwrap_err().code(),
                crate::ErrorCode::InvalidRequest,
                "{bad}"
            );
        }
    }

    #[test]
    fn a_request_needs_a_query_and_tenants_and_nothing_unknown() {
        let error = HuntRequest::from_json(&json!({"tenants": "all"})).unwrap_err();
        assert!(error.to_string().contains("query is required"), "{error}");
        let error = HuntRequest::from_json(&json!({"query": "x"})).unwrap_err();
        assert!(error.to_string().contains("tenants is required"), "{error}");
        let error =
            HuntRequest::from_json(&json!({"query": "x", "tenants": "all", "timespam": "P1D"}))
                .unwrap_err();
        assert!(error.to_string().contains("timespam"), "{error}");
        let long = "x".repeat(MAX_QUERY_CHARS + 1);
        assert!(HuntRequest::from_json(&json!({"query": long, "tenants": "all"})).is_err());
        let request = HuntRequest::from_json(
            &json!({"query": " EmailEvents | take 1 ", "tenants": "all", "timespan": "P7D", "name": "phish"}),
        )
        .unwrap();
        assert_eq!(request.query, "EmailEvents | take 1");
        // What is saved reads back the same.
        assert_eq!(HuntRequest::from_json(&request.to_json()).unwrap(), request);
    }

    #[test]
    fn saved_names_fit_keys_and_command_lines() {
        assert_eq!(saved_name("phish-daily.v2").unwrap(), "phish-daily.v2");
        for bad in ["", "-x", "a b", "a#b", &"x".repeat(65)] {
            assert!(saved_name(bad).is_err(), "{bad}");
        }
    }
}
