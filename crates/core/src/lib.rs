//! tongban's domain: identifiers and subjects, evidence, the matter
//! catalogue, cases, callers and the access policy.
//!
//! Invariant: this crate does no I/O and knows nothing of gRPC, protobuf or
//! SQL. The service crates translate to and from these types at their edges.

pub mod caller;
pub mod case;
pub mod catalogue;
pub mod config_env;
pub mod evidence;
pub mod id;
pub mod policy;
pub mod service_point;
pub mod subject;

pub use caller::{Caller, CallerError};
pub use case::{CaseContext, FieldViolation};
pub use catalogue::{
    Catalogue, CatalogueError, Department, EvidenceTypeDef, Level, Matter, RoleNeed,
};
pub use evidence::{EvidenceAnswer, Field, FieldSpec, FieldType, FieldValue};
pub use id::{CreditCode, CreditCodeError, IdNumber, IdNumberError, Sex};
pub use policy::{
    Access, Denial, EvidenceDecision, Explanation, FieldRelease, GrantUse, Limits, Policy,
    PolicySummary,
};
pub use service_point::{RegionCode, RegionCodeError, ServicePoint};
pub use subject::{Role, SubjectId, SubjectKind};
