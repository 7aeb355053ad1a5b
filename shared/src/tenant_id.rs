//! Customer tenant identifiers as callers give them: a GUID or a verified domain name.

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// How a caller named a tenant. Only GUIDs and domain names reach Entra: anything else
/// (`common`, a URL, an injection attempt) is refused before a request is made.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TenantRef {
    Id(TenantId),
    Domain(String),
}

/// A tenant's GUID, always lower-case hyphenated.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TenantId(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TenantIdError {
    #[error("tenant is empty: give the customer's tenant id (GUID) or verified domain")]
    Empty,
    #[error(
        "tenant {0:?} is neither a GUID nor a domain name: give the customer's tenant id or verified domain"
    )]
    Malformed(String),
    #[error(
        "tenant {0:?} is a multi-tenant alias: client-credentials tokens need the customer's own tenant id or domain"
    )]
    Alias(String),
}

impl TenantId {
    pub fn parse(text: &str) -> Result<TenantId, TenantIdError> {
        let trimmed = text.trim();
        // `Uuid::parse_str` also takes braces, URNs and un-hyphenated forms; Entra takes only
        // the hyphenated form, so insist on it.
        if trimmed.len() == 36
            && let Ok(uuid) = Uuid::parse_str(trimmed)
        {
            return Ok(TenantId(uuid.hyphenated().to_string()));
        }
        Err(TenantIdError::Malformed(shorten(trimmed)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for TenantId {
    type Error = TenantIdError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        TenantId::parse(&value)
    }
}

impl From<TenantId> for String {
    fn from(value: TenantId) -> Self {
        value.0
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TenantRef {
    pub fn parse(text: &str) -> Result<TenantRef, TenantIdError> {
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err(TenantIdError::Empty);
        }
        if let Ok(id) = TenantId::parse(trimmed) {
            return Ok(TenantRef::Id(id));
        }
        let lower = trimmed.to_ascii_lowercase();
        if matches!(lower.as_str(), "common" | "organizations" | "consumers") {
            return Err(TenantIdError::Alias(lower));
        }
        if is_domain_name(&lower) {
            return Ok(TenantRef::Domain(lower));
        }
        Err(TenantIdError::Malformed(shorten(trimmed)))
    }

    /// The path segment used in Entra URLs.
    pub fn as_path_segment(&self) -> &str {
        match self {
            TenantRef::Id(id) => id.as_str(),
            TenantRef::Domain(domain) => domain,
        }
    }
}

impl fmt::Display for TenantRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_path_segment())
    }
}

/// RFC 1123 host name with at least two labels and an alphabetic top-level label.
fn is_domain_name(name: &str) -> bool {
    if name.len() > 253 {
        return false;
    }
    let labels: Vec<&str> = name.split('.').collect();
    if labels.len() < 2 {
        return false;
    }
    let label_ok = |label: &&str| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    };
    let top = labels[labels.len() - 1];
    labels.iter().all(label_ok) && top.len() >= 2 && top.chars().all(|c| c.is_ascii_alphabetic())
}

fn shorten(text: &str) -> String {
    text.chars().take(80).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_guids_and_normalises_case() {
        let parsed = TenantRef::parse(" 72F988BF-86F1-41AF-91AB-2D7CD011DB47 ").unwrap();
        assert_eq!(
            parsed,
            TenantRef::Id(TenantId("72f988bf-86f1-41af-91ab-2d7cd011db47".into()))
        );
    }

    #[test]
    fn accepts_verified_domains() {
        assert_eq!(
            TenantRef::parse("Contoso.onmicrosoft.com").unwrap(),
            TenantRef::Domain("contoso.onmicrosoft.com".into())
        );
        assert!(TenantRef::parse("sub-1.example.co.uk").is_ok());
    }

    #[test]
    fn refuses_aliases_and_garbage() {
        assert_eq!(
            TenantRef::parse("common").unwrap_err(),
            TenantIdError::Alias("common".into())
        );
        assert_eq!(TenantRef::parse("").unwrap_err(), TenantIdError::Empty);
        for bad in [
            "not a tenant",
            "localhost",
            "contoso.com/../../x",
            "{72f988bf-86f1-41af-91ab-2d7cd011db47}",
            "72f988bf86f141af91ab2d7cd011db47",
            "-bad.example.com",
            "example.123",
            "https://login.microsoftonline.com",
        ] {
            assert!(
                matches!(TenantRef::parse(bad), Err(TenantIdError::Malformed(_))),
                "{bad} accepted"
            );
        }
    }

    #[test]
    fn tenant_id_requires_hyphenated_guid() {
        assert!(TenantId::parse("contoso.com").is_err());
        assert!(TenantId::parse("72f988bf-86f1-41af-91ab-2d7cd011db47").is_ok());
    }
}
