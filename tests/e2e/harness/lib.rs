//! End-to-end harness: starts the real components on loopback ports chosen at run time and
//! stops them when done.
//!
//! - [`moto::Moto`]: `moto_server` (local Secrets Manager, DynamoDB, ...);
//! - [`emulator::Emulator`]: the `defender-emulator` binary (Entra ID + Defender APIs), loaded
//!   with a scenario the test writes in the emulator's own types, and its control API (the test
//!   kit's `EmulatorControl`: faults, request log, secrets, grants, data);
//! - [`lambda::LambdaWatch`]: `cargo lambda watch` running a function of the workspace, and
//!   invokes through its HTTP endpoint;
//! - [`function_url::FunctionUrl`]: the same for a function a browser talks to, over the
//!   watch's function URL on a port reserved before the function's configuration is written;
//! - [`stack::Stack`]: the three wired together, with the registry table and the credential
//!   secret created in moto (the end-to-end side of the test kit's in-process `World`).
//!
//! Every child process is stopped on drop, panics included ([`process::ChildProcess`]), and
//! its output is captured for assertions and failure messages. The tools come from `PATH` or
//! the project venv (`.venv/bin`, made by `scripts/venv`); a missing tool fails the test with
//! a message saying how to install it.

pub mod browser;
pub mod cases;
pub mod emulator;
pub mod events;
pub mod fetch;
pub mod function_url;
pub mod jwt;
pub mod lambda;
pub mod leaks;
pub mod moto;
pub mod process;
pub mod stack;
pub mod tools;

pub use cases::Cases;
pub use emulator::Emulator;
pub use lambda::{FunctionError, LambdaWatch};
pub use moto::Moto;
pub use stack::Stack;
