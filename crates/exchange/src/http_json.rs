//! The HTTP/JSON front door: the `Exchange` service's routes
//! (`tongban_proto::json::ROUTES`), served on the gRPC listener itself.
//!
//! A layer in front of the whole gRPC stack. A request whose content type is
//! `application/grpc…` passes straight through. Any other request is one of
//! the JSON routes (or a JSON 404/405): its JSON is transcoded to the
//! protobuf request, and the layer calls the gRPC stack below it with that
//! message, as a gRPC client would: same connection extensions (so the same
//! client certificate is the caller), the deadline ([`TIMEOUT_HEADER`]) and
//! trace headers. So a
//! JSON call goes through exactly what a gRPC call does — server span and
//! metrics under the RPC's name, the size guard, authentication, rate and
//! refusal budgets, the pipeline, the audit log, the one
//! `ExchangeError` → `Status` mapping — and its answer is transcoded back:
//! the response message as proto3 JSON, or the `Status` as
//! `{"code", "message", "details": [...]}` with the HTTP status of its code
//! (and the refusal's audit receipt, `Retry-After` when there is a retry
//! delay).
//!
//! A JSON body over the policy's `max_request_bytes` is not read further:
//! the layer hands the gRPC stack a request whose length prefix declares
//! that size, and the size guard refuses it (audited) as it refuses a gRPC
//! one; the answer is 413.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use http_body_util::{BodyExt, Full};
use tongban_proto::json::{self as pjson, OPENAPI_PATH, ROUTES, Route};
use tonic::body::Body;
use tonic_types::{ErrorDetails, StatusExt};
use tower::Service;

use crate::error::{ERROR_DOMAIN, ExchangeError};
use crate::pipeline::Exchange;
use crate::routing::parse_grpc_timeout;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Request headers passed on to the gRPC call.
const FORWARDED_HEADERS: &[&str] = &["traceparent", "tracestate", "user-agent"];

/// A JSON call's deadline, in `grpc-timeout`'s syntax (`5S`, `800m`); it
/// becomes the gRPC call's `grpc-timeout`. JSON calls do not send
/// `grpc-timeout` itself: tonic enforces that header outside this layer,
/// where its expiry could only be answered in gRPC's form, not JSON.
pub const TIMEOUT_HEADER: &str = tongban_proto::json::TIMEOUT_HEADER;

/// The trailer a refusal's audit receipt travels in.
const RECEIPT_TRAILER: &str = "tongban-receipt-bin";

/// Puts the HTTP/JSON routes in front of a gRPC stack (see the module docs).
#[derive(Clone)]
pub struct HttpJsonLayer {
    exchange: Exchange,
}

impl std::fmt::Debug for HttpJsonLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpJsonLayer").finish_non_exhaustive()
    }
}

impl HttpJsonLayer {
    /// `exchange` gives the policy's `max_request_bytes` for JSON bodies.
    pub fn new(exchange: Exchange) -> Self {
        Self { exchange }
    }
}

impl<S> tower::Layer<S> for HttpJsonLayer {
    type Service = HttpJson<S>;

    fn layer(&self, inner: S) -> Self::Service {
        HttpJson {
            inner,
            exchange: self.exchange.clone(),
        }
    }
}

/// The service [`HttpJsonLayer`] puts in front of the gRPC stack.
#[derive(Clone)]
pub struct HttpJson<S> {
    inner: S,
    exchange: Exchange,
}

impl<S> std::fmt::Debug for HttpJson<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpJson").finish_non_exhaustive()
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

impl<S, RB> Service<http::Request<Body>> for HttpJson<S>
where
    S: Service<http::Request<Body>, Response = http::Response<RB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    RB: http_body::Body<Data = Bytes> + Send + 'static,
    RB::Error: Into<BoxError>,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<http::Response<Body>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        // The clone that was driven to readiness serves this call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        if is_grpc(request.headers()) {
            let future = inner.call(request);
            return Box::pin(async move { Ok(future.await?.map(Body::new)) });
        }
        let limit = self.exchange.policy().limits().max_request_bytes;
        Box::pin(answer(inner, request, limit))
    }
}

fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

/// A JSON request, answered.
async fn answer<S, RB>(
    inner: S,
    request: http::Request<Body>,
    limit: usize,
) -> Result<http::Response<Body>, S::Error>
where
    S: Service<http::Request<Body>, Response = http::Response<RB>> + Send + 'static,
    S::Future: Send + 'static,
    RB: http_body::Body<Data = Bytes> + Send + 'static,
    RB::Error: Into<BoxError>,
{
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().to_owned();
    if path == OPENAPI_PATH {
        return Ok(if parts.method == Method::GET {
            openapi_response()
        } else {
            method_not_allowed(&parts.method, &path, &["GET"])
        });
    }
    let matched: Vec<(&Route, Option<(&str, &str)>)> = ROUTES
        .iter()
        .filter_map(|route| route.matches(&path).map(|bound| (route, bound)))
        .collect();
    let Some(&(route, bound)) = matched
        .iter()
        .find(|(route, _)| route.method.as_str() == parts.method.as_str())
    else {
        return Ok(if matched.is_empty() {
            no_such_route(&parts.method, &path)
        } else {
            let allowed: Vec<&str> = matched.iter().map(|(r, _)| r.method.as_str()).collect();
            method_not_allowed(&parts.method, &path, &allowed)
        });
    };
    let payload = match request_message(route, bound, &parts, body, limit).await {
        Ok(payload) => payload,
        Err(refusal) => return Ok(refusal),
    };
    call_grpc(inner, route, parts, payload).await
}

/// The request message, or how much over the limit its body is.
enum Payload {
    Message(Vec<u8>),
    TooLarge(usize),
}

/// The route's request message from the body, path and query.
async fn request_message(
    route: &Route,
    bound: Option<(&str, &str)>,
    parts: &http::request::Parts,
    body: Body,
    limit: usize,
) -> Result<Payload, http::Response<Body>> {
    if parts.headers.contains_key("grpc-timeout") {
        return Err(invalid(
            "grpc-timeout",
            format!(
                "is for gRPC calls; an HTTP/JSON call sets its deadline with {TIMEOUT_HEADER} (same syntax, e.g. 5S)"
            ),
        ));
    }
    if let Some(value) = parts.headers.get(TIMEOUT_HEADER)
        && value.to_str().ok().and_then(parse_grpc_timeout).is_none()
    {
        return Err(invalid(
            TIMEOUT_HEADER,
            "is not a timeout: 1 to 8 digits and a unit (H, M, S, m, u, n), e.g. 5S",
        ));
    }
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if let Some(size) = declared.filter(|size| *size > limit) {
        return Ok(Payload::TooLarge(size));
    }
    let bytes = match read_bounded(body, limit).await {
        Ok(Some(bytes)) => bytes,
        Ok(None) => return Ok(Payload::TooLarge(declared.unwrap_or(limit + 1))),
        Err(why) => return Err(invalid("body", why)),
    };
    let input = route.method().input();
    let mut fields: Vec<(&str, String)> = Vec::new();
    for (name, value) in form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes()) {
        let Some(known) = route.query.iter().find(|q| **q == name) else {
            let accepted = if route.query.is_empty() {
                "none".to_owned()
            } else {
                route.query.join(", ")
            };
            return Err(invalid(
                &name,
                format!(
                    "is not a query parameter of {} {}; accepted: {accepted}",
                    route.method.as_str(),
                    route.path
                ),
            ));
        };
        if fields.iter().any(|(n, _)| n == known) {
            return Err(invalid(known, "is given twice"));
        }
        fields.push((known, value.into_owned()));
    }
    if let Some((name, raw)) = bound {
        let value = percent_encoding::percent_decode_str(raw)
            .decode_utf8()
            .map_err(|_| invalid(name, "is not UTF-8 once percent-decoded"))?;
        fields.push((name, value.into_owned()));
    }
    let encoded = if route.body {
        if let Some(kind) = parts.headers.get(header::CONTENT_TYPE)
            && !is_json(kind)
        {
            return Err(error_response(
                tonic::Code::InvalidArgument,
                format!(
                    "{} {} takes application/json, not {:?}",
                    route.method.as_str(),
                    route.path,
                    String::from_utf8_lossy(kind.as_bytes())
                ),
                "UNSUPPORTED_MEDIA_TYPE",
                Some(StatusCode::UNSUPPORTED_MEDIA_TYPE),
            ));
        }
        pjson::json_to_protobuf(&input, &bytes)
    } else {
        if !bytes.is_empty() {
            return Err(invalid(
                "body",
                format!("{} {} takes no body", route.method.as_str(), route.path),
            ));
        }
        pjson::fields_to_protobuf(&input, &fields)
    };
    encoded
        .map(Payload::Message)
        .map_err(|e| invalid("body", e.to_string()))
}

fn is_json(content_type: &HeaderValue) -> bool {
    content_type.to_str().ok().is_some_and(|v| {
        let essence = v.split(';').next().unwrap_or("").trim();
        essence.eq_ignore_ascii_case("application/json")
    })
}

/// The body if it is at most `limit` bytes; `None` as soon as it is over.
async fn read_bounded(mut body: Body, limit: usize) -> Result<Option<Bytes>, String> {
    let mut buffer = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("the request body broke off: {e}"))?;
        if let Ok(data) = frame.into_data() {
            if buffer.len() + data.len() > limit {
                return Ok(None);
            }
            buffer.extend_from_slice(&data);
        }
    }
    Ok(Some(buffer.freeze()))
}

/// Calls the RPC through the gRPC stack below and transcodes its answer.
async fn call_grpc<S, RB>(
    mut inner: S,
    route: &Route,
    parts: http::request::Parts,
    payload: Payload,
) -> Result<http::Response<Body>, S::Error>
where
    S: Service<http::Request<Body>, Response = http::Response<RB>> + Send + 'static,
    S::Future: Send + 'static,
    RB: http_body::Body<Data = Bytes> + Send + 'static,
    RB::Error: Into<BoxError>,
{
    let (frame, too_large) = match payload {
        Payload::Message(message) => match u32::try_from(message.len()) {
            Ok(len) => {
                let mut frame = Vec::with_capacity(message.len() + 5);
                frame.push(0);
                frame.extend_from_slice(&len.to_be_bytes());
                frame.extend_from_slice(&message);
                (frame, false)
            }
            Err(_) => (oversize_prefix(message.len()), true),
        },
        // The size guard reads the declared length and refuses it.
        Payload::TooLarge(size) => (oversize_prefix(size), true),
    };
    let mut request = http::Request::new(Body::new(Full::new(Bytes::from(frame))));
    *request.method_mut() = Method::POST;
    *request.version_mut() = http::Version::HTTP_2;
    match route.grpc_path().parse() {
        Ok(uri) => *request.uri_mut() = uri,
        Err(_) => return Ok(internal("the route's gRPC path is not a URI")),
    }
    let headers = request.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    headers.insert(header::TE, HeaderValue::from_static("trailers"));
    if let Some(value) = parts.headers.get(TIMEOUT_HEADER) {
        headers.insert("grpc-timeout", value.clone());
    }
    for name in FORWARDED_HEADERS {
        if let Some(value) = parts.headers.get(*name) {
            headers.insert(*name, value.clone());
        }
    }
    // The connection's facts, the verified client certificate among them.
    *request.extensions_mut() = parts.extensions;

    let response = inner.call(request).await?;
    let (head, body) = response.into_parts();
    let collected = match body.collect().await {
        Ok(collected) => collected,
        Err(e) => {
            let e: BoxError = e.into();
            tracing::warn!(error = %e, rpc = route.rpc, "HTTP/JSON: the gRPC answer broke off");
            return Ok(internal("the answer broke off"));
        }
    };
    let trailers = collected.trailers().cloned();
    let status = tonic::Status::from_header_map(&head.headers)
        .or_else(|| trailers.as_ref().and_then(tonic::Status::from_header_map));
    match status {
        Some(status) if status.code() != tonic::Code::Ok => {
            let http = too_large.then_some(StatusCode::PAYLOAD_TOO_LARGE);
            return Ok(status_response(&status, http));
        }
        Some(_) => {}
        None => return Ok(internal("the answer carried no gRPC status")),
    }
    let bytes = collected.to_bytes();
    let message = match bytes.get(5..) {
        Some(message) if bytes[0] == 0 && message.len() == frame_len(&bytes) => message,
        _ => return Ok(internal("the answer is not one uncompressed gRPC message")),
    };
    match pjson::protobuf_to_json(&route.method().output(), message) {
        Ok(json) => Ok(json_response(StatusCode::OK, &json)),
        Err(e) => {
            tracing::warn!(error = %e, rpc = route.rpc, "HTTP/JSON: cannot transcode the answer");
            Ok(internal("the answer could not be written as JSON"))
        }
    }
}

/// A gRPC length prefix declaring `size` bytes, and nothing after it.
fn oversize_prefix(size: usize) -> Vec<u8> {
    let declared = u32::try_from(size).unwrap_or(u32::MAX);
    let mut frame = vec![0];
    frame.extend_from_slice(&declared.to_be_bytes());
    frame
}

fn frame_len(bytes: &[u8]) -> usize {
    match bytes.get(1..5) {
        Some(&[a, b, c, d]) => {
            usize::try_from(u32::from_be_bytes([a, b, c, d])).unwrap_or(usize::MAX)
        }
        _ => usize::MAX,
    }
}

/// A status as its JSON body, with the HTTP status of its code (or `http`),
/// the refusal's audit receipt, and `Retry-After` from its `RetryInfo`.
fn status_response(status: &tonic::Status, http: Option<StatusCode>) -> http::Response<Body> {
    let code = status.code() as i32;
    let mut body = pjson::status_to_json(code, status.message(), status.details());
    if let Some(receipt) = status
        .metadata()
        .get_bin(RECEIPT_TRAILER)
        .and_then(|v| v.to_bytes().ok())
        && let Some(descriptor) = pjson::pool().get_message_by_name("tongban.v1.AuditReceipt")
        && let Ok(json) = pjson::protobuf_to_json(&descriptor, &receipt)
    {
        body["receipt"] = json;
    }
    let http = http
        .or_else(|| StatusCode::from_u16(pjson::http_status_of(code)).ok())
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = json_response(http, &body);
    if let Some(delay) = status
        .get_error_details()
        .retry_info()
        .and_then(|r| r.retry_delay)
    {
        // Whole seconds, rounded up: never earlier than the server asked.
        let secs = delay.as_secs() + u64::from(delay.subsec_nanos() > 0);
        if let Ok(value) = HeaderValue::from_str(&secs.max(1).to_string()) {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
    }
    response
}

fn error_response(
    code: tonic::Code,
    message: String,
    reason: &str,
    http: Option<StatusCode>,
) -> http::Response<Body> {
    let details =
        ErrorDetails::with_error_info(reason, ERROR_DOMAIN, std::collections::HashMap::new());
    status_response(
        &tonic::Status::with_error_details(code, message, details),
        http,
    )
}

/// 400 with a BadRequest naming `field`, as the pipeline words it.
fn invalid(field: &str, description: impl Into<String>) -> http::Response<Body> {
    status_response(
        &ExchangeError::invalid(field, description).to_status(),
        None,
    )
}

fn internal(why: &str) -> http::Response<Body> {
    error_response(
        tonic::Code::Internal,
        format!("internal error: {why}"),
        "INTERNAL",
        None,
    )
}

fn no_such_route(method: &Method, path: &str) -> http::Response<Body> {
    let routes: Vec<String> = ROUTES
        .iter()
        .map(|r| format!("{} {}", r.method.as_str(), r.path))
        .chain(std::iter::once(format!("GET {OPENAPI_PATH}")))
        .collect();
    let shown: String = path.chars().take(200).collect();
    error_response(
        tonic::Code::NotFound,
        format!(
            "no route {method} {shown:?}; the routes are {}",
            routes.join(", ")
        ),
        "NO_SUCH_ROUTE",
        None,
    )
}

fn method_not_allowed(method: &Method, path: &str, allowed: &[&str]) -> http::Response<Body> {
    let mut response = error_response(
        tonic::Code::Unimplemented,
        format!("{path} answers {}, not {method}", allowed.join(", ")),
        "METHOD_NOT_ALLOWED",
        Some(StatusCode::METHOD_NOT_ALLOWED),
    );
    if let Ok(value) = HeaderValue::from_str(&allowed.join(", ")) {
        response.headers_mut().insert(header::ALLOW, value);
    }
    response
}

fn openapi_response() -> http::Response<Body> {
    static DOCUMENT: std::sync::LazyLock<Bytes> =
        std::sync::LazyLock::new(|| Bytes::from(tongban_proto::openapi::openapi_json()));
    bytes_response(StatusCode::OK, DOCUMENT.clone(), false)
}

fn json_response(status: StatusCode, json: &serde_json::Value) -> http::Response<Body> {
    bytes_response(status, Bytes::from(json.to_string()), true)
}

fn bytes_response(status: StatusCode, body: Bytes, private: bool) -> http::Response<Body> {
    let mut response = http::Response::new(Body::new(Full::new(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(
        header::HeaderName::from_static("x-content-type-options"),
        HeaderValue::from_static("nosniff"),
    );
    if private {
        // Answers are personal data and per caller: never cached.
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::time::Duration;

    use super::*;

    async fn body_json(response: http::Response<Body>) -> serde_json::Value {
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn a_rate_refusal_is_429_with_retry_after_rounded_up() {
        let error = ExchangeError::RateLimited {
            caller: "org/x/unit/y".into(),
            retry_after: Duration::from_millis(1_200),
        };
        let response = status_response(&error.to_status(), None);
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "2");
        let json = body_json(response).await;
        assert_eq!(json["code"], 8);
        let types: Vec<&str> = json["details"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["@type"].as_str().unwrap())
            .collect();
        assert!(
            types.contains(&"type.googleapis.com/google.rpc.RetryInfo"),
            "{json}"
        );
        assert!(
            types.contains(&"type.googleapis.com/google.rpc.ErrorInfo"),
            "{json}"
        );
    }

    #[tokio::test]
    async fn a_refusals_receipt_trailer_becomes_its_receipt_member() {
        let receipt = tongban_proto::v1::AuditReceipt {
            node: "exchange-1".into(),
            index: 7,
            leaf_hash: vec![1; 32],
        };
        let error = ExchangeError::invalid("case.matter", "is required");
        let status = crate::error::status_with_receipt(&error, Some(&receipt));
        let response = status_response(&status, None);
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let json = body_json(response).await;
        assert_eq!(json["receipt"]["node"], "exchange-1");
        assert_eq!(json["receipt"]["index"], "7");
        let bad_request = json["details"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["@type"] == "type.googleapis.com/google.rpc.BadRequest")
            .unwrap();
        assert_eq!(bad_request["fieldViolations"][0]["field"], "case.matter");
    }

    #[test]
    fn only_application_json_is_json_and_only_grpc_is_passed_through() {
        for yes in ["application/json", "Application/JSON; charset=utf-8"] {
            assert!(is_json(&HeaderValue::from_static(yes)), "{yes}");
        }
        for no in [
            "text/plain",
            "application/json-seq",
            "application/x-www-form-urlencoded",
        ] {
            assert!(!is_json(&HeaderValue::from_static(no)), "{no}");
        }
        let mut headers = HeaderMap::new();
        assert!(!is_grpc(&headers));
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc+proto"),
        );
        assert!(is_grpc(&headers));
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        assert!(!is_grpc(&headers));
    }

    #[tokio::test]
    async fn bodies_are_read_up_to_the_limit_and_no_further() {
        let body = |n: usize| Body::new(Full::new(Bytes::from(vec![b'x'; n])));
        assert_eq!(read_bounded(body(16), 16).await.unwrap().unwrap().len(), 16);
        assert!(read_bounded(body(17), 16).await.unwrap().is_none());
        assert_eq!(oversize_prefix(17), vec![0, 0, 0, 0, 17]);
        assert_eq!(oversize_prefix(usize::MAX), vec![0, 255, 255, 255, 255]);
    }
}
