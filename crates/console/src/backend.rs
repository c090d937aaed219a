//! What the console reads and where it records administrators' acts.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tongban_audit::{AuditEntry, AuditLog, AuditStore, EntryKind, Keyring, SubjectPseudonymizer};

use crate::text::{MAX_LOGGED_DETAIL_CHARS, MAX_LOGGED_NAME_CHARS, sanitize_for_log};

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
    Settings(#[from] crate::config::SettingsError),
    #[error("console cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("audit log: {0}")]
    Audit(#[from] tongban_audit::AuditError),
}

/// One administrator's act, as the audit log keeps it.
#[derive(Debug, Clone, Default)]
pub(crate) struct AdminAct<'a> {
    pub user: &'a str,
    pub action: &'a str,
    pub detail: String,
    /// gRPC-style status code and reason of a refused act.
    pub outcome: Option<(i32, &'a str)>,
    pub latency: Duration,
}

impl<'a> AdminAct<'a> {
    pub fn new(user: &'a str, action: &'a str) -> Self {
        Self {
            user,
            action,
            ..Self::default()
        }
    }

    pub fn detail(mut self, detail: String) -> Self {
        self.detail = detail;
        self
    }
}

impl ConsoleBackend {
    /// Appends an `AdminAction` entry and waits for it to be committed. The
    /// operator is kept to `MAX_LOGGED_NAME_CHARS` characters and the detail
    /// to `MAX_LOGGED_DETAIL_CHARS`, control and bidi characters replaced,
    /// whatever the caller passed.
    pub(crate) async fn record(&self, act: AdminAct<'_>) -> Result<(), ConsoleError> {
        let mut entry = AuditEntry::new(EntryKind::AdminAction, Utc::now());
        entry.caller_unit = "console".into();
        entry.operator = sanitize_for_log(act.user, MAX_LOGGED_NAME_CHARS);
        entry.detail = if act.detail.is_empty() {
            act.action.to_owned()
        } else {
            sanitize_for_log(
                &format!("{} {}", act.action, act.detail),
                MAX_LOGGED_DETAIL_CHARS,
            )
        };
        if let Some((code, reason)) = act.outcome {
            entry.outcome_code = code;
            entry.outcome_reason = reason.to_owned();
        }
        entry.latency_us = u64::try_from(act.latency.as_micros()).unwrap_or(u64::MAX);
        self.log.append(entry).await?;
        Ok(())
    }

    /// The pinned keys, as `name+keyid` for people to compare.
    pub(crate) fn key_names(&self) -> String {
        self.keyring
            .keys()
            .iter()
            .map(|k| format!("{}+{}", k.name, hex::encode(k.key_id)))
            .collect::<Vec<_>>()
            .join(", ")
    }
}
