//! The end-to-end tests in one binary, so the workspace links one test
//! executable here instead of one per file. Each file is a module; filter
//! with its name, e.g. `cargo test -p tongban-tests --test e2e resilience::`.
//!
//! `observability_trace.rs` and `trace_without_exporter.rs` stay binaries of
//! their own: `tongban_telemetry::init` installs the process-wide tracing
//! subscriber and OpenTelemetry providers, which they would fight over with
//! each other and with [`support::capture_logs`].
//!
//! Tests of all modules run side by side in this process: they share one
//! [`support::shared_deployment`] and, once a test calls
//! [`support::capture_logs`], one log capture.

// The modules name their helpers `tongban_tests::…`, as when `support` was
// the package's library; the alias keeps those paths without a library
// crate (and its own test binary) to link.
extern crate self as tongban_tests;

#[path = "../obs/mod.rs"]
mod obs;
mod support;
pub use support::*;

mod attack_routing;
mod deploy;
mod discovery;
mod exchange_failures;
mod exchange_lookup;
mod foreign_client;
mod hold_the_line;
mod http2_limits;
mod http_json;
mod observability;
mod policy;
mod reflection;
mod resilience;
mod subjects;
mod trust;
