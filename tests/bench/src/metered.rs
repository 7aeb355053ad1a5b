//! The fetch job's AWS calls, counted and given AWS's time: decorators over the store ports and
//! the sink that note each call as the DynamoDB, S3 or EventBridge request it is in AWS, then wait
//! a time drawn from that service's latency before handing the call to the local adapter
//! (SQLite, the NDJSON folder). The bench prices Lambda time, so the wait matters as much as the
//! count: a function waiting on DynamoDB is billed for it.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use defender_emulator::LatencyRange;
use defender_partner::sink::{RecordSink, RunId, SinkError, SinkRecord};
use defender_partner::store::{
    AuditEntry, Checkpoint, Checkpoints, KeyClaim, OwnChange, RegistryError, TenantRecord,
    TenantRegistry, UpdateRecords,
};
use defender_partner::tenant_id::TenantId;

/// PutEvents takes at most 10 entries (as `sink::eventbridge` sends them).
const EVENTS_PER_PUT: usize = 10;

/// How an AWS request is billed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Billing {
    /// A strongly consistent read: 1 read request unit per item up to 4 KB.
    DynamoRead,
    /// A query of the tenants' index (eventually consistent): 0.5 unit per 4 KB read.
    DynamoQuery,
    /// A write (conditional ones included, refused or not): 1 write request unit per item up to
    /// 1 KB.
    DynamoWrite,
    S3Put,
    EventsPut,
    SqsRequest,
}

/// One kind of call: how many, and how many items they carried.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallCount {
    pub calls: u64,
    pub items: u64,
}

/// What the decorated ports saw, by operation (`dynamodb GetItem (registry.get)` …).
#[derive(Debug, Clone, Default)]
pub struct Meter {
    calls: Arc<Mutex<BTreeMap<(Billing, &'static str), CallCount>>>,
}

impl Meter {
    /// `calls` requests carrying `items` items in all.
    pub fn note(&self, billing: Billing, operation: &'static str, calls: usize, items: usize) {
        let mut noted = self.calls.lock().unwrap_or_else(PoisonError::into_inner);
        let count = noted.entry((billing, operation)).or_default();
        count.calls += calls as u64;
        count.items += items as u64;
    }

    /// Everything noted since the last take, and a fresh start.
    pub fn take(&self) -> BTreeMap<(Billing, &'static str), CallCount> {
        std::mem::take(&mut *self.calls.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// AWS's time per request, by service; `None` waits nothing (a test).
#[derive(Debug, Clone, Copy, Default)]
pub struct AwsLatency {
    pub dynamodb: Option<LatencyRange>,
    pub s3: Option<LatencyRange>,
    pub events: Option<LatencyRange>,
    pub sqs: Option<LatencyRange>,
}

pub async fn wait(range: Option<LatencyRange>) {
    if let Some(range) = range {
        tokio::time::sleep(range.sample()).await;
    }
}

/// The store ports and the sink of one function instance, metered.
#[derive(Clone)]
pub struct Metered<T: ?Sized> {
    inner: Arc<T>,
    meter: Meter,
    latency: AwsLatency,
}

impl<T: ?Sized> Metered<T> {
    pub fn new(inner: Arc<T>, meter: Meter, latency: AwsLatency) -> Metered<T> {
        Metered {
            inner,
            meter,
            latency,
        }
    }

    /// One DynamoDB request of one item.
    async fn dynamo(&self, billing: Billing, operation: &'static str) {
        self.dynamo_batch(billing, operation, 1, 1).await;
    }

    /// `calls` DynamoDB requests, one after the other, carrying `items` in all.
    async fn dynamo_batch(
        &self,
        billing: Billing,
        operation: &'static str,
        calls: usize,
        items: usize,
    ) {
        self.meter.note(billing, operation, calls, items);
        for _ in 0..calls {
            wait(self.latency.dynamodb).await;
        }
    }
}

/// DynamoDB's batch calls carry at most this many items (BatchGetItem 100, BatchWriteItem 25):
/// the store sends one call per chunk.
fn chunks(items: usize, per_call: usize) -> usize {
    items.div_ceil(per_call)
}

#[async_trait]
impl TenantRegistry for Metered<dyn TenantRegistry> {
    async fn get(&self, tenant: &TenantId) -> Result<Option<TenantRecord>, RegistryError> {
        self.dynamo(Billing::DynamoRead, "GetItem (tenant)").await;
        self.inner.get(tenant).await
    }

    async fn insert(&self, record: &TenantRecord) -> Result<(), RegistryError> {
        self.dynamo(Billing::DynamoWrite, "PutItem (tenant)").await;
        self.inner.insert(record).await
    }

    async fn replace(&self, record: &TenantRecord) -> Result<(), RegistryError> {
        self.dynamo(Billing::DynamoWrite, "PutItem (tenant, conditional)")
            .await;
        self.inner.replace(record).await
    }

    async fn list(&self) -> Result<Vec<TenantRecord>, RegistryError> {
        let records = self.inner.list().await?;
        // A Query answers at most 1 MB a page: about 2,000 tenant items of ~0.5 KB.
        let pages = chunks(records.len(), 2_000).max(1);
        self.dynamo_batch(
            Billing::DynamoQuery,
            "Query (tenants)",
            pages,
            records.len(),
        )
        .await;
        Ok(records)
    }
}

#[async_trait]
impl Checkpoints for Metered<dyn Checkpoints> {
    async fn checkpoint(
        &self,
        tenant: &TenantId,
        source: &str,
    ) -> Result<Option<Checkpoint>, RegistryError> {
        self.dynamo(Billing::DynamoRead, "GetItem (checkpoint)")
            .await;
        self.inner.checkpoint(tenant, source).await
    }

    async fn save_checkpoint(&self, checkpoint: &Checkpoint) -> Result<Checkpoint, RegistryError> {
        self.dynamo(Billing::DynamoWrite, "PutItem (checkpoint, conditional)")
            .await;
        self.inner.save_checkpoint(checkpoint).await
    }

    async fn checkpoints(&self) -> Result<Vec<Checkpoint>, RegistryError> {
        let checkpoints = self.inner.checkpoints().await?;
        self.dynamo_batch(
            Billing::DynamoQuery,
            "Query (checkpoints)",
            1,
            checkpoints.len(),
        )
        .await;
        Ok(checkpoints)
    }

    async fn delivered(
        &self,
        tenant: &TenantId,
        source: &str,
        ids: &[String],
    ) -> Result<HashMap<String, String>, RegistryError> {
        let calls = chunks(ids.len(), 100);
        self.dynamo_batch(
            Billing::DynamoRead,
            "BatchGetItem (ledger)",
            calls,
            ids.len(),
        )
        .await;
        self.inner.delivered(tenant, source, ids).await
    }

    async fn mark_delivered(
        &self,
        tenant: &TenantId,
        source: &str,
        entries: &[(String, String)],
    ) -> Result<(), RegistryError> {
        let calls = chunks(entries.len(), 25);
        self.dynamo_batch(
            Billing::DynamoWrite,
            "BatchWriteItem (ledger)",
            calls,
            entries.len(),
        )
        .await;
        self.inner.mark_delivered(tenant, source, entries).await
    }

    async fn take_lease(
        &self,
        tenant: &TenantId,
        source: &str,
        holder: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<bool, RegistryError> {
        self.dynamo(Billing::DynamoWrite, "UpdateItem (lease taken)")
            .await;
        self.inner
            .take_lease(tenant, source, holder, now, until)
            .await
    }

    async fn release_lease(
        &self,
        tenant: &TenantId,
        source: &str,
        holder: &str,
    ) -> Result<(), RegistryError> {
        self.dynamo(Billing::DynamoWrite, "UpdateItem (lease released)")
            .await;
        self.inner.release_lease(tenant, source, holder).await
    }
}

#[async_trait]
impl UpdateRecords for Metered<dyn UpdateRecords> {
    async fn claim_key(
        &self,
        tenant: &TenantId,
        key: &str,
        fingerprint: &str,
        now: DateTime<Utc>,
        running_until: DateTime<Utc>,
    ) -> Result<KeyClaim, RegistryError> {
        self.dynamo(Billing::DynamoWrite, "PutItem (write-back key)")
            .await;
        self.inner
            .claim_key(tenant, key, fingerprint, now, running_until)
            .await
    }

    async fn answer_key(
        &self,
        tenant: &TenantId,
        key: &str,
        fingerprint: &str,
        answer: &serde_json::Value,
    ) -> Result<(), RegistryError> {
        self.dynamo(Billing::DynamoWrite, "UpdateItem (write-back key)")
            .await;
        self.inner
            .answer_key(tenant, key, fingerprint, answer)
            .await
    }

    async fn release_key(
        &self,
        tenant: &TenantId,
        key: &str,
        fingerprint: &str,
    ) -> Result<(), RegistryError> {
        self.dynamo(Billing::DynamoWrite, "DeleteItem (write-back key)")
            .await;
        self.inner.release_key(tenant, key, fingerprint).await
    }

    async fn remember_change(&self, change: &OwnChange) -> Result<(), RegistryError> {
        self.dynamo(Billing::DynamoWrite, "PutItem (own change)")
            .await;
        self.inner.remember_change(change).await
    }

    async fn own_changes(
        &self,
        tenant: &TenantId,
        kind: &str,
        ids: &[String],
    ) -> Result<HashMap<String, OwnChange>, RegistryError> {
        let calls = chunks(ids.len(), 100);
        self.dynamo_batch(
            Billing::DynamoRead,
            "BatchGetItem (own changes)",
            calls,
            ids.len(),
        )
        .await;
        self.inner.own_changes(tenant, kind, ids).await
    }

    async fn hold_target(
        &self,
        tenant: &TenantId,
        target: &str,
        holder: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<bool, RegistryError> {
        self.dynamo(Billing::DynamoWrite, "UpdateItem (target hold)")
            .await;
        self.inner
            .hold_target(tenant, target, holder, now, until)
            .await
    }

    async fn release_target(
        &self,
        tenant: &TenantId,
        target: &str,
        holder: &str,
    ) -> Result<(), RegistryError> {
        self.dynamo(Billing::DynamoWrite, "UpdateItem (target hold)")
            .await;
        self.inner.release_target(tenant, target, holder).await
    }

    async fn record_audit(&self, entry: &AuditEntry) -> Result<(), RegistryError> {
        self.dynamo(Billing::DynamoWrite, "PutItem (audit)").await;
        self.inner.record_audit(entry).await
    }

    async fn audit(
        &self,
        tenant: &TenantId,
        since: DateTime<Utc>,
    ) -> Result<Vec<AuditEntry>, RegistryError> {
        let entries = self.inner.audit(tenant, since).await?;
        self.dynamo_batch(Billing::DynamoQuery, "Query (audit)", 1, entries.len())
            .await;
        Ok(entries)
    }
}

/// The deployed sink: one S3 object per batch, then the records' events, ten per PutEvents,
/// one after the other (as `FanOutSink` writes them).
#[async_trait]
impl RecordSink for Metered<dyn RecordSink> {
    async fn write(&self, run: &RunId, batch: &[SinkRecord]) -> Result<(), SinkError> {
        self.meter
            .note(Billing::S3Put, "S3 PutObject", 1, batch.len());
        wait(self.latency.s3).await;
        for chunk in batch.chunks(EVENTS_PER_PUT) {
            self.meter
                .note(Billing::EventsPut, "EventBridge PutEvents", 1, chunk.len());
            wait(self.latency.events).await;
        }
        self.inner.write(run, batch).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_calls_are_counted_per_chunk_of_their_limit() {
        assert_eq!(chunks(0, 100), 0);
        assert_eq!(chunks(100, 100), 1);
        assert_eq!(chunks(101, 100), 2);
        assert_eq!(chunks(26, 25), 2);
    }

    #[test]
    fn the_meter_adds_up_and_starts_again_when_taken() {
        let meter = Meter::default();
        meter.note(Billing::DynamoRead, "GetItem (tenant)", 1, 1);
        meter.note(Billing::DynamoRead, "GetItem (tenant)", 1, 1);
        meter.note(Billing::S3Put, "S3 PutObject", 1, 7);
        let taken = meter.take();
        assert_eq!(
            taken[&(Billing::DynamoRead, "GetItem (tenant)")],
            CallCount { calls: 2, items: 2 }
        );
        assert_eq!(
            taken[&(Billing::S3Put, "S3 PutObject")],
            CallCount { calls: 1, items: 7 }
        );
        assert!(meter.take().is_empty());
    }
}
