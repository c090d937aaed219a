//! Installing the subscriber and the OpenTelemetry providers, and tearing
//! them down within a bound.

use std::str::FromStr;
use std::time::Duration;

use opentelemetry::metrics::MeterProvider as _;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkError;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Dispatch;
use tracing_subscriber::layer::{Layered, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

use crate::error::{TelemetryError, UnknownLogFormat};
use crate::metrics::{Metrics, PrometheusMetrics};
use crate::propagation::install_propagator;

/// Instrumentation scope of every tongban span and metric.
const SCOPE: &str = "tongban";

/// Noise that must not become spans: the HTTP/2 and gRPC machinery (the OTLP
/// exporter's own calls included, which would otherwise trace themselves).
const TRACE_NOISE: &[&str] = &[
    "h2=off",
    "hyper=off",
    "hyper_util=off",
    "tonic=off",
    "tower=off",
    "opentelemetry=off",
    "opentelemetry_sdk=off",
    "opentelemetry_otlp=off",
];

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

impl FromStr for LogFormat {
    type Err = UnknownLogFormat;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            other => Err(UnknownLogFormat(other.to_owned())),
        }
    }
}

/// Where log lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogOutput {
    #[default]
    Stderr,
    /// Through the test harness's captured output.
    TestWriter,
    /// Nowhere (spans and metrics still work).
    Off,
}

/// What [`init`] and [`build`] set up.
#[derive(Debug, Clone)]
pub struct TelemetryOptions {
    /// `service.name` of every span and metric, e.g. `tongban-exchange`.
    /// `OTEL_SERVICE_NAME` (or `service.name` in `OTEL_RESOURCE_ATTRIBUTES`)
    /// overrides it.
    pub service_name: String,
    /// Log filter when `RUST_LOG` is unset, in `RUST_LOG` syntax.
    pub default_log_filter: String,
    pub log_format: LogFormat,
    pub log_output: LogOutput,
    /// Which spans are exported, in `RUST_LOG` syntax. Separate from the log
    /// filter so quiet logs do not break traces.
    pub trace_filter: String,
    /// OTLP/gRPC collector endpoint (`http://host:4317`). Wins over the
    /// `OTEL_EXPORTER_OTLP_*ENDPOINT` variables. With neither, nothing is
    /// exported over OTLP (spans still get ids and propagate).
    pub otlp_endpoint: Option<String>,
    /// How often metrics are pushed over OTLP; `None` honours
    /// `OTEL_METRIC_EXPORT_INTERVAL` (default 60 s).
    pub metrics_export_interval: Option<Duration>,
    /// Bound on flushing and shutting down the exporters.
    pub shutdown_timeout: Duration,
}

impl TelemetryOptions {
    pub fn new(service_name: impl Into<String>) -> Self {
        Self {
            service_name: service_name.into(),
            default_log_filter: "info".into(),
            log_format: LogFormat::Text,
            log_output: LogOutput::Stderr,
            trace_filter: "info".into(),
            otlp_endpoint: None,
            metrics_export_interval: None,
            shutdown_timeout: Duration::from_secs(5),
        }
    }
}

type Subscriber = Layered<Vec<Box<dyn Layer<Registry> + Send + Sync>>, Registry>;

/// Installs the global subscriber, the global tracer and meter providers
/// and the W3C propagator. Must run inside a Tokio runtime when an OTLP
/// endpoint is configured. Keep the guard alive for the life of the process;
/// dropping it flushes and shuts the exporters down.
pub fn init(options: TelemetryOptions) -> Result<TelemetryGuard, TelemetryError> {
    let (subscriber, guard) = assemble(&options)?;
    subscriber
        .try_init()
        .map_err(|_| TelemetryError::AlreadyInitialised)?;
    opentelemetry::global::set_tracer_provider(guard.tracer_provider.clone());
    opentelemetry::global::set_meter_provider(guard.meter_provider.clone());
    Ok(guard)
}

/// Builds the same pipeline as [`init`] without installing a global
/// subscriber or providers (the W3C propagator is installed globally, as the
/// propagation helpers use it). Use [`Telemetry::dispatch`] with
/// `tracing::dispatcher::set_default` or `with_default`.
pub fn build(options: TelemetryOptions) -> Result<Telemetry, TelemetryError> {
    let (subscriber, guard) = assemble(&options)?;
    Ok(Telemetry {
        dispatch: Dispatch::new(subscriber),
        guard,
    })
}

/// A telemetry pipeline that is not installed globally.
#[derive(Debug)]
pub struct Telemetry {
    dispatch: Dispatch,
    guard: TelemetryGuard,
}

impl Telemetry {
    pub fn dispatch(&self) -> &Dispatch {
        &self.dispatch
    }

    pub fn guard(&self) -> &TelemetryGuard {
        &self.guard
    }

    pub fn metrics(&self) -> &Metrics {
        self.guard.metrics()
    }

    pub fn into_parts(self) -> (Dispatch, TelemetryGuard) {
        (self.dispatch, self.guard)
    }
}

/// Owns the tracer and meter providers; flushes and shuts them down (within
/// `shutdown_timeout`) on [`shutdown`](Self::shutdown) or drop.
#[derive(Debug)]
pub struct TelemetryGuard {
    tracer_provider: SdkTracerProvider,
    meter_provider: SdkMeterProvider,
    metrics: Metrics,
    prometheus: PrometheusMetrics,
    shutdown_timeout: Duration,
    exporting_traces: bool,
    exporting_metrics: bool,
    shut_down: bool,
}

impl TelemetryGuard {
    /// The typed metrics handle (cheap to clone).
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The Prometheus view of the metrics, for [`crate::AdminServer`].
    pub fn prometheus(&self) -> &PrometheusMetrics {
        &self.prometheus
    }

    pub fn tracer_provider(&self) -> &SdkTracerProvider {
        &self.tracer_provider
    }

    pub fn meter_provider(&self) -> &SdkMeterProvider {
        &self.meter_provider
    }

    /// Whether spans are exported over OTLP.
    pub fn exporting_traces(&self) -> bool {
        self.exporting_traces
    }

    /// Whether metrics are pushed over OTLP.
    pub fn exporting_metrics(&self) -> bool {
        self.exporting_metrics
    }

    /// Exports everything buffered so far. Blocks the calling thread (the
    /// export itself runs on the Tokio runtime the guard was built in, so do
    /// not call it from a current-thread runtime's only thread; use
    /// [`force_flush_async`](Self::force_flush_async) there).
    pub fn force_flush(&self) -> Result<(), TelemetryError> {
        let traces = self.tracer_provider.force_flush();
        let metrics = self.meter_provider.force_flush();
        combine(traces, metrics)
    }

    /// [`force_flush`](Self::force_flush) on a blocking thread, so the
    /// runtime stays free to drive the export.
    pub async fn force_flush_async(&self) -> Result<(), TelemetryError> {
        let tracer_provider = self.tracer_provider.clone();
        let meter_provider = self.meter_provider.clone();
        tokio::task::spawn_blocking(move || {
            combine(tracer_provider.force_flush(), meter_provider.force_flush())
        })
        .await
        .map_err(TelemetryError::Task)?
    }

    /// Flushes and shuts down the exporters, waiting at most about
    /// `shutdown_timeout`. Blocking; see [`shutdown_async`](Self::shutdown_async).
    pub fn shutdown(mut self) -> Result<(), TelemetryError> {
        self.shut_down = true;
        shutdown_bounded(
            self.tracer_provider.clone(),
            self.meter_provider.clone(),
            self.shutdown_timeout,
        )
    }

    /// [`shutdown`](Self::shutdown) without blocking the runtime.
    pub async fn shutdown_async(mut self) -> Result<(), TelemetryError> {
        self.shut_down = true;
        let tracer_provider = self.tracer_provider.clone();
        let meter_provider = self.meter_provider.clone();
        let timeout = self.shutdown_timeout;
        tokio::task::spawn_blocking(move || {
            shutdown_bounded(tracer_provider, meter_provider, timeout)
        })
        .await
        .map_err(TelemetryError::Task)?
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if self.shut_down {
            return;
        }
        let result = shutdown_bounded(
            self.tracer_provider.clone(),
            self.meter_provider.clone(),
            self.shutdown_timeout,
        );
        if let Err(e) = result {
            tracing::warn!(error = %e, "telemetry did not shut down cleanly");
        }
    }
}

fn assemble(options: &TelemetryOptions) -> Result<(Subscriber, TelemetryGuard), TelemetryError> {
    install_propagator();
    let log_filter = log_filter(&options.default_log_filter)?;
    // Parsed even when nothing exports, so a bad filter is reported at once.
    let configured_trace_filter = trace_filter(&options.trace_filter)?;
    let resource = resource(&options.service_name);
    let endpoint = options
        .otlp_endpoint
        .as_deref()
        .map(str::trim)
        .filter(|e| !e.is_empty());

    let exporting_traces = otlp_wanted(
        endpoint,
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_TRACES_EXPORTER",
    );
    // Without an exporter, only the per-request server span takes part in
    // OpenTelemetry: it carries the caller's trace id to the audit log and on
    // to the departments, while handler spans (still seen by the log layer)
    // skip the OpenTelemetry bookkeeping on every poll — a tenth of the
    // exchange's CPU under load.
    let trace_filter = if exporting_traces {
        configured_trace_filter
    } else {
        context_only_filter()
    };
    let mut tracer_builder = SdkTracerProvider::builder().with_resource(resource.clone());
    if !exporting_traces {
        // Nothing will read recorded spans: keep trace ids and W3C
        // propagation (audit entries and logs still carry trace ids) but
        // record nothing, unless a caller asked for its trace to be sampled.
        tracer_builder =
            tracer_builder.with_sampler(opentelemetry_sdk::trace::Sampler::ParentBased(Box::new(
                opentelemetry_sdk::trace::Sampler::AlwaysOff,
            )));
    }
    if exporting_traces {
        require_runtime()?;
        let mut exporter = opentelemetry_otlp::SpanExporter::builder().with_tonic();
        if let Some(endpoint) = endpoint {
            exporter = exporter.with_endpoint(endpoint);
        }
        let exporter = exporter.build().map_err(TelemetryError::Exporter)?;
        tracer_builder = tracer_builder.with_batch_exporter(exporter);
    }
    let tracer_provider = tracer_builder.build();

    let (prometheus, prometheus_reader) = PrometheusMetrics::new();
    let exporting_metrics = otlp_wanted(
        endpoint,
        "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
        "OTEL_METRICS_EXPORTER",
    );
    let mut meter_builder = SdkMeterProvider::builder()
        .with_resource(resource)
        .with_reader(prometheus_reader);
    if exporting_metrics {
        require_runtime()?;
        let mut exporter = opentelemetry_otlp::MetricExporter::builder().with_tonic();
        if let Some(endpoint) = endpoint {
            exporter = exporter.with_endpoint(endpoint);
        }
        let exporter = exporter.build().map_err(TelemetryError::Exporter)?;
        let mut reader = PeriodicReader::builder(exporter);
        if let Some(interval) = options.metrics_export_interval {
            reader = reader.with_interval(interval);
        }
        meter_builder = meter_builder.with_reader(reader.build());
    }
    let meter_provider = meter_builder.build();
    let metrics = Metrics::new(&meter_provider.meter(SCOPE));

    let mut layers: Vec<Box<dyn Layer<Registry> + Send + Sync>> = Vec::with_capacity(2);
    layers.push(
        tracing_opentelemetry::layer()
            .with_tracer(tracer_provider.tracer(SCOPE))
            .with_filter(trace_filter)
            .boxed(),
    );
    if let Some(fmt) = fmt_layer(options.log_format, options.log_output) {
        layers.push(fmt.with_filter(log_filter).boxed());
    }
    let subscriber = Registry::default().with(layers);
    let guard = TelemetryGuard {
        tracer_provider,
        meter_provider,
        metrics,
        prometheus,
        shutdown_timeout: options.shutdown_timeout,
        exporting_traces,
        exporting_metrics,
        shut_down: false,
    };
    Ok((subscriber, guard))
}

fn fmt_layer(
    format: LogFormat,
    output: LogOutput,
) -> Option<Box<dyn Layer<Registry> + Send + Sync>> {
    use std::io::IsTerminal;
    let layer = tracing_subscriber::fmt::layer();
    Some(match (format, output) {
        (_, LogOutput::Off) => return None,
        (LogFormat::Text, LogOutput::Stderr) => layer
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .boxed(),
        (LogFormat::Text, LogOutput::TestWriter) => {
            layer.with_test_writer().with_ansi(false).boxed()
        }
        (LogFormat::Json, LogOutput::Stderr) => layer.json().with_writer(std::io::stderr).boxed(),
        (LogFormat::Json, LogOutput::TestWriter) => layer.json().with_test_writer().boxed(),
    })
}

/// `RUST_LOG` when set, else the default.
fn log_filter(default: &str) -> Result<EnvFilter, TelemetryError> {
    let directives = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| default.to_owned());
    EnvFilter::builder()
        .parse(&directives)
        .map_err(|source| TelemetryError::Filter {
            filter: directives.clone(),
            source,
        })
}

fn trace_filter(directives: &str) -> Result<EnvFilter, TelemetryError> {
    let mut filter =
        EnvFilter::builder()
            .parse(directives)
            .map_err(|source| TelemetryError::Filter {
                filter: directives.to_owned(),
                source,
            })?;
    for noise in TRACE_NOISE {
        // The constant directives are valid; a parse failure would only drop one.
        if let Ok(d) = noise.parse() {
            filter = filter.add_directive(d);
        }
    }
    Ok(filter)
}

/// Just the server spans of [`crate::GrpcServerLayer`] (the carriers of the
/// W3C context); nested spans fall back to the active OpenTelemetry context.
fn context_only_filter() -> EnvFilter {
    EnvFilter::new(format!("off,{SERVER_SPAN_TARGET}=info"))
}

/// The target of the server spans (`info_span!` in `propagation.rs`).
const SERVER_SPAN_TARGET: &str = "tongban_telemetry::propagation";

/// The standard detectors (SDK, `OTEL_SERVICE_NAME`,
/// `OTEL_RESOURCE_ATTRIBUTES`) with our service name unless the environment
/// names one.
fn resource(service_name: &str) -> Resource {
    let detected = Resource::builder().build();
    let named_by_env = detected
        .get(&opentelemetry::Key::from_static_str("service.name"))
        .is_some_and(|v| !v.as_str().starts_with("unknown_service"));
    if named_by_env {
        detected
    } else {
        Resource::builder()
            .with_service_name(service_name.to_owned())
            .build()
    }
}

fn env_set(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| !v.trim().is_empty())
}

/// OTLP export for one signal is on when an endpoint is configured
/// (explicitly or by environment) and neither `OTEL_SDK_DISABLED=true` nor
/// `OTEL_<SIGNAL>_EXPORTER=none` turns it off.
fn otlp_wanted(explicit: Option<&str>, signal_endpoint_var: &str, exporter_var: &str) -> bool {
    let disabled = std::env::var("OTEL_SDK_DISABLED")
        .is_ok_and(|v| v.trim().eq_ignore_ascii_case("true"))
        || std::env::var(exporter_var).is_ok_and(|v| v.trim().eq_ignore_ascii_case("none"));
    !disabled
        && (explicit.is_some()
            || env_set(signal_endpoint_var)
            || env_set("OTEL_EXPORTER_OTLP_ENDPOINT"))
}

/// The tonic exporters spawn their connection onto the current runtime.
fn require_runtime() -> Result<(), TelemetryError> {
    tokio::runtime::Handle::try_current()
        .map(|_| ())
        .map_err(|_| TelemetryError::NoRuntime)
}

/// The error of a flush or shutdown, unless there is none or the provider
/// was already shut down (shutting down twice is harmless).
fn sdk_error(result: Result<(), OTelSdkError>) -> Option<OTelSdkError> {
    match result {
        Ok(()) | Err(OTelSdkError::AlreadyShutdown) => None,
        Err(e) => Some(e),
    }
}

fn combine(
    traces: Result<(), OTelSdkError>,
    metrics: Result<(), OTelSdkError>,
) -> Result<(), TelemetryError> {
    match (sdk_error(traces), sdk_error(metrics)) {
        (None, None) => Ok(()),
        (traces, metrics) => Err(TelemetryError::Shutdown { traces, metrics }),
    }
}

/// Shuts both providers down on a helper thread and waits at most about
/// `timeout` for it: the metrics provider's shutdown has no bound of its own.
fn shutdown_bounded(
    tracer_provider: SdkTracerProvider,
    meter_provider: SdkMeterProvider,
    timeout: Duration,
) -> Result<(), TelemetryError> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("telemetry-shutdown".into())
        .spawn(move || {
            let traces = tracer_provider.shutdown_with_timeout(timeout);
            let metrics = meter_provider.shutdown_with_timeout(timeout);
            let _ = tx.send(combine(traces, metrics));
        })
        .map_err(TelemetryError::ShutdownThread)?;
    // Both providers get `timeout` each; allow for both plus a little.
    let bound = timeout.saturating_mul(2) + Duration::from_millis(250);
    let wait = move || {
        rx.recv_timeout(bound)
            .unwrap_or_else(|_| Err(TelemetryError::ShutdownTimedOut(bound)))
    };
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        // Let the runtime's other workers drive the final export.
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(wait),
        _ => wait(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_format_parses() {
        assert_eq!("text".parse::<LogFormat>(), Ok(LogFormat::Text));
        assert_eq!("JSON".parse::<LogFormat>(), Ok(LogFormat::Json));
        assert!("xml".parse::<LogFormat>().is_err());
    }

    #[test]
    fn bad_filters_are_reported() {
        assert!(matches!(
            trace_filter("info,[bad"),
            Err(TelemetryError::Filter { .. })
        ));
        assert!(trace_filter("info,tongban=debug").is_ok());
    }

    #[test]
    fn explicit_endpoint_turns_export_on() {
        // No test in this crate sets OTEL_* variables, so only the explicit
        // endpoint decides here.
        if env_set("OTEL_EXPORTER_OTLP_ENDPOINT") || env_set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
            return;
        }
        assert!(otlp_wanted(
            Some("http://127.0.0.1:4317"),
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "OTEL_TRACES_EXPORTER"
        ));
        assert!(!otlp_wanted(
            None,
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "OTEL_TRACES_EXPORTER"
        ));
    }

    #[test]
    fn service_name_option_is_used_without_env() {
        if env_set("OTEL_SERVICE_NAME")
            || std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|v| v.contains("service.name"))
        {
            return;
        }
        let r = resource("tongban-adapter-police");
        let name = r.get(&opentelemetry::Key::from_static_str("service.name"));
        assert_eq!(
            name.map(|v| v.as_str().into_owned()),
            Some("tongban-adapter-police".to_owned())
        );
    }

    #[test]
    fn exporting_needs_a_runtime() {
        let mut options = TelemetryOptions::new("t");
        options.otlp_endpoint = Some("http://127.0.0.1:9".into());
        options.log_output = LogOutput::Off;
        assert!(matches!(build(options), Err(TelemetryError::NoRuntime)));
    }

    #[test]
    fn without_endpoint_nothing_is_exported_and_shutdown_is_quick() {
        if env_set("OTEL_EXPORTER_OTLP_ENDPOINT") {
            return;
        }
        let mut options = TelemetryOptions::new("t");
        options.log_output = LogOutput::Off;
        let telemetry = build(options).expect("build");
        assert!(!telemetry.guard().exporting_traces());
        let (_, guard) = telemetry.into_parts();
        let start = std::time::Instant::now();
        guard.shutdown().expect("shutdown");
        assert!(start.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn without_an_exporter_spans_still_carry_and_propagate_trace_ids() {
        let mut options = TelemetryOptions::new("t");
        // The log layer on, so handler spans exist (for it) without taking
        // part in OpenTelemetry.
        options.log_output = LogOutput::TestWriter;
        let telemetry = build(options).expect("build");
        assert!(!telemetry.guard().exporting_traces());
        let caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
        let mut headers = http::HeaderMap::new();
        headers.insert(
            "traceparent",
            http::HeaderValue::from_str(&format!("00-{caller_trace}-00f067aa0ba902b7-00"))
                .expect("header"),
        );
        tracing::dispatcher::with_default(telemetry.dispatch(), || {
            for (headers, expected) in [(headers, Some(caller_trace)), (Default::default(), None)] {
                let server = crate::propagation::server_span("Svc/M", "Svc", "M", &headers);
                let _server = server.enter();
                let handler = tracing::info_span!("handler", field = 1);
                assert!(!handler.is_disabled(), "the log layer sees handler spans");
                let _handler = handler.enter();
                let trace_id = crate::propagation::current_trace_id();
                assert_eq!(trace_id.len(), 32, "{trace_id:?}");
                if let Some(expected) = expected {
                    assert_eq!(trace_id, expected, "the caller's trace continues");
                }
                let mut metadata = tonic::metadata::MetadataMap::new();
                crate::propagation::inject_trace_context(&mut metadata);
                let traceparent = metadata
                    .get("traceparent")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                assert!(traceparent.contains(&trace_id), "{traceparent}");
            }
        });
    }
}
