//! W3C trace context across gRPC hops.
//!
//! Client side: [`TraceContextInterceptor`] (or [`inject_trace_context`] on a
//! request's metadata) writes the current span's `traceparent`/`tracestate`.
//! Server side: [`GrpcServerLayer`] opens one server span per request, child
//! of the caller's context when the request carries one, and optionally
//! records the RPC metrics. Handler spans (`#[tracing::instrument]`) nest
//! under it, so one Gather is one trace across the exchange and every
//! department.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Instant;

use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::metrics::Metrics;

/// Installs the W3C `TraceContextPropagator` as the global text-map
/// propagator. [`crate::init`] and [`crate::build`] call it; idempotent.
pub fn install_propagator() {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
}

/// The OpenTelemetry context of the current `tracing` span, or the active
/// OpenTelemetry context when the current span is not traced (e.g. filtered
/// out of the OpenTelemetry layer).
fn current_context() -> Context {
    let cx = tracing::Span::current().context();
    if cx.span().span_context().is_valid() {
        cx
    } else {
        Context::current()
    }
}

/// The trace a piece of work belongs to, held without allocating (a call
/// keeps it from its first step to its audit entries): shown as 32
/// lower-case hex digits, or as nothing outside any traced span.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TraceRef(Option<opentelemetry::trace::TraceId>);

impl std::fmt::Display for TraceRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(id) => write!(f, "{id}"),
            None => Ok(()),
        }
    }
}

/// The trace of the current span.
pub fn current_trace() -> TraceRef {
    let cx = current_context();
    let span = cx.span();
    let span_context = span.span_context();
    TraceRef(span_context.is_valid().then(|| span_context.trace_id()))
}

/// Hex trace id of the current span (32 lower-case hex digits), or an empty
/// string outside any traced span. For the audit log's trace id field.
pub fn current_trace_id() -> String {
    current_trace().to_string()
}

struct MetadataInjector<'a>(&'a mut MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        // Propagator keys and values are valid ASCII metadata; anything else
        // is dropped rather than failing the request.
        if let (Ok(key), Ok(value)) = (
            MetadataKey::from_bytes(key.as_bytes()),
            MetadataValue::try_from(value),
        ) {
            self.0.insert(key, value);
        }
    }
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// Writes the current span's trace context into outgoing gRPC metadata
/// (`traceparent`, and `tracestate` when there is one). Writes nothing
/// outside a traced span.
pub fn inject_trace_context(metadata: &mut MetadataMap) {
    let cx = current_context();
    if !cx.span().span_context().is_valid() {
        return;
    }
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&cx, &mut MetadataInjector(metadata));
    });
}

/// The caller's trace context from incoming headers (`tonic::Request::
/// metadata().as_ref()` or an `http::Request`'s headers). An empty context
/// when there is none or it is malformed.
pub fn extract_trace_context(headers: &http::HeaderMap) -> Context {
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.extract(&HeaderExtractor(headers))
    })
}

/// Makes `span` a child of the trace context carried by `headers`, when
/// there is one. Call before the span is first entered.
pub fn set_parent_from_headers(span: &tracing::Span, headers: &http::HeaderMap) {
    let parent = extract_trace_context(headers);
    if parent.span().span_context().is_valid() {
        // Fails only when the span is disabled or already started; then the
        // span simply keeps its local parent.
        let _ = span.set_parent(parent);
    }
}

/// A tonic client interceptor that injects the current trace context into
/// every request: `AdapterClient::with_interceptor(channel,
/// TraceContextInterceptor)`.
#[derive(Debug, Clone, Copy, Default)]
pub struct TraceContextInterceptor;

impl tonic::service::Interceptor for TraceContextInterceptor {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        inject_trace_context(request.metadata_mut());
        Ok(request)
    }
}

/// Services whose calls are not traced by default: probes and tooling would
/// bury the real traces (they are still counted in the metrics).
pub const UNTRACED_SERVICES: &[&str] = &[
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

/// Tower layer for `tonic::transport::Server::builder().layer(...)`: one
/// `SERVER` span per request (named `package.Service/Method`, child of the
/// caller's W3C context; none for [`UNTRACED_SERVICES`]), and, with
/// [`with_metrics`](Self::with_metrics), the RPC request, error, latency and
/// in-flight metrics.
#[derive(Debug, Clone)]
pub struct GrpcServerLayer {
    metrics: Option<Metrics>,
    untraced: Arc<[String]>,
}

impl Default for GrpcServerLayer {
    fn default() -> Self {
        Self {
            metrics: None,
            untraced: UNTRACED_SERVICES.iter().map(|s| (*s).to_owned()).collect(),
        }
    }
}

impl GrpcServerLayer {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Traces health and reflection calls too.
    pub fn trace_all(mut self) -> Self {
        self.untraced = Arc::from([]);
        self
    }
}

impl<S> tower::Layer<S> for GrpcServerLayer {
    type Service = GrpcServerService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcServerService {
            inner,
            metrics: self.metrics.clone(),
            untraced: self.untraced.clone(),
        }
    }
}

/// The service [`GrpcServerLayer`] wraps around a gRPC router.
#[derive(Debug, Clone)]
pub struct GrpcServerService<S> {
    inner: S,
    metrics: Option<Metrics>,
    untraced: Arc<[String]>,
}

/// Longest request path recorded as given; longer ones are not real methods.
const MAX_PATH: usize = 160;

/// `("package.Service", "Method")` from `/package.Service/Method`.
fn split_path(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix('/')?;
    let (service, method) = rest.split_once('/')?;
    (!service.is_empty() && !method.is_empty() && !method.contains('/') && path.len() <= MAX_PATH)
        .then_some((service, method))
}

/// The status of a unary response: tonic sends failures as trailers-only
/// responses (`grpc-status` in the headers); success carries its status in
/// the trailers, so an absent header means OK.
fn response_code(headers: &http::HeaderMap) -> tonic::Code {
    headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        .map_or(tonic::Code::Ok, tonic::Code::from_i32)
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

impl<S, B, RB> tower::Service<http::Request<B>> for GrpcServerService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
    RB: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        // The clone that was driven to readiness serves this call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let (service, method) = split_path(request.uri().path()).unwrap_or(("unknown", "unknown"));
        let name = format!("{service}/{method}");
        let span = if self.untraced.iter().any(|s| s == service) {
            tracing::Span::none()
        } else {
            server_span(&name, service, method, request.headers())
        };
        let metrics = self.metrics.clone();
        let inflight = metrics.as_ref().map(Metrics::inflight);
        let start = Instant::now();
        let future = {
            let _entered = span.enter();
            inner.call(request)
        };
        let recorder = span.clone();
        Box::pin(
            async move {
                let result = future.await;
                let code = match &result {
                    Ok(response) => response_code(response.headers()),
                    Err(_) => tonic::Code::Internal,
                };
                recorder.set_attribute("rpc.grpc.status_code", code as i64);
                if is_server_error(code) {
                    recorder.set_status(opentelemetry::trace::Status::error(
                        crate::metrics::code_name(code),
                    ));
                }
                if let Some(metrics) = &metrics {
                    // Unknown paths must not grow the label set.
                    let method = if code == tonic::Code::Unimplemented {
                        "unknown"
                    } else {
                        &name
                    };
                    metrics.record_rpc(method, code, start.elapsed());
                }
                drop(inflight);
                result
            }
            .instrument(span),
        )
    }
}

/// The request's server span, child of the caller's trace context.
pub(crate) fn server_span(
    name: &str,
    service: &str,
    method: &str,
    headers: &http::HeaderMap,
) -> tracing::Span {
    // Only `otel.*` and `trace_id` are tracing fields (and so appear in
    // log lines); the RPC attributes go to the OpenTelemetry span alone.
    let span = tracing::info_span!(
        "grpc.server",
        otel.name = %name,
        otel.kind = "server",
        trace_id = tracing::field::Empty,
    );
    set_parent_from_headers(&span, headers);
    span.set_attribute("rpc.system", "grpc");
    span.set_attribute("rpc.service", service.to_owned());
    span.set_attribute("rpc.method", method.to_owned());
    let trace_id = span.context().span().span_context().trace_id();
    if trace_id != opentelemetry::trace::TraceId::INVALID {
        span.record("trace_id", tracing::field::display(trace_id));
    }
    span
}

/// Per the OpenTelemetry RPC conventions, a server span is an error only for
/// codes that mean the server failed, not for the caller's mistakes.
fn is_server_error(code: tonic::Code) -> bool {
    use tonic::Code::*;
    matches!(
        code,
        Unknown | DeadlineExceeded | Unimplemented | Internal | Unavailable | DataLoss
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trace_shows_as_32_hex_digits_and_no_trace_as_nothing() {
        let id =
            opentelemetry::trace::TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap();
        assert_eq!(
            TraceRef(Some(id)).to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(TraceRef::default().to_string(), "");
        // Outside any span there is no trace.
        assert_eq!(current_trace(), TraceRef::default());
        assert_eq!(current_trace_id(), "");
    }

    #[test]
    fn paths_split_into_service_and_method() {
        assert_eq!(
            split_path("/tongban.v1.Adapter/Query"),
            Some(("tongban.v1.Adapter", "Query"))
        );
        assert_eq!(
            split_path("/grpc.health.v1.Health/Check"),
            Some(("grpc.health.v1.Health", "Check"))
        );
        assert_eq!(split_path("/"), None);
        assert_eq!(split_path("/a/b/c"), None);
        assert_eq!(split_path("a/b"), None);
        assert_eq!(split_path(&format!("/{}/M", "s".repeat(200))), None);
    }

    #[test]
    fn response_code_reads_trailers_only_status() {
        let mut headers = http::HeaderMap::new();
        assert_eq!(response_code(&headers), tonic::Code::Ok);
        headers.insert("grpc-status", http::HeaderValue::from_static("7"));
        assert_eq!(response_code(&headers), tonic::Code::PermissionDenied);
    }

    #[test]
    fn inject_then_extract_round_trips() {
        use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};
        install_propagator();
        let trace_id = TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").expect("hex");
        let span_id = SpanId::from_hex("00f067aa0ba902b7").expect("hex");
        let remote = SpanContext::new(
            trace_id,
            span_id,
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        );
        let cx = Context::current().with_remote_span_context(remote);
        let _attached = cx.attach();

        let mut metadata = MetadataMap::new();
        inject_trace_context(&mut metadata);
        assert_eq!(
            metadata.get("traceparent").and_then(|v| v.to_str().ok()),
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        );
        assert_eq!(current_trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");

        let extracted = extract_trace_context(metadata.as_ref());
        let extracted_span = extracted.span();
        let sc = extracted_span.span_context();
        assert!(sc.is_remote());
        assert_eq!(sc.trace_id(), trace_id);
        assert_eq!(sc.span_id(), span_id);
    }

    #[test]
    fn nothing_is_injected_outside_a_trace() {
        install_propagator();
        let mut metadata = MetadataMap::new();
        inject_trace_context(&mut metadata);
        assert!(metadata.is_empty());
        assert_eq!(current_trace_id(), "");
    }

    #[test]
    fn malformed_traceparent_is_ignored() {
        install_propagator();
        let mut headers = http::HeaderMap::new();
        headers.insert("traceparent", http::HeaderValue::from_static("00-zz-yy-01"));
        assert!(
            !extract_trace_context(&headers)
                .span()
                .span_context()
                .is_valid()
        );
    }
}
