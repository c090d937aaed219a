//! The exchange: service points ask it for evidence; it authenticates the
//! caller, applies the policy, routes each request to the department that
//! holds the data, minimises the answer and audits every outcome.
//!
//! Code map: [`service`] is the gRPC edge (with [`size_guard`] in front and
//! [`auth`] for who is calling), [`pipeline`] the request path,
//! [`routing`] the department channels, [`error`] the one place errors become
//! gRPC statuses, [`limits`] the per-caller rate limit, [`audit`] the node's
//! log (written and read), [`audit_service`] the administrators' service,
//! [`transparency_service`] citizen portals' access histories,
//! [`wire`] audit records in their wire form, [`config`] and [`server`]
//! start a node, [`reload`] keeps the policy current.

pub mod audit;
pub mod audit_service;
pub mod auth;
pub mod config;
pub mod error;
pub mod http_json;
pub mod limits;
pub mod pipeline;
pub mod reload;
pub mod routing;
pub mod server;
pub mod service;
pub mod size_guard;
pub mod transparency_service;
pub mod wire;

pub use audit::{AuditLogSink, AuditReader, AuditSettings};
pub use audit_service::AuditService;
pub use auth::{Authenticator, certificate_authenticator, fixed_caller};
pub use config::ExchangeConfig;
pub use error::{AuditSinkError, ERROR_DOMAIN, ExchangeError};
pub use pipeline::{
    AuditEvent, AuditKind, AuditSink, Call, EvidenceRequest, Exchange, PolicyChange,
};
pub use routing::{Department, Departments, Resilience};
pub use server::{
    AuditOverride, DepartmentError, EXCHANGE_HEALTH_SERVICE, ExchangeHandle, StartError,
    StartOptions, department_health_service, start,
};
pub use service::ExchangeService;
pub use transparency_service::TransparencyService;
