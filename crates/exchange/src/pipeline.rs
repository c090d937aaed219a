//! The request path. Every evidence request, from `Lookup` or from one item of
//! a `Gather`, goes through [`Exchange::request_all`] and nothing else:
//!
//! 1. the caller is authenticated by the transport (see `service.rs`);
//! 2. the request is validated ([`validate_case`], [`validate_subject`]);
//! 3. the policy authorises this caller, matter and evidence type and says
//!    which fields may be released (deny by default, purpose-bound);
//! 4. the department is asked for exactly those fields, within the deadline;
//! 5. the answer is checked and minimised again;
//! 6. the outcome — answered, refused or failed — is written to the audit
//!    log, and nothing leaves before that write is durable.

use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use chrono::{DateTime, Utc};
use tongban_core::{
    Caller, CaseContext, Catalogue, FieldRelease, FieldViolation, IdNumber, Matter, Policy,
};
use tongban_proto::v1::{self as pb, AuditReceipt, Evidence, QueryRequest};
use tongban_telemetry::Metrics;
use tracing::Instrument;

use crate::error::ExchangeError;
use crate::limits::RateLimiter;
use crate::routing::Departments;

/// What the audit log is told about one evidence request.
#[derive(Debug, Clone)]
pub struct AuditEvent {
    pub time: DateTime<Utc>,
    pub kind: AuditKind,
    pub caller: Caller,
    pub case: CaseContext,
    pub evidence_type: String,
    pub department: String,
    pub subject: IdNumber,
    /// gRPC code of the outcome (0 = answered).
    pub outcome_code: i32,
    /// Machine reason for a refusal or failure, empty when answered.
    pub outcome_reason: String,
    pub latency: Duration,
    pub trace_id: String,
    /// Released fields as (name, value) pairs, for the released-fields hash.
    pub released: Vec<(String, String)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditKind {
    Lookup,
    GatherItem,
}

/// One result per event, in the events' order: the receipt of its durable
/// entry, or why it could not be written.
pub type AuditFuture<'a> =
    Pin<Box<dyn Future<Output = Vec<Result<Option<AuditReceipt>, String>>> + Send + 'a>>;

pub type ProbeFuture<'a> = Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;

/// Where audit events go. `record_all` must not return before the events
/// are durable, and writes one call's events together (one commit, not one
/// per event); an error means nothing of that event may be released.
pub trait AuditSink: Send + Sync + std::fmt::Debug {
    fn record_all(&self, events: Vec<AuditEvent>) -> AuditFuture<'_>;

    /// Whether the sink could record now (the health service's readiness);
    /// the reason when not.
    fn probe(&self) -> ProbeFuture<'_> {
        Box::pin(async { Ok(()) })
    }
}

/// A validated evidence request.
#[derive(Debug, Clone)]
pub struct EvidenceRequest {
    pub case: CaseContext,
    pub subject: IdNumber,
    /// Name presented by the applicant, for name matching only.
    pub subject_name: Option<String>,
    pub evidence_type: String,
    /// Fields asked for; empty means all released fields.
    pub fields: Vec<String>,
}

/// An answer that may leave the exchange.
#[derive(Debug, Clone)]
pub struct Released {
    pub evidence: Evidence,
    pub receipt: Option<AuditReceipt>,
}

/// A refusal or failure, with the receipt of its audit entry.
#[derive(Debug)]
pub struct Refused {
    pub error: ExchangeError,
    pub receipt: Option<AuditReceipt>,
}

/// One answered (or refused) request, not yet audited.
struct Answered {
    event: AuditEvent,
    outcome: Result<Evidence, ExchangeError>,
}

/// The exchange's engine, shared by every connection.
#[derive(Debug, Clone)]
pub struct Exchange {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    node: String,
    catalogue: Arc<Catalogue>,
    policy: ArcSwap<Policy>,
    departments: Departments,
    limiter: RateLimiter,
    audit: Arc<dyn AuditSink>,
    metrics: Metrics,
}

impl Exchange {
    pub fn new(
        node: impl Into<String>,
        catalogue: Arc<Catalogue>,
        policy: Policy,
        departments: Departments,
        audit: Arc<dyn AuditSink>,
        metrics: Metrics,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                node: node.into(),
                catalogue,
                policy: ArcSwap::from_pointee(policy),
                departments,
                limiter: RateLimiter::default(),
                audit,
                metrics,
            }),
        }
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    pub fn audit_sink(&self) -> &Arc<dyn AuditSink> {
        &self.inner.audit
    }

    pub fn node(&self) -> &str {
        &self.inner.node
    }

    pub fn catalogue(&self) -> &Catalogue {
        &self.inner.catalogue
    }

    pub fn departments(&self) -> &Departments {
        &self.inner.departments
    }

    /// The policy in force now.
    pub fn policy(&self) -> Arc<Policy> {
        self.inner.policy.load_full()
    }

    /// Puts a new policy in force for every request that starts afterwards.
    pub fn replace_policy(&self, policy: Policy) {
        self.inner.policy.store(Arc::new(policy));
    }

    /// Charges `cost` requests to the caller's rate budget.
    pub fn charge(&self, caller: &Caller, cost: u32) -> Result<(), ExchangeError> {
        let policy = self.inner.policy.load();
        self.inner
            .limiter
            .try_acquire(caller, cost, policy.limits())
            .map_err(|retry_after| ExchangeError::RateLimited {
                caller: caller.to_string(),
                retry_after,
            })
    }

    /// The matter, or NOT_FOUND; then the caller must hold a grant for it.
    pub fn granted_matter(&self, caller: &Caller, code: &str) -> Result<&Matter, ExchangeError> {
        let matter = self
            .inner
            .catalogue
            .matter(code)
            .ok_or_else(|| ExchangeError::UnknownMatter(code.to_owned()))?;
        if self.inner.policy.load().may_handle(caller, &matter.code) {
            Ok(matter)
        } else {
            let denial = tongban_core::Denial::MatterNotGranted {
                caller: caller.to_string(),
                matter: code.to_owned(),
            };
            self.inner.metrics.record_denial(denial.reason());
            Err(denial.into())
        }
    }

    /// The whole path (see the module docs) for the evidence requests of one
    /// call — one for a Lookup, several for a Gather: every department is
    /// asked in parallel, then every outcome is audited at once, so the
    /// entries share one group commit instead of queueing behind each other.
    pub async fn request_all(
        &self,
        caller: &Caller,
        requests: &[EvidenceRequest],
        kind: AuditKind,
        deadline: Option<Instant>,
    ) -> Vec<Result<Released, Refused>> {
        let answered = futures::future::join_all(
            requests
                .iter()
                .map(|r| self.answer_and_describe(caller, r, kind, deadline)),
        )
        .await;
        self.audit_and_release(answered).await
    }

    /// [`request_all`](Self::request_all) on its own task, so a caller who
    /// hangs up mid-way cannot stop the outcomes from being audited once a
    /// department has been asked.
    pub async fn request_all_detached(
        &self,
        caller: Caller,
        requests: Vec<EvidenceRequest>,
        kind: AuditKind,
        deadline: Option<Instant>,
    ) -> Vec<Result<Released, Refused>> {
        let count = requests.len();
        let exchange = self.clone();
        let task = tokio::spawn(
            async move {
                exchange
                    .request_all(&caller, &requests, kind, deadline)
                    .await
            }
            .instrument(tracing::Span::current()),
        );
        task.await.unwrap_or_else(|e| {
            tracing::error!(error = %e, "evidence request task failed");
            (0..count)
                .map(|_| {
                    Err(Refused {
                        error: ExchangeError::Internal(
                            "the request failed inside the exchange".into(),
                        ),
                        receipt: None,
                    })
                })
                .collect()
        })
    }

    /// Authorise, route and minimise one request, and describe the outcome
    /// for the audit log.
    #[tracing::instrument(
        name = "exchange.evidence",
        skip_all,
        fields(
            caller = %caller,
            matter = %request.case.matter,
            case_number = %request.case.case_number,
            evidence_type = %request.evidence_type,
            subject = %request.subject,
        )
    )]
    async fn answer_and_describe(
        &self,
        caller: &Caller,
        request: &EvidenceRequest,
        kind: AuditKind,
        deadline: Option<Instant>,
    ) -> Answered {
        let started = Instant::now();
        let time = Utc::now();
        let (department, outcome) = self.answer(caller, request, deadline).await;
        if let Err(e @ (ExchangeError::Denied(_) | ExchangeError::FieldsNotGranted { .. })) =
            &outcome
        {
            self.inner.metrics.record_denial(&e.reason());
        }
        let event = AuditEvent {
            time,
            kind,
            caller: caller.clone(),
            case: request.case.clone(),
            evidence_type: request.evidence_type.clone(),
            department,
            subject: request.subject.clone(),
            outcome_code: match &outcome {
                Ok(_) => 0,
                Err(e) => e.code() as i32,
            },
            outcome_reason: match &outcome {
                Ok(_) => String::new(),
                Err(e) => e.reason(),
            },
            latency: started.elapsed(),
            trace_id: tongban_telemetry::current_trace_id(),
            released: match &outcome {
                Ok(ev) => ev
                    .fields
                    .iter()
                    .map(|f| (f.name.clone(), tongban_proto::convert::field_value_text(f)))
                    .collect(),
                Err(_) => Vec::new(),
            },
        };
        Answered { event, outcome }
    }

    /// Writes the outcomes to the audit log together; releases each only
    /// once its entry is durable.
    async fn audit_and_release(&self, answered: Vec<Answered>) -> Vec<Result<Released, Refused>> {
        let (events, outcomes): (Vec<_>, Vec<_>) =
            answered.into_iter().map(|a| (a.event, a.outcome)).unzip();
        let receipts = self.inner.audit.record_all(events).await;
        let mut receipts = receipts.into_iter();
        outcomes
            .into_iter()
            .map(|outcome| {
                // A sink that answers for fewer events than it was given has
                // written nothing durable for the rest.
                let written = receipts
                    .next()
                    .unwrap_or_else(|| Err("the audit log gave no result for this entry".into()));
                let receipt = match written {
                    Ok(receipt) => receipt,
                    Err(why) => {
                        tracing::error!(error = %why, "audit write failed; answer withheld");
                        return Err(Refused {
                            error: ExchangeError::AuditUnavailable(why),
                            receipt: None,
                        });
                    }
                };
                match outcome {
                    Ok(evidence) => Ok(Released { evidence, receipt }),
                    Err(error) => Err(Refused { error, receipt }),
                }
            })
            .collect()
    }

    /// Authorise, route, minimise. Returns the department (for the audit
    /// entry, empty if the request never got that far) and the outcome.
    async fn answer(
        &self,
        caller: &Caller,
        request: &EvidenceRequest,
        deadline: Option<Instant>,
    ) -> (String, Result<Evidence, ExchangeError>) {
        let catalogue = &self.inner.catalogue;
        let Some(def) = catalogue.evidence(&request.evidence_type) else {
            return (
                String::new(),
                Err(ExchangeError::UnknownEvidenceType(
                    request.evidence_type.clone(),
                )),
            );
        };
        let department = def.department.clone();
        let outcome = async {
            let matter = catalogue
                .matter(&request.case.matter)
                .ok_or_else(|| ExchangeError::UnknownMatter(request.case.matter.clone()))?;
            let release = self
                .inner
                .policy
                .load()
                .authorize(caller, matter, &def.id)?;
            let fields = released_fields(def, &request.fields, &release)?;
            let route = self.inner.departments.get(&def.department).ok_or_else(|| {
                ExchangeError::DepartmentUnavailable {
                    department: def.department.clone(),
                    detail: "no adapter is configured for this department".into(),
                }
            })?;
            let query = QueryRequest {
                case: Some(pb::CaseContext {
                    matter: request.case.matter.clone(),
                    case_number: request.case.case_number.clone(),
                    operator_id: request.case.operator_id.clone(),
                }),
                subject: Some(pb::Subject {
                    id_number: request.subject.as_str().to_owned(),
                    name: request.subject_name.clone().unwrap_or_default(),
                }),
                evidence_type: def.id.clone(),
                fields: Some(prost_types::FieldMask {
                    paths: fields.iter().cloned().collect(),
                }),
                requester: caller.path(),
            };
            let mut evidence = route.query(caller, query, deadline).await?;
            if evidence.evidence_type != def.id || evidence.department != def.department {
                return Err(ExchangeError::BadAnswer {
                    department: def.department.clone(),
                    detail: format!(
                        "answered {}/{} for {}/{}",
                        evidence.department, evidence.evidence_type, def.department, def.id
                    ),
                });
            }
            // Defence in depth: never pass on a field we did not ask for.
            evidence.fields.retain(|f| fields.contains(&f.name));
            Ok(evidence)
        }
        .await;
        (department, outcome)
    }
}

/// The fields to ask for: those requested (or all) that the grant releases.
/// Asking explicitly for a field the grant withholds is refused.
fn released_fields(
    def: &tongban_core::EvidenceTypeDef,
    requested: &[String],
    release: &FieldRelease,
) -> Result<BTreeSet<String>, ExchangeError> {
    if requested.is_empty() {
        return Ok(def
            .fields
            .iter()
            .filter(|f| release.allows(&f.name))
            .map(|f| f.name.clone())
            .collect());
    }
    let unknown: Vec<&str> = requested
        .iter()
        .filter(|r| def.field(r).is_none())
        .map(String::as_str)
        .collect();
    if !unknown.is_empty() {
        return Err(ExchangeError::invalid(
            "fields",
            format!("{} has no field(s) {}", def.id, unknown.join(", ")),
        ));
    }
    let withheld: Vec<String> = requested
        .iter()
        .filter(|r| !release.allows(r))
        .cloned()
        .collect();
    if !withheld.is_empty() {
        return Err(ExchangeError::FieldsNotGranted {
            evidence_type: def.id.clone(),
            fields: withheld,
        });
    }
    Ok(requested.iter().cloned().collect())
}

/// Validates case and subject together, adding to `violations` already
/// found, so the caller learns every problem in one answer.
pub fn validate_case_and_subject(
    case: Option<&pb::CaseContext>,
    subject: Option<&pb::Subject>,
    mut violations: Vec<FieldViolation>,
) -> Result<(CaseContext, IdNumber, Option<String>), ExchangeError> {
    let case = validate_case(case).map_err(|v| violations.extend(v));
    let subject = validate_subject(subject).map_err(|v| violations.extend(v));
    match (case, subject) {
        (Ok(case), Ok((id, name))) if violations.is_empty() => Ok((case, id, name)),
        _ => Err(ExchangeError::InvalidArgument(violations)),
    }
}

/// Validates the mandatory case context.
pub fn validate_case(case: Option<&pb::CaseContext>) -> Result<CaseContext, Vec<FieldViolation>> {
    let Some(case) = case else {
        return Err(vec![FieldViolation::new(
            "case",
            "is required: matter, case_number and operator_id",
        )]);
    };
    CaseContext::new(&case.matter, &case.case_number, &case.operator_id)
}

/// Longest presented name accepted, in characters.
const MAX_NAME_CHARS: usize = 64;

/// Validates the subject: a well-formed identity number and, if given, a
/// plausible name.
pub fn validate_subject(
    subject: Option<&pb::Subject>,
) -> Result<(IdNumber, Option<String>), Vec<FieldViolation>> {
    let Some(subject) = subject else {
        return Err(vec![FieldViolation::new("subject", "is required")]);
    };
    let mut violations = Vec::new();
    let id = match IdNumber::parse(subject.id_number.trim()) {
        Ok(id) => Some(id),
        Err(e) => {
            violations.push(FieldViolation::new(
                "subject.id_number",
                format!(
                    "not a valid resident identity number ({} check failed): {e}",
                    e.check()
                ),
            ));
            None
        }
    };
    let name = subject.name.trim();
    if name.chars().count() > MAX_NAME_CHARS || name.chars().any(char::is_control) {
        violations.push(FieldViolation::new(
            "subject.name",
            format!("must be at most {MAX_NAME_CHARS} characters without control characters"),
        ));
    }
    match id {
        Some(id) if violations.is_empty() => Ok((id, (!name.is_empty()).then(|| name.to_owned()))),
        _ => Err(violations),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_validation_names_the_check() {
        let v = validate_subject(Some(&pb::Subject {
            id_number: "110105194912310021".into(),
            name: String::new(),
        }))
        .unwrap_err();
        assert_eq!(v[0].field, "subject.id_number");
        assert!(
            v[0].description.contains("checksum check failed"),
            "{}",
            v[0].description
        );
        let (id, name) = validate_subject(Some(&pb::Subject {
            id_number: "11010519491231002x".into(),
            name: " 李四 ".into(),
        }))
        .unwrap();
        assert_eq!(id.as_str(), "11010519491231002X");
        assert_eq!(name.as_deref(), Some("李四"));
        assert!(validate_subject(None).is_err());
    }

    #[test]
    fn field_release_rules() {
        let cat = Catalogue::embedded();
        let def = cat.evidence("hrss.unemployment").unwrap();
        let only: FieldRelease =
            FieldRelease::Only(["eligible".to_owned(), "reason".to_owned()].into());
        let all = released_fields(def, &[], &FieldRelease::All).unwrap();
        assert_eq!(all.len(), def.fields.len());
        let stripped = released_fields(def, &[], &only).unwrap();
        assert_eq!(
            stripped.into_iter().collect::<Vec<_>>(),
            ["eligible", "reason"]
        );
        let asked = released_fields(def, &["insured_months".into()], &FieldRelease::All).unwrap();
        assert_eq!(asked.len(), 1);
        assert!(matches!(
            released_fields(def, &["insured_months".into()], &only),
            Err(ExchangeError::FieldsNotGranted { .. })
        ));
        assert!(matches!(
            released_fields(def, &["salary".into()], &FieldRelease::All),
            Err(ExchangeError::InvalidArgument(_))
        ));
    }
}
