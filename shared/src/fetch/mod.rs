//! Ingestion: the engine that pages one tenant's source into the sink (`engine`), the fleet run
//! across tenants (`fleet`), and the job's settings (`settings`).

pub mod admission;
pub mod engine;
pub mod fleet;
pub mod queue;
pub mod service;

/// The job's settings, read with the others in `crate::config`.
pub use crate::config::FetchSettings;
pub use admission::SourceRoles;
pub use engine::{Fetcher, PairOutcome, PairResult};
pub use fleet::{FleetReport, NotPlanned, PairTask, WorkQueue, run_pairs, run_scheduled};
pub use service::{BatchReport, FetchService, QueuedTask};
