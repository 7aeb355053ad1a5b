//! Fleet hunting: one KQL query in every selected customer tenant through Graph's
//! `runHuntingQuery`, each tenant within its own quota, the rows streamed to gzip NDJSON with a
//! manifest per hunt, and saved hunts that announce only the rows not seen before: a custom
//! detection over every customer at once (reference §12).

pub mod answer;
pub mod error;
pub mod events;
pub mod manifest;
pub mod output;
pub mod queue;
pub mod request;
pub mod runner;
pub mod service;
pub mod settings;

pub use error::HuntError;
pub use manifest::{Manifest, ManifestTenant};
pub use queue::HuntTask;
pub use request::{HuntRequest, TenantSelection, Timespan};
pub use service::{HuntService, Submitted};
