//! Every way a request can fail, and the one place they become gRPC statuses.

use std::borrow::Cow;
use std::collections::HashMap;
use std::time::Duration;

use prost::Message;
use tongban_audit::{AuditError, StoreError};
use tongban_core::{Denial, FieldViolation, Role};
use tongban_proto::google::rpc::Status as RpcStatus;
use tongban_proto::v1::AuditReceipt;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// The `ErrorInfo.domain` of every tongban error.
pub const ERROR_DOMAIN: &str = "tongban.gov";

/// What a shed request is told to wait before trying again.
const OVERLOAD_RETRY_AFTER: Duration = Duration::from_millis(100);

/// Every way a request can fail. The `Display` text is what the caller sees
/// (it becomes the gRPC message), so it says only what the caller can act
/// on; what went wrong inside (transport and OS errors, endpoint addresses,
/// database errors) is kept in the variant for the log, see
/// [`ExchangeError::internal_detail`].
/// Why an audit sink did not record an event, or is not ready to.
#[derive(Debug, thiserror::Error)]
pub enum AuditSinkError {
    /// The log did not commit the entry (store down, queue full, timeout,
    /// shut down).
    #[error(transparent)]
    Log(#[from] AuditError),
    /// The readiness probe's read of the store failed.
    #[error("audit store: {0}")]
    Store(#[source] StoreError),
    /// The readiness probe's read of the store took too long.
    #[error("audit store did not answer within {0:?}")]
    ProbeTimeout(Duration),
    /// The sink answered for fewer events than it was given, so nothing
    /// durable is known of the rest.
    #[error("the audit log gave no result for this entry")]
    NoResult,
}

#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    #[error("invalid request: {}", describe(.0))]
    InvalidArgument(Vec<FieldViolation>),
    #[error("no client identity: {0}")]
    Unauthenticated(String),
    #[error("{0}")]
    Denied(Denial),
    #[error("fields {fields:?} of {evidence_type:?} are not released to this caller")]
    FieldsNotGranted {
        evidence_type: String,
        fields: Vec<String>,
    },
    #[error("unknown matter {0:?}")]
    UnknownMatter(String),
    /// A subject in a role the matter does not have.
    #[error("matter {matter:?} has no role {role} (its roles: {})", role_list(.roles))]
    RoleNotInMatter {
        matter: String,
        role: Role,
        roles: Vec<Role>,
    },
    /// A role the matter requires names fewer subjects than its minimum.
    #[error("matter {matter:?} needs at least {min} subject(s) in role {role}, got {got}")]
    MissingRole {
        matter: String,
        role: Role,
        min: u32,
        got: u32,
    },
    /// A role names more subjects than the matter allows.
    #[error("matter {matter:?} allows at most {max} subject(s) in role {role}, got {got}")]
    TooManySubjects {
        matter: String,
        role: Role,
        max: u32,
        got: u32,
    },
    /// The matter needs the evidence type, but not about a subject in this
    /// role (e.g. a household member's marriage record in a dibao case).
    #[error("matter {matter:?} does not need {evidence_type:?} about its {role}")]
    EvidenceNotInRole {
        matter: String,
        role: Role,
        evidence_type: String,
    },
    #[error("unknown evidence type {0:?}")]
    UnknownEvidenceType(String),
    #[error("rate limit exceeded for {caller}; retry in {retry_after:?}")]
    RateLimited {
        caller: String,
        retry_after: Duration,
    },
    #[error("request too large: {size} bytes, at most {limit}")]
    TooLarge { size: usize, limit: usize },
    /// `detail` is for the log only.
    #[error("department {department} is unavailable; retry later")]
    DepartmentUnavailable { department: String, detail: String },
    #[error("department {department} has {in_flight} requests in flight; this one is shed")]
    DepartmentOverloaded {
        department: String,
        in_flight: usize,
    },
    /// One caller already holds its whole share of the department's
    /// in-flight capacity; others are not affected.
    #[error(
        "this caller already has {limit} requests in flight to department {department}, its share; this one is shed"
    )]
    CallerShareExhausted { department: String, limit: usize },
    #[error("department {department} did not answer within {} ms", .after.as_millis())]
    DepartmentTimeout { department: String, after: Duration },
    /// The caller's deadline left too little time to ask the department at
    /// all; it was not asked.
    #[error(
        "the caller's deadline left {} ms; asking department {department} needs at least {} ms",
        .left.as_millis(),
        .needed.as_millis()
    )]
    DeadlineTooShort {
        department: String,
        left: Duration,
        needed: Duration,
    },
    /// A well-formed refusal from the department (e.g. no record of the
    /// subject), passed on with the department's code and details.
    #[error("department {department}: {}", .status.message())]
    Department { department: String, status: Status },
    /// `detail` is for the log only.
    #[error("department {department} failed or gave an invalid answer; nothing was released")]
    BadAnswer { department: String, detail: String },
    /// The sink's error is for the log only (boxed: it is rare, and every
    /// result of the request path carries an `ExchangeError`).
    #[error("audit log unavailable, nothing released")]
    AuditUnavailable(#[source] Box<AuditSinkError>),
    /// The detail is for the log only.
    /// The call's deadline passed while its refusal waited for the caller's
    /// refusal budget (`limits::RefusalPacer`); not recorded.
    #[error(
        "deadline passed while this caller's refused calls waited their turn; slow down, fewer than {per_second}/s are answered"
    )]
    RefusalsPaced { per_second: f64 },
    #[error("internal error")]
    Internal(String),
    /// This node writes no audit log it could prove receipts from.
    #[error("this exchange node serves no audit proofs")]
    NoAuditProofs,
    /// The node is shutting down: an open stream ends (resumable elsewhere).
    #[error("this exchange node is shutting down; resume from the last cursor")]
    ShuttingDown,
    /// The caller already has this many `Audit.Watch` streams open.
    #[error("this caller already has {limit} audit watches open; close one first")]
    TooManyWatches { limit: usize },
    /// Reading the audit log failed (administrators, receipt proofs).
    #[error("audit log: {}", public_audit_error(.0))]
    Audit(tongban_audit::AuditError),
}

/// What an administrator may be told about a failed audit read: their own
/// mistakes in full, the store's failures only by kind.
fn public_audit_error(e: &AuditError) -> String {
    match e {
        AuditError::NotFound(_) | AuditError::Invalid(_) | AuditError::BadNode(_) => e.to_string(),
        AuditError::Inconsistent { node, .. } => {
            format!("the stored log of node {node:?} is inconsistent")
        }
        AuditError::Unavailable(_) | AuditError::Closed | AuditError::Store(_) => {
            "unavailable; retry later".into()
        }
        AuditError::WrongNode { .. } | AuditError::Note(_) => "internal error".into(),
    }
}

fn role_list(roles: &[Role]) -> String {
    roles
        .iter()
        .map(|r| r.name())
        .collect::<Vec<_>>()
        .join(", ")
}

fn describe(violations: &[FieldViolation]) -> String {
    violations
        .iter()
        .map(|v| format!("{} {}", v.field, v.description))
        .collect::<Vec<_>>()
        .join("; ")
}

impl ExchangeError {
    pub fn invalid(field: &str, description: impl Into<String>) -> Self {
        Self::InvalidArgument(vec![FieldViolation::new(field, description)])
    }

    pub fn code(&self) -> Code {
        match self {
            Self::InvalidArgument(_)
            | Self::RoleNotInMatter { .. }
            | Self::MissingRole { .. }
            | Self::TooManySubjects { .. } => Code::InvalidArgument,
            Self::EvidenceNotInRole { .. } => Code::PermissionDenied,
            Self::Unauthenticated(_) => Code::Unauthenticated,
            Self::Denied(_) | Self::FieldsNotGranted { .. } => Code::PermissionDenied,
            Self::UnknownMatter(_) | Self::UnknownEvidenceType(_) => Code::NotFound,
            Self::RateLimited { .. }
            | Self::TooLarge { .. }
            | Self::DepartmentOverloaded { .. }
            | Self::CallerShareExhausted { .. }
            | Self::TooManyWatches { .. } => Code::ResourceExhausted,
            Self::DepartmentUnavailable { .. } | Self::AuditUnavailable(_) | Self::ShuttingDown => {
                Code::Unavailable
            }
            Self::DepartmentTimeout { .. }
            | Self::DeadlineTooShort { .. }
            | Self::RefusalsPaced { .. } => Code::DeadlineExceeded,
            Self::Department { status, .. } => status.code(),
            Self::BadAnswer { .. } | Self::Internal(_) => Code::Internal,
            Self::NoAuditProofs => Code::Unimplemented,
            Self::Audit(e) => match e {
                AuditError::NotFound(_) => Code::NotFound,
                AuditError::Invalid(_) | AuditError::BadNode(_) => Code::InvalidArgument,
                AuditError::Inconsistent { .. } => Code::DataLoss,
                AuditError::Unavailable(_) | AuditError::Closed | AuditError::Store(_) => {
                    Code::Unavailable
                }
                AuditError::WrongNode { .. } | AuditError::Note(_) => Code::Internal,
            },
        }
    }

    /// Stable machine-readable reason, as put in `ErrorInfo.reason`. The
    /// exchange's own are constants (borrowed); a department's refusal
    /// passes on the reason its answer carries.
    pub fn reason(&self) -> Cow<'static, str> {
        match self {
            Self::InvalidArgument(_) => "INVALID_REQUEST".into(),
            Self::Unauthenticated(_) => "NO_CLIENT_IDENTITY".into(),
            Self::Denied(d) => d.reason().into(),
            Self::FieldsNotGranted { .. } => "FIELDS_NOT_GRANTED".into(),
            Self::UnknownMatter(_) => "UNKNOWN_MATTER".into(),
            Self::RoleNotInMatter { .. } => "ROLE_NOT_IN_MATTER".into(),
            Self::MissingRole { .. } => "MISSING_ROLE".into(),
            Self::TooManySubjects { .. } => "TOO_MANY_SUBJECTS".into(),
            Self::EvidenceNotInRole { .. } => "EVIDENCE_NOT_IN_ROLE".into(),
            Self::UnknownEvidenceType(_) => "UNKNOWN_EVIDENCE_TYPE".into(),
            Self::RateLimited { .. } => "RATE_LIMITED".into(),
            Self::TooLarge { .. } => "REQUEST_TOO_LARGE".into(),
            Self::DepartmentUnavailable { .. } => "DEPARTMENT_UNAVAILABLE".into(),
            Self::DepartmentTimeout { .. } => "DEPARTMENT_TIMEOUT".into(),
            Self::DepartmentOverloaded { .. } => "DEPARTMENT_OVERLOADED".into(),
            Self::CallerShareExhausted { .. } => "CALLER_SHARE_EXHAUSTED".into(),
            Self::DeadlineTooShort { .. } => "DEADLINE_TOO_SHORT".into(),
            Self::RefusalsPaced { .. } => "REFUSALS_PACED".into(),
            Self::Department { status, .. } => status
                .get_details_error_info()
                .map(|i| i.reason)
                .unwrap_or_else(|| format!("DEPARTMENT_{:?}", status.code()).to_uppercase())
                .into(),
            Self::BadAnswer { .. } => "DEPARTMENT_BAD_ANSWER".into(),
            Self::AuditUnavailable(_) => "AUDIT_UNAVAILABLE".into(),
            Self::Internal(_) => "INTERNAL".into(),
            Self::NoAuditProofs => "AUDIT_PROOFS_NOT_SERVED".into(),
            Self::TooManyWatches { .. } => "TOO_MANY_WATCHES".into(),
            Self::ShuttingDown => "NODE_SHUTTING_DOWN".into(),
            Self::Audit(AuditError::NotFound(_)) => "AUDIT_ENTRY_NOT_FOUND".into(),
            Self::Audit(AuditError::Inconsistent { .. }) => "AUDIT_LOG_INCONSISTENT".into(),
            Self::Audit(_) => "AUDIT_READ_FAILED".into(),
        }
    }

    fn metadata(&self) -> HashMap<String, String> {
        let mut m = HashMap::new();
        match self {
            Self::Denied(Denial::MatterNotGranted { caller, matter }) => {
                m.insert("caller".into(), caller.clone());
                m.insert("missing_grant".into(), format!("matter:{matter}"));
            }
            Self::Denied(Denial::EvidenceNotInMatter {
                matter,
                evidence_type,
            }) => {
                m.insert("matter".into(), matter.clone());
                m.insert("evidence_type".into(), evidence_type.clone());
            }
            Self::Denied(Denial::NotAdministrator { caller }) => {
                m.insert("caller".into(), caller.clone());
                m.insert("missing_grant".into(), "admin".into());
            }
            Self::Denied(Denial::NotPortal { caller }) => {
                m.insert("caller".into(), caller.clone());
                m.insert("missing_grant".into(), "portal".into());
            }
            Self::FieldsNotGranted {
                evidence_type,
                fields,
            } => {
                m.insert("evidence_type".into(), evidence_type.clone());
                m.insert("fields".into(), fields.join(","));
            }
            Self::UnknownMatter(matter) => {
                m.insert("matter".into(), matter.clone());
            }
            Self::RoleNotInMatter {
                matter,
                role,
                roles,
            } => {
                m.insert("matter".into(), matter.clone());
                m.insert("role".into(), role.name().into());
                m.insert("matter_roles".into(), role_list(roles));
            }
            Self::MissingRole {
                matter,
                role,
                min,
                got,
            } => {
                m.insert("matter".into(), matter.clone());
                m.insert("role".into(), role.name().into());
                m.insert("min_subjects".into(), min.to_string());
                m.insert("got".into(), got.to_string());
            }
            Self::TooManySubjects {
                matter,
                role,
                max,
                got,
            } => {
                m.insert("matter".into(), matter.clone());
                m.insert("role".into(), role.name().into());
                m.insert("max_subjects".into(), max.to_string());
                m.insert("got".into(), got.to_string());
            }
            Self::EvidenceNotInRole {
                matter,
                role,
                evidence_type,
            } => {
                m.insert("matter".into(), matter.clone());
                m.insert("role".into(), role.name().into());
                m.insert("evidence_type".into(), evidence_type.clone());
            }
            Self::UnknownEvidenceType(e) => {
                m.insert("evidence_type".into(), e.clone());
            }
            Self::DepartmentUnavailable { department, .. }
            | Self::DepartmentTimeout { department, .. }
            | Self::DepartmentOverloaded { department, .. }
            | Self::Department { department, .. }
            | Self::BadAnswer { department, .. } => {
                m.insert("department".into(), department.clone());
            }
            Self::CallerShareExhausted { department, limit } => {
                m.insert("department".into(), department.clone());
                m.insert("caller_limit".into(), limit.to_string());
            }
            Self::DeadlineTooShort {
                department,
                left,
                needed,
            } => {
                m.insert("department".into(), department.clone());
                m.insert("deadline_left_ms".into(), left.as_millis().to_string());
                m.insert("needed_ms".into(), needed.as_millis().to_string());
            }
            _ => {}
        }
        m
    }

    /// What went wrong inside, for operators: never sent to the caller.
    pub fn internal_detail(&self) -> Option<String> {
        match self {
            Self::DepartmentUnavailable { detail, .. } | Self::BadAnswer { detail, .. } => {
                Some(detail.clone())
            }
            Self::AuditUnavailable(why) => Some(why.to_string()),
            Self::Internal(detail) => Some(detail.clone()),
            Self::Audit(e) => match e {
                AuditError::NotFound(_) | AuditError::Invalid(_) | AuditError::BadNode(_) => None,
                _ => Some(e.to_string()),
            },
            _ => None,
        }
    }

    /// The gRPC status for this error: code, message and google.rpc details.
    /// The internal detail, which the message leaves out, is logged here, so
    /// every path that answers with this error keeps it for operators.
    pub fn to_status(&self) -> Status {
        if let Some(detail) = self.internal_detail() {
            let department = match self {
                Self::DepartmentUnavailable { department, .. }
                | Self::BadAnswer { department, .. } => department.as_str(),
                _ => "",
            };
            tracing::warn!(
                code = ?self.code(),
                reason = %self.reason(),
                department,
                detail = %detail,
                "{self}"
            );
        }
        let mut details = match self {
            Self::Department { status, .. } => status.get_error_details(),
            _ => ErrorDetails::new(),
        };
        if let Self::InvalidArgument(violations) = self {
            details.set_bad_request(
                violations
                    .iter()
                    .map(|v| tonic_types::FieldViolation::new(&v.field, &v.description))
                    .collect::<Vec<_>>(),
            );
        }
        match self {
            Self::RateLimited { retry_after, .. } => {
                details.set_retry_info(Some(*retry_after));
            }
            Self::DepartmentOverloaded { .. } | Self::CallerShareExhausted { .. } => {
                details.set_retry_info(Some(OVERLOAD_RETRY_AFTER));
            }
            _ => {}
        }
        if details.error_info().is_none() {
            details.set_error_info(self.reason(), ERROR_DOMAIN, self.metadata());
        }
        Status::with_error_details(self.code(), self.to_string(), details)
    }
}

impl From<ExchangeError> for Status {
    fn from(e: ExchangeError) -> Self {
        e.to_status()
    }
}

/// The error as a `google.rpc.Status` message, details included (a Gather
/// item's error).
pub fn rpc_status(error: &ExchangeError) -> RpcStatus {
    let status = error.to_status();
    RpcStatus::decode(status.details()).unwrap_or_else(|_| RpcStatus {
        code: status.code() as i32,
        message: status.message().to_owned(),
        details: Vec::new(),
    })
}

/// A refused call that still has an audit entry: its receipt travels in the
/// `tongban-receipt-bin` trailer.
pub(crate) fn status_with_receipt(error: &ExchangeError, receipt: Option<&AuditReceipt>) -> Status {
    let mut status = error.to_status();
    if let Some(r) = receipt {
        status.metadata_mut().insert_bin(
            "tongban-receipt-bin",
            tonic::metadata::MetadataValue::from_bytes(&r.encode_to_vec()),
        );
    }
    status
}

impl From<AuditSinkError> for ExchangeError {
    fn from(e: AuditSinkError) -> Self {
        Self::AuditUnavailable(Box::new(e))
    }
}

impl From<Denial> for ExchangeError {
    fn from(d: Denial) -> Self {
        Self::Denied(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_argument_carries_bad_request() {
        let status =
            ExchangeError::invalid("subject.id_number", "check character is 1, expected X")
                .to_status();
        assert_eq!(status.code(), Code::InvalidArgument);
        let br = status.get_details_bad_request().unwrap();
        assert_eq!(br.field_violations[0].field, "subject.id_number");
        assert_eq!(
            status.get_details_error_info().unwrap().reason,
            "INVALID_REQUEST"
        );
    }

    #[test]
    fn denial_names_missing_grant() {
        let status = ExchangeError::Denied(Denial::MatterNotGranted {
            caller: "org/X/unit/y".into(),
            matter: "temporary-id-card".into(),
        })
        .to_status();
        assert_eq!(status.code(), Code::PermissionDenied);
        let info = status.get_details_error_info().unwrap();
        assert_eq!(info.reason, "MATTER_NOT_GRANTED");
        assert_eq!(info.domain, ERROR_DOMAIN);
        assert_eq!(info.metadata["missing_grant"], "matter:temporary-id-card");
    }

    #[test]
    fn rate_limit_carries_retry_info() {
        let status = ExchangeError::RateLimited {
            caller: "c".into(),
            retry_after: Duration::from_millis(250),
        }
        .to_status();
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert_eq!(
            status.get_details_retry_info().unwrap().retry_delay,
            Some(Duration::from_millis(250))
        );
    }

    #[test]
    fn department_refusal_keeps_its_details() {
        let inner = Status::with_error_details(
            Code::NotFound,
            "no record",
            ErrorDetails::with_error_info("SUBJECT_NOT_FOUND", ERROR_DOMAIN, HashMap::new()),
        );
        let e = ExchangeError::Department {
            department: "police".into(),
            status: inner,
        };
        let status = e.to_status();
        assert_eq!(status.code(), Code::NotFound);
        assert_eq!(
            status.get_details_error_info().unwrap().reason,
            "SUBJECT_NOT_FOUND"
        );
        assert_eq!(e.reason(), "SUBJECT_NOT_FOUND");
        assert!(status.message().contains("police"));
    }

    #[test]
    fn internal_detail_never_reaches_the_caller() {
        let transport = "tcp connect error: Connection refused (os error 111) 127.0.0.1:4567";
        let cases = [
            ExchangeError::DepartmentUnavailable {
                department: "police".into(),
                detail: transport.into(),
            },
            ExchangeError::BadAnswer {
                department: "police".into(),
                detail: transport.into(),
            },
            ExchangeError::from(AuditSinkError::Log(AuditError::Unavailable(
                transport.into(),
            ))),
            ExchangeError::Internal(transport.into()),
            ExchangeError::Audit(AuditError::Unavailable(transport.into())),
            ExchangeError::Audit(AuditError::Inconsistent {
                node: "exchange-1".into(),
                detail: transport.into(),
            }),
        ];
        for e in cases {
            let status = e.to_status();
            for leak in ["127.0.0.1", "os error", "refused", "tcp"] {
                assert!(!status.message().contains(leak), "{:?}", status.message());
            }
            assert_eq!(
                e.internal_detail().as_deref().map(|d| d.contains("4567")),
                Some(true)
            );
        }
        assert_eq!(
            ExchangeError::DepartmentUnavailable {
                department: "police".into(),
                detail: transport.into(),
            }
            .to_string(),
            "department police is unavailable; retry later"
        );
        assert_eq!(
            ExchangeError::from(AuditSinkError::NoResult).to_string(),
            "audit log unavailable, nothing released"
        );
        // An administrator's own mistake is told in full.
        let not_found = ExchangeError::Audit(AuditError::NotFound("entry 7 of node n".into()));
        assert!(not_found.to_string().contains("entry 7 of node n"));
        assert_eq!(not_found.internal_detail(), None);
    }
}
