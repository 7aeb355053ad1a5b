//! Shared library of the defender-partner functions: configuration, cloud endpoints, the app
//! credential, Entra ID tokens, the tenant registry and telemetry. Each Lambda binary is a thin
//! shell around the services defined here, so every behaviour can be tested without AWS.

pub mod api;
pub mod callers;
pub mod cloud;
pub mod config;
pub mod consent;
pub mod deadline;
pub mod defender;
pub mod edge;
pub mod entra;
pub mod entry;
pub mod error_code;
pub mod fetch;
pub mod http;
pub mod hunting;
pub mod minting;
pub mod redirect;
pub mod runtime;
pub mod secrets;
pub mod signin;
pub mod sink;
pub mod store;
pub mod telemetry;
pub mod tenant_id;
pub mod writeback;

pub use error_code::{CallerError, ErrorCode};
