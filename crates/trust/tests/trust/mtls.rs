//! Mutual TLS over real sockets on 127.0.0.1 with a tonic health service.

// Helpers outside #[test] functions are test code too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject};
use tokio::net::TcpStream;
use tongban_devkit::pki::{DevCa, DevPki, DevPkiOptions, LeafSpec, init_dev_pki};
use tongban_trust::{
    CertReloader, IncomingOptions, PeerConnectInfo, PeerIdentity, ReloadOptions,
    ReloadableServerConfig, TlsClientConfig, TlsError, TlsIncoming, connect_channel,
    peer_connect_info, peer_identity,
};
use tonic::transport::{Channel, Endpoint, Server};
use tonic::{Request, Status};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

const DAY: Duration = Duration::from_secs(86_400);

// ---------- log capture (current-thread runtime: spawned tasks log here too)

#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    async fn wait_for(&self, needle: &str) -> String {
        for _ in 0..500 {
            let text = self.text();
            if let Some(line) = text.lines().find(|l| l.contains(needle)) {
                return line.to_owned();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!(
            "log line containing {needle:?} not found in:\n{}",
            self.text()
        );
    }
}

fn capture_logs() -> (Logs, tracing::subscriber::DefaultGuard) {
    let logs = Logs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::DEBUG)
        .finish();
    (logs, tracing::subscriber::set_default(subscriber))
}

// ---------- server and client helpers

type Seen = Arc<Mutex<Vec<PeerConnectInfo>>>;

async fn serve(
    config: impl Into<ReloadableServerConfig>,
    options: IncomingOptions,
) -> (SocketAddr, Seen) {
    let incoming = TlsIncoming::bind("127.0.0.1:0".parse().unwrap(), config, options)
        .await
        .unwrap();
    let addr = incoming.local_addr();
    let seen: Seen = Arc::default();
    let recorder = seen.clone();
    let (reporter, health) = tonic_health::server::health_reporter();
    tokio::spawn(async move {
        let _reporter = reporter;
        Server::builder()
            .layer(tonic::service::InterceptorLayer::new(
                move |req: Request<()>| {
                    let info = peer_connect_info(&req)
                        .cloned()
                        .ok_or_else(|| Status::unauthenticated("no peer identity"))?;
                    assert_eq!(peer_identity(&req), Some(info.identity()));
                    recorder.lock().unwrap().push(info);
                    Ok(req)
                },
            ))
            .add_service(health)
            .serve_with_incoming(incoming)
            .await
            .unwrap();
    });
    (addr, seen)
}

async fn check(channel: Channel) -> Result<(), Status> {
    HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .map(|_| ())
}

fn roots(ca_pem: &Path) -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_pem).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    roots
}

fn builder() -> rustls::ConfigBuilder<ClientConfig, rustls::WantsVerifier> {
    ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
}

/// A client config that skips our own-certificate checks, to present
/// certificates the server must refuse.
fn raw_client(ca_pem: &Path, cert_pem: &str, key_pem: &str) -> Arc<ClientConfig> {
    let chain = vec![CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap()];
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
    let mut config = builder()
        .with_root_certificates(roots(ca_pem))
        .with_client_auth_cert(chain, key)
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(config)
}

async fn raw_call(addr: SocketAddr, config: Arc<ClientConfig>) -> Result<(), String> {
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_with_connector(tower::service_fn(move |_| {
            let config = config.clone();
            async move {
                let tcp = TcpStream::connect(addr).await?;
                let name = ServerName::try_from("localhost").unwrap();
                let tls = tokio_rustls::TlsConnector::from(config)
                    .connect(name, tcp)
                    .await?;
                Ok::<_, io::Error>(TokioIo::new(tls))
            }
        }))
        .await
        .map_err(|e| format!("connect: {e:?}"))?;
    check(channel).await.map_err(|e| format!("call: {e:?}"))
}

async fn server_leaf(addr: SocketAddr, config: Arc<ClientConfig>) -> CertificateDer<'static> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].clone()
}

struct Fixture {
    _tmp: tempfile::TempDir,
    pki: DevPki,
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let pki = init_dev_pki(&tmp.path().join("pki"), &DevPkiOptions::default()).unwrap();
    Fixture { _tmp: tmp, pki }
}

impl Fixture {
    fn id(&self, name: &str) -> PeerIdentity {
        self.pki.get(name).unwrap().identity.clone()
    }

    async fn exchange(&self) -> (SocketAddr, Seen) {
        let config = self.pki.server_config("exchange").unwrap().build().unwrap();
        serve(config, IncomingOptions::default()).await
    }

    /// Expects the handshake to be refused and the server to log `reason`.
    async fn assert_refused(
        &self,
        logs: &Logs,
        addr: SocketAddr,
        config: Arc<ClientConfig>,
        reason: &str,
    ) {
        let outcome = raw_call(addr, config).await;
        assert!(outcome.is_err(), "call unexpectedly succeeded");
        let line = logs.wait_for(reason).await;
        assert!(line.contains("WARN"), "{line}");
        assert!(line.contains("TLS handshake failed"), "{line}");
        assert!(line.contains("peer=127.0.0.1:"), "{line}");
    }
}

// ---------- tests

#[tokio::test]
async fn valid_certificate_reaches_the_service_with_its_identity() {
    let f = fixture();
    let (addr, seen) = f.exchange().await;
    let tls = f.pki.client_config("dongli-community").unwrap();
    let channel = connect_channel(
        &format!("https://localhost:{}", addr.port()),
        &tls,
        Some(&f.id("exchange")),
    )
    .await
    .unwrap();
    check(channel.clone()).await.unwrap();
    check(channel).await.unwrap();

    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2);
    let info = &seen[0];
    assert_eq!(info.identity(), &f.id("dongli-community"));
    assert_eq!(
        info.identity().to_string(),
        "spiffe://panzhihua.tongban.test/org/12510403TB0000060J/unit/dongli-community"
    );
    assert_eq!(info.remote_addr().ip().to_string(), "127.0.0.1");
    assert_eq!(info.local_addr(), Some(addr));
    assert_eq!(
        PeerIdentity::from_der(info.leaf_cert()).unwrap(),
        f.id("dongli-community")
    );
}

#[tokio::test]
async fn ip_address_endpoints_verify_against_ip_sans() {
    let f = fixture();
    let (addr, seen) = f.exchange().await;
    let tls = f.pki.client_config("admin").unwrap();
    let channel = connect_channel(&format!("https://127.0.0.1:{}", addr.port()), &tls, None)
        .await
        .unwrap();
    check(channel).await.unwrap();
    assert_eq!(seen.lock().unwrap()[0].identity(), &f.id("admin"));
}

#[tokio::test]
async fn no_client_certificate_is_refused() {
    let (logs, _guard) = capture_logs();
    let f = fixture();
    let (addr, seen) = f.exchange().await;
    let mut config = builder()
        .with_root_certificates(roots(&f.pki.ca_cert))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    f.assert_refused(
        &logs,
        addr,
        Arc::new(config),
        "reason=no client certificate",
    )
    .await;
    assert!(seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn certificate_from_another_ca_is_refused() {
    let (logs, _guard) = capture_logs();
    let f = fixture();
    let (addr, seen) = f.exchange().await;
    let now = SystemTime::now();
    let rogue = DevCa::generate("rogue CA", Default::default(), now - DAY, now + DAY).unwrap();
    // Same identity as a real service point: only the issuer differs.
    let leaf = rogue
        .issue(&LeafSpec::for_identity(&f.id("dongli-community")))
        .unwrap();
    let config = raw_client(&f.pki.ca_cert, &leaf.cert_pem, leaf.key_pem());
    f.assert_refused(
        &logs,
        addr,
        config,
        "reason=client certificate from unknown CA",
    )
    .await;
    assert!(seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn expired_client_certificate_is_refused() {
    let (logs, _guard) = capture_logs();
    let f = fixture();
    let (addr, _) = f.exchange().await;
    let now = SystemTime::now();
    let leaf = f
        .pki
        .ca()
        .unwrap()
        .issue(
            &LeafSpec::for_identity(&f.id("salian-township"))
                .valid_between(now - 10 * DAY, now - DAY),
        )
        .unwrap();
    let config = raw_client(&f.pki.ca_cert, &leaf.cert_pem, leaf.key_pem());
    f.assert_refused(&logs, addr, config, "reason=client certificate expired")
        .await;
}

#[tokio::test]
async fn not_yet_valid_client_certificate_is_refused() {
    let (logs, _guard) = capture_logs();
    let f = fixture();
    let (addr, _) = f.exchange().await;
    let now = SystemTime::now();
    let leaf = f
        .pki
        .ca()
        .unwrap()
        .issue(
            &LeafSpec::for_identity(&f.id("salian-township"))
                .valid_between(now + DAY, now + 10 * DAY),
        )
        .unwrap();
    let config = raw_client(&f.pki.ca_cert, &leaf.cert_pem, leaf.key_pem());
    f.assert_refused(
        &logs,
        addr,
        config,
        "reason=client certificate not yet valid",
    )
    .await;
}

#[tokio::test]
async fn certificate_without_a_tongban_identity_is_refused() {
    let (logs, _guard) = capture_logs();
    let f = fixture();
    let (addr, _) = f.exchange().await;
    let ca = f.pki.ca().unwrap();
    let mut spec = LeafSpec::for_identity(&f.id("salian-township"));
    spec.uri_sans.clear();
    let leaf = ca.issue(&spec).unwrap();
    let config = raw_client(&f.pki.ca_cert, &leaf.cert_pem, leaf.key_pem());
    f.assert_refused(
        &logs,
        addr,
        config,
        "no valid tongban identity: certificate has no URI",
    )
    .await;

    let mut spec = LeafSpec::for_identity(&f.id("salian-township"));
    spec.uri_sans.push(f.id("exchange").to_string());
    let leaf = ca.issue(&spec).unwrap();
    let config = raw_client(&f.pki.ca_cert, &leaf.cert_pem, leaf.key_pem());
    f.assert_refused(
        &logs,
        addr,
        config,
        "certificate has 2 URI subject alternative names",
    )
    .await;
}

#[tokio::test]
async fn server_certificate_is_not_a_client_certificate() {
    let (logs, _guard) = capture_logs();
    let f = fixture();
    let (addr, _) = f.exchange().await;
    let police = f.pki.get("police").unwrap();
    let config = raw_client(
        &f.pki.ca_cert,
        &std::fs::read_to_string(&police.cert).unwrap(),
        &std::fs::read_to_string(&police.key).unwrap(),
    );
    f.assert_refused(&logs, addr, config, "not valid for client authentication")
        .await;
}

#[tokio::test]
async fn allow_list_admits_only_the_exchange() {
    let (logs, _guard) = capture_logs();
    let f = fixture();
    let config = f
        .pki
        .server_config("police")
        .unwrap()
        .allow_only([f.id("exchange")])
        .build()
        .unwrap();
    let (addr, seen) = serve(config, IncomingOptions::default()).await;
    let uri = format!("https://localhost:{}", addr.port());

    let exchange = f.pki.client_config("exchange").unwrap();
    let channel = connect_channel(&uri, &exchange, Some(&f.id("police")))
        .await
        .unwrap();
    check(channel).await.unwrap();
    assert_eq!(seen.lock().unwrap()[0].identity(), &f.id("exchange"));

    let station = f.pki.client_config("salian-police-station").unwrap();
    let outcome = match connect_channel(&uri, &station, None).await {
        Ok(channel) => check(channel).await.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    assert!(outcome.is_err());
    logs.wait_for("unit/salian-police-station is not allowed on this server")
        .await;
    assert_eq!(seen.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn client_refuses_a_server_with_the_wrong_identity_or_host() {
    let f = fixture();
    let (addr, seen) = f.exchange().await;
    let tls = f.pki.client_config("exchange").unwrap();
    // Expecting the police adapter, but the exchange answers.
    let wrong = connect_channel(
        &format!("https://localhost:{}", addr.port()),
        &tls,
        Some(&f.id("police")),
    )
    .await;
    let err = wrong.map(|_| ()).unwrap_err();
    assert!(matches!(err, TlsError::Transport { .. }), "{err}");
    assert!(
        err.to_string()
            .contains(&format!("expected {}", f.id("police"))),
        "{err}"
    );
    // The certificate is not valid for this host name.
    let ca = f.pki.ca().unwrap();
    let leaf = ca
        .issue(
            &LeafSpec::for_identity(&f.id("civil"))
                .serving(&["civil.example.test"])
                .server_only(),
        )
        .unwrap();
    let dir = f.pki.dir.join("elsewhere");
    std::fs::create_dir(&dir).unwrap();
    leaf.write(&dir.join("civil.pem"), &dir.join("civil.key"))
        .unwrap();
    let config = tongban_trust::TlsServerConfig::new(
        dir.join("civil.pem"),
        dir.join("civil.key"),
        &f.pki.ca_cert,
    )
    .build()
    .unwrap();
    let (civil_addr, civil_seen) = serve(config, IncomingOptions::default()).await;
    let wrong_host = connect_channel(
        &format!("https://localhost:{}", civil_addr.port()),
        &tls,
        None,
    )
    .await;
    let wrong_host = wrong_host.map(|_| ()).unwrap_err().to_string();
    assert!(wrong_host.contains("NotValidForName"), "{wrong_host}");
    assert!(seen.lock().unwrap().is_empty());
    assert!(civil_seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn tls12_is_refused() {
    let (logs, _guard) = capture_logs();
    let f = fixture();
    let (addr, _) = f.exchange().await;
    let station = f.pki.get("hotline-96196").unwrap();
    let mut config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS12])
            .unwrap()
            .with_root_certificates(roots(&f.pki.ca_cert))
            .with_client_auth_cert(
                CertificateDer::pem_file_iter(&station.cert)
                    .unwrap()
                    .map(Result::unwrap)
                    .collect(),
                PrivateKeyDer::from_pem_file(&station.key).unwrap(),
            )
            .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec()];
    f.assert_refused(&logs, addr, Arc::new(config), "client incompatible")
        .await;
}

#[tokio::test]
async fn a_stalled_handshake_does_not_block_others() {
    let (logs, _guard) = capture_logs();
    let f = fixture();
    let config = f.pki.server_config("exchange").unwrap().build().unwrap();
    let options = IncomingOptions {
        handshake_timeout: Duration::from_secs(1),
        ..IncomingOptions::default()
    };
    let (addr, seen) = serve(config, options).await;
    // Connects but never says hello.
    let _stalled = TcpStream::connect(addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let tls = f.pki.client_config("hotline-96196").unwrap();
    let channel = connect_channel(&format!("https://localhost:{}", addr.port()), &tls, None)
        .await
        .unwrap();
    check(channel).await.unwrap();
    // Had the stalled handshake blocked the accept loop, this call could only
    // have completed after the stall timed out (and was logged).
    assert!(!logs.text().contains("no ClientHello"));
    assert_eq!(seen.lock().unwrap().len(), 1);
    // The ClientHello timeout is capped by the handshake timeout.
    logs.wait_for("reason=no ClientHello within 1s").await;
}

#[tokio::test]
async fn server_refuses_to_load_an_expired_or_future_own_certificate() {
    let f = fixture();
    let ca = f.pki.ca().unwrap();
    let now = SystemTime::now();
    let dir = &f.pki.dir;
    let spec = LeafSpec::for_identity(&f.id("exchange")).serving(&["localhost"]);
    let write = |name: &str, not_before, not_after| {
        let leaf = ca
            .issue(&spec.clone().valid_between(not_before, not_after))
            .unwrap();
        let (cert, key) = (
            dir.join(format!("{name}.pem")),
            dir.join(format!("{name}.key")),
        );
        leaf.write(&cert, &key).unwrap();
        tongban_trust::TlsServerConfig::new(cert, key, &f.pki.ca_cert)
    };
    let expired = write("old", now - 10 * DAY, now - DAY).build().unwrap_err();
    assert!(
        matches!(expired, TlsError::CertificateExpired { .. }),
        "{expired}"
    );
    assert!(
        expired.to_string().contains("certificate expired at"),
        "{expired}"
    );
    let future = write("future", now + DAY, now + 2 * DAY)
        .build()
        .unwrap_err();
    assert!(
        matches!(future, TlsError::CertificateNotYetValid { .. }),
        "{future}"
    );
    assert!(future.to_string().contains("not yet valid"), "{future}");

    // Mismatched key and certificate.
    let exchange = f.pki.get("exchange").unwrap();
    let police = f.pki.get("police").unwrap();
    let mismatched =
        tongban_trust::TlsServerConfig::new(&exchange.cert, &police.key, &f.pki.ca_cert)
            .build()
            .unwrap_err();
    assert!(matches!(mismatched, TlsError::Rustls(_)), "{mismatched}");
    // Client side applies the same own-certificate checks.
    let client = TlsClientConfig::new(dir.join("old.pem"), dir.join("old.key"), &f.pki.ca_cert);
    assert!(matches!(
        client.build(None),
        Err(TlsError::CertificateExpired { .. })
    ));
}

#[tokio::test]
async fn reload_picks_up_new_certificates_and_keeps_the_old_on_error() {
    let (logs, _guard) = capture_logs();
    let f = fixture();
    let source = f.pki.server_config("exchange").unwrap();
    let reloadable = source.load_reloadable().unwrap();
    let _reloader = CertReloader::spawn(
        source.clone(),
        reloadable.clone(),
        ReloadOptions {
            poll_interval: Duration::from_millis(25),
            on_sighup: false,
        },
    )
    .unwrap();
    let (addr, _) = serve(reloadable.clone(), IncomingOptions::default()).await;
    let station = f.pki.get("dongli-community").unwrap();
    let client = raw_client(
        &f.pki.ca_cert,
        &std::fs::read_to_string(&station.cert).unwrap(),
        &std::fs::read_to_string(&station.key).unwrap(),
    );
    let wait_generation = |target: u64| {
        let reloadable = reloadable.clone();
        async move {
            for _ in 0..500 {
                if reloadable.generation() >= target {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            panic!("config generation stayed below {target}");
        }
    };

    let first = server_leaf(addr, client.clone()).await;
    let exchange = f.pki.get("exchange").unwrap();
    let on_disk = || CertificateDer::from_pem_file(&exchange.cert).unwrap();
    assert_eq!(first, on_disk());

    // Rotation: new connections get the new certificate.
    f.pki.renew("exchange", 30 * DAY).unwrap();
    wait_generation(1).await;
    let second = server_leaf(addr, client.clone()).await;
    assert_ne!(second, first);
    assert_eq!(second, on_disk());
    raw_call(addr, client.clone()).await.unwrap();
    logs.wait_for("TLS server certificate reloaded").await;

    // A broken replacement is refused; the previous certificate stays.
    std::fs::write(&exchange.cert, "-----BEGIN CERTIFICATE-----\nbroken\n").unwrap();
    let line = logs.wait_for("reload rejected").await;
    assert!(line.contains("ERROR"), "{line}");
    assert_eq!(server_leaf(addr, client.clone()).await, second);

    // So is an expired one, with a log that says so.
    let now = SystemTime::now();
    f.pki
        .ca()
        .unwrap()
        .issue(
            &LeafSpec::for_identity(&exchange.identity)
                .serving(&["localhost"])
                .valid_between(now - 10 * DAY, now - DAY),
        )
        .unwrap()
        .write(&exchange.cert, &exchange.key)
        .unwrap();
    logs.wait_for("certificate expired at").await;
    assert_eq!(server_leaf(addr, client.clone()).await, second);
    assert_eq!(reloadable.generation(), 1);
    raw_call(addr, client).await.unwrap();
}

#[tokio::test]
async fn client_presents_a_renewed_certificate_on_new_connections() {
    let f = fixture();
    let (addr, seen) = f.exchange().await;
    let tls = f.pki.client_config("salian-township").unwrap();
    // One connector for both channels: it notices the renewed files itself.
    let connector = tls.connector(None).unwrap();
    let endpoint =
        tongban_trust::tls_endpoint(&format!("https://localhost:{}", addr.port())).unwrap();
    let channel = endpoint
        .connect_with_connector(connector.clone())
        .await
        .unwrap();
    check(channel).await.unwrap();
    f.pki.renew("salian-township", 7 * DAY).unwrap();
    let channel = endpoint.connect_with_connector(connector).await.unwrap();
    check(channel).await.unwrap();
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].identity(), seen[1].identity());
    assert_ne!(seen[0].leaf_cert(), seen[1].leaf_cert());
}

#[tokio::test]
async fn sighup_reloads_immediately() {
    let f = fixture();
    let source = f.pki.server_config("exchange").unwrap();
    let reloadable = source.load_reloadable().unwrap();
    let _reloader = CertReloader::spawn(
        source,
        reloadable.clone(),
        ReloadOptions {
            // Long enough that only the signal can explain a reload.
            poll_interval: Duration::from_secs(3600),
            on_sighup: true,
        },
    )
    .unwrap();
    tokio::task::yield_now().await;
    f.pki.renew("exchange", DAY).unwrap();
    let status = std::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    for _ in 0..500 {
        if reloadable.generation() == 1 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("SIGHUP did not reload the certificate");
}

#[tokio::test]
async fn ed25519_pki_works_end_to_end() {
    let tmp = tempfile::tempdir().unwrap();
    let options = DevPkiOptions {
        key_algorithm: tongban_devkit::pki::KeyAlgorithm::Ed25519,
        ..DevPkiOptions::default()
    };
    let pki = init_dev_pki(tmp.path(), &options).unwrap();
    let config = pki.server_config("civil").unwrap().build().unwrap();
    let (addr, seen) = serve(config, IncomingOptions::default()).await;
    let civil = pki.get("civil").unwrap().identity.clone();
    let tls = pki.client_config("exchange").unwrap();
    let channel = connect_channel(
        &format!("https://127.0.0.1:{}", addr.port()),
        &tls,
        Some(&civil),
    )
    .await
    .unwrap();
    check(channel).await.unwrap();
    assert_eq!(
        seen.lock().unwrap()[0].identity(),
        &pki.get("exchange").unwrap().identity
    );
}
