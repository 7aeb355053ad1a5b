//! Consent and sign-in attempts in the embedded SQLite store.

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};

use super::attempts::classify_failed_consume;
use super::record::{format_time, parse_time, stored_now};
use super::sqlite::unavailable;
use super::{
    AttemptFlow, AttemptStatus, ConsentAttempt, ConsentAttempts, ConsumeError, RegistryError,
    SqliteRegistry,
};
use crate::tenant_id::TenantId;

pub(super) const ATTEMPT_COLUMNS: &str =
    "nonce, customer_ref, link, status, tenant_id, detail, created_at, expires_at, updated_at";

fn read_attempt(row: &rusqlite::Row<'_>) -> rusqlite::Result<Result<ConsentAttempt, String>> {
    let texts: Vec<Option<String>> = (0..9)
        .map(|index| row.get(index))
        .collect::<Result<_, _>>()?;
    Ok((|| {
        let required = |index: usize| {
            texts[index]
                .clone()
                .ok_or_else(|| format!("column {index} is null"))
        };
        Ok(ConsentAttempt {
            nonce: required(0)?,
            flow: AttemptFlow::from_stored(required(1)?, required(2)?)?,
            status: required(3)?.parse()?,
            tenant_id: texts[4]
                .as_deref()
                .map(TenantId::parse)
                .transpose()
                .map_err(|error| error.to_string())?,
            detail: texts[5].clone(),
            created_at: parse_time(&required(6)?)?,
            expires_at: parse_time(&required(7)?)?,
            updated_at: parse_time(&required(8)?)?,
        })
    })())
}

fn select_attempt(
    connection: &Connection,
    nonce: &str,
) -> Result<Option<ConsentAttempt>, RegistryError> {
    connection
        .query_row(
            &format!("SELECT {ATTEMPT_COLUMNS} FROM consent_attempts WHERE nonce = ?1"),
            params![nonce],
            read_attempt,
        )
        .optional()
        .map_err(unavailable)?
        .transpose()
        .map_err(RegistryError::Corrupt)
}

#[async_trait]
impl ConsentAttempts for SqliteRegistry {
    async fn issue(&self, attempt: &ConsentAttempt) -> Result<(), RegistryError> {
        let attempt = attempt.clone();
        let (customer_ref, link) = attempt.flow.to_stored(attempt.tenant_id.as_ref());
        self.with_connection(move |connection| {
            let inserted = connection
                .execute(
                    &format!(
                        "INSERT INTO consent_attempts ({ATTEMPT_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                         ON CONFLICT(nonce) DO NOTHING"
                    ),
                    params![
                        attempt.nonce,
                        customer_ref,
                        link,
                        attempt.status.as_str(),
                        attempt.tenant_id.as_ref().map(TenantId::as_str),
                        attempt.detail,
                        format_time(&attempt.created_at),
                        format_time(&attempt.expires_at),
                        format_time(&attempt.updated_at),
                    ],
                )
                .map_err(unavailable)?;
            if inserted == 0 {
                return Err(RegistryError::Conflict(format!("consent attempt {}", attempt.nonce)));
            }
            Ok(())
        })
        .await
    }

    async fn consume(
        &self,
        nonce: &str,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<ConsentAttempt, ConsumeError> {
        let nonce = nonce.to_owned();
        self.with_connection(move |connection| {
            let consumed = connection
                .execute(
                    "UPDATE consent_attempts SET status = 'consumed', updated_at = ?3
                     WHERE nonce = ?1 AND status = 'issued' AND expires_at > ?2",
                    params![nonce, format_time(&now), format_time(&stored_now())],
                )
                .map_err(unavailable)?;
            let stored = select_attempt(connection, &nonce)?;
            Ok(match (consumed, stored) {
                (1, Some(attempt)) => Ok(attempt),
                (_, stored) => Err(classify_failed_consume(stored.as_ref(), now)),
            })
        })
        .await?
    }

    async fn finish(
        &self,
        nonce: &str,
        status: AttemptStatus,
        tenant_id: Option<&TenantId>,
        detail: Option<&str>,
    ) -> Result<(), RegistryError> {
        let (nonce, tenant_id, detail) = (
            nonce.to_owned(),
            tenant_id.map(|id| id.to_string()),
            detail.map(str::to_owned),
        );
        self.with_connection(move |connection| {
            let updated = connection
                .execute(
                    "UPDATE consent_attempts SET status = ?2, tenant_id = COALESCE(?3, tenant_id),
                        detail = ?4, updated_at = ?5 WHERE nonce = ?1",
                    params![
                        nonce,
                        status.as_str(),
                        tenant_id,
                        detail,
                        format_time(&stored_now())
                    ],
                )
                .map_err(unavailable)?;
            if updated == 0 {
                return Err(RegistryError::NotFound(format!("consent attempt {nonce}")));
            }
            Ok(())
        })
        .await
    }

    async fn attempt(&self, nonce: &str) -> Result<Option<ConsentAttempt>, RegistryError> {
        let nonce = nonce.to_owned();
        self.with_connection(move |connection| select_attempt(connection, &nonce))
            .await
    }
}
