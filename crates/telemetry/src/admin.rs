//! The admin HTTP endpoint: `GET /metrics` in the Prometheus (or, when
//! asked, OpenMetrics) text format. Bound to loopback by default; it
//! reveals traffic patterns, not data.
//!
//! Routing, method handling and the request limits are axum and tower-http,
//! like the console; the connections are served by `tongban_trust::http`,
//! the console's scaffold too (connection cap, head timeout and size,
//! connection age, shutdown).

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tongban_trust::http::{HttpLimits, HttpServer};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;

use crate::error::TelemetryError;
use crate::metrics::{ExpositionFormat, PrometheusMetrics};

/// `127.0.0.1:9464`, the port OpenTelemetry's Prometheus exporters use.
pub const DEFAULT_ADMIN_ADDR: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9464));

/// No route takes a body; anything larger than this is refused with 413
/// before it is read.
const MAX_REQUEST_BODY: usize = 1024;
/// From the headers to the response (408 after it).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What scrapers may hold: they are few, send small heads and answer at
/// once.
const LIMITS: HttpLimits = HttpLimits {
    max_connections: 32,
    header_read_timeout: Duration::from_secs(5),
    max_header_size: 16 * 1024,
    max_connection_age: Duration::from_secs(300),
    drain_timeout: Duration::from_secs(5),
};

/// A running admin endpoint.
#[derive(Debug)]
pub struct AdminServer {
    server: HttpServer,
}

impl AdminServer {
    /// Binds `addr` (port 0 picks one) and serves on a spawned task.
    pub async fn bind(
        addr: SocketAddr,
        metrics: PrometheusMetrics,
    ) -> Result<Self, TelemetryError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| TelemetryError::Admin { addr, source })?;
        Self::serve(listener, metrics)
    }

    /// Serves on an already bound listener.
    pub fn serve(
        listener: TcpListener,
        metrics: PrometheusMetrics,
    ) -> Result<Self, TelemetryError> {
        let server =
            HttpServer::serve("admin", listener, router(metrics), LIMITS).map_err(|source| {
                TelemetryError::Admin {
                    addr: DEFAULT_ADMIN_ADDR,
                    source,
                }
            })?;
        tracing::info!(addr = %server.local_addr(), "admin endpoint serving /metrics");
        Ok(Self { server })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// Stops accepting, closes idle connections, lets scrapes in flight
    /// finish (briefly) and waits for the task.
    pub async fn shutdown(self) {
        self.server.shutdown().await;
    }
}

/// `/metrics` (GET and HEAD), 405 for other methods there, 404 elsewhere.
fn router(metrics: PrometheusMetrics) -> Router {
    Router::new()
        .route("/metrics", get(scrape).fallback(method_not_allowed))
        .fallback(not_found)
        .layer(RequestBodyLimitLayer::new(MAX_REQUEST_BODY))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
        .with_state(metrics)
}

async fn scrape(State(metrics): State<PrometheusMetrics>, headers: HeaderMap) -> Response {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let format = ExpositionFormat::negotiate(accept);
    match metrics.render_as(format) {
        Ok(text) => ([(header::CONTENT_TYPE, format.content_type())], text).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot render metrics");
            plain(StatusCode::INTERNAL_SERVER_ERROR, "cannot render metrics\n")
        }
    }
}

async fn method_not_allowed() -> Response {
    let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
    response
}

async fn not_found() -> Response {
    plain(StatusCode::NOT_FOUND, "not found\n")
}

fn plain(status: StatusCode, body: &'static str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::tests::{find, parse_exposition};
    use crate::metrics::{OPENMETRICS_CONTENT_TYPE, PROMETHEUS_CONTENT_TYPE, prometheus_only};
    use opentelemetry_sdk::metrics::SdkMeterProvider;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A raw HTTP/1.1 exchange: returns status code, headers (lower-cased
    /// names) and body.
    async fn http(addr: SocketAddr, request: &str) -> (u16, Vec<(String, String)>, String) {
        http_bytes(addr, request.as_bytes()).await
    }

    async fn http_bytes(addr: SocketAddr, request: &[u8]) -> (u16, Vec<(String, String)>, String) {
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        stream.write_all(request).await.expect("write");
        let mut raw = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut raw))
            .await
            .expect("response within 5 s")
            .expect("read");
        let text = String::from_utf8(raw).expect("utf-8");
        let (head, body) = text.split_once("\r\n\r\n").expect("head and body");
        let mut lines = head.split("\r\n");
        let status = lines.next().expect("status line");
        assert!(status.starts_with("HTTP/1.1 "), "{status}");
        let code = status[9..12].parse().expect("status code");
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        (code, headers, body.to_owned())
    }

    fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    #[tokio::test]
    async fn serves_metrics_and_nothing_else() {
        let (_provider, metrics, prometheus) = prometheus_only().expect("prometheus");
        let server = AdminServer::bind("127.0.0.1:0".parse().expect("addr"), prometheus)
            .await
            .expect("bind");
        let addr = server.local_addr();
        assert!(addr.ip().is_loopback());

        metrics.record_rpc(
            "tongban.v1.Adapter/Query",
            tonic::Code::Ok,
            Duration::from_millis(1),
        );
        let get = "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
        let (code, headers, body) = http(addr, get).await;
        assert_eq!(code, 200);
        assert_eq!(
            header(&headers, "content-type"),
            Some(PROMETHEUS_CONTENT_TYPE)
        );
        let (_, samples) = parse_exposition(&body).unwrap_or_else(|e| panic!("{e}\n{body}"));
        let count = |samples: &[_]| {
            find(
                samples,
                "tongban_rpc_requests_total",
                &[("method", "tongban.v1.Adapter/Query")],
            )
            .map(|s| s.value)
        };
        assert_eq!(count(&samples), Some(1.0));

        metrics.record_rpc(
            "tongban.v1.Adapter/Query",
            tonic::Code::Ok,
            Duration::from_millis(1),
        );
        let (_, _, body) = http(addr, get).await;
        let (_, samples) = parse_exposition(&body).expect("parse");
        assert_eq!(count(&samples), Some(2.0));

        let (code, _, body) = http(
            addr,
            "GET /other HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert_eq!(code, 404);
        assert_eq!(body, "not found\n");
        let (code, headers, _) = http(
            addr,
            "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert_eq!(code, 405);
        assert_eq!(header(&headers, "allow"), Some("GET, HEAD"));
        let (code, _, body) = http(
            addr,
            "HEAD /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert_eq!(code, 200);
        assert!(body.is_empty());
        let (code, _, _) = http(
            addr,
            "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert_eq!(code, 404);

        server.shutdown().await;
        assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    }

    /// The server, and the meter provider its metrics need alive.
    async fn test_server() -> (AdminServer, SdkMeterProvider) {
        let (provider, _metrics, prometheus) = prometheus_only().expect("prometheus");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let server = AdminServer::serve(listener, prometheus).expect("serve");
        (server, provider)
    }

    #[tokio::test]
    async fn prometheus_gets_openmetrics_when_it_asks() {
        let (_provider, metrics, prometheus) = prometheus_only().expect("prometheus");
        let server = AdminServer::bind("127.0.0.1:0".parse().expect("addr"), prometheus)
            .await
            .expect("bind");
        metrics.record_rpc("Svc/M", tonic::Code::Ok, Duration::from_millis(1));
        // Prometheus' default scrape Accept header.
        let get = "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAccept: application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1\r\n\r\n";
        let (code, headers, body) = http(server.local_addr(), get).await;
        assert_eq!(code, 200);
        assert_eq!(
            header(&headers, "content-type"),
            Some(OPENMETRICS_CONTENT_TYPE)
        );
        assert!(body.ends_with("# EOF\n"), "{body}");
        assert!(
            body.contains("# TYPE tongban_rpc_requests counter\n"),
            "{body}"
        );
        assert!(
            body.contains("# UNIT tongban_rpc_duration_seconds seconds\n"),
            "{body}"
        );
        assert!(
            body.contains("tongban_rpc_requests_total{code=\"OK\",method=\"Svc/M\",otel_scope_name=\"tongban\"} 1\n"),
            "{body}"
        );
        server.shutdown().await;
    }

    #[tokio::test]
    async fn wrong_methods_and_paths_are_refused() {
        let (server, _provider) = test_server().await;
        let addr = server.local_addr();
        for method in ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE"] {
            let request = format!(
                "{method} /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            let (code, headers, body) = http(addr, &request).await;
            assert_eq!(code, 405, "{method}");
            assert_eq!(header(&headers, "allow"), Some("GET, HEAD"), "{method}");
            assert_eq!(body, "method not allowed\n", "{method}");
        }
        for path in [
            "/metrics/",
            "/Metrics",
            "/metrics/../admin",
            "//metrics",
            "/metrics%2f",
            "/health",
            "*",
        ] {
            let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            let (code, _, _) = http(addr, &request).await;
            assert!(code == 404 || code == 400, "{path}: {code}");
        }
        // Query strings do not change the route.
        let (code, _, _) = http(
            addr,
            "GET /metrics?name[]=x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert_eq!(code, 200);
        server.shutdown().await;
    }

    #[tokio::test]
    async fn oversize_requests_are_refused() {
        let (server, _provider) = test_server().await;
        let addr = server.local_addr();
        // A body announced larger than the limit: 413 before it is sent.
        for method in ["POST", "GET"] {
            let request = format!(
                "{method} /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\nConnection: close\r\n\r\n"
            );
            let (code, _, _) = http(addr, &request).await;
            assert_eq!(code, 413, "{method}");
        }
        // A chunked body past the limit.
        let mut request =
            b"POST /metrics HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                .to_vec();
        let chunk = vec![b'a'; 4096];
        request.extend_from_slice(b"1000\r\n");
        request.extend_from_slice(&chunk);
        request.extend_from_slice(b"\r\n0\r\n\r\n");
        let (code, _, _) = http_bytes(addr, &request).await;
        assert!(code == 413 || code == 405, "{code}");
        // Still serving.
        let (code, _, _) = http(
            addr,
            "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert_eq!(code, 200);
        server.shutdown().await;
    }
}
