/// Why telemetry could not be set up or shut down.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("invalid log filter {filter:?}: {reason}")]
    Filter { filter: String, reason: String },
    #[error("a global tracing subscriber is already installed")]
    AlreadyInitialised,
    #[error("exporting over OTLP needs a Tokio runtime: call this from inside one")]
    NoRuntime,
    #[error("OTLP exporter: {0}")]
    Exporter(String),
    #[error("Prometheus exporter: {0}")]
    Prometheus(String),
    #[error("telemetry shutdown: {0}")]
    Shutdown(String),
    #[error("admin endpoint {addr}: {source}")]
    Admin {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}
