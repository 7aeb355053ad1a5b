//! The conformance suites of the ports: every adapter of a port runs the same suite, so that the
//! AWS adapter and the embedded one behave alike. Each suite panics on the first broken
//! expectation and uses fresh tenants, so it can run again on a store holding earlier results.

pub mod callers;
pub mod hunts;
pub mod leases;
pub mod sink;
pub mod store;
pub mod updates;
