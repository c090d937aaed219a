//! The console's shared state: settings, backend, sessions, throttle and
//! the verification job, behind one cheap-to-clone handle.

use std::sync::Arc;
use std::time::Duration;

use axum::http::HeaderMap;
use axum::http::header;

use crate::auth::{Sessions, Throttle};
use crate::backend::{ConsoleBackend, ConsoleError};
use crate::config::{ConsoleSettings, effective_allowed_hosts};
use crate::verify_job::VerifyJob;

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

impl Console {
    pub fn new(settings: ConsoleSettings, backend: ConsoleBackend) -> Result<Self, ConsoleError> {
        settings.check()?;
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

    /// Whether a request names a host this console answers to: the
    /// authority of an absolute-form target (`GET http://host/path`), which
    /// names the host the client means whatever `Host` says (RFC 9112,
    /// 3.2.2); otherwise exactly one `Host` header. Compared without case,
    /// as host names are.
    pub(crate) fn host_allowed(&self, authority: Option<&str>, headers: &HeaderMap) -> bool {
        let host = match authority {
            Some(authority) => authority,
            None => {
                let mut hosts = headers.get_all(header::HOST).iter();
                let (Some(host), None) = (hosts.next(), hosts.next()) else {
                    return false;
                };
                let Ok(host) = host.to_str() else {
                    return false;
                };
                host
            }
        };
        self.allowed_hosts
            .iter()
            .any(|allowed| allowed.eq_ignore_ascii_case(host))
    }

    pub(crate) fn backend(&self) -> &ConsoleBackend {
        &self.inner.backend
    }

    /// A `Set-Cookie` value with the console's attributes: never readable
    /// by script, never sent cross-site, `Secure` when configured.
    pub(crate) fn cookie(&self, name: &str, value: &str, clear: bool) -> String {
        let mut c = format!("{name}={value}; Path=/; HttpOnly; SameSite=Strict");
        if self.inner.settings.secure_cookie {
            c.push_str("; Secure");
        }
        if clear {
            c.push_str("; Max-Age=0");
        }
        c
    }
}
