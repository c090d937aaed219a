//! The admin HTTP endpoint: `GET /metrics` in the Prometheus (or, when
//! asked, OpenMetrics) text format. Bound to loopback by default; it
//! reveals traffic patterns, not data.
//!
//! Routing, method handling and the request limits are axum and tower-http,
//! like the console. The connections are served by hyper's HTTP/1 builder
//! under a small accept loop of our own (axum's "serve-with-hyper" pattern)
//! rather than `axum::serve`, because `axum::serve` has no header-read
//! timeout (an idle or trickling connection would be held forever, and its
//! graceful shutdown would wait for it) and no cap on connections.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, oneshot};
use tokio::task::{JoinHandle, JoinSet};
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
/// Request line and headers; hyper answers 431 beyond it. (hyper's floor
/// is 8 KiB.)
const MAX_REQUEST_HEAD: usize = 16 * 1024;

/// How much one connection may cost.
#[derive(Debug, Clone, Copy)]
struct Limits {
    /// Scrapers are few; anything beyond this is refused at accept.
    max_connections: usize,
    /// From the connection's start or its previous response to the end of
    /// the next request's headers: an idle or trickling (slowloris)
    /// connection is closed after this.
    header_read_timeout: Duration,
    /// From the headers to the response (408 after it).
    request_timeout: Duration,
    /// A keep-alive scrape connection is closed after this long regardless.
    connection_lifetime: Duration,
}

impl Limits {
    const DEFAULT: Self = Self {
        max_connections: 32,
        header_read_timeout: Duration::from_secs(5),
        request_timeout: Duration::from_secs(10),
        connection_lifetime: Duration::from_secs(300),
    };
}

/// A running admin endpoint.
#[derive(Debug)]
pub struct AdminServer {
    local_addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
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
        Self::serve_with(listener, metrics, Limits::DEFAULT)
    }

    fn serve_with(
        listener: TcpListener,
        metrics: PrometheusMetrics,
        limits: Limits,
    ) -> Result<Self, TelemetryError> {
        let local_addr = listener
            .local_addr()
            .map_err(|source| TelemetryError::Admin {
                addr: DEFAULT_ADMIN_ADDR,
                source,
            })?;
        let (stop, stopped) = oneshot::channel();
        let app = router(metrics, limits);
        let task = tokio::spawn(accept_loop(listener, app, limits, stopped));
        tracing::info!(addr = %local_addr, "admin endpoint serving /metrics");
        Ok(Self {
            local_addr,
            stop: Some(stop),
            task,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, closes open connections and waits for the task.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Err(e) = (&mut self.task).await {
            tracing::warn!(error = %e, "admin endpoint task failed");
        }
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        if self.stop.is_some() {
            self.task.abort();
        }
    }
}

/// `/metrics` (GET and HEAD), 405 for other methods there, 404 elsewhere.
fn router(metrics: PrometheusMetrics, limits: Limits) -> Router {
    Router::new()
        .route("/metrics", get(scrape).fallback(method_not_allowed))
        .fallback(not_found)
        .layer(RequestBodyLimitLayer::new(MAX_REQUEST_BODY))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            limits.request_timeout,
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

async fn accept_loop(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    mut stopped: oneshot::Receiver<()>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut stopped => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // Typically out of file descriptors: back off, keep serving.
                        tracing::warn!(error = %e, "admin endpoint accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    continue;
                };
                let service = TowerToHyperService::new(app.clone());
                connections.spawn(async move {
                    let connection = http1::Builder::new()
                        .timer(TokioTimer::new())
                        .header_read_timeout(limits.header_read_timeout)
                        .max_buf_size(MAX_REQUEST_HEAD)
                        .serve_connection(TokioIo::new(stream), service);
                    if let Ok(Err(e)) = tokio::time::timeout(limits.connection_lifetime, connection).await {
                        tracing::debug!(error = %e, "admin connection ended with an error");
                    }
                    drop(slot);
                });
            }
        }
    }
    connections.shutdown().await;
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

    #[tokio::test]
    async fn garbage_requests_are_refused_without_harm() {
        let (_provider, _metrics, prometheus) = prometheus_only().expect("prometheus");
        let server = AdminServer::bind("127.0.0.1:0".parse().expect("addr"), prometheus)
            .await
            .expect("bind");
        let mut stream = tokio::net::TcpStream::connect(server.local_addr())
            .await
            .expect("connect");
        stream
            .write_all(b"\x16\x03\x01 not http at all\r\n\r\n")
            .await
            .expect("write");
        let mut raw = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut raw))
            .await
            .expect("closed within 5 s");
        let text = String::from_utf8_lossy(&raw);
        assert!(
            text.is_empty() || text.starts_with("HTTP/1.1 400"),
            "{text}"
        );
        // Still serving.
        let (code, _, _) = http(
            server.local_addr(),
            "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert_eq!(code, 200);
        server.shutdown().await;
    }

    /// Limits short enough for a test to wait them out.
    const QUICK: Limits = Limits {
        max_connections: 2,
        header_read_timeout: Duration::from_millis(300),
        request_timeout: Duration::from_secs(2),
        connection_lifetime: Duration::from_secs(30),
    };

    /// The server, and the meter provider its metrics need alive.
    async fn quick_server() -> (AdminServer, SdkMeterProvider) {
        server_with(QUICK).await
    }

    async fn server_with(limits: Limits) -> (AdminServer, SdkMeterProvider) {
        let (provider, _metrics, prometheus) = prometheus_only().expect("prometheus");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let server = AdminServer::serve_with(listener, prometheus, limits).expect("serve");
        (server, provider)
    }

    /// Reads until the server closes the connection; fails if it is still
    /// open after `within`. Returns what was read.
    async fn closed_within(stream: &mut tokio::net::TcpStream, within: Duration) -> String {
        let mut raw = Vec::new();
        match tokio::time::timeout(within, stream.read_to_end(&mut raw)).await {
            Ok(_) => String::from_utf8_lossy(&raw).into_owned(),
            Err(_) => panic!("connection still open after {within:?}"),
        }
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
        let (server, _provider) = quick_server().await;
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
        let (server, _provider) = quick_server().await;
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
        // Headers past the head limit: 431 (or the connection closed).
        let big = "a".repeat(64 * 1024);
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let request = format!("GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n");
        // The server may close before reading it all.
        let _ = stream.write_all(request.as_bytes()).await;
        let answer = closed_within(&mut stream, Duration::from_secs(5)).await;
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 431"),
            "{answer}"
        );
        // Still serving.
        let (code, _, _) = http(
            addr,
            "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert_eq!(code, 200);
        server.shutdown().await;
    }

    #[tokio::test]
    async fn idle_and_trickling_connections_are_dropped() {
        let (server, _provider) = quick_server().await;
        let addr = server.local_addr();
        // Connects and says nothing.
        let mut idle = tokio::net::TcpStream::connect(addr).await.expect("connect");
        // Starts a request and never finishes its headers.
        let mut trickle = tokio::net::TcpStream::connect(addr).await.expect("connect");
        trickle
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
            .await
            .expect("write");
        let started = std::time::Instant::now();
        let (idle_text, trickle_text) =
            tokio::join!(closed_within(&mut idle, Duration::from_secs(3)), async {
                // One header byte at a time, slower than the timeout allows in total.
                for byte in b"X-Slow: aaaaaaaaaa" {
                    if trickle.write_all(&[*byte]).await.is_err() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                closed_within(&mut trickle, Duration::from_secs(3)).await
            });
        assert!(started.elapsed() < Duration::from_secs(3));
        for text in [idle_text, trickle_text] {
            assert!(
                text.is_empty() || text.starts_with("HTTP/1.1 408"),
                "{text}"
            );
        }
        // Their slots are free again: both connections of the cap serve.
        for _ in 0..QUICK.max_connections {
            let (code, _, _) = http(
                addr,
                "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            )
            .await;
            assert_eq!(code, 200);
        }
        server.shutdown().await;
    }

    #[tokio::test]
    async fn connections_beyond_the_cap_are_refused_at_accept() {
        // Idle keep-alive connections are held long enough to fill the cap.
        let (server, _provider) = server_with(Limits {
            header_read_timeout: Duration::from_secs(10),
            ..QUICK
        })
        .await;
        let addr = server.local_addr();
        let mut held = Vec::new();
        for _ in 0..QUICK.max_connections {
            let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
            // A keep-alive request: the connection stays open, holding a slot.
            stream
                .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
                .await
                .expect("write");
            let mut buf = [0u8; 12];
            stream.read_exact(&mut buf).await.expect("answer");
            assert_eq!(&buf, b"HTTP/1.1 200");
            held.push(stream);
        }
        let mut extra = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let _ = extra
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .await;
        let text = closed_within(&mut extra, Duration::from_secs(2)).await;
        assert!(text.is_empty(), "{text}");
        drop(held);
        server.shutdown().await;
    }
}
