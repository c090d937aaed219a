//! [`HttpServer`]: the one way tongban serves a small HTTP/1.1 service — the
//! administrators' console and the `/metrics` admin endpoint — on a
//! `TcpListener`, with the connection-level bounds routing middleware
//! cannot set.
//!
//! Why here: this crate is where transport hardening lives (the gRPC
//! servers' [`ServerLimits`](crate::ServerLimits), the TLS accept loop's
//! bounds), it sits below both callers (`tongban-telemetry` and
//! `tongban-console` may depend on it; it depends on neither, nor on the
//! exchange), and it needs no web framework: any tower service that
//! answers hyper's requests will do, an axum `Router` included. In
//! `tongban-telemetry` it would make the console depend on the metrics
//! stack for a listener.
//!
//! What maintained crates do and do not cover, so what is left here:
//! - hyper's HTTP/1 connection does the protocol and the per-connection
//!   bounds: the request-head read timeout (slowloris; it also bounds how
//!   long a kept-alive connection may sit idle, since it restarts after
//!   each response), the head size (431), and closing an idle connection
//!   when asked to shut down gracefully.
//! - axum and tower-http do routing, body limits and request deadlines, in
//!   each caller's router.
//! - `axum::serve` (0.8) sets no head timeout, no connection cap and no
//!   connection age, and its graceful shutdown waits for every connection
//!   hyper does not see as idle: one that sent part of a head holds it
//!   forever. hyper-util's `GracefulShutdown` waits alike, and its watcher
//!   is sealed to whole connections, so it cannot retire one by age either.
//!   What remains is the accept loop below: a cap on open connections
//!   (refused at accept), a connection age, and a shutdown that stops
//!   accepting, closes connections with no request in flight at once, lets
//!   requests in flight finish within `drain_timeout`, and then cuts off
//!   the rest.
//!
//! HTTP/1.1 only: browsers and Prometheus speak it to a plaintext port, and
//! HTTP/2 would bring its own set of limits to get right.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, oneshot, watch};
use tokio::task::{JoinHandle, JoinSet};
use tower::{Service, ServiceExt};

#[cfg(test)]
mod tests;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What one HTTP server lets its clients hold. `HttpLimits::DEFAULT` suits a
/// loopback service with a handful of users; callers override fields with
/// struct update syntax.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// Connections open at once; one more is closed as soon as it is
    /// accepted, before anything is read.
    pub max_connections: usize,
    /// From a connection's start, or its previous response, to the end of
    /// the next request's head; an idle or trickling connection is closed
    /// after it (hyper answers 408 when part of a head had arrived).
    pub header_read_timeout: Duration,
    /// Request line and headers, in bytes; beyond it hyper answers 431 and
    /// closes the connection.
    pub max_header_size: usize,
    /// A connection older than this finishes the request it is serving and
    /// is closed (an idle one at once), however busy it is kept.
    pub max_connection_age: Duration,
    /// On shutdown or at `max_connection_age`, how long a request in flight
    /// (its response body included) may take to finish before its
    /// connection is cut off.
    pub drain_timeout: Duration,
}

impl HttpLimits {
    pub const DEFAULT: Self = Self {
        max_connections: 64,
        header_read_timeout: Duration::from_secs(10),
        max_header_size: 16 * 1024,
        max_connection_age: Duration::from_secs(600),
        drain_timeout: Duration::from_secs(5),
    };
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// A running HTTP server: its accept loop and connections on spawned tasks.
/// Dropping it without [`shutdown`](Self::shutdown) aborts them.
#[derive(Debug)]
pub struct HttpServer {
    local_addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl HttpServer {
    /// Serves `service` (e.g. an axum `Router`) on `listener` within
    /// `limits`; `name` labels the server's log lines. Fails only when the
    /// listener's address cannot be read.
    pub fn serve<S, B>(
        name: &'static str,
        listener: TcpListener,
        service: S,
        limits: HttpLimits,
    ) -> io::Result<Self>
    where
        S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        let local_addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(accept_loop(name, listener, service, limits, stopped));
        Ok(Self {
            local_addr,
            stop: Some(stop),
            task,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting (the port is closed when this returns), closes idle
    /// connections at once, waits for requests in flight at most
    /// `drain_timeout`, then cuts off what is left.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Err(e) = (&mut self.task).await {
            tracing::warn!(error = %e, "HTTP server task failed");
        }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        if self.stop.is_some() {
            self.task.abort();
        }
    }
}

async fn accept_loop<S, B>(
    name: &'static str,
    listener: TcpListener,
    service: S,
    limits: HttpLimits,
    mut stopped: oneshot::Receiver<()>,
) where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    // Flipped once, on shutdown; every connection watches it.
    let (drain, draining) = watch::channel(false);
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut stopped => break,
            Some(ended) = connections.join_next(), if !connections.is_empty() => {
                if let Err(e) = ended {
                    tracing::warn!(server = name, error = %e, "HTTP connection task failed");
                }
            }
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // Typically out of file descriptors: back off, keep serving.
                        tracing::warn!(server = name, error = %e, "HTTP accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    tracing::debug!(server = name, "HTTP connection refused: too many open");
                    continue;
                };
                let service = service.clone();
                let draining = draining.clone();
                connections.spawn(async move {
                    serve_connection(name, stream, service, limits, draining).await;
                    drop(slot);
                });
            }
        }
    }
    // Close the port first: nobody new gets in while the rest drain.
    drop(listener);
    let _ = drain.send(true);
    let drained = tokio::time::timeout(limits.drain_timeout, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::debug!(
            server = name,
            open = connections.len(),
            "HTTP connections cut off at shutdown"
        );
    }
    connections.shutdown().await;
}

/// Serves one connection until the client closes it, a limit does, or the
/// server drains.
async fn serve_connection<S, B>(
    name: &'static str,
    stream: TcpStream,
    service: S,
    limits: HttpLimits,
    mut draining: watch::Receiver<bool>,
) where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let in_flight = Arc::new(AtomicUsize::new(0));
    let service = Tracked {
        inner: service,
        in_flight: in_flight.clone(),
    };
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_header_size(limits.max_header_size);
    let mut connection = pin!(builder.serve_connection(TokioIo::new(stream), service));
    let ended = tokio::select! {
        ended = connection.as_mut() => ended,
        () = tokio::time::sleep(limits.max_connection_age) => {
            wind_down(name, connection, &in_flight, limits.drain_timeout).await
        }
        // A closed channel means the server is gone: wind down too.
        _ = draining.changed() => {
            wind_down(name, connection, &in_flight, limits.drain_timeout).await
        }
    };
    if let Err(e) = ended {
        tracing::debug!(server = name, error = %e, "HTTP connection ended with an error");
    }
}

/// Asks the connection to close after the request it is serving, and waits
/// for that only if a request is in flight.
async fn wind_down<C>(
    name: &'static str,
    mut connection: Pin<&mut C>,
    in_flight: &AtomicUsize,
    drain_timeout: Duration,
) -> hyper::Result<()>
where
    C: GracefulConnection,
{
    // A poll first hands the service a request whose head has arrived but
    // was not read yet; then, asked to shut down, hyper closes an idle
    // connection itself on the next poll.
    if let Poll::Ready(ended) = futures::poll!(connection.as_mut()) {
        return ended;
    }
    connection.as_mut().graceful_shutdown();
    if let Poll::Ready(ended) = futures::poll!(connection.as_mut()) {
        return ended;
    }
    if in_flight.load(Ordering::Acquire) == 0 {
        // Nothing in flight: idle, or part of a head (hyper would wait for
        // the rest up to `header_read_timeout`). Drop it now. (A response
        // whose body is done but not yet flushed to a client that stopped
        // reading is cut off too: hyper shows no flush to wait for.)
        return Ok(());
    }
    match tokio::time::timeout(drain_timeout, connection).await {
        Ok(ended) => ended,
        Err(_) => {
            tracing::debug!(
                server = name,
                "HTTP connection cut off: its request outlasted the drain timeout"
            );
            Ok(())
        }
    }
}

/// hyper's HTTP/1 connection, named by what [`wind_down`] needs of it.
trait GracefulConnection: Future<Output = hyper::Result<()>> {
    fn graceful_shutdown(self: Pin<&mut Self>);
}

impl<S, B> GracefulConnection for http1::Connection<TokioIo<TcpStream>, S>
where
    S: hyper::service::HttpService<Incoming, ResBody = B>,
    S::Error: Into<BoxError>,
    B: Body + 'static,
    B::Error: Into<BoxError>,
{
    fn graceful_shutdown(self: Pin<&mut Self>) {
        http1::Connection::graceful_shutdown(self);
    }
}

/// The caller's service, counting the requests of one connection that are
/// in flight: from the call until the response body is done or dropped.
#[derive(Clone)]
struct Tracked<S> {
    inner: S,
    in_flight: Arc<AtomicUsize>,
}

impl<S, B> hyper::service::Service<Request<Incoming>> for Tracked<S>
where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Response = Response<Guarded<B>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let guard = InFlight::enter(self.in_flight.clone());
        let service = self.inner.clone();
        Box::pin(async move {
            let response = service.oneshot(request).await?;
            Ok(response.map(|body| Guarded {
                body: Box::pin(body),
                _guard: guard,
            }))
        })
    }
}

/// One request in flight; counted until dropped.
struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn enter(count: Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::AcqRel);
        Self(count)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its request counted in flight until hyper has
/// sent it (or dropped it).
struct Guarded<B> {
    body: Pin<Box<B>>,
    _guard: InFlight,
}

impl<B: Body> Body for Guarded<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        self.body.as_mut().poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
