//! The console's listener: [`Console::router`] served by
//! `tongban_trust::http`, the scaffold the admin endpoint shares, within the
//! console's limits. Requests, bodies, deadlines and routing are axum's and
//! tower-http's (`app`); connections are the scaffold's.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;
use tongban_trust::http::{HttpLimits, HttpServer};

use crate::backend::ConsoleError;
use crate::state::Console;

/// A handful of administrators, each browser opening a few connections.
const LIMITS: HttpLimits = HttpLimits {
    max_connections: 64,
    header_read_timeout: Duration::from_secs(10),
    // Cookies are per host, not per port: a browser sends the console
    // whatever other local services set for `localhost` as well.
    max_header_size: 64 * 1024,
    max_connection_age: Duration::from_secs(600),
    // Long enough for a page or a typical export in flight to finish.
    drain_timeout: Duration::from_secs(10),
};

/// A running console listener.
#[derive(Debug)]
pub struct ConsoleServer {
    server: HttpServer,
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
        let server =
            HttpServer::serve("console", listener, console.router(), LIMITS).map_err(|source| {
                ConsoleError::Bind {
                    addr: local_addr,
                    source,
                }
            })?;
        tracing::info!(
            addr = %local_addr,
            hosts = ?console.allowed_hosts(),
            "administrators' console serving"
        );
        Ok(Self { server })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// Stops accepting, closes idle connections, lets requests in flight
    /// finish (at most 10 s) and waits for the task.
    pub async fn shutdown(self) {
        self.server.shutdown().await;
    }
}
