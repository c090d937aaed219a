//! The `Exchange` gRPC service: translates wire messages to the pipeline and
//! back. Authentication happens here, from the transport, never from fields.

use std::sync::Arc;
use std::time::Instant;

use prost::Message;
use tongban_core::{Caller, FieldRelease, FieldViolation};
use tongban_proto::google::rpc::Status as RpcStatus;
use tongban_proto::v1::exchange_server::Exchange as ExchangeApi;
use tongban_proto::v1::{
    self as pb, DescribeMatterRequest, DescribeMatterResponse, GatherItem, GatherRequest,
    GatherResponse, ListEvidenceTypesRequest, ListEvidenceTypesResponse, ListMattersRequest,
    ListMattersResponse, LookupRequest, LookupResponse, ProveReceiptRequest, gather_item,
};
use tonic::{Request, Response, Status};

use crate::audit_service::AuditReader;
use crate::error::ExchangeError;
use crate::pipeline::{AuditKind, EvidenceRequest, Exchange, Refused, validate_case_and_subject};
use crate::routing::parse_grpc_timeout;

/// Establishes who is calling from what the transport knows about the
/// connection (the request's extensions), never from the message.
pub type Authenticator =
    Arc<dyn Fn(&tonic::Extensions) -> Result<Caller, ExchangeError> + Send + Sync>;

/// Authenticator for a plaintext listener: every request is attributed to one
/// configured caller. For local development and benchmarks only.
pub fn fixed_caller(caller: Caller) -> Authenticator {
    Arc::new(move |_| Ok(caller.clone()))
}

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

    /// Authenticates the caller and bounds the request's size.
    fn admit<T: Message>(&self, request: &Request<T>) -> Result<Caller, ExchangeError> {
        let caller = (self.authenticate)(request.extensions())?;
        let limit = self.exchange.policy().limits().max_request_bytes;
        let size = request.get_ref().encoded_len();
        if size > limit {
            return Err(ExchangeError::TooLarge { size, limit });
        }
        Ok(caller)
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

// The handler spans are at debug level: `GrpcServerLayer` already opens an
// info-level server span per call, named after the method.
#[tonic::async_trait]
impl ExchangeApi for ExchangeService {
    #[tracing::instrument(name = "Exchange/ProveReceipt", level = "debug", skip_all)]
    async fn prove_receipt(
        &self,
        request: Request<ProveReceiptRequest>,
    ) -> Result<Response<pb::InclusionProof>, Status> {
        let caller = self.admit(&request)?;
        self.exchange.charge(&caller, 1)?;
        let Some(reader) = &self.audit_reader else {
            return Err(Status::unimplemented(
                "this exchange node serves no audit proofs",
            ));
        };
        let receipt = request
            .into_inner()
            .receipt
            .ok_or_else(|| ExchangeError::invalid("receipt", "is required"))?;
        let is_admin = self.exchange.policy().require_admin(&caller).is_ok();
        Ok(Response::new(
            reader.prove_receipt(&caller, &receipt, is_admin).await?,
        ))
    }

    #[tracing::instrument(name = "Exchange/Lookup", level = "debug", skip_all)]
    async fn lookup(
        &self,
        request: Request<LookupRequest>,
    ) -> Result<Response<LookupResponse>, Status> {
        let caller = self.admit(&request)?;
        let deadline = deadline(&request);
        let req = request.into_inner();
        let mut violations = Vec::new();
        if req.evidence_type.is_empty() {
            violations.push(FieldViolation::new("evidence_type", "is required"));
        }
        let (case, subject, subject_name) =
            validate_case_and_subject(req.case.as_ref(), req.subject.as_ref(), violations)?;
        self.exchange.charge(&caller, 1)?;
        let evidence_request = EvidenceRequest {
            case,
            subject,
            subject_name,
            evidence_type: req.evidence_type,
            fields: req.fields.map(|m| m.paths).unwrap_or_default(),
        };
        let outcome = self
            .exchange
            .request_all_detached(caller, vec![evidence_request], AuditKind::Lookup, deadline)
            .await
            .pop();
        match outcome.unwrap_or_else(|| {
            Err(Refused {
                error: ExchangeError::Internal("no outcome for the request".into()),
                receipt: None,
            })
        }) {
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
        let caller = self.admit(&request)?;
        let deadline = deadline(&request);
        let req = request.into_inner();
        let (case, subject, subject_name) =
            validate_case_and_subject(req.case.as_ref(), req.subject.as_ref(), Vec::new())?;
        let matter = self.exchange.granted_matter(&caller, &case.matter)?;
        let evidence_types: Vec<String> = if req.evidence_types.is_empty() {
            matter.evidence.clone()
        } else {
            for e in &req.evidence_types {
                if self.exchange.catalogue().evidence(e).is_none() {
                    return Err(ExchangeError::UnknownEvidenceType(e.clone()).into());
                }
            }
            let mut unique = req.evidence_types.clone();
            unique.sort();
            unique.dedup();
            if unique.len() != req.evidence_types.len() {
                return Err(ExchangeError::invalid(
                    "evidence_types",
                    "lists an evidence type twice",
                )
                .into());
            }
            req.evidence_types
        };
        let max = self.exchange.policy().limits().max_gather_evidence;
        if evidence_types.len() > max {
            return Err(ExchangeError::invalid(
                "evidence_types",
                format!(
                    "asks for {} evidence types, at most {max} per Gather",
                    evidence_types.len()
                ),
            )
            .into());
        }
        self.exchange.charge(
            &caller,
            u32::try_from(evidence_types.len()).unwrap_or(u32::MAX),
        )?;
        let matter_code = matter.code.clone();
        let requests: Vec<EvidenceRequest> = evidence_types
            .iter()
            .map(|evidence_type| EvidenceRequest {
                case: case.clone(),
                subject: subject.clone(),
                subject_name: subject_name.clone(),
                evidence_type: evidence_type.clone(),
                fields: Vec::new(),
            })
            .collect();
        let outcomes = self
            .exchange
            .request_all_detached(caller, requests, AuditKind::GatherItem, deadline)
            .await;
        let mut items = Vec::with_capacity(outcomes.len());
        for (evidence_type, outcome) in evidence_types.into_iter().zip(outcomes) {
            items.push(match outcome {
                Ok(released) => GatherItem {
                    evidence_type,
                    result: Some(gather_item::Result::Evidence(released.evidence)),
                    receipt: released.receipt,
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
                },
            });
        }
        Ok(Response::new(GatherResponse {
            matter: matter_code,
            items,
        }))
    }

    #[tracing::instrument(name = "Exchange/ListEvidenceTypes", level = "debug", skip_all)]
    async fn list_evidence_types(
        &self,
        request: Request<ListEvidenceTypesRequest>,
    ) -> Result<Response<ListEvidenceTypesResponse>, Status> {
        let caller = self.admit(&request)?;
        let department = request.into_inner().department;
        let policy = self.exchange.policy();
        let catalogue = self.exchange.catalogue();
        let evidence_types = catalogue
            .evidence_types()
            .iter()
            .filter(|e| department.is_empty() || e.department == department)
            .filter_map(|e| {
                let release = policy.evidence_release(&caller, &e.id, catalogue)?;
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
        let caller = self.admit(&request)?;
        let matters = self
            .exchange
            .policy()
            .granted_matters(&caller, self.exchange.catalogue())
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
        let caller = self.admit(&request)?;
        let code = request.into_inner().matter;
        let matter = self.exchange.granted_matter(&caller, &code)?;
        let policy = self.exchange.policy();
        let evidence_types = matter
            .evidence
            .iter()
            .filter_map(|e| self.exchange.catalogue().evidence(e))
            .filter_map(|e| {
                let release = policy.authorize(&caller, matter, &e.id).ok()?;
                Some(released_info(e, &release))
            })
            .collect();
        Ok(Response::new(DescribeMatterResponse {
            matter: Some(pb::Matter::from(matter)),
            evidence_types,
        }))
    }
}

/// The error as a `google.rpc.Status` message, details included.
pub fn rpc_status(error: &ExchangeError) -> RpcStatus {
    let status = error.to_status();
    RpcStatus::decode(status.details()).unwrap_or_else(|_| RpcStatus {
        code: status.code() as i32,
        message: status.message().to_owned(),
        details: Vec::new(),
    })
}

/// A refused Lookup still has an audit entry; its receipt travels in the
/// `tongban-receipt-bin` trailer.
fn status_with_receipt(error: &ExchangeError, receipt: Option<&pb::AuditReceipt>) -> Status {
    let mut status = error.to_status();
    if let Some(r) = receipt {
        status.metadata_mut().insert_bin(
            "tongban-receipt-bin",
            tonic::metadata::MetadataValue::from_bytes(&r.encode_to_vec()),
        );
    }
    status
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
