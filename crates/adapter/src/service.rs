//! The gRPC `Adapter` service: validates a request, asks the evidence
//! source, and releases only the fields asked for.

use std::fmt;
use std::sync::Arc;

use chrono::NaiveDate;
use tongban_core::{
    CaseContext, CreditCode, EvidenceAnswer, EvidenceTypeDef, IdNumber, Role, SubjectId,
};
use tongban_proto::v1::{
    self as pb, DescribeRequest, DescribeResponse, QueryRequest, QueryResponse,
    adapter_server::{Adapter, AdapterServer},
};
use tonic::{Request, Response, Status};

use crate::error::{AdapterError, reason};
use crate::store::{Asked, EvidenceSource, china_today};

/// Decides whether the caller of a request may use this adapter, from the
/// request's extensions (where an mTLS transport puts the peer's
/// certificate). Adapters in production allow only the exchange.
pub trait CallerCheck: Send + Sync + 'static {
    fn check(&self, extensions: &tonic::Extensions) -> Result<(), Status>;
}

impl<F> CallerCheck for F
where
    F: Fn(&tonic::Extensions) -> Result<(), Status> + Send + Sync + 'static,
{
    fn check(&self, extensions: &tonic::Extensions) -> Result<(), Status> {
        self(extensions)
    }
}

/// The department's `Adapter` gRPC service.
#[derive(Clone)]
pub struct AdapterService {
    source: Arc<EvidenceSource>,
    caller_check: Option<Arc<dyn CallerCheck>>,
    today: fn() -> NaiveDate,
    metrics: Option<tongban_telemetry::Metrics>,
    health_listen: Option<std::net::SocketAddr>,
}

impl fmt::Debug for AdapterService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdapterService")
            .field("department", &self.source.department().id)
            .field("caller_check", &self.caller_check.is_some())
            .finish()
    }
}

impl AdapterService {
    /// A service answering from `source`, accepting any caller.
    pub fn new(source: Arc<EvidenceSource>) -> Self {
        Self {
            source,
            caller_check: None,
            today: china_today,
            metrics: None,
            health_listen: None,
        }
    }

    /// Also serves the health service alone, in plaintext, on `addr` when
    /// served (for probes that cannot present a client certificate, such as
    /// the kubelet's gRPC probe).
    pub fn with_health_listen(mut self, addr: std::net::SocketAddr) -> Self {
        self.health_listen = Some(addr);
        self
    }

    pub fn health_listen(&self) -> Option<std::net::SocketAddr> {
        self.health_listen
    }

    /// Records the RPC metrics of every call in `metrics` when served.
    pub fn with_metrics(mut self, metrics: tongban_telemetry::Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    pub fn metrics(&self) -> Option<&tongban_telemetry::Metrics> {
        self.metrics.as_ref()
    }

    /// Refuses requests for which `check` fails (e.g. not the exchange's
    /// certificate). Runs before anything else, for every method.
    pub fn with_caller_check(mut self, check: impl CallerCheck) -> Self {
        self.caller_check = Some(Arc::new(check));
        self
    }

    /// Overrides the date bound as `:today` (tests).
    pub fn with_today(mut self, today: fn() -> NaiveDate) -> Self {
        self.today = today;
        self
    }

    pub fn source(&self) -> &Arc<EvidenceSource> {
        &self.source
    }

    /// The tonic server wrapping this service.
    pub fn into_server(self) -> AdapterServer<Self> {
        AdapterServer::new(self)
    }

    fn department(&self) -> &str {
        &self.source.department().id
    }

    fn check_caller<T>(&self, request: &Request<T>) -> Result<(), Status> {
        match &self.caller_check {
            Some(c) => c.check(request.extensions()),
            None => Ok(()),
        }
    }

    async fn query_inner(&self, req: QueryRequest) -> Result<EvidenceAnswer, AdapterError> {
        let case = req.case.ok_or(AdapterError::Missing("case"))?;
        let span = tracing::Span::current();
        span.record("matter", case.matter.as_str());
        span.record("case_number", case.case_number.as_str());
        let subject = req.subject.ok_or(AdapterError::Missing("subject"))?;
        let id = subject_id(&subject)?;
        let legal_representative = legal_representative(&req.related)?;
        CaseContext::new(&case.matter, &case.case_number, &case.operator_id)
            .map_err(AdapterError::InvalidCase)?;
        if req.evidence_type.is_empty() {
            return Err(AdapterError::Missing("evidence_type"));
        }
        let def = self
            .source
            .evidence_type(&req.evidence_type)
            .ok_or_else(|| crate::store::SourceError::UnknownEvidenceType {
                department: self.department().to_owned(),
                evidence_type: req.evidence_type.clone(),
            })?;
        let wanted = requested_fields(def, req.fields.as_ref())?;
        let name = Some(subject.name.trim()).filter(|n| !n.is_empty());
        let asked = Asked {
            subject: &id,
            name,
            legal_representative: legal_representative.as_ref(),
            today: (self.today)(),
        };
        let mut answer = self.source.answer(&req.evidence_type, &asked).await?;
        if let Some(wanted) = wanted {
            answer.retain_fields(|f| wanted.iter().any(|w| w == f));
        }
        Ok(answer)
    }
}

/// The subject: exactly one of an identity number and a credit code, valid.
fn subject_id(subject: &pb::Subject) -> Result<SubjectId, AdapterError> {
    match (subject.id_number.is_empty(), subject.credit_code.is_empty()) {
        (false, true) => IdNumber::parse(&subject.id_number)
            .map(SubjectId::Person)
            .map_err(AdapterError::InvalidIdNumber),
        (true, false) => CreditCode::parse(&subject.credit_code)
            .map(SubjectId::Organisation)
            .map_err(|error| AdapterError::InvalidCreditCode {
                field: "subject.credit_code".into(),
                error,
            }),
        (true, true) => Err(AdapterError::SubjectShape {
            field: "subject".into(),
            problem: "names neither an id_number nor a credit_code",
        }),
        (false, false) => Err(AdapterError::SubjectShape {
            field: "subject".into(),
            problem: "names both an id_number and a credit_code; give exactly one",
        }),
    }
}

/// The case's legal representative among the related subjects, if the
/// exchange passed one: a person, at most one.
fn legal_representative(related: &[pb::Subject]) -> Result<Option<IdNumber>, AdapterError> {
    let mut found = None;
    for (i, r) in related.iter().enumerate() {
        if r.role != Role::LegalRepresentative.name() {
            return Err(AdapterError::SubjectShape {
                field: format!("related[{i}].role"),
                problem: "only a legal-representative may be related",
            });
        }
        if found.is_some() {
            return Err(AdapterError::SubjectShape {
                field: format!("related[{i}]"),
                problem: "names a second legal representative",
            });
        }
        if !r.credit_code.is_empty() {
            return Err(AdapterError::SubjectShape {
                field: format!("related[{i}].credit_code"),
                problem: "a legal representative is a person, named by id_number",
            });
        }
        let id = IdNumber::parse(&r.id_number).map_err(|error| {
            AdapterError::InvalidRelatedIdNumber {
                field: format!("related[{i}].id_number"),
                error,
            }
        })?;
        found = Some(id);
    }
    Ok(found)
}

/// The field names a mask asks for (None = all), each checked against the
/// evidence type.
fn requested_fields(
    def: &EvidenceTypeDef,
    mask: Option<&prost_types::FieldMask>,
) -> Result<Option<Vec<String>>, AdapterError> {
    let Some(mask) = mask.filter(|m| !m.paths.is_empty()) else {
        return Ok(None);
    };
    let unknown: Vec<String> = mask
        .paths
        .iter()
        .filter(|p| def.field(p).is_none())
        .cloned()
        .collect();
    if !unknown.is_empty() {
        return Err(AdapterError::UnknownFields {
            evidence_type: def.id.clone(),
            paths: unknown,
        });
    }
    Ok(Some(mask.paths.clone()))
}

#[tonic::async_trait]
impl Adapter for AdapterService {
    #[tracing::instrument(
        name = "adapter.query",
        skip_all,
        fields(
            department = %self.department(),
            evidence_type = %request.get_ref().evidence_type,
            requester = %request.get_ref().requester,
            matter = tracing::field::Empty,
            case_number = tracing::field::Empty,
        )
    )]
    async fn query(
        &self,
        request: Request<QueryRequest>,
    ) -> Result<Response<QueryResponse>, Status> {
        self.check_caller(&request)?;
        match self.query_inner(request.into_inner()).await {
            Ok(answer) => Ok(Response::new(QueryResponse {
                evidence: Some(pb::Evidence::from(answer)),
            })),
            Err(e) => {
                let status = e.into_status(self.department());
                tracing::info!(code = ?status.code(), "query refused");
                Err(status)
            }
        }
    }

    #[tracing::instrument(name = "adapter.describe", skip_all, fields(department = %self.department()))]
    async fn describe(
        &self,
        request: Request<DescribeRequest>,
    ) -> Result<Response<DescribeResponse>, Status> {
        self.check_caller(&request)?;
        let d = self.source.department();
        Ok(Response::new(DescribeResponse {
            department: d.id.clone(),
            title: d.title.clone(),
            title_zh: d.title_zh.clone(),
            evidence_types: self
                .source
                .evidence_types()
                .map(pb::EvidenceTypeInfo::from)
                .collect(),
        }))
    }
}

/// A caller check refusing everyone, with the standard reason; a building
/// block for real checks.
pub fn refuse_caller(message: impl Into<String>) -> Status {
    use tonic_types::{ErrorDetails, StatusExt};
    Status::with_error_details(
        tonic::Code::PermissionDenied,
        message,
        ErrorDetails::with_error_info(
            reason::CALLER_NOT_ALLOWED,
            crate::error::ERROR_DOMAIN,
            std::collections::HashMap::new(),
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use tongban_core::Catalogue;

    #[test]
    fn mask_selects_and_validates_fields() {
        let cat = Catalogue::embedded();
        let def = cat.evidence("hrss.unemployment").unwrap();
        assert_eq!(requested_fields(def, None).unwrap(), None);
        let empty = prost_types::FieldMask { paths: vec![] };
        assert_eq!(requested_fields(def, Some(&empty)).unwrap(), None);
        let m = prost_types::FieldMask {
            paths: vec!["eligible".into(), "reason".into()],
        };
        assert_eq!(
            requested_fields(def, Some(&m)).unwrap(),
            Some(vec!["eligible".into(), "reason".into()])
        );
        let bad = prost_types::FieldMask {
            paths: vec!["eligible".into(), "salary".into()],
        };
        match requested_fields(def, Some(&bad)) {
            Err(AdapterError::UnknownFields { paths, .. }) => assert_eq!(paths, ["salary"]),
            other => panic!("{other:?}"),
        }
    }
}
