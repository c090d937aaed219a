//! Server side: mutual TLS 1.3 config, reloadable config, the incoming
//! connection stream for tonic, and the peer identity seen by handlers.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use rustls::client::danger::HandshakeSignatureValid;
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, OtherError, ServerConfig,
    SignatureScheme,
};
use rustls_pki_types::{CertificateDer, UnixTime};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tonic::transport::server::Connected;

use crate::identity::{IdentityError, PeerIdentity};
use crate::pem::{
    ALPN_H2, TlsError, check_own_validity, load_certs, load_private_key, load_roots, provider,
};
use crate::watch::FilesStamp;

/// Where a server's TLS material lives, and whom it lets in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsServerConfig {
    /// PEM: our certificate, then any intermediates.
    pub cert_chain: PathBuf,
    /// PEM: our private key.
    pub private_key: PathBuf,
    /// PEM: the CA certificate(s) client certificates must chain to.
    pub client_ca: PathBuf,
    /// If set, only these client identities complete the handshake (e.g. a
    /// department adapter admits only the exchange).
    pub allowed_clients: Option<Vec<PeerIdentity>>,
    /// If set, client identities must belong to this trust domain.
    pub trust_domain: Option<String>,
    /// Also offer ALPN `http/1.1` (after `h2`), for a server that answers
    /// HTTP/1.1 too (the exchange's HTTP/JSON routes).
    pub http1: bool,
}

impl TlsServerConfig {
    pub fn new(
        cert_chain: impl Into<PathBuf>,
        private_key: impl Into<PathBuf>,
        client_ca: impl Into<PathBuf>,
    ) -> Self {
        Self {
            cert_chain: cert_chain.into(),
            private_key: private_key.into(),
            client_ca: client_ca.into(),
            allowed_clients: None,
            trust_domain: None,
            http1: false,
        }
    }

    /// Offers ALPN `http/1.1` besides `h2`, so HTTP/1.1-only clients
    /// complete the handshake.
    pub fn with_http1(mut self) -> Self {
        self.http1 = true;
        self
    }

    /// Admits only the given client identities at the handshake.
    pub fn allow_only(mut self, clients: impl IntoIterator<Item = PeerIdentity>) -> Self {
        self.allowed_clients = Some(clients.into_iter().collect());
        self
    }

    /// Admits only client identities of this trust domain.
    pub fn require_trust_domain(mut self, trust_domain: impl Into<String>) -> Self {
        self.trust_domain = Some(trust_domain.into());
        self
    }

    /// The files a reloader watches.
    pub fn watched_paths(&self) -> [&Path; 3] {
        [&self.cert_chain, &self.private_key, &self.client_ca]
    }

    /// Loads the PEM files into a TLS 1.3-only rustls config that requires a
    /// client certificate signed by `client_ca` and carrying a tongban identity,
    /// and offers ALPN `h2` (and `http/1.1` with [`with_http1`](Self::with_http1)). Refuses our own certificate if it is expired or not
    /// yet valid.
    pub fn build(&self) -> Result<Arc<ServerConfig>, TlsError> {
        let chain = load_certs(&self.cert_chain)?;
        if let Some(leaf) = chain.first() {
            check_own_validity(&self.cert_chain, leaf, SystemTime::now())?;
        }
        let key = load_private_key(&self.private_key)?;
        let roots = load_roots(&self.client_ca)?;
        let provider = provider();
        let webpki = WebPkiClientVerifier::builder_with_provider(roots, provider.clone())
            .build()
            .map_err(|e| TlsError::Verifier(e.to_string()))?;
        let verifier = Arc::new(IdentityClientVerifier {
            inner: webpki,
            allowed_clients: self.allowed_clients.clone(),
            trust_domain: self.trust_domain.clone(),
        });
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)?;
        config.alpn_protocols = vec![ALPN_H2.to_vec()];
        if self.http1 {
            config.alpn_protocols.push(b"http/1.1".to_vec());
        }
        Ok(Arc::new(config))
    }

    /// Builds the config and wraps it for hot reload.
    pub fn load_reloadable(&self) -> Result<ReloadableServerConfig, TlsError> {
        Ok(ReloadableServerConfig::new(self.build()?))
    }
}

/// Why the server refused a client certificate that chains to the CA.
#[derive(Debug, thiserror::Error)]
pub enum ClientRejection {
    #[error("client certificate has no valid tongban identity: {0}")]
    Identity(#[from] IdentityError),
    #[error("client identity {identity} is outside trust domain {expected:?}")]
    WrongTrustDomain { identity: String, expected: String },
    #[error("client identity {identity} is not allowed on this server")]
    NotAllowed { identity: String },
}

fn rejected(reason: ClientRejection) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(reason))))
}

/// WebPKI chain validation, then the tongban identity rules.
#[derive(Debug)]
struct IdentityClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    allowed_clients: Option<Vec<PeerIdentity>>,
    trust_domain: Option<String>,
}

impl ClientCertVerifier for IdentityClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        let identity =
            PeerIdentity::from_der(end_entity).map_err(|e| rejected(ClientRejection::from(e)))?;
        if let Some(expected) = &self.trust_domain
            && identity.trust_domain() != expected
        {
            return Err(rejected(ClientRejection::WrongTrustDomain {
                identity: identity.to_string(),
                expected: expected.clone(),
            }));
        }
        if let Some(allowed) = &self.allowed_clients
            && !allowed.contains(&identity)
        {
            return Err(rejected(ClientRejection::NotAllowed {
                identity: identity.to_string(),
            }));
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// A server config that can be swapped while serving: each new connection
/// uses the newest config, established connections keep theirs.
#[derive(Debug, Clone)]
pub struct ReloadableServerConfig {
    shared: Arc<SharedConfig>,
}

#[derive(Debug)]
struct SharedConfig {
    config: RwLock<Arc<ServerConfig>>,
    generation: AtomicU64,
}

impl ReloadableServerConfig {
    pub fn new(config: Arc<ServerConfig>) -> Self {
        Self {
            shared: Arc::new(SharedConfig {
                config: RwLock::new(config),
                generation: AtomicU64::new(0),
            }),
        }
    }

    /// The config new connections use now.
    pub fn current(&self) -> Arc<ServerConfig> {
        self.shared
            .config
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Installs a new config for subsequent connections.
    pub fn replace(&self, config: Arc<ServerConfig>) {
        *self
            .shared
            .config
            .write()
            .unwrap_or_else(PoisonError::into_inner) = config;
        self.shared.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// How many times the config was replaced.
    pub fn generation(&self) -> u64 {
        self.shared.generation.load(Ordering::SeqCst)
    }

    /// Rebuilds from `source` and installs the result; on error the current
    /// config stays in force.
    pub fn reload_from(&self, source: &TlsServerConfig) -> Result<(), TlsError> {
        let config = source.build()?;
        self.replace(config);
        Ok(())
    }
}

impl From<Arc<ServerConfig>> for ReloadableServerConfig {
    fn from(config: Arc<ServerConfig>) -> Self {
        Self::new(config)
    }
}

/// What a handler learns about the connection a request came on.
/// Cheap to clone: tonic clones it into every request.
#[derive(Debug, Clone)]
pub struct PeerConnectInfo {
    inner: Arc<PeerInfo>,
}

#[derive(Debug)]
struct PeerInfo {
    remote_addr: SocketAddr,
    local_addr: Option<SocketAddr>,
    identity: PeerIdentity,
    leaf_cert: CertificateDer<'static>,
}

impl PeerConnectInfo {
    pub fn remote_addr(&self) -> SocketAddr {
        self.inner.remote_addr
    }

    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.inner.local_addr
    }

    /// The identity from the verified client certificate.
    pub fn identity(&self) -> &PeerIdentity {
        &self.inner.identity
    }

    /// The verified client leaf certificate (DER).
    pub fn leaf_cert(&self) -> &CertificateDer<'static> {
        &self.inner.leaf_cert
    }
}

/// The verified client identity of the connection `req` arrived on; `None`
/// when the server does not run on [`TlsIncoming`] (e.g. plaintext mode).
pub fn peer_identity<T>(req: &tonic::Request<T>) -> Option<&PeerIdentity> {
    peer_connect_info(req).map(PeerConnectInfo::identity)
}

/// All connection facts for `req`; `None` outside [`TlsIncoming`].
pub fn peer_connect_info<T>(req: &tonic::Request<T>) -> Option<&PeerConnectInfo> {
    req.extensions().get::<PeerConnectInfo>()
}

/// Why a completed handshake does not make a [`TlsConnection`].
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectionError {
    #[error("no client certificate")]
    NoClientCertificate,
    #[error("client certificate identity: {0}")]
    Identity(#[from] IdentityError),
}

/// An established, verified mutual-TLS connection.
#[derive(Debug)]
pub struct TlsConnection {
    stream: tokio_rustls::server::TlsStream<TcpStream>,
    info: PeerConnectInfo,
}

impl TlsConnection {
    pub(crate) fn new(
        stream: tokio_rustls::server::TlsStream<TcpStream>,
        remote_addr: SocketAddr,
    ) -> Result<Self, ConnectionError> {
        let (tcp, session) = stream.get_ref();
        let leaf_cert = session
            .peer_certificates()
            .and_then(|certs| certs.first())
            .map(|cert| cert.clone().into_owned())
            .ok_or(ConnectionError::NoClientCertificate)?;
        // The verifier already accepted this identity; parsing again keeps the
        // typed value without threading it through rustls.
        let identity = PeerIdentity::from_der(&leaf_cert)?;
        let local_addr = tcp.local_addr().ok();
        Ok(Self {
            stream,
            info: PeerConnectInfo {
                inner: Arc::new(PeerInfo {
                    remote_addr,
                    local_addr,
                    identity,
                    leaf_cert,
                }),
            },
        })
    }

    pub fn info(&self) -> &PeerConnectInfo {
        &self.info
    }

    pub fn into_inner(self) -> tokio_rustls::server::TlsStream<TcpStream> {
        self.stream
    }
}

impl Connected for TlsConnection {
    type ConnectInfo = PeerConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.info.clone()
    }
}

impl AsyncRead for TlsConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConnection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Turns a failed server-side handshake into a reason an operator can act on.
pub fn handshake_failure_reason(error: &io::Error) -> String {
    let Some(tls) = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    else {
        return match error.kind() {
            io::ErrorKind::UnexpectedEof => "connection closed during handshake".to_owned(),
            _ => format!("I/O error during handshake: {error}"),
        };
    };
    use rustls::Error as E;
    match tls {
        E::NoCertificatesPresented => "no client certificate".to_owned(),
        E::InvalidCertificate(cert) => client_certificate_reason(cert),
        E::AlertReceived(alert) => format!("client aborted the handshake with alert {alert:?}"),
        E::PeerIncompatible(what) => {
            format!("client incompatible (TLS 1.3 is required): {what:?}")
        }
        E::InvalidMessage(what) => format!("not a valid TLS handshake: {what:?}"),
        other => other.to_string(),
    }
}

fn client_certificate_reason(error: &CertificateError) -> String {
    use CertificateError as C;
    match error {
        C::Expired => "client certificate expired".to_owned(),
        C::ExpiredContext { time, not_after } => format!(
            "client certificate expired (not after {}, now {})",
            unix_time_text(not_after),
            unix_time_text(time)
        ),
        C::NotValidYet => "client certificate not yet valid".to_owned(),
        C::NotValidYetContext { time, not_before } => format!(
            "client certificate not yet valid (not before {}, now {})",
            unix_time_text(not_before),
            unix_time_text(time)
        ),
        C::UnknownIssuer => "client certificate from unknown CA".to_owned(),
        C::BadSignature => "client certificate has a bad signature".to_owned(),
        C::Revoked => "client certificate revoked".to_owned(),
        C::InvalidPurpose | C::InvalidPurposeContext { .. } => {
            "client certificate not valid for client authentication".to_owned()
        }
        C::Other(other) => other.to_string(),
        other => format!("client certificate rejected: {other:?}"),
    }
}

fn unix_time_text(t: &UnixTime) -> String {
    crate::pem::format_unix(i64::try_from(t.as_secs()).unwrap_or(i64::MAX))
}

/// When a [`CertReloader`] looks for changes.
#[derive(Debug, Clone)]
pub struct ReloadOptions {
    /// How often file metadata is checked. A change is applied once it has
    /// been stable for one interval, so half-written rotations are not loaded.
    pub poll_interval: Duration,
    /// Also reload on SIGHUP.
    pub on_sighup: bool,
}

impl Default for ReloadOptions {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_secs(1),
            on_sighup: true,
        }
    }
}

/// Rebuilds a [`ReloadableServerConfig`] when its PEM files change (or on
/// SIGHUP). A broken, expired or not-yet-valid replacement is logged at ERROR
/// and the previous config stays in force. Runs until dropped.
#[derive(Debug)]
pub struct CertReloader {
    task: JoinHandle<()>,
}

impl CertReloader {
    /// Must be called inside a tokio runtime.
    pub fn spawn(
        source: TlsServerConfig,
        target: ReloadableServerConfig,
        options: ReloadOptions,
    ) -> io::Result<Self> {
        let hangup = if options.on_sighup {
            Some(tokio::signal::unix::signal(
                tokio::signal::unix::SignalKind::hangup(),
            )?)
        } else {
            None
        };
        let task = tokio::spawn(reload_loop(source, target, options.poll_interval, hangup));
        Ok(Self { task })
    }
}

impl Drop for CertReloader {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn next_hangup(hangup: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
    match hangup {
        Some(signal) => signal.recv().await,
        None => std::future::pending().await,
    }
}

async fn reload_loop(
    source: TlsServerConfig,
    target: ReloadableServerConfig,
    poll_interval: Duration,
    mut hangup: Option<tokio::signal::unix::Signal>,
) {
    let stamp = || FilesStamp::of(&source.watched_paths());
    let mut applied = stamp();
    let mut settling: Option<FilesStamp> = None;
    let mut ticks = tokio::time::interval(poll_interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {
                let now = stamp();
                if now == applied {
                    settling = None;
                    continue;
                }
                if settling.as_ref() != Some(&now) {
                    settling = Some(now);
                    continue;
                }
                settling = None;
                applied = now;
                reload_once(&source, &target, "file change");
            }
            Some(()) = next_hangup(&mut hangup) => {
                applied = stamp();
                settling = None;
                reload_once(&source, &target, "SIGHUP");
            }
        }
    }
}

fn reload_once(source: &TlsServerConfig, target: &ReloadableServerConfig, trigger: &str) {
    match target.reload_from(source) {
        Ok(()) => tracing::info!(
            trigger,
            cert = %source.cert_chain.display(),
            generation = target.generation(),
            "TLS server certificate reloaded"
        ),
        Err(error) => tracing::error!(
            trigger,
            %error,
            "TLS certificate reload rejected; the previous certificate stays in force"
        ),
    }
}

/// Pending connections a listener queues before the kernel drops SYNs
/// (capped by `net.core.somaxconn`).
pub const LISTEN_BACKLOG: u32 = 1024;

/// Binds a TCP listener for a gRPC server with a deep accept queue.
/// `TcpListener::bind` listens with a backlog of 128: a burst of clients
/// connecting at once — service points reconnecting after a restart, a proxy
/// opening a connection per concurrent request — overflows it, and each
/// dropped SYN costs its client a one-second retransmission.
pub fn bind_listener(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

#[cfg(test)]
mod listener_tests {
    use super::*;

    /// 400 clients connecting at once, none accepted yet: with the default
    /// backlog of 128 most of them would wait a second for a SYN retransmit.
    #[tokio::test]
    async fn a_burst_of_connections_fits_the_accept_queue() {
        let listener = bind_listener(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
        let addr = listener.local_addr().unwrap();
        let connects = (0..400).map(|_| {
            tokio::time::timeout(
                std::time::Duration::from_millis(500),
                tokio::net::TcpStream::connect(addr),
            )
        });
        let results = futures::future::join_all(connects).await;
        let connected = results.iter().filter(|r| matches!(r, Ok(Ok(_)))).count();
        assert_eq!(connected, 400, "connections established without accept()");
        drop(listener);
    }
}
