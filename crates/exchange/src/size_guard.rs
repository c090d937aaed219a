//! Request size, checked before anything is decoded.
//!
//! tonic's codec would buffer and decode a message of up to its own limit
//! (4 MB by default) before a handler could compare it with the policy's
//! `max_request_bytes`; eight concurrent 3.9 MB lookups took an exchange from
//! 125 to 345 MB. This layer reads the request body itself, refuses as soon
//! as the gRPC length prefix (or the bytes received) pass the limit of the
//! policy in force, and audits the refusal like any other. Every request of
//! the exchange's services is one message, so a body within the limit is
//! handed on whole (a few KB at most). Written here because no library
//! enforces a per-request byte limit that follows a reloadable policy and
//! reports a gRPC status.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use tonic::body::Body;
use tonic::server::NamedService;
use tower::Service;

use crate::auth::Authenticator;
use crate::error::{ExchangeError, status_with_receipt};
use crate::pipeline::{AuditKind, Exchange, RefusalFacts};
use crate::routing::parse_grpc_timeout;

/// The gRPC message prefix: a compression flag and a 4-byte length.
const PREFIX: usize = 5;

/// Wraps one gRPC service of the exchange with the size check.
#[derive(Clone)]
pub struct SizeGuard<S> {
    inner: S,
    exchange: Exchange,
    authenticate: Authenticator,
}

impl<S> std::fmt::Debug for SizeGuard<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SizeGuard").finish_non_exhaustive()
    }
}

impl<S> SizeGuard<S> {
    pub fn new(inner: S, exchange: Exchange, authenticate: Authenticator) -> Self {
        Self {
            inner,
            exchange,
            authenticate,
        }
    }
}

impl<S: NamedService> NamedService for SizeGuard<S> {
    const NAME: &'static str = S::NAME;
}

/// Reads a request body up to `limit` message bytes. `Ok` holds the whole
/// body; `Err` the size that was over the limit (declared or received).
async fn read_bounded(mut body: Body, limit: usize) -> Result<Result<Bytes, usize>, ExchangeError> {
    let mut buffer = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            ExchangeError::invalid("request", format!("the request body broke off: {e}"))
        })?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers: a unary request has none worth keeping
        };
        buffer.extend_from_slice(&data);
        if buffer.len() >= PREFIX {
            let declared = u32::from_be_bytes([buffer[1], buffer[2], buffer[3], buffer[4]]);
            let declared = usize::try_from(declared).unwrap_or(usize::MAX);
            if declared > limit {
                return Ok(Err(declared));
            }
        }
        if buffer.len() > limit + PREFIX {
            return Ok(Err(buffer.len() - PREFIX));
        }
    }
    Ok(Ok(buffer.freeze()))
}

/// The audit entry kind of a refused call to `path`, if it is one the log
/// records (calls about personal data or the log; catalogue discovery is not
/// an access).
fn audited_kind(path: &str) -> Option<AuditKind> {
    match path {
        "/tongban.v1.Exchange/Lookup" => Some(AuditKind::Lookup),
        "/tongban.v1.Exchange/Gather" => Some(AuditKind::GatherItem),
        p if p.starts_with("/tongban.v1.Audit/") => Some(AuditKind::AdminAction),
        _ => None,
    }
}

impl<S> Service<http::Request<Body>> for SizeGuard<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        // The clone that was driven to readiness serves this request.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let exchange = self.exchange.clone();
        let authenticate = self.authenticate.clone();
        Box::pin(async move {
            let (mut parts, body) = request.into_parts();
            let deadline = parts
                .headers
                .get("grpc-timeout")
                .and_then(|v| v.to_str().ok())
                .and_then(parse_grpc_timeout)
                .map(|timeout| Instant::now() + timeout);
            let call = match exchange.begin(&authenticate, &parts.extensions, deadline) {
                Ok(call) => call,
                Err(e) => return Ok(e.to_status().into_http()),
            };
            let limit = call.policy.limits().max_request_bytes;
            let size = match read_bounded(body, limit).await {
                Ok(Ok(bytes)) => {
                    // The handler decides under this call's snapshot.
                    parts.extensions.insert(call);
                    let request = http::Request::from_parts(
                        parts,
                        Body::new(http_body_util::Full::new(bytes)),
                    );
                    return inner.call(request).await;
                }
                Ok(Err(size)) => size,
                Err(e) => return Ok(e.to_status().into_http()),
            };
            let error = ExchangeError::TooLarge { size, limit };
            let method = parts.uri.path();
            tracing::warn!(caller = %call.caller, method, size, limit, "request refused before decoding: too large");
            let status = match audited_kind(method) {
                Some(kind) => {
                    let facts = RefusalFacts {
                        detail: format!("{method} refused before decoding"),
                        ..RefusalFacts::default()
                    };
                    let refused = exchange.refuse(&call, kind, &facts, error).await;
                    status_with_receipt(&refused.error, refused.receipt.as_ref())
                }
                None => error.to_status(),
            };
            Ok(status.into_http())
        })
    }
}
