//! The console's own HTTP/1.1 listener.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, oneshot};
use tokio::task::{JoinHandle, JoinSet};

use crate::app::{Console, ConsoleError, ConsoleRequest, ConsoleResponse};

const MAX_CONNECTIONS: usize = 64;
const MAX_BODY: usize = 64 * 1024;
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECTION_LIFETIME: Duration = Duration::from_secs(600);

/// A running console listener.
#[derive(Debug)]
pub struct ConsoleServer {
    local_addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl ConsoleServer {
    /// Binds `addr` (port 0 picks one) and serves `console` on a spawned task.
    pub async fn bind(addr: SocketAddr, console: Console) -> Result<Self, ConsoleError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ConsoleError::Bind { addr, source })?;
        Self::serve(listener, console)
    }

    /// Serves `console` on `listener`, answering to the default hosts of the
    /// address it is bound to unless the settings name `allowed_hosts`.
    pub fn serve(listener: TcpListener, console: Console) -> Result<Self, ConsoleError> {
        let local_addr = listener.local_addr().map_err(|source| ConsoleError::Bind {
            addr: crate::DEFAULT_CONSOLE_ADDR,
            source,
        })?;
        let console = console.bound_to(local_addr);
        let (stop, stopped) = oneshot::channel();
        tracing::info!(
            addr = %local_addr,
            hosts = ?console.allowed_hosts(),
            "administrators' console serving"
        );
        let task = tokio::spawn(accept_loop(listener, console, stopped));
        Ok(Self {
            local_addr,
            stop: Some(stop),
            task,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Err(e) = (&mut self.task).await {
            tracing::warn!(error = %e, "console task failed");
        }
    }
}

impl Drop for ConsoleServer {
    fn drop(&mut self) {
        if self.stop.is_some() {
            self.task.abort();
        }
    }
}

async fn accept_loop(listener: TcpListener, console: Console, mut stopped: oneshot::Receiver<()>) {
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
                        tracing::warn!(error = %e, "console accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    continue;
                };
                let console = console.clone();
                connections.spawn(async move {
                    let service = service_fn(move |request| {
                        let console = console.clone();
                        async move { Ok::<_, Infallible>(serve_one(&console, request).await) }
                    });
                    let connection = http1::Builder::new()
                        .timer(TokioTimer::new())
                        .header_read_timeout(HEADER_READ_TIMEOUT)
                        .serve_connection(TokioIo::new(stream), service);
                    if let Ok(Err(e)) = tokio::time::timeout(CONNECTION_LIFETIME, connection).await {
                        tracing::debug!(error = %e, "console connection ended with an error");
                    }
                    drop(slot);
                });
            }
        }
    }
    connections.shutdown().await;
}

async fn serve_one(console: &Console, request: Request<Incoming>) -> ConsoleResponse {
    let (mut parts, body) = request.into_parts();
    // An absolute-form target (`GET http://host/path`) names the host the
    // client means, whatever `Host` says (RFC 9112, 3.2.2): check that one.
    if let Some(authority) = parts.uri.authority()
        && let Ok(host) = hyper::header::HeaderValue::from_str(authority.as_str())
    {
        parts.headers.insert(hyper::header::HOST, host);
    }
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            let mut r = Response::new(Full::new(Bytes::from_static(b"request too large\n")));
            *r.status_mut() = StatusCode::PAYLOAD_TOO_LARGE;
            return r;
        }
    };
    console
        .handle(ConsoleRequest {
            method: parts.method,
            path: parts.uri.path().to_owned(),
            query: parts.uri.query().unwrap_or_default().to_owned(),
            headers: parts.headers,
            body,
        })
        .await
}
