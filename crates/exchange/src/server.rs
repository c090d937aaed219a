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
use tongban_core::{Caller, CallerError, Catalogue, CatalogueError};
use tongban_proto::v1::audit_server::AuditServer;
use tongban_proto::v1::exchange_server::ExchangeServer;
use tongban_proto::v1::transparency_server::TransparencyServer;
use tongban_telemetry::{AdminServer, GrpcServerLayer, Metrics, PrometheusMetrics};
use tongban_trust::{
    CertReloader, IdentityError, LimitsError, PeerIdentity, ReloadOptions, TlsClientConfig,
    TlsIncoming, TlsServerConfig,
};
use tonic::transport::{Channel, Endpoint, Server};
use tonic_health::ServingStatus;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::server::HealthReporter;

use tongban_audit::AuditLog;

use crate::audit::{AuditLogSink, AuditOpenError, AuditReader, SubjectKeyError};
use crate::audit_service::AuditService;
use crate::auth::{certificate_authenticator, fixed_caller};
use crate::config::{ExchangeConfig, TlsFiles};
use crate::error::AuditSinkError;
use crate::http_json::HttpJsonLayer;
use crate::pipeline::{AuditSink, Exchange};
use crate::reload::{PolicyFileError, load_policy, spawn_policy_reloader};
use crate::routing::{Department, Departments};
use crate::service::ExchangeService;
use crate::size_guard::SizeGuard;
use crate::transparency_service::TransparencyService;

/// Why an exchange node could not start. Variants whose message already
/// prints their cause do not also return it as `source()`, so a report of
/// the whole chain (`{:#}`) prints it once.
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
    #[error("department {department}: {problem}")]
    Department {
        department: String,
        problem: DepartmentError,
    },
    #[error("TLS: {0}")]
    Tls(#[from] tongban_trust::TlsError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("reflection: {0}")]
    Reflection(tonic_reflection::server::Error),
    #[error("certificate reloader: {0}")]
    CertReloader(std::io::Error),
    #[error("plaintext mode needs plaintext_caller")]
    NoPlaintextCaller,
    #[error("[[audit.witnesses]]: {0}")]
    Witnesses(String),
    #[error("plaintext_caller: {0}")]
    PlaintextCaller(CallerError),
    #[error("[server] {0}")]
    ServerLimits(LimitsError),
    #[error("{0}")]
    Audit(AuditOpenError),
    #[error("cannot record the policy in force: {0}")]
    RecordPolicy(AuditSinkError),
    #[error(transparent)]
    SubjectKey(#[from] SubjectKeyError),
}

/// Why a department's adapter channels could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum DepartmentError {
    #[error("is not in the catalogue")]
    NotInCatalogue,
    #[error("endpoint {endpoint:?}: {error}")]
    Endpoint {
        endpoint: String,
        error: tonic::transport::Error,
    },
    #[error("identity: {0}")]
    Identity(IdentityError),
    #[error("{0}")]
    Channel(tongban_trust::TlsError),
}

/// The health service name of the exchange itself.
pub const EXCHANGE_HEALTH_SERVICE: &str = "tongban.v1.Exchange";

pub use tongban_proto::reflection::REFLECTION_MAX_REQUEST_BYTES;

/// The gRPC services a node serves on its main port, as server reflection
/// lists them: `Audit` and `Transparency` only with the node's own audit
/// reader (a node started with an audit override serves neither).
pub fn served_services(serves_audit: bool) -> Vec<&'static str> {
    let mut names = vec![tongban_proto::v1::exchange_server::SERVICE_NAME];
    if serves_audit {
        names.push(tongban_proto::v1::audit_server::SERVICE_NAME);
        names.push(tongban_proto::v1::transparency_server::SERVICE_NAME);
    }
    names.extend([
        tonic_health::pb::health_server::SERVICE_NAME,
        tonic_reflection::pb::v1::server_reflection_server::SERVICE_NAME,
        tonic_reflection::pb::v1alpha::server_reflection_server::SERVICE_NAME,
    ]);
    names
}

/// The health service name reporting whether `department` is reachable.
pub fn department_health_service(department: &str) -> String {
    format!("tongban.v1.Adapter/{department}")
}

/// What a node starts with besides its configuration. The default writes
/// the audit log `[audit]` names, records no metrics and serves no admin
/// endpoint.
#[derive(Debug, Clone, Default)]
pub struct StartOptions {
    /// Where the node records its metrics (see `tongban_telemetry::init`).
    pub metrics: Option<Metrics>,
    /// Served on `[admin] listen` when given and enabled.
    pub prometheus: Option<PrometheusMetrics>,
    /// Audit events go here instead of to the log `[audit]` names, which is
    /// then not opened (tests put a failing sink behind the exchange).
    pub audit: Option<AuditOverride>,
}

/// An audit sink a node writes to instead of the log `[audit]` names.
#[derive(Debug, Clone)]
pub struct AuditOverride {
    pub sink: Arc<dyn AuditSink>,
    /// The log's read side. Without it the node serves no `Audit` service,
    /// proves no receipts and prunes nothing.
    pub reader: Option<AuditReader>,
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
    /// Tells open `Audit.Watch` streams to end at shutdown.
    closing: tokio::sync::watch::Sender<bool>,
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
        // Following watches would otherwise hold the drain until its timeout.
        self.closing.send_replace(true);
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

/// Starts an exchange node on `config.listen` (port 0 picks a free port).
pub async fn start(
    config: ExchangeConfig,
    options: StartOptions,
) -> Result<ExchangeHandle, StartError> {
    let StartOptions {
        metrics,
        prometheus,
        audit,
    } = options;
    let (audit, reader): (Arc<dyn AuditSink>, _) = match audit {
        Some(AuditOverride { sink, reader }) => (sink, reader),
        None => {
            let (sink, reader) = open_audit(&config, metrics.as_ref()).await?;
            (Arc::new(sink), Some(reader))
        }
    };
    let audit_log = reader.as_ref().map(|r| r.log().clone());
    let metrics = metrics.unwrap_or_else(Metrics::disabled);
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
        .map_err(StartError::RecordPolicy)?;
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
    let (reflection, reflection_v1alpha) =
        tongban_proto::reflection::reflection_services(&served_services(reader.is_some()))
            .map_err(StartError::Reflection)?;

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
    let (closing, closing_rx) = tokio::sync::watch::channel(false);
    let shutdown = async {
        let _ = shutdown_rx.await;
    };

    let (authenticate, listener, cert_reloader) = match &config.tls {
        Some(files) => {
            // HTTP/1.1 too: the HTTP/JSON routes serve curl, Java and PHP clients.
            let source = TlsServerConfig::new(&files.cert, &files.key, &files.ca).with_http1();
            let reloadable = source.load_reloadable()?;
            let reloader = CertReloader::spawn(
                source,
                reloadable.clone(),
                ReloadOptions {
                    poll_interval: poll,
                    on_sighup: true,
                },
            )
            .map_err(StartError::CertReloader)?;
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
            let reference = config
                .plaintext_caller
                .as_deref()
                .ok_or(StartError::NoPlaintextCaller)?;
            let (_, caller) =
                Caller::parse_reference(reference).map_err(StartError::PlaintextCaller)?;
            tracing::warn!(%caller, "serving PLAINTEXT: every request is attributed to plaintext_caller; use [tls] in production");
            (fixed_caller(caller), Listener::Plain(listener), None)
        }
    };

    // Metrics are for operators; a taken admin port must not stop the node
    // from serving, so it is reported loudly instead.
    let admin = match (prometheus, config.admin.enabled) {
        (Some(prometheus), true) => {
            match AdminServer::bind(config.admin.listen, prometheus).await {
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
    if let Some(reader) = &reader
        && !config.audit.witnesses.is_empty()
    {
        let witnesses = config
            .audit
            .witness_endpoints()
            .map_err(|e| StartError::Witnesses(e.to_string()))?;
        let collector = tongban_witness::Collector::new(
            reader.store_arc(),
            exchange.node(),
            witnesses,
            tongban_witness::CollectorConfig {
                interval: Duration::from_millis(config.audit.witness_interval_ms.max(1)),
                ..Default::default()
            },
        )
        .map_err(|e| StartError::Witnesses(e.to_string()))?
        .spawn();
        // The task holds the collector; aborting it at shutdown drops (and
        // stops) the collector.
        background.push(tokio::spawn(async move {
            let _collector = collector;
            std::future::pending::<()>().await
        }));
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
    // Portals read citizens' histories through any node: every node's log
    // is in the one store.
    let witness_keys: Vec<_> = config
        .audit
        .witness_endpoints()
        .map_err(|e| StartError::Witnesses(e.to_string()))?
        .into_iter()
        .map(|w| w.key)
        .collect();
    let transparency_service = reader.clone().map(|reader| {
        SizeGuard::new(
            TransparencyServer::new(
                TransparencyService::new(exchange.clone(), authenticate.clone(), reader)
                    .with_witnesses(witness_keys),
            ),
            exchange.clone(),
            authenticate.clone(),
        )
    });
    let audit_service = reader.map(|reader| {
        service = service.clone().with_audit_reader(reader.clone());
        SizeGuard::new(
            AuditServer::new(
                AuditService::new(exchange.clone(), authenticate.clone(), reader)
                    .with_closing(closing_rx.clone()),
            ),
            exchange.clone(),
            authenticate.clone(),
        )
    });
    let exchange_service =
        SizeGuard::new(ExchangeServer::new(service), exchange.clone(), authenticate);
    // The HTTP/JSON routes sit in front of the whole gRPC stack and call it
    // (crate::http_json), over HTTP/2 or HTTP/1.1 on this one listener.
    let router = hardened_builder(&config.server)?
        .accept_http1(true)
        .layer(HttpJsonLayer::new(exchange.clone()))
        .layer(GrpcServerLayer::new().with_metrics(metrics))
        .add_service(health_service)
        .add_service(reflection)
        .add_service(reflection_v1alpha)
        .add_service(exchange_service)
        .add_optional_service(audit_service)
        .add_optional_service(transparency_service);
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
        closing,
    })
}

/// Opens the log `[audit]` names: its sink and its read side.
async fn open_audit(
    config: &ExchangeConfig,
    metrics: Option<&Metrics>,
) -> Result<(AuditLogSink, AuditReader), StartError> {
    let (log, store) = config
        .audit
        .open_log_and_store(&config.node)
        .await
        .map_err(StartError::Audit)?;
    let pseudonymizer = config.audit.pseudonymizer()?;
    let mut sink = AuditLogSink::new(log, pseudonymizer).with_store(store.clone());
    if let Some(metrics) = metrics {
        sink = sink.with_metrics(metrics.clone());
    }
    let reader = AuditReader::new(sink.clone(), store);
    Ok((sink, reader))
}

/// `Server::builder()` with the node's `[server]` limits.
fn hardened_builder(limits: &tongban_trust::ServerLimits) -> Result<Server, StartError> {
    limits.server_builder().map_err(StartError::ServerLimits)
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

/// Why one adapter endpoint is not ready.
#[derive(Debug, thiserror::Error)]
enum EndpointProbeError {
    #[error("no health answer within {0:?}")]
    NoAnswer(Duration),
    #[error("adapter reports health status {0}")]
    NotServing(i32),
    #[error("{code:?}: {message}")]
    Failed { code: tonic::Code, message: String },
}

/// No endpoint of a department is ready: why not, endpoint by endpoint.
#[derive(Debug)]
struct DepartmentUnreachable(Vec<EndpointProbeError>);

impl std::fmt::Display for DepartmentUnreachable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, why) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{why}")?;
        }
        Ok(())
    }
}

impl std::error::Error for DepartmentUnreachable {}

/// Asks the adapter's own health service (which follows its database). An
/// adapter without a health service but answering is reachable.
async fn probe_department(
    department: &crate::routing::Department,
    every: Duration,
) -> Result<(), DepartmentUnreachable> {
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
            Err(_) => Err(EndpointProbeError::NoAnswer(timeout)),
            Ok(Ok(answer)) => {
                let status = answer.into_inner().status;
                if status == tonic_health::pb::health_check_response::ServingStatus::Serving as i32
                {
                    Ok(())
                } else {
                    Err(EndpointProbeError::NotServing(status))
                }
            }
            Ok(Err(status)) if status.code() == tonic::Code::Unimplemented => Ok(()),
            Ok(Err(status)) => Err(EndpointProbeError::Failed {
                code: status.code(),
                message: status.message().to_owned(),
            }),
        }
    });
    let outcomes = futures::future::join_all(probes).await;
    if outcomes.iter().any(Result::is_ok) {
        return Ok(());
    }
    Err(DepartmentUnreachable(
        outcomes.into_iter().filter_map(Result::err).collect(),
    ))
}

fn connect_departments(
    config: &ExchangeConfig,
    catalogue: &Catalogue,
    metrics: &Metrics,
) -> Result<Departments, StartError> {
    let mut out = Vec::new();
    for (id, d) in &config.departments {
        let fail = |problem| StartError::Department {
            department: id.clone(),
            problem,
        };
        if catalogue.department(id).is_none() {
            return Err(fail(DepartmentError::NotInCatalogue));
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

fn plaintext_channel(endpoint: &str) -> Result<Channel, DepartmentError> {
    Ok(Endpoint::from_shared(endpoint.to_owned())
        .map_err(|error| DepartmentError::Endpoint {
            endpoint: endpoint.to_owned(),
            error,
        })?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .connect_lazy())
}

fn tls_channel(
    endpoint: &str,
    files: &TlsFiles,
    identity: Option<&str>,
) -> Result<Channel, DepartmentError> {
    let expected = identity
        .map(PeerIdentity::parse_uri)
        .transpose()
        .map_err(DepartmentError::Identity)?;
    let tls = TlsClientConfig::new(&files.cert, &files.key, &files.ca);
    tongban_trust::connect_channel_lazy(endpoint, &tls, expected.as_ref())
        .map_err(DepartmentError::Channel)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::{AuditEvent, AuditFuture, PolicyChange, ProbeFuture};

    /// Records nothing: every write fails, or (`accepts`) every write is
    /// taken without a receipt.
    #[derive(Debug)]
    struct StandInSink {
        accepts: bool,
    }

    impl AuditSink for StandInSink {
        fn record_all(&self, events: Vec<AuditEvent>) -> AuditFuture<'_> {
            let accepts = self.accepts;
            Box::pin(async move {
                events
                    .iter()
                    .map(|_| {
                        if accepts {
                            Ok(None)
                        } else {
                            Err(AuditSinkError::NoResult)
                        }
                    })
                    .collect()
            })
        }

        fn record_policy_change(&self, _: PolicyChange) -> ProbeFuture<'_> {
            let accepts = self.accepts;
            Box::pin(async move {
                if accepts {
                    Ok(())
                } else {
                    Err(AuditSinkError::NoResult)
                }
            })
        }
    }

    fn plaintext_config(dir: &std::path::Path) -> ExchangeConfig {
        let policy = dir.join("policy.toml");
        std::fs::write(&policy, "").unwrap();
        ExchangeConfig::from_toml(&format!(
            "policy = {:?}\nlisten = \"127.0.0.1:0\"\nplaintext_caller = \"org/91350100M000100Y43/unit/bench\"\n[audit]\nstore = {:?}\n",
            policy.display().to_string(),
            dir.join("never-opened.db").display().to_string(),
        ))
        .unwrap()
    }

    fn with_sink(accepts: bool) -> StartOptions {
        StartOptions {
            audit: Some(AuditOverride {
                sink: Arc::new(StandInSink { accepts }),
                reader: None,
            }),
            ..StartOptions::default()
        }
    }

    #[tokio::test]
    async fn a_given_audit_sink_replaces_the_configured_log() {
        let dir = tempfile::tempdir().unwrap();
        let node = start(plaintext_config(dir.path()), with_sink(true))
            .await
            .unwrap();
        assert!(node.audit_log().is_none());
        assert!(node.admin_addr().is_none());
        node.shutdown().await.unwrap();
        assert!(!dir.path().join("never-opened.db").exists());
    }

    #[tokio::test]
    async fn a_node_that_cannot_record_its_policy_does_not_start() {
        let dir = tempfile::tempdir().unwrap();
        let refused = start(plaintext_config(dir.path()), with_sink(false))
            .await
            .unwrap_err();
        assert!(matches!(refused, StartError::RecordPolicy(_)), "{refused}");
        assert_eq!(
            refused.to_string(),
            "cannot record the policy in force: the audit log gave no result for this entry"
        );
    }
}
