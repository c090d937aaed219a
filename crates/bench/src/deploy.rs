//! What the benchmark runs against, all on 127.0.0.1 ephemeral ports in one
//! temporary directory: a dev PKI, the three reference departments (each
//! served twice from the same database: plaintext and mutual TLS), the access
//! policy and exchange nodes (plaintext or mTLS, durable SQLite audit).
//!
//! Every start of an exchange node gets a subdirectory of its own (its
//! configuration, audit database, signing key and stderr), so a node
//! restarted for another round begins from an empty audit log exactly like
//! the first one did, and never opens the previous start's files.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tongban_devkit::pki::{DevPki, DevPkiOptions, ORG_DONGLI_COMMUNITY};
use tongban_devkit::reference::{self, Dept};

use tongban_proto::v1::adapter_server::{Adapter, AdapterServer};
use tongban_proto::v1::{DescribeRequest, DescribeResponse, QueryRequest, QueryResponse};
use tongban_trust::{IncomingOptions, PeerIdentity, TlsClientConfig, TlsIncoming};

use crate::BenchError;
use crate::load::Target;

/// The service point the benchmark acts as (its certificate on the mTLS
/// path, `plaintext_caller` on the plaintext one).
pub const CALLER_UNIT: &str = "dongli-community";

/// How long an exchange child process may take to say where it listens.
const EXCHANGE_START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long it may take to drain and commit its audit tail on SIGTERM.
const EXCHANGE_STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// How the exchange node runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExchangeRunner {
    /// `<binary> serve --config <file>` as a child process, so its peak RSS
    /// is its own.
    Process(PathBuf),
    /// Inside the benchmark's own process (peak RSS then covers everything).
    InProcess,
}

/// Transport of an exchange node and its department hop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    Plaintext,
    MutualTls,
}

/// Whether an exchange node keeps the subject map that lets citizens check
/// their history (`[audit] transparency`): on by default, off for path
/// (c0), which measures what it costs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transparency {
    On,
    Off,
}

struct ServedAdapter {
    dept: Dept,
    plain: SocketAddr,
    tls: SocketAddr,
}

/// The departments, PKI and policy; exchanges start on demand.
pub struct Deployment {
    dir: tempfile::TempDir,
    pki: DevPki,
    adapters: Vec<ServedAdapter>,
    stops: Vec<oneshot::Sender<()>>,
    tasks: Vec<JoinHandle<()>>,
    /// Exchange starts so far, to name each start's subdirectory.
    exchange_starts: AtomicUsize,
}

impl std::fmt::Debug for Deployment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deployment")
            .field("dir", &self.dir.path())
            .field("adapters", &self.adapters.len())
            .finish_non_exhaustive()
    }
}

impl Deployment {
    /// Creates the PKI, seeds and serves the departments, writes the policy.
    /// With `memory`, each department answers from a recorded answer
    /// instead of its SQLite database (isolates the proxies' own cost).
    pub async fn start(memory: bool) -> Result<Self, BenchError> {
        let dir = tempfile::Builder::new()
            .prefix("tongban-bench-")
            .tempdir()
            .map_err(|e| BenchError::io("creating a temporary directory", e))?;
        let pki =
            tongban_devkit::pki::init_dev_pki(&dir.path().join("pki"), &DevPkiOptions::default())
                .map_err(|e| BenchError::Setup(format!("dev PKI: {e}")))?;
        let mut deployment = Self {
            dir,
            pki,
            adapters: Vec::new(),
            stops: Vec::new(),
            tasks: Vec::new(),
            exchange_starts: AtomicUsize::new(0),
        };
        for dept in Dept::ALL {
            deployment.serve_department(dept, memory).await?;
        }
        let policy = deployment.policy_toml();
        write(&deployment.dir.path().join("policy.toml"), &policy)?;
        Ok(deployment)
    }

    async fn serve_department(&mut self, dept: Dept, memory: bool) -> Result<(), BenchError> {
        let db = self.dir.path().join(format!("{}.db", dept.id()));
        let service = reference::service(dept, &format!("sqlite://{}?mode=rwc", db.display()))
            .await
            .map_err(|e| BenchError::Setup(format!("{} adapter: {e}", dept.id())))?;
        let exchange = self.identity("exchange")?;
        let tls = self
            .pki
            .server_config(dept.id())
            .map_err(|e| BenchError::Setup(e.to_string()))?
            .allow_only([exchange]);
        let memory = if memory {
            Some(MemoryDepartment::record(&service, dept, self.requester()).await?)
        } else {
            None
        };
        let plain_listener = bind().await?;
        let tls_listener = bind().await?;
        let plain = local_addr(&plain_listener)?;
        let tls_addr = local_addr(&tls_listener)?;
        let (stop_plain, plain_stopped) = oneshot::channel::<()>();
        let (stop_tls, tls_stopped) = oneshot::channel::<()>();
        let name = dept.id();
        let plain_service = service.clone();
        let plain_memory = memory.clone();
        self.tasks.push(tokio::spawn(async move {
            let stopped = async {
                let _ = plain_stopped.await;
            };
            let incoming = nodelay_incoming(plain_listener);
            let served = match plain_memory {
                None => tongban_adapter::serve_with_incoming(plain_service, incoming, stopped)
                    .await
                    .map_err(DepartmentStopped::from),
                Some(m) => tonic::transport::Server::builder()
                    .add_service(AdapterServer::new(m))
                    .serve_with_incoming_shutdown(incoming, stopped)
                    .await
                    .map_err(DepartmentStopped::from),
            };
            if let Err(e) = served {
                tracing::error!(department = name, error = %e, "plaintext adapter stopped");
            }
        }));
        self.tasks.push(tokio::spawn(async move {
            let stopped = async {
                let _ = tls_stopped.await;
            };
            let served = match memory {
                None => tongban_adapter::serve_tls(service, tls_listener, tls, stopped)
                    .await
                    .map_err(DepartmentStopped::from),
                Some(m) => serve_memory_tls(m, tls_listener, tls, stopped).await,
            };
            if let Err(e) = served {
                tracing::error!(department = name, error = %e, "mTLS adapter stopped");
            }
        }));
        self.stops.extend([stop_plain, stop_tls]);
        self.adapters.push(ServedAdapter {
            dept,
            plain,
            tls: tls_addr,
        });
        Ok(())
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn identity(&self, name: &str) -> Result<PeerIdentity, BenchError> {
        Ok(self
            .pki
            .get(name)
            .map_err(|e| BenchError::Setup(e.to_string()))?
            .identity
            .clone())
    }

    /// The caller's `org/<code>/unit/<unit>` path.
    pub fn caller_path(&self) -> String {
        format!(
            "org/{}/unit/{CALLER_UNIT}",
            ORG_DONGLI_COMMUNITY.credit_code
        )
    }

    /// The requester an exchange would name to the adapter.
    pub fn requester(&self) -> String {
        format!("spiffe://{}/{}", self.pki.trust_domain, self.caller_path())
    }

    /// A department's plaintext adapter.
    pub fn plain_adapter(&self, dept: Dept) -> Result<SocketAddr, BenchError> {
        self.adapters
            .iter()
            .find(|a| a.dept == dept)
            .map(|a| a.plain)
            .ok_or_else(|| BenchError::Setup(format!("no {} adapter", dept.id())))
    }

    /// The generator's view of an exchange node.
    pub fn exchange_target(
        &self,
        security: Security,
        addr: SocketAddr,
    ) -> Result<Target, BenchError> {
        match security {
            Security::Plaintext => Ok(Target::plaintext(addr)),
            Security::MutualTls => {
                let tls: TlsClientConfig = self
                    .pki
                    .client_config(CALLER_UNIT)
                    .map_err(|e| BenchError::Setup(e.to_string()))?;
                Ok(Target {
                    url: format!("https://{addr}"),
                    tls: Some((tls, self.identity("exchange")?)),
                })
            }
        }
    }

    /// Grants the benchmark caller the matter it uses, with limits far above
    /// what the machine can drive (the rate limiter still runs).
    fn policy_toml(&self) -> String {
        format!(
            r#"# Written by tongban bench.
trust_domain = "{domain}"

[[grant]]
callers = ["{caller}"]
matters = ["{matter}"]

[limits]
requests_per_second = 1000000000.0
burst = 1000000000
max_gather_evidence = 64
max_request_bytes = 16384
"#,
            domain = self.pki.trust_domain,
            caller = self.caller_path(),
            matter = crate::MATTER,
        )
    }

    /// The node name of an exchange of the given kind: each kind its own,
    /// so their logs never mix.
    fn node_name(security: Security, transparency: Transparency) -> &'static str {
        match (security, transparency) {
            (Security::Plaintext, Transparency::On) => "bench-plaintext",
            (Security::Plaintext, Transparency::Off) => "bench-plaintext-no-transparency",
            (Security::MutualTls, Transparency::On) => "bench-mtls",
            (Security::MutualTls, Transparency::Off) => "bench-mtls-no-transparency",
        }
    }

    /// A new, empty directory for one start of an exchange node:
    /// `<node>-<n>` with `n` counting every start of this deployment.
    fn exchange_dir(
        &self,
        security: Security,
        transparency: Transparency,
    ) -> Result<PathBuf, BenchError> {
        let n = self.exchange_starts.fetch_add(1, Ordering::Relaxed) + 1;
        let dir = self
            .dir
            .path()
            .join(format!("{}-{n}", Self::node_name(security, transparency)));
        // `create_dir` (not `_all`): fails rather than reuse another start's files.
        std::fs::create_dir(&dir)
            .map_err(|e| BenchError::io(format!("creating {}", dir.display()), e))?;
        Ok(dir)
    }

    /// The configuration file of an exchange node, written to `node_dir`
    /// (a subdirectory of the deployment's; relative paths in it follow the
    /// file): the node's audit database and signing key live there; the
    /// policy and the subject pseudonym key are the deployment's, one level
    /// up, shared by every node.
    pub fn exchange_config(
        &self,
        security: Security,
        transparency: Transparency,
        node_dir: &Path,
    ) -> Result<PathBuf, BenchError> {
        let node = Self::node_name(security, transparency);
        let tls = match security {
            Security::Plaintext => None,
            Security::MutualTls => Some(&self.pki),
        };
        let mut text = format!(
            "# Written by tongban bench.\n\
             node = \"{node}\"\n\
             listen = \"127.0.0.1:0\"\n\
             policy = \"../policy.toml\"\n"
        );
        match tls {
            None => {
                let _ = writeln!(text, "plaintext_caller = \"{}\"", self.caller_path());
            }
            Some(pki) => {
                let _ = write!(
                    text,
                    "\n[tls]\ncert = \"{}\"\nkey = \"{}\"\nca = \"{}\"\n",
                    pki.get("exchange")
                        .map_err(|e| BenchError::Setup(e.to_string()))?
                        .cert
                        .display(),
                    pki.get("exchange")
                        .map_err(|e| BenchError::Setup(e.to_string()))?
                        .key
                        .display(),
                    pki.ca_cert.display()
                );
            }
        }
        let _ = write!(
            text,
            "\n[audit]\nstore = \"{node}-audit.db\"\nsigning_key = \"{node}-signing.key\"\nsubject_key = \"../subject-pseudonym.key\"\n\
             transparency = {}\n",
            // Spelled out either way, so a change of the default cannot
            // silently turn (c) into (c0).
            transparency == Transparency::On
        );
        for a in &self.adapters {
            let id = a.dept.id();
            match security {
                Security::Plaintext => {
                    let _ = write!(
                        text,
                        "\n[departments.{id}]\nendpoints = [\"http://{}\"]\ntimeout_ms = 5000\n",
                        a.plain
                    );
                }
                Security::MutualTls => {
                    let _ = write!(
                        text,
                        "\n[departments.{id}]\nendpoints = [\"https://{}\"]\ntimeout_ms = 5000\nidentity = \"{}\"\n",
                        a.tls,
                        self.identity(id)?
                    );
                }
            }
            // One load generator stands for every service point: it may use
            // the department's whole in-flight capacity.
            let _ = writeln!(text, "max_in_flight_per_caller = 512");
        }
        let path = node_dir.join(format!("{node}.toml"));
        write(&path, &text)?;
        Ok(path)
    }

    /// Starts an exchange node of the given kind, in a directory of its own
    /// (see the module documentation), so it may be started again and again.
    pub async fn start_exchange(
        &self,
        security: Security,
        transparency: Transparency,
        runner: &ExchangeRunner,
    ) -> Result<RunningExchange, BenchError> {
        let node_dir = self.exchange_dir(security, transparency)?;
        let config_path = self.exchange_config(security, transparency, &node_dir)?;
        match runner {
            ExchangeRunner::InProcess => {
                let config = tongban_exchange::ExchangeConfig::load(&config_path)
                    .map_err(|e| BenchError::Exchange(e.to_string()))?;
                let handle =
                    tongban_exchange::start(config, tongban_exchange::StartOptions::default())
                        .await
                        .map_err(|e| BenchError::Exchange(e.to_string()))?;
                Ok(RunningExchange {
                    addr: handle.local_addr(),
                    kind: ExchangeKind::InProcess(handle),
                })
            }
            ExchangeRunner::Process(binary) => {
                spawn_exchange(binary, &config_path, &node_dir).await
            }
        }
    }

    /// Stops the adapters.
    pub async fn shutdown(mut self) {
        for stop in self.stops.drain(..) {
            let _ = stop.send(());
        }
        for task in self.tasks.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
    }
}

/// Accepted connections with Nagle off, as nginx and tonic's own listener
/// do; `serve_with_incoming` leaves sockets as they come.
fn nodelay_incoming(
    listener: TcpListener,
) -> impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use futures::StreamExt as _;
    tokio_stream::wrappers::TcpListenerStream::new(listener).map(|accepted| {
        let stream = accepted?;
        stream.set_nodelay(true)?;
        Ok(stream)
    })
}

/// A department that answers every query for an evidence type with the
/// answer its reference adapter gave once (whatever the subject).
#[derive(Debug, Clone)]
pub struct MemoryDepartment {
    answers: Arc<Vec<(String, QueryResponse)>>,
    describe: Arc<DescribeResponse>,
}

impl MemoryDepartment {
    async fn record(
        service: &tongban_adapter::AdapterService,
        dept: Dept,
        requester: String,
    ) -> Result<Self, BenchError> {
        let mut answers = Vec::new();
        for (evidence, _) in crate::GATHER_EVIDENCE.iter().filter(|(_, d)| *d == dept) {
            let request = crate::query_request(requester.clone(), evidence);
            let answer = service
                .query(tonic::Request::new(request))
                .await
                .map_err(|s| BenchError::Setup(format!("recording {evidence}: {}", s.message())))?;
            answers.push(((*evidence).to_owned(), answer.into_inner()));
        }
        let describe = service
            .describe(tonic::Request::new(DescribeRequest {}))
            .await
            .map_err(|s| BenchError::Setup(format!("recording Describe: {}", s.message())))?
            .into_inner();
        Ok(Self {
            answers: Arc::new(answers),
            describe: Arc::new(describe),
        })
    }
}

#[tonic::async_trait]
impl Adapter for MemoryDepartment {
    async fn query(
        &self,
        request: tonic::Request<QueryRequest>,
    ) -> Result<tonic::Response<QueryResponse>, tonic::Status> {
        let wanted = &request.get_ref().evidence_type;
        self.answers
            .iter()
            .find(|(e, _)| e == wanted)
            .map(|(_, a)| tonic::Response::new(a.clone()))
            .ok_or_else(|| tonic::Status::not_found(format!("no recorded answer for {wanted}")))
    }

    async fn describe(
        &self,
        _request: tonic::Request<DescribeRequest>,
    ) -> Result<tonic::Response<DescribeResponse>, tonic::Status> {
        Ok(tonic::Response::new((*self.describe).clone()))
    }
}

/// Why a department of the bench stopped serving (logged; the run goes on
/// and its calls fail).
#[derive(Debug, thiserror::Error)]
enum DepartmentStopped {
    #[error(transparent)]
    Adapter(#[from] tongban_adapter::ServeError),
    #[error(transparent)]
    Tls(#[from] tongban_trust::TlsError),
    #[error(transparent)]
    Accept(#[from] std::io::Error),
    #[error(transparent)]
    Transport(#[from] tonic::transport::Error),
}

async fn serve_memory_tls(
    department: MemoryDepartment,
    listener: TcpListener,
    tls: tongban_trust::TlsServerConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), DepartmentStopped> {
    let config = tls.load_reloadable()?;
    let incoming = TlsIncoming::new(listener, config, IncomingOptions::default())?;
    tonic::transport::Server::builder()
        .add_service(AdapterServer::new(department))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await?;
    Ok(())
}

async fn bind() -> Result<TcpListener, BenchError> {
    tongban_trust::bind_listener(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
        .map_err(|e| BenchError::io("binding 127.0.0.1:0", e))
}

fn local_addr(listener: &TcpListener) -> Result<SocketAddr, BenchError> {
    listener
        .local_addr()
        .map_err(|e| BenchError::io("reading a listener's address", e))
}

fn write(path: &Path, text: &str) -> Result<(), BenchError> {
    std::fs::write(path, text).map_err(|e| BenchError::io(format!("writing {}", path.display()), e))
}

/// A running exchange node.
#[derive(Debug)]
pub struct RunningExchange {
    pub addr: SocketAddr,
    kind: ExchangeKind,
}

#[derive(Debug)]
enum ExchangeKind {
    InProcess(tongban_exchange::ExchangeHandle),
    Process {
        child: tokio::process::Child,
        pid: u32,
        stderr_path: PathBuf,
    },
}

/// Peak resident memory and whose it is.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PeakRss {
    pub mib: f64,
    /// What the figure covers.
    pub scope: String,
}

impl RunningExchange {
    /// The exchange's peak RSS so far (`VmHWM`).
    pub fn peak_rss(&self) -> Option<PeakRss> {
        match &self.kind {
            ExchangeKind::Process { pid, .. } => {
                vm_hwm_kib(&format!("/proc/{pid}/status")).map(|kib| PeakRss {
                    mib: kib as f64 / 1024.0,
                    scope: "exchange process".into(),
                })
            }
            ExchangeKind::InProcess(_) => vm_hwm_kib("/proc/self/status").map(|kib| PeakRss {
                mib: kib as f64 / 1024.0,
                scope: "whole bench process (exchange in-process)".into(),
            }),
        }
    }

    /// The processes whose CPU time is the exchange's alone (none when it
    /// shares the bench process).
    pub fn pids(&self) -> Vec<String> {
        match &self.kind {
            ExchangeKind::Process { pid, .. } => vec![pid.to_string()],
            ExchangeKind::InProcess(_) => Vec::new(),
        }
    }

    /// Drains in-flight calls and commits the audit tail (SIGTERM for a
    /// child), killing a child that does not stop in time.
    pub async fn stop(self) -> Result<(), BenchError> {
        match self.kind {
            ExchangeKind::InProcess(handle) => handle
                .shutdown()
                .await
                .map_err(|e| BenchError::Exchange(format!("shutdown: {e}"))),
            ExchangeKind::Process {
                mut child,
                pid,
                stderr_path,
            } => {
                // std has no SIGTERM and unsafe code is forbidden here.
                let _ = tokio::process::Command::new("kill")
                    .args(["-TERM", &pid.to_string()])
                    .status()
                    .await;
                match tokio::time::timeout(EXCHANGE_STOP_TIMEOUT, child.wait()).await {
                    Ok(Ok(status)) if status.success() => Ok(()),
                    Ok(Ok(status)) => Err(BenchError::Exchange(format!(
                        "exchange exited with {status}: {}",
                        tail(&stderr_path)
                    ))),
                    Ok(Err(e)) => Err(BenchError::io("waiting for the exchange", e)),
                    Err(_) => {
                        let _ = child.kill().await;
                        Err(BenchError::Exchange(format!(
                            "exchange did not stop within {EXCHANGE_STOP_TIMEOUT:?} of SIGTERM"
                        )))
                    }
                }
            }
        }
    }
}

async fn spawn_exchange(
    binary: &Path,
    config: &Path,
    dir: &Path,
) -> Result<RunningExchange, BenchError> {
    let stem = config
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "exchange".into());
    let stderr_path = dir.join(format!("{stem}.stderr"));
    let stderr = std::fs::File::create(&stderr_path)
        .map_err(|e| BenchError::io(format!("creating {}", stderr_path.display()), e))?;
    let mut child = tokio::process::Command::new(binary)
        .arg("serve")
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(stderr))
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| BenchError::io(format!("starting {} serve", binary.display()), e))?;
    let pid = child
        .id()
        .ok_or_else(|| BenchError::Exchange("the exchange exited at once".into()))?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| BenchError::Exchange("no stdout from the exchange".into()))?;
    let mut lines = BufReader::new(stdout).lines();
    let wait_for_address = async {
        while let Some(line) = lines.next_line().await? {
            if let Some(addr) = line.strip_prefix("exchange listening on ") {
                return Ok(addr.trim().parse::<SocketAddr>().ok());
            }
        }
        Ok::<_, std::io::Error>(None)
    };
    let addr = match tokio::time::timeout(EXCHANGE_START_TIMEOUT, wait_for_address).await {
        Ok(Ok(Some(addr))) => addr,
        Ok(Ok(None)) | Ok(Err(_)) => {
            let _ = child.kill().await;
            return Err(BenchError::Exchange(format!(
                "the exchange did not start: {}",
                tail(&stderr_path)
            )));
        }
        Err(_) => {
            let _ = child.kill().await;
            return Err(BenchError::Exchange(format!(
                "the exchange did not report its address within {EXCHANGE_START_TIMEOUT:?}"
            )));
        }
    };
    // Keep draining stdout so the child never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok(RunningExchange {
        addr,
        kind: ExchangeKind::Process {
            child,
            pid,
            stderr_path,
        },
    })
}

/// The last lines of a log file, for error messages.
pub(crate) fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(5);
    let out = lines[from..].join(" | ");
    if out.is_empty() {
        format!("(nothing in {})", path.display())
    } else {
        out
    }
}

/// `VmHWM` (peak resident set) in KiB from a `/proc/<pid>/status` file.
pub(crate) fn vm_hwm_kib(status_path: &str) -> Option<u64> {
    let text = std::fs::read_to_string(status_path).ok()?;
    parse_status_kib(&text, "VmHWM:")
}

/// CPU time (user + system, all threads) of a process so far, from
/// `/proc/<pid>/stat`; `pid` may be `self`.
pub fn cpu_time(pid: &str) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace().skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    // USER_HZ is 100 on every Linux ABI tongban targets.
    Some(Duration::from_millis((user + system) * 10))
}

pub(crate) fn parse_status_kib(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (c) and (c0) differ in `[audit] transparency` only, each node with a
    /// name and directory of its own, as the exchange itself reads them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn c_and_c0_nodes_differ_in_transparency_only() {
        let deployment = Deployment::start(true).await.unwrap();
        let mut seen = Vec::new();
        for (transparency, wanted) in [(Transparency::On, true), (Transparency::Off, false)] {
            let dir = deployment
                .exchange_dir(Security::Plaintext, transparency)
                .unwrap();
            let path = deployment
                .exchange_config(Security::Plaintext, transparency, &dir)
                .unwrap();
            let config = tongban_exchange::ExchangeConfig::load(&path).unwrap();
            assert_eq!(config.audit.transparency, wanted, "{transparency:?}");
            // Relative paths follow the file: the node's own database, in its own directory.
            assert!(
                config
                    .audit
                    .store
                    .ends_with(&format!("/{}-audit.db", config.node)),
                "{}",
                config.audit.store
            );
            seen.push((config.node, dir));
        }
        assert_eq!(seen[0].0, "bench-plaintext");
        assert_eq!(seen[1].0, "bench-plaintext-no-transparency");
        assert_ne!(seen[0].1, seen[1].1);
        deployment.shutdown().await;
    }

    #[test]
    fn reads_peak_rss_from_proc_status() {
        let status =
            "Name:\ttongban\nVmPeak:\t  900000 kB\nVmHWM:\t   51200 kB\nVmRSS:\t   40000 kB\n";
        assert_eq!(parse_status_kib(status, "VmHWM:"), Some(51200));
        assert_eq!(parse_status_kib(status, "VmSwap:"), None);
        assert!(vm_hwm_kib("/proc/self/status").is_some_and(|k| k > 0));
        let before = cpu_time("self").unwrap();
        let spin = std::time::Instant::now();
        let mut x = 0u64;
        while spin.elapsed() < Duration::from_millis(60) {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        assert!(x > 0);
        assert!(cpu_time("self").unwrap() > before);
        assert_eq!(cpu_time("999999999"), None);
    }
}
