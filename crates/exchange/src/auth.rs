//! Authentication: who is calling, from what the transport knows about the
//! connection (the request's extensions), never from the message.

use std::sync::Arc;

use tongban_core::{Caller, Policy};
use tongban_trust::PeerConnectInfo;

use crate::error::ExchangeError;

/// Establishes the caller of a request against the call's policy snapshot
/// (which may pin a trust domain).
pub type Authenticator =
    Arc<dyn Fn(&tonic::Extensions, &Policy) -> Result<Caller, ExchangeError> + Send + Sync>;

/// Authenticator for a plaintext listener: every request is attributed to one
/// configured caller. For local development and benchmarks only.
pub fn fixed_caller(caller: Caller) -> Authenticator {
    Arc::new(move |_, _| Ok(caller.clone()))
}

/// Callers are who their verified certificate says, within the policy's
/// trust domain when it pins one.
pub fn certificate_authenticator() -> Authenticator {
    Arc::new(|extensions: &tonic::Extensions, policy: &Policy| {
        let info = extensions.get::<PeerConnectInfo>().ok_or_else(|| {
            ExchangeError::Unauthenticated(
                "the connection carries no verified client certificate".into(),
            )
        })?;
        let identity = info.identity();
        if let Some(domain) = policy.trust_domain()
            && identity.trust_domain() != domain
        {
            return Err(ExchangeError::Unauthenticated(format!(
                "certificate identity {identity} is outside trust domain {domain}"
            )));
        }
        Caller::new(identity.org().clone(), identity.unit())
            .map_err(|e| ExchangeError::Unauthenticated(e.to_string()))
    })
}
