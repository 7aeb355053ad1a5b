//! The state every handler shares.
//!
//! Locks are std locks held only for in-memory work, never across an `.await`. A panic while
//! holding one cannot leave the data half-written in a way that matters to a test emulator, so
//! a poisoned lock is simply taken over instead of turning every later request into a panic.

use std::sync::{Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::entra::consent::ConsentState;
use crate::entra::directory::Directory;
use crate::entra::keys::SigningKey;
use crate::entra::request_log::RequestLog;
use crate::faults::FaultQueue;

pub(crate) struct Shared {
    /// `http://127.0.0.1:PORT`, no trailing slash: the authority clients are configured with.
    pub base_url: String,
    pub key: SigningKey,
    directory: RwLock<Directory>,
    faults: Mutex<FaultQueue>,
    latency: RwLock<crate::latency::Latency>,
    log: Mutex<RequestLog>,
    consent: ConsentState,
    delegated: crate::entra::delegated::DelegatedState,
    /// The data APIs' tenants, settings, rate limits and call counters.
    pub defender: crate::defender::DataStore,
    /// The emulated AWS account (STS, IAM, its OIDC issuer).
    pub aws: crate::aws::AwsState,
    /// Keys of outside issuers named by federated credentials.
    pub issuer_keys: crate::entra::federated::IssuerKeyCache,
}

impl Shared {
    pub(crate) fn new(
        base_url: String,
        key: SigningKey,
        directory: Directory,
        aws: crate::aws::AwsState,
        issuer_keys: crate::entra::federated::IssuerKeyCache,
    ) -> Shared {
        Shared {
            base_url,
            key,
            directory: RwLock::new(directory),
            faults: Mutex::new(FaultQueue::default()),
            latency: RwLock::new(crate::latency::Latency::default()),
            log: Mutex::new(RequestLog::new()),
            consent: ConsentState::default(),
            delegated: crate::entra::delegated::DelegatedState::default(),
            defender: crate::defender::DataStore::default(),
            aws,
            issuer_keys,
        }
    }

    pub(crate) fn directory(&self) -> RwLockReadGuard<'_, Directory> {
        self.directory
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn directory_mut(&self) -> RwLockWriteGuard<'_, Directory> {
        self.directory
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn faults(&self) -> MutexGuard<'_, FaultQueue> {
        self.faults.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn latency(&self) -> crate::latency::Latency {
        *self.latency.read().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn latency_mut(&self) -> RwLockWriteGuard<'_, crate::latency::Latency> {
        self.latency.write().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn log(&self) -> MutexGuard<'_, RequestLog> {
        self.log.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn consent(&self) -> &ConsentState {
        &self.consent
    }

    pub(crate) fn delegated(&self) -> &crate::entra::delegated::DelegatedState {
        &self.delegated
    }
}
