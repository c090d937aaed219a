//! The console's listener: accepts connections and hands each to hyper's
//! HTTP/1.1 server, which runs the axum router (`Console::router`).
//!
//! Why not `axum::serve`: it offers no way to bound how long a client may
//! take to send its request head, nor how many connections are open, nor
//! how long one lives; with it, a few clients that open connections and
//! send nothing (slowloris) would hold the console forever. So this loop
//! stays, and only it: requests, bodies, limits and routing are axum's and
//! tower-http's.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, oneshot};
use tokio::task::{JoinHandle, JoinSet};

use crate::backend::ConsoleError;
use crate::state::Console;

/// Connections served at once; beyond it, new ones are closed at once.
const MAX_CONNECTIONS: usize = 64;
/// A client must have sent its whole request head within this.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// A kept-alive connection is closed after this, however busy.
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
    let service = TowerToHyperService::new(console.router());
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
                let service = service.clone();
                connections.spawn(async move {
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
