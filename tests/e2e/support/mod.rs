//! Shared harness for the end-to-end tests: a deployment shared by the tests
//! of one binary, request builders, status-detail decoding, raw TLS clients
//! for certificates our own client code refuses to present, and log capture.

// Test code: a panic here is a test failure, which is what we want.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hyper_util::rt::TokioIo;
use prost::Message;
use rustls::ClientConfig;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject};
use tokio::net::TcpStream;
use tongban_devkit::local::LocalDeployment;
use tongban_devkit::pki::{DevPki, LeafSpec};
use tongban_devkit::reference::stories::Story;
use tongban_proto::v1::exchange_client::ExchangeClient;
use tongban_proto::v1::{
    AuditReceipt, CaseContext, Evidence, LookupRequest, Subject, field::Value,
};
use tongban_trust::PeerIdentity;
use tonic::transport::{Channel, Endpoint};
use tonic_types::StatusExt;

/// How long a test waits for one call before it counts as hung.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

// ---------- one deployment per test binary

struct Shared {
    deployment: LocalDeployment,
    // Serves the deployment for the life of the process; never dropped.
    _runtime: tokio::runtime::Runtime,
}

static SHARED: OnceLock<Shared> = OnceLock::new();

/// A deployment shared by every test of this binary, running on its own
/// runtime so it outlives each test's runtime. Its state lives under
/// `target_tmp` (pass `env!("CARGO_TARGET_TMPDIR")`) in a directory named for
/// this process; directories of processes that are gone are removed first.
/// Tests must not change it (no outages, no policy edits): those start their
/// own deployment.
pub fn shared_deployment(target_tmp: &str) -> &'static LocalDeployment {
    &SHARED
        .get_or_init(|| {
            let root = PathBuf::from(target_tmp).join("e2e");
            remove_stale_state(&root);
            let dir = root.join(format!("pid-{}", std::process::id()));
            // Built on a plain thread: the caller is inside a test's runtime,
            // where starting another one would panic.
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("shared runtime");
                let deployment = runtime
                    .block_on(LocalDeployment::start(&dir))
                    .expect("shared deployment starts");
                Shared {
                    deployment,
                    _runtime: runtime,
                }
            })
            .join()
            .expect("shared deployment thread")
        })
        .deployment
}

fn remove_stale_state(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix("pid-") else {
            continue;
        };
        if !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// A fresh deployment of its own, for tests that change things.
pub async fn own_deployment(
    options: tongban_devkit::local::LocalOptions,
) -> anyhow::Result<(tempfile::TempDir, LocalDeployment)> {
    let dir = tempfile::Builder::new().prefix("tongban-e2e-").tempdir()?;
    let deployment = LocalDeployment::start_with(dir.path(), options).await?;
    Ok((dir, deployment))
}

// ---------- requests

pub fn case(matter: &str) -> Option<CaseContext> {
    Some(CaseContext {
        matter: matter.into(),
        case_number: "E2E-2026-000001".into(),
        operator_id: "clerk.e2e@test".into(),
    })
}

pub fn subject(story: &Story) -> Option<Subject> {
    Some(Subject {
        id_number: story.id_number.into(),
        name: story.name.into(),
        ..Default::default()
    })
}

pub fn lookup_request(matter: &str, story: &Story, evidence_type: &str) -> LookupRequest {
    LookupRequest {
        case: case(matter),
        subject: subject(story),
        evidence_type: evidence_type.into(),
        fields: None,
    }
}

/// `request` with the test's call timeout set.
pub fn timed<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(CALL_TIMEOUT);
    request
}

/// A field's value as text: booleans `true`/`false`, integers in decimal,
/// dates ISO 8601; `None` for a field present without a value.
pub type Fields = BTreeMap<String, Option<String>>;

pub fn fields(evidence: &Evidence) -> Fields {
    evidence
        .fields
        .iter()
        .map(|f| {
            let value = f.value.as_ref().map(|v| match v {
                Value::BoolValue(b) => b.to_string(),
                Value::IntValue(i) => i.to_string(),
                Value::TextValue(t) | Value::DateValue(t) => t.clone(),
            });
            (f.name.clone(), value)
        })
        .collect()
}

/// The value of `name`, failing the test if absent or without value.
pub fn value<'a>(fields: &'a Fields, name: &str) -> &'a str {
    fields
        .get(name)
        .unwrap_or_else(|| panic!("field {name} missing from {fields:?}"))
        .as_deref()
        .unwrap_or_else(|| panic!("field {name} has no value in {fields:?}"))
}

// ---------- status details

/// `(reason, domain, metadata)` of the status's ErrorInfo; fails if absent.
pub fn error_info(status: &tonic::Status) -> (String, String, BTreeMap<String, String>) {
    let info = status
        .get_details_error_info()
        .unwrap_or_else(|| panic!("no ErrorInfo in {status:?}"));
    (
        info.reason,
        info.domain,
        info.metadata.into_iter().collect(),
    )
}

/// `(field, description)` of every BadRequest violation; fails if absent.
pub fn violations(status: &tonic::Status) -> Vec<(String, String)> {
    status
        .get_details_bad_request()
        .unwrap_or_else(|| panic!("no BadRequest in {status:?}"))
        .field_violations
        .into_iter()
        .map(|v| (v.field, v.description))
        .collect()
}

/// The audit receipt a refused Lookup carries in its trailers.
pub fn refusal_receipt(status: &tonic::Status) -> Option<AuditReceipt> {
    let bytes = status
        .metadata()
        .get_bin("tongban-receipt-bin")?
        .to_bytes()
        .ok()?;
    AuditReceipt::decode(bytes.as_ref()).ok()
}

/// Checks a receipt is from the local node and has a SHA-256 leaf hash.
pub fn assert_receipt(receipt: Option<&AuditReceipt>) {
    let receipt = receipt.expect("an audit receipt");
    assert_eq!(receipt.node, "exchange-1");
    assert_eq!(receipt.leaf_hash.len(), 32, "{receipt:?}");
}

// ---------- certificates and raw TLS

/// Client certificate files for one identity.
#[derive(Debug)]
pub struct ClientFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Issues (from `pki`'s CA) and writes a client certificate for a unit of
/// `org` that no policy mentions.
pub fn issue_client(
    pki: &DevPki,
    dir: &Path,
    org: &str,
    unit: &str,
    spec: impl FnOnce(LeafSpec) -> LeafSpec,
) -> anyhow::Result<ClientFiles> {
    let identity = PeerIdentity::new(
        &pki.trust_domain,
        tongban_core::CreditCode::parse(org).map_err(|e| anyhow::anyhow!("{org}: {e}"))?,
        unit,
    )?;
    let issued = pki.ca()?.issue(&spec(LeafSpec::for_identity(&identity)))?;
    let files = ClientFiles {
        cert: dir.join(format!("{unit}.pem")),
        key: dir.join(format!("{unit}.key")),
    };
    issued.write(&files.cert, &files.key)?;
    Ok(files)
}

fn rustls_builder() -> rustls::ConfigBuilder<ClientConfig, rustls::WantsVerifier> {
    ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
}

fn roots(ca_pem: &Path) -> anyhow::Result<rustls::RootCertStore> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_pem)? {
        roots.add(cert?)?;
    }
    Ok(roots)
}

/// A TLS client trusting `ca_pem` that presents `client` (certificate and key
/// files) without checking it first, or no certificate at all.
pub fn raw_tls_client(
    ca_pem: &Path,
    client: Option<&ClientFiles>,
) -> anyhow::Result<Arc<ClientConfig>> {
    let builder = rustls_builder().with_root_certificates(roots(ca_pem)?);
    let mut config = match client {
        None => builder.with_no_client_auth(),
        Some(files) => {
            let chain = vec![CertificateDer::from_pem_file(&files.cert)?];
            let key = PrivateKeyDer::from_pem_file(&files.key)?;
            builder.with_client_auth_cert(chain, key)?
        }
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// An exchange client over a raw TLS connection; fails if the connection,
/// including its TLS handshake, cannot be made.
pub async fn raw_exchange_client(
    url: &str,
    config: Arc<ClientConfig>,
) -> anyhow::Result<ExchangeClient<Channel>> {
    let addr: SocketAddr = url.strip_prefix("https://").context("https URL")?.parse()?;
    let channel = Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(CALL_TIMEOUT)
        .connect_with_connector(tower::service_fn(move |_| {
            let config = config.clone();
            async move {
                let tcp = TcpStream::connect(addr).await?;
                let name = ServerName::try_from("localhost").map_err(io::Error::other)?;
                let tls = tokio_rustls::TlsConnector::from(config)
                    .connect(name, tcp)
                    .await?;
                Ok::<_, io::Error>(TokioIo::new(tls))
            }
        }))
        .await?;
    Ok(ExchangeClient::new(channel))
}

// ---------- log capture

/// Everything logged in this process (install with [`capture_logs`]).
#[derive(Debug, Clone, Default)]
pub struct Logs(Arc<Mutex<Vec<u8>>>);

impl io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Logs {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
    }

    /// Waits (bounded) for a log line containing every one of `needles`,
    /// after byte offset `from`.
    pub async fn wait_for(
        &self,
        from: usize,
        needles: &[&str],
        within: Duration,
    ) -> anyhow::Result<String> {
        let until = Instant::now() + within;
        loop {
            let text = self.text();
            if let Some(line) = text
                .get(from..)
                .unwrap_or_default()
                .lines()
                .find(|l| needles.iter().all(|n| l.contains(n)))
            {
                return Ok(line.to_owned());
            }
            if Instant::now() > until {
                bail!("no log line with {needles:?} within {within:?}; logs:\n{text}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Installs (once per process) a global subscriber writing every log line
/// of every thread at INFO and above into the returned buffer.
pub fn capture_logs() -> Logs {
    static LOGS: OnceLock<Logs> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Logs::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .finish();
        // Fails only if another global subscriber is set, and then the
        // tests waiting for log lines say so.
        let _ = tracing::subscriber::set_global_default(subscriber);
        logs
    })
    .clone()
}

/// Polls `check` every 50 ms until it returns `Some`, for at most `within`.
pub async fn eventually<T, F, Fut>(within: Duration, what: &str, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let until = Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        if Instant::now() > until {
            bail!("{what}: not within {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A Gather item's `google.rpc.Status` as a `tonic::Status`, to read its
/// details like any other.
pub fn item_status(rpc: &tongban_proto::google::rpc::Status) -> tonic::Status {
    tonic::Status::with_details(
        tonic::Code::from(rpc.code),
        rpc.message.clone(),
        prost::bytes::Bytes::from(rpc.encode_to_vec()),
    )
}
