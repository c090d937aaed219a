//! Shared by the tests that run the real `tongban` binary: a stand-in
//! department and a way to start `tongban serve` as a child process.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{Semaphore, watch};
use tongban_proto::v1::adapter_server::{Adapter, AdapterServer};
use tongban_proto::v1::{DescribeRequest, DescribeResponse, Evidence, QueryRequest, QueryResponse};

/// A department that answers every query after `delay`, with no fields;
/// with a gate, only once the gate is open.
#[derive(Debug, Clone)]
pub struct StubAdapter {
    pub delay: Duration,
    pub gate: Option<Gate>,
}

/// Holds a stub department's answers until the test opens it, and counts
/// the queries that reached the department: events to assert on instead of
/// timings.
#[derive(Debug, Clone)]
pub struct Gate {
    asked: Arc<AtomicUsize>,
    permits: Arc<Semaphore>,
}

impl Gate {
    fn closed() -> Self {
        Self {
            asked: Arc::default(),
            permits: Arc::new(Semaphore::new(0)),
        }
    }

    /// Queries that reached the department so far.
    pub fn asked(&self) -> usize {
        self.asked.load(Ordering::SeqCst)
    }

    /// Lets every held and later query through (waiting on a closed
    /// semaphore returns at once).
    pub fn open(&self) {
        self.permits.close();
    }

    async fn pass(&self) {
        self.asked.fetch_add(1, Ordering::SeqCst);
        let _ = self.permits.acquire().await;
    }

    /// Waits until at least `n` queries are held (bounded: a hang guard).
    pub async fn wait_asked(&self, n: usize) {
        let until = Instant::now() + Duration::from_secs(60);
        while self.asked() < n {
            assert!(
                Instant::now() < until,
                "only {} of {n} queries reached the department",
                self.asked()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

#[tonic::async_trait]
impl Adapter for StubAdapter {
    async fn query(
        &self,
        request: tonic::Request<QueryRequest>,
    ) -> Result<tonic::Response<QueryResponse>, tonic::Status> {
        if let Some(gate) = &self.gate {
            gate.pass().await;
        }
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        let evidence_type = request.into_inner().evidence_type;
        Ok(tonic::Response::new(QueryResponse {
            evidence: Some(Evidence {
                department: evidence_type
                    .split('.')
                    .next()
                    .unwrap_or_default()
                    .to_owned(),
                evidence_type,
                current_as_of: None,
                fields: Vec::new(),
            }),
        }))
    }

    async fn describe(
        &self,
        _: tonic::Request<DescribeRequest>,
    ) -> Result<tonic::Response<DescribeResponse>, tonic::Status> {
        Ok(tonic::Response::new(DescribeResponse::default()))
    }
}

/// Serves a [`StubAdapter`] on 127.0.0.1 (plaintext) and says where.
pub async fn spawn_adapter(delay: Duration) -> SocketAddr {
    serve_stub(StubAdapter { delay, gate: None }).await
}

/// Serves a [`StubAdapter`] that holds every answer until its gate opens.
pub async fn spawn_gated_adapter() -> (SocketAddr, Gate) {
    let gate = Gate::closed();
    let stub = StubAdapter {
        delay: Duration::ZERO,
        gate: Some(gate.clone()),
    };
    (serve_stub(stub).await, gate)
}

async fn serve_stub(stub: StubAdapter) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(AdapterServer::new(stub))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    addr
}

/// A child process's log lines (its stderr), passed on to the test's own
/// stderr as they come.
#[derive(Debug, Clone)]
pub struct ChildLogs {
    lines: Arc<Mutex<Vec<String>>>,
    ended: watch::Receiver<bool>,
}

impl ChildLogs {
    pub fn capture(stderr: impl AsyncRead + Unpin + Send + 'static) -> Self {
        let lines: Arc<Mutex<Vec<String>>> = Arc::default();
        let (ended_tx, ended) = watch::channel(false);
        let sink = lines.clone();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                eprintln!("{line}");
                sink.lock().unwrap().push(line);
            }
            let _ = ended_tx.send(true);
        });
        Self { lines, ended }
    }

    fn find(&self, needle: &str) -> Option<String> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .find(|l| l.contains(needle))
            .cloned()
    }

    /// Waits (bounded: a hang guard) for a line containing `needle`.
    pub async fn wait_for(&self, needle: &str) -> String {
        let until = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(line) = self.find(needle) {
                return line;
            }
            assert!(Instant::now() < until, "no log line with {needle:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Every line, once the process has closed its stderr (it exited).
    pub async fn all(&self) -> Vec<String> {
        let mut ended = self.ended.clone();
        tokio::time::timeout(Duration::from_secs(60), ended.wait_for(|e| *e))
            .await
            .expect("the process closes its stderr")
            .unwrap();
        self.lines.lock().unwrap().clone()
    }
}

/// [`spawn_exchange`], with its log lines captured.
pub async fn spawn_exchange_logged(config: &Path, log: &str) -> (Child, SocketAddr, ChildLogs) {
    let (mut child, addr) = start_exchange(config, log, Stdio::piped()).await;
    let logs = ChildLogs::capture(child.stderr.take().unwrap());
    (child, addr, logs)
}

/// Starts `tongban serve --config <config>` with `RUST_LOG=<log>` and reads
/// where it listens from its first line.
pub async fn spawn_exchange(config: &Path, log: &str) -> (Child, SocketAddr) {
    start_exchange(config, log, Stdio::inherit()).await
}

async fn start_exchange(config: &Path, log: &str, stderr: Stdio) -> (Child, SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tongban"))
        .args(["serve", "--config"])
        .arg(config)
        .env("RUST_LOG", log)
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")
        .stdout(Stdio::piped())
        .stderr(stderr)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
        .await
        .expect("the exchange says where it listens")
        .unwrap()
        .unwrap();
    let addr = line
        .strip_prefix("exchange listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .parse()
        .unwrap();
    // Keep draining stdout so the child never blocks on it.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, addr)
}
