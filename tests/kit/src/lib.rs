//! What the tests, the benches and the demo share, so that a new setting, a changed page or a new
//! control route is followed in one place:
//!
//! - [`World`]: the emulator on a loopback port, the settings a function reads (through the
//!   `config` constants), the services built on them and the tenants registered, in a folder of
//!   its own that is removed on drop — built with [`World::builder`] / [`World::on`];
//! - [`scenario`]: scenario pieces in the emulator's own types (apps, tenants with their
//!   administrator, grants), and the resources and roles tests consent to;
//! - [`EmulatorControl`]: the emulator's control API over HTTP, in the emulator's own types, for an
//!   emulator in this process or in another;
//! - [`records`]: what ingestion tests assert about delivered records; [`logs`]: a log buffer
//!   for the tests that prove no secret reaches a log;
//! - [`conformance`]: the suites every adapter of a port passes (the tenant store, the file sink).
//!
//! The emulator's consent and sign-in pages are driven by `defender_emulator::browser`, the one
//! page driver the emulator ships beside the pages.

pub mod conformance;
pub mod control;
pub mod logs;
pub mod records;
pub mod scenario;
pub mod world;

pub use control::EmulatorControl;
pub use world::{World, WorldBuilder, app_credential};
