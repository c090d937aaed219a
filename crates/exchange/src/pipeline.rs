//! The request path. Every call that asks for personal data — a `Lookup`,
//! a `Gather` — goes through [`Exchange::lookup`] or [`Exchange::gather`],
//! which read top to bottom:
//!
//! 1. the caller is authenticated by the transport, against the call's one
//!    policy snapshot ([`Exchange::begin`]; see `auth.rs`);
//! 2. the request is validated ([`validate_case`], [`validate_subject`],
//!    codes);
//! 3. the caller's rate is charged;
//! 4. the policy authorises this caller, matter and evidence type and says
//!    which fields may be released (deny by default, purpose-bound);
//! 5. the department is asked for exactly those fields, within the deadline;
//! 6. the answer is checked and minimised again;
//! 7. the outcome — answered, refused or failed, at whichever step — is
//!    written to the audit log, and nothing leaves before that write is
//!    durable.
//!
//! A refusal at steps 2–4 is audited like any other outcome
//! ([`Exchange::refuse`]); so is a request too large to decode (see
//! `size_guard.rs`).

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

use crate::auth::Authenticator;
use crate::error::{AuditSinkError, ExchangeError};
use crate::limits::{RateLimiter, RefusalPacer};
use crate::routing::Departments;

/// What the audit log is told about one evidence request, or one refused
/// call. Text is as the caller sent it when the call was refused before
/// validation; the log bounds and escapes every field it stores.
#[derive(Debug, Clone)]
pub struct AuditEvent {
    pub time: DateTime<Utc>,
    pub kind: AuditKind,
    pub caller: Caller,
    pub matter: String,
    pub case_number: String,
    pub operator: String,
    pub evidence_type: String,
    pub department: String,
    /// None when the request named no valid subject.
    pub subject: Option<IdNumber>,
    /// gRPC code of the outcome (0 = answered).
    pub outcome_code: i32,
    /// Machine reason for a refusal or failure, empty when answered.
    pub outcome_reason: String,
    pub latency: Duration,
    pub trace_id: String,
    /// Released fields as (name, value) pairs, for the released-fields hash.
    pub released: Vec<(String, String)>,
    /// The version of the policy that decided the call.
    pub policy_version: String,
    /// What an administrator's call did; empty for evidence requests.
    pub detail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditKind {
    Lookup,
    GatherItem,
    /// An administrator's call (or a refused attempt at one).
    AdminAction,
}

/// A policy that took effect, for the audit log.
#[derive(Debug, Clone)]
pub struct PolicyChange {
    pub time: DateTime<Utc>,
    /// Where it came from (the file).
    pub source: String,
    pub version: String,
    /// The version it replaced; None at start-up.
    pub previous: Option<String>,
    /// Permission lines added and removed (see `Policy::permissions`).
    pub added: Vec<String>,
    pub removed: Vec<String>,
}

/// One result per event, in the events' order: the receipt of its durable
/// entry, or why it could not be written.
pub type AuditFuture<'a> =
    Pin<Box<dyn Future<Output = Vec<Result<Option<AuditReceipt>, AuditSinkError>>> + Send + 'a>>;

/// Done once durable (a policy change) or ready (a probe).
pub type ProbeFuture<'a> = Pin<Box<dyn Future<Output = Result<(), AuditSinkError>> + Send + 'a>>;

/// Where audit events go. `record_all` must not return before the events
/// are durable, and writes one call's events together (one commit, not one
/// per event); an error means nothing of that event may be released.
pub trait AuditSink: Send + Sync + std::fmt::Debug {
    fn record_all(&self, events: Vec<AuditEvent>) -> AuditFuture<'_>;

    /// Records that a policy took effect; returns once durable.
    fn record_policy_change(&self, change: PolicyChange) -> ProbeFuture<'_>;

    /// Whether the sink could record now (the health service's readiness);
    /// the reason when not.
    fn probe(&self) -> ProbeFuture<'_> {
        Box::pin(async { Ok(()) })
    }
}

/// One call as the exchange handles it: who is calling, under which policy,
/// until when, in which trace. Built once per call by [`Exchange::begin`],
/// so the whole call is decided by one policy snapshot even if the policy
/// is reloaded midway, and every entry it leaves names the same trace.
#[derive(Debug, Clone)]
pub struct Call {
    pub caller: Caller,
    pub policy: Arc<Policy>,
    pub deadline: Option<Instant>,
    pub started: Instant,
    pub time: DateTime<Utc>,
    /// The trace of the call's server span (shown empty without one).
    pub trace: tongban_telemetry::TraceRef,
}

/// A case as a caller sent it, before validation.
#[derive(Debug, Clone, Default)]
pub struct CaseAsked {
    pub matter: String,
    pub case_number: String,
    pub operator_id: String,
}

/// A subject as a caller sent it, before validation.
#[derive(Debug, Clone, Default)]
pub struct SubjectAsked {
    pub id_number: String,
    pub name: String,
}

/// A `Lookup` as asked.
#[derive(Debug, Clone, Default)]
pub struct LookupAsked {
    pub case: Option<CaseAsked>,
    pub subject: Option<SubjectAsked>,
    pub evidence_type: String,
    /// Fields asked for; empty means all released fields.
    pub fields: Vec<String>,
}

/// A `Gather` as asked.
#[derive(Debug, Clone, Default)]
pub struct GatherAsked {
    pub case: Option<CaseAsked>,
    pub subject: Option<SubjectAsked>,
    /// Empty means every evidence type the matter needs.
    pub evidence_types: Vec<String>,
}

/// A `Gather`'s outcome: the matter and one result per evidence type, in
/// the order asked.
#[derive(Debug)]
pub struct Gathered {
    pub matter: String,
    pub items: Vec<(String, Result<Released, Refused>)>,
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
    pacer: RefusalPacer,
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
                pacer: RefusalPacer::default(),
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

    /// Puts a new policy in force for every call that starts afterwards,
    /// once the change is durably in the audit log (a change that cannot be
    /// recorded does not take effect).
    pub async fn replace_policy(&self, policy: Policy, source: &str) -> Result<(), AuditSinkError> {
        let previous = self.policy();
        if previous.version() == policy.version() {
            return Ok(());
        }
        let (old, new) = (previous.permissions(), policy.permissions());
        let change = PolicyChange {
            time: Utc::now(),
            source: source.to_owned(),
            version: policy.version().to_owned(),
            previous: Some(previous.version().to_owned()),
            added: new.difference(&old).cloned().collect(),
            removed: old.difference(&new).cloned().collect(),
        };
        self.inner.audit.record_policy_change(change).await?;
        self.inner.policy.store(Arc::new(policy));
        Ok(())
    }

    /// Records the policy in force at start-up.
    pub async fn record_initial_policy(&self, source: &str) -> Result<(), AuditSinkError> {
        let policy = self.policy();
        self.inner
            .audit
            .record_policy_change(PolicyChange {
                time: Utc::now(),
                source: source.to_owned(),
                version: policy.version().to_owned(),
                previous: None,
                added: policy.permissions().into_iter().collect(),
                removed: Vec::new(),
            })
            .await
    }

    /// Starts a call: one policy snapshot, the caller authenticated against
    /// it, the deadline. Unauthenticated calls are refused here, unaudited:
    /// there is nobody to attribute them to (mutual TLS refuses them at the
    /// handshake already). The size guard begins every call before its body
    /// is read and leaves the `Call` in the request's extensions; handlers
    /// take that one, so a call is decided by the snapshot it began with.
    pub fn begin(
        &self,
        authenticate: &Authenticator,
        extensions: &tonic::Extensions,
        deadline: Option<Instant>,
    ) -> Result<Call, ExchangeError> {
        if let Some(call) = extensions.get::<Call>() {
            return Ok(call.clone());
        }
        let policy = self.policy();
        let caller = authenticate(extensions, &policy)?;
        Ok(Call {
            caller,
            policy,
            deadline,
            started: Instant::now(),
            time: Utc::now(),
            trace: tongban_telemetry::current_trace(),
        })
    }

    /// Charges `cost` requests to the caller's rate budget.
    pub fn charge(&self, call: &Call, cost: u32) -> Result<(), ExchangeError> {
        self.inner
            .limiter
            .try_acquire(&call.caller, cost, call.policy.limits())
            .map_err(|retry_after| ExchangeError::RateLimited {
                caller: call.caller.to_string(),
                retry_after,
            })
    }

    /// The matter, or NOT_FOUND; then the caller must hold a grant for it.
    pub fn granted_matter(&self, call: &Call, code: &str) -> Result<&Matter, ExchangeError> {
        let matter = self
            .inner
            .catalogue
            .matter(code)
            .ok_or_else(|| ExchangeError::UnknownMatter(code.to_owned()))?;
        if call.policy.may_handle(&call.caller, &matter.code) {
            Ok(matter)
        } else {
            let denial = tongban_core::Denial::MatterNotGranted {
                caller: call.caller.to_string(),
                matter: code.to_owned(),
            };
            self.inner.metrics.record_denial(denial.reason());
            Err(denial.into())
        }
    }

    /// Waits until a refusal of this call's caller may be recorded (see
    /// `RefusalPacer`); `Err` when the call's deadline passed first, and
    /// then the refusal is not recorded.
    pub async fn wait_refusal_turn(&self, call: &Call) -> Result<(), ExchangeError> {
        let limits = call.policy.limits();
        // Stop waiting with a tenth of the caller's time left, so the answer
        // reaches it before its own timeout does.
        let deadline = call.deadline.map(|deadline| {
            let budget = deadline.saturating_duration_since(call.started);
            tokio::time::Instant::from_std(deadline - budget / 10)
        });
        if self
            .inner
            .pacer
            .wait_turn(&call.caller, limits, deadline)
            .await
        {
            Ok(())
        } else {
            tracing::debug!(caller = %call.caller, "refusal not recorded: its deadline passed while it waited its turn");
            Err(ExchangeError::RefusalsPaced {
                per_second: limits.refusals_per_second,
            })
        }
    }

    /// A `Lookup`: validate, charge, then the evidence path.
    pub async fn lookup(&self, call: Call, asked: LookupAsked) -> Result<Released, Refused> {
        let request = match validate_lookup(&asked) {
            Ok(request) => request,
            Err(error) => {
                let facts = RefusalFacts::from(&asked);
                return Err(self.refuse(&call, AuditKind::Lookup, &facts, error).await);
            }
        };
        if let Err(error) = self.charge(&call, 1) {
            let facts = RefusalFacts::of_request(&request);
            return Err(self.refuse(&call, AuditKind::Lookup, &facts, error).await);
        }
        self.request_all_detached(call, vec![request], AuditKind::Lookup)
            .await
            .pop()
            .unwrap_or_else(|| {
                Err(Refused {
                    error: ExchangeError::Internal("no outcome for the request".into()),
                    receipt: None,
                })
            })
    }

    /// A `Gather`: validate, check the matter is granted and the evidence
    /// types are the matter's, charge one per evidence type, then the
    /// evidence path for each, in parallel.
    pub async fn gather(&self, call: Call, asked: GatherAsked) -> Result<Gathered, Refused> {
        let (matter, requests) = match self.validate_gather(&call, &asked) {
            Ok(valid) => valid,
            Err(error) => {
                let facts = RefusalFacts::from(&asked);
                return Err(self
                    .refuse(&call, AuditKind::GatherItem, &facts, error)
                    .await);
            }
        };
        let cost = u32::try_from(requests.len()).unwrap_or(u32::MAX);
        if let Err(error) = self.charge(&call, cost) {
            let facts = RefusalFacts::from(&asked);
            return Err(self
                .refuse(&call, AuditKind::GatherItem, &facts, error)
                .await);
        }
        let evidence_types: Vec<String> =
            requests.iter().map(|r| r.evidence_type.clone()).collect();
        let outcomes = self
            .request_all_detached(call, requests, AuditKind::GatherItem)
            .await;
        Ok(Gathered {
            matter,
            items: evidence_types.into_iter().zip(outcomes).collect(),
        })
    }

    fn validate_gather(
        &self,
        call: &Call,
        asked: &GatherAsked,
    ) -> Result<(String, Vec<EvidenceRequest>), ExchangeError> {
        let mut violations = Vec::new();
        let max = call.policy.limits().max_gather_evidence;
        if asked.evidence_types.len() > max {
            violations.push(FieldViolation::new(
                "evidence_types",
                format!(
                    "asks for {} evidence types, at most {max} per Gather",
                    asked.evidence_types.len()
                ),
            ));
        } else {
            for (i, e) in asked.evidence_types.iter().enumerate() {
                tongban_core::case::check_code(&format!("evidence_types[{i}]"), e, &mut violations);
            }
            let unique: BTreeSet<&String> = asked.evidence_types.iter().collect();
            if unique.len() != asked.evidence_types.len() {
                violations.push(FieldViolation::new(
                    "evidence_types",
                    "lists an evidence type twice",
                ));
            }
        }
        let (case, subject, subject_name) =
            validate_case_and_subject(asked.case.as_ref(), asked.subject.as_ref(), violations)?;
        let matter = self.granted_matter(call, &case.matter)?;
        let evidence_types = if asked.evidence_types.is_empty() {
            matter.evidence.clone()
        } else {
            if let Some(unknown) = asked
                .evidence_types
                .iter()
                .find(|e| self.inner.catalogue.evidence(e).is_none())
            {
                return Err(ExchangeError::UnknownEvidenceType(unknown.clone()));
            }
            asked.evidence_types.clone()
        };
        let matter_code = matter.code.clone();
        let requests = evidence_types
            .into_iter()
            .map(|evidence_type| EvidenceRequest {
                case: case.clone(),
                subject: subject.clone(),
                subject_name: subject_name.clone(),
                evidence_type,
                fields: Vec::new(),
            })
            .collect();
        Ok((matter_code, requests))
    }

    /// Audits a call refused before any department was asked, and returns
    /// the refusal with the receipt of its entry. If the entry cannot be
    /// written the caller learns that instead (nothing is released either
    /// way).
    pub async fn refuse(
        &self,
        call: &Call,
        kind: AuditKind,
        facts: &RefusalFacts,
        error: ExchangeError,
    ) -> Refused {
        if let Err(paced) = self.wait_refusal_turn(call).await {
            return Refused {
                error: paced,
                receipt: None,
            };
        }
        // Denials were counted where they were decided (`granted_matter`).
        let event = AuditEvent {
            time: call.time,
            kind,
            caller: call.caller.clone(),
            matter: facts.matter.clone(),
            case_number: facts.case_number.clone(),
            operator: facts.operator.clone(),
            department: self
                .inner
                .catalogue
                .evidence(&facts.evidence_type)
                .map(|d| d.department.clone())
                .unwrap_or_default(),
            evidence_type: facts.evidence_type.clone(),
            subject: facts.subject.clone(),
            outcome_code: error.code() as i32,
            outcome_reason: error.reason().into_owned(),
            latency: call.started.elapsed(),
            trace_id: call.trace.to_string(),
            released: Vec::new(),
            policy_version: call.policy.version().to_owned(),
            detail: facts.detail.clone(),
        };
        let written = self.inner.audit.record_all(vec![event]).await.pop();
        match written {
            Some(Ok(receipt)) => Refused { error, receipt },
            Some(Err(why)) => {
                tracing::error!(error = %why, "cannot audit a refusal; answering UNAVAILABLE");
                Refused {
                    error: why.into(),
                    receipt: None,
                }
            }
            None => Refused {
                error: AuditSinkError::NoResult.into(),
                receipt: None,
            },
        }
    }

    /// The evidence path (see the module docs) for the validated requests
    /// of one call — one for a Lookup, several for a Gather: every
    /// department is asked in parallel, then every outcome is audited at
    /// once, so the entries share one group commit instead of queueing
    /// behind each other.
    pub async fn request_all(
        &self,
        call: &Call,
        requests: &[EvidenceRequest],
        kind: AuditKind,
    ) -> Vec<Result<Released, Refused>> {
        let answered = futures::future::join_all(
            requests
                .iter()
                .map(|r| self.answer_and_describe(call, r, kind)),
        )
        .await;
        self.audit_and_release(answered).await
    }

    /// [`request_all`](Self::request_all) on its own task, so a caller who
    /// hangs up mid-way cannot stop the outcomes from being audited once a
    /// department has been asked.
    async fn request_all_detached(
        &self,
        call: Call,
        requests: Vec<EvidenceRequest>,
        kind: AuditKind,
    ) -> Vec<Result<Released, Refused>> {
        let count = requests.len();
        let exchange = self.clone();
        let task = tokio::spawn(
            async move { exchange.request_all(&call, &requests, kind).await }
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
            caller = %call.caller,
            matter = %request.case.matter,
            case_number = %request.case.case_number,
            evidence_type = %request.evidence_type,
            subject = %request.subject,
        )
    )]
    async fn answer_and_describe(
        &self,
        call: &Call,
        request: &EvidenceRequest,
        kind: AuditKind,
    ) -> Answered {
        let started = Instant::now();
        let time = Utc::now();
        let (department, outcome) = self.answer(call, request).await;
        if let Err(e @ (ExchangeError::Denied(_) | ExchangeError::FieldsNotGranted { .. })) =
            &outcome
        {
            self.inner.metrics.record_denial(&e.reason());
        }
        let event = AuditEvent {
            time,
            kind,
            caller: call.caller.clone(),
            matter: request.case.matter.clone(),
            case_number: request.case.case_number.clone(),
            operator: request.case.operator_id.clone(),
            evidence_type: request.evidence_type.clone(),
            department,
            subject: Some(request.subject.clone()),
            outcome_code: match &outcome {
                Ok(_) => 0,
                Err(e) => e.code() as i32,
            },
            outcome_reason: match &outcome {
                Ok(_) => String::new(),
                Err(e) => e.reason().into_owned(),
            },
            latency: started.elapsed(),
            trace_id: call.trace.to_string(),
            released: match &outcome {
                Ok(ev) => ev
                    .fields
                    .iter()
                    .map(|f| (f.name.clone(), tongban_proto::convert::field_value_text(f)))
                    .collect(),
                Err(_) => Vec::new(),
            },
            policy_version: call.policy.version().to_owned(),
            detail: String::new(),
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
                let written = receipts.next().unwrap_or(Err(AuditSinkError::NoResult));
                let receipt = match written {
                    Ok(receipt) => receipt,
                    Err(why) => {
                        tracing::error!(error = %why, "audit write failed; answer withheld");
                        return Err(Refused {
                            error: why.into(),
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
        call: &Call,
        request: &EvidenceRequest,
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
            let release = call.policy.authorize(&call.caller, matter, &def.id)?;
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
                    credit_code: String::new(),
                    role: String::new(),
                }),
                evidence_type: def.id.clone(),
                fields: Some(prost_types::FieldMask {
                    paths: fields.iter().cloned().collect(),
                }),
                requester: call.caller.path(),
                related: Vec::new(),
            };
            let mut evidence = route.query(&call.caller, query, call.deadline).await?;
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
/// Asking explicitly for a field the grant withholds is refused, and so is a
/// request that would release no field at all: the department is always
/// sent a non-empty field mask (to an adapter an empty mask means "every
/// field"), so it never returns more than the grant releases.
fn released_fields(
    def: &tongban_core::EvidenceTypeDef,
    requested: &[String],
    release: &FieldRelease,
) -> Result<BTreeSet<String>, ExchangeError> {
    if requested.is_empty() {
        let granted: BTreeSet<String> = def
            .fields
            .iter()
            .filter(|f| release.allows(&f.name))
            .map(|f| f.name.clone())
            .collect();
        if granted.is_empty() {
            return Err(ExchangeError::FieldsNotGranted {
                evidence_type: def.id.clone(),
                fields: def.fields.iter().map(|f| f.name.clone()).collect(),
            });
        }
        return Ok(granted);
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

/// What the audit log records of a call refused before it was split into
/// evidence requests.
#[derive(Debug, Clone, Default)]
pub struct RefusalFacts {
    pub matter: String,
    pub case_number: String,
    pub operator: String,
    /// The evidence type asked for; a Gather's list joined with commas.
    pub evidence_type: String,
    pub subject: Option<IdNumber>,
    /// What was attempted, where the other fields do not say it.
    pub detail: String,
}

impl RefusalFacts {
    fn of_request(request: &EvidenceRequest) -> Self {
        Self {
            matter: request.case.matter.clone(),
            case_number: request.case.case_number.clone(),
            operator: request.case.operator_id.clone(),
            evidence_type: request.evidence_type.clone(),
            subject: Some(request.subject.clone()),
            detail: String::new(),
        }
    }

    fn asked(case: Option<&CaseAsked>, subject: Option<&SubjectAsked>, evidence: String) -> Self {
        let case = case.cloned().unwrap_or_default();
        Self {
            matter: case.matter,
            case_number: case.case_number,
            operator: case.operator_id,
            evidence_type: evidence,
            subject: subject.and_then(|s| IdNumber::parse(s.id_number.trim()).ok()),
            detail: String::new(),
        }
    }
}

impl From<&LookupAsked> for RefusalFacts {
    fn from(asked: &LookupAsked) -> Self {
        Self::asked(
            asked.case.as_ref(),
            asked.subject.as_ref(),
            asked.evidence_type.clone(),
        )
    }
}

impl From<&GatherAsked> for RefusalFacts {
    fn from(asked: &GatherAsked) -> Self {
        Self::asked(
            asked.case.as_ref(),
            asked.subject.as_ref(),
            asked.evidence_types.join(","),
        )
    }
}

/// Validates a Lookup: the case, the subject, the evidence type and field
/// names (codes only: they reach the audit log), all at once.
pub fn validate_lookup(asked: &LookupAsked) -> Result<EvidenceRequest, ExchangeError> {
    let mut violations = Vec::new();
    tongban_core::case::check_code("evidence_type", &asked.evidence_type, &mut violations);
    for (i, field) in asked.fields.iter().enumerate() {
        tongban_core::case::check_code(&format!("fields.paths[{i}]"), field, &mut violations);
    }
    let (case, subject, subject_name) =
        validate_case_and_subject(asked.case.as_ref(), asked.subject.as_ref(), violations)?;
    Ok(EvidenceRequest {
        case,
        subject,
        subject_name,
        evidence_type: asked.evidence_type.clone(),
        fields: asked.fields.clone(),
    })
}

/// Validates case and subject together, adding to `violations` already
/// found, so the caller learns every problem in one answer.
pub fn validate_case_and_subject(
    case: Option<&CaseAsked>,
    subject: Option<&SubjectAsked>,
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
pub fn validate_case(case: Option<&CaseAsked>) -> Result<CaseContext, Vec<FieldViolation>> {
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
    subject: Option<&SubjectAsked>,
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
        let v = validate_subject(Some(&SubjectAsked {
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
        let (id, name) = validate_subject(Some(&SubjectAsked {
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
