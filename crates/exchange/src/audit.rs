//! The exchange's side of the audit log: turns pipeline events into audit
//! entries (subject pseudonymised, released fields hashed) and opens the log
//! named by the configuration.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tongban_audit::{
    AuditConfig, AuditEntry, AuditLog, AuditStats, AuditStore, EntryKind, LogSigner, PostgresStore,
    SqliteStore, SubjectPseudonymizer, origin_for_node,
};
use tongban_proto::v1::AuditReceipt;
use tongban_telemetry::Metrics;

use crate::pipeline::{AuditEvent, AuditFuture, AuditKind, AuditSink, ProbeFuture};

/// `[audit]` in the exchange configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditSettings {
    /// A SQLite file path (the embedded default) or a `postgres://` URL.
    #[serde(default = "default_store")]
    pub store: String,
    /// PostgreSQL schema for the audit tables (default `public`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
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
    /// Entries older than this many days are pruned once a day (checkpoints
    /// and the tree frontier stay). At least 183 (Cybersecurity Law art. 21);
    /// 0 keeps everything.
    #[serde(default = "default_retention_days")]
    pub retention_days: u32,
    /// Longest a request waits for its audit entry to commit; past it the
    /// request fails `UNAVAILABLE` (`AUDIT_UNAVAILABLE`) and nothing is
    /// released. Requests beyond the writer's queue fail at once.
    #[serde(default = "default_append_timeout_ms")]
    pub append_timeout_ms: u64,
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
            retention_days: default_retention_days(),
            append_timeout_ms: default_append_timeout_ms(),
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
fn default_append_timeout_ms() -> u64 {
    2000
}
fn default_retention_days() -> u32 {
    // The legal minimum fits an i64 day count trivially.
    tongban_audit::MIN_RETENTION_DAYS as u32
}

/// How often the exchange prunes entries past their retention.
pub const RETENTION_SWEEP_EVERY: Duration = Duration::from_secs(24 * 3600);

impl AuditSettings {
    /// Rejects a retention under the legal minimum and a zero append timeout.
    pub fn check(&self) -> Result<(), String> {
        if self.append_timeout_ms == 0 {
            return Err("audit.append_timeout_ms must be positive".into());
        }
        if self.retention_days != 0
            && i64::from(self.retention_days) < tongban_audit::MIN_RETENTION_DAYS
        {
            return Err(format!(
                "audit.retention_days = {} is below the legal minimum of {} days (Cybersecurity Law art. 21); use 0 to keep everything",
                self.retention_days,
                tongban_audit::MIN_RETENTION_DAYS
            ));
        }
        Ok(())
    }

    /// The retention period, or None when entries are kept forever.
    pub fn retention(&self) -> Option<chrono::TimeDelta> {
        (self.retention_days > 0).then(|| chrono::TimeDelta::days(i64::from(self.retention_days)))
    }

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
        self.open_log_and_store(node).await.map(|(log, _)| log)
    }

    /// [`open_log`](Self::open_log), also returning the store (for
    /// readiness probes).
    pub async fn open_log_and_store(
        &self,
        node: &str,
    ) -> Result<(AuditLog, Arc<dyn AuditStore>), String> {
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
        config.append_timeout = Duration::from_millis(self.append_timeout_ms.max(1));
        let log = AuditLog::open(store.clone(), signer, config)
            .await
            .map_err(|e| format!("audit log: {e}"))?;
        Ok((log, store))
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
    store: Option<Arc<dyn AuditStore>>,
    batches: Option<Arc<BatchMetrics>>,
}

/// Turns the log's cumulative counters into batch observations.
#[derive(Debug)]
struct BatchMetrics {
    metrics: Metrics,
    seen: Mutex<AuditStats>,
}

impl BatchMetrics {
    /// Records the batches committed since the last call. Several batches
    /// between two calls are recorded as that many observations of their
    /// mean size and commit time, so counts and sums stay exact.
    fn sample(&self, now: AuditStats) {
        let Ok(mut seen) = self.seen.lock() else {
            return;
        };
        let batches = now.batches.saturating_sub(seen.batches);
        if batches == 0 {
            return;
        }
        let entries = now.entries_committed.saturating_sub(seen.entries_committed);
        let commit_us = now.total_commit_us.saturating_sub(seen.total_commit_us);
        *seen = now;
        drop(seen);
        let size = usize::try_from(entries / batches).unwrap_or(usize::MAX);
        let latency = Duration::from_micros(commit_us / batches);
        for _ in 0..batches.min(1024) {
            self.metrics.record_audit_batch(size, latency);
        }
    }
}

/// Longest a readiness probe of the audit store may take.
const STORE_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

impl AuditLogSink {
    pub fn new(log: AuditLog, pseudonymizer: SubjectPseudonymizer) -> Self {
        Self {
            log,
            pseudonymizer,
            store: None,
            batches: None,
        }
    }

    /// Probes `store` (the log's store) for readiness.
    pub fn with_store(mut self, store: Arc<dyn AuditStore>) -> Self {
        self.store = Some(store);
        self
    }

    /// Records audit batch sizes and commit latencies in `metrics`.
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.batches = Some(Arc::new(BatchMetrics {
            metrics,
            seen: Mutex::new(self.log.stats()),
        }));
        self
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
            entry.released_fields_hash = self.pseudonymizer.released_fields_hash(&event.released);
        }
        // `policy_version` stays empty until `AuditEvent` carries the version
        // of the policy that decided the request.
        entry
    }
}

impl AuditSink for AuditLogSink {
    fn record_all(&self, events: Vec<AuditEvent>) -> AuditFuture<'_> {
        let entries: Vec<AuditEntry> = events.into_iter().map(|e| self.entry(e)).collect();
        Box::pin(async move {
            let appended = self.log.append_all(entries).await;
            if let Some(batches) = &self.batches {
                batches.sample(self.log.stats());
            }
            appended
                .into_iter()
                .map(|r| {
                    let receipt = r.map_err(|e| e.to_string())?;
                    Ok(Some(AuditReceipt {
                        node: receipt.node,
                        index: receipt.index,
                        leaf_hash: receipt.leaf_hash.to_vec(),
                    }))
                })
                .collect()
        })
    }

    fn probe(&self) -> ProbeFuture<'_> {
        Box::pin(async move {
            let Some(store) = &self.store else {
                return Ok(());
            };
            match tokio::time::timeout(STORE_PROBE_TIMEOUT, store.log_state(self.log.node())).await
            {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(format!("audit store: {e}")),
                Err(_) => Err(format!(
                    "audit store did not answer within {STORE_PROBE_TIMEOUT:?}"
                )),
            }
        })
    }
}

/// Prunes entries past `retention` now and then every `every`; each prune
/// that deletes anything is itself logged as an administrator's act.
pub fn spawn_retention(
    store: Arc<dyn AuditStore>,
    log: AuditLog,
    retention: chrono::TimeDelta,
    every: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        loop {
            ticks.tick().await;
            prune_once(store.as_ref(), &log, retention).await;
        }
    })
}

/// One retention sweep over every node's log in the store.
pub async fn prune_once(store: &dyn AuditStore, log: &AuditLog, retention: chrono::TimeDelta) {
    let report = match tongban_audit::prune(store, retention, false).await {
        Ok(report) => report,
        Err(e) => {
            tracing::error!(error = %e, "audit retention sweep failed");
            return;
        }
    };
    for pruned in report.nodes.iter().filter(|n| n.deleted > 0) {
        let mut entry = AuditEntry::new(EntryKind::AdminAction, chrono::Utc::now());
        entry.operator = "retention".into();
        entry.detail = format!(
            "retention prune node={} before_index={} deleted={} older_than_days={}",
            pruned.node,
            pruned.pruned_before,
            pruned.deleted,
            retention.num_days()
        );
        if let Err(e) = log.append(entry).await {
            tracing::error!(error = %e, "cannot log the retention prune");
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn retention_below_the_legal_minimum_is_refused() {
        let mut settings = AuditSettings::default();
        assert_eq!(settings.retention_days, 183);
        assert!(settings.check().is_ok());
        settings.retention_days = 30;
        assert!(settings.check().unwrap_err().contains("183"));
        settings.retention_days = 0;
        assert!(settings.check().is_ok());
        assert_eq!(settings.retention(), None);
        settings.retention_days = 400;
        assert_eq!(settings.retention(), Some(chrono::TimeDelta::days(400)));
    }

    #[test]
    fn the_append_timeout_is_a_positive_setting_of_two_seconds_by_default() {
        let settings: AuditSettings = toml::from_str("").unwrap();
        assert_eq!(settings.append_timeout_ms, 2000);
        let settings: AuditSettings = toml::from_str("append_timeout_ms = 500").unwrap();
        assert_eq!(settings.append_timeout_ms, 500);
        assert!(settings.check().is_ok());
        let settings: AuditSettings = toml::from_str("append_timeout_ms = 0").unwrap();
        assert!(settings.check().unwrap_err().contains("append_timeout_ms"));
    }

    #[tokio::test]
    async fn released_fields_are_hashed_under_the_node_key() {
        use crate::pipeline::{AuditEvent, AuditKind};
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn AuditStore> =
            Arc::new(SqliteStore::open(&dir.path().join("a.db")).await.unwrap());
        let signer = LogSigner::generate(&origin_for_node("n1")).unwrap();
        let log = AuditLog::open(store.clone(), signer, AuditConfig::new("n1"))
            .await
            .unwrap();
        let key = SubjectPseudonymizer::from_bytes(&[9u8; 32]).unwrap();
        let sink = AuditLogSink::new(log.clone(), key.clone());
        let (_, caller) =
            tongban_core::Caller::parse_reference("org/91350100M000100Y43/unit/bench").unwrap();
        let released = [("marital_status", "married"), ("since", "2019-05-01")];
        let event = AuditEvent {
            time: chrono::Utc::now(),
            kind: AuditKind::Lookup,
            caller,
            case: tongban_core::CaseContext {
                matter: "marriage-registration".into(),
                case_number: "XQ-1".into(),
                operator_id: "clerk-he".into(),
            },
            evidence_type: "civil.marriage".into(),
            department: "civil".into(),
            subject: tongban_core::IdNumber::parse("510403198507220465").unwrap(),
            outcome_code: 0,
            outcome_reason: String::new(),
            latency: Duration::from_millis(3),
            trace_id: String::new(),
            released: released
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        let receipt = sink
            .record_all(vec![event])
            .await
            .remove(0)
            .unwrap()
            .unwrap();
        let stored = store
            .entry("n1", receipt.index)
            .await
            .unwrap()
            .unwrap()
            .entry;
        assert_eq!(
            stored.released_fields_hash,
            key.released_fields_hash(&released)
        );
        let other = SubjectPseudonymizer::from_bytes(&[8u8; 32]).unwrap();
        assert_ne!(
            stored.released_fields_hash,
            other.released_fields_hash(&released)
        );
        // Not filled until the pipeline reports the deciding policy.
        assert_eq!(stored.policy_version, "");
        log.shutdown().await.unwrap();
    }

    #[tokio::test]
    async fn the_sweep_prunes_old_entries_and_logs_that_it_did() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn AuditStore> =
            Arc::new(SqliteStore::open(&dir.path().join("a.db")).await.unwrap());
        let signer = LogSigner::generate(&origin_for_node("n1")).unwrap();
        let log = AuditLog::open(store.clone(), signer, AuditConfig::new("n1"))
            .await
            .unwrap();
        let old = chrono::Utc::now() - chrono::TimeDelta::days(200);
        for _ in 0..5 {
            log.append(AuditEntry::new(EntryKind::Lookup, old))
                .await
                .unwrap();
        }
        log.append(AuditEntry::new(EntryKind::Lookup, chrono::Utc::now()))
            .await
            .unwrap();
        log.flush().await.unwrap();
        prune_once(store.as_ref(), &log, chrono::TimeDelta::days(183)).await;
        log.flush().await.unwrap();
        assert_eq!(store.log_state("n1").await.unwrap().pruned_before, 5);
        let page = tongban_audit::search(
            store.as_ref(),
            &tongban_audit::SearchFilter {
                kind: Some(EntryKind::AdminAction),
                ..Default::default()
            },
            &tongban_audit::PageRequest::default(),
        )
        .await
        .unwrap();
        assert_eq!(page.entries.len(), 1);
        assert_eq!(
            page.entries[0].entry.detail,
            "retention prune node=n1 before_index=5 deleted=5 older_than_days=183"
        );
        // A second sweep finds nothing more and logs nothing.
        prune_once(store.as_ref(), &log, chrono::TimeDelta::days(183)).await;
        log.flush().await.unwrap();
        assert_eq!(store.log_state("n1").await.unwrap().size, 7);
        log.shutdown().await.unwrap();
    }
}
