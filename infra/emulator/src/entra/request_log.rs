//! The log of token requests, read by tests to count what a client really sent (caching,
//! single flight, retries). Only public facts are kept: never a secret or an assertion.

use std::collections::VecDeque;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Which token endpoint was called.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Endpoint {
    /// `/{tenant}/oauth2/token`
    V1,
    /// `/{tenant}/oauth2/v2.0/token`
    V2,
}

/// How the client authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CredentialKind {
    Secret,
    Assertion,
}

/// One token request and how it was answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenRequestRecord {
    /// The `{tenant}` path segment as sent (GUID or domain).
    pub tenant: String,
    /// The tenant id it resolved to, when it names a known tenant.
    pub tenant_id: Option<String>,
    pub endpoint: Endpoint,
    /// HTTP status of the answer (including injected faults).
    pub status: u16,
    pub client_id: Option<String>,
    pub credential: Option<CredentialKind>,
    /// The resource asked for (v1 `resource`, or v2 `scope` without `/.default`).
    pub resource: Option<String>,
    /// `error` of the answer, when it failed.
    pub error: Option<String>,
    /// AADSTS code of the answer, when it failed.
    pub error_code: Option<u32>,
    /// Whether the answer came from an injected fault.
    pub injected: bool,
    pub at: DateTime<Utc>,
}

/// Bounded so that a long-running emulator (the demo) does not grow without end.
pub(crate) struct RequestLog {
    records: VecDeque<TokenRequestRecord>,
}

const CAPACITY: usize = 10_000;

impl RequestLog {
    pub(crate) fn new() -> Self {
        RequestLog {
            records: VecDeque::new(),
        }
    }

    pub(crate) fn push(&mut self, record: TokenRequestRecord) {
        if self.records.len() == CAPACITY {
            self.records.pop_front();
        }
        self.records.push_back(record);
    }

    pub(crate) fn all(&self) -> Vec<TokenRequestRecord> {
        self.records.iter().cloned().collect()
    }

    pub(crate) fn clear(&mut self) {
        self.records.clear();
    }
}
