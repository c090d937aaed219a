use std::time::Duration;

use opentelemetry_sdk::error::OTelSdkError;

/// Why telemetry could not be set up, rendered or shut down.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("invalid log filter {filter:?}: {source}")]
    Filter {
        filter: String,
        source: tracing_subscriber::filter::ParseError,
    },
    #[error("a global tracing subscriber is already installed")]
    AlreadyInitialised,
    #[error("exporting over OTLP needs a Tokio runtime: call this from inside one")]
    NoRuntime,
    #[error("OTLP exporter: {0}")]
    Exporter(#[source] opentelemetry_otlp::ExporterBuildError),
    /// The meter provider is shut down (the reason is logged), or the text
    /// could not be written.
    #[error("cannot render metrics")]
    Render(#[source] std::fmt::Error),
    #[error("telemetry flush or shutdown: {}", describe(.traces.as_ref(), .metrics.as_ref()))]
    Shutdown {
        traces: Option<OTelSdkError>,
        metrics: Option<OTelSdkError>,
    },
    #[error("telemetry shutdown gave up after {0:?}")]
    ShutdownTimedOut(Duration),
    #[error("telemetry shutdown cannot start its thread: {0}")]
    ShutdownThread(#[source] std::io::Error),
    #[error("telemetry task failed: {0}")]
    Task(#[source] tokio::task::JoinError),
    #[error("admin endpoint {addr}: {source}")]
    Admin {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

fn describe(traces: Option<&OTelSdkError>, metrics: Option<&OTelSdkError>) -> String {
    match (traces, metrics) {
        (Some(t), Some(m)) => format!("traces: {t}; metrics: {m}"),
        (Some(t), None) => format!("traces: {t}"),
        (None, Some(m)) => format!("metrics: {m}"),
        (None, None) => "failed".to_owned(),
    }
}

/// A log format name other than `text` or `json`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown log format {0:?} (expected text or json)")]
pub struct UnknownLogFormat(pub String);
