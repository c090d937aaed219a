//! SIGTERM on the real `tongban serve` process under load: requests in
//! flight finish (within the drain bound), the audit log is committed, the
//! process exits 0; past the bound, the process still exits promptly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tongban_proto::v1::exchange_client::ExchangeClient;
use tongban_proto::v1::{CaseContext, DescribeRequest, LookupRequest, Subject};

mod common;
use common::{spawn_adapter, spawn_exchange};

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
    started: Instant,
    finished: Instant,
    code: tonic::Code,
}

/// `workers` clients asking in a loop until `stop_at`.
async fn load(addr: SocketAddr, workers: usize, stop_at: Instant) -> Arc<Mutex<Vec<Outcome>>> {
    let outcomes: Arc<Mutex<Vec<Outcome>>> = Arc::default();
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    for _ in 0..workers {
        let outcomes = outcomes.clone();
        let mut client = ExchangeClient::new(channel.clone());
        tokio::spawn(async move {
            while Instant::now() < stop_at {
                let started = Instant::now();
                let code = match client.lookup(lookup()).await {
                    Ok(_) => tonic::Code::Ok,
                    Err(status) => status.code(),
                };
                outcomes.lock().unwrap().push(Outcome {
                    started,
                    finished: Instant::now(),
                    code,
                });
                if code != tonic::Code::Ok {
                    // The node is going away: do not spin.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        });
    }
    outcomes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests_commits_the_audit_log_and_exits_zero() {
    let delay = Duration::from_millis(400);
    let adapter = spawn_adapter(delay).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), adapter, 5000);
    let (mut child, addr) = spawn_exchange(&config, "warn").await;

    let outcomes = load(addr, 8, Instant::now() + Duration::from_secs(4)).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let term_at = Instant::now();
    sigterm(&child);
    let status = tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .expect("the process exits within the drain bound")
        .unwrap();
    let exited_after = term_at.elapsed();
    assert_eq!(status.code(), Some(0), "{status:?}");
    assert!(exited_after < Duration::from_secs(5), "{exited_after:?}");
    tokio::time::sleep(Duration::from_millis(200)).await;

    let outcomes = outcomes.lock().unwrap().clone();
    // Requests under way when SIGTERM arrived were answered, not cut off.
    let in_flight: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| o.started + Duration::from_millis(50) < term_at && o.finished > term_at)
        .collect();
    assert!(!in_flight.is_empty(), "the load overlapped the SIGTERM");
    for o in &outcomes {
        if o.started + Duration::from_millis(50) < term_at {
            assert_eq!(o.code, tonic::Code::Ok, "{o:?} (SIGTERM at {term_at:?})");
        } else {
            // Afterwards: answered, or refused at once because the node
            // is stopping (never started, so never cut off).
            assert!(
                o.code == tonic::Code::Ok
                    || (matches!(
                        o.code,
                        tonic::Code::Unavailable | tonic::Code::Cancelled | tonic::Code::Unknown
                    ) && o.finished - o.started < Duration::from_millis(200)),
                "{o:?}"
            );
        }
    }
    let answered = outcomes
        .iter()
        .filter(|o| o.code == tonic::Code::Ok)
        .count();
    assert!(answered >= 8, "{answered}");

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
    // Answers take far longer than the drain allows.
    let adapter = spawn_adapter(Duration::from_secs(8)).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), adapter, 500);
    let (mut child, addr) = spawn_exchange(&config, "warn").await;

    let outcomes = load(addr, 2, Instant::now() + Duration::from_secs(1)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let term_at = Instant::now();
    sigterm(&child);
    let status = tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .expect("the process exits")
        .unwrap();
    let exited_after = term_at.elapsed();
    assert_eq!(status.code(), Some(0), "{status:?}");
    // 500 ms of drain plus the audit commit and telemetry flush.
    assert!(exited_after < Duration::from_secs(4), "{exited_after:?}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let outcomes = outcomes.lock().unwrap().clone();
    assert!(
        outcomes.iter().all(|o| o.code != tonic::Code::Ok),
        "nothing could have been answered: {outcomes:?}"
    );
    assert!(
        !outcomes.is_empty(),
        "the cut-off requests failed at the client"
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
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
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

    let term_at = Instant::now();
    sigterm(&child);
    let status = tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .expect("the adapter exits")
        .unwrap();
    assert_eq!(status.code(), Some(0), "{status:?}");
    assert!(term_at.elapsed() < Duration::from_secs(5));
}
