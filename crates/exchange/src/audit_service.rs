//! The `Audit` gRPC service: administrators search, report, export, prove
//! and watch (`Watch`, the live feed for SIEMs) the audit log. Reading the log is itself audited: every call — refused or
//! not — becomes an `AdminAction` entry, committed before anything is
//! returned. The log's read side, shared with `Exchange.ProveReceipt`, is
//! [`AuditReader`].
//!
//! Every method works in [`ExchangeError`]s and answers through
//! [`answer`], so each error becomes its status once, with its
//! `google.rpc` details, in `error.rs`.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use prost::Message;
use tokio_stream::Stream;
use tongban_audit::feed::StartError;
use tongban_audit::{
    Cursor, EntryKind, Feed, FeedCursor, FeedEvent, FeedOptions, FeedStart, PageRequest,
    SearchFilter,
};
use tongban_core::{Caller, FieldViolation};
use tongban_proto::v1::audit_server::Audit as AuditApi;
use tongban_proto::v1::{
    self as pb, AdminContext, AuditExportRequest, AuditFilter, AuditRecord, AuditSearchRequest,
    AuditSearchResponse, ConsistencyProofRequest, InclusionProofRequest, ListCheckpointsRequest,
    ListCheckpointsResponse, SubjectReportRequest, SubjectReportResponse, WatchEvent, WatchRequest,
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
    watch_limits: WatchLimits,
    /// Open `Watch` streams per caller.
    watches: Arc<Mutex<HashMap<String, usize>>>,
    /// Becomes true when the node shuts down: open watches end.
    closing: Option<tokio::sync::watch::Receiver<bool>>,
}

/// The bounds of `Audit.Watch`: a slow or hostile watcher holds at most
/// `buffer` events and one store page in memory, and one caller at most
/// `per_caller` streams.
#[derive(Debug, Clone)]
pub struct WatchLimits {
    /// Streams one caller may have open at once.
    pub per_caller: usize,
    /// Events queued per stream for the client; while full, the stream
    /// stops reading the store.
    pub buffer: usize,
    /// Entries read per store query.
    pub page: u32,
    /// Longest wait, while following, before the store is read again for
    /// entries other nodes wrote (this node's commits wake a watch at once).
    pub poll: Duration,
}

impl Default for WatchLimits {
    fn default() -> Self {
        Self {
            per_caller: 4,
            buffer: 64,
            page: tongban_audit::feed::FEED_PAGE,
            poll: Duration::from_secs(1),
        }
    }
}

/// One caller's open watch; counted until dropped (when its stream ends).
struct WatchSlot {
    watches: Arc<Mutex<HashMap<String, usize>>>,
    caller: String,
}

impl WatchSlot {
    fn take(
        watches: &Arc<Mutex<HashMap<String, usize>>>,
        caller: String,
        limit: usize,
    ) -> Option<Self> {
        let mut open = watches.lock().unwrap_or_else(PoisonError::into_inner);
        let count = open.entry(caller.clone()).or_insert(0);
        if *count >= limit {
            return None;
        }
        *count += 1;
        Some(Self {
            watches: watches.clone(),
            caller,
        })
    }
}

impl Drop for WatchSlot {
    fn drop(&mut self) {
        let mut open = self.watches.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.caller) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.caller);
            }
        }
    }
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
            watch_limits: WatchLimits::default(),
            watches: Arc::default(),
            closing: None,
        }
    }

    /// Open watches end with UNAVAILABLE (`NODE_SHUTTING_DOWN`) once this
    /// becomes true, instead of holding the node's drain until its timeout.
    #[must_use]
    pub fn with_closing(mut self, closing: tokio::sync::watch::Receiver<bool>) -> Self {
        self.closing = Some(closing);
        self
    }

    /// The same service with other `Watch` bounds.
    #[must_use]
    pub fn with_watch_limits(mut self, limits: WatchLimits) -> Self {
        self.watch_limits = limits;
        self
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
type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchEvent, Status>> + Send>>;

/// Where a watch starts, from its request alone (the store is asked only
/// once the caller is known to be an administrator).
fn watch_start(req: &WatchRequest) -> Result<FeedStart, ExchangeError> {
    let cursor = req
        .cursor
        .parse::<FeedCursor>()
        .map_err(|e| ExchangeError::invalid("cursor", e.to_string()))?;
    match (req.from_end, cursor.is_empty()) {
        (true, false) => Err(ExchangeError::invalid(
            "from_end",
            "cannot be set with a cursor: start from one or the other",
        )),
        (true, true) => Ok(FeedStart::End),
        (false, _) => Ok(FeedStart::Cursor(cursor)),
    }
}

fn watch_event(event: FeedEvent) -> WatchEvent {
    use pb::watch_event::Event;
    let cursor = event.cursor().to_string();
    let event = match event {
        FeedEvent::Entry { entry, .. } => Event::Entry(record_to_proto(*entry)),
        FeedEvent::Pruned { node, from, to, .. } => Event::Pruned(pb::WatchPruned {
            node,
            from_index: from,
            to_index: to,
        }),
    };
    WatchEvent {
        event: Some(event),
        cursor,
    }
}

/// Resolves once the node is shutting down (never without a signal; a
/// dropped sender counts as shutting down).
async fn node_closing(closing: Option<&mut tokio::sync::watch::Receiver<bool>>) {
    match closing {
        Some(closing) => {
            let _ = closing.wait_for(|&closing| closing).await;
        }
        None => std::future::pending().await,
    }
}

/// Longest part of a cursor quoted in the log entry of a watch.
const MAX_LOGGED_CURSOR: usize = 600;

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

    /// Starts a watch: at most `per_caller` open per caller, logged once
    /// with its start (one entry per call, whatever it then delivers), then
    /// a task pulls the feed into a bounded channel until the client goes
    /// away or (without follow) the feed ends.
    async fn watch_log(
        &self,
        request: Request<WatchRequest>,
    ) -> Result<WatchStream, ExchangeError> {
        let req = request.get_ref();
        let call = self
            .exchange
            .begin(&self.authenticate, request.extensions(), None)?;
        let limit = self.watch_limits.per_caller;
        let Some(slot) = WatchSlot::take(&self.watches, call.caller.to_string(), limit) else {
            let error = ExchangeError::TooManyWatches { limit };
            return Err(self
                .reject(&request, req.admin.as_ref(), "watch", error)
                .await);
        };
        let start = match watch_start(req) {
            Ok(start) => start,
            Err(e) => return Err(self.reject(&request, req.admin.as_ref(), "watch", e).await),
        };
        let from = match &start {
            FeedStart::End => "end".to_owned(),
            FeedStart::Cursor(c) if c.is_empty() => "start".to_owned(),
            FeedStart::Cursor(c) => {
                let text = c.to_string();
                match text.char_indices().nth(MAX_LOGGED_CURSOR) {
                    Some((cut, _)) => format!("{}…", &text[..cut]),
                    None => text,
                }
            }
        };
        let limits = &self.watch_limits;
        let options = FeedOptions {
            follow: req.follow,
            page: limits.page,
            poll: limits.poll,
            wake: Some(self.reader.log().subscribe_commits()),
        };
        // The store is read for an administrator only: whether a node or a
        // position exists is nobody else's business (`admit` refuses them).
        // Opened before the watch's own entry is logged, so a following
        // watch delivers that entry too, and one that does not follow ends
        // before it.
        let mut feed = None;
        if call.policy.require_admin(&call.caller).is_ok() {
            match Feed::open(self.reader.store_arc(), start, options).await {
                Ok(opened) => feed = Some(opened),
                Err(e) => {
                    let error = match e {
                        StartError::Audit(e) => ExchangeError::Audit(e),
                        invalid => ExchangeError::invalid("cursor", invalid.to_string()),
                    };
                    return Err(self
                        .reject(&request, req.admin.as_ref(), "watch", error)
                        .await);
                }
            }
        }
        let detail = format!("from={from} follow={}", req.follow);
        self.admit(&request, req.admin.as_ref(), "watch", Ok(detail))
            .await?;
        let Some(mut feed) = feed else {
            // `admit` refuses whoever is not an administrator.
            return Err(ExchangeError::Internal(
                "a watch was admitted without a feed".into(),
            ));
        };
        let (tx, rx) =
            tokio::sync::mpsc::channel::<Result<WatchEvent, Status>>(limits.buffer.max(1));
        // First, where the feed starts (resolved: from the end, the current
        // ends), so a client holds a cursor before any entry comes.
        let start = WatchEvent {
            event: None,
            cursor: feed.cursor().to_string(),
        };
        let mut closing = self.closing.clone();
        tokio::spawn(async move {
            let _slot = slot;
            if tx.send(Ok(start)).await.is_err() {
                return;
            }
            loop {
                let next = tokio::select! {
                    () = tx.closed() => return, // the client went away
                    () = node_closing(closing.as_mut()) => {
                        let _ = tx.send(Err(ExchangeError::ShuttingDown.to_status())).await;
                        return;
                    }
                    next = feed.next() => next,
                };
                let (item, last) = match next {
                    Ok(Some(event)) => (Ok(watch_event(event)), false),
                    Ok(None) => return,
                    Err(e) => (Err(ExchangeError::Audit(e).to_status()), true),
                };
                // Waits while the client's queue is full: nothing more is
                // read from the store until it drains.
                if tx.send(item).await.is_err() || last {
                    return;
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

    type WatchStream = WatchStream;

    #[tracing::instrument(name = "Audit/Watch", skip_all)]
    async fn watch(
        &self,
        request: Request<WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        answer(self.watch_log(request).await)
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
        service_as(ADMIN).await
    }

    /// The service over a fresh log, called by `who` (an administrator
    /// only when it is `ADMIN`).
    async fn service_as(who: &str) -> (AuditService, AuditReader, tempfile::TempDir) {
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
        let (_, caller) = Caller::parse_reference(who).unwrap();
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

    fn watch(cursor: &str, follow: bool) -> Request<WatchRequest> {
        Request::new(WatchRequest {
            admin: admin(),
            cursor: cursor.into(),
            from_end: false,
            follow,
        })
    }

    async fn append_lookups(reader: &AuditReader, n: usize) {
        for i in 0..n {
            let mut e = tongban_audit::AuditEntry::new(EntryKind::Lookup, chrono::Utc::now());
            e.case_number = format!("case-{i}");
            reader.log().append(e).await.unwrap();
        }
    }

    /// The next event, within a generous bound.
    async fn next(stream: &mut WatchStream) -> WatchEvent {
        use tokio_stream::StreamExt;
        tokio::time::timeout(Duration::from_secs(30), stream.next())
            .await
            .expect("an event within the bound")
            .unwrap()
            .unwrap()
    }

    /// Every event of a stream: (index, cursor) per entry; the start event
    /// (no entry) first.
    async fn collect(mut stream: WatchStream) -> (String, Vec<(u64, EntryKind, String)>) {
        use tokio_stream::StreamExt;
        let first = stream.next().await.unwrap().unwrap();
        assert!(
            first.event.is_none(),
            "the first event carries only the start"
        );
        let mut got = Vec::new();
        while let Some(event) = stream.next().await {
            let event = event.unwrap();
            let Some(pb::watch_event::Event::Entry(r)) = event.event else {
                panic!("only entries here: {event:?}")
            };
            got.push((r.index, r.kind.parse().unwrap(), event.cursor));
        }
        (first.cursor, got)
    }

    /// Without follow, a watch delivers every entry in index order (its own
    /// entry, logged first, last) and ends; resuming from any event's
    /// cursor delivers exactly what came after it.
    #[tokio::test]
    async fn watch_delivers_in_order_and_resumes_exactly() {
        let (service, reader, _dir) = service().await;
        append_lookups(&reader, 5).await;
        let stream = AuditApi::watch(&service, watch("", false))
            .await
            .unwrap()
            .into_inner();
        let (start, got) = collect(stream).await;
        assert_eq!(start, "n1:0");
        let indexes: Vec<u64> = got.iter().map(|g| g.0).collect();
        // It ends where the log ended when it started, before its own entry.
        assert_eq!(indexes, [0, 1, 2, 3, 4]);
        for (index, _, cursor) in &got {
            assert_eq!(cursor, &format!("n1:{}", index + 1));
        }
        let entry = reader.store().entry("n1", 5).await.unwrap().unwrap();
        assert_eq!(
            entry.entry.detail,
            "watch from=start follow=false; reason: citizen request 2026-117"
        );
        assert_eq!(entry.entry.operator, "auditor.wang");

        // Resume after the third event: entries 3.., the first watch's too.
        let stream = AuditApi::watch(&service, watch(&got[2].2, false))
            .await
            .unwrap()
            .into_inner();
        let (start, resumed) = collect(stream).await;
        assert_eq!(start, "n1:3");
        let indexes: Vec<u64> = resumed.iter().map(|g| g.0).collect();
        assert_eq!(indexes, [3, 4, 5]);
        assert_eq!(resumed[2].1, EntryKind::AdminAction);
        let entry = reader.store().entry("n1", 6).await.unwrap().unwrap();
        assert!(
            entry
                .entry
                .detail
                .starts_with("watch from=n1:3 follow=false")
        );
    }

    /// Following: new commits arrive as they happen; the watcher sees its
    /// own entry once and nothing loops (one entry per Watch call).
    #[tokio::test]
    async fn a_following_watch_sees_new_entries_and_its_own_entry_once() {
        let (service, reader, _dir) = service().await;
        let service = service.with_watch_limits(WatchLimits {
            poll: Duration::from_secs(3600),
            ..WatchLimits::default()
        });
        append_lookups(&reader, 2).await;
        let mut stream = AuditApi::watch(
            &service,
            Request::new(WatchRequest {
                admin: admin(),
                from_end: true,
                follow: true,
                ..WatchRequest::default()
            }),
        )
        .await
        .unwrap()
        .into_inner();
        let start = next(&mut stream).await;
        assert!(start.event.is_none());
        // The end when the feed opened, before the watch's own entry (2),
        // which comes first.
        assert_eq!(start.cursor, "n1:2");
        let own = next(&mut stream).await;
        let Some(pb::watch_event::Event::Entry(r)) = own.event else {
            panic!("an entry")
        };
        assert_eq!((r.index, r.kind.as_str()), (2, "AdminAction"));
        assert_eq!(own.cursor, "n1:3");
        append_lookups(&reader, 3).await;
        for want in 3..6 {
            let event = next(&mut stream).await;
            let Some(pb::watch_event::Event::Entry(r)) = event.event else {
                panic!("an entry")
            };
            assert_eq!((r.index, r.kind.as_str()), (want, "Lookup"));
        }
        let logged = reader.store().scan("n1", 0, 100).await.unwrap();
        let watches = logged
            .iter()
            .filter(|e| e.entry.detail.starts_with("watch"))
            .count();
        assert_eq!(watches, 1, "one entry per Watch call, not per item");
    }

    /// Malformed cursors, a cursor with from_end, a node the store does not
    /// hold and a position past the end are INVALID_ARGUMENT naming the
    /// field; each call is logged.
    #[tokio::test]
    async fn bad_cursors_are_invalid_arguments() {
        let (service, reader, _dir) = service().await;
        append_lookups(&reader, 2).await;
        for (cursor, from_end, field) in [
            ("n1", false, "cursor"),
            ("n1:01", false, "cursor"),
            ("n1:1,n1:2", false, "cursor"),
            ("n1:1\u{1b}[2J", false, "cursor"),
            ("n1:0", true, "from_end"),
            ("other-node:0", false, "cursor"),
            ("n1:999", false, "cursor"),
        ] {
            let status = AuditApi::watch(
                &service,
                Request::new(WatchRequest {
                    admin: admin(),
                    cursor: cursor.into(),
                    from_end,
                    follow: false,
                }),
            )
            .await
            .map(|_| ())
            .unwrap_err();
            assert_eq!(status.code(), Code::InvalidArgument, "{cursor:?}");
            assert_eq!(violations(&status), [field], "{cursor:?}");
        }
        let huge = "n1:1,".repeat(10_000);
        let status = AuditApi::watch(&service, watch(&huge, false))
            .await
            .map(|_| ())
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        let logged = reader.store().scan("n1", 2, 100).await.unwrap();
        assert_eq!(logged.len(), 8, "every call is one entry");
        assert!(logged.iter().all(|e| e.entry.kind == EntryKind::AdminAction
            && e.entry.detail.chars().count() <= 1024
            && e.entry.outcome_code == Code::InvalidArgument as i32));
    }

    /// A caller that is not an administrator is refused, and the refusal
    /// is logged; nothing is streamed.
    #[tokio::test]
    async fn a_non_administrator_cannot_watch_and_is_logged() {
        let (service, reader, _dir) =
            service_as("org/11510421TB0000052W/unit/salian-police-station").await;
        append_lookups(&reader, 2).await;
        let status = AuditApi::watch(&service, watch("", true))
            .await
            .map(|_| ())
            .unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied);
        // A malformed cursor from a non-administrator says nothing about
        // the store either: it is refused as invalid before anything is read.
        let status = AuditApi::watch(&service, watch("n1:999", true))
            .await
            .map(|_| ())
            .unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied);
        let logged = reader.store().scan("n1", 2, 100).await.unwrap();
        assert_eq!(logged.len(), 2);
        assert!(logged.iter().all(|e| e.entry.kind == EntryKind::AdminAction
            && e.entry.outcome_code == Code::PermissionDenied as i32
            && e.entry.detail.starts_with("watch")));
    }

    /// One caller holds at most `per_caller` watches; closing one frees
    /// its place. The refusal is RESOURCE_EXHAUSTED, and logged.
    #[tokio::test]
    async fn watches_per_caller_are_capped() {
        let (service, reader, _dir) = service().await;
        let service = service.with_watch_limits(WatchLimits {
            per_caller: 2,
            ..WatchLimits::default()
        });
        let first = AuditApi::watch(&service, watch("", true)).await.unwrap();
        let _second = AuditApi::watch(&service, watch("", true)).await.unwrap();
        let status = AuditApi::watch(&service, watch("", true))
            .await
            .map(|_| ())
            .unwrap_err();
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert_eq!(
            status.get_details_error_info().unwrap().reason,
            "TOO_MANY_WATCHES"
        );
        drop(first);
        // The stream's task notices the client is gone and frees its place.
        let mut freed = false;
        for _ in 0..500 {
            if AuditApi::watch(&service, watch("", true)).await.is_ok() {
                freed = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(freed, "a closed watch frees its place");
        let logged = reader.store().scan("n1", 0, 1000).await.unwrap();
        assert!(
            logged
                .iter()
                .any(|e| e.entry.outcome_reason == "TOO_MANY_WATCHES")
        );
    }

    /// At shutdown a following watch ends at once with UNAVAILABLE, and
    /// says so: the client resumes from its last cursor.
    #[tokio::test]
    async fn a_following_watch_ends_when_the_node_shuts_down() {
        let (service, _reader, _dir) = service().await;
        let (closing, closing_rx) = tokio::sync::watch::channel(false);
        let service = service.with_closing(closing_rx);
        let mut stream = AuditApi::watch(&service, watch("", true))
            .await
            .unwrap()
            .into_inner();
        assert!(next(&mut stream).await.event.is_none());
        // Its own entry.
        assert!(next(&mut stream).await.event.is_some());
        closing.send_replace(true);
        let status = tokio::time::timeout(Duration::from_secs(30), async {
            use tokio_stream::StreamExt;
            stream.next().await.unwrap().unwrap_err()
        })
        .await
        .expect("the stream ends within the bound");
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(
            status.get_details_error_info().unwrap().reason,
            "NODE_SHUTTING_DOWN"
        );
    }

    /// A slow client: the stream holds at most its buffer of events (plus
    /// one page), and everything arrives, in order, once it reads.
    #[tokio::test]
    async fn a_slow_watcher_gets_everything_in_order() {
        use tokio_stream::StreamExt;
        let (service, reader, _dir) = service().await;
        let service = service.with_watch_limits(WatchLimits {
            buffer: 2,
            page: 3,
            ..WatchLimits::default()
        });
        append_lookups(&reader, 40).await;
        let mut stream = AuditApi::watch(&service, watch("", false))
            .await
            .unwrap()
            .into_inner();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut indexes = Vec::new();
        while let Some(event) = stream.next().await {
            if let Some(pb::watch_event::Event::Entry(r)) = event.unwrap().event {
                indexes.push(r.index);
            }
        }
        // It ends where the log ended when it started, before its own entry.
        assert_eq!(indexes, (0..40).collect::<Vec<_>>());
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
