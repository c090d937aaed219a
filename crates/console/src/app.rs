//! Requests in, responses out: routing, sessions, CSRF, headers, audit.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Response, StatusCode};
use tongban_audit::{AuditEntry, AuditLog, AuditStore, EntryKind, Keyring, SubjectPseudonymizer};

use crate::auth::{Refusal, Sessions, Throttle, constant_time_eq, random_token, verify_password};
use crate::config::{ConsoleSettings, effective_allowed_hosts};
use crate::html::{self, Frame, escape_html, parse_form};
use crate::pages;
use crate::text::{MAX_LOGGED_DETAIL_CHARS, MAX_LOGGED_NAME_CHARS, sanitize_for_log};
use crate::verify_job::VerifyJob;

/// What the console reads and where it records administrators' acts.
#[derive(Clone)]
pub struct ConsoleBackend {
    pub store: Arc<dyn AuditStore>,
    pub pseudonymizer: SubjectPseudonymizer,
    /// The node's log: every administrator's act is appended here.
    pub log: AuditLog,
    /// Pinned checkpoint verifier keys (from configuration, never the store).
    pub keyring: Keyring,
}

impl std::fmt::Debug for ConsoleBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleBackend")
            .field("store", &self.store)
            .field("node", &self.log.node())
            .field("keys", &self.keyring.keys().len())
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error("console settings: {0}")]
    Settings(String),
    #[error("console cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("audit log: {0}")]
    Audit(#[from] tongban_audit::AuditError),
}

/// One HTTP request, body already read.
#[derive(Debug, Clone)]
pub struct ConsoleRequest {
    pub method: Method,
    pub path: String,
    pub query: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl ConsoleRequest {
    pub fn get(path_and_query: &str) -> Self {
        let (path, query) = path_and_query
            .split_once('?')
            .unwrap_or((path_and_query, ""));
        Self {
            method: Method::GET,
            path: path.to_owned(),
            query: query.to_owned(),
            headers: HeaderMap::new(),
            body: Bytes::new(),
        }
    }

    pub fn cookie(&self, name: &str) -> Option<String> {
        self.headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|c| c.trim().split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_owned())
    }

    pub fn query_params(&self) -> Vec<(String, String)> {
        parse_form(&self.query)
    }

    pub fn form(&self) -> Vec<(String, String)> {
        parse_form(&String::from_utf8_lossy(&self.body))
    }
}

pub type ConsoleResponse = Response<Full<Bytes>>;

pub(crate) const SESSION_COOKIE: &str = "tb_session";
pub(crate) const LOGIN_COOKIE: &str = "tb_login";

/// The console: cheap to clone, shared by every connection.
#[derive(Debug, Clone)]
pub struct Console {
    pub(crate) inner: Arc<Inner>,
    /// The `Host` values answered (lower case); see `allowed_hosts`.
    allowed_hosts: Arc<[String]>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub settings: ConsoleSettings,
    pub backend: ConsoleBackend,
    pub sessions: Sessions,
    pub throttle: Throttle,
    pub verify: VerifyJob,
}

/// The signed-in administrator of a request.
#[derive(Debug, Clone)]
pub(crate) struct Admin {
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

impl Console {
    pub fn new(settings: ConsoleSettings, backend: ConsoleBackend) -> Result<Self, ConsoleError> {
        settings.check().map_err(ConsoleError::Settings)?;
        let sessions = Sessions::new(
            Duration::from_secs(settings.session_idle_secs),
            Duration::from_secs(settings.session_max_secs),
        );
        let allowed_hosts =
            effective_allowed_hosts(&settings.allowed_hosts, settings.listen).into();
        Ok(Self {
            allowed_hosts,
            inner: Arc::new(Inner {
                settings,
                backend,
                sessions,
                throttle: Throttle::default(),
                verify: VerifyJob::default(),
            }),
        })
    }

    /// The same console, answering to the default hosts of the address it
    /// was actually bound to (unless `allowed_hosts` names them).
    pub fn bound_to(&self, addr: std::net::SocketAddr) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
            allowed_hosts: effective_allowed_hosts(&self.inner.settings.allowed_hosts, addr).into(),
        }
    }

    /// The `Host` values this console answers to.
    pub fn allowed_hosts(&self) -> &[String] {
        &self.allowed_hosts
    }

    /// Exactly one `Host` header, and an allowed one (compared without case,
    /// as host names are).
    fn host_allowed(&self, headers: &HeaderMap) -> bool {
        let mut hosts = headers.get_all(header::HOST).iter();
        let (Some(host), None) = (hosts.next(), hosts.next()) else {
            return false;
        };
        host.to_str().is_ok_and(|host| {
            self.allowed_hosts
                .iter()
                .any(|allowed| allowed.eq_ignore_ascii_case(host))
        })
    }

    pub(crate) fn backend(&self) -> &ConsoleBackend {
        &self.inner.backend
    }

    /// Answers one request, with the security headers on every response.
    #[tracing::instrument(skip_all, fields(method = %request.method, path = %request.path))]
    pub async fn handle(&self, request: ConsoleRequest) -> ConsoleResponse {
        // First of all: a page served from another origin whose name was
        // rebound to this address must get nothing, not even a cookie.
        let mut response = if self.host_allowed(&request.headers) {
            self.route(&request).await
        } else {
            tracing::debug!("console request refused: Host header missing or not allowed");
            misdirected()
        };
        let h = response.headers_mut();
        for (name, value) in [
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                 object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
            ),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CACHE_CONTROL, "no-store"),
        ] {
            h.insert(name, HeaderValue::from_static(value));
        }
        response
    }

    async fn route(&self, request: &ConsoleRequest) -> ConsoleResponse {
        let method = &request.method;
        let path = request.path.as_str();
        if let Some(asset) = path.strip_prefix("/static/") {
            return asset_response(asset);
        }
        match (method, path) {
            (&Method::GET, "/") => return redirect("/overview", None),
            (&Method::GET, "/login") => {
                return self.login_form(request, None, StatusCode::OK);
            }
            (&Method::GET, "/favicon.ico") => return asset_response("favicon.ico"),
            (&Method::POST, "/login") => return self.login(request).await,
            _ => {}
        }
        let Some((session_id, session)) = request
            .cookie(SESSION_COOKIE)
            .and_then(|id| self.inner.sessions.get(&id).map(|s| (id, s)))
        else {
            if path.ends_with("/status") {
                return json(
                    StatusCode::UNAUTHORIZED,
                    r#"{"error":"not signed in"}"#.into(),
                );
            }
            return redirect("/login", None);
        };
        let admin = Admin {
            user: session.user,
            csrf: session.csrf,
        };
        if method == Method::POST {
            let form = request.form();
            let token = form
                .iter()
                .find(|(k, _)| k == "csrf")
                .map(|(_, v)| v.as_str())
                .unwrap_or_default();
            if !constant_time_eq(token, &admin.csrf) {
                return error_page(
                    StatusCode::FORBIDDEN,
                    "请求被拒绝 Request refused",
                    "表单令牌无效，请重新打开页面。The form's token is missing or stale; open the page again.",
                    Some(&admin),
                );
            }
        }
        match (method, path) {
            (&Method::POST, "/logout") => {
                self.inner.sessions.remove(&session_id);
                let _ = self
                    .record(&admin.user, "console.sign-out", String::new(), None, None)
                    .await;
                redirect("/login", Some(&self.cookie(SESSION_COOKIE, "", true)))
            }
            (&Method::GET, "/overview") => pages::overview(self, &admin).await,
            (&Method::GET, "/search") => pages::search(self, &admin, request).await,
            (&Method::POST, "/search") => pages::search_post(self, &admin, request),
            (&Method::GET, "/export") => pages::export(self, &admin, request).await,
            (&Method::GET, "/entry") => pages::entry(self, &admin, request).await,
            (&Method::GET, "/subject") => pages::subject_form(&admin, None),
            (&Method::POST, "/subject") => pages::subject_report(self, &admin, request).await,
            (&Method::GET, "/integrity") => pages::integrity(self, &admin).await,
            (&Method::POST, "/integrity/verify") => pages::start_verify(self, &admin).await,
            (&Method::GET, "/integrity/verify/status") => {
                json(StatusCode::OK, self.inner.verify.status_json())
            }
            _ => error_page(
                StatusCode::NOT_FOUND,
                "找不到页面 Not found",
                "没有这个页面。There is no such page.",
                Some(&admin),
            ),
        }
    }

    fn login_form(
        &self,
        request: &ConsoleRequest,
        error: Option<&str>,
        status: StatusCode,
    ) -> ConsoleResponse {
        // Keep the browser's token: a second tab or a stray request for the
        // sign-in page must not invalidate a form already shown.
        let token = request
            .cookie(LOGIN_COOKIE)
            .filter(|t| t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()))
            .unwrap_or_else(random_token);
        let body = pages::login_body(&token, error);
        let mut response = html_response(
            status,
            html::page(
                "登录 Sign in",
                &Frame {
                    user: None,
                    csrf: None,
                    active: "",
                },
                &body,
            ),
        );
        // Double-submit token: a cross-site form cannot read or set it.
        if let Ok(v) = HeaderValue::from_str(&self.cookie(LOGIN_COOKIE, &token, false)) {
            response.headers_mut().append(header::SET_COOKIE, v);
        }
        response
    }

    async fn login(&self, request: &ConsoleRequest) -> ConsoleResponse {
        let started = Instant::now();
        let form = request.form();
        let field = |name: &str| {
            form.iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        let (user, password, token) = (field("user"), field("password"), field("csrf"));
        let cookie = request.cookie(LOGIN_COOKIE).unwrap_or_default();
        if token.is_empty() || !constant_time_eq(&token, &cookie) {
            return self.login_form(
                request,
                Some("表单已过期，请重试。The form expired; try again."),
                StatusCode::FORBIDDEN,
            );
        }
        let user = user.trim();
        // What the throttle keys on and the log keeps: bounded, and shown as
        // it is. A configured name (letters, digits, . _ -, at most 64) is
        // its own logged form.
        let logged_user = sanitize_for_log(user, MAX_LOGGED_NAME_CHARS);
        let throttle = &self.inner.throttle;
        let refusal = throttle.begin(&logged_user, started).err();
        let ok = refusal.is_none() && {
            let hash = self.inner.settings.users.get(user).cloned();
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
        let action = if ok {
            "console.sign-in"
        } else {
            "console.sign-in-refused"
        };
        let elapsed = started.elapsed();
        if let Err(e) = self
            .record_timed(&logged_user, action, String::new(), None, outcome, elapsed)
            .await
        {
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
            return self.login_form(request, Some(message), status);
        }
        let id = self.inner.sessions.create(user);
        let mut response = redirect("/overview", Some(&self.cookie(SESSION_COOKIE, &id, false)));
        if let Ok(v) = HeaderValue::from_str(&self.cookie(LOGIN_COOKIE, "", true)) {
            response.headers_mut().append(header::SET_COOKIE, v);
        }
        response
    }

    fn cookie(&self, name: &str, value: &str, clear: bool) -> String {
        let mut c = format!("{name}={value}; Path=/; HttpOnly; SameSite=Strict");
        if self.inner.settings.secure_cookie {
            c.push_str("; Secure");
        }
        if clear {
            c.push_str("; Max-Age=0");
        }
        c
    }

    /// Appends an `AdminAction` entry and waits for it to be committed. The
    /// operator is kept to `MAX_LOGGED_NAME_CHARS` characters and the detail
    /// to `MAX_LOGGED_DETAIL_CHARS`, control and bidi characters replaced,
    /// whatever the caller passed.
    pub(crate) async fn record(
        &self,
        user: &str,
        action: &str,
        detail: String,
        subject: Option<String>,
        outcome: Option<(i32, &str)>,
    ) -> Result<(), ConsoleError> {
        self.record_timed(user, action, detail, subject, outcome, Duration::ZERO)
            .await
    }

    async fn record_timed(
        &self,
        user: &str,
        action: &str,
        detail: String,
        subject: Option<String>,
        outcome: Option<(i32, &str)>,
        latency: Duration,
    ) -> Result<(), ConsoleError> {
        let mut entry = AuditEntry::new(EntryKind::AdminAction, Utc::now());
        entry.caller_unit = "console".into();
        entry.operator = sanitize_for_log(user, MAX_LOGGED_NAME_CHARS);
        entry.detail = if detail.is_empty() {
            action.to_owned()
        } else {
            sanitize_for_log(&format!("{action} {detail}"), MAX_LOGGED_DETAIL_CHARS)
        };
        entry.subject = subject.unwrap_or_default();
        if let Some((code, reason)) = outcome {
            entry.outcome_code = code;
            entry.outcome_reason = reason.to_owned();
        }
        entry.latency_us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.inner.backend.log.append(entry).await?;
        Ok(())
    }
}

/// A valid Argon2 hash of a random string, so an unknown name takes as long
/// to refuse as a wrong password.
fn dummy_hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| crate::auth::hash_password(&random_token()).unwrap_or_default())
}

pub(crate) fn html_response(status: StatusCode, body: String) -> ConsoleResponse {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    r
}

/// 421: this server does not answer for the host the request named. Plain
/// and short; the Host is not echoed.
fn misdirected() -> ConsoleResponse {
    let mut r = Response::new(Full::new(Bytes::from_static(
        b"misdirected request: this console answers only to its configured host names (allowed_hosts)\n",
    )));
    *r.status_mut() = StatusCode::MISDIRECTED_REQUEST;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

pub(crate) fn json(status: StatusCode, body: String) -> ConsoleResponse {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

pub(crate) fn redirect(to: &str, cookie: Option<&str>) -> ConsoleResponse {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::SEE_OTHER;
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    if let Some(c) = cookie.and_then(|c| HeaderValue::from_str(c).ok()) {
        r.headers_mut().append(header::SET_COOKIE, c);
    }
    r
}

pub(crate) fn error_page(
    status: StatusCode,
    title: &str,
    message: &str,
    admin: Option<&Admin>,
) -> ConsoleResponse {
    let frame = admin.map_or(
        Frame {
            user: None,
            csrf: None,
            active: "",
        },
        |a| a.frame(""),
    );
    let body = format!(
        "<p class=\"error\" id=\"error\">{}</p>",
        escape_html(message)
    );
    html_response(status, html::page(title, &frame, &body))
}

/// The log could not record the act, so nothing is shown (fail closed).
pub(crate) fn audit_unavailable(e: &ConsoleError, admin: Option<&Admin>) -> ConsoleResponse {
    tracing::error!(error = %e, "cannot log an administrator's act; refusing it");
    error_page(
        StatusCode::SERVICE_UNAVAILABLE,
        "审计日志不可用 Audit log unavailable",
        "无法记录此操作，因此未执行。This act could not be logged, so it was not carried out.",
        admin,
    )
}

const CONSOLE_CSS: &str = include_str!("../assets/console.css");
const PRINT_CSS: &str = include_str!("../assets/print.css");
const CONSOLE_JS: &str = include_str!("../assets/console.js");

fn asset_response(name: &str) -> ConsoleResponse {
    let (body, kind) = match name {
        "console.css" => (CONSOLE_CSS, "text/css; charset=utf-8"),
        "print.css" => (PRINT_CSS, "text/css; charset=utf-8"),
        "console.js" => (CONSOLE_JS, "text/javascript; charset=utf-8"),
        _ => {
            let mut r = Response::new(Full::new(Bytes::from_static(b"not found\n")));
            *r.status_mut() = StatusCode::NOT_FOUND;
            return r;
        }
    };
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use tongban_audit::{AuditConfig, LogSigner, SearchFilter, SqliteStore, origin_for_node};

    const ID: &str = "510421199603140825";

    struct Fixture {
        console: Console,
        store: Arc<dyn AuditStore>,
        log: AuditLog,
        dir: tempfile::TempDir,
    }

    async fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn AuditStore> = Arc::new(
            SqliteStore::open(&dir.path().join("audit.db"))
                .await
                .unwrap(),
        );
        let signer = LogSigner::generate(&origin_for_node("node-a")).unwrap();
        let keyring = Keyring::new().with(signer.verifier());
        let log = AuditLog::open(store.clone(), signer, AuditConfig::new("node-a"))
            .await
            .unwrap();
        let pseudonymizer = SubjectPseudonymizer::from_bytes(&[9u8; 32]).unwrap();
        for i in 0..5 {
            let mut e = AuditEntry::new(EntryKind::Lookup, Utc::now());
            e.department = "police".into();
            e.matter = "temporary-id-card".into();
            e.caller_org = "11510400MB1234567X".into();
            e.subject = pseudonymizer.pseudonym(if i == 0 { ID } else { "510402198001010015" });
            e.outcome_code = if i == 4 { 7 } else { 0 };
            e.latency_us = 1000 + i * 100;
            log.append(e).await.unwrap();
        }
        log.flush().await.unwrap();
        let mut settings = ConsoleSettings::default();
        settings
            .users
            .insert("admin".into(), crate::hash_password("s3cret-pw").unwrap());
        let console = Console::new(
            settings,
            ConsoleBackend {
                store: store.clone(),
                pseudonymizer,
                log: log.clone(),
                keyring,
            },
        )
        .unwrap();
        Fixture {
            console,
            store,
            log,
            dir,
        }
    }

    fn body(r: &ConsoleResponse) -> String {
        // Full<Bytes> is a single frame; clone it out synchronously.
        let full = r.body().clone();
        let rt = tokio::runtime::Handle::current();
        let bytes = tokio::task::block_in_place(|| {
            rt.block_on(async {
                use http_body_util::BodyExt;
                full.collect()
                    .await
                    .map(|c| c.to_bytes())
                    .unwrap_or_default()
            })
        });
        String::from_utf8_lossy(&bytes).into_owned()
    }

    fn set_cookies(r: &ConsoleResponse) -> Vec<String> {
        r.headers()
            .get_all(header::SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    }

    fn cookie_value(r: &ConsoleResponse, name: &str) -> String {
        set_cookies(r)
            .iter()
            .find_map(|c| {
                c.strip_prefix(&format!("{name}="))
                    .map(|v| v.split(';').next().unwrap().to_owned())
            })
            .unwrap()
    }

    /// A request as a browser on the console's default address sends it.
    fn request(path: &str) -> ConsoleRequest {
        let mut r = ConsoleRequest::get(path);
        r.headers
            .insert(header::HOST, HeaderValue::from_static("127.0.0.1:9465"));
        r
    }

    fn post(path: &str, cookies: &str, form: &str) -> ConsoleRequest {
        let mut r = request(path);
        r.method = Method::POST;
        r.headers
            .insert(header::COOKIE, HeaderValue::from_str(cookies).unwrap());
        r.body = Bytes::from(form.to_owned());
        r
    }

    fn get(path: &str, cookies: &str) -> ConsoleRequest {
        let mut r = request(path);
        r.headers
            .insert(header::COOKIE, HeaderValue::from_str(cookies).unwrap());
        r
    }

    /// Signs in; returns (session cookie header, csrf token).
    async fn sign_in(c: &Console) -> (String, String) {
        let form = c.handle(request("/login")).await;
        let login = cookie_value(&form, LOGIN_COOKIE);
        let r = c
            .handle(post(
                "/login",
                &format!("{LOGIN_COOKIE}={login}"),
                &format!("csrf={login}&user=admin&password=s3cret-pw"),
            ))
            .await;
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        let session = cookie_value(&r, SESSION_COOKIE);
        let cookie = format!("{SESSION_COOKIE}={session}");
        let csrf = c.inner.sessions.get(&session).unwrap().csrf;
        (cookie, csrf)
    }

    async fn admin_actions(store: &dyn AuditStore) -> Vec<tongban_audit::AuditEntry> {
        let filter = SearchFilter {
            kind: Some(EntryKind::AdminAction),
            ..Default::default()
        };
        store
            .search(&filter, None, 1000)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.entry)
            .collect()
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn every_response_carries_security_headers() {
        let f = fixture().await;
        for path in ["/login", "/search", "/static/console.css", "/nope"] {
            let r = f.console.handle(request(path)).await;
            let h = r.headers();
            let csp = h[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
            assert!(csp.contains("default-src 'self'"), "{path}");
            assert!(!csp.contains("unsafe-inline"), "{path}");
            assert_eq!(h[header::X_FRAME_OPTIONS], "DENY");
            assert_eq!(h[header::REFERRER_POLICY], "no-referrer");
            assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        }
        let r = f.console.handle(request("/static/console.js")).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert!(body(&r).contains("pollVerify"));
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn pages_without_a_session_redirect_to_sign_in() {
        let f = fixture().await;
        for path in [
            "/overview",
            "/search",
            "/integrity",
            "/entry?node=node-a&index=0",
        ] {
            let r = f.console.handle(get(path, "tb_session=forged")).await;
            assert_eq!(r.status(), StatusCode::SEE_OTHER, "{path}");
            assert_eq!(r.headers()[header::LOCATION], "/login");
        }
        let r = f.console.handle(request("/integrity/verify/status")).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn sign_in_sets_a_strict_http_only_session_and_is_logged() {
        let f = fixture().await;
        let form = f.console.handle(request("/login")).await;
        let login = cookie_value(&form, LOGIN_COOKIE);
        assert!(body(&form).contains(&format!("value=\"{login}\"")));

        // Wrong password: refused, logged with UNAUTHENTICATED.
        let r = f
            .console
            .handle(post(
                "/login",
                &format!("{LOGIN_COOKIE}={login}"),
                &format!("csrf={login}&user=admin&password=wrong"),
            ))
            .await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert!(body(&r).contains("login-error"));
        assert!(
            set_cookies(&r)
                .iter()
                .all(|c| !c.starts_with(SESSION_COOKIE))
        );

        // Missing login token: refused before any password check.
        let r = f
            .console
            .handle(post("/login", "", "user=admin&password=s3cret-pw"))
            .await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN);

        let r = f
            .console
            .handle(post(
                "/login",
                &format!("{LOGIN_COOKIE}={login}"),
                &format!("csrf={login}&user=admin&password=s3cret-pw"),
            ))
            .await;
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        let cookie = set_cookies(&r)
            .into_iter()
            .find(|c| c.starts_with(SESSION_COOKIE))
            .unwrap();
        assert!(cookie.contains("HttpOnly"));
        assert!(cookie.contains("SameSite=Strict"));
        assert!(!cookie.contains("Secure"), "not configured");
        let id = cookie_value(&r, SESSION_COOKIE);
        assert_eq!(id.len(), 64);

        let actions = admin_actions(f.store.as_ref()).await;
        let details: Vec<(&str, i32, &str)> = actions
            .iter()
            .map(|e| (e.detail.as_str(), e.outcome_code, e.operator.as_str()))
            .collect();
        assert!(
            details.contains(&("console.sign-in", 0, "admin")),
            "{details:?}"
        );
        assert!(
            details.contains(&("console.sign-in-refused", 16, "admin")),
            "{details:?}"
        );
    }

    /// Posts a sign-in form with a fresh login token.
    async fn try_sign_in(c: &Console, user: &str, password: &str) -> ConsoleResponse {
        let form = c.handle(request("/login")).await;
        let login = cookie_value(&form, LOGIN_COOKIE);
        c.handle(post(
            "/login",
            &format!("{LOGIN_COOKIE}={login}"),
            &format!(
                "csrf={login}&user={}&password={}",
                crate::html::url_encode(user),
                crate::html::url_encode(password)
            ),
        ))
        .await
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_refused_sign_in_logs_a_bounded_name_without_control_characters() {
        let f = fixture().await;
        let before = admin_actions(f.store.as_ref()).await.len();
        let name = format!(
            "adm\nin\x1b[31m\u{202E}\u{2066}{}\r\nforged line",
            "x\n\x1b[31m".repeat(1500)
        );
        assert!(name.len() > 10_000);
        let r = try_sign_in(&f.console, &name, "wrong").await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        let actions = admin_actions(f.store.as_ref()).await;
        assert_eq!(actions.len(), before + 1);
        let entry = &actions[0];
        assert_eq!(entry.detail, "console.sign-in-refused");
        assert_eq!(entry.outcome_reason, "WRONG_CREDENTIALS");
        assert!(entry.operator.chars().count() <= 64, "{:?}", entry.operator);
        assert!(entry.operator.starts_with("adm\u{FFFD}in\u{FFFD}[31m"));
        for text in [&entry.operator, &entry.detail] {
            assert!(
                !text.chars().any(crate::text::is_unsafe_for_log),
                "{text:?}"
            );
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn sign_in_is_throttled_per_name_and_over_all_names() {
        let f = fixture().await;
        for _ in 0..5 {
            let r = try_sign_in(&f.console, "admin", "wrong").await;
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        }
        // Locked: even the right password is not checked.
        let r = try_sign_in(&f.console, "admin", "s3cret-pw").await;
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(body(&r).contains("Too many attempts"));
        let actions = admin_actions(f.store.as_ref()).await;
        assert_eq!(actions[0].outcome_reason, "TOO_MANY_ATTEMPTS");

        // The global budget: spent by guesses at other names (recorded
        // here directly, rather than with an Argon2 check each), it refuses
        // a name that never failed, with the right password.
        let f = fixture().await;
        let now = Instant::now();
        let throttle = &f.console.inner.throttle;
        let mut spent = 0;
        while spent < 1000 && throttle.begin(&format!("guess-{spent}"), now).is_ok() {
            throttle.failed(&format!("guess-{spent}"), now);
            spent += 1;
        }
        assert!(spent < 1000, "the budget never ran out");
        let r = try_sign_in(&f.console, "admin", "s3cret-pw").await;
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        let actions = admin_actions(f.store.as_ref()).await;
        assert_eq!(actions[0].outcome_reason, "TOO_MANY_FAILED_SIGN_INS");
        assert_eq!(actions[0].operator, "admin");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn search_and_entry_refuse_control_characters_before_logging() {
        let f = fixture().await;
        let (cookie, csrf) = sign_in(&f.console).await;
        let before = admin_actions(f.store.as_ref()).await.len();
        for (path, want) in [
            ("/search?operator=a%0Ab", "operator: contains control"),
            ("/search?matter=x%1B%5B31m", "matter: contains control"),
            ("/search?case=%E2%80%AEabc", "case: contains control"),
            ("/export?department=a%0Db", "department: contains control"),
            (
                "/entry?node=node-a%0Aforged&index=0",
                "node: not a node name",
            ),
        ] {
            let r = f.console.handle(get(path, &cookie)).await;
            assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{path}");
            assert!(body(&r).contains(want), "{path}: {}", body(&r));
        }
        let long = "n".repeat(65);
        let r = f
            .console
            .handle(get(&format!("/entry?node={long}&index=0"), &cookie))
            .await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        let r = f
            .console
            .handle(post(
                "/search",
                &cookie,
                &format!("csrf={csrf}&operator=a%0Ab"),
            ))
            .await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        assert_eq!(admin_actions(f.store.as_ref()).await.len(), before);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn requests_for_another_host_or_none_are_refused_first() {
        let f = fixture().await;
        let (cookie, _) = sign_in(&f.console).await;
        let before = admin_actions(f.store.as_ref()).await.len();
        for host in [Some("evil.example:9465"), Some("127.0.0.1:9466"), None] {
            let mut r = get("/search", &cookie);
            match host {
                Some(h) => r.headers.insert(header::HOST, HeaderValue::from_static(h)),
                None => r.headers.remove(header::HOST),
            };
            let r = f.console.handle(r).await;
            assert_eq!(r.status(), StatusCode::MISDIRECTED_REQUEST, "{host:?}");
            assert!(set_cookies(&r).is_empty());
            assert!(!body(&r).contains("result-count"));
        }
        assert_eq!(admin_actions(f.store.as_ref()).await.len(), before);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn secure_cookie_flag_is_configurable() {
        let f = fixture().await;
        let mut settings = f.console.inner.settings.clone();
        settings.secure_cookie = true;
        let c = Console::new(settings, f.console.inner.backend.clone()).unwrap();
        let r = c.handle(request("/login")).await;
        assert!(set_cookies(&r).iter().all(|c| c.contains("; Secure")));
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn posts_without_the_session_csrf_token_are_refused() {
        let f = fixture().await;
        let (cookie, csrf) = sign_in(&f.console).await;
        let before = admin_actions(f.store.as_ref()).await.len();
        for form in [
            format!("id_number={ID}"),
            format!("csrf=&id_number={ID}"),
            format!("csrf={}&id_number={ID}", "0".repeat(64)),
        ] {
            let r = f.console.handle(post("/subject", &cookie, &form)).await;
            assert_eq!(r.status(), StatusCode::FORBIDDEN, "{form}");
        }
        let r = f
            .console
            .handle(post("/integrity/verify", &cookie, "csrf=bad"))
            .await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        assert_eq!(admin_actions(f.store.as_ref()).await.len(), before);

        let r = f
            .console
            .handle(post(
                "/subject",
                &cookie,
                &format!("csrf={csrf}&id_number={ID}"),
            ))
            .await;
        assert_eq!(r.status(), StatusCode::OK);
        let html = body(&r);
        assert!(html.contains("id=\"access-count\">1<"), "{html}");
        assert!(html.contains("510421********0825"));
        assert!(!html.contains(ID), "the identity number is not echoed");

        // Sign-out ends the session.
        let r = f
            .console
            .handle(post("/logout", &cookie, &format!("csrf={csrf}")))
            .await;
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        let r = f.console.handle(get("/search", &cookie)).await;
        assert_eq!(r.headers()[header::LOCATION], "/login");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn search_by_subject_never_puts_the_identity_number_in_a_url_or_the_log() {
        let f = fixture().await;
        let (cookie, csrf) = sign_in(&f.console).await;
        let r = f
            .console
            .handle(post(
                "/search",
                &cookie,
                &format!("csrf={csrf}&subject_id={ID}&department=police"),
            ))
            .await;
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        let location = r.headers()[header::LOCATION].to_str().unwrap().to_owned();
        assert!(!location.contains(ID));
        let pseudonym = f.console.inner.backend.pseudonymizer.pseudonym(ID);
        assert!(location.contains(&pseudonym), "{location}");

        let r = f.console.handle(get(&location, &cookie)).await;
        assert_eq!(r.status(), StatusCode::OK);
        let html = body(&r);
        assert!(html.contains("id=\"result-count\">1<"), "{html}");
        assert!(html.contains("/entry?node=node-a&amp;index=0"));
        // Sending the form again keeps the person filter, as a pseudonym.
        assert!(html.contains(&format!(
            "<input type=\"hidden\" name=\"subject\" value=\"{pseudonym}\">"
        )));
        assert!(!html.contains(ID));

        let actions = admin_actions(f.store.as_ref()).await;
        let search = actions
            .iter()
            .find(|e| e.detail.starts_with("console.search"))
            .unwrap();
        assert!(search.detail.contains(&pseudonym));
        assert!(actions.iter().all(|e| !e.detail.contains(ID)));

        // A bad identity number is refused with its reason.
        let r = f
            .console
            .handle(post(
                "/search",
                &cookie,
                &format!("csrf={csrf}&subject_id=510421199603140826"),
            ))
            .await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        assert!(body(&r).contains("check failed"));
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn search_pages_newest_first_with_a_cursor() {
        let f = fixture().await;
        for _ in 0..60 {
            let mut e = AuditEntry::new(EntryKind::Lookup, Utc::now());
            e.department = "hrss".into();
            f.log.append(e).await.unwrap();
        }
        let (cookie, _) = sign_in(&f.console).await;
        let r = f
            .console
            .handle(get("/search?department=hrss", &cookie))
            .await;
        let html = body(&r);
        assert!(html.contains("id=\"result-count\">50<"));
        let next = html
            .split("id=\"next-page\" href=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap()
            .replace("&amp;", "&");
        let r = f.console.handle(get(&next, &cookie)).await;
        let html = body(&r);
        assert!(html.contains("id=\"result-count\">10<"), "{html}");
        assert!(!html.contains("next-page"));
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn entry_detail_shows_a_verified_proof() {
        let f = fixture().await;
        let (cookie, _) = sign_in(&f.console).await;
        let r = f
            .console
            .handle(get("/entry?node=node-a&index=2", &cookie))
            .await;
        assert_eq!(r.status(), StatusCode::OK);
        let html = body(&r);
        assert!(html.contains("data-status=\"verified\""), "{html}");
        assert!(html.contains("tongban/audit/node-a"));

        // A key that is not pinned does not verify the same proof.
        let mut other = f.console.inner.backend.clone();
        other.keyring = Keyring::new().with(
            LogSigner::generate(&origin_for_node("node-a"))
                .unwrap()
                .verifier(),
        );
        let c = Console::new(f.console.inner.settings.clone(), other).unwrap();
        let (cookie, _) = sign_in(&c).await;
        let html = body(&c.handle(get("/entry?node=node-a&index=2", &cookie)).await);
        assert!(html.contains("data-status=\"failed\""), "{html}");

        let r = f
            .console
            .handle(get("/entry?node=node-a&index=999", &cookie))
            .await;
        assert_eq!(r.status(), StatusCode::SEE_OTHER, "other console's session");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn verify_runs_in_the_background_and_reports_a_verdict() {
        let f = fixture().await;
        let (cookie, csrf) = sign_in(&f.console).await;
        let r = f
            .console
            .handle(post("/integrity/verify", &cookie, &format!("csrf={csrf}")))
            .await;
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        let mut state = String::new();
        for _ in 0..200 {
            let r = f
                .console
                .handle(get("/integrity/verify/status", &cookie))
                .await;
            let v: serde_json::Value = serde_json::from_str(&body(&r)).unwrap();
            state = v["state"].as_str().unwrap().to_owned();
            if state != "running" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(state, "passed");
        let html = body(&f.console.handle(get("/integrity", &cookie)).await);
        assert!(html.contains("data-state=\"passed\""));
        assert!(html.contains("节点 Node node-a"));
        let actions = admin_actions(f.store.as_ref()).await;
        assert!(actions.iter().any(|e| e.detail == "console.verify-started"));
        assert!(actions.iter().any(|e| {
            e.detail
                .starts_with("console.verify-finished result=passed")
        }));
    }

    async fn run_verify(c: &Console, cookie: &str, csrf: &str) -> serde_json::Value {
        let r = c
            .handle(post("/integrity/verify", cookie, &format!("csrf={csrf}")))
            .await;
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        for _ in 0..200 {
            let r = c.handle(get("/integrity/verify/status", cookie)).await;
            let v: serde_json::Value = serde_json::from_str(&body(&r)).unwrap();
            if v["state"] != "running" {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("verification did not finish within 10 s");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_tampered_entry_fails_verification_and_its_proof() {
        let f = fixture().await;
        let (cookie, csrf) = sign_in(&f.console).await;
        // An insider edits a stored entry behind the exchange's back.
        let db = sqlx::SqlitePool::connect(&format!(
            "sqlite://{}",
            f.dir.path().join("audit.db").display()
        ))
        .await
        .unwrap();
        sqlx::query("UPDATE audit_entries SET department = 'civil' WHERE idx = 1")
            .execute(&db)
            .await
            .unwrap();
        let v = run_verify(&f.console, &cookie, &csrf).await;
        assert_eq!(v["state"], "failed", "{v}");
        let findings = v["findings"].as_array().unwrap();
        assert!(
            findings
                .iter()
                .any(|x| x["severity"] == "error" && x["location"] == "entry 1"),
            "{v}"
        );
        let html = body(&f.console.handle(get("/integrity", &cookie)).await);
        assert!(html.contains("data-state=\"failed\""));
        assert!(html.contains("entry 1"));
        let html = body(
            &f.console
                .handle(get("/entry?node=node-a&index=1", &cookie))
                .await,
        );
        assert!(html.contains("id=\"leaf-mismatch\""), "{html}");
        assert!(html.contains("data-status=\"failed\""), "{html}");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn export_writes_json_lines_and_is_logged() {
        let f = fixture().await;
        let (cookie, _) = sign_in(&f.console).await;
        let r = f
            .console
            .handle(get("/export?department=police", &cookie))
            .await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()[header::CONTENT_TYPE], "application/x-ndjson");
        let text = body(&r);
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 5);
        assert!(
            lines
                .iter()
                .all(|l| l["department"] == "police" && l["leaf_hash"].is_string())
        );
        let actions = admin_actions(f.store.as_ref()).await;
        assert!(
            actions
                .iter()
                .any(|e| e.detail == "console.export filter: department=police")
        );
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn overview_renders_charts_from_the_last_day() {
        let f = fixture().await;
        let (cookie, _) = sign_in(&f.console).await;
        let html = body(&f.console.handle(get("/overview", &cookie)).await);
        assert!(html.contains("id=\"total-requests\">5<"), "{html}");
        assert!(html.contains("<svg class=\"chart\" id=\"chart-lookups\""));
        assert!(html.contains("20.0%"), "1 denial in 5");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn acts_are_refused_when_the_log_cannot_record_them() {
        let f = fixture().await;
        let (cookie, _) = sign_in(&f.console).await;
        f.log.shutdown().await.unwrap();
        let r = f.console.handle(get("/search", &cookie)).await;
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(!body(&r).contains("result-count"));
    }
}
