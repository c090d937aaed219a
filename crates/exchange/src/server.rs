//! Starting an exchange node from its configuration: listeners (mutual TLS or
//! plaintext), department channels, policy and certificate reload, health and
//! reflection, telemetry (server spans, metrics, the admin endpoint).
//!
//! Health (`grpc.health.v1.Health`), probed every `health_probe_ms`:
//! `""` and `tongban.v1.Exchange` are SERVING while the audit store answers
//! (nothing can be released without it); `tongban.v1.Adapter/<department>`
//! is SERVING while that department's adapter answers its own health check.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tongban_core::{Caller, Catalogue, CatalogueError};
use tongban_proto::v1::audit_server::AuditServer;
use tongban_proto::v1::exchange_server::ExchangeServer;
use tongban_telemetry::{AdminServer, GrpcServerLayer, Metrics, PrometheusMetrics};
use tongban_trust::{
    CertReloader, PeerIdentity, ReloadOptions, TlsClientConfig, TlsIncoming, TlsServerConfig,
};
use tonic::transport::{Channel, Endpoint, Server};
use tonic_health::ServingStatus;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::server::HealthReporter;

use tongban_audit::AuditLog;

use crate::audit::AuditLogSink;
use crate::audit::{AuditReader, SubjectKeyError};
use crate::audit_service::AuditService;
use crate::auth::{certificate_authenticator, fixed_caller};
use crate::config::{ExchangeConfig, TlsFiles};
use crate::pipeline::{AuditSink, Exchange};
use crate::reload::{PolicyFileError, load_policy, spawn_policy_reloader};
use crate::routing::{Department, Departments};
use crate::service::ExchangeService;
use crate::size_guard::SizeGuard;

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
    #[error(transparent)]
    SubjectKey(#[from] SubjectKeyError),
}

/// The health service name of the exchange itself.
pub const EXCHANGE_HEALTH_SERVICE: &str = "tongban.v1.Exchange";

/// The health service name reporting whether `department` is reachable.
pub fn department_health_service(department: &str) -> String {
    format!("tongban.v1.Adapter/{department}")
}

/// Telemetry handed to a node by its process (see `tongban_telemetry::init`).
/// The default records nothing and serves no admin endpoint.
#[derive(Debug, Clone, Default)]
pub struct StartOptions {
    /// Where the node records its metrics.
    pub metrics: Option<Metrics>,
    /// Served on `[admin] listen` when given and enabled.
    pub prometheus: Option<PrometheusMetrics>,
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
    admin: Option<AdminServer>,
    drain_timeout: Duration,
    _cert_reloader: Option<CertReloader>,
}

impl ExchangeHandle {
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Where the Prometheus endpoint listens, when it runs.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(AdminServer::local_addr)
    }

    pub fn exchange(&self) -> &Exchange {
        &self.exchange
    }

    /// The node's audit log, when it writes one.
    pub fn audit_log(&self) -> Option<&AuditLog> {
        self.audit_log.as_ref()
    }

    /// Stops accepting, lets in-flight requests finish (at most
    /// `drain_timeout_ms`, then the rest are cut off), then commits the
    /// audit log's tail and signs a final checkpoint.
    pub async fn shutdown(mut self) -> Result<(), tonic::transport::Error> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        for task in &self.background {
            task.abort();
        }
        let served = match tokio::time::timeout(self.drain_timeout, &mut self.server).await {
            Ok(Ok(result)) => result,
            Ok(Err(join)) => {
                tracing::error!(error = %join, "exchange server task failed");
                Ok(())
            }
            Err(_) => {
                tracing::warn!(
                    drain_timeout_ms = self.drain_timeout.as_millis(),
                    "requests still in flight after the drain timeout; cutting them off"
                );
                self.server.abort();
                Ok(())
            }
        };
        if let Some(admin) = self.admin.take() {
            admin.shutdown().await;
        }
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
    start_with(config, StartOptions::default()).await
}

/// [`start`] with the process's telemetry.
pub async fn start_with(
    config: ExchangeConfig,
    options: StartOptions,
) -> Result<ExchangeHandle, StartError> {
    let (log, store) = config
        .audit
        .open_log_and_store(&config.node)
        .await
        .map_err(|e| StartError::Audit(e.to_string()))?;
    let pseudonymizer = config.audit.pseudonymizer()?;
    let mut sink = AuditLogSink::new(log, pseudonymizer).with_store(store.clone());
    if let Some(metrics) = &options.metrics {
        sink = sink.with_metrics(metrics.clone());
    }
    let reader = AuditReader::new(sink.clone(), store);
    start_with_audit_options(config, Arc::new(sink), Some(reader), options).await
}

/// Starts an exchange node with the given audit sink (tests use this to put
/// a failing store behind the exchange).
pub async fn start_with_audit(
    config: ExchangeConfig,
    audit: Arc<dyn AuditSink>,
    reader: Option<AuditReader>,
) -> Result<ExchangeHandle, StartError> {
    start_with_audit_options(config, audit, reader, StartOptions::default()).await
}

/// [`start_with_audit`] with the process's telemetry.
pub async fn start_with_audit_options(
    config: ExchangeConfig,
    audit: Arc<dyn AuditSink>,
    reader: Option<AuditReader>,
    options: StartOptions,
) -> Result<ExchangeHandle, StartError> {
    let audit_log = reader.as_ref().map(|r| r.log().clone());
    let metrics = options.metrics.clone().unwrap_or_else(Metrics::disabled);
    let catalogue = Arc::new(load_catalogue(&config)?);
    let policy = load_policy(&config.policy, &catalogue)?;
    let departments = connect_departments(&config, &catalogue, &metrics)?;
    let exchange = Exchange::new(
        config.node.clone(),
        catalogue.clone(),
        policy,
        departments,
        audit,
        metrics.clone(),
    );
    exchange
        .record_initial_policy(&config.policy.display().to_string())
        .await
        .map_err(|e| StartError::Audit(format!("cannot record the policy in force: {e}")))?;
    let poll = Duration::from_millis(config.reload_poll_ms);
    let policy_task =
        spawn_policy_reloader(exchange.clone(), config.policy.clone(), catalogue, poll);

    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<ExchangeServer<ExchangeService>>()
        .await;
    for id in exchange.departments().ids() {
        health
            .set_service_status(department_health_service(id), ServingStatus::NotServing)
            .await;
    }
    let probe_task = tokio::spawn(probe_readiness(
        exchange.clone(),
        health.clone(),
        Duration::from_millis(config.health_probe_ms),
    ));
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(tongban_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| StartError::Config(format!("reflection: {e}")))?;

    let listener =
        tongban_trust::bind_listener(config.listen).map_err(|source| StartError::Bind {
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
            let incoming = TlsIncoming::new(listener, reloadable, config.server.incoming_options())
                .map_err(|source| StartError::Bind {
                    addr: config.listen,
                    source,
                })?;
            (
                certificate_authenticator(),
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

    // Metrics are for operators; a taken admin port must not stop the node
    // from serving, so it is reported loudly instead.
    let admin = match (&options.prometheus, config.admin.enabled) {
        (Some(prometheus), true) => {
            match AdminServer::bind(config.admin.listen, prometheus.clone()).await {
                Ok(admin) => Some(admin),
                Err(e) => {
                    tracing::error!(error = %e, "admin endpoint not started; /metrics unavailable");
                    None
                }
            }
        }
        _ => None,
    };

    let mut background = vec![policy_task, probe_task];
    if let (Some(reader), Some(retention)) = (&reader, config.audit.retention()) {
        background.push(crate::audit::spawn_retention(
            reader.log().clone(),
            retention,
            crate::audit::RETENTION_SWEEP_EVERY,
        ));
    }
    if let Some(addr) = config.health_listen {
        let listener = tongban_trust::bind_listener(addr)
            .map_err(|source| StartError::Bind { addr, source })?;
        // Health alone, plaintext: it reveals readiness, nothing else.
        let health_only = hardened_builder(&config.server)?
            .add_service(health_service.clone())
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
        background.push(tokio::spawn(async move {
            if let Err(e) = health_only.await {
                tracing::error!(error = %e, "plaintext health endpoint failed");
            }
        }));
    }

    let mut service = ExchangeService::new(exchange.clone(), authenticate.clone());
    // Administrators read the log through the node that writes it.
    let audit_service = reader.map(|reader| {
        service = service.clone().with_audit_reader(reader.clone());
        SizeGuard::new(
            AuditServer::new(AuditService::new(
                exchange.clone(),
                authenticate.clone(),
                reader,
            )),
            exchange.clone(),
            authenticate.clone(),
        )
    });
    let exchange_service =
        SizeGuard::new(ExchangeServer::new(service), exchange.clone(), authenticate);
    let router = hardened_builder(&config.server)?
        .layer(GrpcServerLayer::new().with_metrics(metrics))
        .add_service(health_service)
        .add_service(reflection)
        .add_service(exchange_service)
        .add_optional_service(audit_service);
    let server = match listener {
        Listener::Tls(incoming) => {
            tokio::spawn(router.serve_with_incoming_shutdown(incoming, shutdown))
        }
        Listener::Plain(listener) => {
            // Small unary messages: never let Nagle hold a reply back.
            let incoming = tonic::transport::server::TcpIncoming::from(listener)
                .with_nodelay(Some(true))
                .with_keepalive(config.server.tcp_keepalive());
            tokio::spawn(router.serve_with_incoming_shutdown(incoming, shutdown))
        }
    };
    tracing::info!(node = %exchange.node(), addr = %local_addr, tls = config.tls.is_some(), "exchange serving");
    Ok(ExchangeHandle {
        local_addr,
        exchange,
        shutdown: Some(shutdown_tx),
        server,
        background,
        audit_log,
        admin,
        drain_timeout: Duration::from_millis(config.drain_timeout_ms),
        _cert_reloader: cert_reloader,
    })
}

/// `Server::builder()` with the node's `[server]` limits.
fn hardened_builder(limits: &tongban_trust::ServerLimits) -> Result<Server, StartError> {
    limits
        .server_builder()
        .map_err(|e| StartError::Config(format!("[server] {e}")))
}

enum Listener {
    Tls(TlsIncoming),
    Plain(TcpListener),
}

/// Keeps the health statuses current: the audit store for the exchange
/// itself, each adapter's own health for its department. Logs transitions.
async fn probe_readiness(exchange: Exchange, health: HealthReporter, every: Duration) {
    let mut audit_ok = true;
    let mut reachable: std::collections::HashMap<String, bool> = std::collections::HashMap::new();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let audit = exchange.audit_sink().probe();
        let departments = futures::future::join_all(
            exchange
                .departments()
                .iter()
                .map(|d| async move { (d.id().to_owned(), probe_department(d, every).await) }),
        );
        let (audit, departments) = tokio::join!(audit, departments);
        let ok = audit.is_ok();
        if ok != audit_ok {
            audit_ok = ok;
            let status = match &audit {
                Ok(()) => {
                    tracing::info!("audit store reachable again; health SERVING");
                    ServingStatus::Serving
                }
                Err(e) => {
                    tracing::warn!(error = %e, "audit store unreachable; health NOT_SERVING");
                    ServingStatus::NotServing
                }
            };
            health.set_service_status("", status).await;
            health
                .set_service_status(EXCHANGE_HEALTH_SERVICE, status)
                .await;
        }
        for (id, outcome) in departments {
            let ok = outcome.is_ok();
            if reachable.get(&id) == Some(&ok) {
                continue;
            }
            let first = !reachable.contains_key(&id);
            reachable.insert(id.clone(), ok);
            match &outcome {
                Ok(()) if !first => tracing::info!(department = %id, "department reachable again"),
                Ok(()) => {}
                Err(why) => {
                    tracing::warn!(department = %id, error = %why, "department unreachable")
                }
            }
            let status = if ok {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            health
                .set_service_status(department_health_service(&id), status)
                .await;
        }
    }
}

/// Asks the adapter's own health service (which follows its database). An
/// adapter without a health service but answering is reachable.
async fn probe_department(
    department: &crate::routing::Department,
    every: Duration,
) -> Result<(), String> {
    let timeout = department
        .max_timeout()
        .min(every)
        .max(Duration::from_millis(100));
    // Reachable when any endpoint is.
    let probes = department.channels().map(|channel| async move {
        let mut client = HealthClient::new(channel.clone());
        let mut request = tonic::Request::new(HealthCheckRequest {
            service: "tongban.v1.Adapter".into(),
        });
        request.set_timeout(timeout);
        match tokio::time::timeout(timeout, client.check(request)).await {
            Err(_) => Err(format!("no health answer within {timeout:?}")),
            Ok(Ok(answer)) => {
                let status = answer.into_inner().status;
                if status == tonic_health::pb::health_check_response::ServingStatus::Serving as i32
                {
                    Ok(())
                } else {
                    Err(format!("adapter reports health status {status}"))
                }
            }
            Ok(Err(status)) if status.code() == tonic::Code::Unimplemented => Ok(()),
            Ok(Err(status)) => Err(format!("{:?}: {}", status.code(), status.message())),
        }
    });
    let outcomes = futures::future::join_all(probes).await;
    if outcomes.iter().any(Result::is_ok) {
        return Ok(());
    }
    Err(outcomes
        .into_iter()
        .filter_map(Result::err)
        .collect::<Vec<_>>()
        .join("; "))
}

fn connect_departments(
    config: &ExchangeConfig,
    catalogue: &Catalogue,
    metrics: &Metrics,
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
        let mut endpoints = Vec::with_capacity(d.endpoints.len());
        for endpoint in &d.endpoints {
            let channel = match &config.tls {
                Some(files) => tls_channel(endpoint, files, d.identity.as_deref()).map_err(fail)?,
                None => plaintext_channel(endpoint).map_err(fail)?,
            };
            endpoints.push((endpoint.clone(), channel));
        }
        out.push(Department::with_endpoints(
            id.clone(),
            endpoints,
            Duration::from_millis(d.timeout_ms),
            d.resilience(),
            Some(metrics.clone()),
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
