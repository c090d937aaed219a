//! Test support: an in-process OTLP/gRPC receiver (the collector's
//! `TraceService` and `MetricsService`) on `127.0.0.1:0` that keeps what it
//! is sent, so tests can assert trace ids, span names and parentage.
//! Enabled by the `test-support` feature.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;

/// One span as the collector received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedSpan {
    /// `service.name` of the exporting resource.
    pub service_name: String,
    pub name: String,
    /// 32 lower-case hex digits.
    pub trace_id: String,
    /// 16 lower-case hex digits.
    pub span_id: String,
    /// Empty for a root span.
    pub parent_span_id: String,
    /// OTLP `SpanKind` (1 internal, 2 server, 3 client).
    pub kind: i32,
    /// Attributes rendered as text.
    pub attributes: Vec<(String, String)>,
    /// OTLP status code (0 unset, 1 ok, 2 error).
    pub status_code: i32,
}

impl ReceivedSpan {
    pub const KIND_INTERNAL: i32 = 1;
    pub const KIND_SERVER: i32 = 2;
    pub const KIND_CLIENT: i32 = 3;

    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub const STATUS_ERROR: i32 = 2;

    pub fn is_root(&self) -> bool {
        self.parent_span_id.is_empty()
    }
}

#[derive(Debug, Default)]
struct Received {
    spans: Mutex<Vec<ReceivedSpan>>,
    metrics: Mutex<Vec<ExportMetricsServiceRequest>>,
    arrived: Notify,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking test thread must not hide what was received.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn text(value: Option<&AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn attributes(kvs: &[KeyValue]) -> Vec<(String, String)> {
    kvs.iter()
        .map(|kv| (kv.key.clone(), text(kv.value.as_ref())))
        .collect()
}

#[derive(Debug, Clone)]
struct Collector(Arc<Received>);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut received = Vec::new();
        for resource_spans in request.into_inner().resource_spans {
            let resource = resource_spans
                .resource
                .map(|r| attributes(&r.attributes))
                .unwrap_or_default();
            let service_name = resource
                .iter()
                .find(|(k, _)| k == "service.name")
                .map(|(_, v)| v.clone())
                .unwrap_or_default();
            for scope_spans in resource_spans.scope_spans {
                for span in scope_spans.spans {
                    received.push(ReceivedSpan {
                        service_name: service_name.clone(),
                        name: span.name,
                        trace_id: hex::encode(&span.trace_id),
                        span_id: hex::encode(&span.span_id),
                        parent_span_id: hex::encode(&span.parent_span_id),
                        kind: span.kind,
                        attributes: attributes(&span.attributes),
                        status_code: span.status.map_or(0, |s| s.code),
                    });
                }
            }
        }
        lock(&self.0.spans).extend(received);
        self.0.arrived.notify_waiters();
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

#[tonic::async_trait]
impl MetricsService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        lock(&self.0.metrics).push(request.into_inner());
        self.0.arrived.notify_waiters();
        Ok(tonic::Response::new(ExportMetricsServiceResponse {
            partial_success: None,
        }))
    }
}

/// An OTLP/gRPC receiver running on a spawned task.
#[derive(Debug)]
pub struct OtlpReceiver {
    addr: SocketAddr,
    received: Arc<Received>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl OtlpReceiver {
    /// Listens on `127.0.0.1:0`.
    pub async fn start() -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let received = Arc::new(Received::default());
        let collector = Collector(received.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(collector.clone()))
                .add_service(MetricsServiceServer::new(collector))
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::TcpListenerStream::new(listener),
                    async {
                        let _ = stopped.await;
                    },
                ),
        );
        Ok(Self {
            addr,
            received,
            stop: Some(stop),
            task,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>`, for `TelemetryOptions::otlp_endpoint`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        lock(&self.received.spans).clone()
    }

    /// Every metrics export received so far.
    pub fn metric_exports(&self) -> Vec<ExportMetricsServiceRequest> {
        lock(&self.received.metrics).clone()
    }

    /// Names of every metric received so far.
    pub fn metric_names(&self) -> Vec<String> {
        let mut names: Vec<String> = lock(&self.received.metrics)
            .iter()
            .flat_map(|r| &r.resource_metrics)
            .flat_map(|r| &r.scope_metrics)
            .flat_map(|s| &s.metrics)
            .map(|m| m.name.clone())
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// Waits until the received spans satisfy `done`, at most `timeout`;
    /// returns the spans either way.
    pub async fn wait_for_spans(
        &self,
        timeout: Duration,
        done: impl Fn(&[ReceivedSpan]) -> bool,
    ) -> Vec<ReceivedSpan> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let arrived = self.received.arrived.notified();
            let spans = self.spans();
            if done(&spans) {
                return spans;
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                return self.spans();
            }
        }
    }

    /// Waits until a metric named `name` has arrived, at most `timeout`.
    pub async fn wait_for_metric(&self, name: &str, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let arrived = self.received.arrived.notified();
            if self.metric_names().iter().any(|n| n == name) {
                return true;
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                return self.metric_names().iter().any(|n| n == name);
            }
        }
    }

    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        if self.stop.is_some() {
            self.task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;
    use tracing::Instrument;

    use super::*;
    use crate::setup::LogOutput;
    use crate::{
        GrpcServerLayer, TelemetryOptions, TraceContextInterceptor, build, current_trace_id,
    };

    /// A health server behind [`GrpcServerLayer`], with its metrics.
    async fn health_server(layer: GrpcServerLayer) -> (SocketAddr, oneshot::Sender<()>) {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (_reporter, health) = tonic_health::server::health_reporter();
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(
            tonic::transport::Server::builder()
                .layer(layer)
                .add_service(health)
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::TcpListenerStream::new(listener),
                    async {
                        let _ = stopped.await;
                    },
                ),
        );
        (addr, stop)
    }

    fn options(service: &str, endpoint: &str) -> TelemetryOptions {
        let mut options = TelemetryOptions::new(service);
        options.otlp_endpoint = Some(endpoint.to_owned());
        options.log_output = LogOutput::TestWriter;
        options.metrics_export_interval = Some(Duration::from_secs(3600));
        options
    }

    // One thread: every task (client, server connections) runs where the
    // thread-local dispatch is set.
    #[tokio::test(flavor = "current_thread")]
    async fn two_hops_make_one_trace_with_correct_parentage() {
        let receiver = OtlpReceiver::start().await.expect("receiver");
        let telemetry = build(options("tongban-test", &receiver.endpoint())).expect("telemetry");
        assert!(telemetry.guard().exporting_traces());
        let _dispatch = tracing::dispatcher::set_default(telemetry.dispatch());
        let layer = GrpcServerLayer::new()
            .with_metrics(telemetry.metrics().clone())
            .trace_all();
        let (addr, stop) = health_server(layer).await;

        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .expect("endpoint")
            .connect()
            .await
            .expect("connect");
        let mut client = HealthClient::with_interceptor(channel, TraceContextInterceptor);

        let root = tracing::info_span!("service_point.gather");
        let (trace_in_root, trace_in_client) = async {
            let in_root = current_trace_id();
            let in_client = async {
                client
                    .check(HealthCheckRequest {
                        service: String::new(),
                    })
                    .await
                    .expect("health check");
                current_trace_id()
            }
            .instrument(tracing::info_span!(
                "department.query",
                otel.kind = "client",
                department = "police"
            ))
            .await;
            (in_root, in_client)
        }
        .instrument(root)
        .await;
        assert_eq!(trace_in_root.len(), 32);
        assert_eq!(trace_in_root, trace_in_client);

        // A call outside any span starts a trace of its own on the server.
        client
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .expect("health check");

        telemetry.guard().force_flush_async().await.expect("flush");
        let spans = receiver
            .wait_for_spans(Duration::from_secs(10), |s| s.len() >= 4)
            .await;
        assert_eq!(spans.len(), 4, "{spans:#?}");

        let by_name = |name: &str| -> Vec<&ReceivedSpan> {
            spans.iter().filter(|s| s.name == name).collect()
        };
        let [root] = by_name("service_point.gather")[..] else {
            panic!("one root span: {spans:#?}")
        };
        let [client_span] = by_name("department.query")[..] else {
            panic!("one client span: {spans:#?}")
        };
        let servers = by_name("grpc.health.v1.Health/Check");
        assert_eq!(servers.len(), 2, "{spans:#?}");
        let (joined, own): (Vec<&ReceivedSpan>, Vec<&ReceivedSpan>) = servers
            .into_iter()
            .partition(|s| s.trace_id == root.trace_id);
        let ([server], [lone]) = (&joined[..], &own[..]) else {
            panic!("one joined, one separate: {spans:#?}")
        };

        assert!(root.is_root());
        assert_eq!(root.trace_id, trace_in_root);
        assert_eq!(client_span.trace_id, root.trace_id);
        assert_eq!(client_span.parent_span_id, root.span_id);
        assert_eq!(client_span.kind, ReceivedSpan::KIND_CLIENT);
        assert_eq!(server.parent_span_id, client_span.span_id);
        assert_eq!(server.kind, ReceivedSpan::KIND_SERVER);
        assert_eq!(server.service_name, "tongban-test");
        assert_eq!(server.attribute("rpc.system"), Some("grpc"));
        assert_eq!(
            server.attribute("rpc.service"),
            Some("grpc.health.v1.Health")
        );
        assert_eq!(server.attribute("rpc.method"), Some("Check"));
        assert_eq!(server.attribute("rpc.grpc.status_code"), Some("0"));
        // Recorded as a field, so log lines inside the request carry it.
        assert_eq!(server.attribute("trace_id"), Some(root.trace_id.as_str()));
        assert!(lone.is_root());
        assert_ne!(lone.trace_id, root.trace_id);

        // The layer counted both requests.
        let text = telemetry.guard().prometheus().render().expect("render");
        let (_, samples) = crate::metrics::tests::parse_exposition(&text).expect("parse");
        let served = crate::metrics::tests::find(
            &samples,
            "tongban_rpc_requests_total",
            &[("method", "grpc.health.v1.Health/Check"), ("code", "OK")],
        );
        assert_eq!(served.map(|s| s.value), Some(2.0));
        assert_eq!(
            crate::metrics::tests::find(&samples, "tongban_rpc_inflight", &[]).map(|s| s.value),
            Some(0.0)
        );

        let _ = stop.send(());
        let (_, guard) = telemetry.into_parts();
        guard.shutdown_async().await.expect("shutdown");
        receiver.shutdown().await;
    }

    #[tokio::test(flavor = "current_thread")]
    async fn metrics_are_pushed_over_otlp_and_health_checks_are_counted_not_traced() {
        let receiver = OtlpReceiver::start().await.expect("receiver");
        let telemetry = build(options("tongban-test", &receiver.endpoint())).expect("telemetry");
        assert!(telemetry.guard().exporting_metrics());
        let _dispatch = tracing::dispatcher::set_default(telemetry.dispatch());
        // Health checks are counted but, by default, not traced.
        let (addr, stop) =
            health_server(GrpcServerLayer::new().with_metrics(telemetry.metrics().clone())).await;
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .expect("endpoint")
            .connect()
            .await
            .expect("connect");
        let mut client = HealthClient::new(channel);
        let unknown = client
            .check(HealthCheckRequest {
                service: "no.such.Service".into(),
            })
            .await
            .expect_err("unknown service");
        assert_eq!(unknown.code(), tonic::Code::NotFound);
        telemetry.metrics().record_denial("NOT_GRANTED");
        drop(tracing::info_span!("marker").entered());

        telemetry.guard().force_flush_async().await.expect("flush");
        assert!(
            receiver
                .wait_for_metric("tongban.rpc.errors", Duration::from_secs(10))
                .await
        );
        let names = receiver.metric_names();
        assert!(
            names.contains(&"tongban.policy.denials".to_owned()),
            "{names:?}"
        );
        let spans = receiver
            .wait_for_spans(Duration::from_secs(10), |s| !s.is_empty())
            .await;
        let [marker] = &spans[..] else {
            panic!("only the marker span: {spans:#?}")
        };
        assert_eq!(marker.name, "marker");
        let text = telemetry.guard().prometheus().render().expect("render");
        let (_, samples) = crate::metrics::tests::parse_exposition(&text).expect("parse");
        let errors = crate::metrics::tests::find(
            &samples,
            "tongban_rpc_errors_total",
            &[
                ("method", "grpc.health.v1.Health/Check"),
                ("code", "NOT_FOUND"),
            ],
        );
        assert_eq!(errors.map(|s| s.value), Some(1.0));

        let _ = stop.send(());
        let (_, guard) = telemetry.into_parts();
        guard.shutdown_async().await.expect("shutdown");
        receiver.shutdown().await;
    }

    #[tokio::test(flavor = "current_thread")]
    async fn shutdown_is_bounded_when_the_collector_is_gone() {
        let receiver = OtlpReceiver::start().await.expect("receiver");
        let endpoint = receiver.endpoint();
        receiver.shutdown().await;
        let mut options = options("tongban-test", &endpoint);
        options.shutdown_timeout = Duration::from_millis(500);
        let telemetry = build(options).expect("telemetry");
        {
            let _dispatch = tracing::dispatcher::set_default(telemetry.dispatch());
            let _span = tracing::info_span!("orphan").entered();
        }
        let (_, guard) = telemetry.into_parts();
        let start = std::time::Instant::now();
        let _ = guard.shutdown_async().await;
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "{:?}",
            start.elapsed()
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn server_failures_mark_the_span_as_an_error() {
        use tower::{Layer, Service, ServiceExt};
        let receiver = OtlpReceiver::start().await.expect("receiver");
        let telemetry = build(options("tongban-test", &receiver.endpoint())).expect("telemetry");
        let _dispatch = tracing::dispatcher::set_default(telemetry.dispatch());
        let failing = tower::service_fn(|_request: http::Request<()>| async {
            let mut response = http::Response::new(());
            response
                .headers_mut()
                .insert("grpc-status", http::HeaderValue::from_static("13"));
            Ok::<_, std::convert::Infallible>(response)
        });
        let mut service = GrpcServerLayer::new()
            .with_metrics(telemetry.metrics().clone())
            .layer(failing);
        let request = http::Request::builder()
            .uri("/tongban.v1.Adapter/Query")
            .body(())
            .expect("request");
        let response = service
            .ready()
            .await
            .expect("ready")
            .call(request)
            .await
            .expect("call");
        assert_eq!(response.headers()["grpc-status"], "13");

        telemetry.guard().force_flush_async().await.expect("flush");
        let spans = receiver
            .wait_for_spans(Duration::from_secs(10), |s| !s.is_empty())
            .await;
        let [span] = &spans[..] else {
            panic!("{spans:#?}")
        };
        assert_eq!(span.name, "tongban.v1.Adapter/Query");
        assert_eq!(span.status_code, ReceivedSpan::STATUS_ERROR);
        assert_eq!(span.attribute("rpc.grpc.status_code"), Some("13"));
        let text = telemetry.guard().prometheus().render().expect("render");
        let (_, samples) = crate::metrics::tests::parse_exposition(&text).expect("parse");
        let errors = crate::metrics::tests::find(
            &samples,
            "tongban_rpc_errors_total",
            &[("method", "tongban.v1.Adapter/Query"), ("code", "INTERNAL")],
        );
        assert_eq!(errors.map(|s| s.value), Some(1.0));
        let (_, guard) = telemetry.into_parts();
        guard.shutdown_async().await.expect("shutdown");
        receiver.shutdown().await;
    }
}
