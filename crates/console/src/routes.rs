//! The handlers: each reads what its page needs (model), records the act
//! in the audit log, and renders a view. Sessions and CSRF tokens are
//! checked by the extractors here, before any handler runs.

use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, FromRequestParts, Path, RawQuery, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::Markup;
use tongban_audit::{Checkpoint, PageRequest, origin_for_node};
use tongban_core::IdNumber;

use crate::auth::{Refusal, constant_time_eq, random_token, verify_password};
use crate::backend::{AdminAct, ConsoleError};
use crate::filter::{FilterError, ParsedFilter, is_node_name, mask_id, parse_filter};
use crate::state::Console;
use crate::text::{MAX_LOGGED_NAME_CHARS, sanitize_for_log};
use crate::url::{param, parse_form};
use crate::views::{self, Frame};

pub(crate) const SESSION_COOKIE: &str = "tb_session";
pub(crate) const LOGIN_COOKIE: &str = "tb_login";

/// Entries per search page.
const PAGE_SIZE: u32 = 50;
/// Most entries one export writes.
const MAX_EXPORT: usize = 10_000;
/// Most accesses a subject report lists.
const MAX_REPORT: usize = 10_000;
/// Checkpoints listed per node and page on the integrity page.
pub(crate) const CHECKPOINTS_SHOWN: u32 = 20;

/// The value of cookie `name`. (axum has no cookie jar of its own; the
/// console reads two cookies, which does not warrant another crate.)
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

/// The signed-in administrator of a request.
#[derive(Debug, Clone)]
pub(crate) struct Admin {
    /// The session id, from the cookie.
    pub id: String,
    pub user: String,
    pub csrf: String,
}

impl Admin {
    pub fn frame<'a>(&'a self, active: &'a str) -> Frame<'a> {
        Frame {
            user: Some(&self.user),
            csrf: Some(&self.csrf),
            active,
        }
    }
}

/// No live session: pages send the browser to sign in, the JSON status
/// answers 401.
#[derive(Debug)]
pub(crate) enum NotSignedIn {
    Page,
    Api,
}

impl IntoResponse for NotSignedIn {
    fn into_response(self) -> Response {
        match self {
            Self::Page => redirect("/login", &[]),
            Self::Api => json(
                StatusCode::UNAUTHORIZED,
                r#"{"error":"not signed in"}"#.into(),
            ),
        }
    }
}

impl FromRequestParts<Console> for Admin {
    type Rejection = NotSignedIn;

    async fn from_request_parts(parts: &mut Parts, console: &Console) -> Result<Self, NotSignedIn> {
        let found = cookie(&parts.headers, SESSION_COOKIE)
            .and_then(|id| console.inner.sessions.get(&id).map(|s| (id, s)));
        match found {
            Some((id, session)) => Ok(Self {
                id,
                user: session.user,
                csrf: session.csrf,
            }),
            None if parts.uri.path().ends_with("/status") => Err(NotSignedIn::Api),
            None => Err(NotSignedIn::Page),
        }
    }
}

/// A POSTed form of a signed-in administrator that carries the session's
/// CSRF token. The session is checked before the body is read.
#[derive(Debug)]
pub(crate) struct CsrfForm {
    pub admin: Admin,
    pub form: Vec<(String, String)>,
}

impl FromRequest<Console> for CsrfForm {
    type Rejection = Response;

    async fn from_request(request: Request, console: &Console) -> Result<Self, Response> {
        let (mut parts, body) = request.into_parts();
        let admin = Admin::from_request_parts(&mut parts, console)
            .await
            .map_err(IntoResponse::into_response)?;
        let bytes = Bytes::from_request(Request::from_parts(parts, body), console)
            .await
            .map_err(IntoResponse::into_response)?;
        let form = parse_form(&bytes);
        let token = form
            .iter()
            .find(|(k, _)| k == "csrf")
            .map_or("", |(_, v)| v.as_str());
        if !constant_time_eq(token, &admin.csrf) {
            return Err(error_page(
                StatusCode::FORBIDDEN,
                "请求被拒绝 Request refused",
                "表单令牌无效，请重新打开页面。The form's token is missing or stale; open the page again.",
                Some(&admin),
            ));
        }
        Ok(Self { admin, form })
    }
}

fn query_params(query: Option<String>) -> Vec<(String, String)> {
    parse_form(query.unwrap_or_default().as_bytes())
}

pub(crate) fn html(status: StatusCode, markup: Markup) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        )],
        markup.into_string(),
    )
        .into_response()
}

pub(crate) fn json(status: StatusCode, body: String) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

/// 303 to `to`, setting `cookies`.
pub(crate) fn redirect(to: &str, cookies: &[String]) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    for c in cookies {
        if let Ok(v) = HeaderValue::from_str(c) {
            r.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    r
}

pub(crate) fn error_page(
    status: StatusCode,
    title: &str,
    message: &str,
    admin: Option<&Admin>,
) -> Response {
    let frame = admin.map_or(Frame::ANONYMOUS, |a| a.frame(""));
    html(status, views::error_page(title, message, &frame))
}

/// The log could not record the act, so nothing is shown (fail closed).
fn audit_unavailable(e: &ConsoleError, admin: Option<&Admin>) -> Response {
    tracing::error!(error = %e, "cannot log an administrator's act; refusing it");
    error_page(
        StatusCode::SERVICE_UNAVAILABLE,
        "审计日志不可用 Audit log unavailable",
        "无法记录此操作，因此未执行。This act could not be logged, so it was not carried out.",
        admin,
    )
}

/// Records `act`; the response to send instead when the log cannot.
async fn record(console: &Console, act: AdminAct<'_>, admin: &Admin) -> Result<(), Response> {
    console
        .backend()
        .record(act)
        .await
        .map_err(|e| audit_unavailable(&e, Some(admin)))
}

const CONSOLE_CSS: &str = include_str!("../assets/console.css");
const PRINT_CSS: &str = include_str!("../assets/print.css");
const CONSOLE_JS: &str = include_str!("../assets/console.js");

pub(crate) async fn asset(Path(name): Path<String>) -> Response {
    let (body, kind) = match name.as_str() {
        "console.css" => (CONSOLE_CSS, "text/css; charset=utf-8"),
        "print.css" => (PRINT_CSS, "text/css; charset=utf-8"),
        "console.js" => (CONSOLE_JS, "text/javascript; charset=utf-8"),
        _ => return (StatusCode::NOT_FOUND, "not found\n").into_response(),
    };
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static(kind))],
        body,
    )
        .into_response()
}

pub(crate) async fn favicon() -> Response {
    (StatusCode::NOT_FOUND, "not found\n").into_response()
}

pub(crate) async fn root() -> Response {
    redirect("/overview", &[])
}

/// Any other path: 404 to a signed-in administrator, sign-in to others.
pub(crate) async fn not_found(admin: Result<Admin, NotSignedIn>) -> Response {
    match admin {
        Ok(admin) => error_page(
            StatusCode::NOT_FOUND,
            "找不到页面 Not found",
            "没有这个页面。There is no such page.",
            Some(&admin),
        ),
        Err(refused) => refused.into_response(),
    }
}

pub(crate) async fn login_page(State(console): State<Console>, headers: HeaderMap) -> Response {
    login_form(&console, &headers, None, StatusCode::OK)
}

fn login_form(
    console: &Console,
    headers: &HeaderMap,
    error: Option<&str>,
    status: StatusCode,
) -> Response {
    // Keep the browser's token: a second tab or a stray request for the
    // sign-in page must not invalidate a form already shown.
    let token = cookie(headers, LOGIN_COOKIE)
        .filter(|t| t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()))
        .unwrap_or_else(random_token);
    let mut response = html(status, views::login(&token, error));
    // Double-submit token: a cross-site form cannot read or set it.
    if let Ok(v) = HeaderValue::from_str(&console.cookie(LOGIN_COOKIE, &token, false)) {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
    response
}

/// A valid Argon2 hash of a random string, so an unknown name takes as long
/// to refuse as a wrong password.
fn dummy_hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| crate::auth::hash_password(&random_token()).unwrap_or_default())
}

pub(crate) async fn login(
    State(console): State<Console>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let started = Instant::now();
    let form = parse_form(&body);
    let field = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let (user, password, token) = (field("user"), field("password"), field("csrf"));
    let login_cookie = cookie(&headers, LOGIN_COOKIE).unwrap_or_default();
    if token.is_empty() || !constant_time_eq(&token, &login_cookie) {
        return login_form(
            &console,
            &headers,
            Some("表单已过期，请重试。The form expired; try again."),
            StatusCode::FORBIDDEN,
        );
    }
    let user = user.trim();
    // What the throttle keys on and the log keeps: bounded, and shown as
    // it is. A configured name (letters, digits, . _ -, at most 64) is
    // its own logged form.
    let logged_user = sanitize_for_log(user, MAX_LOGGED_NAME_CHARS);
    let throttle = &console.inner.throttle;
    let refusal = throttle.begin(&logged_user, started).err();
    let ok = refusal.is_none() && {
        let hash = console.inner.settings.users.get(user).cloned();
        // Unknown names cost the same as wrong passwords.
        let known = hash.is_some();
        let hash = hash.unwrap_or_else(|| dummy_hash().to_owned());
        let matched = tokio::task::spawn_blocking(move || verify_password(&hash, &password))
            .await
            .unwrap_or(false);
        known && matched
    };
    let outcome = match refusal {
        None if ok => {
            throttle.succeeded(&logged_user, Instant::now());
            None
        }
        None => {
            throttle.failed(&logged_user, Instant::now());
            Some((16, "WRONG_CREDENTIALS"))
        }
        Some(Refusal::NameLocked) => Some((16, "TOO_MANY_ATTEMPTS")),
        Some(Refusal::TooManyFailures) => Some((16, "TOO_MANY_FAILED_SIGN_INS")),
    };
    let act = AdminAct {
        user: &logged_user,
        action: if ok {
            "console.sign-in"
        } else {
            "console.sign-in-refused"
        },
        detail: String::new(),
        outcome,
        latency: started.elapsed(),
    };
    if let Err(e) = console.backend().record(act).await {
        return audit_unavailable(&e, None);
    }
    if !ok {
        let (message, status) = if refusal.is_some() {
            (
                "尝试次数过多，请一分钟后再试。Too many attempts; wait a minute.",
                StatusCode::TOO_MANY_REQUESTS,
            )
        } else {
            (
                "用户名或密码错误。Wrong name or password.",
                StatusCode::UNAUTHORIZED,
            )
        };
        return login_form(&console, &headers, Some(message), status);
    }
    // Against session fixation: whatever session id the browser brought
    // (one planted by someone else included) ends here; the administrator
    // gets a fresh one, made by the server.
    if let Some(presented) = cookie(&headers, SESSION_COOKIE) {
        console.inner.sessions.remove(&presented);
    }
    let id = console.inner.sessions.create(user);
    redirect(
        "/overview",
        &[
            console.cookie(SESSION_COOKIE, &id, false),
            console.cookie(LOGIN_COOKIE, "", true),
        ],
    )
}

pub(crate) async fn logout(State(console): State<Console>, posted: CsrfForm) -> Response {
    let admin = posted.admin;
    console.inner.sessions.remove(&admin.id);
    // Signed out either way: the session is gone even if the log is not.
    let _ = console
        .backend()
        .record(AdminAct::new(&admin.user, "console.sign-out"))
        .await;
    redirect("/login", &[console.cookie(SESSION_COOKIE, "", true)])
}

pub(crate) async fn overview(State(console): State<Console>, admin: Admin) -> Response {
    if let Err(r) = record(
        &console,
        AdminAct::new(&admin.user, "console.overview"),
        &admin,
    )
    .await
    {
        return r;
    }
    match crate::overview::collect(console.backend().store.as_ref(), chrono::Utc::now()).await {
        Ok(stats) => html(
            StatusCode::OK,
            views::overview::overview_page(&admin.frame("/overview"), &stats),
        ),
        Err(e) => error_page(
            StatusCode::INTERNAL_SERVER_ERROR,
            "概览 Overview",
            &format!("store: {e}"),
            Some(&admin),
        ),
    }
}

fn search_page(
    admin: &Admin,
    params: &[(String, String)],
    error: Option<&str>,
    results: Option<&views::search::Results<'_>>,
    status: StatusCode,
) -> Response {
    html(
        status,
        views::search::search_page(&admin.frame("/search"), params, error, results),
    )
}

fn filter_of(console: &Console, params: &[(String, String)]) -> Result<ParsedFilter, FilterError> {
    parse_filter(&console.backend().pseudonymizer, params)
}

pub(crate) async fn search_post(State(console): State<Console>, posted: CsrfForm) -> Response {
    match filter_of(&console, &posted.form) {
        // The identity number never reaches a URL: only its pseudonym does.
        Ok(parsed) => redirect(&format!("/search?{}", parsed.query_string()), &[]),
        Err(e) => search_page(
            &posted.admin,
            &posted.form,
            Some(&e.to_string()),
            None,
            StatusCode::BAD_REQUEST,
        ),
    }
}

pub(crate) async fn search(
    State(console): State<Console>,
    admin: Admin,
    RawQuery(query): RawQuery,
) -> Response {
    let params = query_params(query);
    let parsed = match filter_of(&console, &params) {
        Ok(p) => p,
        Err(e) => {
            return search_page(
                &admin,
                &params,
                Some(&e.to_string()),
                None,
                StatusCode::BAD_REQUEST,
            );
        }
    };
    let after = match param(&params, "after") {
        "" => None,
        c => match c.parse::<tongban_audit::Cursor>() {
            Ok(c) => Some(c),
            Err(e) => {
                return search_page(&admin, &params, Some(&e), None, StatusCode::BAD_REQUEST);
            }
        },
    };
    let mut detail = parsed.describe();
    if after.is_some() {
        detail.push_str(" (next page)");
    }
    let act = AdminAct::new(&admin.user, "console.search").detail(detail);
    if let Err(r) = record(&console, act, &admin).await {
        return r;
    }
    let later_page = after.is_some();
    let page = match tongban_audit::search(
        console.backend().store.as_ref(),
        &parsed.filter,
        &PageRequest {
            limit: PAGE_SIZE,
            after,
        },
    )
    .await
    {
        Ok(page) => page,
        Err(e) => {
            return search_page(
                &admin,
                &parsed.params,
                Some(&format!("search failed: {e}")),
                None,
                StatusCode::INTERNAL_SERVER_ERROR,
            );
        }
    };
    let query = parsed.query_string();
    let results = views::search::Results {
        entries: &page.entries,
        query: &query,
        later_page,
        next: page.next.map(|n| n.to_string()),
        by_subject: parsed.has_subject(),
    };
    search_page(&admin, &parsed.params, None, Some(&results), StatusCode::OK)
}

pub(crate) async fn export(
    State(console): State<Console>,
    admin: Admin,
    RawQuery(query): RawQuery,
) -> Response {
    let params = query_params(query);
    let parsed = match filter_of(&console, &params) {
        Ok(p) => p,
        Err(e) => {
            return error_page(
                StatusCode::BAD_REQUEST,
                "导出 Export",
                &e.to_string(),
                Some(&admin),
            );
        }
    };
    let act = AdminAct::new(&admin.user, "console.export").detail(parsed.describe());
    if let Err(r) = record(&console, act, &admin).await {
        return r;
    }
    let mut out = Vec::new();
    let mut after = None;
    let mut written = 0;
    loop {
        let page = match tongban_audit::search(
            console.backend().store.as_ref(),
            &parsed.filter,
            &PageRequest {
                limit: 1000,
                after: after.take(),
            },
        )
        .await
        {
            Ok(p) => p,
            Err(e) => {
                return error_page(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "导出 Export",
                    &format!("export failed: {e}"),
                    Some(&admin),
                );
            }
        };
        for e in &page.entries {
            if written == MAX_EXPORT {
                break;
            }
            if serde_json::to_writer(&mut out, e).is_ok() {
                out.push(b'\n');
                written += 1;
            }
        }
        match page.next {
            Some(n) if written < MAX_EXPORT => after = Some(n),
            _ => break,
        }
    }
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/x-ndjson"),
            ),
            (
                header::CONTENT_DISPOSITION,
                HeaderValue::from_static("attachment; filename=\"tongban-audit-export.jsonl\""),
            ),
        ],
        Body::from(out),
    )
        .into_response()
}

pub(crate) async fn entry(
    State(console): State<Console>,
    admin: Admin,
    RawQuery(query): RawQuery,
) -> Response {
    let params = query_params(query);
    let node = param(&params, "node").to_owned();
    if !is_node_name(&node) {
        return error_page(
            StatusCode::BAD_REQUEST,
            "条目 Entry",
            "node: not a node name (1 to 64 letters, digits, . _ -)",
            Some(&admin),
        );
    }
    let Ok(index) = param(&params, "index").parse::<u64>() else {
        return error_page(
            StatusCode::BAD_REQUEST,
            "条目 Entry",
            "index: not a number",
            Some(&admin),
        );
    };
    let act =
        AdminAct::new(&admin.user, "console.entry").detail(format!("node={node} index={index}"));
    if let Err(r) = record(&console, act, &admin).await {
        return r;
    }
    let backend = console.backend();
    let found = match backend.store.entry(&node, index).await {
        Ok(Some(e)) => e,
        Ok(None) => {
            return error_page(
                StatusCode::NOT_FOUND,
                "条目 Entry",
                "没有这个条目（或已按保留期删除）。No such entry (or pruned by retention).",
                Some(&admin),
            );
        }
        Err(e) => {
            return error_page(
                StatusCode::INTERNAL_SERVER_ERROR,
                "条目 Entry",
                &format!("store: {e}"),
                Some(&admin),
            );
        }
    };
    let leaf_matches = found.entry.leaf_hash(index) == found.leaf_hash;
    let proof = tongban_audit::inclusion_proof(backend.store.as_ref(), &node, index).await;
    let verdict = match &proof {
        Ok(proof) => match (
            proof.verify(&backend.keyring),
            proof.leaf_hash == found.leaf_hash && leaf_matches,
        ) {
            (Ok(cp), true) => views::entry::ProofVerdict::Verified {
                proof,
                size: cp.size,
                keys: backend.key_names(),
                signed: cp.time,
            },
            (Ok(_), false) => views::entry::ProofVerdict::WrongLeaf(proof),
            (Err(e), _) => views::entry::ProofVerdict::Invalid(proof, e.to_string()),
        },
        Err(e) => {
            let covered = match backend.store.latest_checkpoint(&node).await {
                Ok(Some(cp)) => index < cp.tree_size,
                _ => false,
            };
            if covered {
                views::entry::ProofVerdict::Unavailable(e.to_string())
            } else {
                views::entry::ProofVerdict::Pending
            }
        }
    };
    html(
        StatusCode::OK,
        views::entry::entry_page(&admin.frame("/search"), &found, leaf_matches, &verdict),
    )
}

pub(crate) async fn subject_form(admin: Admin) -> Response {
    html(
        StatusCode::OK,
        views::subject::form_page(&admin.frame("/subject"), None),
    )
}

pub(crate) async fn subject_report(State(console): State<Console>, posted: CsrfForm) -> Response {
    let admin = &posted.admin;
    let frame = admin.frame("/subject");
    let id = match IdNumber::parse(param(&posted.form, "id_number")) {
        Ok(id) => id,
        Err(e) => {
            let message = format!(
                "身份证号无效 Not a valid resident identity number ({} check failed)",
                e.check()
            );
            return html(
                StatusCode::BAD_REQUEST,
                views::subject::form_page(&frame, Some(&message)),
            );
        }
    };
    let backend = console.backend();
    let pseudonym = backend.pseudonymizer.pseudonym(id.as_str());
    let act =
        AdminAct::new(&admin.user, "console.subject-report").detail(format!("subject={pseudonym}"));
    if let Err(r) = record(&console, act, admin).await {
        return r;
    }
    match tongban_audit::subject_report(backend.store.as_ref(), &pseudonym, MAX_REPORT).await {
        Ok(report) => html(
            StatusCode::OK,
            views::subject::report_page(&frame, &mask_id(id.as_str()), &report, MAX_REPORT),
        ),
        Err(e) => error_page(
            StatusCode::INTERNAL_SERVER_ERROR,
            "个人报告 Subject report",
            &format!("report failed: {e}"),
            Some(admin),
        ),
    }
}

/// The integrity page reads, per node, its state, its number of
/// checkpoints and the one page of them it shows (`node` and `below` in
/// the query page back through one node's), never all of them.
pub(crate) async fn integrity(
    State(console): State<Console>,
    admin: Admin,
    RawQuery(query): RawQuery,
) -> Response {
    let params = query_params(query);
    let paged_node = Some(param(&params, "node")).filter(|n| is_node_name(n));
    let below = paged_node.and(param(&params, "below").parse::<u64>().ok());
    let detail = match (paged_node, below) {
        (Some(node), Some(below)) => format!("node={node} below={below}"),
        _ => String::new(),
    };
    let act = AdminAct::new(&admin.user, "console.integrity").detail(detail);
    if let Err(r) = record(&console, act, &admin).await {
        return r;
    }
    let backend = console.backend();
    let nodes = match backend.store.list_nodes().await {
        Ok(n) => n,
        Err(e) => {
            return error_page(
                StatusCode::INTERNAL_SERVER_ERROR,
                "完整性 Integrity",
                &format!("store: {e}"),
                Some(&admin),
            );
        }
    };
    let mut sections = Vec::with_capacity(nodes.len());
    for node in nodes {
        let below = below.filter(|_| paged_node == Some(node.as_str()));
        let store = backend.store.as_ref();
        let state = store.log_state(&node).await.ok();
        let total = store.checkpoint_count(&node).await.unwrap_or_default();
        // One more than shown tells whether older ones follow.
        let mut page = store
            .checkpoints_page(&node, below, CHECKPOINTS_SHOWN + 1)
            .await
            .unwrap_or_default();
        let more = page.len() > CHECKPOINTS_SHOWN as usize;
        page.truncate(CHECKPOINTS_SHOWN as usize);
        let origin = origin_for_node(&node);
        let shown = page
            .into_iter()
            .map(|cp| {
                let sig = match Checkpoint::open(&cp.note, &backend.keyring, &origin) {
                    Ok(opened) if opened.size == cp.tree_size && opened.root == cp.root => {
                        views::integrity::Signature::Pinned
                    }
                    Ok(_) => views::integrity::Signature::DiffersFromRow,
                    Err(e) => views::integrity::Signature::Refused(e.to_string()),
                };
                (cp, sig)
            })
            .collect();
        sections.push(views::integrity::NodeCheckpoints {
            node,
            state,
            total,
            shown,
            later_page: below.is_some(),
            more,
        });
    }
    html(
        StatusCode::OK,
        views::integrity::integrity_page(
            &admin.frame("/integrity"),
            &backend.key_names(),
            &console.inner.verify.status(),
            &sections,
        ),
    )
}

pub(crate) async fn start_verify(State(console): State<Console>, posted: CsrfForm) -> Response {
    let admin = &posted.admin;
    if let Err(r) = record(
        &console,
        AdminAct::new(&admin.user, "console.verify-started"),
        admin,
    )
    .await
    {
        return r;
    }
    console.inner.verify.start(console.backend(), &admin.user);
    redirect("/integrity", &[])
}

pub(crate) async fn verify_status(State(console): State<Console>, _admin: Admin) -> Response {
    json(StatusCode::OK, console.inner.verify.status_json())
}
