//! The `Audit` gRPC service: administrators search, report, export and prove
//! the audit log. Reading the log is itself audited: every call — refused or
//! not — becomes an `AdminAction` entry, committed before anything is
//! returned. The log's read side, shared with `Exchange.ProveReceipt`, is
//! [`AuditReader`].
//!
//! Every method works in [`ExchangeError`]s and answers through
//! [`answer`], so each error becomes its status once, with its
//! `google.rpc` details, in `error.rs`.

use std::pin::Pin;

use prost::Message;
use tokio_stream::Stream;
use tongban_audit::{Cursor, EntryKind, PageRequest, SearchFilter};
use tongban_core::{Caller, FieldViolation};
use tongban_proto::v1::audit_server::Audit as AuditApi;
use tongban_proto::v1::{
    self as pb, AdminContext, AuditExportRequest, AuditFilter, AuditRecord, AuditSearchRequest,
    AuditSearchResponse, ConsistencyProofRequest, InclusionProofRequest, ListCheckpointsRequest,
    ListCheckpointsResponse, SubjectReportRequest, SubjectReportResponse,
};
use tonic::{Request, Response, Status};

// Re-exported where the service's callers have always named it.
pub use crate::audit::AuditReader;
use crate::audit::read_entry;
use crate::auth::Authenticator;
use crate::error::AuditSinkError;
use crate::error::ExchangeError;
use crate::pipeline::Exchange;
use crate::wire::record_to_proto;

/// The `Audit` gRPC service.
#[derive(Clone)]
pub struct AuditService {
    exchange: Exchange,
    authenticate: Authenticator,
    reader: AuditReader,
}

impl std::fmt::Debug for AuditService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditService")
            .field("reader", &self.reader)
            .finish_non_exhaustive()
    }
}

/// Longest reason accepted, in characters.
const MAX_REASON_CHARS: usize = 200;
/// Accesses a subject report returns at most.
const MAX_REPORT: u32 = 10_000;
/// Encoded bytes of the accesses one subject report returns at most, well
/// under a client's default 4 MB message limit; the rest is `truncated`.
const MAX_REPORT_BYTES: usize = 2 * 1024 * 1024;

impl AuditService {
    pub fn new(exchange: Exchange, authenticate: Authenticator, reader: AuditReader) -> Self {
        Self {
            exchange,
            authenticate,
            reader,
        }
    }

    /// Authenticates, validates the admin context and what is asked,
    /// charges the caller's rate, checks the caller is an administrator,
    /// and logs the act — refused or not — before returning. `asked` is the
    /// description of what is being done (no identity numbers), or why the
    /// request itself is invalid; the caller's own text never reaches the
    /// log unchecked (the log also bounds and escapes every field).
    async fn admit<T>(
        &self,
        request: &Request<T>,
        admin: Option<&AdminContext>,
        action: &str,
        asked: Result<String, ExchangeError>,
    ) -> Result<Caller, ExchangeError> {
        let call = self
            .exchange
            .begin(&self.authenticate, request.extensions(), None)?;
        let context = validate_admin(admin);
        let (detail, decision) = match (&context, asked) {
            (Err(violations), _) => (
                "admin context rejected".to_owned(),
                Err(ExchangeError::InvalidArgument(violations.clone())),
            ),
            (Ok(_), Err(invalid)) => ("request rejected".to_owned(), Err(invalid)),
            (Ok(_), Ok(detail)) => {
                let decision = self.exchange.charge(&call, 1).and_then(|()| {
                    call.policy
                        .require_admin(&call.caller)
                        .map_err(ExchangeError::from)
                });
                (detail, decision)
            }
        };
        if decision.is_err() {
            self.exchange.wait_refusal_turn(&call).await?;
        }
        let mut entry = read_entry(&call, EntryKind::AdminAction, decision.as_ref().err());
        match &context {
            Ok((operator, reason)) => {
                entry.operator = operator.clone();
                entry.detail = format!("{action} {detail}; reason: {reason}");
            }
            Err(_) => entry.detail = format!("{action} {detail}"),
        }
        if let Err(e) = self.reader.log().append(entry).await {
            tracing::error!(error = %e, "cannot log an administrator's act; refusing it");
            return Err(AuditSinkError::from(e).into());
        }
        decision?;
        Ok(call.caller)
    }

    /// Logs a refused administrator's call and returns what it is told.
    async fn reject<T>(
        &self,
        request: &Request<T>,
        admin: Option<&AdminContext>,
        action: &str,
        error: ExchangeError,
    ) -> ExchangeError {
        match self.admit(request, admin, action, Err(error)).await {
            Err(error) => error,
            // `admit` refuses whenever `asked` is an error.
            Ok(_) => ExchangeError::Internal("a rejected request was admitted".into()),
        }
    }

    fn pseudonym(&self, field: &str, id_number: &str) -> Result<String, ExchangeError> {
        let id = tongban_core::IdNumber::parse(id_number.trim()).map_err(|e| {
            ExchangeError::invalid(
                field,
                format!(
                    "not a valid resident identity number ({} check failed): {e}",
                    e.check()
                ),
            )
        })?;
        Ok(self.reader.pseudonymizer().pseudonym(id.as_str()))
    }

    /// The pseudonym of an organisation's entries, from its credit code.
    fn organisation_pseudonym(&self, field: &str, code: &str) -> Result<String, ExchangeError> {
        let code = tongban_core::CreditCode::parse(code.trim()).map_err(|e| {
            ExchangeError::invalid(
                field,
                format!(
                    "not a valid unified social credit code ({} check failed): {e}",
                    e.check()
                ),
            )
        })?;
        let subject = tongban_core::SubjectId::Organisation(code);
        Ok(self
            .reader
            .pseudonymizer()
            .pseudonym(&subject.pseudonym_input()))
    }

    /// The filter as the store takes it, and a description for the log.
    fn store_filter(
        &self,
        filter: Option<&AuditFilter>,
    ) -> Result<(SearchFilter, String), ExchangeError> {
        let Some(f) = filter else {
            return Ok((SearchFilter::default(), "all entries".into()));
        };
        let mut violations = Vec::new();
        for (field, value) in [
            ("filter.node", &f.node),
            ("filter.kind", &f.kind),
            ("filter.caller_org", &f.caller_org),
            ("filter.caller_unit", &f.caller_unit),
            ("filter.operator_id", &f.operator_id),
            ("filter.department", &f.department),
            ("filter.evidence_type", &f.evidence_type),
            ("filter.matter", &f.matter),
            ("filter.case_number", &f.case_number),
            ("filter.subject_id_number", &f.subject_id_number),
            ("filter.subject_credit_code", &f.subject_credit_code),
        ] {
            check_filter_text(field, value, &mut violations);
        }
        if !violations.is_empty() {
            return Err(ExchangeError::InvalidArgument(violations));
        }
        let text = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        let time = |t: Option<&prost_types::Timestamp>| {
            t.map(|t| {
                tongban_proto::convert::time_of(t)
                    .ok_or_else(|| ExchangeError::invalid("filter", "timestamp out of range"))
            })
            .transpose()
        };
        let kind = match f.kind.as_str() {
            "" => None,
            k => Some(
                k.parse::<EntryKind>()
                    .map_err(|e| ExchangeError::invalid("filter.kind", e))?,
            ),
        };
        let subject = match (f.subject_id_number.as_str(), f.subject_credit_code.as_str()) {
            ("", "") => None,
            (id, "") => Some(self.pseudonym("filter.subject_id_number", id)?),
            ("", code) => Some(self.organisation_pseudonym("filter.subject_credit_code", code)?),
            _ => {
                return Err(ExchangeError::invalid(
                    "filter.subject_credit_code",
                    "give a person's subject_id_number or an organisation's subject_credit_code, not both",
                ));
            }
        };
        let store_filter = SearchFilter {
            node: text(&f.node),
            from: time(f.from.as_ref())?,
            to: time(f.to.as_ref())?,
            kind,
            caller_org: text(&f.caller_org),
            caller_unit: text(&f.caller_unit),
            operator: text(&f.operator_id),
            department: text(&f.department),
            evidence_type: text(&f.evidence_type),
            matter: text(&f.matter),
            case_number: text(&f.case_number),
            outcome_code: f.outcome_code,
            subject,
        };
        let description = describe_filter(&store_filter);
        Ok((store_filter, description))
    }
}

/// Longest text a filter field may hold: the longest value the log stores
/// in such a field (codes, units, case numbers, operators) is 64 characters.
const MAX_FILTER_CHARS: usize = 64;

/// A node named by an administrator: bounded like any filter text.
fn check_node(field: &str, node: &str) -> Result<(), ExchangeError> {
    let mut violations = Vec::new();
    check_filter_text(field, node, &mut violations);
    if violations.is_empty() {
        Ok(())
    } else {
        Err(ExchangeError::InvalidArgument(violations))
    }
}

fn check_filter_text(field: &str, value: &str, violations: &mut Vec<tongban_core::FieldViolation>) {
    if value.chars().count() > MAX_FILTER_CHARS || value.chars().any(char::is_control) {
        violations.push(FieldViolation::new(
            field,
            format!("must be at most {MAX_FILTER_CHARS} characters without control characters"),
        ));
    }
}

fn validate_admin(admin: Option<&AdminContext>) -> Result<(String, String), Vec<FieldViolation>> {
    let Some(admin) = admin else {
        return Err(vec![FieldViolation::new(
            "admin",
            "is required: operator_id and reason",
        )]);
    };
    let mut violations = Vec::new();
    // The operator follows the same rules as a clerk's id in a case.
    if let Err(v) = tongban_core::CaseContext::new("audit", "audit", &admin.operator_id) {
        violations.extend(
            v.into_iter()
                .map(|v| FieldViolation::new("admin.operator_id", v.description)),
        );
    }
    let reason = admin.reason.trim();
    if reason.is_empty() {
        violations.push(FieldViolation::new(
            "admin.reason",
            "is required: why the log is read",
        ));
    } else if reason.chars().count() > MAX_REASON_CHARS || reason.chars().any(char::is_control) {
        violations.push(FieldViolation::new(
            "admin.reason",
            format!("must be at most {MAX_REASON_CHARS} characters without control characters"),
        ));
    }
    if violations.is_empty() {
        Ok((admin.operator_id.clone(), reason.to_owned()))
    } else {
        Err(violations)
    }
}

/// The filter for the log; the subject appears only as its pseudonym.
fn describe_filter(f: &SearchFilter) -> String {
    let mut parts = Vec::new();
    let mut add = |name: &str, value: Option<String>| {
        if let Some(v) = value {
            parts.push(format!("{name}={v}"));
        }
    };
    add("node", f.node.clone());
    add("from", f.from.map(|t| t.to_rfc3339()));
    add("to", f.to.map(|t| t.to_rfc3339()));
    add("kind", f.kind.map(|k| k.as_str().to_owned()));
    add("caller_org", f.caller_org.clone());
    add("caller_unit", f.caller_unit.clone());
    add("operator", f.operator.clone());
    add("department", f.department.clone());
    add("evidence_type", f.evidence_type.clone());
    add("matter", f.matter.clone());
    add("case_number", f.case_number.clone());
    add("outcome_code", f.outcome_code.map(|c| c.to_string()));
    add("subject", f.subject.clone());
    if parts.is_empty() {
        "all entries".into()
    } else {
        parts.join(" ")
    }
}

fn parse_page_token(token: &str) -> Result<Option<Cursor>, ExchangeError> {
    if token.is_empty() {
        return Ok(None);
    }
    let bad = || ExchangeError::invalid("page_token", "is not a token this service issued");
    let mut parts = token.splitn(3, ':');
    let (Some(time), Some(index), Some(node)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(bad());
    };
    Ok(Some(Cursor {
        time_us: time.parse().map_err(|_| bad())?,
        index: index.parse().map_err(|_| bad())?,
        node: node.to_owned(),
    }))
}

type RecordStream = Pin<Box<dyn Stream<Item = Result<AuditRecord, Status>> + Send>>;

/// Entries read per store query while exporting.
const EXPORT_BATCH: u32 = 2000;

/// The one way this service answers: an error becomes its status with its
/// `google.rpc` details ([`ExchangeError::to_status`]).
fn answer<T>(result: Result<T, ExchangeError>) -> Result<Response<T>, Status> {
    result.map(Response::new).map_err(|e| e.to_status())
}

/// What each method does, in the service's own errors; the gRPC methods
/// below only [`answer`] with it.
impl AuditService {
    async fn search_log(
        &self,
        request: Request<AuditSearchRequest>,
    ) -> Result<AuditSearchResponse, ExchangeError> {
        let req = request.get_ref();
        let asked = self
            .store_filter(req.filter.as_ref())
            .and_then(|(filter, description)| {
                Ok((filter, parse_page_token(&req.page_token)?, description))
            });
        let (filter, after, description) = match asked {
            Ok(asked) => asked,
            Err(e) => return Err(self.reject(&request, req.admin.as_ref(), "search", e).await),
        };
        let detail = format!("filter: {description}");
        self.admit(&request, req.admin.as_ref(), "search", Ok(detail))
            .await?;
        let page = tongban_audit::search(
            self.reader.store(),
            &filter,
            &PageRequest {
                limit: req.page_size,
                after,
            },
        )
        .await
        .map_err(ExchangeError::Audit)?;
        Ok(AuditSearchResponse {
            records: page.entries.into_iter().map(record_to_proto).collect(),
            next_page_token: page.next.map(|c| c.to_string()).unwrap_or_default(),
        })
    }

    async fn report_subject(
        &self,
        request: Request<SubjectReportRequest>,
    ) -> Result<SubjectReportResponse, ExchangeError> {
        let req = request.get_ref();
        let pseudonym = match self.pseudonym("id_number", &req.id_number) {
            Ok(pseudonym) => pseudonym,
            Err(e) => {
                return Err(self
                    .reject(&request, req.admin.as_ref(), "subject report", e)
                    .await);
            }
        };
        let max = match req.max_accesses {
            0 => 1000,
            n => n.min(MAX_REPORT),
        };
        self.admit(
            &request,
            req.admin.as_ref(),
            "subject report",
            Ok(format!("subject={pseudonym}")),
        )
        .await?;
        let filter = SearchFilter {
            subject: Some(pseudonym),
            ..SearchFilter::default()
        };
        let mut accesses = Vec::new();
        let mut bytes = 0usize;
        let mut after = None;
        let truncated = loop {
            let page = tongban_audit::search(
                self.reader.store(),
                &filter,
                &PageRequest {
                    limit: tongban_audit::read::MAX_PAGE,
                    after: after.take(),
                },
            )
            .await
            .map_err(ExchangeError::Audit)?;
            let mut full = false;
            for e in page.entries {
                let record = record_to_proto(e);
                bytes += record.encoded_len();
                if accesses.len() as u32 == max || bytes > MAX_REPORT_BYTES {
                    full = true;
                    break;
                }
                accesses.push(record);
            }
            match page.next {
                Some(next) if !full => after = Some(next),
                Some(_) => break true,
                None => break full,
            }
        };
        Ok(SubjectReportResponse {
            accesses,
            truncated,
        })
    }

    async fn export_log(
        &self,
        request: Request<AuditExportRequest>,
    ) -> Result<RecordStream, ExchangeError> {
        let req = request.get_ref();
        if let Err(e) = check_node("node", &req.node) {
            return Err(self.reject(&request, req.admin.as_ref(), "export", e).await);
        }
        let node = (!req.node.is_empty()).then(|| req.node.clone());
        let detail = format!("node={}", node.as_deref().unwrap_or("all"));
        self.admit(&request, req.admin.as_ref(), "export", Ok(detail))
            .await?;
        let store = self.reader.store_arc();
        let nodes = match node {
            Some(n) => vec![n],
            None => store
                .list_nodes()
                .await
                .map_err(|e| ExchangeError::Audit(e.into()))?,
        };
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<AuditRecord, Status>>(64);
        tokio::spawn(async move {
            for node in nodes {
                let mut from = 0u64;
                loop {
                    let rows = match store.scan(&node, from, EXPORT_BATCH).await {
                        Ok(rows) => rows,
                        Err(e) => {
                            let error = ExchangeError::Audit(e.into());
                            let _ = tx.send(Err(error.to_status())).await;
                            return;
                        }
                    };
                    let Some(last) = rows.last() else { break };
                    from = last.index + 1;
                    for row in rows {
                        if tx.send(Ok(record_to_proto(row))).await.is_err() {
                            return; // the client went away
                        }
                    }
                }
            }
        });
        Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
    }

    async fn checkpoints(
        &self,
        request: Request<ListCheckpointsRequest>,
    ) -> Result<ListCheckpointsResponse, ExchangeError> {
        let admin = request.get_ref().admin.clone();
        self.admit(
            &request,
            admin.as_ref(),
            "list checkpoints",
            Ok(String::new()),
        )
        .await?;
        let store = self.reader.store();
        let mut checkpoints = Vec::new();
        for node in store
            .list_nodes()
            .await
            .map_err(|e| ExchangeError::Audit(e.into()))?
        {
            if let Some(cp) = store
                .latest_checkpoint(&node)
                .await
                .map_err(|e| ExchangeError::Audit(e.into()))?
            {
                checkpoints.push(pb::NodeCheckpoint {
                    node,
                    tree_size: cp.tree_size,
                    checkpoint: cp.note,
                });
            }
        }
        Ok(ListCheckpointsResponse { checkpoints })
    }

    async fn inclusion_proof(
        &self,
        request: Request<InclusionProofRequest>,
    ) -> Result<pb::InclusionProof, ExchangeError> {
        let req = request.get_ref();
        if let Err(e) = check_node("node", &req.node) {
            return Err(self
                .reject(&request, req.admin.as_ref(), "inclusion proof", e)
                .await);
        }
        let detail = format!("node={} index={}", req.node, req.index);
        self.admit(&request, req.admin.as_ref(), "inclusion proof", Ok(detail))
            .await?;
        self.reader.prove_any(&req.node, req.index).await
    }

    async fn consistency_proof(
        &self,
        request: Request<ConsistencyProofRequest>,
    ) -> Result<pb::ConsistencyProof, ExchangeError> {
        let req = request.get_ref();
        if let Err(e) = check_node("node", &req.node) {
            return Err(self
                .reject(&request, req.admin.as_ref(), "consistency proof", e)
                .await);
        }
        let detail = format!("node={} {}..{}", req.node, req.old_size, req.new_size);
        self.admit(
            &request,
            req.admin.as_ref(),
            "consistency proof",
            Ok(detail),
        )
        .await?;
        let proof = tongban_audit::consistency_proof(
            self.reader.store(),
            &req.node,
            req.old_size,
            req.new_size,
        )
        .await
        .map_err(ExchangeError::Audit)?;
        Ok(pb::ConsistencyProof {
            node: proof.node,
            old_size: proof.old_size,
            new_size: proof.new_size,
            proof: proof.proof.iter().map(|h| h.to_vec()).collect(),
        })
    }

    /// Discloses a sealed access early: the act and its reason are logged
    /// first, then the entry is marked disclosed.
    async fn unseal(
        &self,
        request: Request<pb::UnsealRequest>,
    ) -> Result<pb::UnsealResponse, ExchangeError> {
        let req = request.get_ref();
        if let Err(e) = check_node("node", &req.node) {
            return Err(self.reject(&request, req.admin.as_ref(), "unseal", e).await);
        }
        let detail = format!("node={} index={}", req.node, req.index);
        self.admit(&request, req.admin.as_ref(), "unseal", Ok(detail))
            .await?;
        let store = self.reader.store();
        let entry = store
            .entry(&req.node, req.index)
            .await
            .map_err(|e| ExchangeError::Audit(e.into()))?
            .ok_or_else(|| {
                ExchangeError::Audit(tongban_audit::AuditError::NotFound(format!(
                    "node {:?} holds no entry {}",
                    req.node, req.index
                )))
            })?;
        let was_sealed = self
            .exchange
            .catalogue()
            .matter(&entry.entry.matter)
            .and_then(|m| m.disclosure_delay())
            .is_some_and(|delay| entry.entry.time + delay > chrono::Utc::now());
        if was_sealed {
            store
                .put_unsealed(&req.node, req.index, chrono::Utc::now())
                .await
                .map_err(|e| ExchangeError::Audit(e.into()))?;
        }
        Ok(pb::UnsealResponse { was_sealed })
    }
}

#[tonic::async_trait]
impl AuditApi for AuditService {
    #[tracing::instrument(name = "Audit/Search", skip_all)]
    async fn search(
        &self,
        request: Request<AuditSearchRequest>,
    ) -> Result<Response<AuditSearchResponse>, Status> {
        answer(self.search_log(request).await)
    }

    #[tracing::instrument(name = "Audit/SubjectReport", skip_all)]
    async fn subject_report(
        &self,
        request: Request<SubjectReportRequest>,
    ) -> Result<Response<SubjectReportResponse>, Status> {
        answer(self.report_subject(request).await)
    }

    type ExportStream = RecordStream;

    #[tracing::instrument(name = "Audit/Export", skip_all)]
    async fn export(
        &self,
        request: Request<AuditExportRequest>,
    ) -> Result<Response<Self::ExportStream>, Status> {
        answer(self.export_log(request).await)
    }

    #[tracing::instrument(name = "Audit/ListCheckpoints", skip_all)]
    async fn list_checkpoints(
        &self,
        request: Request<ListCheckpointsRequest>,
    ) -> Result<Response<ListCheckpointsResponse>, Status> {
        answer(self.checkpoints(request).await)
    }

    #[tracing::instrument(name = "Audit/GetInclusionProof", skip_all)]
    async fn get_inclusion_proof(
        &self,
        request: Request<InclusionProofRequest>,
    ) -> Result<Response<pb::InclusionProof>, Status> {
        answer(self.inclusion_proof(request).await)
    }

    #[tracing::instrument(name = "Audit/GetConsistencyProof", skip_all)]
    async fn get_consistency_proof(
        &self,
        request: Request<ConsistencyProofRequest>,
    ) -> Result<Response<pb::ConsistencyProof>, Status> {
        answer(self.consistency_proof(request).await)
    }

    #[tracing::instrument(name = "Audit/Unseal", skip_all)]
    async fn unseal(
        &self,
        request: Request<pb::UnsealRequest>,
    ) -> Result<Response<pb::UnsealResponse>, Status> {
        answer(self.unseal(request).await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::Arc;

    use tongban_audit::{AuditConfig, AuditLog, AuditStore, LogSigner, SqliteStore};
    use tonic::Code;
    use tonic_types::StatusExt;

    use crate::audit::AuditLogSink;
    use crate::routing::Departments;

    const ADMIN: &str = "org/91350100M000100Y43/unit/audit-office";

    /// The service over a fresh log, its one caller an administrator; the
    /// directory holds the log.
    async fn service() -> (AuditService, AuditReader, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn AuditStore> =
            Arc::new(SqliteStore::open(&dir.path().join("a.db")).await.unwrap());
        let signer = LogSigner::generate(&tongban_audit::origin_for_node("n1")).unwrap();
        let log = AuditLog::open(store.clone(), signer, AuditConfig::new("n1"))
            .await
            .unwrap();
        let key = tongban_audit::SubjectPseudonymizer::from_bytes(&[7u8; 32]).unwrap();
        let sink = AuditLogSink::new(log, key);
        let catalogue = tongban_core::Catalogue::embedded();
        let policy = tongban_core::Policy::from_toml(
            &format!(
                "[[grant]]\ncallers = [\"{ADMIN}\"]\nmatters = [\"unemployment-benefit\"]\n\n[admin]\ncallers = [\"{ADMIN}\"]\n"
            ),
            "policy.toml",
            &catalogue,
        )
        .unwrap();
        let exchange = Exchange::new(
            "n1",
            Arc::new(catalogue),
            policy,
            Departments::new(Vec::new()),
            Arc::new(sink.clone()),
            tongban_telemetry::Metrics::disabled(),
        );
        let (_, caller) = Caller::parse_reference(ADMIN).unwrap();
        let reader = AuditReader::new(sink, store);
        let service =
            AuditService::new(exchange, crate::auth::fixed_caller(caller), reader.clone());
        (service, reader, dir)
    }

    fn admin() -> Option<AdminContext> {
        Some(AdminContext {
            operator_id: "auditor.wang".into(),
            reason: "citizen request 2026-117".into(),
        })
    }

    fn violations(status: &Status) -> Vec<String> {
        status
            .get_details_bad_request()
            .expect("a BadRequest detail")
            .field_violations
            .into_iter()
            .map(|v| v.field)
            .collect()
    }

    /// Every way an administrator's request can be invalid — no admin
    /// context, a bad filter, a bad identity number — is answered through
    /// the one mapping: INVALID_ARGUMENT with its ErrorInfo and BadRequest,
    /// and logged.
    #[tokio::test]
    async fn invalid_requests_carry_error_info_and_field_violations() {
        let (service, reader, _dir) = service().await;

        let status = service
            .search(Request::new(AuditSearchRequest::default()))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        let info = status
            .get_details_error_info()
            .expect("an ErrorInfo detail");
        assert_eq!(info.reason, "INVALID_REQUEST");
        assert_eq!(info.domain, crate::ERROR_DOMAIN);
        assert_eq!(violations(&status), ["admin"]);

        let status = service
            .search(Request::new(AuditSearchRequest {
                admin: admin(),
                filter: Some(AuditFilter {
                    kind: "no-such-kind".into(),
                    ..AuditFilter::default()
                }),
                ..AuditSearchRequest::default()
            }))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(
            status.get_details_error_info().unwrap().reason,
            "INVALID_REQUEST"
        );
        assert_eq!(violations(&status), ["filter.kind"]);

        let status = service
            .subject_report(Request::new(SubjectReportRequest {
                admin: admin(),
                id_number: "11010519491231002Y".into(),
                ..SubjectReportRequest::default()
            }))
            .await
            .unwrap_err();
        assert_eq!(
            status.get_details_error_info().unwrap().reason,
            "INVALID_REQUEST"
        );
        assert_eq!(violations(&status), ["id_number"]);

        // Each refusal is an administrator's act in the log.
        let logged = tongban_audit::search(
            reader.store(),
            &SearchFilter::default(),
            &PageRequest::default(),
        )
        .await
        .unwrap();
        assert_eq!(logged.entries.len(), 3);
        assert!(
            logged
                .entries
                .iter()
                .all(|e| e.entry.kind == EntryKind::AdminAction
                    && e.entry.outcome_reason == "INVALID_REQUEST")
        );
    }

    #[test]
    fn admin_context_is_required_and_checked() {
        assert!(validate_admin(None).is_err());
        let ok = validate_admin(Some(&AdminContext {
            operator_id: "auditor.wang".into(),
            reason: " citizen request 2026-117 ".into(),
        }))
        .unwrap();
        assert_eq!(
            ok,
            ("auditor.wang".into(), "citizen request 2026-117".into())
        );
        let bad = validate_admin(Some(&AdminContext {
            operator_id: "auditor wang".into(),
            reason: String::new(),
        }))
        .unwrap_err();
        assert_eq!(bad.len(), 2);
        assert_eq!(bad[0].field, "admin.operator_id");
        assert_eq!(bad[1].field, "admin.reason");
    }

    #[test]
    fn page_tokens_round_trip() {
        let c = Cursor {
            time_us: 1_790_000_000_000_000,
            node: "exchange-1".into(),
            index: 42,
        };
        assert_eq!(parse_page_token(&c.to_string()).unwrap(), Some(c));
        assert_eq!(parse_page_token("").unwrap(), None);
        assert!(parse_page_token("garbage").is_err());
        assert!(parse_page_token("x:1:n").is_err());
    }

    #[test]
    fn filter_description_never_holds_an_identity_number() {
        let f = SearchFilter {
            matter: Some("unemployment-benefit".into()),
            subject: Some("ab12".into()),
            ..SearchFilter::default()
        };
        assert_eq!(
            describe_filter(&f),
            "matter=unemployment-benefit subject=ab12"
        );
        assert_eq!(describe_filter(&SearchFilter::default()), "all entries");
    }

    /// Unseal discloses a sealed access early and says so; an access that
    /// was never sealed changes nothing; an entry that does not exist is
    /// NOT_FOUND, and an invalid node name INVALID_ARGUMENT. Every call is
    /// logged first, with its reason.
    #[tokio::test]
    async fn unseal_discloses_only_sealed_accesses_and_is_logged() {
        let (service, reader, _dir) = service().await;
        let log = reader.log();
        let mut sealed = tongban_audit::AuditEntry::new(EntryKind::Lookup, chrono::Utc::now());
        sealed.matter = "criminal-investigation-assist".into();
        let sealed = log.append(sealed).await.unwrap();
        let mut open = tongban_audit::AuditEntry::new(EntryKind::Lookup, chrono::Utc::now());
        open.matter = "unemployment-benefit".into();
        let open = log.append(open).await.unwrap();
        let unseal = |index: u64, node: &str| pb::UnsealRequest {
            admin: admin(),
            node: node.into(),
            index,
        };
        let answer = AuditApi::unseal(&service, Request::new(unseal(sealed.index, "n1")))
            .await
            .unwrap()
            .into_inner();
        assert!(answer.was_sealed);
        let answer = AuditApi::unseal(&service, Request::new(unseal(open.index, "n1")))
            .await
            .unwrap()
            .into_inner();
        assert!(!answer.was_sealed);
        let disclosed = reader
            .store()
            .unsealed("n1", &[sealed.index, open.index])
            .await
            .unwrap();
        assert_eq!(disclosed.into_iter().collect::<Vec<_>>(), [sealed.index]);
        let status = AuditApi::unseal(&service, Request::new(unseal(999_999, "n1")))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::NotFound);
        let status = AuditApi::unseal(&service, Request::new(unseal(0, &"n".repeat(5000))))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        log.flush().await.unwrap();
        let acts: Vec<String> = reader
            .store()
            .scan("n1", 0, 100)
            .await
            .unwrap()
            .into_iter()
            .filter(|e| e.entry.detail.starts_with("unseal"))
            .map(|e| e.entry.detail)
            .collect();
        assert_eq!(acts.len(), 4, "{acts:?}");
        assert!(
            acts.iter()
                .all(|d| d.contains("reason: citizen request 2026-117")),
            "{acts:?}"
        );
    }
}
