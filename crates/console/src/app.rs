//! The HTTP application: routes, and the middleware every request passes
//! through, outermost first:
//!
//! 1. security headers on every response (tower-http `SetResponseHeader`),
//!    refusals included;
//! 2. the `Host` allow-list: 421 before any other work, so a page whose
//!    name was rebound to this address gets nothing, not even a cookie;
//! 3. a deadline for the whole request, body included (tower-http);
//! 4. a bound on the body (tower-http `RequestBodyLimit`, 413).

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use tower::ServiceExt;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::timeout::TimeoutLayer;
use tracing::Instrument;

use crate::routes;
use crate::state::Console;

/// Largest request body read (the longest form, a search with every field
/// full, is a few KiB).
pub(crate) const MAX_BODY: usize = 64 * 1024;
/// Longest a request may take, reading its body included; an export of
/// `MAX_EXPORT` entries takes a few seconds.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

const SECURITY_HEADERS: [(header::HeaderName, &str); 5] = [
    (
        header::CONTENT_SECURITY_POLICY,
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    ),
    (header::X_FRAME_OPTIONS, "DENY"),
    (header::REFERRER_POLICY, "no-referrer"),
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (header::CACHE_CONTROL, "no-store"),
];

/// One HTTP request, body already read: what [`Console::handle`] answers
/// without a listener (tests, embedding).
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
}

/// A whole response, body included.
pub type ConsoleResponse = hyper::Response<Full<Bytes>>;

impl Console {
    /// The console as an axum router, every middleware applied.
    pub fn router(&self) -> Router {
        let mut router = Router::new()
            .route("/", get(routes::root))
            .route("/login", get(routes::login_page).post(routes::login))
            .route("/logout", post(routes::logout))
            .route("/favicon.ico", get(routes::favicon))
            .route("/static/{*name}", get(routes::asset))
            .route("/overview", get(routes::overview))
            .route("/search", get(routes::search).post(routes::search_post))
            .route("/export", get(routes::export))
            .route("/entry", get(routes::entry))
            .route(
                "/subject",
                get(routes::subject_form).post(routes::subject_report),
            )
            .route("/integrity", get(routes::integrity))
            .route("/integrity/verify", post(routes::start_verify))
            .route("/integrity/verify/status", get(routes::verify_status))
            .fallback(routes::not_found)
            // The limit below replaces axum's default one.
            .layer(DefaultBodyLimit::disable())
            .layer(RequestBodyLimitLayer::new(MAX_BODY))
            .layer(TimeoutLayer::with_status_code(
                StatusCode::REQUEST_TIMEOUT,
                REQUEST_TIMEOUT,
            ))
            .layer(middleware::from_fn_with_state(
                self.clone(),
                require_allowed_host,
            ));
        for (name, value) in SECURITY_HEADERS {
            router = router.layer(SetResponseHeaderLayer::overriding(
                name,
                HeaderValue::from_static(value),
            ));
        }
        router.with_state(self.clone())
    }

    /// Answers one request as the listener would (every middleware
    /// applied), without a connection.
    pub async fn handle(&self, request: ConsoleRequest) -> ConsoleResponse {
        let uri = if request.query.is_empty() {
            request.path
        } else {
            format!("{}?{}", request.path, request.query)
        };
        let mut http = Request::new(Body::from(request.body));
        *http.method_mut() = request.method;
        *http.headers_mut() = request.headers;
        match uri.parse() {
            Ok(uri) => *http.uri_mut() = uri,
            Err(_) => return full(StatusCode::BAD_REQUEST.into_response()).await,
        }
        let response = match self.router().oneshot(http).await {
            Ok(r) => r,
            Err(never) => match never {},
        };
        full(response).await
    }
}

/// The response with its body read (ours are all in memory already).
async fn full(response: Response) -> ConsoleResponse {
    let (parts, body) = response.into_parts();
    let bytes = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) => {
            tracing::warn!(error = %e, "console response body failed");
            Bytes::new()
        }
    };
    hyper::Response::from_parts(parts, Full::new(bytes))
}

/// Refuses a request for another host before anything else looks at it;
/// the span names the method and path only (a query may hold a
/// pseudonym).
async fn require_allowed_host(
    State(console): State<Console>,
    request: Request,
    next: Next,
) -> Response {
    let span = tracing::debug_span!(
        "console_request",
        method = %request.method(),
        path = %request.uri().path()
    );
    async move {
        let authority = request.uri().authority().map(|a| a.as_str());
        if console.host_allowed(authority, request.headers()) {
            next.run(request).await
        } else {
            tracing::debug!("console request refused: Host header missing or not allowed");
            misdirected()
        }
    }
    .instrument(span)
    .await
}

/// 421: this server does not answer for the host the request named. Plain
/// and short; the Host is not echoed.
fn misdirected() -> Response {
    (
        StatusCode::MISDIRECTED_REQUEST,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        )],
        "misdirected request: this console answers only to its configured host names (allowed_hosts)\n",
    )
        .into_response()
}
