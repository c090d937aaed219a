//! The exchange: service points ask it for evidence; it authenticates the
//! caller, applies the policy, routes each request to the department that
//! holds the data, minimises the answer and audits every outcome.
//!
//! Code map: [`service`] is the gRPC edge, [`pipeline`] the request path,
//! [`routing`] the department channels, [`error`] the one place errors become
//! gRPC statuses, [`limits`] the per-caller rate limit.

pub mod error;
pub mod limits;
pub mod pipeline;
pub mod routing;
pub mod service;

pub use error::{ERROR_DOMAIN, ExchangeError};
pub use pipeline::{AuditEvent, AuditKind, AuditSink, EvidenceRequest, Exchange};
pub use routing::{Department, Departments};
pub use service::{Authenticator, ExchangeService, fixed_caller};
