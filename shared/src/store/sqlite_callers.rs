//! Caller scopes in the embedded SQLite store: one row per caller, its scope as JSON.

use async_trait::async_trait;
use rusqlite::{OptionalExtension, params};

use super::callers::{CallerLookup, CallerScope, CallerScopes, parse_scope, scope_json};
use super::sqlite::{unavailable, versioned_bodies};
use super::{RegistryError, SqliteRegistry};

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS caller_scopes (
    caller  TEXT PRIMARY KEY,
    body    TEXT NOT NULL,
    version INTEGER NOT NULL
);";

fn stored_version(version: i64) -> Result<u64, RegistryError> {
    u64::try_from(version).map_err(|error| RegistryError::Corrupt(error.to_string()))
}

#[async_trait]
impl CallerScopes for SqliteRegistry {
    async fn caller_lookup(&self, caller: &str) -> Result<CallerLookup, RegistryError> {
        let caller = caller.to_owned();
        self.with_connection(move |connection| {
            let row = connection
                .query_row(
                    "SELECT body, version FROM caller_scopes WHERE caller = ?1",
                    params![caller],
                    |row| Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?)),
                )
                .optional()
                .map_err(unavailable)?;
            let scope = row
                .map(|(body, version)| parse_scope(&body, stored_version(version)?))
                .transpose()?;
            let any_mapping = match scope {
                Some(_) => true,
                None => connection
                    .query_row("SELECT EXISTS (SELECT 1 FROM caller_scopes)", [], |row| {
                        row.get::<_, bool>(0)
                    })
                    .map_err(unavailable)?,
            };
            Ok(CallerLookup { scope, any_mapping })
        })
        .await
    }

    async fn caller_scopes(&self) -> Result<Vec<CallerScope>, RegistryError> {
        self.with_connection(|connection| {
            let rows = versioned_bodies(
                connection,
                "SELECT body, version FROM caller_scopes ORDER BY caller",
            )?;
            rows.iter()
                .map(|(body, version)| parse_scope(body, stored_version(*version)?))
                .collect()
        })
        .await
    }

    async fn save_caller_scope(&self, scope: &CallerScope) -> Result<CallerScope, RegistryError> {
        let saved = CallerScope {
            version: scope.version + 1,
            ..scope.clone()
        };
        let body = scope_json(&saved);
        let (caller, expected) = (scope.caller.clone(), scope.version as i64);
        self.with_connection(move |connection| {
            let changed = if expected == 0 {
                connection.execute(
                    "INSERT INTO caller_scopes (caller, body, version) VALUES (?1, ?2, 1)
                     ON CONFLICT(caller) DO NOTHING",
                    params![caller, body],
                )
            } else {
                connection.execute(
                    "UPDATE caller_scopes SET body = ?2, version = ?3 + 1
                     WHERE caller = ?1 AND version = ?3",
                    params![caller, body, expected],
                )
            }
            .map_err(unavailable)?;
            if changed == 0 {
                return Err(RegistryError::Conflict(format!("caller {caller}")));
            }
            Ok(saved)
        })
        .await
    }
}
