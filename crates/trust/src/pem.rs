//! Loading PEM material and the errors shared by the server and client sides.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::identity::IdentityError;

/// ALPN protocol for gRPC over HTTP/2.
pub const ALPN_H2: &[u8] = b"h2";

/// Errors while loading TLS material, building configs or connecting.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: invalid PEM: {detail}")]
    Pem { path: PathBuf, detail: String },
    #[error("{path}: no certificate found")]
    NoCertificate { path: PathBuf },
    #[error("{path}: no private key found")]
    NoPrivateKey { path: PathBuf },
    #[error("{path}: certificate cannot be parsed: {detail}")]
    BadCertificate { path: PathBuf, detail: String },
    #[error("{path}: certificate expired at {not_after} (now {now})")]
    CertificateExpired {
        path: PathBuf,
        not_after: String,
        now: String,
    },
    #[error("{path}: certificate not yet valid: valid from {not_before} (now {now})")]
    CertificateNotYetValid {
        path: PathBuf,
        not_before: String,
        now: String,
    },
    #[error("{path}: certificate identity: {source}")]
    Identity {
        path: PathBuf,
        #[source]
        source: IdentityError,
    },
    #[error("{path}: CA certificate rejected: {detail}")]
    BadCa { path: PathBuf, detail: String },
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("client certificate verifier: {0}")]
    Verifier(String),
    #[error("endpoint {uri:?}: {reason}")]
    InvalidEndpoint { uri: String, reason: String },
    #[error("connecting to {uri}: {}", error_chain(source))]
    Transport {
        uri: String,
        #[source]
        source: tonic::transport::Error,
    },
}

/// "outer: inner: innermost", since tonic's transport error hides its causes
/// (the TLS reason) behind "transport error".
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        // io::Error displays its inner error and also returns it as source.
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// The crypto provider every config uses: ring.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

pub(crate) fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Reads every certificate of a PEM file (leaf first for chains).
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            path: path.to_owned(),
            detail: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

/// Reads the first private key (PKCS#8, SEC1 or PKCS#1) of a PEM file.
pub fn load_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read(path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => TlsError::NoPrivateKey {
            path: path.to_owned(),
        },
        other => TlsError::Pem {
            path: path.to_owned(),
            detail: other.to_string(),
        },
    })
}

/// Reads a CA bundle into a root store; every certificate must be accepted.
pub fn load_roots(path: &Path) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path)? {
        roots.add(cert).map_err(|e| TlsError::BadCa {
            path: path.to_owned(),
            detail: e.to_string(),
        })?;
    }
    Ok(Arc::new(roots))
}

/// Refuses our own leaf certificate when it is outside its validity period:
/// better to fail at load (or keep the old config on reload) than to serve a
/// certificate every peer will reject.
pub(crate) fn check_own_validity(
    path: &Path,
    leaf: &CertificateDer<'_>,
    now: SystemTime,
) -> Result<(), TlsError> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(leaf).map_err(|e| TlsError::BadCertificate {
            path: path.to_owned(),
            detail: e.to_string(),
        })?;
    let now_secs = unix_secs(now);
    let validity = cert.validity();
    let now_text = || format_unix(now_secs);
    if now_secs < validity.not_before.timestamp() {
        return Err(TlsError::CertificateNotYetValid {
            path: path.to_owned(),
            not_before: validity.not_before.to_string(),
            now: now_text(),
        });
    }
    if now_secs > validity.not_after.timestamp() {
        return Err(TlsError::CertificateExpired {
            path: path.to_owned(),
            not_after: validity.not_after.to_string(),
            now: now_text(),
        });
    }
    Ok(())
}

pub(crate) fn unix_secs(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

pub(crate) fn format_unix(secs: i64) -> String {
    x509_parser::time::ASN1Time::from_timestamp(secs)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| format!("@{secs}"))
}
