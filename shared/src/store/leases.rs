//! Run leases: one named run at a time across every instance (the scheduled fleet run), with the
//! same conditional write as the per-pair leases of `Checkpoints`: taken if free, expired or
//! already the holder's; released by its holder only; freed by expiry when a run dies holding it.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::RegistryError;

/// The run lease of the scheduled fleet run.
pub const FLEET_RUN: &str = "scheduled";

#[async_trait]
pub trait RunLeases: Send + Sync {
    /// Takes the lease on `run` for `holder` until `until`: `true` if nobody else holds an
    /// unexpired one at `now` (or `holder` already does), `false` if another run owns it.
    async fn take_run_lease(
        &self,
        run: &str,
        holder: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<bool, RegistryError>;

    /// Ends `holder`'s lease on `run`; a lease another holder has now is left alone.
    async fn release_run_lease(&self, run: &str, holder: &str) -> Result<(), RegistryError>;
}
