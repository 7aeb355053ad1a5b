//! Ingestion: the engine that pages one tenant's source into the sink (`engine`, with its window
//! arithmetic in `window`, what a pair ends with in `outcome` and the revocation policy in
//! `revocation`), which pairs may run (`admission`), the re-verification of pending tenants
//! (`reverify`), the fleet run across tenants (`fleet`), the fan-out queue (`queue`) and the job
//! assembled once per cold start (`service`). Its settings are read in `crate::config`.

pub mod admission;
pub mod engine;
pub mod fleet;
mod outcome;
pub mod queue;
mod reverify;
mod revocation;
pub mod service;
mod window;

/// The job's settings, read with the others in `crate::config`.
pub use crate::config::FetchSettings;
pub use admission::SourceRoles;
pub use engine::Fetcher;
pub use fleet::{FleetReport, NotPlanned, PairTask, WorkQueue, run_pairs, run_scheduled};
pub use outcome::{PairOutcome, PairResult};
pub use reverify::Reverifier;
pub use service::{BatchReport, FetchService, QueuedTask};
