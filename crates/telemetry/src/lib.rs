//! Telemetry for tongban processes: logs, OpenTelemetry traces and metrics.
//!
//! * [`init`] installs the process-wide `tracing` subscriber (text or JSON
//!   logs on stderr, `RUST_LOG` filtering) with an OpenTelemetry layer that
//!   exports spans over OTLP/gRPC when an endpoint is configured, and builds
//!   the metrics pipeline (OTLP and Prometheus text). [`build`] does the same
//!   without installing anything global, for tests that run several
//!   processes' worth of services in one test binary.
//! * [`propagation`] carries W3C trace context (`traceparent`, `tracestate`)
//!   across gRPC hops: [`TraceContextInterceptor`] / [`inject_trace_context`]
//!   on the client, [`GrpcServerLayer`] on the server.
//! * [`Metrics`] is the typed handle for every tongban metric;
//!   [`admin::AdminServer`] serves them as Prometheus text on `GET /metrics`.
//!
//! # Personal data
//!
//! Identity numbers, names and secrets must never appear in span names, span
//! fields, span events or log fields, in clear. Everything `tracing` records
//! may leave the process (log collectors, the OTLP collector). Record
//! [`tongban_core::IdNumber`]'s masked rendering, or the audit log's keyed
//! pseudonym when records must be correlated; never the raw value.
//! The layers in this crate record only gRPC methods, status codes,
//! department ids, evidence types and trace ids.
//!
//! [`tongban_core::IdNumber`]: https://docs.rs/tongban-core

pub mod admin;
mod error;
pub mod metrics;
pub mod propagation;
mod setup;
#[cfg(any(test, feature = "test-support"))]
pub mod testing;

pub use admin::AdminServer;
pub use error::{TelemetryError, UnknownLogFormat};
pub use metrics::{ExpositionFormat, InflightGuard, Metrics, PrometheusMetrics};
pub use propagation::{
    GrpcServerLayer, TraceContextInterceptor, TraceRef, current_trace, current_trace_id,
    extract_trace_context, inject_trace_context,
};
pub use setup::{LogFormat, LogOutput, Telemetry, TelemetryGuard, TelemetryOptions, build, init};
