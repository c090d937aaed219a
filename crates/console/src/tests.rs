//! The console answering requests in memory (`Console::handle`): pages,
//! sessions, CSRF, headers, audit.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::{HeaderValue, Method, StatusCode, header};
use chrono::Utc;
use hyper::body::Bytes;
use tongban_audit::{
    AuditConfig, AuditEntry, AuditLog, AuditStore, EntryKind, Keyring, LogSigner, SearchFilter,
    SqliteStore, SubjectPseudonymizer, origin_for_node,
};

use crate::routes::{LOGIN_COOKIE, SESSION_COOKIE};
use crate::{Console, ConsoleBackend, ConsoleRequest, ConsoleResponse, ConsoleSettings};

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
            crate::url::url_encode(user),
            crate::url::url_encode(password)
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

// What an attacker tries against the HTTP stack itself.

fn assert_security_headers(r: &ConsoleResponse, what: &str) {
    let h = r.headers();
    assert!(
        h[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap()
            .contains("frame-ancestors 'none'"),
        "{what}"
    );
    assert_eq!(h[header::X_FRAME_OPTIONS], "DENY", "{what}");
    assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff", "{what}");
    assert_eq!(h[header::CACHE_CONTROL], "no-store", "{what}");
}

fn with_body(mut r: ConsoleRequest, body: &'static [u8]) -> ConsoleRequest {
    r.body = Bytes::from_static(body);
    r
}

#[tokio::test(flavor = "multi_thread")]
async fn oversize_bodies_are_refused_with_413_before_any_work() {
    let f = fixture().await;
    let (cookie, csrf) = sign_in(&f.console).await;
    let before = admin_actions(f.store.as_ref()).await.len();
    let pad = "x".repeat(crate::app::MAX_BODY);

    // A valid form, padded past the limit: nothing of it is acted on.
    let r = f
        .console
        .handle(post(
            "/subject",
            &cookie,
            &format!("csrf={csrf}&id_number={ID}&pad={pad}"),
        ))
        .await;
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_security_headers(&r, "413");
    assert!(!body(&r).contains("access-count"));

    // A sign-in with the right password, padded: no session.
    let form = f.console.handle(request("/login")).await;
    let login = cookie_value(&form, LOGIN_COOKIE);
    let r = f
        .console
        .handle(post(
            "/login",
            &format!("{LOGIN_COOKIE}={login}"),
            &format!("csrf={login}&user=admin&password=s3cret-pw&pad={pad}"),
        ))
        .await;
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(set_cookies(&r).is_empty());

    // A declared length over the limit is refused without reading on.
    let mut r = post("/search", &cookie, &format!("csrf={csrf}"));
    r.headers
        .insert(header::CONTENT_LENGTH, HeaderValue::from_static("10000000"));
    let r = f.console.handle(r).await;
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);

    // Just under the limit is still a form.
    let fits = format!("csrf={csrf}&id_number={ID}&pad=");
    let fits = format!("{fits}{}", "x".repeat(crate::app::MAX_BODY - fits.len()));
    let r = f.console.handle(post("/subject", &cookie, &fits)).await;
    assert_eq!(r.status(), StatusCode::OK);

    let actions = admin_actions(f.store.as_ref()).await;
    assert_eq!(actions.len(), before + 1, "only the report that fits");
    assert_eq!(
        actions[0].detail.split(' ').next(),
        Some("console.subject-report")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_methods_get_405_and_change_nothing() {
    let f = fixture().await;
    let (cookie, _) = sign_in(&f.console).await;
    let before = admin_actions(f.store.as_ref()).await.len();
    for (method, path) in [
        // A sign-out link an attacker's page could embed.
        (Method::GET, "/logout"),
        (Method::GET, "/integrity/verify"),
        (Method::PUT, "/search"),
        (Method::DELETE, "/subject"),
        (Method::POST, "/overview"),
        (Method::PATCH, "/login"),
        (Method::POST, "/integrity/verify/status"),
    ] {
        let mut r = get(path, &cookie);
        r.method = method.clone();
        let r = f.console.handle(r).await;
        assert_eq!(
            r.status(),
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path}"
        );
        assert!(r.headers().contains_key(header::ALLOW), "{method} {path}");
        assert_security_headers(&r, path);
        assert!(set_cookies(&r).is_empty(), "{method} {path}");
    }
    assert_eq!(admin_actions(f.store.as_ref()).await.len(), before);
    assert!(!f.console.inner.verify.status_json().contains("running"));
    // GET /logout did not end the session.
    let r = f.console.handle(get("/search", &cookie)).await;
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_forms_are_refused_and_leave_no_trace() {
    let f = fixture().await;
    let (cookie, csrf) = sign_in(&f.console).await;
    let before = admin_actions(f.store.as_ref()).await.len();
    for form in [
        &b"\xff\xfe\x00\x01 not a form"[..],
        b"csrf",
        b"csrf=",
        b"=&=&&==",
        b"%%%%%%",
        b"csrf=%zz%ff",
    ] {
        let r = f
            .console
            .handle(with_body(post("/subject", &cookie, ""), form))
            .await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{form:?}");
        assert!(!body(&r).contains("access-count"));
        let r = f
            .console
            .handle(with_body(post("/login", "tb_login=", ""), form))
            .await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{form:?}");
        assert!(
            set_cookies(&r)
                .iter()
                .all(|c| !c.starts_with(SESSION_COOKIE)),
            "{form:?}"
        );
    }
    // The token with an escape in it, or a byte short, is not the token.
    for form in [
        format!("csrf={}%{}", &csrf[..62], &csrf[62..]),
        format!("csrf={}&id_number={ID}", &csrf[..63]),
        format!("csrf={csrf}%00&id_number={ID}"),
    ] {
        let r = f.console.handle(post("/subject", &cookie, &form)).await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{form}");
    }
    assert_eq!(admin_actions(f.store.as_ref()).await.len(), before);

    // A right token with a malformed field gets the field's error.
    let r = f
        .console
        .handle(post(
            "/subject",
            &cookie,
            &format!("csrf={csrf}&id_number=%ff%fe"),
        ))
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    // Bad escapes in a query string are text, not a crash.
    let r = f
        .console
        .handle(get("/search?department=%zz%ff&kind=%", &cookie))
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST, "kind % is no kind");
    let r = f
        .console
        .handle(get("/entry?node=node-a&index=%ff", &cookie))
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test(flavor = "multi_thread")]
async fn csrf_tokens_are_bound_to_their_session() {
    let f = fixture().await;
    let (cookie_a, csrf_a) = sign_in(&f.console).await;
    let (cookie_b, csrf_b) = sign_in(&f.console).await;
    assert_ne!(csrf_a, csrf_b);
    let before = admin_actions(f.store.as_ref()).await.len();
    for (path, form) in [
        ("/logout", format!("csrf={csrf_b}")),
        ("/integrity/verify", format!("csrf={csrf_b}")),
        ("/search", format!("csrf={csrf_b}&department=police")),
        ("/search", "department=police".to_owned()),
        // The sign-in form's token is not a session's.
        ("/logout", format!("csrf={}", "a".repeat(64))),
    ] {
        let r = f.console.handle(post(path, &cookie_a, &form)).await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{path} {form}");
    }
    assert_eq!(admin_actions(f.store.as_ref()).await.len(), before);
    // Both sessions live on.
    for cookie in [&cookie_a, &cookie_b] {
        let r = f.console.handle(get("/search", cookie)).await;
        assert_eq!(r.status(), StatusCode::OK);
    }

    // The sign-in's double-submit token must match its own cookie.
    let form = f.console.handle(request("/login")).await;
    let login = cookie_value(&form, LOGIN_COOKIE);
    let r = f
        .console
        .handle(post(
            "/login",
            &format!("{LOGIN_COOKIE}={login}"),
            &format!("csrf={}&user=admin&password=s3cret-pw", "b".repeat(64)),
        ))
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(
        set_cookies(&r)
            .iter()
            .all(|c| !c.starts_with(SESSION_COOKIE))
    );
}

/// Signs in with extra cookies in the request; returns the response.
async fn sign_in_with(c: &Console, extra_cookie: &str) -> ConsoleResponse {
    let form = c.handle(request("/login")).await;
    let login = cookie_value(&form, LOGIN_COOKIE);
    c.handle(post(
        "/login",
        &format!("{LOGIN_COOKIE}={login}; {extra_cookie}"),
        &format!("csrf={login}&user=admin&password=s3cret-pw"),
    ))
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn sign_in_never_adopts_a_session_id_the_browser_brought() {
    let f = fixture().await;
    // An id the attacker made up and planted in the victim's browser.
    let planted = "ab".repeat(32);
    let r = sign_in_with(&f.console, &format!("{SESSION_COOKIE}={planted}")).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let issued = cookie_value(&r, SESSION_COOKIE);
    assert_ne!(issued, planted);
    let r = f
        .console
        .handle(get("/search", &format!("{SESSION_COOKIE}={planted}")))
        .await;
    assert_eq!(r.headers()[header::LOCATION], "/login");

    // The attacker's own live session, planted: the victim's sign-in ends
    // it, so the attacker cannot watch what the victim does.
    let (attacker_cookie, _) = sign_in(&f.console).await;
    let r = sign_in_with(&f.console, &attacker_cookie).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let issued = cookie_value(&r, SESSION_COOKIE);
    assert_ne!(format!("{SESSION_COOKIE}={issued}"), attacker_cookie);
    let r = f.console.handle(get("/search", &attacker_cookie)).await;
    assert_eq!(r.headers()[header::LOCATION], "/login");
    let r = f
        .console
        .handle(get("/search", &format!("{SESSION_COOKIE}={issued}")))
        .await;
    assert_eq!(r.status(), StatusCode::OK);

    // The id is the whole secret: its first half alone, or with the
    // second half guessed, is nobody's session.
    let guessed = format!("{}{}", &issued[..32], "0".repeat(32));
    for id in [&issued[..32], guessed.as_str()] {
        let r = f
            .console
            .handle(get("/search", &format!("{SESSION_COOKIE}={id}")))
            .await;
        assert_eq!(r.headers()[header::LOCATION], "/login", "{id}");
    }
}

/// Tree sizes of the checkpoint rows on an integrity page.
fn checkpoint_sizes(html: &str) -> Vec<u64> {
    html.split("<td class=\"num\">")
        .skip(1)
        .filter_map(|s| s.split('<').next()?.parse().ok())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_integrity_page_reads_one_page_of_checkpoints_and_pages_back() {
    let f = fixture().await;
    for _ in 0..30 {
        f.log
            .append(AuditEntry::new(EntryKind::Lookup, Utc::now()))
            .await
            .unwrap();
        f.log.flush().await.unwrap();
    }
    // The store's page agrees with the whole list.
    let all = f.store.checkpoints("node-a").await.unwrap();
    assert!(all.len() > 30, "{}", all.len());
    let page = f
        .store
        .checkpoints_page("node-a", Some(all[10].tree_size), 4)
        .await
        .unwrap();
    let want: Vec<u64> = all[6..10].iter().rev().map(|c| c.tree_size).collect();
    let got: Vec<u64> = page.iter().map(|c| c.tree_size).collect();
    assert_eq!(got, want);
    assert_eq!(
        f.store.checkpoint_count("node-a").await.unwrap(),
        all.len() as u64
    );

    let (cookie, _) = sign_in(&f.console).await;
    let html = body(&f.console.handle(get("/integrity", &cookie)).await);
    let first = checkpoint_sizes(&html);
    assert_eq!(first.len(), crate::routes::CHECKPOINTS_SHOWN as usize);
    assert!(first.windows(2).all(|w| w[0] > w[1]), "newest first");
    assert!(html.contains(" are shown."), "{html}");
    let older = html
        .split("class=\"older\" href=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .replace("&amp;", "&");
    assert_eq!(
        older,
        format!("/integrity?node=node-a&below={}", first[first.len() - 1])
    );
    let html = body(&f.console.handle(get(&older, &cookie)).await);
    let second = checkpoint_sizes(&html);
    assert!(!second.is_empty());
    assert!(second.iter().all(|s| *s < first[first.len() - 1]));
    assert!(html.contains("« 最新 Newest"));
    let actions = admin_actions(f.store.as_ref()).await;
    assert_eq!(
        actions[0].detail,
        format!(
            "console.integrity node=node-a below={}",
            first[first.len() - 1]
        )
    );
}
