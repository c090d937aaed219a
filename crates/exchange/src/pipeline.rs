//! The request path. Every call that asks for personal data — a `Lookup`,
//! a `Gather` — goes through [`Exchange::lookup`] or [`Exchange::gather`],
//! which read top to bottom:
//!
//! 1. the caller is authenticated by the transport, against the call's one
//!    policy snapshot ([`Exchange::begin`]; see `auth.rs`);
//! 2. the request is validated ([`validate_case`], [`validate_subject`],
//!    codes), and each subject's role against the matter's roles
//!    ([`Exchange::validate_gather`], [`check_role`]);
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

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use chrono::{DateTime, Utc};
use tongban_core::{
    Caller, CaseContext, Catalogue, CreditCode, FieldRelease, FieldViolation, IdNumber, Matter,
    Policy, Role, SubjectId, SubjectKind,
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
    /// None when the request named no valid subject. The log stores its
    /// pseudonym (`SubjectId::pseudonym_input`), so a person's entries and
    /// an organisation's are found alike.
    pub subject: Option<SubjectId>,
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
    pub credit_code: String,
    pub name: String,
    /// Empty: the matter's primary role.
    pub role: String,
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
    /// One subject (in the matter's primary role, or the role it names)…
    pub subject: Option<SubjectAsked>,
    /// …or several, each in its role: exactly one of the two.
    pub subjects: Vec<SubjectAsked>,
    /// Empty means every evidence type the matter needs.
    pub evidence_types: Vec<String>,
}

/// A `Gather`'s outcome: the matter and one result per subject and
/// evidence type — subjects in the order asked, for each the evidence its
/// role needs.
#[derive(Debug)]
pub struct Gathered {
    pub matter: String,
    pub items: Vec<GatheredItem>,
}

/// One item of a `Gather`.
#[derive(Debug)]
pub struct GatheredItem {
    pub evidence_type: String,
    /// The subject's position among those asked (0 for a single subject).
    pub subject_index: u32,
    pub role: Role,
    pub outcome: Result<Released, Refused>,
}

/// Most subjects one Gather may name before any is validated: every role
/// at its largest maximum. The matter's own maxima are checked afterwards.
pub const MAX_GATHER_SUBJECTS: usize =
    tongban_core::catalogue::MAX_SUBJECTS_PER_ROLE as usize * Role::ALL.len();

/// A validated evidence request.
#[derive(Debug, Clone)]
pub struct EvidenceRequest {
    pub case: CaseContext,
    pub subject: SubjectId,
    /// The subject's role in the case; `None` for a Lookup that named none
    /// (the matter's primary role, resolved against the matter).
    pub role: Option<Role>,
    /// Position of the subject among a Gather's subjects (0 otherwise).
    pub subject_index: u32,
    /// The case's legal representative, passed to the department only for
    /// evidence that compares against it (`market.registration`).
    pub legal_representative: Option<IdNumber>,
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
        // Charged per item: a household's Gather costs what asking about
        // each member would.
        let cost = u32::try_from(requests.len()).unwrap_or(u32::MAX);
        if let Err(error) = self.charge(&call, cost) {
            let facts = RefusalFacts::from(&asked);
            return Err(self
                .refuse(&call, AuditKind::GatherItem, &facts, error)
                .await);
        }
        let shapes: Vec<(String, u32, Role)> = requests
            .iter()
            .map(|r| {
                (
                    r.evidence_type.clone(),
                    r.subject_index,
                    r.role.unwrap_or(Role::Applicant),
                )
            })
            .collect();
        let outcomes = self
            .request_all_detached(call, requests, AuditKind::GatherItem)
            .await;
        Ok(Gathered {
            matter,
            items: shapes
                .into_iter()
                .zip(outcomes)
                .map(
                    |((evidence_type, subject_index, role), outcome)| GatheredItem {
                        evidence_type,
                        subject_index,
                        role,
                        outcome,
                    },
                )
                .collect(),
        })
    }

    /// Validates a Gather: its shape and every subject (all problems in one
    /// answer), then the matter's grant, then each subject's role against
    /// the matter's roles, and expands it to one request per subject and
    /// evidence type its role needs (narrowed by `evidence_types`).
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
        // The subjects as (field prefix, subject asked).
        let listed: Vec<(String, &SubjectAsked)> = match (&asked.subject, &asked.subjects[..]) {
            (Some(_), [_, ..]) => {
                violations.push(FieldViolation::new(
                    "subjects",
                    "give either subject or subjects, not both",
                ));
                Vec::new()
            }
            (Some(one), []) => vec![("subject".to_owned(), one)],
            (None, []) => {
                violations.push(FieldViolation::new(
                    "subject",
                    "is required (or subjects, each with its role)",
                ));
                Vec::new()
            }
            (None, many) if many.len() > MAX_GATHER_SUBJECTS => {
                violations.push(FieldViolation::new(
                    "subjects",
                    format!(
                        "names {} subjects, at most {MAX_GATHER_SUBJECTS} per Gather",
                        many.len()
                    ),
                ));
                Vec::new()
            }
            (None, many) => many
                .iter()
                .enumerate()
                .map(|(i, s)| (format!("subjects[{i}]"), s))
                .collect(),
        };
        let case = validate_case(asked.case.as_ref()).map_err(|v| violations.extend(v));
        let mut subjects = Vec::with_capacity(listed.len());
        for (prefix, subject) in &listed {
            match validate_subject_at(prefix, Some(subject)) {
                Ok(valid) => subjects.push(valid),
                Err(v) => violations.extend(v),
            }
        }
        // The same person or enterprise twice would be asked about twice
        // and counted twice against a role's maximum.
        let mut seen: BTreeMap<&SubjectId, usize> = BTreeMap::new();
        for (i, subject) in subjects.iter().enumerate() {
            if let Some(first) = seen.insert(&subject.id, i) {
                violations.push(FieldViolation::new(
                    format!("subjects[{i}]"),
                    format!("names the same subject as subjects[{first}]"),
                ));
            }
        }
        let case = match case {
            Ok(case) if violations.is_empty() => case,
            _ => return Err(ExchangeError::InvalidArgument(violations)),
        };
        let matter = self.granted_matter(call, &case.matter)?;
        let roles = resolve_roles(matter, &listed, &subjects)?;
        if let Some(unknown) = asked
            .evidence_types
            .iter()
            .find(|e| self.inner.catalogue.evidence(e).is_none())
        {
            return Err(ExchangeError::UnknownEvidenceType(unknown.clone()));
        }
        let legal_representative = subjects
            .iter()
            .zip(&roles)
            .find(|(_, role)| **role == Role::LegalRepresentative)
            .and_then(|(s, _)| s.id.person().cloned());
        let mut requests = Vec::new();
        for (index, (subject, role)) in subjects.into_iter().zip(roles).enumerate() {
            let need = matter
                .role(role)
                .map(|r| r.evidence.clone())
                .unwrap_or_default();
            let evidence_types: Vec<String> = if asked.evidence_types.is_empty() {
                need
            } else {
                // Asked-for types this role needs, in the order asked; the
                // primary subject also carries those the matter does not
                // need at all, so each is refused (and audited) as such.
                asked
                    .evidence_types
                    .iter()
                    .filter(|e| {
                        need.contains(e) || (role == matter.primary_role().role && !matter.needs(e))
                    })
                    .cloned()
                    .collect()
            };
            for evidence_type in evidence_types {
                requests.push(EvidenceRequest {
                    case: case.clone(),
                    subject: subject.id.clone(),
                    role: Some(role),
                    subject_index: u32::try_from(index).unwrap_or(u32::MAX),
                    // Cloned only for the evidence that compares it.
                    legal_representative: self
                        .inner
                        .catalogue
                        .evidence(&evidence_type)
                        .is_some_and(compares_legal_representative)
                        .then(|| legal_representative.clone())
                        .flatten(),
                    subject_name: subject.name.clone(),
                    evidence_type,
                    fields: Vec::new(),
                });
            }
        }
        if requests.len() > max {
            return Err(ExchangeError::invalid(
                "subjects",
                format!(
                    "needs {} evidence items for these subjects, at most {max} per Gather (policy limits.max_gather_evidence)",
                    requests.len()
                ),
            ));
        }
        if requests.is_empty() {
            return Err(ExchangeError::invalid(
                "evidence_types",
                "none of these evidence types is needed about the subjects named",
            ));
        }
        Ok((matter.code.clone(), requests))
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
            // The role is for administrators (it is in the entry's private
            // part, so the v3 leaf encoding is unchanged); the citizen sees
            // the access under their own pseudonym either way.
            detail: request
                .role
                .map(|role| format!("role={role}"))
                .unwrap_or_default(),
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
            let role = check_role(matter, request, def)?;
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
                subject: Some(wire_subject(
                    &request.subject,
                    request.subject_name.as_deref(),
                    role,
                )),
                evidence_type: def.id.clone(),
                fields: Some(prost_types::FieldMask {
                    paths: fields.iter().cloned().collect(),
                }),
                requester: call.caller.path(),
                related: request
                    .legal_representative
                    .iter()
                    .filter(|_| compares_legal_representative(def))
                    .map(|id| {
                        wire_subject(
                            &SubjectId::Person(id.clone()),
                            None,
                            Role::LegalRepresentative,
                        )
                    })
                    .collect(),
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
    /// The subject the entry is about: a refused call is one entry, about
    /// its first valid subject (a Gather's primary subject, in practice).
    pub subject: Option<SubjectId>,
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
            detail: request
                .role
                .map(|role| format!("role={role}"))
                .unwrap_or_default(),
        }
    }

    fn asked<'a>(
        case: Option<&CaseAsked>,
        subjects: impl IntoIterator<Item = &'a SubjectAsked>,
        evidence: String,
    ) -> Self {
        let case = case.cloned().unwrap_or_default();
        let subjects: Vec<&SubjectAsked> = subjects.into_iter().collect();
        let valid = subjects
            .iter()
            .find_map(|s| validate_subject_at("subject", Some(s)).ok());
        Self {
            matter: case.matter,
            case_number: case.case_number,
            operator: case.operator_id,
            evidence_type: evidence,
            detail: match (&valid, subjects.len()) {
                (
                    Some(ValidSubject {
                        role: Some(role), ..
                    }),
                    1,
                ) => format!("role={role}"),
                (_, 0 | 1) => String::new(),
                (_, n) => format!("subjects={n}"),
            },
            subject: valid.map(|v| v.id),
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
        // Bounded: the subjects were not checked yet when this is asked.
        Self::asked(
            asked.case.as_ref(),
            asked
                .subject
                .iter()
                .chain(asked.subjects.iter().take(MAX_GATHER_SUBJECTS)),
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
    let (case, subject) =
        validate_case_and_subject(asked.case.as_ref(), asked.subject.as_ref(), violations)?;
    Ok(EvidenceRequest {
        case,
        subject: subject.id,
        role: subject.role,
        subject_index: 0,
        legal_representative: None,
        subject_name: subject.name,
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
) -> Result<(CaseContext, ValidSubject), ExchangeError> {
    let case = validate_case(case).map_err(|v| violations.extend(v));
    let subject = validate_subject(subject).map_err(|v| violations.extend(v));
    match (case, subject) {
        (Ok(case), Ok(subject)) if violations.is_empty() => Ok((case, subject)),
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

/// A validated subject: who, the name presented, the role named (if any).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidSubject {
    pub id: SubjectId,
    pub name: Option<String>,
    pub role: Option<Role>,
}

/// Validates the subject of a Lookup or a one-subject Gather (fields
/// `subject.…`).
pub fn validate_subject(
    subject: Option<&SubjectAsked>,
) -> Result<ValidSubject, Vec<FieldViolation>> {
    validate_subject_at("subject", subject)
}

/// Validates one subject, naming its fields under `prefix` (`subject` or
/// `subjects[i]`): exactly one of a well-formed identity number and a
/// well-formed credit code, a known role if one is named, and, if given, a
/// plausible name.
pub fn validate_subject_at(
    prefix: &str,
    subject: Option<&SubjectAsked>,
) -> Result<ValidSubject, Vec<FieldViolation>> {
    let Some(subject) = subject else {
        return Err(vec![FieldViolation::new(prefix, "is required")]);
    };
    let mut violations = Vec::new();
    let (id_number, credit_code) = (subject.id_number.trim(), subject.credit_code.trim());
    let id = match (id_number.is_empty(), credit_code.is_empty()) {
        (false, true) => match IdNumber::parse(id_number) {
            Ok(id) => Some(SubjectId::Person(id)),
            Err(e) => {
                violations.push(FieldViolation::new(
                    format!("{prefix}.id_number"),
                    format!(
                        "not a valid resident identity number ({} check failed): {e}",
                        e.check()
                    ),
                ));
                None
            }
        },
        (true, false) => match CreditCode::parse(credit_code) {
            Ok(code) => Some(SubjectId::Organisation(code)),
            Err(e) => {
                violations.push(FieldViolation::new(
                    format!("{prefix}.credit_code"),
                    format!(
                        "not a valid unified social credit code ({} check failed): {e}",
                        e.check()
                    ),
                ));
                None
            }
        },
        (true, true) => {
            violations.push(FieldViolation::new(
                prefix,
                "names no one: give id_number (a person) or credit_code (an organisation)",
            ));
            None
        }
        (false, false) => {
            violations.push(FieldViolation::new(
                prefix,
                "gives both id_number and credit_code; a subject is a person or an organisation",
            ));
            None
        }
    };
    let role = match subject.role.as_str() {
        "" => None,
        name => match Role::parse(name) {
            Some(role) => Some(role),
            None => {
                let shown: String = name.chars().take(MAX_NAME_CHARS).collect();
                violations.push(FieldViolation::new(
                    format!("{prefix}.role"),
                    format!("unknown role {shown:?} (known: {})", Role::names()),
                ));
                None
            }
        },
    };
    let name = subject.name.trim();
    if name.chars().count() > MAX_NAME_CHARS || name.chars().any(char::is_control) {
        violations.push(FieldViolation::new(
            format!("{prefix}.name"),
            format!("must be at most {MAX_NAME_CHARS} characters without control characters"),
        ));
    }
    match id {
        Some(id) if violations.is_empty() => Ok(ValidSubject {
            id,
            name: (!name.is_empty()).then(|| name.to_owned()),
            role,
        }),
        _ => Err(violations),
    }
}

/// Each subject's role in the matter (an unnamed role is the primary one),
/// checked against what the matter declares: every role the matter has,
/// held by the right kind of subject, between its minimum and maximum.
fn resolve_roles(
    matter: &Matter,
    listed: &[(String, &SubjectAsked)],
    subjects: &[ValidSubject],
) -> Result<Vec<Role>, ExchangeError> {
    let mut roles = Vec::with_capacity(subjects.len());
    let mut wrong_kind = Vec::new();
    for ((prefix, _), subject) in listed.iter().zip(subjects) {
        let role = subject.role.unwrap_or(matter.primary_role().role);
        if matter.role(role).is_none() {
            return Err(ExchangeError::RoleNotInMatter {
                matter: matter.code.clone(),
                role,
                roles: matter.roles.iter().map(|r| r.role).collect(),
            });
        }
        if subject.id.kind() != role.kind() {
            wrong_kind.push(FieldViolation::new(
                match role.kind() {
                    SubjectKind::Person => format!("{prefix}.id_number"),
                    SubjectKind::Organisation => format!("{prefix}.credit_code"),
                },
                format!(
                    "role {role} is held by {}; this subject is {}",
                    role.kind().with_article(),
                    subject.id.kind().with_article()
                ),
            ));
        }
        roles.push(role);
    }
    if !wrong_kind.is_empty() {
        return Err(ExchangeError::InvalidArgument(wrong_kind));
    }
    for need in &matter.roles {
        let count = roles.iter().filter(|r| **r == need.role).count();
        let count = u32::try_from(count).unwrap_or(u32::MAX);
        if count > need.max {
            return Err(ExchangeError::TooManySubjects {
                matter: matter.code.clone(),
                role: need.role,
                max: need.max,
                got: count,
            });
        }
        if count < need.min {
            return Err(ExchangeError::MissingRole {
                matter: matter.code.clone(),
                role: need.role,
                min: need.min,
                got: count,
            });
        }
    }
    Ok(roles)
}

/// A Lookup's (or a Gather item's) role in the matter: the one named, or
/// the primary one; the role must be the matter's, held by the right kind
/// of subject, and need the evidence type.
pub fn check_role(
    matter: &Matter,
    request: &EvidenceRequest,
    def: &tongban_core::EvidenceTypeDef,
) -> Result<Role, ExchangeError> {
    let role = request.role.unwrap_or(matter.primary_role().role);
    let Some(need) = matter.role(role) else {
        return Err(ExchangeError::RoleNotInMatter {
            matter: matter.code.clone(),
            role,
            roles: matter.roles.iter().map(|r| r.role).collect(),
        });
    };
    if request.subject.kind() != role.kind() {
        let field = match role.kind() {
            SubjectKind::Person => "subject.id_number",
            SubjectKind::Organisation => "subject.credit_code",
        };
        return Err(ExchangeError::invalid(
            field,
            format!(
                "role {role} is held by {}; this subject is {} (name the role in subject.role)",
                role.kind().with_article(),
                request.subject.kind().with_article()
            ),
        ));
    }
    if !need.needs(&def.id) {
        return Err(ExchangeError::EvidenceNotInRole {
            matter: matter.code.clone(),
            role,
            evidence_type: def.id.clone(),
        });
    }
    Ok(role)
}

/// Evidence that compares the case's legal representative against the
/// register, and so is sent that person's identity number too. Nothing else
/// learns about a case's other subjects.
fn compares_legal_representative(def: &tongban_core::EvidenceTypeDef) -> bool {
    def.compares_with.contains(&Role::LegalRepresentative)
}

/// A subject as a department is sent it.
fn wire_subject(subject: &SubjectId, name: Option<&str>, role: Role) -> pb::Subject {
    let (id_number, credit_code) = match subject {
        SubjectId::Person(id) => (id.as_str().to_owned(), String::new()),
        SubjectId::Organisation(code) => (String::new(), code.as_str().to_owned()),
    };
    pb::Subject {
        id_number,
        credit_code,
        name: name.unwrap_or_default().to_owned(),
        role: role.name().to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_validation_names_the_check() {
        let v = validate_subject(Some(&SubjectAsked {
            id_number: "110105194912310021".into(),
            ..SubjectAsked::default()
        }))
        .unwrap_err();
        assert_eq!(v[0].field, "subject.id_number");
        assert!(
            v[0].description.contains("checksum check failed"),
            "{}",
            v[0].description
        );
        let valid = validate_subject(Some(&SubjectAsked {
            id_number: "11010519491231002x".into(),
            name: " 李四 ".into(),
            ..SubjectAsked::default()
        }))
        .unwrap();
        assert_eq!(valid.id.as_str(), "11010519491231002X");
        assert_eq!(valid.name.as_deref(), Some("李四"));
        assert_eq!(valid.role, None);
        assert!(validate_subject(None).is_err());
    }

    fn person(seq: u16) -> SubjectAsked {
        let id = IdNumber::from_parts(
            "510403",
            chrono::NaiveDate::from_ymd_opt(1980, 1, 1).unwrap(),
            seq,
        )
        .unwrap();
        SubjectAsked {
            id_number: id.as_str().to_owned(),
            ..SubjectAsked::default()
        }
    }

    fn enterprise() -> SubjectAsked {
        SubjectAsked {
            credit_code: CreditCode::with_check("91510400MA6200001")
                .unwrap()
                .as_str()
                .to_owned(),
            role: "enterprise".into(),
            ..SubjectAsked::default()
        }
    }

    fn with_role(mut s: SubjectAsked, role: &str) -> SubjectAsked {
        s.role = role.into();
        s
    }

    #[test]
    fn credit_code_errors_name_the_check_and_field() {
        for (code, check) in [
            ("91510400MA620000", "length"),
            ("91510400MA6200001O", "alphabet"),
            ("91510400MA62000010", "checksum"),
        ] {
            let asked = SubjectAsked {
                credit_code: code.into(),
                ..SubjectAsked::default()
            };
            let v = validate_subject_at("subjects[1]", Some(&asked)).unwrap_err();
            assert_eq!(v.len(), 1, "{v:?}");
            assert_eq!(v[0].field, "subjects[1].credit_code");
            assert!(
                v[0].description
                    .contains(&format!("({check} check failed)")),
                "{code}: {}",
                v[0].description
            );
        }
        let both = SubjectAsked {
            credit_code: enterprise().credit_code,
            ..person(11)
        };
        let v = validate_subject_at("subject", Some(&both)).unwrap_err();
        assert_eq!(v[0].field, "subject");
        let v = validate_subject_at("subject", Some(&SubjectAsked::default())).unwrap_err();
        assert!(v[0].description.contains("names no one"), "{v:?}");
        let v =
            validate_subject_at("subject", Some(&with_role(person(11), "landlord"))).unwrap_err();
        assert_eq!(v[0].field, "subject.role");
        assert!(v[0].description.contains("household-member"), "{v:?}");
        let ok = validate_subject_at("subject", Some(&enterprise())).unwrap();
        assert_eq!(ok.id.kind(), SubjectKind::Organisation);
        assert_eq!(ok.role, Some(Role::Enterprise));
    }

    fn resolve(matter: &str, asked: &[SubjectAsked]) -> Result<Vec<Role>, ExchangeError> {
        let cat = Catalogue::embedded();
        let matter = cat.matter(matter).unwrap();
        let listed: Vec<(String, &SubjectAsked)> = asked
            .iter()
            .enumerate()
            .map(|(i, s)| (format!("subjects[{i}]"), s))
            .collect();
        let valid: Vec<ValidSubject> = asked
            .iter()
            .map(|s| validate_subject_at("s", Some(s)).unwrap())
            .collect();
        resolve_roles(matter, &listed, &valid)
    }

    #[test]
    fn roles_are_checked_against_the_matter() {
        let household = [
            person(11),
            with_role(person(13), "household-member"),
            with_role(person(15), "household-member"),
        ];
        assert_eq!(
            resolve("subsistence-allowance-review", &household).unwrap(),
            [
                Role::Applicant,
                Role::HouseholdMember,
                Role::HouseholdMember
            ]
        );
        let e = resolve("unemployment-benefit", &household).unwrap_err();
        assert!(
            matches!(&e, ExchangeError::RoleNotInMatter { role: Role::HouseholdMember, roles, .. } if roles == &[Role::Applicant]),
            "{e:?}"
        );
        assert_eq!(e.reason(), "ROLE_NOT_IN_MATTER");
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        // The enterprise matter without its legal representative.
        let e = resolve("enterprise-social-insurance-registration", &[enterprise()]).unwrap_err();
        assert!(
            matches!(
                e,
                ExchangeError::MissingRole {
                    role: Role::LegalRepresentative,
                    min: 1,
                    got: 0,
                    ..
                }
            ),
            "{e:?}"
        );
        // Two legal representatives.
        let e = resolve(
            "enterprise-social-insurance-registration",
            &[
                enterprise(),
                with_role(person(11), "legal-representative"),
                with_role(person(13), "legal-representative"),
            ],
        )
        .unwrap_err();
        assert!(
            matches!(e, ExchangeError::TooManySubjects { max: 1, got: 2, .. }),
            "{e:?}"
        );
        // A person in the enterprise's role, an organisation in a person's.
        let e = resolve(
            "enterprise-social-insurance-registration",
            &[
                with_role(person(11), "enterprise"),
                SubjectAsked {
                    role: "legal-representative".into(),
                    ..enterprise()
                },
            ],
        )
        .unwrap_err();
        let ExchangeError::InvalidArgument(v) = e else {
            panic!("{e:?}")
        };
        assert_eq!(v[0].field, "subjects[0].credit_code");
        assert_eq!(v[1].field, "subjects[1].id_number");
        // Ten members: over household-member's maximum of nine.
        let mut many = vec![person(11)];
        many.extend((0..10).map(|i| with_role(person(21 + 2 * i), "household-member")));
        assert!(matches!(
            resolve("subsistence-allowance", &many),
            Err(ExchangeError::TooManySubjects {
                max: 9,
                got: 10,
                ..
            })
        ));
    }

    #[test]
    fn lookup_role_must_need_the_evidence() {
        let cat = Catalogue::embedded();
        let matter = cat.matter("subsistence-allowance").unwrap();
        let def = cat.evidence("civil.marriage").unwrap();
        let valid = validate_subject(Some(&with_role(person(13), "household-member"))).unwrap();
        let request = EvidenceRequest {
            case: CaseContext::new("subsistence-allowance", "A-1", "clerk-1").unwrap(),
            subject: valid.id,
            role: valid.role,
            subject_index: 0,
            legal_representative: None,
            subject_name: None,
            evidence_type: def.id.clone(),
            fields: Vec::new(),
        };
        let e = check_role(matter, &request, def).unwrap_err();
        assert_eq!(e.reason(), "EVIDENCE_NOT_IN_ROLE");
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        let applicant = EvidenceRequest {
            role: None,
            ..request.clone()
        };
        assert_eq!(
            check_role(matter, &applicant, def).unwrap(),
            Role::Applicant
        );
        // An enterprise named without a role in a matter whose primary role
        // is the enterprise: fine; a person there is the wrong kind.
        let matter = cat.matter("enterprise-abnormal-removal").unwrap();
        let def = cat.evidence("market.abnormal").unwrap();
        let e = check_role(
            matter,
            &EvidenceRequest {
                evidence_type: def.id.clone(),
                role: None,
                ..request
            },
            def,
        )
        .unwrap_err();
        assert!(matches!(e, ExchangeError::InvalidArgument(_)), "{e:?}");
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
