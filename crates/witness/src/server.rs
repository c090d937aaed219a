//! The witness's HTTP interface: `POST /add-checkpoint` (C2SP tlog-witness)
//! and `GET /`, a short status text.
//!
//! Plain HTTP on purpose: the log's signature on the checkpoint
//! authenticates the request, and the cosignature, checked by the client
//! against the witness key it pinned, authenticates the answer; TLS would
//! add no authority either side relies on. Put it behind a TLS proxy if
//! the network needs confidentiality (checkpoints are public anyway).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::net::TcpListener;
use tongban_trust::http::{HttpLimits, HttpServer};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;

use crate::request::MAX_REQUEST_BYTES;
use crate::witness::{Witness, WitnessError};

/// The spec's content type of a 409 answer's tree size.
pub const TLOG_SIZE_CONTENT_TYPE: &str = "text/x.tlog.size";
/// From the request head to the answer (408 after it).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Few clients (the exchange nodes), small requests.
const LIMITS: HttpLimits = HttpLimits {
    max_connections: 64,
    header_read_timeout: Duration::from_secs(5),
    max_header_size: 16 * 1024,
    max_connection_age: Duration::from_secs(600),
    drain_timeout: Duration::from_secs(5),
};

/// A running witness server.
#[derive(Debug)]
pub struct WitnessServer {
    server: HttpServer,
}

impl WitnessServer {
    /// Binds `addr` (port 0 picks one) and serves on a spawned task.
    pub async fn bind(addr: SocketAddr, witness: Arc<Witness>) -> std::io::Result<Self> {
        Self::serve(TcpListener::bind(addr).await?, witness)
    }

    pub fn serve(listener: TcpListener, witness: Arc<Witness>) -> std::io::Result<Self> {
        let server = HttpServer::serve("witness", listener, router(witness), LIMITS)?;
        tracing::info!(addr = %server.local_addr(), "witness serving /add-checkpoint");
        Ok(Self { server })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// Stops accepting, lets requests in flight finish (briefly), waits.
    pub async fn shutdown(self) {
        self.server.shutdown().await;
    }
}

/// The witness's routes.
pub fn router(witness: Arc<Witness>) -> Router {
    Router::new()
        .route("/add-checkpoint", post(add_checkpoint))
        .route("/", get(status))
        .fallback(|| async { plain(StatusCode::NOT_FOUND, "not found\n".into()) })
        .layer(RequestBodyLimitLayer::new(MAX_REQUEST_BYTES))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
        .with_state(witness)
}

fn plain(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

async fn add_checkpoint(State(witness): State<Arc<Witness>>, body: Bytes) -> Response {
    let Ok(text) = String::from_utf8(body.to_vec()) else {
        return plain(StatusCode::BAD_REQUEST, "request is not UTF-8\n".into());
    };
    // Signing and the fsync'd state write block: off the async workers.
    let result = tokio::task::spawn_blocking(move || witness.add_checkpoint(&text)).await;
    match result {
        Ok(Ok(lines)) => plain(StatusCode::OK, lines),
        Ok(Err(WitnessError::Conflict { latest })) => (
            StatusCode::CONFLICT,
            [(header::CONTENT_TYPE, TLOG_SIZE_CONTENT_TYPE)],
            format!("{latest}\n"),
        )
            .into_response(),
        Ok(Err(e)) => {
            let status =
                StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            if status.is_server_error() {
                tracing::warn!(error = %e, "witness failed to handle a checkpoint");
                plain(status, "internal error\n".into())
            } else {
                plain(status, format!("{e}\n"))
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "witness task failed");
            plain(StatusCode::INTERNAL_SERVER_ERROR, "internal error\n".into())
        }
    }
}

async fn status(State(witness): State<Arc<Witness>>) -> Response {
    let stats = witness.stats();
    let mut s = format!(
        "tongban witness {}\nkey {}\ncosigned {} refused {} split-views {} inconsistent {}\n",
        witness.name(),
        witness.key(),
        stats.cosigned,
        stats.refused,
        stats.split_views,
        stats.inconsistent
    );
    for (origin, size) in witness.sizes() {
        s.push_str(&format!("log {origin} {size}\n"));
    }
    plain(StatusCode::OK, s)
}
