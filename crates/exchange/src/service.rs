//! The `Exchange` gRPC service: translates wire messages to the request
//! path (`pipeline.rs`) and back, and nothing else. Sizes are checked before
//! decoding (`size_guard.rs`), callers authenticated in `auth.rs`.

use std::time::Instant;

use tongban_core::{FieldRelease, Level, Matter, RegionCode};
use tongban_proto::v1::exchange_server::Exchange as ExchangeApi;
use tongban_proto::v1::{
    self as pb, DescribeMatterRequest, DescribeMatterResponse, FindServicePointsRequest,
    FindServicePointsResponse, GatherItem, GatherRequest, GatherResponse, ListEvidenceTypesRequest,
    ListEvidenceTypesResponse, ListMattersRequest, ListMattersResponse, LookupRequest,
    LookupResponse, ProveReceiptRequest, gather_item,
};
use tonic::{Request, Response, Status};

use crate::audit::AuditReader;
use crate::auth::Authenticator;
use crate::error::{ExchangeError, rpc_status, status_with_receipt};
use crate::pipeline::{Call, CaseAsked, Exchange, GatherAsked, LookupAsked, Refused, SubjectAsked};
use crate::routing::parse_grpc_timeout;

/// The gRPC face of the exchange.
#[derive(Clone)]
pub struct ExchangeService {
    exchange: Exchange,
    authenticate: Authenticator,
    audit_reader: Option<AuditReader>,
}

impl std::fmt::Debug for ExchangeService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExchangeService")
            .field("exchange", &self.exchange)
            .finish_non_exhaustive()
    }
}

impl ExchangeService {
    pub fn new(exchange: Exchange, authenticate: Authenticator) -> Self {
        Self {
            exchange,
            authenticate,
            audit_reader: None,
        }
    }

    /// Serves `ProveReceipt` from this audit log.
    pub fn with_audit_reader(mut self, reader: AuditReader) -> Self {
        self.audit_reader = Some(reader);
        self
    }

    /// Discovery's matter: NOT_FOUND when the catalogue has none, then
    /// PERMISSION_DENIED unless the caller holds a grant of it of any access
    /// (a discover grant shows a matter; only an evidence grant releases
    /// its evidence, which `Exchange::granted_matter` checks).
    fn discoverable_matter(&self, call: &Call, code: &str) -> Result<&Matter, ExchangeError> {
        let matter = self
            .exchange
            .catalogue()
            .matter(code)
            .ok_or_else(|| ExchangeError::UnknownMatter(code.to_owned()))?;
        if call.policy.may_discover(&call.caller, &matter.code) {
            Ok(matter)
        } else {
            let denial = tongban_core::Denial::MatterNotGranted {
                caller: call.caller.to_string(),
                matter: matter.code.clone(),
            };
            self.exchange.metrics().record_denial(denial.reason());
            Err(denial.into())
        }
    }

    /// Starts the call: one policy snapshot, the caller, the deadline.
    fn begin<T>(&self, request: &Request<T>) -> Result<Call, ExchangeError> {
        self.exchange
            .begin(&self.authenticate, request.extensions(), deadline(request))
    }
}

/// The caller's deadline as an instant, from its `grpc-timeout`.
fn deadline<T>(request: &Request<T>) -> Option<Instant> {
    request
        .metadata()
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_grpc_timeout)
        .map(|timeout| Instant::now() + timeout)
}

impl From<pb::CaseContext> for CaseAsked {
    fn from(c: pb::CaseContext) -> Self {
        Self {
            matter: c.matter,
            case_number: c.case_number,
            operator_id: c.operator_id,
        }
    }
}

impl From<pb::Subject> for SubjectAsked {
    fn from(s: pb::Subject) -> Self {
        Self {
            id_number: s.id_number,
            credit_code: s.credit_code,
            name: s.name,
            role: s.role,
        }
    }
}

// The handler spans are at debug level: `GrpcServerLayer` already opens an
// info-level server span per call, named after the method.
#[tonic::async_trait]
impl ExchangeApi for ExchangeService {
    /// A caller proves its own receipts only. "Not yours" and "no such
    /// entry" get the same answer, so the log's size and other callers'
    /// entries cannot be probed; administrators prove any entry through the
    /// logged `Audit.GetInclusionProof`.
    #[tracing::instrument(name = "Exchange/ProveReceipt", level = "debug", skip_all)]
    async fn prove_receipt(
        &self,
        request: Request<ProveReceiptRequest>,
    ) -> Result<Response<pb::InclusionProof>, Status> {
        let call = self.begin(&request)?;
        self.exchange.charge(&call, 1)?;
        let Some(reader) = &self.audit_reader else {
            return Err(ExchangeError::NoAuditProofs.into());
        };
        let receipt = request
            .into_inner()
            .receipt
            .ok_or_else(|| ExchangeError::invalid("receipt", "is required"))?;
        Ok(Response::new(
            reader.prove_own_receipt(&call.caller, &receipt).await?,
        ))
    }

    #[tracing::instrument(name = "Exchange/Lookup", level = "debug", skip_all)]
    async fn lookup(
        &self,
        request: Request<LookupRequest>,
    ) -> Result<Response<LookupResponse>, Status> {
        let call = self.begin(&request)?;
        let req = request.into_inner();
        let asked = LookupAsked {
            case: req.case.map(CaseAsked::from),
            subject: req.subject.map(SubjectAsked::from),
            evidence_type: req.evidence_type,
            fields: req.fields.map(|m| m.paths).unwrap_or_default(),
        };
        match self.exchange.lookup(call, asked).await {
            Ok(released) => Ok(Response::new(LookupResponse {
                evidence: Some(released.evidence),
                receipt: released.receipt,
            })),
            Err(Refused { error, receipt }) => Err(status_with_receipt(&error, receipt.as_ref())),
        }
    }

    #[tracing::instrument(name = "Exchange/Gather", level = "debug", skip_all)]
    async fn gather(
        &self,
        request: Request<GatherRequest>,
    ) -> Result<Response<GatherResponse>, Status> {
        let call = self.begin(&request)?;
        let req = request.into_inner();
        let asked = GatherAsked {
            case: req.case.map(CaseAsked::from),
            subject: req.subject.map(SubjectAsked::from),
            subjects: req.subjects.into_iter().map(SubjectAsked::from).collect(),
            evidence_types: req.evidence_types,
        };
        let gathered = match self.exchange.gather(call, asked).await {
            Ok(gathered) => gathered,
            Err(Refused { error, receipt }) => {
                return Err(status_with_receipt(&error, receipt.as_ref()));
            }
        };
        let mut items = Vec::with_capacity(gathered.items.len());
        for item in gathered.items {
            let (evidence_type, subject_index, role) = (
                item.evidence_type,
                item.subject_index,
                item.role.name().to_owned(),
            );
            items.push(match item.outcome {
                Ok(released) => GatherItem {
                    evidence_type,
                    result: Some(gather_item::Result::Evidence(released.evidence)),
                    receipt: released.receipt,
                    subject_index,
                    role,
                },
                Err(Refused {
                    error: ExchangeError::AuditUnavailable(why),
                    ..
                }) => {
                    // Fail closed for the whole Gather: nothing is released
                    // unless every entry is durable.
                    return Err(ExchangeError::AuditUnavailable(why).into());
                }
                Err(Refused { error, receipt }) => GatherItem {
                    evidence_type,
                    result: Some(gather_item::Result::Error(rpc_status(&error))),
                    receipt,
                    subject_index,
                    role,
                },
            });
        }
        Ok(Response::new(GatherResponse {
            matter: gathered.matter,
            items,
        }))
    }

    #[tracing::instrument(name = "Exchange/ListEvidenceTypes", level = "debug", skip_all)]
    async fn list_evidence_types(
        &self,
        request: Request<ListEvidenceTypesRequest>,
    ) -> Result<Response<ListEvidenceTypesResponse>, Status> {
        let call = self.begin(&request)?;
        self.exchange.charge(&call, 1)?;
        let department = request.into_inner().department;
        let catalogue = self.exchange.catalogue();
        let evidence_types = catalogue
            .evidence_types()
            .iter()
            .filter(|e| department.is_empty() || e.department == department)
            .filter_map(|e| {
                let release = call
                    .policy
                    .evidence_release(&call.caller, &e.id, catalogue)?;
                Some(released_info(e, &release))
            })
            .collect();
        Ok(Response::new(ListEvidenceTypesResponse { evidence_types }))
    }

    #[tracing::instrument(name = "Exchange/ListMatters", level = "debug", skip_all)]
    async fn list_matters(
        &self,
        request: Request<ListMattersRequest>,
    ) -> Result<Response<ListMattersResponse>, Status> {
        let call = self.begin(&request)?;
        self.exchange.charge(&call, 1)?;
        let matters = call
            .policy
            .discoverable_matters(&call.caller, self.exchange.catalogue())
            .into_iter()
            .map(pb::Matter::from)
            .collect();
        Ok(Response::new(ListMattersResponse { matters }))
    }

    #[tracing::instrument(name = "Exchange/DescribeMatter", level = "debug", skip_all)]
    async fn describe_matter(
        &self,
        request: Request<DescribeMatterRequest>,
    ) -> Result<Response<DescribeMatterResponse>, Status> {
        let call = self.begin(&request)?;
        self.exchange.charge(&call, 1)?;
        let code = request.into_inner().matter;
        let matter = self.discoverable_matter(&call, &code)?;
        // With an evidence grant, each evidence type with the fields the
        // caller receives; with discovery only, which evidence the matter
        // gathers (so nobody need bring papers) and no field.
        let evidence_types = matter
            .evidence
            .iter()
            .filter_map(|e| self.exchange.catalogue().evidence(e))
            .map(|e| {
                let release = call
                    .policy
                    .authorize(&call.caller, matter, &e.id)
                    .unwrap_or_else(|_| FieldRelease::Only(Default::default()));
                released_info(e, &release)
            })
            .collect();
        Ok(Response::new(DescribeMatterResponse {
            matter: Some(pb::Matter::from(matter)),
            evidence_types,
        }))
    }

    #[tracing::instrument(name = "Exchange/FindServicePoints", level = "debug", skip_all)]
    async fn find_service_points(
        &self,
        request: Request<FindServicePointsRequest>,
    ) -> Result<Response<FindServicePointsResponse>, Status> {
        let call = self.begin(&request)?;
        self.exchange.charge(&call, 1)?;
        let req = request.into_inner();
        let region = if req.region_code.is_empty() {
            None
        } else {
            Some(
                RegionCode::parse(&req.region_code)
                    .map_err(|e| ExchangeError::invalid("region_code", e.to_string()))?,
            )
        };
        let matter = self.discoverable_matter(&call, &req.matter)?;
        let service_points = call
            .policy
            .service_points_for(matter, region.as_ref())
            .into_iter()
            .map(pb::ServicePoint::from)
            .collect();
        Ok(Response::new(FindServicePointsResponse {
            matter: matter.code.clone(),
            level: matter.level.name().to_owned(),
            city_wide: matter.city_wide,
            levels: Level::ALL
                .iter()
                .filter(|l| **l >= matter.level)
                .map(|l| l.name().to_owned())
                .collect(),
            service_points,
        }))
    }
}

/// An evidence type as one caller may see it: only the fields it receives.
fn released_info(
    def: &tongban_core::EvidenceTypeDef,
    release: &FieldRelease,
) -> pb::EvidenceTypeInfo {
    let mut info = pb::EvidenceTypeInfo::from(def);
    info.fields.retain(|f| release.allows(&f.name));
    info
}
