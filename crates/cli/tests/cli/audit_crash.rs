//! Acceptance crash test: the real `tongban serve` under concurrent Lookups
//! is killed with SIGKILL mid-load and restarted; every receipt a client
//! received is in the log, provable, and the log verifies with the pinned key
//! (`tongban audit verify`, the library and `ProveReceipt` agree).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::Connection;
use tongban_audit::{AuditStore, Keyring, PostgresStore, SqliteStore, VerifyOptions};
use tongban_proto::v1::exchange_client::ExchangeClient;
use tongban_proto::v1::{AuditReceipt, CaseContext, LookupRequest, ProveReceiptRequest, Subject};

use crate::common::{spawn_adapter, spawn_exchange};

const CALLER: &str = "org/91350100M000100Y43/unit/crash-test";
/// Synthetic identity numbers with valid check characters.
const SUBJECTS: [&str; 2] = ["510403198507220465", "510421199003070026"];

/// Where the log goes: a SQLite file in the test directory, or a schema of
/// the test PostgreSQL.
#[derive(Debug, Clone)]
enum Backend {
    Sqlite,
    Postgres { url: String, schema: String },
}

impl Backend {
    fn toml(&self) -> String {
        match self {
            Backend::Sqlite => "store = \"audit.db\"\n".into(),
            Backend::Postgres { url, schema } => {
                format!("store = \"{url}\"\npostgres_schema = \"{schema}\"\n")
            }
        }
    }

    async fn open(&self, dir: &Path) -> Box<dyn AuditStore> {
        match self {
            Backend::Sqlite => Box::new(SqliteStore::open(&dir.join("audit.db")).await.unwrap()),
            Backend::Postgres { url, schema } => {
                Box::new(PostgresStore::connect(url, Some(schema)).await.unwrap())
            }
        }
    }

    fn cli_args(&self, dir: &Path) -> Vec<String> {
        match self {
            Backend::Sqlite => vec!["--store".into(), dir.join("audit.db").display().to_string()],
            Backend::Postgres { url, schema } => vec![
                "--store".into(),
                url.clone(),
                "--schema".into(),
                schema.clone(),
            ],
        }
    }
}

fn write_config(dir: &Path, adapter: SocketAddr, backend: &Backend) -> PathBuf {
    std::fs::write(
        dir.join("policy.toml"),
        format!("[[grant]]\ncallers = [\"{CALLER}\"]\nmatters = [\"unemployment-benefit\"]\n"),
    )
    .unwrap();
    let path = dir.join("exchange.toml");
    std::fs::write(
        &path,
        format!(
            "node = \"exchange-crash\"\nlisten = \"127.0.0.1:0\"\npolicy = \"policy.toml\"\n\
             plaintext_caller = \"{CALLER}\"\n\n[admin]\nenabled = false\n\n\
             [audit]\n{store}checkpoint_interval_ms = 200\n\n\
             [departments.hrss]\nendpoints = [\"http://{adapter}\"]\ntimeout_ms = 10000\n",
            store = backend.toml()
        ),
    )
    .unwrap();
    path
}

fn lookup(n: usize) -> tonic::Request<LookupRequest> {
    let mut request = tonic::Request::new(LookupRequest {
        case: Some(CaseContext {
            matter: "unemployment-benefit".into(),
            case_number: format!("CRASH-{n}"),
            operator_id: "clerk-crash".into(),
        }),
        subject: Some(Subject {
            id_number: SUBJECTS[n % 2].into(),
            name: String::new(),
            ..Default::default()
        }),
        evidence_type: "hrss.unemployment".into(),
        fields: None,
    });
    request.set_timeout(Duration::from_secs(10));
    request
}

async fn client(addr: SocketAddr) -> ExchangeClient<tonic::transport::Channel> {
    ExchangeClient::connect(format!("http://{addr}"))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_receipt_survives_kill_9_and_the_log_verifies_on_sqlite() {
    crash_and_check(Backend::Sqlite).await;
}

/// On `TONGBAN_TEST_POSTGRES_URL` (default: the local test server), in a
/// schema of its own, dropped afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_receipt_survives_kill_9_and_the_log_verifies_on_postgres() {
    let url = std::env::var("TONGBAN_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let schema = format!("audit_crash_{}_{nanos}", std::process::id());
    let mut admin = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA \"{schema}\"")))
        .execute(&mut admin)
        .await
        .unwrap();
    let outcome = tokio::spawn(crash_and_check(Backend::Postgres {
        url,
        schema: schema.clone(),
    }))
    .await;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA \"{schema}\" CASCADE"
    )))
    .execute(&mut admin)
    .await
    .unwrap();
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

async fn crash_and_check(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let adapter = spawn_adapter(Duration::ZERO).await;
    let config = write_config(dir.path(), adapter, &backend);
    let (mut child, addr) = spawn_exchange(&config, "error").await;

    // Concurrent load; every receipt a client receives is kept.
    let receipts: Arc<Mutex<Vec<AuditReceipt>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for w in 0..8 {
        let receipts = receipts.clone();
        let stop = stop.clone();
        let mut client = client(addr).await;
        workers.push(tokio::spawn(async move {
            let mut n = w;
            while !stop.load(Ordering::Relaxed) {
                match client.lookup(lookup(n)).await {
                    Ok(r) => receipts
                        .lock()
                        .unwrap()
                        .push(r.into_inner().receipt.expect("a receipt")),
                    Err(s) => {
                        // Only the kill may stop a worker.
                        assert!(
                            matches!(
                                s.code(),
                                tonic::Code::Unavailable
                                    | tonic::Code::Unknown
                                    | tonic::Code::Cancelled
                                    | tonic::Code::Internal
                            ),
                            "{s:?}"
                        );
                        return;
                    }
                }
                n += 8;
            }
        }));
    }
    let started = Instant::now();
    while receipts.lock().unwrap().len() < 400 && started.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // SIGKILL while the workers are still sending.
    child.start_kill().unwrap();
    let status = child.wait().await.unwrap();
    assert!(!status.success());
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    let received = receipts.lock().unwrap().clone();
    assert!(received.len() >= 400, "only {} receipts", received.len());

    // Restart on the same store: it recovers and serves again.
    let (mut child, addr) = spawn_exchange(&config, "error").await;
    let mut client = client(addr).await;
    client.lookup(lookup(1)).await.unwrap();
    // The last receipt before the kill is provable once a checkpoint covers it.
    let last = received.iter().max_by_key(|r| r.index).unwrap().clone();
    let started = Instant::now();
    let proof = loop {
        match client
            .prove_receipt(ProveReceiptRequest {
                receipt: Some(last.clone()),
            })
            .await
        {
            Ok(p) => break p.into_inner(),
            Err(s) if started.elapsed() < Duration::from_secs(10) => {
                assert_eq!(s.code(), tonic::Code::NotFound, "{s:?}");
                client.lookup(lookup(2)).await.unwrap();
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(s) => panic!("receipt {last:?} never became provable: {s:?}"),
        }
    };
    let key = dir.path().join("audit-signing.pub");
    let keyring = Keyring::parse(&std::fs::read_to_string(&key).unwrap()).unwrap();
    let (text, ok) = tongban_cli::audit::check_proof(&proof, &keyring);
    assert!(ok, "{text}");

    // Graceful stop; then check the store without the exchange.
    let pid = child.id().unwrap();
    let term = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");

    let store = backend.open(dir.path()).await;
    for r in &received {
        let entry = store
            .entry(&r.node, r.index)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("receipt {r:?} lost in the crash"));
        assert_eq!(entry.leaf_hash.to_vec(), r.leaf_hash, "entry {}", r.index);
        assert_eq!(entry.entry.leaf_hash(r.index), entry.leaf_hash);
    }
    let report = tongban_audit::verify(
        store.as_ref(),
        &keyring,
        &VerifyOptions::default(),
        &mut |_| {},
    )
    .await
    .unwrap();
    assert!(report.is_ok(), "{:#?}", report.findings);
    assert!(report.findings.is_empty(), "{:#?}", report.findings);
    drop(store);

    // The command-line verifier agrees.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tongban"))
        .args(["audit", "verify"])
        .args(backend.cli_args(dir.path()))
        .arg("--key")
        .arg(&key)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("OK: every entry"), "{stdout}");
    assert!(stdout.contains("node exchange-crash"), "{stdout}");
}
