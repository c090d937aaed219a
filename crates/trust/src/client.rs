//! Client side: mutual TLS 1.3 config and tonic channels over it.

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use hyper_util::rt::TokioIo;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, OtherError, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::net::TcpStream;
use tonic::transport::{Channel, Endpoint};

use crate::identity::{IdentityError, PeerIdentity};
use crate::pem::{
    ALPN_H2, TlsError, check_own_validity, load_certs, load_private_key, load_roots, provider,
};
use crate::watch::FilesStamp;

/// Where a client's TLS material lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsClientConfig {
    /// PEM: our client certificate, then any intermediates.
    pub cert_chain: PathBuf,
    /// PEM: our private key.
    pub private_key: PathBuf,
    /// PEM: the CA certificate(s) server certificates must chain to.
    pub server_ca: PathBuf,
}

impl TlsClientConfig {
    pub fn new(
        cert_chain: impl Into<PathBuf>,
        private_key: impl Into<PathBuf>,
        server_ca: impl Into<PathBuf>,
    ) -> Self {
        Self {
            cert_chain: cert_chain.into(),
            private_key: private_key.into(),
            server_ca: server_ca.into(),
        }
    }

    fn watched_paths(&self) -> [&Path; 3] {
        [&self.cert_chain, &self.private_key, &self.server_ca]
    }

    /// Loads the PEM files into a TLS 1.3-only rustls config presenting our
    /// certificate, with ALPN `h2`. The server certificate must chain to
    /// `server_ca` and be valid for the host we dial (DNS or IP SAN); with
    /// `expected_server` it must also carry exactly that identity.
    pub fn build(
        &self,
        expected_server: Option<&PeerIdentity>,
    ) -> Result<Arc<ClientConfig>, TlsError> {
        let chain = load_certs(&self.cert_chain)?;
        if let Some(leaf) = chain.first() {
            check_own_validity(&self.cert_chain, leaf, SystemTime::now())?;
        }
        let key = load_private_key(&self.private_key)?;
        let roots = load_roots(&self.server_ca)?;
        let provider = provider();
        let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
            .build()
            .map_err(|e| TlsError::Verifier(e.to_string()))?;
        let verifier: Arc<dyn ServerCertVerifier> = match expected_server {
            Some(expected) => Arc::new(ExpectServerIdentity {
                inner: webpki,
                expected: expected.clone(),
            }),
            None => webpki,
        };
        // `dangerous()` only because the verifier is ours; it runs the full
        // WebPKI verification first and then adds the identity check.
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_auth_cert(chain, key)?;
        config.alpn_protocols = vec![ALPN_H2.to_vec()];
        Ok(Arc::new(config))
    }

    /// A connector for `Endpoint::connect_with_connector`. Loads the files now
    /// (errors surface here) and again, for new connections, whenever they
    /// change; a broken replacement is logged and the previous one kept.
    pub fn connector(
        &self,
        expected_server: Option<PeerIdentity>,
    ) -> Result<TlsConnector, TlsError> {
        let stamp = FilesStamp::of(&self.watched_paths());
        let config = self.build(expected_server.as_ref())?;
        Ok(TlsConnector {
            state: Arc::new(ConnectorState {
                source: self.clone(),
                expected_server,
                cache: Mutex::new(CachedConfig { stamp, config }),
            }),
        })
    }
}

/// Why the client refused a server certificate that chains to the CA.
#[derive(Debug, thiserror::Error)]
pub enum ServerRejection {
    #[error("server certificate has no valid tongban identity: {0}")]
    Identity(#[from] IdentityError),
    #[error("server presented identity {presented}, expected {expected}")]
    UnexpectedIdentity { expected: String, presented: String },
}

#[derive(Debug)]
struct ExpectServerIdentity {
    inner: Arc<WebPkiServerVerifier>,
    expected: PeerIdentity,
}

impl ServerCertVerifier for ExpectServerIdentity {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verified = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        let reject = |reason: ServerRejection| {
            rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(reason))))
        };
        let presented =
            PeerIdentity::from_der(end_entity).map_err(|e| reject(ServerRejection::from(e)))?;
        if presented != self.expected {
            return Err(reject(ServerRejection::UnexpectedIdentity {
                expected: self.expected.to_string(),
                presented: presented.to_string(),
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

/// Dials TCP and performs the TLS handshake for tonic; a `tower::Service<Uri>`.
#[derive(Debug, Clone)]
pub struct TlsConnector {
    state: Arc<ConnectorState>,
}

#[derive(Debug)]
struct ConnectorState {
    source: TlsClientConfig,
    expected_server: Option<PeerIdentity>,
    cache: Mutex<CachedConfig>,
}

#[derive(Debug)]
struct CachedConfig {
    stamp: FilesStamp,
    config: Arc<ClientConfig>,
}

impl TlsConnector {
    /// The config the next connection uses, rebuilt if the files changed.
    pub fn current_config(&self) -> Arc<ClientConfig> {
        let state = &self.state;
        let mut cache = state.cache.lock().unwrap_or_else(PoisonError::into_inner);
        let stamp = FilesStamp::of(&state.source.watched_paths());
        if stamp != cache.stamp {
            // Record the stamp even on failure so one bad rotation logs once.
            cache.stamp = stamp;
            match state.source.build(state.expected_server.as_ref()) {
                Ok(config) => {
                    tracing::info!(
                        cert = %state.source.cert_chain.display(),
                        "TLS client certificate reloaded"
                    );
                    cache.config = config;
                }
                Err(error) => tracing::error!(
                    %error,
                    "TLS client certificate reload rejected; the previous certificate stays in force"
                ),
            }
        }
        cache.config.clone()
    }

    /// Connects to `host:port` and completes the handshake.
    pub async fn connect(
        &self,
        host: &str,
        port: u16,
    ) -> io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let server_name = ServerName::try_from(host.to_owned()).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("invalid server name {host:?}: {e}"),
            )
        })?;
        let connector = tokio_rustls::TlsConnector::from(self.current_config());
        let tcp = TcpStream::connect((host, port)).await?;
        tcp.set_nodelay(true)?;
        connector
            .connect(server_name, tcp)
            .await
            .map_err(|e| client_handshake_error(host, e))
    }
}

impl tower::Service<http::Uri> for TlsConnector {
    type Response = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let connector = self.clone();
        Box::pin(async move {
            let (host, port) = host_and_port(&uri).map_err(|reason| {
                io::Error::new(io::ErrorKind::InvalidInput, format!("{uri}: {reason}"))
            })?;
            let stream = connector.connect(&host, port).await?;
            Ok(TokioIo::new(stream))
        })
    }
}

/// Rewords rustls errors so the reason survives tonic's error wrapping.
fn client_handshake_error(host: &str, error: io::Error) -> io::Error {
    let Some(tls) = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    else {
        return error;
    };
    let reason = match tls {
        rustls::Error::InvalidCertificate(CertificateError::Other(other)) => other.0.to_string(),
        rustls::Error::InvalidCertificate(cert) => format!("server certificate rejected: {cert:?}"),
        rustls::Error::AlertReceived(alert) => format!("server refused with alert {alert:?}"),
        other => other.to_string(),
    };
    io::Error::new(
        error.kind(),
        format!("TLS handshake with {host} failed: {reason}"),
    )
}

const DEFAULT_TLS_PORT: u16 = 443;
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

fn host_and_port(uri: &http::Uri) -> Result<(String, u16), &'static str> {
    let host = uri.host().ok_or("no host")?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    Ok((host.to_owned(), uri.port_u16().unwrap_or(DEFAULT_TLS_PORT)))
}

/// A tonic `Endpoint` for an `https://host[:port]` URI, ready for
/// `connect_with_connector(tls_connector)`. Tune it (timeouts, concurrency)
/// before connecting. The dial URI is rewritten to `http://` so tonic never
/// tries TLS of its own; requests still carry the `https` origin.
pub fn tls_endpoint(endpoint_uri: &str) -> Result<Endpoint, TlsError> {
    let invalid = |reason: String| TlsError::InvalidEndpoint {
        uri: endpoint_uri.to_owned(),
        reason,
    };
    let uri: http::Uri = endpoint_uri.parse().map_err(|e| invalid(format!("{e}")))?;
    if uri.scheme_str() != Some("https") {
        return Err(invalid("TLS endpoints must use https://".to_owned()));
    }
    let authority = uri
        .authority()
        .ok_or_else(|| invalid("no host".to_owned()))?;
    let port = authority.port_u16().unwrap_or(DEFAULT_TLS_PORT);
    let dial = format!("http://{}:{port}", authority.host());
    let origin: http::Uri = format!("https://{}:{port}", authority.host())
        .parse()
        .map_err(|e| invalid(format!("{e}")))?;
    let endpoint = Endpoint::from_shared(dial).map_err(|e| invalid(e.to_string()))?;
    Ok(endpoint
        .origin(origin)
        .connect_timeout(DEFAULT_CONNECT_TIMEOUT))
}

/// Connects a channel over mutual TLS (see [`TlsClientConfig::build`] for the
/// checks); fails if the first connection cannot be made.
pub async fn connect_channel(
    endpoint_uri: &str,
    tls: &TlsClientConfig,
    expected_server: Option<&PeerIdentity>,
) -> Result<Channel, TlsError> {
    let endpoint = tls_endpoint(endpoint_uri)?;
    let connector = tls.connector(expected_server.cloned())?;
    endpoint
        .connect_with_connector(connector)
        .await
        .map_err(|source| TlsError::Transport {
            uri: endpoint_uri.to_owned(),
            source,
        })
}

/// Like [`connect_channel`] but connects on first use; configuration errors
/// (bad URI, unreadable or invalid PEM files) still surface immediately.
pub fn connect_channel_lazy(
    endpoint_uri: &str,
    tls: &TlsClientConfig,
    expected_server: Option<&PeerIdentity>,
) -> Result<Channel, TlsError> {
    let endpoint = tls_endpoint(endpoint_uri)?;
    let connector = tls.connector(expected_server.cloned())?;
    Ok(endpoint.connect_with_connector_lazy(connector))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_requires_https_and_keeps_the_authority() {
        assert!(tls_endpoint("http://127.0.0.1:50051").is_err());
        assert!(tls_endpoint("127.0.0.1:50051").is_err());
        let endpoint = tls_endpoint("https://[::1]:50051").unwrap();
        assert_eq!(endpoint.uri().to_string(), "http://[::1]:50051/");
        let endpoint = tls_endpoint("https://localhost").unwrap();
        assert_eq!(endpoint.uri().port_u16(), Some(443));
        let (host, port) = host_and_port(&"http://[::1]:7".parse().unwrap()).unwrap();
        assert_eq!((host.as_str(), port), ("::1", 7));
    }
}
