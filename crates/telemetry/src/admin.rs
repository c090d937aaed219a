//! The admin HTTP endpoint: `GET /metrics` in the Prometheus text format.
//! Bound to loopback by default; it reveals traffic patterns, not data.

use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, oneshot};
use tokio::task::{JoinHandle, JoinSet};

use crate::error::TelemetryError;
use crate::metrics::{PROMETHEUS_CONTENT_TYPE, PrometheusMetrics};

/// `127.0.0.1:9464`, the port OpenTelemetry's Prometheus exporters use.
pub const DEFAULT_ADMIN_ADDR: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9464));

/// Scrapers are few; anything beyond this is refused at accept.
const MAX_CONNECTIONS: usize = 32;
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// A keep-alive scrape connection is closed after this long regardless.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(300);

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
        let local_addr = listener
            .local_addr()
            .map_err(|source| TelemetryError::Admin {
                addr: DEFAULT_ADMIN_ADDR,
                source,
            })?;
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(accept_loop(listener, metrics, stopped));
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

async fn accept_loop(
    listener: TcpListener,
    metrics: PrometheusMetrics,
    mut stopped: oneshot::Receiver<()>,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
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
                let metrics = metrics.clone();
                connections.spawn(async move {
                    let service = service_fn(move |request| {
                        let response = respond(&metrics, &request);
                        async move { Ok::<_, Infallible>(response) }
                    });
                    let connection = http1::Builder::new()
                        .timer(TokioTimer::new())
                        .header_read_timeout(HEADER_READ_TIMEOUT)
                        .serve_connection(TokioIo::new(stream), service);
                    if let Ok(Err(e)) = tokio::time::timeout(CONNECTION_LIFETIME, connection).await {
                        tracing::debug!(error = %e, "admin connection ended with an error");
                    }
                    drop(slot);
                });
            }
        }
    }
    connections.shutdown().await;
}

fn respond<B>(metrics: &PrometheusMetrics, request: &Request<B>) -> Response<Full<Bytes>> {
    if request.uri().path() != "/metrics" {
        return plain(StatusCode::NOT_FOUND, "not found\n");
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        response.headers_mut().insert(
            hyper::header::ALLOW,
            hyper::header::HeaderValue::from_static("GET, HEAD"),
        );
        return response;
    }
    match metrics.render() {
        Ok(text) => {
            let mut response = Response::new(Full::new(Bytes::from(text)));
            response.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static(PROMETHEUS_CONTENT_TYPE),
            );
            response
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot render metrics");
            plain(StatusCode::INTERNAL_SERVER_ERROR, "cannot render metrics\n")
        }
    }
}

fn plain(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::prometheus_only;
    use crate::metrics::tests::{find, parse_exposition};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A raw HTTP/1.1 exchange: returns status code, headers (lower-cased
    /// names) and body.
    async fn http(addr: SocketAddr, request: &str) -> (u16, Vec<(String, String)>, String) {
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        stream.write_all(request.as_bytes()).await.expect("write");
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
}
