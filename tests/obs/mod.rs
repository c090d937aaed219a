//! Shared set-up of the observability tests: the three reference adapters
//! (seeded SQLite, plaintext) and a plaintext exchange in front of them, all
//! on 127.0.0.1 ephemeral ports; a TCP proxy that can cut a backing service
//! off and bring it back.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::{AbortHandle, JoinHandle};
use tongban_adapter::RunningAdapter;
use tongban_devkit::reference::stories::Story;
use tongban_devkit::reference::{self, Dept};
use tongban_exchange::ExchangeConfig;
use tongban_proto::v1::exchange_client::ExchangeClient;
use tongban_proto::v1::{CaseContext, GatherRequest, GatherResponse, Subject};
use tongban_telemetry::Metrics;
use tonic::transport::Channel;

/// The service point every plaintext request is attributed to.
pub const CALLER: &str = "org/91350100M000100Y43/unit/obs";

pub const DEPARTMENTS: [Dept; 3] = [Dept::Police, Dept::Civil, Dept::Hrss];

/// Grants the caller the social matters, not `temporary-id-card` (a
/// denial to count).
pub fn policy_toml() -> String {
    format!(
        "[[grant]]\ncallers = [\"{CALLER}\"]\nmatters = [\"unemployment-benefit\", \"pension-qualification\", \"social-insurance-record\", \"subsistence-allowance\"]\n"
    )
}

/// The reference adapters, each on its own port, restartable on it.
#[derive(Debug)]
pub struct Adapters {
    dir: std::path::PathBuf,
    metrics: Option<Metrics>,
    running: BTreeMap<&'static str, RunningAdapter>,
    addrs: BTreeMap<&'static str, SocketAddr>,
}

impl Adapters {
    pub async fn start(dir: &Path, metrics: Option<Metrics>) -> Self {
        let mut adapters = Self {
            dir: dir.to_owned(),
            metrics,
            running: BTreeMap::new(),
            addrs: BTreeMap::new(),
        };
        for dept in DEPARTMENTS {
            adapters
                .start_one(dept, "127.0.0.1:0".parse().unwrap())
                .await;
        }
        adapters
    }

    async fn start_one(&mut self, dept: Dept, addr: SocketAddr) {
        let db = self.dir.join(format!("{}.db", dept.id()));
        let mut service = reference::service(dept, &format!("sqlite://{}?mode=rwc", db.display()))
            .await
            .unwrap();
        if let Some(m) = &self.metrics {
            service = service.with_metrics(m.clone());
        }
        let running = RunningAdapter::spawn(service, addr).await.unwrap();
        self.addrs.insert(dept.id(), running.addr());
        self.running.insert(dept.id(), running);
    }

    pub fn url(&self, dept: Dept) -> String {
        format!("http://{}", self.addrs[dept.id()])
    }

    /// Takes the department offline.
    pub async fn stop(&mut self, dept: Dept) {
        if let Some(running) = self.running.remove(dept.id()) {
            running.shutdown().await.unwrap();
        }
    }

    /// Brings it back on its old port.
    pub async fn restart(&mut self, dept: Dept) {
        let addr = self.addrs[dept.id()];
        self.start_one(dept, addr).await;
    }

    pub async fn shutdown(mut self) {
        for (_, running) in std::mem::take(&mut self.running) {
            running.shutdown().await.unwrap();
        }
    }
}

/// Writes `policy.toml` and `exchange.toml` (plaintext, every department,
/// SQLite audit unless `extra` says otherwise) into `dir` and loads it.
pub fn exchange_config(dir: &Path, adapters: &Adapters, extra: &str) -> ExchangeConfig {
    std::fs::write(dir.join("policy.toml"), policy_toml()).unwrap();
    let mut text = format!(
        "listen = \"127.0.0.1:0\"\npolicy = \"policy.toml\"\nplaintext_caller = \"{CALLER}\"\n{extra}\n"
    );
    for dept in DEPARTMENTS {
        let _ = write!(
            text,
            "\n[departments.{}]\nendpoints = [\"{}\"]\ntimeout_ms = 5000\n",
            dept.id(),
            adapters.url(dept)
        );
    }
    let path = dir.join("exchange.toml");
    std::fs::write(&path, text).unwrap();
    ExchangeConfig::load_with_env(&path, std::iter::empty::<(String, String)>())
        .unwrap()
        .0
}

/// Three reference adapters and a plaintext exchange in front of them, both
/// recording into `metrics`; SQLite audit log at `dir/audit.db`.
pub async fn start_exchange(
    dir: &Path,
    metrics: &Metrics,
) -> (Adapters, tongban_exchange::ExchangeHandle) {
    let adapters = Adapters::start(dir, Some(metrics.clone())).await;
    let config = exchange_config(dir, &adapters, "");
    let exchange = tongban_exchange::start(
        config,
        tongban_exchange::StartOptions {
            metrics: Some(metrics.clone()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    (adapters, exchange)
}

pub async fn exchange_client(addr: SocketAddr) -> ExchangeClient<Channel> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    ExchangeClient::new(channel)
}

pub fn gather_request(matter: &str, story: &Story) -> tonic::Request<GatherRequest> {
    let mut request = tonic::Request::new(GatherRequest {
        case: Some(CaseContext {
            matter: matter.into(),
            case_number: "OBS-2026-000001".into(),
            operator_id: "clerk.obs@test".into(),
        }),
        subject: Some(Subject {
            id_number: story.id_number.into(),
            name: story.name.into(),
            ..Default::default()
        }),
        evidence_types: Vec::new(),
        ..Default::default()
    });
    request.set_timeout(Duration::from_secs(10));
    request
}

pub async fn gather(
    client: &mut ExchangeClient<Channel>,
    matter: &str,
    story: &Story,
) -> Result<GatherResponse, tonic::Status> {
    client
        .gather(gather_request(matter, story))
        .await
        .map(tonic::Response::into_inner)
}

/// Polls `check` until it holds, at most `within`.
pub async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if check().await {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A TCP proxy to `target` that can be cut (open connections closed, new
/// ones refused) and restored, to make a backing service unreachable.
#[derive(Debug)]
pub struct CuttableProxy {
    addr: SocketAddr,
    up: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<AbortHandle>>>,
    task: JoinHandle<()>,
}

impl CuttableProxy {
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = Arc::new(AtomicBool::new(true));
        let connections: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let task = tokio::spawn({
            let up = up.clone();
            let connections = connections.clone();
            async move {
                loop {
                    let Ok((mut inbound, _)) = listener.accept().await else {
                        continue;
                    };
                    if !up.load(Ordering::SeqCst) {
                        drop(inbound);
                        continue;
                    }
                    let handle = tokio::spawn(async move {
                        if let Ok(mut outbound) = TcpStream::connect(target).await {
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    });
                    connections.lock().unwrap().push(handle.abort_handle());
                }
            }
        });
        Self {
            addr,
            up,
            connections,
            task,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for c in self.connections.lock().unwrap().drain(..) {
            c.abort();
        }
    }

    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

impl Drop for CuttableProxy {
    fn drop(&mut self) {
        self.cut();
        self.task.abort();
    }
}

/// `GET path` over HTTP/1.1; returns (status line, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8(response).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status = head.lines().next().unwrap().to_owned();
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    (status, body)
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n").unwrap();
        let size = usize::from_str_radix(size.trim(), 16).unwrap();
        if size == 0 {
            return out;
        }
        out.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
}
