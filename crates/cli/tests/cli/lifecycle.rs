//! SIGTERM on the real `tongban serve` process under load: requests in
//! flight finish (within the drain bound), the audit log is committed, the
//! process exits 0; past the bound, the process still exits promptly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;
use tongban_proto::v1::exchange_client::ExchangeClient;
use tongban_proto::v1::{CaseContext, DescribeRequest, LookupRequest, Subject};

use crate::common::{ChildLogs, spawn_exchange_logged, spawn_gated_adapter};

const CALLER: &str = "org/91350100M000100Y43/unit/lifecycle";
/// A synthetic identity number with a valid check character.
const SUBJECT: &str = "510403198507220465";

fn write_config(dir: &Path, adapter: SocketAddr, drain_ms: u64) -> std::path::PathBuf {
    std::fs::write(
        dir.join("policy.toml"),
        format!("[[grant]]\ncallers = [\"{CALLER}\"]\nmatters = [\"unemployment-benefit\"]\n"),
    )
    .unwrap();
    let path = dir.join("exchange.toml");
    std::fs::write(
        &path,
        format!(
            "listen = \"127.0.0.1:0\"\npolicy = \"policy.toml\"\nplaintext_caller = \"{CALLER}\"\n\
             drain_timeout_ms = {drain_ms}\n\n[admin]\nenabled = false\n\n\
             [departments.hrss]\nendpoints = [\"http://{adapter}\"]\ntimeout_ms = 10000\n"
        ),
    )
    .unwrap();
    path
}

fn sigterm(child: &Child) {
    let pid = child.id().unwrap();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

fn lookup() -> tonic::Request<LookupRequest> {
    let mut request = tonic::Request::new(LookupRequest {
        case: Some(CaseContext {
            matter: "unemployment-benefit".into(),
            case_number: "LIFE-2026-000001".into(),
            operator_id: "clerk.lifecycle@test".into(),
        }),
        subject: Some(Subject {
            id_number: SUBJECT.into(),
            name: String::new(),
            ..Default::default()
        }),
        evidence_type: "hrss.unemployment".into(),
        fields: None,
    });
    request.set_timeout(Duration::from_secs(20));
    request
}

/// One request as the client saw it.
#[derive(Debug, Clone)]
struct Outcome {
    code: tonic::Code,
}

/// `workers` clients asking in a loop until `stop` is set; the tasks end
/// then.
async fn load(
    addr: SocketAddr,
    workers: usize,
    stop: Arc<AtomicBool>,
) -> (Arc<Mutex<Vec<Outcome>>>, Vec<JoinHandle<()>>) {
    let outcomes: Arc<Mutex<Vec<Outcome>>> = Arc::default();
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let tasks = (0..workers)
        .map(|_| {
            let outcomes = outcomes.clone();
            let stop = stop.clone();
            let mut client = ExchangeClient::new(channel.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    let code = match client.lookup(lookup()).await {
                        Ok(_) => tonic::Code::Ok,
                        Err(status) => status.code(),
                    };
                    outcomes.lock().unwrap().push(Outcome { code });
                    if code != tonic::Code::Ok {
                        // The node is going away: do not spin.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            })
        })
        .collect();
    (outcomes, tasks)
}

/// Stops the load and returns what every call ended with.
async fn finish(
    outcomes: Arc<Mutex<Vec<Outcome>>>,
    stop: &AtomicBool,
    tasks: Vec<JoinHandle<()>>,
) -> Vec<Outcome> {
    stop.store(true, Ordering::SeqCst);
    for task in tasks {
        task.await.unwrap();
    }
    outcomes.lock().unwrap().clone()
}

/// What the exchange logs when its drain bound cuts requests off.
const CUT_OFF: &str = "cutting them off";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests_commits_the_audit_log_and_exits_zero() {
    let (adapter, gate) = spawn_gated_adapter().await;
    let dir = tempfile::tempdir().unwrap();
    // A drain bound far beyond what the held requests need once released:
    // the drain ends because they finish, not because of the bound.
    let config = write_config(dir.path(), adapter, 30_000);
    let (mut child, addr, logs) =
        spawn_exchange_logged(&config, "warn,tongban_cli::serve=info").await;

    let stop = Arc::new(AtomicBool::new(false));
    let (outcomes, workers) = load(addr, 8, stop.clone()).await;
    // Eight requests in flight, held at the department, when SIGTERM comes.
    gate.wait_asked(8).await;
    sigterm(&child);
    logs.wait_for("stopping: draining in-flight requests").await;
    // Only now may they finish.
    gate.open();
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .expect("the process exits once its requests are answered")
        .unwrap();
    assert_eq!(status.code(), Some(0), "{status:?}");
    let outcomes = finish(outcomes, &stop, workers).await;

    let answered = outcomes
        .iter()
        .filter(|o| o.code == tonic::Code::Ok)
        .count();
    // The eight requests under way at SIGTERM were answered, not cut off;
    // and so was every other request that reached the department.
    assert!(answered >= 8, "{answered}");
    assert_eq!(
        answered,
        gate.asked(),
        "a request that reached the department was not answered: {outcomes:?}"
    );
    // The rest were refused because the node is stopping (never started,
    // so never cut off).
    for o in &outcomes {
        assert!(
            matches!(
                o.code,
                tonic::Code::Ok
                    | tonic::Code::Unavailable
                    | tonic::Code::Cancelled
                    | tonic::Code::Unknown
            ),
            "{o:?}"
        );
    }
    let logs = logs.all().await;
    assert!(
        !logs.iter().any(|l| l.contains(CUT_OFF)),
        "the drain bound was reached: {logs:?}"
    );

    // Every answer was audited and the tail committed before exit.
    let store = tongban_audit::SqliteStore::open(&dir.path().join("audit.db"))
        .await
        .unwrap();
    let state = tongban_audit::AuditStore::log_state(&store, "exchange-1")
        .await
        .unwrap();
    assert!(
        state.size >= answered as u64,
        "{} entries for {answered} answers",
        state.size
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drain_is_bounded() {
    // The department never answers: only the drain bound can end the drain.
    let (adapter, gate) = spawn_gated_adapter().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), adapter, 500);
    let (mut child, addr, logs) = spawn_exchange_logged(&config, "warn").await;

    let stop = Arc::new(AtomicBool::new(false));
    let (outcomes, workers) = load(addr, 2, stop.clone()).await;
    gate.wait_asked(2).await;
    sigterm(&child);
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .expect("the process exits although its requests never finish")
        .unwrap();
    assert_eq!(status.code(), Some(0), "{status:?}");
    let outcomes = finish(outcomes, &stop, workers).await;
    let logs = logs.all().await;
    assert!(
        logs.iter().any(|l| l.contains(CUT_OFF)),
        "the drain bound ended the drain: {logs:?}"
    );
    assert!(
        outcomes.iter().all(|o| o.code != tonic::Code::Ok),
        "nothing could have been answered: {outcomes:?}"
    );
    assert!(
        outcomes.len() >= 2,
        "the cut-off requests failed at the client: {outcomes:?}"
    );
}

fn free_port() -> SocketAddr {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    probe.local_addr().unwrap()
}

/// `GET /metrics` over HTTP/1.1.
async fn scrape(addr: SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_adapter_serves_metrics_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let admin = free_port();
    let mut config = tongban_devkit::reference::config(
        tongban_devkit::reference::Dept::Police,
        &format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("police.db").display()
        ),
    );
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.admin_listen = Some(admin);
    config.drain_timeout_ms = 2000;
    let path = dir.path().join("police.toml");
    std::fs::write(&path, config.to_toml()).unwrap();

    let mut child = Command::new(env!("CARGO_BIN_EXE_tongban"))
        .args([
            "--log-format",
            "json",
            "adapter",
            "--seed-reference",
            "--config",
        ])
        .arg(&path)
        .env("RUST_LOG", "warn")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let logs = ChildLogs::capture(child.stderr.take().unwrap());
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
        .await
        .expect("the adapter says where it listens")
        .unwrap()
        .unwrap();
    let addr: SocketAddr = line
        .strip_prefix("police adapter listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .parse()
        .unwrap();

    // One call, counted on the adapter's own admin endpoint.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut adapter = tongban_proto::v1::adapter_client::AdapterClient::new(channel);
    adapter.describe(DescribeRequest::default()).await.unwrap();
    let metrics = scrape(admin).await;
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("tongban_rpc_requests_total")
                && l.contains("tongban.v1.Adapter/Describe")),
        "{metrics}"
    );

    sigterm(&child);
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .expect("the adapter exits")
        .unwrap();
    assert_eq!(status.code(), Some(0), "{status:?}");
    // Nothing was in flight: it stopped at once, not at its drain bound.
    let logs = logs.all().await;
    assert!(
        !logs.iter().any(|l| l.contains(CUT_OFF)),
        "the drain bound was reached: {logs:?}"
    );
}
