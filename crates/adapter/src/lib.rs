//! The runtime a department uses to expose its data to the tongban exchange
//! over gRPC.
//!
//! A department writes an [`AdapterConfig`]: its database URL and, for each
//! evidence type it serves, the SQL that answers it. The runtime checks the
//! config against the catalogue, prepares every query at start-up, and
//! answers `Adapter.Query` with only the fields asked for. The three
//! reference departments with their synthetic data are development tooling,
//! in `tongban-devkit`.

pub mod config;
pub mod error;
pub mod server;
pub mod service;
pub mod sql;
pub mod store;

pub use config::{AdapterConfig, AdapterTls, ConfigError, EvidenceQuery};
pub use error::{AdapterError, ERROR_DOMAIN, reason};
pub use server::{
    RunningAdapter, ServeError, serve, serve_configured, serve_limited, serve_tls,
    serve_tls_limited, serve_with_incoming, serve_with_incoming_limited, service_from_config,
    service_from_parts,
};
pub use service::{AdapterService, CallerCheck};
pub use store::{Asked, DepartmentPool, EvidenceSource, SourceError, china_today};
