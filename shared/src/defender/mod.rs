//! The Defender and Graph security APIs: the sources and what each one is (`sources`), how a
//! call is made and throttled (`client`, `limiter`), how a page is read (`records`), time
//! literals (`time`), and the Graph alerts fallback (`graph_alerts`).

pub mod client;
pub mod graph_alerts;
pub mod limiter;
pub mod records;
pub mod sources;
pub mod time;

pub use client::{ApiError, DefenderClient};
pub use records::{FetchedRecord, Page, parse_page};
pub use sources::{Source, SourceSpec, spec};
