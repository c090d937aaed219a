//! The adapter's errors and their one mapping to gRPC status codes with
//! `google.rpc` details (BadRequest for bad input, ErrorInfo for reasons).

use tongban_core::{CreditCodeError, IdNumberError};
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};

use crate::store::SourceError;

/// ErrorInfo domain of every reason tongban reports.
pub const ERROR_DOMAIN: &str = "tongban.gov";

/// ErrorInfo reason codes set by adapters.
pub mod reason {
    /// The identity number failed a GB 11643-1999 check.
    pub const INVALID_ID_NUMBER: &str = "INVALID_ID_NUMBER";
    /// The unified social credit code failed a GB 32100-2015 check.
    pub const INVALID_CREDIT_CODE: &str = "INVALID_CREDIT_CODE";
    /// The subject names both or neither of an identity number and a credit
    /// code, or the kind the evidence type is not about.
    pub const WRONG_SUBJECT_KIND: &str = "WRONG_SUBJECT_KIND";
    /// The case context is missing or malformed.
    pub const INVALID_CASE: &str = "INVALID_CASE";
    /// A requested field is not a field of the evidence type.
    pub const UNKNOWN_FIELD: &str = "UNKNOWN_FIELD";
    /// A required request field is missing.
    pub const MISSING_ARGUMENT: &str = "MISSING_ARGUMENT";
    /// This department does not serve the evidence type.
    pub const UNKNOWN_EVIDENCE_TYPE: &str = "UNKNOWN_EVIDENCE_TYPE";
    /// The department holds no record of the subject.
    pub const SUBJECT_NOT_FOUND: &str = "SUBJECT_NOT_FOUND";
    /// The department's database cannot be reached.
    pub const DEPARTMENT_UNAVAILABLE: &str = "DEPARTMENT_UNAVAILABLE";
    /// The department's data or query is inconsistent; details are logged.
    pub const DATA_ERROR: &str = "DATA_ERROR";
    /// The caller is not allowed to query this adapter.
    pub const CALLER_NOT_ALLOWED: &str = "CALLER_NOT_ALLOWED";
}

/// Why a request to the adapter failed.
#[derive(Debug, thiserror::Error)]
pub enum AdapterError {
    #[error("subject.id_number is invalid: {0}")]
    InvalidIdNumber(IdNumberError),
    #[error("{field} is invalid: {error}")]
    InvalidCreditCode {
        /// `subject.credit_code` or `related[i].credit_code`.
        field: String,
        error: CreditCodeError,
    },
    /// A related subject's identity number (`related[i].id_number`).
    #[error("{field} is invalid: {error}")]
    InvalidRelatedIdNumber { field: String, error: IdNumberError },
    /// Neither or both of `id_number` and `credit_code` were given.
    #[error("{field}: {problem}")]
    SubjectShape {
        field: String,
        problem: &'static str,
    },
    #[error("the case context is invalid")]
    InvalidCase(Vec<tongban_core::FieldViolation>),
    #[error("{0} is required")]
    Missing(&'static str),
    #[error("evidence type {evidence_type:?} has no field {}", paths.join(", "))]
    UnknownFields {
        evidence_type: String,
        paths: Vec<String>,
    },
    #[error(transparent)]
    Source(#[from] SourceError),
}

fn info(reason: &str, department: &str) -> ErrorDetails {
    ErrorDetails::with_error_info(
        reason,
        ERROR_DOMAIN,
        [("department".to_owned(), department.to_owned())],
    )
}

/// INVALID_ARGUMENT for an identifier (identity number, credit code) that
/// failed `check`: a BadRequest naming the field and the check.
fn invalid_identifier(
    reason: &str,
    department: &str,
    field: &str,
    check: &str,
    error: &dyn std::fmt::Display,
) -> Status {
    let mut d = info(reason, department);
    d.set_bad_request(vec![FieldViolation {
        field: field.to_owned(),
        description: format!("{check} check failed: {error}"),
        reason: check.to_ascii_uppercase(),
        localized_message: None,
    }]);
    Status::with_error_details(
        Code::InvalidArgument,
        format!("{field} is invalid ({check} check failed)"),
        d,
    )
}

impl AdapterError {
    /// The gRPC status for this error, answered by `department`. Internal
    /// failures are logged here and reported without detail.
    pub fn into_status(self, department: &str) -> Status {
        match self {
            Self::InvalidIdNumber(e) => invalid_identifier(
                reason::INVALID_ID_NUMBER,
                department,
                "subject.id_number",
                e.check(),
                &e,
            ),
            Self::InvalidCreditCode { field, error } => invalid_identifier(
                reason::INVALID_CREDIT_CODE,
                department,
                &field,
                error.check(),
                &error,
            ),
            Self::InvalidRelatedIdNumber { field, error } => invalid_identifier(
                reason::INVALID_ID_NUMBER,
                department,
                &field,
                error.check(),
                &error,
            ),
            Self::SubjectShape { field, problem } => {
                let mut d = info(reason::WRONG_SUBJECT_KIND, department);
                d.add_bad_request_violation(field.clone(), problem);
                Status::with_error_details(Code::InvalidArgument, format!("{field}: {problem}"), d)
            }
            Self::InvalidCase(violations) => {
                let mut d = info(reason::INVALID_CASE, department);
                d.set_bad_request(
                    violations
                        .iter()
                        .map(|v| tonic_types::FieldViolation::new(&v.field, &v.description))
                        .collect::<Vec<_>>(),
                );
                let fields: Vec<&str> = violations.iter().map(|v| v.field.as_str()).collect();
                Status::with_error_details(
                    Code::InvalidArgument,
                    format!("invalid case context: {}", fields.join(", ")),
                    d,
                )
            }
            Self::Missing(field) => {
                let mut d = info(reason::MISSING_ARGUMENT, department);
                d.add_bad_request_violation(field, "required");
                Status::with_error_details(Code::InvalidArgument, format!("{field} is required"), d)
            }
            Self::UnknownFields {
                evidence_type,
                paths,
            } => {
                let mut d = info(reason::UNKNOWN_FIELD, department);
                for p in &paths {
                    d.add_bad_request_violation(
                        "fields.paths",
                        format!("{p:?} is not a field of {evidence_type}"),
                    );
                }
                Status::with_error_details(
                    Code::InvalidArgument,
                    format!("{evidence_type} has no field {}", paths.join(", ")),
                    d,
                )
            }
            Self::Source(e) => source_status(e, department),
        }
    }
}

fn source_status(e: SourceError, department: &str) -> Status {
    match e {
        SourceError::UnknownEvidenceType { evidence_type, .. } => Status::with_error_details(
            Code::NotFound,
            format!("department {department} does not serve evidence type {evidence_type:?}"),
            info(reason::UNKNOWN_EVIDENCE_TYPE, department),
        ),
        SourceError::SubjectNotFound { .. } => Status::with_error_details(
            Code::NotFound,
            format!("department {department} holds no record of the subject"),
            info(reason::SUBJECT_NOT_FOUND, department),
        ),
        SourceError::WrongSubjectKind {
            evidence_type,
            expected,
        } => {
            let field = crate::store::subject_field(expected);
            let mut d = info(reason::WRONG_SUBJECT_KIND, department);
            d.add_bad_request_violation(
                field,
                format!("{evidence_type} is about an {expected}: name it by {field}"),
            );
            Status::with_error_details(
                Code::InvalidArgument,
                format!("{evidence_type} is about an {expected}, named by {field}"),
                d,
            )
        }
        SourceError::Unavailable { source, .. } => {
            tracing::warn!(%department, error = %source, "department database unavailable");
            Status::with_error_details(
                Code::Unavailable,
                format!("department {department}'s database is unavailable"),
                info(reason::DEPARTMENT_UNAVAILABLE, department),
            )
        }
        e @ (SourceError::Ambiguous { .. }
        | SourceError::Database { .. }
        | SourceError::Decode { .. }) => {
            // The error text names queries and columns, never values.
            tracing::error!(%department, error = %e, "department data error");
            Status::with_error_details(
                Code::Internal,
                format!("department {department} could not answer: data error (logged)"),
                info(reason::DATA_ERROR, department),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_number_error_has_bad_request_and_reason() {
        let s = AdapterError::InvalidIdNumber(IdNumberError::WrongCheckCharacter {
            expected: '5',
            found: 'X',
        })
        .into_status("police");
        assert_eq!(s.code(), Code::InvalidArgument);
        let br = s.get_details_bad_request().unwrap();
        assert_eq!(br.field_violations[0].field, "subject.id_number");
        assert!(
            br.field_violations[0]
                .description
                .starts_with("checksum check failed")
        );
        assert_eq!(br.field_violations[0].reason, "CHECKSUM");
        let ei = s.get_details_error_info().unwrap();
        assert_eq!(ei.reason, reason::INVALID_ID_NUMBER);
        assert_eq!(ei.domain, ERROR_DOMAIN);
    }

    #[test]
    fn credit_code_errors_name_the_check() {
        for (input, check) in [
            ("91510400MA62000", "length"),
            ("91510400MA6200001I", "alphabet"),
            ("91510400MA62000010", "checksum"),
        ] {
            let error = tongban_core::CreditCode::parse(input).unwrap_err();
            let s = AdapterError::InvalidCreditCode {
                field: "subject.credit_code".into(),
                error,
            }
            .into_status("market");
            assert_eq!(s.code(), Code::InvalidArgument);
            let br = s.get_details_bad_request().unwrap();
            assert_eq!(br.field_violations[0].field, "subject.credit_code");
            assert!(
                br.field_violations[0]
                    .description
                    .starts_with(&format!("{check} check failed")),
                "{input}: {}",
                br.field_violations[0].description
            );
            assert_eq!(
                s.get_details_error_info().unwrap().reason,
                reason::INVALID_CREDIT_CODE
            );
        }
    }

    #[test]
    fn source_errors_map_to_codes_without_leaking() {
        let s = AdapterError::from(SourceError::SubjectNotFound {
            department: "police".into(),
        })
        .into_status("police");
        assert_eq!(s.code(), Code::NotFound);
        assert_eq!(
            s.get_details_error_info().unwrap().reason,
            "SUBJECT_NOT_FOUND"
        );
        let s = AdapterError::from(SourceError::Unavailable {
            department: "hrss".into(),
            source: sqlx::Error::PoolTimedOut,
        })
        .into_status("hrss");
        assert_eq!(s.code(), Code::Unavailable);
        assert!(s.message().contains("hrss"));
        let s = AdapterError::from(SourceError::Ambiguous {
            evidence_type: "hrss.pension".into(),
        })
        .into_status("hrss");
        assert_eq!(s.code(), Code::Internal);
        assert_eq!(s.get_details_error_info().unwrap().reason, "DATA_ERROR");
    }
}
