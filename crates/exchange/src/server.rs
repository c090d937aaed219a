//! Starting an exchange node from its configuration: listeners (mutual TLS or
//! plaintext), department channels, policy and certificate reload, health and
//! reflection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tongban_core::{Caller, Catalogue, CatalogueError};
use tongban_proto::v1::exchange_server::ExchangeServer;
use tongban_trust::{
    CertReloader, IncomingOptions, PeerConnectInfo, PeerIdentity, ReloadOptions, TlsClientConfig,
    TlsIncoming, TlsServerConfig,
};
use tonic::transport::{Channel, Endpoint, Server};

use tongban_audit::AuditLog;

use crate::audit::AuditLogSink;
use crate::config::{ExchangeConfig, TlsFiles};
use crate::error::ExchangeError;
use crate::pipeline::{AuditSink, Exchange};
use crate::reload::{PolicyFileError, load_policy, spawn_policy_reloader};
use crate::routing::{Department, Departments};
use crate::service::{Authenticator, ExchangeService, fixed_caller};

/// Why an exchange node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot read catalogue {path}: {source}")]
    CatalogueRead {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid catalogue: {0}")]
    Catalogue(#[from] CatalogueError),
    #[error(transparent)]
    Policy(#[from] PolicyFileError),
    #[error("department {department}: {message}")]
    Department { department: String, message: String },
    #[error("TLS: {0}")]
    Tls(#[from] tongban_trust::TlsError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{0}")]
    Config(String),
    #[error("{0}")]
    Audit(String),
}

/// A running exchange node.
#[derive(Debug)]
pub struct ExchangeHandle {
    local_addr: SocketAddr,
    exchange: Exchange,
    shutdown: Option<oneshot::Sender<()>>,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
    background: Vec<JoinHandle<()>>,
    audit_log: Option<AuditLog>,
    _cert_reloader: Option<CertReloader>,
}

impl ExchangeHandle {
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn exchange(&self) -> &Exchange {
        &self.exchange
    }

    /// The node's audit log, when it writes one.
    pub fn audit_log(&self) -> Option<&AuditLog> {
        self.audit_log.as_ref()
    }

    /// Stops accepting, lets in-flight requests finish, then commits the
    /// audit log's tail and signs a final checkpoint.
    pub async fn shutdown(mut self) -> Result<(), tonic::transport::Error> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        for task in &self.background {
            task.abort();
        }
        let served = match (&mut self.server).await {
            Ok(result) => result,
            Err(join) => {
                tracing::error!(error = %join, "exchange server task failed");
                Ok(())
            }
        };
        if let Some(log) = &self.audit_log
            && let Err(e) = log.shutdown().await
        {
            tracing::error!(error = %e, "audit log shutdown failed");
        }
        served
    }
}

/// Loads the catalogue named by the config, or the embedded default.
pub fn load_catalogue(config: &ExchangeConfig) -> Result<Catalogue, StartError> {
    match &config.catalogue {
        None => Ok(Catalogue::embedded()),
        Some(path) => {
            let text =
                std::fs::read_to_string(path).map_err(|source| StartError::CatalogueRead {
                    path: path.display().to_string(),
                    source,
                })?;
            Ok(Catalogue::from_toml(&text, &path.display().to_string())?)
        }
    }
}

/// Starts an exchange node on `config.listen` (port 0 picks a free port),
/// writing its audit log as configured.
pub async fn start(config: ExchangeConfig) -> Result<ExchangeHandle, StartError> {
    let log = config
        .audit
        .open_log(&config.node)
        .await
        .map_err(StartError::Audit)?;
    let pseudonymizer = config.audit.pseudonymizer().map_err(StartError::Audit)?;
    let sink = Arc::new(AuditLogSink::new(log.clone(), pseudonymizer));
    start_with_audit(config, sink, Some(log)).await
}

/// Starts an exchange node with the given audit sink (tests use this to put
/// a failing store behind the exchange).
pub async fn start_with_audit(
    config: ExchangeConfig,
    audit: Arc<dyn AuditSink>,
    audit_log: Option<AuditLog>,
) -> Result<ExchangeHandle, StartError> {
    let catalogue = Arc::new(load_catalogue(&config)?);
    let policy = load_policy(&config.policy, &catalogue)?;
    let departments = connect_departments(&config, &catalogue)?;
    let exchange = Exchange::new(
        config.node.clone(),
        catalogue.clone(),
        policy,
        departments,
        audit,
    );
    let poll = Duration::from_millis(config.reload_poll_ms);
    let policy_task =
        spawn_policy_reloader(exchange.clone(), config.policy.clone(), catalogue, poll);

    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<ExchangeServer<ExchangeService>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(tongban_proto::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| StartError::Config(format!("reflection: {e}")))?;

    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| StartError::Bind {
            addr: config.listen,
            source,
        })?;
    let local_addr = listener.local_addr().map_err(|source| StartError::Bind {
        addr: config.listen,
        source,
    })?;
    let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
    let shutdown = async {
        let _ = shutdown_rx.await;
    };

    let (authenticate, listener, cert_reloader) = match &config.tls {
        Some(files) => {
            let source = TlsServerConfig::new(&files.cert, &files.key, &files.ca);
            let reloadable = source.load_reloadable()?;
            let reloader = CertReloader::spawn(
                source,
                reloadable.clone(),
                ReloadOptions {
                    poll_interval: poll,
                    on_sighup: true,
                },
            )
            .map_err(|e| StartError::Config(format!("certificate reloader: {e}")))?;
            let incoming = TlsIncoming::new(listener, reloadable, IncomingOptions::default())
                .map_err(|source| StartError::Bind {
                    addr: config.listen,
                    source,
                })?;
            (
                certificate_authenticator(exchange.clone()),
                Listener::Tls(incoming),
                Some(reloader),
            )
        }
        None => {
            let reference = config.plaintext_caller.as_deref().ok_or_else(|| {
                StartError::Config("plaintext mode needs plaintext_caller".into())
            })?;
            let (_, caller) = Caller::parse_reference(reference)
                .map_err(|e| StartError::Config(format!("plaintext_caller: {e}")))?;
            tracing::warn!(%caller, "serving PLAINTEXT: every request is attributed to plaintext_caller; use [tls] in production");
            (fixed_caller(caller), Listener::Plain(listener), None)
        }
    };

    let service = ExchangeService::new(exchange.clone(), authenticate);
    let router = Server::builder()
        .add_service(health_service)
        .add_service(reflection)
        .add_service(ExchangeServer::new(service));
    let server = match listener {
        Listener::Tls(incoming) => {
            tokio::spawn(router.serve_with_incoming_shutdown(incoming, shutdown))
        }
        Listener::Plain(listener) => {
            let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
            tokio::spawn(router.serve_with_incoming_shutdown(incoming, shutdown))
        }
    };
    tracing::info!(node = %exchange.node(), addr = %local_addr, tls = config.tls.is_some(), "exchange serving");
    Ok(ExchangeHandle {
        local_addr,
        exchange,
        shutdown: Some(shutdown_tx),
        server,
        background: vec![policy_task],
        audit_log,
        _cert_reloader: cert_reloader,
    })
}

enum Listener {
    Tls(TlsIncoming),
    Plain(TcpListener),
}

/// Callers are who their verified certificate says, within the policy's
/// trust domain when it pins one.
fn certificate_authenticator(exchange: Exchange) -> Authenticator {
    Arc::new(move |extensions: &tonic::Extensions| {
        let info = extensions.get::<PeerConnectInfo>().ok_or_else(|| {
            ExchangeError::Unauthenticated(
                "the connection carries no verified client certificate".into(),
            )
        })?;
        let identity = info.identity();
        if let Some(domain) = exchange.policy().trust_domain()
            && identity.trust_domain() != domain
        {
            return Err(ExchangeError::Unauthenticated(format!(
                "certificate identity {identity} is outside trust domain {domain}"
            )));
        }
        Caller::new(identity.org().clone(), identity.unit())
            .map_err(|e| ExchangeError::Unauthenticated(e.to_string()))
    })
}

fn connect_departments(
    config: &ExchangeConfig,
    catalogue: &Catalogue,
) -> Result<Departments, StartError> {
    let mut out = Vec::new();
    for (id, d) in &config.departments {
        let fail = |message: String| StartError::Department {
            department: id.clone(),
            message,
        };
        if catalogue.department(id).is_none() {
            return Err(fail("is not in the catalogue".into()));
        }
        let [endpoint] = d.endpoints.as_slice() else {
            return Err(fail(
                "exactly one endpoint is supported per department".into(),
            ));
        };
        let channel = match &config.tls {
            Some(files) => tls_channel(endpoint, files, d.identity.as_deref()).map_err(fail)?,
            None => plaintext_channel(endpoint).map_err(fail)?,
        };
        out.push(Department::new(
            id.clone(),
            channel,
            Duration::from_millis(d.timeout_ms),
        ));
    }
    for dept in catalogue.departments() {
        if !config.departments.contains_key(&dept.id) {
            tracing::warn!(department = %dept.id, "no adapter configured; its evidence will be UNAVAILABLE");
        }
    }
    Ok(Departments::new(out))
}

fn plaintext_channel(endpoint: &str) -> Result<Channel, String> {
    Ok(Endpoint::from_shared(endpoint.to_owned())
        .map_err(|e| format!("endpoint {endpoint:?}: {e}"))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .connect_lazy())
}

fn tls_channel(
    endpoint: &str,
    files: &TlsFiles,
    identity: Option<&str>,
) -> Result<Channel, String> {
    let expected = identity
        .map(PeerIdentity::parse_uri)
        .transpose()
        .map_err(|e| format!("identity: {e}"))?;
    let tls = TlsClientConfig::new(&files.cert, &files.key, &files.ca);
    tongban_trust::connect_channel_lazy(endpoint, &tls, expected.as_ref())
        .map_err(|e| e.to_string())
}
