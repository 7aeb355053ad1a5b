//! The embedded registry: one SQLite file, the default when no DynamoDB table is configured.

use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};

use super::record::{Ownership, format_time, parse_time};
use super::{RegistryError, TenantRecord, TenantRegistry};
use crate::tenant_id::TenantId;

#[derive(Clone)]
pub struct SqliteRegistry {
    connection: Arc<Mutex<Connection>>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS tenants (
    tenant_id     TEXT PRIMARY KEY,
    display_name  TEXT NOT NULL,
    customer_ref  TEXT,
    status        TEXT NOT NULL,
    roles         TEXT NOT NULL,
    status_reason TEXT,
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL,
    version       INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS consent_attempts (
    nonce        TEXT PRIMARY KEY,
    customer_ref TEXT NOT NULL,
    link         TEXT NOT NULL,
    status       TEXT NOT NULL,
    tenant_id    TEXT,
    detail       TEXT,
    created_at   TEXT NOT NULL,
    expires_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL
);";

const CHECKPOINT_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS checkpoints (
    tenant_id TEXT NOT NULL,
    source    TEXT NOT NULL,
    body      TEXT NOT NULL,
    version   INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, source)
);
CREATE TABLE IF NOT EXISTS ledger (
    tenant_id   TEXT NOT NULL,
    source      TEXT NOT NULL,
    id          TEXT NOT NULL,
    last_update TEXT NOT NULL,
    PRIMARY KEY (tenant_id, source, id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS leases (
    tenant_id TEXT NOT NULL,
    source    TEXT NOT NULL,
    holder    TEXT NOT NULL,
    until_ms  INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, source)
);";

const COLUMNS: &str = "tenant_id, display_name, customer_ref, status, roles, status_reason, created_at, updated_at, version, ownership";

/// Columns added after the first release, added to an older file when it is opened.
const ADDED_COLUMNS: [(&str, &str); 1] = [("tenants", "ownership TEXT")];

impl SqliteRegistry {
    /// Opens (creating if needed) the registry file and its folder.
    pub fn open(path: &Path) -> Result<SqliteRegistry, RegistryError> {
        if let Some(parent) = path
            .parent()
            .filter(|parent| !parent.as_os_str().is_empty())
        {
            std::fs::create_dir_all(parent).map_err(|error| {
                RegistryError::Unavailable(format!("cannot create {}: {error}", parent.display()))
            })?;
        }
        let connection = Connection::open(path).map_err(unavailable)?;
        Self::prepare(connection)
    }

    /// A registry that lives only as long as the process (tests).
    pub fn in_memory() -> Result<SqliteRegistry, RegistryError> {
        Self::prepare(Connection::open_in_memory().map_err(unavailable)?)
    }

    fn prepare(connection: Connection) -> Result<SqliteRegistry, RegistryError> {
        // WAL lets the operator command read while a function writes.
        connection
            .pragma_update(None, "journal_mode", "WAL")
            .map_err(unavailable)?;
        connection
            .busy_timeout(std::time::Duration::from_secs(5))
            .map_err(unavailable)?;
        connection.execute_batch(SCHEMA).map_err(unavailable)?;
        add_missing_columns(&connection)?;
        connection
            .execute_batch(CHECKPOINT_SCHEMA)
            .map_err(unavailable)?;
        connection
            .execute_batch(super::sqlite_signed_in::SCHEMA)
            .map_err(unavailable)?;
        connection
            .execute_batch(super::sqlite_updates::SCHEMA)
            .map_err(unavailable)?;
        connection
            .execute_batch(super::sqlite_hunts::SCHEMA)
            .map_err(unavailable)?;
        connection
            .execute_batch(super::sqlite_callers::SCHEMA)
            .map_err(unavailable)?;
        Ok(SqliteRegistry {
            connection: Arc::new(Mutex::new(connection)),
        })
    }

    pub(super) async fn with_connection<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Connection) -> Result<T, RegistryError> + Send + 'static,
    ) -> Result<T, RegistryError> {
        let connection = self.connection.clone();
        tokio::task::spawn_blocking(move || {
            let connection = connection
                .lock()
                .map_err(|_| RegistryError::Unavailable("registry lock poisoned".into()))?;
            work(&connection)
        })
        .await
        .map_err(|error| RegistryError::Unavailable(format!("registry task failed: {error}")))?
    }
}

/// Brings a file written by an older release up to the current columns; a row from before a
/// column existed reads as that column's default.
fn add_missing_columns(connection: &Connection) -> Result<(), RegistryError> {
    for (table, column) in ADDED_COLUMNS {
        let name = column.split_whitespace().next().unwrap_or(column);
        let present: bool = connection
            .query_row(
                &format!("SELECT COUNT(*) FROM pragma_table_info('{table}') WHERE name = ?1"),
                params![name],
                |row| row.get::<_, i64>(0),
            )
            .map_err(unavailable)?
            > 0;
        if !present {
            connection
                .execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column}"))
                .map_err(unavailable)?;
        }
    }
    Ok(())
}

/// Runs `sql`, an insert or a version-conditional update whose parameters `?1`..`?10` are the
/// record's columns in [`COLUMNS`] order; no row written is a conflict.
fn write_tenant(
    connection: &rusqlite::Connection,
    sql: &str,
    record: &TenantRecord,
) -> Result<(), RegistryError> {
    let written = connection
        .execute(
            sql,
            params![
                record.tenant_id.as_str(),
                record.display_name,
                record.customer_ref,
                record.status.as_str(),
                roles_json(record),
                record.status_reason,
                format_time(&record.created_at),
                format_time(&record.updated_at),
                record.version as i64,
                record.ownership.as_str(),
            ],
        )
        .map_err(unavailable)?;
    if written == 0 {
        return Err(RegistryError::Conflict(record.tenant_id.to_string()));
    }
    Ok(())
}

/// Every row of `sql`, a query of a versioned JSON record: its `body` and `version`.
pub(super) fn versioned_bodies(
    connection: &rusqlite::Connection,
    sql: &str,
) -> Result<Vec<(String, i64)>, RegistryError> {
    let mut statement = connection.prepare(sql).map_err(unavailable)?;
    statement
        .query_map([], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
        })
        .map_err(unavailable)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(unavailable)
}

pub(super) fn unavailable(error: rusqlite::Error) -> RegistryError {
    RegistryError::Unavailable(format!("sqlite: {error}"))
}

fn read_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Result<TenantRecord, String>> {
    let tenant_id: String = row.get(0)?;
    let status: String = row.get(3)?;
    let roles: String = row.get(4)?;
    let created_at: String = row.get(6)?;
    let updated_at: String = row.get(7)?;
    let version: i64 = row.get(8)?;
    let display_name: String = row.get(1)?;
    let customer_ref: Option<String> = row.get(2)?;
    let status_reason: Option<String> = row.get(5)?;
    let ownership: Option<String> = row.get(9)?;
    Ok((|| {
        Ok(TenantRecord {
            tenant_id: TenantId::parse(&tenant_id).map_err(|error| error.to_string())?,
            display_name,
            customer_ref,
            status: status.parse()?,
            roles: serde_json::from_str(&roles).map_err(|error| error.to_string())?,
            status_reason,
            ownership: Ownership::from_stored(ownership.as_deref())?,
            created_at: parse_time(&created_at)?,
            updated_at: parse_time(&updated_at)?,
            version: u64::try_from(version).map_err(|error| error.to_string())?,
        })
    })())
}

fn roles_json(record: &TenantRecord) -> String {
    serde_json::to_string(&record.roles).expect("a list of strings serialises")
}

#[async_trait]
impl TenantRegistry for SqliteRegistry {
    async fn get(&self, tenant: &TenantId) -> Result<Option<TenantRecord>, RegistryError> {
        let tenant = tenant.to_string();
        self.with_connection(move |connection| {
            connection
                .query_row(
                    &format!("SELECT {COLUMNS} FROM tenants WHERE tenant_id = ?1"),
                    params![tenant],
                    read_row,
                )
                .optional()
                .map_err(unavailable)?
                .transpose()
                .map_err(RegistryError::Corrupt)
        })
        .await
    }

    async fn insert(&self, record: &TenantRecord) -> Result<(), RegistryError> {
        let record = record.clone();
        self.with_connection(move |connection| {
            write_tenant(
                connection,
                &format!(
                    "INSERT INTO tenants ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
                     ON CONFLICT(tenant_id) DO NOTHING"
                ),
                &record,
            )
        })
        .await
    }

    async fn replace(&self, record: &TenantRecord) -> Result<(), RegistryError> {
        let record = record.clone();
        self.with_connection(move |connection| {
            write_tenant(
                connection,
                "UPDATE tenants SET display_name = ?2, customer_ref = ?3, status = ?4, roles = ?5,
                    status_reason = ?6, created_at = ?7, updated_at = ?8, version = ?9 + 1,
                    ownership = ?10
                 WHERE tenant_id = ?1 AND version = ?9",
                &record,
            )
        })
        .await
    }

    async fn list(&self) -> Result<Vec<TenantRecord>, RegistryError> {
        self.with_connection(|connection| {
            let mut statement = connection
                .prepare(&format!("SELECT {COLUMNS} FROM tenants ORDER BY tenant_id"))
                .map_err(unavailable)?;
            let rows = statement
                .query_map([], read_row)
                .map_err(unavailable)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(unavailable)?;
            rows.into_iter()
                .collect::<Result<Vec<_>, _>>()
                .map_err(RegistryError::Corrupt)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{AttemptFlow, AttemptStatus, ConsentAttempt, ConsentAttempts, stored_now};

    #[tokio::test]
    async fn a_sign_in_attempt_reads_back_and_its_row_reads_as_earlier_releases_wrote_it() {
        let store = SqliteRegistry::in_memory().unwrap();
        let tenant = TenantId::parse("72f988bf-86f1-41af-91ab-2d7cd011db47").unwrap();
        let now = stored_now();
        let attempt = ConsentAttempt {
            nonce: "sign-in-nonce".into(),
            flow: AttemptFlow::SignIn {
                api: crate::api::DefenderApi::Graph,
            },
            status: AttemptStatus::Issued,
            tenant_id: Some(tenant.clone()),
            detail: None,
            created_at: now,
            expires_at: now + chrono::Duration::minutes(10),
            updated_at: now,
        };
        store.issue(&attempt).await.unwrap();
        assert_eq!(store.attempt(&attempt.nonce).await.unwrap(), Some(attempt));
        let columns = store
            .with_connection(|connection| {
                connection
                    .query_row(
                        "SELECT customer_ref, link FROM consent_attempts WHERE nonce = 'sign-in-nonce'",
                        [],
                        |row| Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?)),
                    )
                    .map_err(unavailable)
            })
            .await
            .unwrap();
        assert_eq!(columns, (tenant.to_string(), "signin:graph".to_owned()));
    }

    #[tokio::test]
    async fn a_file_registry_survives_reopening() {
        let dir = std::env::temp_dir().join(format!("dp-registry-{}", uuid::Uuid::new_v4()));
        let path = dir.join("nested/registry.sqlite");
        let record = crate::store::TenantRecord::new(
            TenantId::parse("72f988bf-86f1-41af-91ab-2d7cd011db47").unwrap(),
            "Contoso",
            crate::store::TenantStatus::Active,
        );
        SqliteRegistry::open(&path)
            .unwrap()
            .upsert(&record)
            .await
            .unwrap();
        let reopened = SqliteRegistry::open(&path).unwrap();
        assert_eq!(reopened.list().await.unwrap().len(), 1);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
