//! Write-back: partners' analysts change Defender incidents and alerts (assign, status,
//! classification, determination, tags, comments) through Graph, as the app or as themselves,
//! exactly once from the caller's view, audited, and recognisable when the fetch brings the change
//! back (reference §11).

pub mod comments;
pub mod error;
pub mod events;
pub mod graph;
pub mod request;
pub mod service;
pub mod tags;
pub mod vocabulary;

pub use error::UpdateError;
pub use events::{EventBridgeEvents, NoEvents, UpdateEvents};
pub use graph::GraphWriter;
pub use request::{Actor, Change, TagEdit, Target, UpdateRequest, UpdateRequestBody};
pub use service::{UpdateOutcome, UpdateService};
pub use vocabulary::{TargetKind, writable_kinds};
