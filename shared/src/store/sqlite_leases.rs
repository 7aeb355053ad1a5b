//! Leases in the embedded SQLite store, one table for both kinds: a pair's lease is the row
//! `(tenant id, source)`, a run lease the row `("FLEET#", run)` (no tenant id starts so).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::params;

use super::leases::RunLeases;
use super::sqlite::unavailable;
use super::{RegistryError, SqliteRegistry};

/// The `tenant_id` column of run leases.
const RUN_SCOPE: &str = "FLEET#";

impl SqliteRegistry {
    /// Writes the lease row `(scope, name)` for `holder` only if it is new, expired at `now` or
    /// already the holder's: one statement, so two takers never both win.
    pub(super) async fn take_lease_row(
        &self,
        scope: String,
        name: String,
        holder: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<bool, RegistryError> {
        let holder = holder.to_owned();
        let (now_ms, until_ms) = (now.timestamp_millis(), until.timestamp_millis());
        self.with_connection(move |connection| {
            let changed = connection
                .execute(
                    "INSERT INTO leases (tenant_id, source, holder, until_ms) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT(tenant_id, source) DO UPDATE
                        SET holder = excluded.holder, until_ms = excluded.until_ms
                        WHERE leases.until_ms <= ?5 OR leases.holder = excluded.holder",
                    params![scope, name, holder, until_ms, now_ms],
                )
                .map_err(unavailable)?;
            Ok(changed == 1)
        })
        .await
    }

    /// Removes the lease row `(scope, name)` if `holder` has it.
    pub(super) async fn release_lease_row(
        &self,
        scope: String,
        name: String,
        holder: &str,
    ) -> Result<(), RegistryError> {
        let holder = holder.to_owned();
        self.with_connection(move |connection| {
            connection
                .execute(
                    "DELETE FROM leases WHERE tenant_id = ?1 AND source = ?2 AND holder = ?3",
                    params![scope, name, holder],
                )
                .map_err(unavailable)?;
            Ok(())
        })
        .await
    }
}

#[async_trait]
impl RunLeases for SqliteRegistry {
    async fn take_run_lease(
        &self,
        run: &str,
        holder: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<bool, RegistryError> {
        self.take_lease_row(RUN_SCOPE.to_owned(), run.to_owned(), holder, now, until)
            .await
    }

    async fn release_run_lease(&self, run: &str, holder: &str) -> Result<(), RegistryError> {
        self.release_lease_row(RUN_SCOPE.to_owned(), run.to_owned(), holder)
            .await
    }
}
