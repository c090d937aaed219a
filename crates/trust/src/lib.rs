//! tongban's trust foundation.
//!
//! - [`PeerIdentity`]: who a peer is, taken only from the URI SAN
//!   `spiffe://<trust-domain>/org/<credit code>/unit/<unit>` of its verified
//!   certificate.
//! - Server side ([`TlsServerConfig`], [`TlsIncoming`], [`peer_identity`],
//!   [`CertReloader`]): mutual TLS 1.3 with required client certificates, for
//!   `tonic::transport::Server::serve_with_incoming`, reloadable without restart.
//! - Client side ([`TlsClientConfig`], [`connect_channel`]): mutual TLS 1.3
//!   tonic channels that check the server's host name and, optionally, identity.
//! - [`ServerLimits`]: the HTTP/2 and connection limits every gRPC server is
//!   built with, and the TLS accept loop's bounds ([`IncomingOptions`]).
//! - [`http::HttpServer`]: the one scaffold the small HTTP/1.1 services
//!   (the console, the admin endpoint) are served with: connection cap,
//!   head timeout and size, connection age, a shutdown that does not wait
//!   for idle connections ([`http::HttpLimits`]).
//!
//! TLS is offered, not imposed: callers may still serve and dial plaintext.

mod client;
pub mod http;
mod identity;
mod incoming;
mod limits;
mod pem;
mod server;
mod watch;

pub use client::{
    ServerRejection, TlsClientConfig, TlsConnector, connect_channel, connect_channel_lazy,
    tls_endpoint,
};
pub use identity::{IdentityError, PeerIdentity, validate_trust_domain, validate_unit};
pub use incoming::{HandshakeCounts, IncomingOptions, IncomingStats, TlsIncoming};
pub use limits::{LimitsError, ServerLimits};
pub use pem::{ALPN_H2, TlsError, load_certs, load_private_key, load_roots};
pub use server::{
    CertReloader, ClientRejection, LISTEN_BACKLOG, PeerConnectInfo, ReloadOptions,
    ReloadableServerConfig, TlsConnection, TlsServerConfig, bind_listener,
    handshake_failure_reason, peer_connect_info, peer_identity,
};
