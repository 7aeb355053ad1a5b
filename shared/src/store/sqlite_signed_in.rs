//! Signed-in users in the embedded SQLite store.

use async_trait::async_trait;
use rusqlite::{OptionalExtension, params};

use super::record::{format_time, parse_time, stored_now};
use super::signed_in::first_version;
use super::sqlite::unavailable;
use super::{RegistryError, SignedInUser, SignedInUsers, SqliteRegistry};
use crate::tenant_id::TenantId;

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS signed_in_users (
    tenant_id      TEXT NOT NULL,
    user_oid       TEXT NOT NULL,
    user_name      TEXT,
    scopes         TEXT NOT NULL,
    refresh_token  BLOB NOT NULL,
    signed_in_at   TEXT NOT NULL,
    updated_at     TEXT NOT NULL,
    version        INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, user_oid)
);";

type Row = (
    String,
    String,
    Option<String>,
    String,
    Vec<u8>,
    String,
    String,
    i64,
);

fn from_row(row: Row) -> Result<SignedInUser, RegistryError> {
    let corrupt = |problem: String| RegistryError::Corrupt(format!("signed-in user: {problem}"));
    Ok(SignedInUser {
        tenant_id: TenantId::parse(&row.0).map_err(|error| corrupt(error.to_string()))?,
        user_oid: row.1,
        user_name: row.2,
        scopes: serde_json::from_str(&row.3).map_err(|error| corrupt(error.to_string()))?,
        sealed_refresh_token: row.4,
        signed_in_at: parse_time(&row.5).map_err(corrupt)?,
        updated_at: parse_time(&row.6).map_err(corrupt)?,
        version: u64::try_from(row.7).map_err(|error| corrupt(error.to_string()))?,
    })
}

#[async_trait]
impl SignedInUsers for SqliteRegistry {
    async fn signed_in_user(
        &self,
        tenant: &TenantId,
        user_oid: &str,
    ) -> Result<Option<SignedInUser>, RegistryError> {
        let (tenant, user_oid) = (tenant.to_string(), user_oid.to_ascii_lowercase());
        let row = self
            .with_connection(move |connection| {
                connection
                    .query_row(
                        "SELECT tenant_id, user_oid, user_name, scopes, refresh_token, signed_in_at, updated_at, version
                         FROM signed_in_users WHERE tenant_id = ?1 AND user_oid = ?2",
                        params![tenant, user_oid],
                        |row| {
                            Ok((
                                row.get(0)?,
                                row.get(1)?,
                                row.get(2)?,
                                row.get(3)?,
                                row.get(4)?,
                                row.get(5)?,
                                row.get(6)?,
                                row.get(7)?,
                            ))
                        },
                    )
                    .optional()
                    .map_err(unavailable)
            })
            .await?;
        row.map(from_row).transpose()
    }

    async fn save_sign_in(&self, user: &SignedInUser) -> Result<u64, RegistryError> {
        let user = user.clone();
        self.with_connection(move |connection| {
            let version: i64 = connection
                .query_row(
                    "INSERT INTO signed_in_users (tenant_id, user_oid, user_name, scopes, refresh_token, signed_in_at, updated_at, version)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, ?7)
                     ON CONFLICT(tenant_id, user_oid) DO UPDATE SET
                         user_name = excluded.user_name, scopes = excluded.scopes,
                         refresh_token = excluded.refresh_token, signed_in_at = excluded.signed_in_at,
                         updated_at = excluded.updated_at, version = signed_in_users.version + 1
                     RETURNING version",
                    params![
                        user.tenant_id.as_str(),
                        user.user_oid.to_ascii_lowercase(),
                        user.user_name,
                        serde_json::to_string(&user.scopes).expect("strings serialise"),
                        user.sealed_refresh_token,
                        format_time(&stored_now()),
                        first_version() as i64,
                    ],
                    |row| row.get(0),
                )
                .map_err(unavailable)?;
            Ok(version as u64)
        })
        .await
    }

    async fn rotate_refresh_token(
        &self,
        user: &SignedInUser,
        sealed: &[u8],
    ) -> Result<u64, RegistryError> {
        let (user, sealed) = (user.clone(), sealed.to_vec());
        self.with_connection(move |connection| {
            let changed = connection
                .execute(
                    "UPDATE signed_in_users SET refresh_token = ?3, updated_at = ?4, version = version + 1
                     WHERE tenant_id = ?1 AND user_oid = ?2 AND version = ?5",
                    params![
                        user.tenant_id.as_str(),
                        user.user_oid.to_ascii_lowercase(),
                        sealed,
                        format_time(&stored_now()),
                        user.version as i64,
                    ],
                )
                .map_err(unavailable)?;
            if changed == 0 {
                return Err(RegistryError::Conflict(format!(
                    "sign-in of user {} in tenant {}",
                    user.user_oid, user.tenant_id
                )));
            }
            Ok(user.version + 1)
        })
        .await
    }

    async fn forget_sign_in(
        &self,
        tenant: &TenantId,
        user_oid: &str,
        version: u64,
    ) -> Result<bool, RegistryError> {
        let (tenant, user_oid) = (tenant.to_string(), user_oid.to_ascii_lowercase());
        self.with_connection(move |connection| {
            let deleted = connection
                .execute(
                    "DELETE FROM signed_in_users WHERE tenant_id = ?1 AND user_oid = ?2 AND version = ?3",
                    params![tenant, user_oid, version as i64],
                )
                .map_err(unavailable)?;
            Ok(deleted == 1)
        })
        .await
    }
}
