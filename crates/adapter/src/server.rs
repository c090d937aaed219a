//! Serving an adapter: the `Adapter` service plus gRPC health and server
//! reflection, on any incoming connection stream (plain TCP here; mTLS from
//! `tongban-trust`). Every call gets a server span, child of the exchange's
//! W3C trace context, and the RPC metrics when the service has them.
//!
//! Health: `""` and `tongban.v1.Adapter` are SERVING while the department
//! database answers.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_stream::Stream;
use tongban_core::Catalogue;
use tongban_proto::v1::adapter_server::AdapterServer;
use tongban_trust::ServerLimits;
use tonic::transport::server::Connected;

use crate::config::{AdapterConfig, ConfigError};
use crate::service::AdapterService;
use crate::store::{DepartmentPool, EvidenceSource, StoreError};

/// How often the health status follows the department database.
const HEALTH_PROBE_INTERVAL: Duration = Duration::from_secs(5);

/// Why an adapter could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("TLS: {0}")]
    Tls(#[from] tongban_trust::TlsError),
    #[error("reflection: {0}")]
    Reflection(String),
    #[error("[server] {0}")]
    Limits(#[from] tongban_trust::LimitsError),
}

/// Builds the service from a config: loads the catalogue, opens the pool,
/// validates and prepares every query.
pub async fn service_from_config(config: &AdapterConfig) -> Result<AdapterService, ServeError> {
    let catalogue = config.load_catalogue()?;
    config.validate(&catalogue)?;
    let pool = DepartmentPool::from_config(config)?;
    service_from_parts(config, &catalogue, pool).await
}

/// Builds the service from a config, a catalogue and an open pool.
pub async fn service_from_parts(
    config: &AdapterConfig,
    catalogue: &Catalogue,
    pool: DepartmentPool,
) -> Result<AdapterService, ServeError> {
    let source = EvidenceSource::new(config, catalogue, pool).await?;
    Ok(AdapterService::new(Arc::new(source)))
}

/// Serves `service` and gRPC health on `incoming` until `shutdown`
/// resolves, with the default [`ServerLimits`]. `incoming` may be a TLS
/// stream (e.g. from `tongban-trust`).
pub async fn serve_with_incoming<I, IO, IE, F>(
    service: AdapterService,
    incoming: I,
    shutdown: F,
) -> Result<(), ServeError>
where
    I: Stream<Item = Result<IO, IE>>,
    IO: AsyncRead + AsyncWrite + Connected + Unpin + Send + 'static,
    IE: Into<Box<dyn std::error::Error + Send + Sync>>,
    F: Future<Output = ()>,
{
    serve_with_incoming_limited(service, incoming, &ServerLimits::default(), shutdown).await
}

/// [`serve_with_incoming`] with the given HTTP/2 and connection limits.
pub async fn serve_with_incoming_limited<I, IO, IE, F>(
    service: AdapterService,
    incoming: I,
    limits: &ServerLimits,
    shutdown: F,
) -> Result<(), ServeError>
where
    I: Stream<Item = Result<IO, IE>>,
    IO: AsyncRead + AsyncWrite + Connected + Unpin + Send + 'static,
    IE: Into<Box<dyn std::error::Error + Send + Sync>>,
    F: Future<Output = ()>,
{
    // Checked before anything is spawned.
    let builder = limits.server_builder()?;
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_serving::<AdapterServer<AdapterService>>()
        .await;
    let (reflection, reflection_v1alpha) =
        tongban_proto::reflection::reflection_services(&SERVED_SERVICES)
            .map_err(|e| ServeError::Reflection(e.to_string()))?;
    let health_only = match service.health_listen() {
        None => None,
        Some(addr) => {
            let listener = tongban_trust::bind_listener(addr)
                .map_err(|source| ServeError::Bind { addr, source })?;
            let health = health.clone();
            Some(tokio::spawn(
                builder
                    .clone()
                    .add_service(health)
                    .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
            ))
        }
    };
    let mut layer = tongban_telemetry::GrpcServerLayer::new();
    if let Some(metrics) = service.metrics() {
        layer = layer.with_metrics(metrics.clone());
    }
    let pool = service.source().pool().clone();
    let probe = tokio::spawn(async move {
        let mut serving = true;
        let mut tick = tokio::time::interval(HEALTH_PROBE_INTERVAL);
        tick.tick().await;
        loop {
            tick.tick().await;
            let ok = pool.ping().await;
            if ok != serving {
                serving = ok;
                let status = if ok {
                    tracing::info!("department database reachable again; health SERVING");
                    tonic_health::ServingStatus::Serving
                } else {
                    tracing::warn!("department database unreachable; health NOT_SERVING");
                    tonic_health::ServingStatus::NotServing
                };
                reporter.set_service_status("", status).await;
                reporter
                    .set_service_status(
                        <AdapterServer<AdapterService> as tonic::server::NamedService>::NAME,
                        status,
                    )
                    .await;
            }
        }
    });
    let result = builder
        .layer(layer)
        .add_service(health)
        .add_service(reflection)
        .add_service(reflection_v1alpha)
        .add_service(service.into_server())
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await;
    probe.abort();
    if let Some(task) = health_only {
        task.abort();
    }
    Ok(result?)
}

/// Serves on a bound TCP listener (plaintext) until `shutdown` resolves.
pub async fn serve(
    service: AdapterService,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    serve_limited(service, listener, &ServerLimits::default(), shutdown).await
}

/// [`serve`] with the given HTTP/2 and connection limits.
pub async fn serve_limited(
    service: AdapterService,
    listener: TcpListener,
    limits: &ServerLimits,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    // Small unary messages: never let Nagle hold a reply back.
    let incoming = tonic::transport::server::TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .with_keepalive(limits.tcp_keepalive());
    serve_with_incoming_limited(service, incoming, limits, shutdown).await
}

/// Serves on a bound TCP listener with mutual TLS until `shutdown`
/// resolves. Only the identities `tls` admits complete the handshake; the
/// certificate files are reloaded when they change or on SIGHUP.
pub async fn serve_tls(
    service: AdapterService,
    listener: TcpListener,
    tls: tongban_trust::TlsServerConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    serve_tls_limited(service, listener, tls, &ServerLimits::default(), shutdown).await
}

/// [`serve_tls`] with the given HTTP/2, connection and handshake limits.
pub async fn serve_tls_limited(
    service: AdapterService,
    listener: TcpListener,
    tls: tongban_trust::TlsServerConfig,
    limits: &ServerLimits,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let reloadable = tls.load_reloadable()?;
    let _reloader = tongban_trust::CertReloader::spawn(
        tls,
        reloadable.clone(),
        tongban_trust::ReloadOptions::default(),
    )
    .map_err(|source| ServeError::Bind {
        addr: listener
            .local_addr()
            .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0))),
        source,
    })?;
    let addr = listener
        .local_addr()
        .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)));
    let incoming = tongban_trust::TlsIncoming::new(listener, reloadable, limits.incoming_options())
        .map_err(|source| ServeError::Bind { addr, source })?;
    serve_with_incoming_limited(service, incoming, limits, shutdown).await
}

/// Serves as `config` says: mutual TLS when it has `[tls]`, else plaintext.
pub async fn serve_configured(
    config: &AdapterConfig,
    service: AdapterService,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    match &config.tls {
        Some(tls) => {
            let tls = tls.server_config()?;
            serve_tls_limited(service, listener, tls, &config.server, shutdown).await
        }
        None => {
            tracing::warn!(department = %config.department, "serving PLAINTEXT: any caller that reaches the port can ask; configure [tls]");
            serve_limited(service, listener, &config.server, shutdown).await
        }
    }
}

/// An adapter running in the background (tests, demo).
#[derive(Debug)]
pub struct RunningAdapter {
    addr: SocketAddr,
    department: String,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), ServeError>>,
}

impl RunningAdapter {
    /// Binds `addr` (use `127.0.0.1:0` for an ephemeral port) and serves
    /// `service` on a spawned task.
    pub async fn spawn(service: AdapterService, addr: SocketAddr) -> Result<Self, ServeError> {
        let listener = tongban_trust::bind_listener(addr)
            .map_err(|source| ServeError::Bind { addr, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| ServeError::Bind { addr, source })?;
        let department = service.source().department().id.clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(service, listener, async {
            // A dropped sender also stops the server.
            let _ = stopped.await;
        }));
        Ok(Self {
            addr,
            department,
            stop: Some(stop),
            task,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<addr>`, for a tonic channel.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn department(&self) -> &str {
        &self.department
    }

    /// Stops accepting, lets in-flight calls finish, and waits.
    pub async fn shutdown(mut self) -> Result<(), ServeError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match (&mut self.task).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "adapter task failed");
                Ok(())
            }
        }
    }
}

impl Drop for RunningAdapter {
    fn drop(&mut self) {
        if self.stop.is_some() {
            self.task.abort();
        }
    }
}

pub use tongban_proto::reflection::REFLECTION_MAX_REQUEST_BYTES;

/// The gRPC services an adapter serves, as server reflection lists them.
pub const SERVED_SERVICES: [&str; 4] = [
    tongban_proto::v1::adapter_server::SERVICE_NAME,
    tonic_health::pb::health_server::SERVICE_NAME,
    tonic_reflection::pb::v1::server_reflection_server::SERVICE_NAME,
    tonic_reflection::pb::v1alpha::server_reflection_server::SERVICE_NAME,
];
