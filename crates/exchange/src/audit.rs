//! The exchange's side of the audit log: turns pipeline events into audit
//! entries (subject pseudonymised, released fields hashed) and opens the log
//! named by the configuration.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tongban_audit::{
    AuditConfig, AuditEntry, AuditLog, AuditStore, EntryKind, LogSigner, PostgresStore,
    SqliteStore, SubjectPseudonymizer, origin_for_node, released_fields_hash,
};
use tongban_proto::v1::AuditReceipt;

use crate::pipeline::{AuditEvent, AuditFuture, AuditKind, AuditSink};

/// `[audit]` in the exchange configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditSettings {
    /// A SQLite file path (the embedded default) or a `postgres://` URL.
    #[serde(default = "default_store")]
    pub store: String,
    /// PostgreSQL schema for the audit tables (default `public`).
    #[serde(default)]
    pub postgres_schema: Option<String>,
    /// This node's Ed25519 checkpoint signing key; created on first start.
    #[serde(default = "default_signing_key")]
    pub signing_key: PathBuf,
    /// Secret key of the subject pseudonyms (hex); created on first start.
    /// Every node and every administrator tool of one deployment shares it.
    #[serde(default = "default_subject_key")]
    pub subject_key: PathBuf,
    /// Sign a checkpoint at least this often while entries arrive.
    #[serde(default = "default_checkpoint_interval_ms")]
    pub checkpoint_interval_ms: u64,
    /// ... and after this many entries.
    #[serde(default = "default_checkpoint_every")]
    pub checkpoint_every: u64,
}

impl Default for AuditSettings {
    fn default() -> Self {
        Self {
            store: default_store(),
            postgres_schema: None,
            signing_key: default_signing_key(),
            subject_key: default_subject_key(),
            checkpoint_interval_ms: default_checkpoint_interval_ms(),
            checkpoint_every: default_checkpoint_every(),
        }
    }
}

fn default_store() -> String {
    "audit.db".into()
}
fn default_signing_key() -> PathBuf {
    "audit-signing.key".into()
}
fn default_subject_key() -> PathBuf {
    "subject-pseudonym.key".into()
}
fn default_checkpoint_interval_ms() -> u64 {
    1000
}
fn default_checkpoint_every() -> u64 {
    4096
}

impl AuditSettings {
    pub fn is_postgres(&self) -> bool {
        self.store.starts_with("postgres://") || self.store.starts_with("postgresql://")
    }

    /// Makes relative file paths relative to `base`.
    pub fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        fix(&mut self.signing_key);
        fix(&mut self.subject_key);
        if !self.is_postgres() {
            let path = PathBuf::from(self.store.strip_prefix("sqlite://").unwrap_or(&self.store));
            if path.is_relative() {
                self.store = base.join(path).display().to_string();
            }
        }
    }

    /// Opens the configured store.
    pub async fn open_store(&self) -> Result<Arc<dyn AuditStore>, String> {
        if self.is_postgres() {
            let store = PostgresStore::connect(&self.store, self.postgres_schema.as_deref())
                .await
                .map_err(|e| format!("audit store: {e}"))?;
            Ok(Arc::new(store))
        } else {
            let path = Path::new(self.store.strip_prefix("sqlite://").unwrap_or(&self.store));
            let store = SqliteStore::open(path)
                .await
                .map_err(|e| format!("audit store {}: {e}", path.display()))?;
            Ok(Arc::new(store))
        }
    }

    /// The subject pseudonymiser, creating its key file (0600) if absent.
    pub fn pseudonymizer(&self) -> Result<SubjectPseudonymizer, String> {
        load_or_create_subject_key(&self.subject_key)
    }

    /// Opens this node's log: store, signing key (created if absent) and
    /// writer.
    pub async fn open_log(&self, node: &str) -> Result<AuditLog, String> {
        let store = self.open_store().await?;
        let origin = origin_for_node(node);
        let signer = LogSigner::load_or_generate(&self.signing_key, &origin)
            .map_err(|e| format!("signing key {}: {e}", self.signing_key.display()))?;
        let public = self.signing_key.with_extension("pub");
        if !public.exists() {
            let text = format!("{}\n", signer.verifier());
            if let Err(e) = std::fs::write(&public, text) {
                tracing::warn!(path = %public.display(), error = %e, "cannot write the verifier key");
            }
        }
        let mut config = AuditConfig::new(node);
        config.checkpoint_interval = Duration::from_millis(self.checkpoint_interval_ms.max(1));
        config.checkpoint_every = self.checkpoint_every.max(1);
        AuditLog::open(store, signer, config)
            .await
            .map_err(|e| format!("audit log: {e}"))
    }
}

/// Reads a hex pseudonym key, or writes a fresh random one (mode 0600).
pub fn load_or_create_subject_key(path: &Path) -> Result<SubjectPseudonymizer, String> {
    match std::fs::read_to_string(path) {
        Ok(text) => SubjectPseudonymizer::from_hex(&text)
            .map_err(|e| format!("subject key {}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key: [u8; 32] = rand::random();
            let text = hex::encode(key);
            write_secret(path, &format!("{text}\n"))
                .map_err(|e| format!("cannot create subject key {}: {e}", path.display()))?;
            tracing::info!(path = %path.display(), "created the subject pseudonym key");
            SubjectPseudonymizer::from_bytes(&key).map_err(|e| e.to_string())
        }
        Err(e) => Err(format!("cannot read subject key {}: {e}", path.display())),
    }
}

fn write_secret(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()
}

/// Writes pipeline events to a node's audit log.
#[derive(Debug, Clone)]
pub struct AuditLogSink {
    log: AuditLog,
    pseudonymizer: SubjectPseudonymizer,
}

impl AuditLogSink {
    pub fn new(log: AuditLog, pseudonymizer: SubjectPseudonymizer) -> Self {
        Self { log, pseudonymizer }
    }

    pub fn log(&self) -> &AuditLog {
        &self.log
    }

    pub fn pseudonymizer(&self) -> &SubjectPseudonymizer {
        &self.pseudonymizer
    }

    fn entry(&self, event: AuditEvent) -> AuditEntry {
        let kind = match event.kind {
            AuditKind::Lookup => EntryKind::Lookup,
            AuditKind::GatherItem => EntryKind::GatherItem,
        };
        let mut entry = AuditEntry::new(kind, event.time);
        entry.caller_org = event.caller.org.to_string();
        entry.caller_unit = event.caller.unit;
        entry.operator = event.case.operator_id;
        entry.matter = event.case.matter;
        entry.case_number = event.case.case_number;
        entry.evidence_type = event.evidence_type;
        entry.department = event.department;
        entry.subject = self.pseudonymizer.pseudonym(event.subject.as_str());
        entry.outcome_code = event.outcome_code;
        entry.outcome_reason = event.outcome_reason;
        entry.latency_us = u64::try_from(event.latency.as_micros()).unwrap_or(u64::MAX);
        entry.trace_id = event.trace_id;
        if event.outcome_code == 0 {
            let fields: Vec<(&str, String)> = event
                .released
                .iter()
                .map(|(name, value)| (name.as_str(), value.clone()))
                .collect();
            entry.released_fields_hash = released_fields_hash(&fields);
        }
        entry
    }
}

impl AuditSink for AuditLogSink {
    fn record(&self, event: AuditEvent) -> AuditFuture<'_> {
        let entry = self.entry(event);
        Box::pin(async move {
            let receipt = self.log.append(entry).await.map_err(|e| e.to_string())?;
            Ok(Some(AuditReceipt {
                node: receipt.node,
                index: receipt.index,
                leaf_hash: receipt.leaf_hash.to_vec(),
            }))
        })
    }
}
